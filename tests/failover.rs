//! Failover to a secondary Redis (issue #7): a rate-limiting primary (the
//! scripted fake: a real Redis cannot answer Upstash's quota error) or a
//! real primary that is killed or flaps, a real `redis-server` as the
//! secondary, the in-memory fallback behind both, and the prober that
//! restores the primary. Time is a `ManualClock`; the prober thread reads it.

// Test code: a failed unwrap is a failed test, with the error printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use resilient_redis::{
    Client, Config, ConfigBuilder, Event, EventListener, FailoverReason, HealthStatus, ManualClock,
};
use support::{ms, FakeRedis, FaultProxy, Mode, RedisServer};

fn fast(primary: &str, secondary: &str) -> ConfigBuilder {
    Config::builder(primary)
        .fallback_url(secondary)
        .connect_timeout(ms(500))
        .socket_timeout(ms(500))
        .checkout_timeout(ms(500))
        .retry_base_delay(ms(5))
        .retry_max_delay(ms(20))
}

/// Records every event and forwards it to a channel, so a test can wait
/// for one the prober thread emits.
struct Recorder {
    all: Mutex<Vec<Event>>,
    tx: Mutex<Sender<Event>>,
}

impl Recorder {
    fn new() -> (Arc<Recorder>, Receiver<Event>) {
        let (tx, rx) = channel();
        let rec = Recorder {
            all: Mutex::new(Vec::new()),
            tx: Mutex::new(tx),
        };
        (Arc::new(rec), rx)
    }

    fn count(&self, pred: impl Fn(&Event) -> bool) -> usize {
        self.all.lock().unwrap().iter().filter(|e| pred(e)).count()
    }
}

impl EventListener for Recorder {
    fn on_event(&self, event: &Event) {
        self.all.lock().unwrap().push(event.clone());
        let _ = self.tx.lock().unwrap().send(event.clone());
    }
}

fn is_activated(e: &Event) -> bool {
    matches!(e, Event::FailoverActivated { .. })
}

fn is_restored(e: &Event) -> bool {
    matches!(e, Event::FailoverRestored { .. })
}

/// Waits (bounded) for an event the prober thread emits.
fn wait_for(rx: &Receiver<Event>, pred: impl Fn(&Event) -> bool) -> Event {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(e) if pred(&e) => return e,
            Ok(_) => {}
            Err(_) => panic!("the expected event did not arrive within 10 s"),
        }
    }
}

/// Waits (bounded) until `f` holds: the prober thread works on its own.
fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// Data commands the fake received (setup and PING excluded).
fn data_commands(fake: &FakeRedis) -> usize {
    [
        "GET", "SET", "DEL", "EXISTS", "INCRBY", "MGET", "MSET", "PEXPIRE",
    ]
    .iter()
    .map(|c| fake.count_of(c))
    .sum()
}

fn attempts(client: &Client, role: &str) -> u64 {
    client
        .stats()
        .endpoints
        .iter()
        .find(|e| e.role == role)
        .map(|e| e.requests)
        .unwrap()
}

/// One operation of a mixed workload; every one must succeed.
fn op(client: &Client, i: usize) {
    op_with(client, i, true);
}

/// As [`op`]; with `incr_served == false`, an `INCR` may instead fail with
/// a rate-limit error saying it was not sent: `INCR` is never answered from
/// memory (a count computed elsewhere would be wrong).
/// Returns whether the operation failed (that way).
fn op_with(client: &Client, i: usize, incr_served: bool) -> bool {
    let key = format!("k{}", i % 50);
    match i % 5 {
        0 => client.set(&key, i).unwrap(),
        1 => {
            let _: Option<String> = client.get(&key).unwrap();
        }
        2 => match client.incr(format!("n{}", i % 7), 1) {
            Ok(_) => {}
            Err(e) => {
                assert!(
                    !incr_served && e.is_rate_limited() && !e.may_have_executed(),
                    "{e}"
                );
                return true;
            }
        },
        3 => {
            client.exists(&key).unwrap();
        }
        _ => {
            client.delete(&key).unwrap();
        }
    }
    false
}

#[test]
fn rate_limited_primary_fails_over_at_once_with_zero_errors() {
    let fake = FakeRedis::new();
    let secondary = RedisServer::new();
    let clock = ManualClock::new();
    let (rec, _rx) = Recorder::new();
    fake.rate_limit_after(100);
    let client = Client::builder(fast(&fake.url(), &secondary.url()).build().unwrap())
        .clock(clock.shared())
        .listener(rec.clone())
        .build()
        .unwrap();

    for i in 0..1000 {
        op(&client, i);
    }

    let stats = client.stats();
    assert_eq!(stats.errors(), 0, "{stats}");
    assert_eq!(stats.failovers, 1);
    assert!(stats.failover_active);
    assert_eq!(stats.fallback_reads + stats.fallback_writes, 0);
    // 100 served by the primary, then the one it refused; nothing more.
    assert_eq!(data_commands(&fake), 101);
    assert_eq!(attempts(&client, "primary"), 101);
    // The refused one was re-sent to the secondary, then every later one.
    assert_eq!(attempts(&client, "secondary"), 900);

    let activated: Vec<Event> = rec.all.lock().unwrap().clone();
    let activated: Vec<&Event> = activated.iter().filter(|e| is_activated(e)).collect();
    assert_eq!(activated.len(), 1);
    match activated[0] {
        Event::FailoverActivated {
            reason,
            rate_limit,
            cooldown,
            ..
        } => {
            assert_eq!(*reason, FailoverReason::RateLimited);
            let limit = rate_limit.as_ref().expect("the quota details");
            assert_eq!(limit.limit, Some(10_000));
            assert_eq!(limit.usage, Some(10_000));
            assert_eq!(*cooldown, Duration::from_secs(300));
        }
        other => panic!("unexpected {other:?}"),
    }

    // What the workload wrote after the switch is on the secondary.
    client.set("after", "on-secondary").unwrap();
    let mut raw = secondary.connection();
    let there: Option<String> = redis::cmd("GET").arg("after").query(&mut raw).unwrap();
    assert_eq!(there.as_deref(), Some("on-secondary"));

    let health = client.health();
    assert_eq!(health.active_endpoint, Some("secondary"));
    assert_eq!(health.failover_reason, Some(FailoverReason::RateLimited));
    assert_eq!(health.status, HealthStatus::Degraded);
    let text = client.stats().to_prometheus();
    assert!(
        text.contains("\nresilient_redis_failover_active 1\n"),
        "{text}"
    );
    assert!(
        text.contains("\nresilient_redis_failovers_total 1\n"),
        "{text}"
    );
}

#[test]
fn a_non_idempotent_command_refused_by_the_quota_is_resent_once() {
    let fake = FakeRedis::new();
    let secondary = RedisServer::new();
    fake.rate_limit_after(0);
    let client = Client::builder(fast(&fake.url(), &secondary.url()).build().unwrap())
        .clock(ManualClock::new().shared())
        .build()
        .unwrap();
    assert_eq!(client.incr("counter", 5).unwrap(), 5);
    let mut raw = secondary.connection();
    let n: i64 = redis::cmd("GET").arg("counter").query(&mut raw).unwrap();
    assert_eq!(n, 5, "executed exactly once, on the secondary");
    assert_eq!(fake.count_of("INCRBY"), 1);
}

#[test]
fn a_pipeline_refused_by_the_quota_fails_over_too() {
    let fake = FakeRedis::new();
    let secondary = RedisServer::new();
    fake.rate_limit_after(0);
    // With a default TTL, mset is a pipeline of SET ... PX.
    let config = fast(&fake.url(), &secondary.url())
        .default_ttl(Some(Duration::from_secs(60)))
        .build()
        .unwrap();
    let client = Client::builder(config)
        .clock(ManualClock::new().shared())
        .build()
        .unwrap();
    client.mset(&[("a", "1"), ("b", "2")]).unwrap();
    assert!(client.stats().failover_active);
    let mut raw = secondary.connection();
    let b: Option<String> = redis::cmd("GET").arg("b").query(&mut raw).unwrap();
    assert_eq!(b.as_deref(), Some("2"));
}

#[test]
fn the_prober_pings_once_per_interval_and_restores_after_the_cooldown() {
    let fake = FakeRedis::new();
    let secondary = RedisServer::new();
    let clock = ManualClock::new();
    let (rec, rx) = Recorder::new();
    let interval = Duration::from_secs(30);
    let config = fast(&fake.url(), &secondary.url())
        .health_check_interval(interval)
        .success_threshold(2)
        .build()
        .unwrap();
    let client = Client::builder(config)
        .clock(clock.shared())
        .listener(rec.clone())
        .build()
        .unwrap();

    // The primary holds a value, then its quota runs out.
    client.set("user:1", "old").unwrap();
    fake.rate_limit_after(0);
    client.set("user:1", "new").unwrap();
    client.set("fresh", "1").unwrap();
    assert!(client.stats().failover_active);
    let data_before = data_commands(&fake);

    // Within the cooldown the primary is left alone: no PING at all.
    clock.advance(Duration::from_secs(299));
    assert!(!client.probe_primary());
    assert_eq!(fake.count_of("PING"), 0);

    // Past it, one PING per interval while the quota is still exhausted,
    // however much traffic there is.
    clock.advance(Duration::from_secs(1));
    for probe in 1..=3 {
        wait_until("a probe", || fake.count_of("PING") == probe);
        for i in 0..50 {
            op(&client, i);
        }
        clock.advance(interval);
    }
    wait_until("the 4th probe", || fake.count_of("PING") == 4);
    assert_eq!(fake.count_of("PING"), 4, "one PING per interval");
    assert_eq!(
        data_commands(&fake),
        data_before,
        "no traffic to the primary"
    );
    assert!(client.stats().failover_active);
    assert_eq!(rec.count(is_restored), 0);

    // The quota resets: two good probes restore the primary.
    fake.stop_rate_limiting();
    clock.advance(interval);
    wait_until("the 5th probe", || fake.count_of("PING") == 5);
    clock.advance(interval);
    wait_for(&rx, is_restored);
    assert_eq!(fake.count_of("PING"), 6);
    assert!(!client.stats().failover_active);

    // Keys written during failover were invalidated on the primary: it
    // never serves "old" again.
    assert!(fake.count_of("DEL") >= 1);
    let got: Option<String> = client.get("user:1").unwrap();
    assert_eq!(got, None);
    // And on the secondary, so that a later failover cannot serve them.
    let mut raw = secondary.connection();
    let on_secondary: Option<String> = redis::cmd("GET").arg("fresh").query(&mut raw).unwrap();
    assert_eq!(on_secondary, None);

    // Traffic is back on the primary.
    let primary_before = attempts(&client, "primary");
    let secondary_before = attempts(&client, "secondary");
    client.set("user:1", "newest").unwrap();
    let got: Option<String> = client.get("user:1").unwrap();
    assert_eq!(got.as_deref(), Some("newest"));
    assert_eq!(attempts(&client, "primary"), primary_before + 2);
    assert_eq!(attempts(&client, "secondary"), secondary_before);
    let health = client.health();
    assert_eq!(health.active_endpoint, Some("primary"));
    assert_eq!(health.failover_reason, None);
    assert_eq!(health.status, HealthStatus::Healthy);
    assert_eq!(client.stats().errors(), 0);
}

#[test]
fn killed_primary_then_both_down_then_primary_back() {
    let mut primary = RedisServer::new();
    let mut secondary = RedisServer::new();
    let clock = ManualClock::new();
    let (rec, _rx) = Recorder::new();
    let config = fast(&primary.url(), &secondary.url())
        .failure_threshold(2)
        .success_threshold(1)
        .failover_cooldown(Duration::from_secs(10))
        .build()
        .unwrap();
    let client = Client::builder(config)
        .clock(clock.shared())
        .listener(rec.clone())
        .build()
        .unwrap();

    client.set("user:1", "old").unwrap();
    primary.stop();
    // Calls keep succeeding: memory while the breaker counts, then the
    // secondary once it opens.
    for i in 0..20 {
        client.set(format!("s{i}"), i).unwrap();
    }
    assert!(client.stats().failover_active);
    assert_eq!(rec.count(is_activated), 1);
    let reason = client.health().failover_reason;
    assert!(
        matches!(
            reason,
            Some(FailoverReason::ConnectFailure | FailoverReason::BreakerOpen)
        ),
        "{reason:?}"
    );
    client.set("on-secondary", "yes").unwrap();
    let mut raw = secondary.connection();
    let there: Option<String> = redis::cmd("GET")
        .arg("on-secondary")
        .query(&mut raw)
        .unwrap();
    assert_eq!(there.as_deref(), Some("yes"));
    drop(raw);

    // Both down: the in-memory store answers, without errors.
    secondary.stop();
    for _ in 0..10 {
        client.set("user:1", "during-outage").unwrap();
    }
    let got: Option<String> = client.get("user:1").unwrap();
    assert_eq!(got.as_deref(), Some("during-outage"));
    assert!(client.health().serving_from_memory);
    assert!(client.stats().fallback_writes > 0);

    // The primary comes back: the prober restores it after the cooldown.
    primary.start();
    clock.advance(Duration::from_secs(61));
    // The background prober may get there first: either probe restores.
    client.probe_primary();
    wait_until("the restore", || {
        client.health().active_endpoint == Some("primary")
    });
    assert_eq!(rec.count(is_restored), 1);
    // The next call reaches the primary and reconciles the outage journal:
    // the primary never serves "old".
    let got: Option<String> = client.get("other").unwrap();
    assert_eq!(got, None);
    let got: Option<String> = client.get("user:1").unwrap();
    assert_ne!(got.as_deref(), Some("old"));
    let mut raw = primary.connection();
    let stored: Option<String> = redis::cmd("GET").arg("user:1").query(&mut raw).unwrap();
    assert_ne!(stored.as_deref(), Some("old"));
    // Written on the secondary during failover: invalidated on the primary.
    let stored: Option<String> = redis::cmd("GET")
        .arg("on-secondary")
        .query(&mut raw)
        .unwrap();
    assert_eq!(stored, None);
    assert_eq!(client.stats().errors(), 0);
    assert!(!client.health().serving_from_memory);
}

/// 60 simulated seconds of a primary that is up and down on alternate
/// seconds, with calls and a probe every second. Returns the restores.
fn flapping_restores(grace: Option<Duration>) -> usize {
    let primary = RedisServer::new();
    let secondary = RedisServer::new();
    let proxy = FaultProxy::new(primary.addr());
    let clock = ManualClock::new();
    let (rec, _rx) = Recorder::new();
    let interval = Duration::from_secs(1);
    // Unless set, grace = max(health_check_interval, open_timeout) = 10 s.
    let mut config = fast(&proxy.url(), &secondary.url())
        .health_check_interval(interval)
        .open_timeout(Duration::from_secs(10))
        .failure_threshold(1)
        .success_threshold(1)
        .max_retries(0)
        .failover_cooldown(interval);
    if let Some(grace) = grace {
        config = config.failover_grace(grace);
    }
    let client = Client::builder(config.build().unwrap())
        .clock(clock.shared())
        .listener(rec.clone())
        .build()
        .unwrap();

    for step in 0..60 {
        proxy.set_mode(if step % 2 == 0 {
            Mode::Reset
        } else {
            Mode::PassThrough
        });
        for i in 0..3 {
            client.set(format!("f{i}"), step).unwrap();
        }
        clock.advance(interval);
        client.probe_primary();
    }
    let restores = rec.count(is_restored);
    let failovers = rec.count(is_activated);
    assert!(restores >= 1, "the primary was restored at times");
    assert!(failovers <= restores + 1, "{failovers} failovers");
    assert_eq!(client.stats().errors(), 0);
    restores
}

#[test]
fn the_grace_period_bounds_switches_of_a_flapping_primary() {
    // Without the grace period it could switch back every other second.
    let restores = flapping_restores(None);
    assert!(restores <= 60 / 10 + 1, "{restores} restores in 60 s");
}

#[test]
fn a_configured_grace_period_bounds_them_further() {
    let restores = flapping_restores(Some(Duration::from_secs(20)));
    assert!(restores <= 60 / 20 + 1, "{restores} restores in 60 s");
}

#[test]
fn without_a_secondary_a_quota_cooldown_keeps_calls_off_the_primary() {
    let fake = FakeRedis::new();
    let clock = ManualClock::new();
    let config = Config::builder(fake.url())
        .connect_timeout(ms(500))
        .socket_timeout(ms(500))
        .checkout_timeout(ms(500))
        .failover_cooldown(Duration::from_secs(60))
        .build()
        .unwrap();
    let client = Client::builder(config)
        .clock(clock.shared())
        .build()
        .unwrap();
    client.set("user:1", "old").unwrap();
    fake.rate_limit_after(0);

    // The first refused call, then 200 more: served from memory, none sent.
    client.set("user:1", "new").unwrap();
    let refused = data_commands(&fake);
    let mut incr_refused = 0;
    for i in 0..200 {
        incr_refused += usize::from(op_with(&client, i, false));
    }
    assert_eq!(
        data_commands(&fake),
        refused,
        "nothing sent during the cooldown"
    );
    let got: Option<String> = client.get("user:1").unwrap();
    assert_eq!(got.as_deref(), Some("new"));
    assert!(client.health().serving_from_memory);

    // Still refusing when the cooldown ends: one call probes, the next ones
    // wait for another cooldown.
    clock.advance(Duration::from_secs(60));
    for i in 0..20 {
        incr_refused += usize::from(op_with(&client, i, false));
    }
    assert_eq!(data_commands(&fake), refused + 1, "one probe per cooldown");

    // The quota resets: after the cooldown the probe succeeds, traffic
    // returns and what was written meanwhile is invalidated on the primary.
    fake.stop_rate_limiting();
    clock.advance(Duration::from_secs(60));
    let got: Option<String> = client.get("user:1").unwrap();
    assert_ne!(got.as_deref(), Some("old"));
    // The background thread reconciles (its call is the probe).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.stats().journal_len != 0 {
        assert!(std::time::Instant::now() < deadline, "never invalidated");
        std::thread::yield_now();
    }
    let got: Option<String> = client.get("user:1").unwrap();
    assert_ne!(got.as_deref(), Some("old"));
    assert!(fake.count_of("DEL") >= 1);
    let before = data_commands(&fake);
    client.set("after", "1").unwrap();
    assert_eq!(data_commands(&fake), before + 1);
    assert!(!client.health().serving_from_memory);
    // The only errors: INCR, which is never answered from memory.
    assert!(incr_refused > 0);
    assert_eq!(client.stats().errors(), incr_refused as u64);
}

/// A client on a manual clock that restores the primary after one good
/// probe, a second of cooldown and no grace to speak of; with the channel
/// of its events.
fn restoring_quickly(primary: &str, secondary: &str) -> (Client, ManualClock, Receiver<Event>) {
    let clock = ManualClock::new();
    let (rec, rx) = Recorder::new();
    let config = fast(primary, secondary)
        .success_threshold(1)
        .health_check_interval(Duration::from_secs(30))
        .failover_cooldown(Duration::from_secs(1))
        .failover_grace(ms(1))
        .build()
        .unwrap();
    let client = Client::builder(config)
        .clock(clock.shared())
        .listener(rec)
        .build()
        .unwrap();
    (client, clock, rx)
}

/// Issue #11: an idle connection to the primary that died during failover
/// (reset by a load balancer) fails its health check, but the server is
/// back: the probe asks a freshly dialled connection instead of counting
/// the dead socket as the primary's answer.
#[test]
fn a_dead_idle_connection_does_not_fail_the_probe() {
    let fake = FakeRedis::new();
    let proxy = FaultProxy::new(fake.addr());
    let secondary = RedisServer::new();
    let (client, clock, rx) = restoring_quickly(&proxy.url(), &secondary.url());
    client.set("k", "1").unwrap();
    // The quota runs out: calls fail over, the primary's connection stays
    // in its pool.
    fake.rate_limit_after(0);
    client.set("k", "2").unwrap();
    assert!(client.stats().failover_active);
    // While calls are elsewhere, that idle connection is reset; then the
    // quota resets too.
    proxy.reset_all();
    fake.stop_rate_limiting();
    let pings = fake.count_of("PING");
    clock.advance(Duration::from_secs(60));
    // The background prober (or this call) probes: the dead socket's
    // health check fails, a fresh connection answers, and that restores.
    client.probe_primary();
    wait_for(&rx, is_restored);
    assert!(!client.stats().failover_active);
    assert!(fake.count_of("PING") > pings);
}

/// Issue #11: a `SET` made through `execute` while failed over is tracked
/// like one made through `set`: after the restore the primary never serves
/// the value from before the failover.
#[test]
fn a_write_through_execute_is_not_lost_on_restore() {
    let fake = FakeRedis::new();
    let secondary = RedisServer::new();
    let (client, clock, rx) = restoring_quickly(&fake.url(), &secondary.url());
    client.set("k", "old").unwrap();
    fake.rate_limit_after(0);
    let _: () = client
        .execute(redis::cmd("SET").arg("k").arg("new"))
        .unwrap();
    assert!(client.stats().failover_active);
    fake.stop_rate_limiting();
    clock.advance(Duration::from_secs(60));
    client.probe_primary();
    wait_for(&rx, is_restored);
    let got: Option<String> = client.get("k").unwrap();
    assert_ne!(
        got.as_deref(),
        Some("old"),
        "the pre-failover value came back"
    );
    let raw: Option<String> = client.execute(redis::cmd("GET").arg("k")).unwrap();
    assert_ne!(raw.as_deref(), Some("old"));
}

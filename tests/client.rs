//! The resilient Client against a real redis-server: every API method, key
//! prefixes, binary keys, memory-only mode, the in-memory fallback with
//! outage reconciliation, restarts and blackholes under load.

// Test code: a failed unwrap is a failed test, with the error printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use resilient_redis::{
    BreakerState, Client, Config, ConfigBuilder, Event, EventListener, FallbackMode, HealthStatus,
    ManualClock, Reconcile,
};
use support::{ms, FaultProxy, Mode, RedisServer};

fn fast(url: &str) -> ConfigBuilder {
    Config::builder(url)
        .connect_timeout(ms(500))
        .socket_timeout(ms(500))
        .checkout_timeout(ms(500))
        .retry_base_delay(ms(5))
        .retry_max_delay(ms(20))
}

/// Records every event, for assertions.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl EventListener for Recorder {
    fn on_event(&self, event: &Event) {
        self.0.lock().unwrap().push(event.clone());
    }
}

impl Recorder {
    fn count(&self, pred: impl Fn(&Event) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|e| pred(e)).count()
    }
}

fn round_trip_every_method(client: &Client, server: &RedisServer, prefix: &str) {
    let mut raw = server.connection();
    client.set("user:1", "alice").unwrap();
    let got: Option<String> = client.get("user:1").unwrap();
    assert_eq!(got.as_deref(), Some("alice"));
    // The prefix reached Redis.
    let stored: Option<String> = redis::cmd("GET")
        .arg(format!("{prefix}user:1"))
        .query(&mut raw)
        .unwrap();
    assert_eq!(stored.as_deref(), Some("alice"));

    client
        .set_ex(
            "session:9",
            b"\x00\xffbin".to_vec(),
            Duration::from_secs(60),
        )
        .unwrap();
    let session: Option<Vec<u8>> = client.get("session:9").unwrap();
    assert_eq!(session.as_deref(), Some(&b"\x00\xffbin"[..]));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}session:9"))
        .query(&mut raw)
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "ttl {ttl}");

    // Binary keys.
    let key: &[u8] = b"\x00k\xfe\n";
    client.set(key, 7).unwrap();
    assert_eq!(client.get::<_, i64>(key).unwrap(), Some(7));
    assert!(client.exists(key).unwrap());
    let owned: Vec<u8> = key.into();
    assert!(client.exists(owned).unwrap());
    assert!(client.exists(String::from("user:1")).unwrap());

    assert!(client.exists("user:1").unwrap());
    assert!(client.expire("user:1", Duration::from_secs(30)).unwrap());
    assert!(!client.expire("nope", Duration::from_secs(30)).unwrap());
    assert!(client.delete("user:1").unwrap());
    assert!(!client.delete("user:1").unwrap());
    assert!(!client.exists("user:1").unwrap());
    assert_eq!(client.get::<_, String>("user:1").unwrap(), None);

    assert_eq!(client.incr("hits", 1).unwrap(), 1);
    assert_eq!(client.incr("hits", 41).unwrap(), 42);

    client.mset(&[("a", "1"), ("b", "2")]).unwrap();
    let many: Vec<Option<String>> = client.mget(&["a", "missing", "b"]).unwrap();
    assert_eq!(many, vec![Some("1".into()), None, Some("2".into())]);

    // execute and pipeline leave arguments alone (no prefix).
    let full = format!("{prefix}h");
    let _: i64 = client
        .execute(redis::cmd("HSET").arg(&full).arg("f").arg("v"))
        .unwrap();
    let reply: redis::Value = client.execute(redis::cmd("HGETALL").arg(&full)).unwrap();
    assert!(
        matches!(reply, redis::Value::Array(ref v) if v.len() == 2)
            || matches!(reply, redis::Value::Map(_))
    );
    let mut pipe = redis::pipe();
    pipe.cmd("INCR").arg("p1").cmd("INCR").arg("p2");
    let out: (i64, i64) = client.pipeline(&pipe).unwrap();
    assert_eq!(out, (1, 1));

    assert!(client.ping().is_ok());
    assert_eq!(client.breaker_state(), Some(BreakerState::Closed));
    assert_eq!(client.health().status, HealthStatus::Healthy);
}

#[test]
fn every_method_round_trips_without_prefix() {
    let server = RedisServer::new();
    let client = Client::new(fast(&server.url()).build().unwrap()).unwrap();
    round_trip_every_method(&client, &server, "");
    let s = client.stats();
    assert_eq!(s.errors(), 0);
    assert!(s.requests >= 15);
    assert_eq!(s.fallback_reads + s.fallback_writes, 0);
}

#[test]
fn every_method_round_trips_with_prefix() {
    let server = RedisServer::new();
    let client = Client::new(fast(&server.url()).key_prefix("app:").build().unwrap()).unwrap();
    round_trip_every_method(&client, &server, "app:");
}

#[test]
fn server_error_replies_are_returned_and_do_not_trip_the_breaker() {
    let server = RedisServer::new();
    let client = Client::new(fast(&server.url()).failure_threshold(2).build().unwrap()).unwrap();
    let _: i64 = client
        .execute(redis::cmd("LPUSH").arg("list").arg("x"))
        .unwrap();
    for _ in 0..5 {
        let err = client.get::<_, String>("list").unwrap_err();
        assert_eq!(err.kind(), resilient_redis::ErrorKind::Server, "{err}");
        assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    }
    assert_eq!(client.breaker_state(), Some(BreakerState::Closed));
    assert_eq!(client.stats().fallback_reads, 0);
}

#[test]
fn memory_only_without_any_server() {
    let client = Client::new(Config::memory_only().build().unwrap()).unwrap();
    client.set("k", "v").unwrap();
    assert_eq!(client.get::<_, String>("k").unwrap().as_deref(), Some("v"));
    assert!(client.exists("k").unwrap());
    client.mset(&[("a", 1), ("b", 2)]).unwrap();
    assert_eq!(
        client.mget::<_, i64>(&["a", "b", "c"]).unwrap(),
        vec![Some(1), Some(2), None]
    );
    assert!(client.delete("k").unwrap());
    assert!(!client.exists("k").unwrap());
    assert_eq!(client.incr("n", 5).unwrap(), 5);
    let health = client.health();
    assert!(
        matches!(
            health.status,
            HealthStatus::Degraded | HealthStatus::Unavailable
        ),
        "{health}"
    );
    let stats = client.stats();
    assert!(stats.fallback_reads >= 3, "{stats}");
    assert!(stats.fallback_writes >= 4, "{stats}");
    // Arbitrary commands are not pretended.
    assert!(client.execute::<String>(&redis::cmd("PING")).is_err());
}

#[test]
fn unreachable_redis_is_served_from_memory_and_errors_without_fallback() {
    let port = support::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let client = Client::new(fast(&url).failure_threshold(2).build().unwrap()).unwrap();
    client.set("k", "v").unwrap();
    assert_eq!(client.get::<_, String>("k").unwrap().as_deref(), Some("v"));
    assert_eq!(client.health().status, HealthStatus::Degraded);
    assert!(client.stats().fallback_active);

    let strict = Client::new(
        fast(&url)
            .failure_threshold(2)
            .fallback_mode(FallbackMode::Disabled)
            .build()
            .unwrap(),
    )
    .unwrap();
    for _ in 0..4 {
        let err = strict.get::<_, String>("k").unwrap_err();
        assert!(err.is_transient(), "{err}");
    }
    assert_eq!(strict.breaker_state(), Some(BreakerState::Open));
    let err = strict.get::<_, String>("k").unwrap_err();
    assert_eq!(err.kind(), resilient_redis::ErrorKind::CircuitOpen);
    assert!(err.retry_after().is_some());
    assert_eq!(strict.health().status, HealthStatus::Unavailable);
}

/// Redis holds V1, outage, `set(k, V2)` goes to memory, Redis returns:
/// `get(k)` answers V2 or a miss, never V1.
fn no_stale_read_after_outage(mode: Reconcile) {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let recorder = Arc::new(Recorder::default());
    let clock = ManualClock::new();
    let client = Client::builder(
        fast(&proxy.url())
            .failure_threshold(1)
            .open_timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    )
    .clock(clock.shared())
    .reconcile(mode)
    .listener(recorder.clone())
    .build()
    .unwrap();
    client.set("k", "V1").unwrap();
    client.set("other", "O1").unwrap();

    proxy.set_mode(Mode::Refuse);
    proxy.reset_all();
    client.set("k", "V2").unwrap();
    client.delete("other").unwrap();
    assert!(client.stats().fallback_active);
    assert_eq!(client.stats().journal_len, 2);

    proxy.set_mode(Mode::PassThrough);
    // While the breaker is open, journaled keys are still served from memory.
    assert_eq!(client.get::<_, String>("k").unwrap().as_deref(), Some("V2"));
    clock.advance(Duration::from_secs(6));
    // After the open period the background thread probes Redis and
    // reconciles the journal; journaled keys are served from memory
    // until then.
    let got: Option<String> = client.get("k").unwrap();
    assert_ne!(got.as_deref(), Some("V1"), "stale read after the outage");
    if mode == Reconcile::Replay {
        assert_eq!(got.as_deref(), Some("V2"));
    }
    // The deletion made during the outage is not undone either.
    assert_eq!(client.get::<_, String>("other").unwrap(), None);
    // Reconciliation runs on the background thread, never in a call.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.stats().journal_len != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "not reconciled: {}",
            client.stats()
        );
        std::thread::yield_now();
    }
    assert_eq!(client.get::<_, String>("other").unwrap(), None);
    let got: Option<String> = client.get("k").unwrap();
    assert_ne!(
        got.as_deref(),
        Some("V1"),
        "stale read after reconciliation"
    );
    if mode == Reconcile::Replay {
        assert_eq!(got.as_deref(), Some("V2"));
    }
    let mut raw = server.connection();
    let in_redis: Option<String> = redis::cmd("GET").arg("k").query(&mut raw).unwrap();
    assert_ne!(in_redis.as_deref(), Some("V1"));
    let stats = client.stats();
    assert_eq!(stats.journal_len, 0);
    assert_eq!(stats.reconciled_keys, 2);
    assert!(!stats.fallback_active);
    assert_eq!(
        recorder.count(|e| matches!(e, Event::FallbackEngaged { .. })),
        1
    );
    assert_eq!(
        recorder.count(|e| matches!(e, Event::FallbackReleased { .. })),
        1
    );
    assert_eq!(
        recorder.count(|e| matches!(
            e,
            Event::Reconciled {
                keys: 2,
                failed: 0,
                ..
            }
        )),
        1
    );
}

#[test]
fn no_stale_read_after_outage_invalidate() {
    no_stale_read_after_outage(Reconcile::Invalidate);
}

#[test]
fn no_stale_read_after_outage_replay() {
    no_stale_read_after_outage(Reconcile::Replay);
}

#[test]
fn write_through_keeps_memory_warm() {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let client = Client::new(
        fast(&proxy.url())
            .fallback_mode(FallbackMode::WriteThrough)
            .failure_threshold(1)
            .build()
            .unwrap(),
    )
    .unwrap();
    client.set("warm", "yes").unwrap();
    proxy.set_mode(Mode::Refuse);
    proxy.reset_all();
    // Written while Redis was healthy, read while it is not.
    assert_eq!(
        client.get::<_, String>("warm").unwrap().as_deref(),
        Some("yes")
    );
    assert_eq!(client.stats().fallback_reads, 1);
}

#[test]
fn non_idempotent_incr_is_not_resent_after_a_cut() {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let client = Client::new(
        fast(&proxy.url())
            .fallback_mode(FallbackMode::Disabled)
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(client.incr("counter", 1).unwrap(), 1);
    proxy.cut_next_request();
    let err = client.incr("counter", 1).unwrap_err();
    assert!(err.may_have_executed(), "{err}");
    let mut raw = server.connection();
    let n: i64 = redis::cmd("GET").arg("counter").query(&mut raw).unwrap();
    assert_eq!(n, 2, "applied exactly once");
    // An idempotent read through the same cut is retried transparently.
    proxy.cut_next_request();
    assert_eq!(client.get::<_, i64>("counter").unwrap(), Some(2));
    assert_eq!(client.stats().retries, 1);
}

/// 8 threads doing get/set; the server is stopped for a while and restarted
/// on the same port.
#[test]
fn restart_under_load() {
    let mut server = RedisServer::new();
    let recorder = Arc::new(Recorder::default());
    let config = fast(&server.url())
        .failure_threshold(3)
        .open_timeout(ms(200))
        .success_threshold(1)
        .max_retries(1)
        .build()
        .unwrap();
    // The documented worst case of one call, plus slack for a loaded CI machine.
    let worst = config.checkout_timeout()
        + (config.max_retries() + 1) * (config.socket_timeout() + config.retry_max_delay())
        + Duration::from_secs(2);
    let client = Client::builder(config)
        .listener(recorder.clone())
        .build()
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for t in 0..8 {
        let client = client.clone();
        let stop = stop.clone();
        let ops = ops.clone();
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("t{t}:{}", i % 50);
                let start = Instant::now();
                client.set(&key, i).unwrap();
                let got: Option<u64> = client.get(&key).unwrap();
                // Only this thread writes `key`, and it wrote `i` last: a
                // read is a miss or a value this thread wrote to it (the
                // same key slot, not later than `i`), never garbage.
                if let Some(v) = got {
                    assert!(
                        v <= i && v % 50 == i % 50,
                        "read {v} from {key}, which was last set to {i}"
                    );
                }
                assert!(
                    start.elapsed() < 2 * worst,
                    "a call hung: {:?}",
                    start.elapsed()
                );
                ops.fetch_add(2, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let wait_for = |what: &str, pred: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pred() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(ms(10));
        }
    };
    wait_for("traffic", &|| ops.load(Ordering::Relaxed) > 200);
    server.stop();
    wait_for("the breaker to open", &|| {
        client.stats().endpoints[0].breaker_opens > 0
    });
    wait_for("memory fallback", &|| client.stats().fallback_writes > 100);
    // Keep the server down for a few thousand writes from memory.
    let down = client.stats().fallback_writes;
    wait_for("an outage", &|| {
        client.stats().fallback_writes > down + 2_000
    });
    server.start();
    wait_for("recovery", &|| {
        client.breaker_state() == Some(BreakerState::Closed) && !client.stats().fallback_active
    });
    let before = client.stats().endpoints[0].requests;
    wait_for("traffic back on redis", &|| {
        client.stats().endpoints[0].requests > before + 100
    });
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("a worker panicked");
    }
    let s = client.stats();
    assert_eq!(s.requests, ops.load(Ordering::Relaxed), "{s}");
    assert_eq!(s.hits + s.misses, s.requests / 2, "{s}");
    assert_eq!(s.errors(), 0, "{s}");
    // Every key written in memory is settled, by the background
    // reconciliation or by a later write to Redis that superseded it (the
    // workers keep rewriting the same keys, so either may come first).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client.stats().journal_len != 0 {
        assert!(std::time::Instant::now() < deadline, "{}", client.stats());
        std::thread::yield_now();
    }
    assert!(recorder.count(|e| matches!(e, Event::FallbackReleased { .. })) >= 1);
}

/// After the breaker opens, calls stop paying the socket timeout.
#[test]
fn blackhole_costs_at_most_threshold_plus_probes_timeouts() {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let clock = ManualClock::new();
    let config = fast(&proxy.url())
        .socket_timeout(ms(200))
        .failure_threshold(3)
        .half_open_max_requests(1)
        .open_timeout(Duration::from_secs(10))
        .max_retries(0)
        .build()
        .unwrap();
    let client = Client::builder(config)
        .clock(clock.shared())
        .build()
        .unwrap();
    client.set("k", "v").unwrap();
    proxy.set_mode(Mode::Blackhole);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let client = client.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let _: Option<String> = client.get("k").unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // One open period passes: exactly one probe may pay the timeout.
    clock.advance(Duration::from_secs(11));
    for _ in 0..20 {
        let _: Option<String> = client.get("k").unwrap();
    }
    let s = client.stats();
    // Concurrent callers may be inside the socket wait when the breaker
    // opens: at most one per thread beyond the threshold.
    assert!(
        s.timeouts <= 3 + 4 + 1,
        "{} socket timeouts: {s}",
        s.timeouts
    );
    assert!(s.timeouts >= 3, "{s}");
    assert_eq!(s.fallback_reads, 220);
    assert!(s.endpoints[0].breaker_rejections >= 200, "{s}");
}

#[test]
fn stats_export_as_prometheus_text() {
    let server = RedisServer::new();
    let client = Client::new(fast(&server.url()).build().unwrap()).unwrap();
    client.set("k", "v").unwrap();
    let _: Option<String> = client.get("k").unwrap();
    let _: Option<String> = client.get("missing").unwrap();
    let text = client.stats().to_prometheus();
    for line in [
        "resilient_redis_requests_total 3",
        "resilient_redis_hits_total 1",
        "resilient_redis_misses_total 1",
        "resilient_redis_circuit_state{endpoint=\"primary\"} 0",
        "# TYPE resilient_redis_failover_active gauge",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(!text.contains("***"));
}

/// Issue #11: with the default fallback, an `INCR` whose reply was lost
/// after it ran on Redis is not answered from the (empty) memory store:
/// the caller gets the error saying it may have run, and the count on
/// Redis goes on from where it was.
#[test]
fn incr_is_never_answered_from_memory() {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let client = Client::new(fast(&proxy.url()).build().unwrap()).unwrap();
    for _ in 0..1000 {
        client.incr("counter", 1).unwrap();
    }
    proxy.cut_next_request();
    let err = client.incr("counter", 1).unwrap_err();
    assert!(err.may_have_executed(), "{err}");
    // Redis down: an error, never a count computed in memory.
    proxy.set_mode(Mode::Refuse);
    proxy.reset_all();
    let err = client.incr("counter", 1).unwrap_err();
    assert!(err.is_transient(), "{err}");
    proxy.set_mode(Mode::PassThrough);
    assert_eq!(client.incr("counter", 1).unwrap(), 1002);
}

/// Issue #11: in write-through mode the memory copy keeps the TTL the
/// write gave it; a read from Redis does not renew it with the default.
#[test]
fn write_through_keeps_the_written_ttl() {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let clock = ManualClock::new();
    let client = Client::builder(
        fast(&proxy.url())
            .fallback_mode(FallbackMode::WriteThrough)
            .default_ttl(Some(Duration::from_secs(3600)))
            .failure_threshold(1)
            .build()
            .unwrap(),
    )
    .clock(clock.shared())
    .build()
    .unwrap();
    client.set_ex("short", "v", ms(800)).unwrap();
    assert_eq!(
        client.get::<_, String>("short").unwrap().as_deref(),
        Some("v")
    );
    proxy.set_mode(Mode::Refuse);
    proxy.reset_all();
    // Served from memory while the copy lives...
    assert_eq!(
        client.get::<_, String>("short").unwrap().as_deref(),
        Some("v")
    );
    assert!(client.stats().fallback_reads >= 1);
    // ...and gone once the 800 ms are over, as on Redis.
    clock.advance(Duration::from_millis(1500));
    assert_eq!(client.get::<_, String>("short").unwrap(), None);
}

/// Calls to the primary that ended `ok` and took more than 250 ms, per the
/// duration histogram.
fn slow_ok_calls(client: &Client) -> u64 {
    let quarter = resilient_redis::DurationHistogram::bounds()
        .position(|b| (b - 0.25).abs() < 1e-12)
        .unwrap();
    client
        .stats()
        .request_duration
        .iter()
        .find(|h| (h.endpoint, h.outcome) == ("primary", "ok"))
        .map_or(0, |h| h.count - h.cumulative[quarter])
}

/// The duration histogram shares the call path's clock reads (the call's
/// start, its connection's return to the pool) instead of reading its own:
/// a call the server holds for 300 ms (`DEBUG SLEEP`) must still land
/// above 250 ms.
#[test]
fn the_duration_histogram_counts_a_slow_call_as_slow() {
    let server = RedisServer::new();
    let config = fast(&server.url())
        .socket_timeout(ms(5_000))
        .build()
        .unwrap();
    let client = Client::new(config).unwrap();
    client.set("k", "v").unwrap();
    let _: Option<String> = client.get("k").unwrap();
    let before = slow_ok_calls(&client);
    client
        .execute::<()>(redis::cmd("DEBUG").arg("SLEEP").arg("0.3"))
        .unwrap();
    assert_eq!(slow_ok_calls(&client), before + 1);
}

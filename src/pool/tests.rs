//! Pool accounting driven with fake connections and the manual clock: no
//! server, no sleeping.

// Tests unwrap freely: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::core::{Entry, Manage, Settings, Shared};
use super::maintenance::Maintenance;
use super::*;
use crate::clock::ManualClock;
use crate::error::{ErrorClass, ErrorKind};
use crate::pool::core::Ping;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[derive(Debug)]
struct FakeConn {
    id: u64,
    dead: Arc<AtomicBool>,
}

/// Counts what the pool asks of it; connects can be made to fail or to
/// block until released.
#[derive(Default)]
struct Fake {
    made: AtomicU64,
    fail: AtomicBool,
    pings: AtomicU64,
    bad_pings: Mutex<HashSet<u64>>,
    dead: Mutex<Vec<Arc<AtomicBool>>>,
    gate: Option<Receiver<()>>,
    in_flight: AtomicU32,
    max_in_flight: AtomicU32,
    /// Each PING takes this long on this clock (a silent server).
    ping_takes: Mutex<Option<(ManualClock, Duration)>>,
    /// Bumped by a test: the server behind the pool changed.
    generation: AtomicU64,
}

impl Manage for Fake {
    type Conn = FakeConn;

    fn connect(&self, _timeout: Duration) -> Result<FakeConn, Error> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            let _ = gate.recv();
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Connection,
                ErrorClass::Transient,
                "connecting to fake: connection refused",
            ));
        }
        let id = self.made.fetch_add(1, Ordering::SeqCst) + 1;
        let dead = Arc::new(AtomicBool::new(false));
        self.dead.lock().push(dead.clone());
        Ok(FakeConn { id, dead })
    }

    fn ping(&self, conn: &mut FakeConn, timeout: Duration) -> Ping {
        self.pings.fetch_add(1, Ordering::SeqCst);
        if let Some((clock, takes)) = &*self.ping_takes.lock() {
            clock.advance((*takes).min(timeout));
        }
        if self.bad_pings.lock().contains(&conn.id) {
            Ping::Failed
        } else {
            Ping::Pong
        }
    }

    fn is_broken(&self, conn: &FakeConn) -> bool {
        conn.dead.load(Ordering::SeqCst)
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }
}

fn settings(max: u32) -> Settings {
    Settings {
        endpoint: "redis://fake:6379".into(),
        max,
        min_idle: 0,
        dial_cap: max.min(core::MAX_DIALS),
        connect_timeout: secs(2),
        checkout_timeout: secs(2),
        health_check_interval: secs(30),
        idle_timeout: Some(secs(300)),
        max_lifetime: Some(secs(1800)),
    }
}

fn pool_with(fake: Fake, settings: Settings) -> (Arc<Shared<Fake>>, ManualClock) {
    let clock = ManualClock::new();
    (Arc::new(Shared::new(fake, settings, clock.shared())), clock)
}

fn get(p: &Shared<Fake>, clock: &ManualClock) -> Result<(Entry<FakeConn>, bool), Error> {
    p.checkout(crate::Clock::now(clock) + secs(2), true)
}

/// Spins (yielding) until `cond` holds; fails the test after 10 s.
fn until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < secs(10), "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn a_new_generation_retires_idle_and_lent_connections() {
    let (p, clock) = pool_with(Fake::default(), settings(4));
    let (idle, _) = get(&p, &clock).unwrap();
    let (lent, _) = get(&p, &clock).unwrap();
    let idle_id = idle.conn.id;
    p.checkin(idle, false);
    // The master moved.
    p.manager.generation.fetch_add(1, Ordering::SeqCst);
    // The idle one is never lent again: a fresh one is dialled.
    let (fresh, reused) = get(&p, &clock).unwrap();
    assert!(!reused);
    assert_ne!(fresh.conn.id, idle_id);
    assert!(!p.is_retired(&fresh));
    // The lent one is closed on return, not put back.
    assert!(p.is_retired(&lent));
    p.checkin(lent, false);
    p.checkin(fresh, false);
    let s = p.state();
    assert_eq!((s.total, s.idle), (1, 1));
    assert_eq!(p.stats().closed_retired, 2);
    assert_eq!(p.stats().closed(), 2);
}

#[test]
fn reuses_last_returned_first() {
    let (p, clock) = pool_with(Fake::default(), settings(4));
    let a = get(&p, &clock).unwrap();
    let b = get(&p, &clock).unwrap();
    let c = get(&p, &clock).unwrap();
    assert!(!a.1 && !b.1 && !c.1, "fresh connections are not reused");
    let ids = [a.0.conn.id, b.0.conn.id, c.0.conn.id];
    p.checkin(a.0, false);
    p.checkin(b.0, false);
    p.checkin(c.0, false);
    let (top, reused) = get(&p, &clock).unwrap();
    assert!(reused);
    assert_eq!(top.conn.id, ids[2]);
    let (next, _) = get(&p, &clock).unwrap();
    assert_eq!(next.conn.id, ids[1]);
    assert_eq!(p.manager.made.load(Ordering::SeqCst), 3);
    let s = p.state();
    assert_eq!((s.total, s.idle, s.in_use), (3, 1, 2));
}

#[test]
fn full_pool_times_out_without_blaming_redis() {
    let (p, clock) = pool_with(Fake::default(), settings(2));
    let _a = get(&p, &clock).unwrap();
    let _b = get(&p, &clock).unwrap();

    let err = p.checkout(crate::Clock::now(&clock), false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolTimeout);
    assert!(err.is_transient() && err.is_timeout());
    assert!(!err.counts_against_breaker());
    assert!(!err.may_have_executed());
    assert!(err.to_string().contains("redis://fake:6379"), "{err}");

    // A deadline already past: no wait at all.
    let err = p.checkout(crate::Clock::now(&clock), true).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolTimeout);
    let stats = p.stats();
    assert_eq!((stats.waits, stats.wait_timeouts), (1, 1));
    assert_eq!(p.state().total, 2);
    assert_eq!(p.state().waiters, 0);
}

#[test]
fn waiter_times_out_by_the_pool_clock() {
    let mut s = settings(1);
    s.checkout_timeout = ms(20);
    let (p, clock) = pool_with(Fake::default(), s);
    let held = get(&p, &clock).unwrap();
    // Real waits are as long as the time left by the pool clock (20 ms),
    // and the waiter rechecks that clock after each.
    let deadline = crate::Clock::now(&clock) + ms(20);
    let waiter = {
        let p = p.clone();
        std::thread::spawn(move || p.checkout(deadline, true).map(|(e, _)| e.conn.id))
    };
    until("the waiter to queue", || p.state().waiters == 1);
    clock.advance(ms(20));
    let err = waiter.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolTimeout);
    assert_eq!(p.state().waiters, 0);
    // The held connection still goes back to the pool normally.
    p.checkin(held.0, false);
    assert_eq!(p.state().idle, 1);
}

#[test]
fn waiters_are_served_in_arrival_order() {
    let (p, clock) = pool_with(Fake::default(), settings(1));
    let (held, _) = get(&p, &clock).unwrap();
    let (order_tx, order_rx): (Sender<&str>, _) = crossbeam_channel::unbounded();
    let deadline = crate::Clock::now(&clock) + secs(3600);
    let spawn = |name: &'static str| {
        let p = p.clone();
        let tx = order_tx.clone();
        std::thread::spawn(move || {
            let (entry, reused) = p.checkout(deadline, true).unwrap();
            assert!(reused);
            tx.send(name).unwrap();
            p.checkin(entry, false);
        })
    };
    let first = spawn("first");
    until("first to queue", || p.state().waiters == 1);
    let second = spawn("second");
    until("second to queue", || p.state().waiters == 2);
    // A newcomer that does not wait must not overtake them.
    let err = p.checkout(crate::Clock::now(&clock), false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolTimeout);

    p.checkin(held, false);
    first.join().unwrap();
    second.join().unwrap();
    let order: Vec<_> = order_rx.try_iter().collect();
    assert_eq!(order, ["first", "second"]);
    assert_eq!(p.manager.made.load(Ordering::SeqCst), 1);
    assert_eq!(p.stats().waits, 2);
}

#[test]
fn idle_connection_is_pinged_and_replaced_invisibly() {
    let (p, clock) = pool_with(Fake::default(), settings(2));
    let (e, _) = get(&p, &clock).unwrap();
    let first = e.conn.id;
    p.checkin(e, false);

    // Below the health-check interval: reused without a PING.
    clock.advance(secs(29));
    let (e, reused) = get(&p, &clock).unwrap();
    assert!(reused && e.conn.id == first);
    assert_eq!(p.manager.pings.load(Ordering::SeqCst), 0);
    p.checkin(e, false);

    // Past it: PINGed; the PING fails, so a new one is made.
    clock.advance(secs(31));
    p.manager.bad_pings.lock().insert(first);
    let (e, reused) = get(&p, &clock).unwrap();
    assert!(!reused);
    assert_ne!(e.conn.id, first);
    let stats = p.stats();
    assert_eq!(stats.health_checks, 1);
    assert_eq!(stats.closed_health_check_failed, 1);
    assert_eq!(p.state().total, 1);

    // A healthy idle connection passes its PING and is reused.
    let id = e.conn.id;
    p.checkin(e, false);
    clock.advance(secs(31));
    let (e, reused) = get(&p, &clock).unwrap();
    assert!(reused && e.conn.id == id);
    assert_eq!(p.stats().health_checks, 2);
}

#[test]
fn no_health_check_starts_past_the_checkout_deadline() {
    let (p, clock) = pool_with(Fake::default(), settings(3));
    let entries: Vec<_> = (0..3).map(|_| get(&p, &clock).unwrap().0).collect();
    for e in entries {
        p.manager.bad_pings.lock().insert(e.conn.id);
        p.checkin(e, false);
    }
    // Every idle connection is due a PING, and the server is silent: the
    // first PING waits out the whole checkout time.
    clock.advance(secs(31));
    *p.manager.ping_takes.lock() = Some((clock.clone(), secs(60)));
    let start = crate::Clock::now(&clock);
    let err = get(&p, &clock).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolTimeout, "{err:?}");
    assert_eq!(p.manager.pings.load(Ordering::SeqCst), 1);
    assert_eq!(crate::Clock::now(&clock) - start, secs(2));
    assert_eq!(p.state().idle, 2, "the unchecked ones stay");
}

#[test]
fn closed_connections_are_never_handed_out() {
    let (p, clock) = pool_with(Fake::default(), settings(2));
    let (e, _) = get(&p, &clock).unwrap();
    let dead = e.conn.dead.clone();
    p.checkin(e, false);
    // The server closed it while idle (CLIENT KILL, idle timeout).
    dead.store(true, Ordering::SeqCst);
    let (e, reused) = get(&p, &clock).unwrap();
    assert!(!reused);
    assert_eq!(p.stats().closed_broken, 1);
    p.checkin(e, true);
    assert_eq!(p.stats().closed_broken, 2);
    assert_eq!(p.state().total, 0);
}

#[test]
fn idle_timeout_and_lifetime_expire_at_checkout() {
    let mut s = settings(2);
    s.idle_timeout = Some(secs(60));
    s.max_lifetime = Some(secs(100));
    s.health_check_interval = secs(3600);
    let (p, clock) = pool_with(Fake::default(), s);

    let (e, _) = get(&p, &clock).unwrap();
    p.checkin(e, false);
    clock.advance(secs(61));
    let (e, reused) = get(&p, &clock).unwrap();
    assert!(!reused);
    assert_eq!(p.stats().closed_idle_expired, 1);

    // Lifetime is jittered down by at most 10%: alive at 89 s, gone at 100 s.
    clock.advance(secs(50));
    p.checkin(e, false);
    clock.advance(secs(39));
    let (e, reused) = get(&p, &clock).unwrap();
    assert!(reused);
    clock.advance(secs(11));
    p.checkin(e, false);
    assert_eq!(p.stats().closed_lifetime_expired, 1);
    assert_eq!(p.state().total, 0);
}

#[test]
fn lifetimes_are_jittered() {
    let mut s = settings(64);
    s.max_lifetime = Some(secs(1000));
    s.idle_timeout = None;
    s.health_check_interval = secs(100_000);
    let (p, clock) = pool_with(Fake::default(), s);
    let entries: Vec<_> = (0..64).map(|_| get(&p, &clock).unwrap().0).collect();
    for e in entries {
        p.checkin(e, false);
    }
    clock.advance(secs(950));
    p.maintain();
    let closed = p.stats().closed_lifetime_expired;
    assert!(closed > 0 && closed < 64, "{closed} of 64 expired at 95%");
    clock.advance(secs(50));
    p.maintain();
    assert_eq!(p.stats().closed_lifetime_expired, 64);
}

#[test]
fn maintenance_expires_idle_and_keeps_min_idle_warm() {
    let mut s = settings(4);
    s.min_idle = 2;
    s.idle_timeout = Some(secs(60));
    let (p, clock) = pool_with(Fake::default(), s);
    assert_eq!(p.maintain(), 2);
    assert_eq!(p.state().idle, 2);
    assert_eq!(p.maintain(), 0, "already warm");

    // A burst leaves 4 idle; after the idle timeout all four close and two
    // fresh ones replace them.
    let held: Vec<_> = (0..4).map(|_| get(&p, &clock).unwrap().0).collect();
    for e in held {
        p.checkin(e, false);
    }
    assert_eq!(p.state().idle, 4);
    clock.advance(secs(61));
    assert_eq!(p.maintain(), 2);
    let stats = p.stats();
    assert_eq!(stats.closed_idle_expired, 4);
    assert_eq!(stats.created, 6);
    assert_eq!(p.state().idle, 2);
}

#[test]
fn connect_failure_reaches_the_caller_and_frees_the_slot() {
    let (p, clock) = pool_with(Fake::default(), settings(1));
    p.manager.fail.store(true, Ordering::SeqCst);
    let err = get(&p, &clock).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection);
    assert!(err.counts_against_breaker());
    let s = p.state();
    assert_eq!((s.total, s.connecting), (0, 0));
    assert_eq!(p.stats().connect_failures, 1);
    p.manager.fail.store(false, Ordering::SeqCst);
    assert!(get(&p, &clock).is_ok());
}

#[test]
fn connects_in_flight_are_capped() {
    let (release, gate) = crossbeam_channel::unbounded();
    let fake = Fake {
        gate: Some(gate),
        ..Fake::default()
    };
    let (p, clock) = pool_with(fake, settings(10));
    let deadline = crate::Clock::now(&clock) + secs(3600);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || {
                let (e, _) = p.checkout(deadline, true).unwrap();
                e.conn.id
            })
        })
        .collect();
    until("four dials and four waiters", || {
        let s = p.state();
        s.connecting == 4 && s.waiters == 4
    });
    for _ in 0..8 {
        release.send(()).unwrap();
    }
    let mut ids: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=8).collect::<Vec<_>>());
    assert_eq!(p.manager.max_in_flight.load(Ordering::SeqCst), 4);
    assert_eq!(p.state().in_use, 8);
}

#[test]
fn counters_add_up_under_contention() {
    let (p, clock) = pool_with(Fake::default(), settings(4));
    let deadline = crate::Clock::now(&clock) + secs(3600);
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                for i in 0..500u64 {
                    let (e, _) = p.checkout(deadline, true).unwrap();
                    let s = p.state();
                    assert!(s.total <= 4, "{s:?}");
                    // Every 7th use breaks its connection.
                    p.checkin(e, (t * 500 + i) % 7 == 0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (s, st) = (p.stats(), p.state());
    assert_eq!(s.checkouts, 16 * 500);
    assert_eq!(
        s.closed_broken,
        (0..16 * 500).filter(|n| n % 7 == 0).count() as u64
    );
    assert_eq!(s.created - s.closed(), u64::from(st.total));
    assert_eq!((st.in_use, st.connecting, st.waiters), (0, 0, 0));
    assert!(st.total <= 4);
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl PoolListener for Recorder {
    fn connection_created(&self, endpoint: &str, id: u64) {
        self.0.lock().push(format!("created {endpoint} #{id}"));
    }
    fn connection_closed(&self, _endpoint: &str, id: u64, reason: CloseReason) {
        self.0.lock().push(format!("closed #{id} {reason}"));
    }
    fn connect_failed(&self, _endpoint: &str, error: &Error) {
        self.0.lock().push(format!("failed {}", error.kind()));
    }
}

#[test]
fn listener_hears_creates_closes_and_failures() {
    let (p, clock) = pool_with(Fake::default(), settings(2));
    let rec = Arc::new(Recorder::default());
    p.set_listener(rec.clone());
    let (e, _) = get(&p, &clock).unwrap();
    p.checkin(e, true);
    p.manager.fail.store(true, Ordering::SeqCst);
    let _ = get(&p, &clock);
    p.manager.fail.store(false, Ordering::SeqCst);
    let (e, _) = get(&p, &clock).unwrap();
    p.checkin(e, false);
    drop(p);
    assert_eq!(
        *rec.0.lock(),
        [
            "created redis://fake:6379 #1",
            "closed #1 broken",
            "failed connection",
            "created redis://fake:6379 #2",
            "closed #2 pool_dropped",
        ]
    );
}

#[test]
fn maintenance_thread_warms_up_and_ends_with_the_pool() {
    let mut s = settings(4);
    s.min_idle = 1;
    let clock = ManualClock::new();
    let shared = Arc::new(Shared::new(Fake::default(), s, clock.shared()));
    let maintenance = Maintenance::start(&shared);
    let exited = maintenance.exited();
    // The first pass runs at once.
    until("warm-up", || shared.state().idle == 1);
    let weak = Arc::downgrade(&shared);
    drop(shared);
    // The thread held only a weak reference: the pool is gone already.
    assert!(weak.upgrade().is_none());
    assert!(!exited.load(Ordering::Acquire));
    drop(maintenance);
    assert!(exited.load(Ordering::Acquire), "thread outlived the pool");
}

#[test]
fn real_pool_stops_its_thread_and_rejects_memory_only() {
    let config = Config::builder("redis://127.0.0.1:1").build().unwrap();
    let pool = Pool::with_clock(&config, ManualClock::new().shared()).unwrap();
    let exited = pool._maintenance.exited();
    let clone = pool.clone();
    drop(pool);
    assert!(!exited.load(Ordering::Acquire), "a clone still holds it");
    drop(clone);
    assert!(exited.load(Ordering::Acquire));

    let memory = Config::memory_only().build().unwrap();
    assert_eq!(Pool::new(&memory).unwrap_err().kind(), ErrorKind::Config);
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Pool>();
    send::<PooledConnection>();
}

#[test]
fn only_io_parse_and_timeout_errors_break_a_connection() {
    use std::io;
    let io_err = |kind| redis::RedisError::from(io::Error::new(kind, "x"));
    assert!(connect::breaks_connection(&io_err(io::ErrorKind::TimedOut)));
    assert!(connect::breaks_connection(&io_err(
        io::ErrorKind::WouldBlock
    )));
    assert!(connect::breaks_connection(&io_err(
        io::ErrorKind::ConnectionReset
    )));
    let parse = redis::RedisError::from((redis::ErrorKind::Parse, "bad"));
    assert!(connect::breaks_connection(&parse));

    let wrongtype = redis::parse_redis_value(b"-WRONGTYPE Operation against a key\r\n")
        .unwrap()
        .extract_error()
        .unwrap_err();
    assert!(!connect::breaks_connection(&wrongtype));
    let conv = redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "int"));
    assert!(!connect::breaks_connection(&conv));
}

#[test]
fn sockets_get_keepalive_nodelay_and_user_timeout() {
    let config = Config::builder("redis://127.0.0.1:6379")
        .keepalive_idle(secs(10))
        .keepalive_interval(secs(5))
        .keepalive_count(3)
        .build()
        .unwrap();
    let tcp = connect::tcp_settings(&config);
    assert!(tcp.nodelay());
    assert!(tcp.keepalive().is_some());
    #[cfg(target_os = "linux")]
    assert_eq!(tcp.user_timeout(), Some(secs(25)));
}

#[test]
fn connect_timeout_is_shared_across_handshake_replies() {
    let endpoint = |url: &str| Config::builder(url).build().unwrap().primary.unwrap();
    assert_eq!(
        connect::handshake_replies(&endpoint("redis://h:6379").info),
        2
    );
    assert_eq!(
        connect::handshake_replies(&endpoint("redis://u:pw@h:6379/3").info),
        4
    );
}

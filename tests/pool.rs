//! The pool against a real `redis-server` (and the fault proxy in front of
//! it): idle kills, `CLIENT KILL`, contention, exhaustion, a dead server, a
//! blackhole, and keepalive on the live sockets.

// Tests unwrap freely: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use resilient_redis::redis::{self, Commands};
use resilient_redis::{Config, ConfigBuilder, ErrorKind, Pool};
use support::{free_port, ms, FaultProxy, Mode, RedisServer};

fn builder(url: &str) -> ConfigBuilder {
    Config::builder(url)
        .connect_timeout(ms(500))
        .socket_timeout(ms(500))
        .checkout_timeout(ms(1000))
}

fn pool(config: ConfigBuilder) -> Pool {
    Pool::new(&config.build().unwrap()).unwrap()
}

/// Ids of the normal clients connected to the server, except `admin` itself.
fn client_ids(admin: &mut redis::Connection) -> Vec<u64> {
    let me: u64 = redis::cmd("CLIENT").arg("ID").query(admin).unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("normal")
        .query(admin)
        .unwrap();
    list.lines()
        .filter_map(|line| line.strip_prefix("id=")?.split(' ').next()?.parse().ok())
        .filter(|id| *id != me)
        .collect()
}

#[test]
fn connections_killed_by_the_server_idle_timeout_never_reach_the_caller() {
    let server = RedisServer::new();
    let mut admin = server.connection();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("timeout")
        .arg("1")
        .query(&mut admin)
        .unwrap();
    let pool = pool(builder(&server.url()).health_check_interval(ms(500)));
    for round in 0..20 {
        let mut conn = pool.get().unwrap_or_else(|e| panic!("round {round}: {e}"));
        let n: i64 = conn
            .incr("rounds", 1)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(n, round + 1);
        drop(conn);
        // The scenario itself: idle past the server's 1 s timeout.
        std::thread::sleep(ms(1500));
    }
    let stats = pool.stats();
    assert!(stats.health_checks >= 19, "{stats:?}");
    assert!(stats.closed_health_check_failed >= 1, "{stats:?}");
    assert_eq!(stats.created - stats.closed(), 1);
}

#[test]
fn client_kill_of_idle_connections_is_invisible() {
    let server = RedisServer::new();
    let mut admin = server.connection();
    let pool = pool(builder(&server.url()).health_check_interval(ms(100)));
    let held: Vec<_> = (0..4).map(|_| pool.get().unwrap()).collect();
    drop(held);
    assert_eq!(pool.state().idle, 4);
    assert_eq!(client_ids(&mut admin).len(), 4);

    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut admin)
        .unwrap();
    assert_eq!(killed, 4);
    // The connections stay idle past the health-check interval.
    std::thread::sleep(ms(150));

    for i in 0..8 {
        let mut conn = pool.get().unwrap();
        let _: () = conn.set("k", i).unwrap();
        let v: i64 = conn.get("k").unwrap();
        assert_eq!(v, i);
    }
    let stats = pool.stats();
    assert_eq!(stats.closed_health_check_failed, 4, "{stats:?}");
}

#[test]
fn thirty_two_threads_never_open_more_than_eight() {
    let server = RedisServer::new();
    let pool = pool(
        builder(&server.url())
            .max_connections(8)
            .checkout_timeout(ms(10_000)),
    );
    let done = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicU32::new(0));
    let watcher = {
        let mut admin = server.connection();
        let (done, max_seen) = (done.clone(), max_seen.clone());
        std::thread::spawn(move || {
            let mut polls = 0u32;
            while !done.load(Ordering::SeqCst) || polls == 0 {
                let n = client_ids(&mut admin).len() as u32;
                max_seen.fetch_max(n, Ordering::SeqCst);
                polls += 1;
            }
            polls
        })
    };
    let workers: Vec<_> = (0..32)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let mut conn = pool.get().unwrap();
                    let key = format!("t{t}");
                    let n: i64 = conn.incr(&key, 1).unwrap();
                    assert_eq!(n, i + 1);
                    assert!(pool.state().total <= 8);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let polls = watcher.join().unwrap();
    assert!(polls > 0);
    let seen = max_seen.load(Ordering::SeqCst);
    assert!(
        (1..=8).contains(&seen),
        "CLIENT LIST showed {seen} pool connections"
    );

    let (stats, state) = (pool.stats(), pool.state());
    assert_eq!(stats.checkouts, 32 * 200);
    assert!(stats.created <= 8, "{stats:?}");
    assert_eq!(stats.created - stats.closed(), u64::from(state.total));
    assert_eq!((state.in_use, state.waiters, state.connecting), (0, 0, 0));
    assert!(
        stats.waits > 0,
        "32 threads on 8 connections must wait: {stats:?}"
    );
}

#[test]
fn exhausted_pool_times_out_at_the_deadline() {
    let server = RedisServer::new();
    let pool = pool(
        builder(&server.url())
            .max_connections(2)
            .checkout_timeout(ms(300)),
    );
    let _a = pool.get().unwrap();
    let _b = pool.get().unwrap();
    let start = Instant::now();
    let err = pool.get().unwrap_err();
    assert!(start.elapsed() >= ms(300), "gave up before the deadline");
    assert_eq!(err.kind(), ErrorKind::PoolTimeout);
    assert!(!err.counts_against_breaker() && !err.may_have_executed());
    assert_eq!(pool.try_get().unwrap_err().kind(), ErrorKind::PoolTimeout);
    assert_eq!(pool.stats().wait_timeouts, 1);
}

#[test]
fn nothing_listening_fails_fast_with_a_connection_error() {
    let url = format!("redis://:hunter2@127.0.0.1:{}", free_port());
    let pool = pool(builder(&url).checkout_timeout(ms(2000)));
    let start = Instant::now();
    let err = pool.get().unwrap_err();
    assert!(
        start.elapsed() < ms(2000),
        "blocked past the checkout deadline"
    );
    assert_eq!(err.kind(), ErrorKind::Connection);
    assert!(err.counts_against_breaker() && !err.may_have_executed());
    let msg = format!("{err} {err:?}");
    assert!(
        msg.contains("127.0.0.1") && !msg.contains("hunter2"),
        "{msg}"
    );
    assert_eq!(pool.state().total, 0);
}

#[test]
fn refused_and_silent_endpoints_stay_within_the_deadlines() {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let pool = pool(
        builder(&proxy.url())
            .connect_timeout(ms(300))
            .checkout_timeout(ms(600)),
    );

    proxy.set_mode(Mode::Refuse);
    let err = pool.get().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection);

    // Accepts TCP, never answers the handshake: the connect timeout applies.
    proxy.set_mode(Mode::Blackhole);
    let start = Instant::now();
    let err = pool.get().unwrap_err();
    assert!(
        start.elapsed() < ms(600),
        "blocked past the checkout deadline"
    );
    assert!(err.is_timeout(), "{err:?}");
    assert!(!err.may_have_executed());

    proxy.set_mode(Mode::PassThrough);
    let mut conn = pool.get().unwrap();
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(pool.stats().connect_failures, 2);
}

#[test]
fn a_timed_out_connection_is_discarded_not_reused() {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let pool = pool(builder(&proxy.url()).socket_timeout(ms(300)));
    {
        let mut conn = pool.get().unwrap();
        let _: () = conn.set("k", "v").unwrap();
        proxy.set_mode(Mode::Blackhole);
        let err: resilient_redis::Error = conn.get::<_, String>("k").unwrap_err().into();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
        assert!(conn.is_broken());
    }
    let stats = pool.stats();
    assert_eq!(stats.closed_broken, 1);
    assert_eq!(pool.state().total, 0);

    proxy.set_mode(Mode::PassThrough);
    let mut conn = pool.get().unwrap();
    assert!(!conn.is_reused(), "the timed-out connection came back");
    let v: String = conn.get("k").unwrap();
    assert_eq!(v, "v");
}

#[test]
fn error_replies_keep_the_connection() {
    let server = RedisServer::new();
    let pool = pool(builder(&server.url()));
    {
        let mut conn = pool.get().unwrap();
        let _: () = conn.set("s", "text").unwrap();
        let err = conn.incr::<_, _, i64>("s", 1).unwrap_err();
        assert_eq!(
            err.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
        );
        assert!(!conn.is_broken());
    }
    let conn = pool.get().unwrap();
    assert!(conn.is_reused());
    assert_eq!(pool.stats().closed(), 0);
}

/// `(timer kind, ticks until it fires)` of each TCP socket connected to
/// `port`, from /proc/net/tcp (timer 2 is keepalive; ticks are USER_HZ = 100).
#[cfg(target_os = "linux")]
fn client_socket_timers(port: u16) -> Vec<(u32, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let remote_port = u16::from_str_radix(cols.get(2)?.rsplit(':').next()?, 16).ok()?;
            let state = cols.get(3)?;
            if remote_port != port || *state != "01" {
                return None;
            }
            let (kind, when) = cols.get(5)?.split_once(':')?;
            Some((
                u32::from_str_radix(kind, 16).ok()?,
                u64::from_str_radix(when, 16).ok()?,
            ))
        })
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn keepalive_is_armed_on_the_live_sockets() {
    let server = RedisServer::new();
    let pool = pool(
        builder(&server.url())
            .keepalive_idle(Duration::from_secs(7))
            .keepalive_interval(Duration::from_secs(3))
            .keepalive_count(4),
    );
    let held: Vec<_> = (0..3).map(|_| pool.get().unwrap()).collect();
    let timers = client_socket_timers(server.port());
    assert_eq!(timers.len(), 3, "{timers:?}");
    for (kind, ticks) in &timers {
        assert_eq!(*kind, 2, "no keepalive timer: {timers:?}");
        assert!(*ticks <= 700, "keepalive not set to 7 s: {timers:?}");
    }
    drop(held);

    // A socket without our settings has no keepalive timer at all, so the
    // check above does tell the two apart.
    let plain_server = RedisServer::new();
    let _plain = plain_server.connection();
    let timers = client_socket_timers(plain_server.port());
    assert_eq!(timers.len(), 1);
    assert_eq!(timers[0].0, 0, "{timers:?}");
}

#[test]
fn a_pipeline_to_a_silent_server_costs_one_socket_timeout_and_the_connection() {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let pool = pool(builder(&proxy.url()).socket_timeout(ms(200)));
    let mut conn = pool.get().unwrap();
    let _: () = conn.set("k", "v").unwrap();

    proxy.set_mode(Mode::Blackhole);
    let mut pipe = redis::pipe();
    for i in 0..50 {
        pipe.cmd("GET").arg(i);
    }
    let start = Instant::now();
    let err: resilient_redis::Error = pipe
        .query::<Vec<Option<String>>>(&mut conn)
        .unwrap_err()
        .into();
    let took = start.elapsed();
    // One socket timeout, not one per command (50 × 200 ms before).
    assert!(took < ms(200 + 250), "took {took:?}");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(err.may_have_executed());
    assert!(conn.is_broken(), "replies were left unread");
    drop(conn);
    assert_eq!(pool.stats().closed_broken, 1);
}

#[test]
fn transactions_and_pipelines_keep_redis_semantics() {
    let server = RedisServer::new();
    let pool = pool(builder(&server.url()));
    let mut conn = pool.get().unwrap();
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("n")
        .cmd("INCRBY")
        .arg("n")
        .arg(2)
        .query(&mut conn)
        .unwrap();
    assert_eq!((a, b), (1, 3));
    // An error reply inside a pipeline is that command's reply.
    let _: () = conn.set("s", "text").unwrap();
    let err = redis::pipe()
        .cmd("INCR")
        .arg("s")
        .cmd("GET")
        .arg("s")
        .query::<(i64, String)>(&mut conn)
        .unwrap_err();
    assert!(err.to_string().contains("not an integer"), "{err}");
    // A command refused while queueing aborts the transaction with its error.
    let err = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("n")
        .cmd("NOT-A-COMMAND")
        .query::<(i64, i64)>(&mut conn)
        .unwrap_err();
    assert!(err.to_string().contains("unknown command"), "{err}");
    // Every reply was read: the connection is still in step.
    assert!(!conn.is_broken());
    let n: i64 = conn.get("n").unwrap();
    assert_eq!(n, 3);
}

#[test]
fn a_lowered_io_timeout_holds_for_its_checkout_only() {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let pool = pool(
        builder(&proxy.url())
            .socket_timeout(ms(2000))
            .max_connections(1),
    );
    {
        let mut conn = pool.get().unwrap();
        conn.cap_io_timeout(ms(50)).unwrap();
        let _: () = conn.set("k", "v").unwrap();
    }
    // A round trip now takes ~300 ms: longer than the lowered timeout,
    // shorter than the configured one.
    proxy.set_mode(Mode::Latency(ms(150)));
    let mut conn = pool.get().unwrap();
    assert!(conn.is_reused());
    let v: String = conn.get("k").unwrap();
    assert_eq!(v, "v");

    conn.cap_io_timeout(ms(50)).unwrap();
    let err: resilient_redis::Error = conn.get::<_, String>("k").unwrap_err().into();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(conn.is_broken());

    let err = conn.cap_io_timeout(Duration::ZERO).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(!err.may_have_executed());
}

/// Issue #11: a `Duration` from the caller is never added to an `Instant`
/// unchecked. `get_timeout(Duration::MAX)` waits "forever" instead of
/// panicking, on the real clock and on a manual clock advanced as far as
/// it goes.
#[test]
fn get_timeout_accepts_any_duration() {
    let server = RedisServer::new();
    let pool = pool(builder(&server.url()));
    let mut conn = pool.get_timeout(Duration::MAX).unwrap();
    let _: () = conn.set("k", "v").unwrap();
    drop(conn);

    let clock = resilient_redis::ManualClock::new();
    clock.advance(Duration::MAX);
    let config = builder(&server.url())
        .max_lifetime(Some(Duration::from_secs(7 * 86_400)))
        .build()
        .unwrap();
    let pool = Pool::with_clock(&config, clock.shared()).unwrap();
    let mut conn = pool.get_timeout(Duration::MAX).unwrap();
    let v: String = conn.get("k").unwrap();
    assert_eq!(v, "v");
}

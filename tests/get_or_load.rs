//! `Client::get_or_load`: cache-aside loading with single-flight, against a
//! real `redis-server`.

// Test code: a failed unwrap is a failed test, with the error printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use resilient_redis::{redis, Client, Config, ConfigBuilder, FallbackMode, LoadError, ManualClock};
use support::{ms, RedisServer};

const TTL: Duration = Duration::from_secs(60);

fn fast(url: &str) -> ConfigBuilder {
    Config::builder(url)
        .connect_timeout(ms(500))
        .socket_timeout(ms(500))
        .checkout_timeout(ms(500))
        .max_retries(0)
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[derive(Debug, PartialEq)]
struct Failed(u32);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "load {} failed", self.0)
    }
}

#[test]
fn a_hit_never_runs_the_loader_and_a_miss_stores_the_value() {
    let server = RedisServer::new();
    let client = Client::new(fast(&server.url()).build().unwrap()).unwrap();
    let v: String = client
        .get_or_load("k", TTL, || Ok::<_, Failed>("loaded".to_string()))
        .unwrap();
    assert_eq!(v, "loaded");
    let ttl: i64 = redis::cmd("PTTL")
        .arg("k")
        .query(&mut server.connection())
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
    let again: Result<String, LoadError<Failed>> =
        client.get_or_load("k", TTL, || panic!("a hit must not load"));
    assert_eq!(again.unwrap(), "loaded");
    assert_eq!(client.stats().loads, 1);
}

#[test]
fn thirty_two_threads_one_missing_key_one_load() {
    let server = RedisServer::new();
    let client = Client::new(fast(&server.url()).build().unwrap()).unwrap();
    let loads = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(32));
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let (client, loads, start) = (client.clone(), loads.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                client.get_or_load("hot", TTL, || {
                    loads.fetch_add(1, Ordering::SeqCst);
                    // The workload: a slow backend.
                    std::thread::sleep(Duration::from_millis(100));
                    Ok::<_, Failed>(vec![7u8; 1000])
                })
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().unwrap(), vec![7u8; 1000]);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(client.stats().loads, 1);
}

type Loaded = Result<String, LoadError<Failed>>;

/// Thread A leads a load that `finish` ends; thread B joins it as a waiter.
/// Returns A's and B's results.
fn leader_fails_with(
    finish: impl FnOnce() -> Result<String, Failed> + Send + 'static,
) -> (std::thread::Result<Loaded>, Loaded, Client, RedisServer) {
    let server = RedisServer::new();
    // A call bound far above anything here (Redis answers at once): a
    // panic's backtrace can take seconds on a loaded machine, and the
    // waiter must be released by the leader, not by its deadline.
    let client = Client::new(
        Config::builder(server.url())
            .socket_timeout(Duration::from_secs(10))
            .checkout_timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    )
    .unwrap();
    let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(0);
    let (in_tx, in_rx) = crossbeam_channel::bounded::<()>(0);
    let leader = {
        let client = client.clone();
        std::thread::spawn(move || {
            client.get_or_load("k", TTL, move || {
                in_tx.send(()).unwrap();
                go_rx.recv().unwrap();
                finish()
            })
        })
    };
    // The leader is inside its loader.
    in_rx.recv().unwrap();
    let waiter = {
        let client = client.clone();
        std::thread::spawn(move || {
            client.get_or_load("k", TTL, || Ok::<_, Failed>("from the waiter".to_string()))
        })
    };
    wait_until("the waiter to wait", || client.stats().loads_coalesced == 1);
    go_tx.send(()).unwrap();
    let a = leader.join();
    let b = waiter.join().unwrap();
    (a, b, client, server)
}

#[test]
fn a_failed_load_is_the_leaders_and_a_waiter_loads_again() {
    let (a, b, client, _server) = leader_fails_with(|| Err(Failed(1)));
    assert!(matches!(a.unwrap(), Err(LoadError::Load(Failed(1)))));
    assert_eq!(b.unwrap(), "from the waiter");
    let s = client.stats();
    assert_eq!((s.loads, s.load_errors), (2, 1));
    // Woken by the failure, not by running out of time.
    assert_eq!(s.load_wait_timeouts, 0);
    let stored: Option<String> = client.get("k").unwrap();
    assert_eq!(stored.as_deref(), Some("from the waiter"));
}

#[test]
fn a_panicking_loader_releases_its_waiters() {
    let (a, b, client, _server) = leader_fails_with(|| panic!("the loader panicked"));
    assert!(a.is_err(), "the panic continues on the leader's thread");
    assert_eq!(b.unwrap(), "from the waiter");
    let s = client.stats();
    assert_eq!(s.load_errors, 1);
    // Released by the leader's drop guard, not by running out of time.
    assert_eq!(s.load_wait_timeouts, 0);
}

#[test]
fn the_waiters_get_the_leaders_value() {
    let (a, b, client, _server) = leader_fails_with(|| Ok("from the leader".to_string()));
    assert_eq!(a.unwrap().unwrap(), "from the leader");
    assert_eq!(b.unwrap(), "from the leader");
    assert_eq!(client.stats().loads, 1);
}

#[test]
fn a_key_written_during_an_outage_is_served_from_the_journal() {
    let mut server = RedisServer::new();
    let client = Client::new(fast(&server.url()).failure_threshold(1000).build().unwrap()).unwrap();
    client.set("k", "old").unwrap();
    server.stop();
    client.set("k", "new").unwrap();
    assert_eq!(client.stats().journal_len, 1);
    let v: String = client
        .get_or_load("k", TTL, || Ok::<_, Failed>("loaded".to_string()))
        .unwrap();
    assert_eq!(v, "new");
    // Redis is back with the older value: never returned.
    server.start();
    for _ in 0..20 {
        let v: String = client
            .get_or_load("k", TTL, || Ok::<_, Failed>("loaded".to_string()))
            .unwrap();
        assert_ne!(v, "old");
    }
}

#[test]
fn with_redis_down_the_loader_runs_once_per_key_per_ttl() {
    let mut server = RedisServer::new();
    let clock = ManualClock::new();
    let client = Client::builder(fast(&server.url()).failure_threshold(1).build().unwrap())
        .clock(clock.shared())
        .build()
        .unwrap();
    server.stop();
    let loads = AtomicUsize::new(0);
    let load = || {
        loads.fetch_add(1, Ordering::SeqCst);
        Ok::<_, Failed>(42i64)
    };
    for _ in 0..10 {
        for key in ["a", "b"] {
            assert_eq!(client.get_or_load(key, TTL, load).unwrap(), 42);
        }
    }
    assert_eq!(loads.load(Ordering::SeqCst), 2);
    clock.advance(TTL + Duration::from_secs(1));
    assert_eq!(client.get_or_load("a", TTL, load).unwrap(), 42);
    assert_eq!(loads.load(Ordering::SeqCst), 3);
}

#[test]
fn a_store_that_fails_does_not_fail_the_call() {
    let mut server = RedisServer::new();
    let config = fast(&server.url())
        .fallback_mode(FallbackMode::Disabled)
        .build()
        .unwrap();
    let client = Client::new(config).unwrap();
    server.stop();
    let v: String = client
        .get_or_load("k", TTL, || Ok::<_, Failed>("loaded".to_string()))
        .unwrap();
    assert_eq!(v, "loaded");
    assert_eq!(client.stats().load_store_failures, 1);
    // A zero TTL is the caller's error: the loader does not run.
    let zero: Result<String, _> =
        client.get_or_load("k", Duration::ZERO, || -> Result<String, Failed> {
            panic!("must not load")
        });
    assert!(matches!(zero, Err(LoadError::Cache(_))));
}

//! Issue #11: every call returns within [`Config::call_bound`], and
//! `call_timeout` bounds the whole call, socket I/O included. Real servers
//! behind the fault proxy; these are upper-bound checks of a documented
//! guarantee (with generous slack for a busy machine), not timings.

// Test code: a failed unwrap is a failed test, with the error printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use resilient_redis::{Client, Config, ConfigBuilder, ErrorKind, FallbackMode};
use support::{ms, FaultProxy, Mode, RedisServer};

/// Scheduling slack on top of a documented bound: threads on a shared
/// 2-core machine get descheduled.
const SLACK: Duration = Duration::from_millis(250);

fn config(url: &str) -> ConfigBuilder {
    Config::builder(url)
        .connect_timeout(ms(200))
        .socket_timeout(ms(200))
        .checkout_timeout(ms(200))
        .max_retries(2)
        .retry_base_delay(ms(5))
        .retry_max_delay(ms(20))
        // Errors reach the test instead of being answered from memory.
        .fallback_mode(FallbackMode::Disabled)
}

/// A client with one warm pooled connection through `proxy`.
fn warm_client(config: Config, proxy: &FaultProxy) -> Client {
    assert_eq!(proxy.mode(), Mode::PassThrough);
    let client = Client::new(config).unwrap();
    client.ping().unwrap();
    client
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

#[test]
fn mset_of_100_pairs_with_a_ttl_against_a_blackhole_returns_within_the_bound() {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let config = config(&proxy.url())
        .default_ttl(Some(Duration::from_secs(60)))
        .build()
        .unwrap();
    let bound = config.call_bound();
    let client = warm_client(config, &proxy);
    let pairs: Vec<(String, String)> = (0..100)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();

    proxy.set_mode(Mode::Blackhole);
    let (result, took) = timed(|| client.mset(&pairs));
    eprintln!("mset x100 against a blackhole: {took:?} (bound {bound:?})");
    let err = result.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(took <= bound + SLACK, "took {took:?}, bound {bound:?}");
}

#[test]
fn a_pipeline_of_100_commands_against_a_blackhole_returns_within_the_bound() {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let config = config(&proxy.url()).build().unwrap();
    let bound = config.call_bound();
    let client = warm_client(config, &proxy);
    let mut pipe = resilient_redis::redis::pipe();
    for i in 0..100 {
        pipe.cmd("INCR").arg(format!("n{i}"));
    }

    proxy.set_mode(Mode::Blackhole);
    let (result, took) = timed(|| client.pipeline::<Vec<i64>>(&pipe));
    eprintln!("pipeline x100 against a blackhole: {took:?} (bound {bound:?})");
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    // The INCRs were written: they may have run, so they were not re-sent.
    assert!(err.may_have_executed(), "{err:?}");
    assert!(took <= bound + SLACK, "took {took:?}, bound {bound:?}");

    // The proxy never forwarded them, and the abandoned connection is gone:
    // the next call gets a fresh one and sees nothing of the pipeline.
    proxy.set_mode(Mode::PassThrough);
    let n: Option<i64> = client.get("n0").unwrap();
    assert_eq!(n, None);
}

#[test]
fn call_timeout_shorter_than_the_socket_timeout_bounds_a_get() {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let call_timeout = ms(300);
    let config = config(&proxy.url())
        .socket_timeout(ms(2000))
        .call_timeout(Some(call_timeout))
        .build()
        .unwrap();
    let bound = config.call_bound();
    assert!(bound < ms(2000), "{bound:?}");
    let client = warm_client(config, &proxy);

    proxy.set_mode(Mode::Blackhole);
    let (result, took) = timed(|| client.get::<_, String>("k"));
    eprintln!("get with call_timeout {call_timeout:?} against a blackhole: {took:?}");
    let err = result.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(
        took <= call_timeout + SLACK,
        "took {took:?}, call_timeout {call_timeout:?}"
    );
    assert!(took <= bound + SLACK, "took {took:?}, bound {bound:?}");
}

#[test]
fn an_exhausted_pool_fails_after_one_checkout_timeout() {
    let server = RedisServer::new();
    let checkout = ms(300);
    let config = config(&server.url())
        .max_connections(1)
        .checkout_timeout(checkout)
        // BLPOP below holds the only connection for as long as the test wants.
        .socket_timeout(ms(10_000))
        .build()
        .unwrap();
    let bound = config.call_bound();
    let client = Client::new(config).unwrap();

    let holder = {
        let client = client.clone();
        std::thread::spawn(move || {
            let mut blpop = resilient_redis::redis::cmd("BLPOP");
            blpop.arg("release").arg(0);
            client.execute::<(String, String)>(&blpop)
        })
    };
    // Wait (without sleeping) until the holder has the connection and
    // Redis has it blocked.
    let mut admin = server.connection();
    loop {
        let blocked: String = resilient_redis::redis::cmd("INFO")
            .arg("clients")
            .query(&mut admin)
            .unwrap();
        if blocked.contains("blocked_clients:1") {
            break;
        }
        std::thread::yield_now();
    }

    let (result, took) = timed(|| client.get::<_, String>("k"));
    eprintln!(
        "get on an exhausted pool: {took:?} (checkout timeout {checkout:?}, bound {bound:?})"
    );
    let err = result.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PoolTimeout, "{err:?}");
    assert!(!err.may_have_executed());
    // Overload is not retried: one checkout timeout, not one per attempt.
    assert!(took <= checkout + SLACK, "took {took:?}");
    assert!(took <= bound + SLACK, "took {took:?}, bound {bound:?}");

    let _: i64 = resilient_redis::redis::cmd("LPUSH")
        .arg("release")
        .arg("x")
        .query(&mut admin)
        .unwrap();
    assert_eq!(
        holder.join().unwrap().unwrap(),
        ("release".to_string(), "x".to_string())
    );
}

//! Round-trip cost of the test harness pieces: a raw `redis::Connection` to a
//! real server, the same through a pass-through `FaultProxy`, and against
//! `FakeRedis`. Tells test authors what the proxy adds to each command.
//!
//! Run with `cargo bench --bench harness_overhead`.

// Bench code: a failure is a broken environment, reported by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use support::{connect, FakeRedis, FaultProxy, RedisServer};

const ITERATIONS: u32 = 20_000;

fn ping_loop(name: &str, url: &str) {
    let mut conn = connect(url, Duration::from_secs(5)).unwrap();
    // Warm up.
    for _ in 0..1_000 {
        let _: String = redis::cmd("PING").query(&mut conn).unwrap();
    }
    let start = Instant::now();
    for _ in 0..ITERATIONS {
        let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
        black_box(pong);
    }
    let ns = start.elapsed().as_nanos() / u128::from(ITERATIONS);
    println!(
        "{name:<28} {ns:>8} ns/op  ({} ops/s)",
        1_000_000_000 / ns.max(1)
    );
}

fn main() {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let fake = FakeRedis::new();
    println!("PING round trip, {ITERATIONS} iterations, one connection");
    ping_loop("redis-server direct", &server.url());
    ping_loop("redis-server via FaultProxy", &proxy.url());
    ping_loop("FakeRedis", &fake.url());
}

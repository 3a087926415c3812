//! Pool benchmarks against one local redis-server, side by side in one run:
//!
//! - checkout + return, uncontended (ns/op): this pool vs r2d2;
//! - `GET` throughput at 1 and 16 threads: this pool, r2d2 (default: PING on
//!   every checkout), r2d2 with `test_on_check_out(false)`, and one raw
//!   `redis::Connection` per thread.
//!
//! `cargo bench --bench pool`. Takes about 30 s. No criterion: plain timing
//! loops, numbers printed.

// A benchmark: a failure is a broken environment, panicking says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::Duration;

use common::{median, ns_per_op, r2d2_pool, throughput};
use resilient_redis::redis::Commands;
use resilient_redis::{Config, Pool};
use support::RedisServer;

const RUN: Duration = Duration::from_millis(1000);
/// Rounds; variants run interleaved so that load from elsewhere hits all
/// of them alike. The median round is printed.
const ROUNDS: usize = 3;

fn main() {
    let server = RedisServer::new();
    let url = server.url();
    let _: () = server.connection().set("bench:key", "value").unwrap();
    let config = Config::builder(url.as_str())
        .max_connections(16)
        .build()
        .unwrap();

    println!("checkout + return, uncontended:");
    let ours = Pool::new(&config).unwrap();
    drop(ours.get().unwrap());
    let ns = ns_per_op(1_000_000, || drop(black_box(ours.get().unwrap())));
    println!("  resilient-redis pool        {ns:>8.0} ns/op");
    let r2 = r2d2_pool(&url, 16, false);
    let ns = ns_per_op(1_000_000, || drop(black_box(r2.get().unwrap())));
    println!("  r2d2 (no test on checkout)  {ns:>8.0} ns/op");

    for threads in [1usize, 16] {
        println!("GET throughput, {threads} thread(s), median of {ROUNDS} interleaved rounds:");
        let ours = Pool::new(&config).unwrap();
        let r2_test = r2d2_pool(&url, 16, true);
        let r2_plain = r2d2_pool(&url, 16, false);
        let mut results: [Vec<f64>; 4] = Default::default();
        for _ in 0..ROUNDS {
            results[0].push(throughput(
                threads,
                RUN,
                || server.connection(),
                |c| {
                    black_box(c.get::<_, String>("bench:key").unwrap());
                },
            ));
            results[1].push(throughput(
                threads,
                RUN,
                || ours.clone(),
                |p| {
                    let mut c = p.get().unwrap();
                    black_box(c.get::<_, String>("bench:key").unwrap());
                },
            ));
            for (slot, pool) in [(2, &r2_test), (3, &r2_plain)] {
                results[slot].push(throughput(
                    threads,
                    RUN,
                    || pool.clone(),
                    |p| {
                        let mut c = p.get().unwrap();
                        black_box(c.get::<_, String>("bench:key").unwrap());
                    },
                ));
            }
        }
        let raw = median(&mut results[0]);
        let labels = [
            "raw connection per thread",
            "resilient-redis pool",
            "r2d2 (PING on checkout)",
            "r2d2 (no test on checkout)",
        ];
        for (label, v) in labels.iter().zip(results.iter_mut()) {
            let ops = median(v);
            println!("  {label:<27} {ops:>10.0} ops/s  ({:.2}x raw)", ops / raw);
        }
    }
}

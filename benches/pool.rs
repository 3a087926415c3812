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

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use resilient_redis::redis::{self, Commands};
use resilient_redis::{Config, Pool};
use support::RedisServer;

const RUN: Duration = Duration::from_millis(1000);
/// Rounds; variants run interleaved so that load from elsewhere hits all
/// of them alike. The median round is printed.
const ROUNDS: usize = 3;

/// Runs `op` on `threads` threads for `RUN`; returns operations per second.
fn throughput<S: Send + 'static>(
    threads: usize,
    setup: impl Fn() -> S,
    op: impl Fn(&mut S) + Send + Sync + 'static,
) -> f64 {
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let mut state = setup();
            let (op, stop, total, barrier) =
                (op.clone(), stop.clone(), total.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    op(&mut state);
                    n += 1;
                }
                total.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(RUN);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    total.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn ns_per_op(iters: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iters / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iters)
}

fn r2d2_pool(url: &str, size: u32, test: bool) -> r2d2::Pool<redis::Client> {
    r2d2::Pool::builder()
        .max_size(size)
        .test_on_check_out(test)
        .build(redis::Client::open(url).unwrap())
        .unwrap()
}

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
                || server.connection(),
                |c| {
                    black_box(c.get::<_, String>("bench:key").unwrap());
                },
            ));
            results[1].push(throughput(
                threads,
                || ours.clone(),
                |p| {
                    let mut c = p.get().unwrap();
                    black_box(c.get::<_, String>("bench:key").unwrap());
                },
            ));
            for (slot, pool) in [(2, &r2_test), (3, &r2_plain)] {
                results[slot].push(throughput(
                    threads,
                    || pool.clone(),
                    |p| {
                        let mut c = p.get().unwrap();
                        black_box(c.get::<_, String>("bench:key").unwrap());
                    },
                ));
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
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

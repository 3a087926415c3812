//! Automatic pipelining side by side (issue #12), in one run against one
//! local redis-server: `SET` + `GET` pairs (each command one op) at 1, 4,
//! 16 and 64 threads through
//!
//! - one raw `redis::Connection` per thread,
//! - r2d2 with its default `PING` on every checkout, and without it,
//! - `resilient_redis::Client` with a pool as large as the thread count
//!   (at least 16) and automatic pipelining off,
//! - the same client with automatic pipelining on.
//!
//! Ops/s (median round) and per-command latency p50/p99/p99.9 (over every
//! round's samples). Variants run interleaved, in a rotating order, so that
//! load from elsewhere on the machine hits all of them alike.
//!
//! Two regimes, printed as such: **idle CPUs** (the loopback round trip
//! then includes the wake-up of a sleeping core, about 70 µs on the test
//! VM, which hides a client's own cost) and, for 1 thread, **one core
//! kept busy** by a spin loop (round trip about 6.5 µs: the client's own
//! cost shows).
//!
//! `cargo bench --bench auto_pipeline`. `AUTO_BENCH_THREADS=1,16` picks
//! thread counts, `AUTO_BENCH_ROUNDS` and `AUTO_BENCH_MS` the rounds and
//! their length (default 3 rounds of 1000 ms), `AUTO_BENCH_ONLY=0,4` the
//! variants by number in the order above (0, raw, is the reference the
//! ratios need). No criterion: plain timing
//! loops, numbers printed.

// A benchmark: a failure is a broken environment, panicking says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{measure, median, percentile_us, r2d2_pool, set_get_pair, thread_key, VALUE};
use resilient_redis::{Client, Config};
use support::RedisServer;

const LABELS: [&str; 5] = [
    "raw connection per thread",
    "r2d2 (PING on checkout)",
    "r2d2 (no test on checkout)",
    "Client, auto pipeline off",
    "Client, auto pipeline on",
];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Keeps one core busy while it lives (the busy-core regime).
struct Spinner {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spinner {
    fn start() -> Spinner {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut x = 0u64;
            while !flag.load(Ordering::Relaxed) {
                x = black_box(x.wrapping_add(1));
            }
        });
        Spinner {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn client(url: &str, pool: u32, auto: bool) -> Client {
    Client::new(
        Config::builder(url)
            .max_connections(pool)
            .auto_pipeline(auto)
            .build()
            .unwrap(),
    )
    .unwrap()
}

fn side_by_side(server: &RedisServer, threads: usize, busy: bool, rounds: usize, run: Duration) {
    let url = server.url();
    let pool = u32::try_from(threads.max(16)).unwrap();
    let off = client(&url, pool, false);
    let on = client(&url, pool, true);
    let r2_test = r2d2_pool(&url, pool, true);
    let r2_plain = r2d2_pool(&url, pool, false);
    let regime = if busy {
        "one core kept busy"
    } else {
        "idle CPUs"
    };
    println!(
        "SET+GET, {threads} thread(s), {regime}, {rounds} interleaved rounds of {} ms:",
        run.as_millis()
    );
    let _spinner = busy.then(Spinner::start);
    let mut ops: [Vec<f64>; 5] = Default::default();
    let mut lat: [Vec<u32>; 5] = Default::default();
    let only: Option<Vec<usize>> = std::env::var("AUTO_BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').filter_map(|t| t.trim().parse().ok()).collect());
    for round in 0..rounds {
        for n in 0..LABELS.len() {
            let i = (round + n) % LABELS.len();
            if only.as_ref().is_some_and(|o| !o.contains(&i)) {
                continue;
            }
            let result = match i {
                0 => measure(
                    threads,
                    run,
                    || (server.connection(), thread_key("auto")),
                    |(c, k), rec| set_get_pair(c, k, rec),
                ),
                1 | 2 => {
                    let pool = if i == 1 { &r2_test } else { &r2_plain };
                    measure(
                        threads,
                        run,
                        || (pool.clone(), thread_key("auto")),
                        |(p, k), rec| set_get_pair(&mut *p.get().unwrap(), k, rec),
                    )
                }
                _ => {
                    let c = if i == 3 { &off } else { &on };
                    measure(
                        threads,
                        run,
                        || (c.clone(), thread_key("auto")),
                        |(c, k), rec| {
                            rec.time(|| c.set(&*k, VALUE).unwrap());
                            rec.time(|| c.get::<_, String>(&*k).unwrap().unwrap());
                        },
                    )
                }
            };
            ops[i].push(result.ops_per_sec);
            lat[i].extend_from_slice(&result.latencies_ns);
        }
    }
    let raw = median(&mut ops[0].clone());
    let raw_lat = {
        let mut l = lat[0].clone();
        l.sort_unstable();
        l
    };
    println!(
        "  {:<27} {:>10} {:>7} {:>8} {:>8} {:>9} {:>14}",
        "", "ops/s", "x raw", "p50 µs", "p99 µs", "p99.9 µs", "p99.9 x raw"
    );
    for i in 0..LABELS.len() {
        if ops[i].is_empty() {
            continue;
        }
        let o = median(&mut ops[i]);
        lat[i].sort_unstable();
        let p999 = percentile_us(&lat[i], 0.999);
        println!(
            "  {:<27} {o:>10.0} {:>6.2}x {:>8.1} {:>8.1} {:>9.1} {:>13.2}x",
            LABELS[i],
            o / raw,
            percentile_us(&lat[i], 0.50),
            percentile_us(&lat[i], 0.99),
            p999,
            p999 / percentile_us(&raw_lat, 0.999),
        );
    }
    let stats = on.stats();
    let e = &stats.endpoints[0];
    println!(
        "  (auto pipeline on: {} requests on shared connections, {} of them waited for another caller; {} connections made)",
        e.shared_requests, e.shared_waits, e.connections_created
    );
}

fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    let threads: Vec<usize> = std::env::var("AUTO_BENCH_THREADS")
        .ok()
        .map(|v| v.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 4, 16, 64]);
    let rounds = env_or("AUTO_BENCH_ROUNDS", 3usize);
    let run = Duration::from_millis(env_or("AUTO_BENCH_MS", 1000u64));
    let server = RedisServer::new();
    for &t in &threads {
        if t == 1 {
            side_by_side(&server, 1, true, rounds, run);
        }
        side_by_side(&server, t, false, rounds, run);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at end: {}", load.trim());
}

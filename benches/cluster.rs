//! Redis Cluster benchmark (issue #14): 16 threads doing `SET` + `GET` on
//! their own keys against a local 3-master + 3-replica cluster (started
//! here, `tests/support/cluster.rs`), side by side in one run:
//!
//! - `resilient_redis::Client` on `redis+cluster://` (a pool and a breaker
//!   per master, 16 connections each at most);
//! - redis-rs 1.8 `ClusterClient` behind r2d2 (16 `ClusterConnection`s,
//!   each with one socket per node; `test_on_check_out(false)`, and with
//!   r2d2's default `PING` on every checkout).
//!
//! Prints ops/s (one command is one op) and per-command latency p50/p99.
//! `cargo bench --bench cluster`. Takes about 30 s. No criterion: plain
//! timing loops, numbers printed.

// A benchmark: a failure is a broken environment, panicking says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use common::{measure, median, percentile_us, thread_key, VALUE};
use redis::cluster::ClusterClient;
use redis::Commands;
use resilient_redis::{Client, Config};
use support::RedisCluster;

const THREADS: usize = 16;
const RUN: Duration = Duration::from_millis(1500);
const ROUNDS: usize = 5;
const LABELS: [&str; 3] = [
    "resilient-redis Client",
    "redis-rs ClusterClient+r2d2",
    "  same, PING on checkout",
];

fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    let cluster = RedisCluster::start(3);
    let client = Client::new(
        Config::builder(cluster.seed_url())
            .max_connections(16)
            .build()
            .unwrap(),
    )
    .unwrap();
    let nodes: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("redis://127.0.0.1:{}", n.port()))
        .collect();
    let cluster_client = ClusterClient::new(nodes).unwrap();
    let pool = |test: bool| {
        r2d2::Pool::builder()
            .max_size(THREADS as u32)
            .test_on_check_out(test)
            .build(cluster_client.clone())
            .unwrap()
    };
    let (plain, tested) = (pool(false), pool(true));
    // Warm both: slot maps read, connections open.
    for i in 0..1000 {
        let k = format!("warm:{i}");
        client.set(&k, VALUE).unwrap();
        plain.get().unwrap().set::<_, _, ()>(&k, VALUE).unwrap();
    }
    println!(
        "SET+GET, {THREADS} threads, 3 masters, {ROUNDS} interleaved rounds of {} s:",
        RUN.as_secs_f64()
    );
    let mut ops: [Vec<f64>; 3] = Default::default();
    let mut lat: [Vec<u32>; 3] = Default::default();
    for round in 0..ROUNDS {
        for n in 0..LABELS.len() {
            let i = (round + n) % LABELS.len();
            let run = match i {
                0 => measure(
                    THREADS,
                    RUN,
                    || (client.clone(), thread_key("cluster"), 0u32),
                    |(c, k, n), rec| {
                        *n = n.wrapping_add(1);
                        let key = format!("{k}:{}", *n % 64);
                        rec.time(|| c.set(&key, VALUE).unwrap());
                        rec.time(|| c.get::<_, String>(&key).unwrap().unwrap());
                    },
                ),
                _ => {
                    let p = if i == 1 {
                        plain.clone()
                    } else {
                        tested.clone()
                    };
                    measure(
                        THREADS,
                        RUN,
                        move || (p.clone(), thread_key("cluster"), 0u32),
                        |(p, k, n), rec| {
                            *n = n.wrapping_add(1);
                            let key = format!("{k}:{}", *n % 64);
                            let mut c = p.get().unwrap();
                            rec.time(|| c.set::<_, _, ()>(&key, VALUE).unwrap());
                            rec.time(|| c.get::<_, String>(&key).unwrap());
                        },
                    )
                }
            };
            ops[i].push(run.ops_per_sec);
            lat[i].extend_from_slice(&run.latencies_ns);
        }
    }
    println!(
        "  {:<29} {:>10} {:>8} {:>8}",
        "", "ops/s", "p50 µs", "p99 µs"
    );
    for i in 0..LABELS.len() {
        let o = median(&mut ops[i]);
        lat[i].sort_unstable();
        println!(
            "  {:<29} {o:>10.0} {:>8.1} {:>8.1}",
            LABELS[i],
            percentile_us(&lat[i], 0.50),
            percentile_us(&lat[i], 0.99)
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at end: {}", load.trim());
}

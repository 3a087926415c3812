//! Fallback store micro-benchmarks: ns per get hit, get miss and set, on one
//! thread and on 16 threads, for the default shard count and for a single
//! shard (to show what sharding buys). Run with `cargo bench --bench fallback`.

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use resilient_redis::fuzz_support::fallback::MemoryStore;
use resilient_redis::SystemClock;

const KEYS: usize = 8_192;
const OPS_PER_THREAD: usize = 400_000;

#[derive(Clone, Copy)]
enum Op {
    GetHit,
    GetMiss,
    Set,
}

fn keys(prefix: &str) -> Vec<Vec<u8>> {
    (0..KEYS)
        .map(|i| format!("{prefix}:user:{i:06}").into_bytes())
        .collect()
}

/// Nanoseconds per operation, averaged over every operation of every thread
/// (wall time × threads / total ops: the cost one caller sees).
fn run(store: &Arc<MemoryStore>, op: Op, threads: usize) -> f64 {
    let hit = Arc::new(keys("hit"));
    let miss = Arc::new(keys("miss"));
    let value = vec![b'v'; 100];
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (store, hit, miss, barrier, value) = (
                store.clone(),
                hit.clone(),
                miss.clone(),
                barrier.clone(),
                value.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                let mut i = t * 7919;
                for _ in 0..OPS_PER_THREAD {
                    i = (i + 1) % KEYS;
                    match op {
                        Op::GetHit => {
                            black_box(store.get(&hit[i]));
                        }
                        Op::GetMiss => {
                            black_box(store.get(&miss[i]));
                        }
                        Op::Set => {
                            let _ = black_box(store.set(
                                &hit[i],
                                &value,
                                Some(Duration::from_secs(60)),
                            ));
                        }
                    }
                }
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        let _ = h.join();
    }
    let elapsed = start.elapsed();
    elapsed.as_nanos() as f64 * threads as f64 / (threads * OPS_PER_THREAD) as f64
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!("{cores} cores");
    for shards in [16, 1] {
        let store = Arc::new(MemoryStore::with_shards(
            10_000,
            64 << 20,
            shards,
            SystemClock::shared(),
        ));
        for k in keys("hit") {
            let _ = store.set(&k, &[b'v'; 100], Some(Duration::from_secs(600)));
        }
        for threads in [1, 16] {
            for (name, op) in [
                ("get hit", Op::GetHit),
                ("get miss", Op::GetMiss),
                ("set", Op::Set),
            ] {
                let ns = run(&store, op, threads);
                let total_ops_s = 1e9 / ns * threads as f64;
                // With more threads than cores, a caller's ns/op includes
                // waiting for a core; per-core cost is the comparable figure.
                let per_core = ns * cores.min(threads) as f64 / threads as f64;
                println!(
                    "fallback {name:<8} shards={shards:<2} threads={threads:<2} {ns:>8.1} ns/op per caller  {per_core:>7.1} ns/op per core  {total_ops_s:>11.0} ops/s total"
                );
            }
        }
        assert_eq!(store.len(), KEYS, "every key still held");
    }
}

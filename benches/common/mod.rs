//! Helpers shared by the benches that talk to a real `redis-server`
//! (`benches/pool.rs`, `benches/client.rs`): threaded timing loops with
//! per-operation latencies, an r2d2 pool, medians and percentiles.
//!
//! Include with `#[path = "common/mod.rs"] mod common;`.

// Each bench uses part of these helpers.
#![allow(dead_code)]
// Bench code: a failure is a broken environment, panicking says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use resilient_redis::redis;

/// A typical small cache value: the value every `SET` benchmark writes.
pub const VALUE: &str = "a cached value of about forty-eight bytes, 0123";

/// One `SET` then one `GET` of `key` through any redis-rs connection, each
/// timed as one op.
pub fn set_get_pair<C: redis::ConnectionLike>(c: &mut C, key: &str, rec: &mut Recorder) {
    use redis::Commands;
    rec.time(|| c.set::<_, _, ()>(key, VALUE).unwrap());
    rec.time(|| c.get::<_, String>(key).unwrap());
}

/// A key of its own for each thread that asks (`bench:{bench}:{n}`), so
/// that threads do not write one hot key (nor, on a cluster, one slot).
pub fn thread_key(bench: &str) -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!("bench:{bench}:{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Latency samples kept per run, split across the threads. Allocated
/// before the clock starts so the timed loop never reallocates; operations
/// past the cap are counted but not sampled.
const MAX_SAMPLES: usize = 1 << 21;

/// One timed run: operations per second and the per-operation latencies
/// (nanoseconds) of every thread.
pub struct Run {
    pub ops_per_sec: f64,
    pub latencies_ns: Vec<u32>,
}

/// Runs `op` on `threads` threads for `run`. `op` performs some operations
/// and records the latency of each one through the [`Recorder`].
pub fn measure<S: Send + 'static>(
    threads: usize,
    run: Duration,
    setup: impl Fn() -> S,
    op: impl Fn(&mut S, &mut Recorder) + Send + Sync + 'static,
) -> Run {
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let mut state = setup();
            let (op, stop, barrier) = (op.clone(), stop.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut rec = Recorder {
                    samples: Vec::with_capacity(MAX_SAMPLES / threads),
                    ops: 0,
                };
                barrier.wait();
                while !stop.load(Ordering::Relaxed) {
                    op(&mut state, &mut rec);
                }
                rec
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    std::thread::sleep(run);
    stop.store(true, Ordering::Relaxed);
    let mut ops = 0u64;
    let mut latencies_ns = Vec::new();
    for h in handles {
        let rec = h.join().unwrap();
        ops += rec.ops;
        latencies_ns.extend_from_slice(&rec.samples);
    }
    Run {
        ops_per_sec: ops as f64 / start.elapsed().as_secs_f64(),
        latencies_ns,
    }
}

/// Runs `op` on `threads` threads for `run`; returns operations per second
/// (one call of `op` is one operation, timed as such).
pub fn throughput<S: Send + 'static>(
    threads: usize,
    run: Duration,
    setup: impl Fn() -> S,
    op: impl Fn(&mut S) + Send + Sync + 'static,
) -> f64 {
    measure(threads, run, setup, move |s, rec| rec.time(|| op(s))).ops_per_sec
}

/// Counts one thread's operations and samples their latencies.
pub struct Recorder {
    samples: Vec<u32>,
    ops: u64,
}

impl Recorder {
    /// Runs and times one operation.
    #[inline]
    pub fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let v = black_box(f());
        let ns = start.elapsed().as_nanos();
        self.ops += 1;
        if self.samples.len() < self.samples.capacity() {
            self.samples.push(u32::try_from(ns).unwrap_or(u32::MAX));
        }
        v
    }
}

/// Nanoseconds per call of `f` on this thread (after a short warm-up).
pub fn ns_per_op(iters: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..iters / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iters)
}

/// An r2d2 pool of `size` redis connections; `test` is r2d2's
/// `test_on_check_out` (a `PING` on every checkout when `true`, its default).
pub fn r2d2_pool(url: &str, size: u32, test: bool) -> r2d2::Pool<redis::Client> {
    r2d2::Pool::builder()
        .max_size(size)
        .test_on_check_out(test)
        .build(redis::Client::open(url).unwrap())
        .unwrap()
}

/// The median of `v` (sorts it).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The `q` quantile (0..=1) of sorted samples, in microseconds.
pub fn percentile_us(sorted_ns: &[u32], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted_ns.len() - 1) as f64 * q).round() as usize;
    f64::from(sorted_ns[i]) / 1_000.0
}

//! Micro-benchmarks of the retry layer: the cost it adds to a call whose
//! first attempt succeeds (the hot path), the idempotency lookup, and the
//! budget under contention. Plain `Instant` loops; run with
//! `cargo bench --bench retry`. Each case runs for about half a second.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use resilient_redis::{is_idempotent, Error, Retrier, RetryBudget, RetryPolicy};

const CASE_TIME: Duration = Duration::from_millis(500);

/// Runs `f` in batches until `CASE_TIME` has passed; returns ns per call.
fn time(mut f: impl FnMut()) -> f64 {
    // Warm-up.
    for _ in 0..10_000 {
        f();
    }
    let start = Instant::now();
    let mut iters = 0u64;
    while start.elapsed() < CASE_TIME {
        for _ in 0..10_000 {
            f();
        }
        iters += 10_000;
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

fn report(name: &str, ns: f64) {
    println!("{name:<52} {ns:>8.1} ns/op  {:>12.0} ops/s", 1e9 / ns);
}

/// The same per-thread loop on `threads` threads; returns the mean ns/op.
fn time_threads(threads: usize, f: impl Fn() + Send + Sync + 'static) -> f64 {
    let f = Arc::new(f);
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let f = f.clone();
            std::thread::spawn(move || time(|| f()))
        })
        .collect();
    let total: f64 = handles.into_iter().filter_map(|h| h.join().ok()).sum();
    total / threads as f64
}

fn main() {
    let budget = Arc::new(RetryBudget::default());
    let retrier = Arc::new(Retrier::new(RetryPolicy::default(), budget.clone()));

    report(
        "baseline: closure call, no retrier",
        time(|| {
            let r: Result<u64, Error> = black_box(|| Ok(black_box(1)))();
            let _ = black_box(r);
        }),
    );
    report(
        "Retrier::run, first attempt succeeds",
        time(|| {
            let r = retrier.run(black_box(true), &(), |a| Ok::<_, Error>(a.number));
            let _ = black_box(r);
        }),
    );
    let with_deadline = Retrier::new(RetryPolicy::default(), budget.clone())
        .with_call_timeout(Some(Duration::from_secs(1)));
    report(
        "Retrier::run with call deadline, first attempt ok",
        time(|| {
            let r = with_deadline.run(black_box(true), &(), |a| Ok::<_, Error>(a.number));
            let _ = black_box(r);
        }),
    );
    let r = retrier.clone();
    report(
        "Retrier::run, first attempt ok, 8 threads (per op)",
        time_threads(8, move || {
            let out = r.run(black_box(true), &(), |a| Ok::<_, Error>(a.number));
            let _ = black_box(out);
        }),
    );

    let get = redis::cmd("GET").arg("some:key").clone();
    let set = redis::cmd("SET")
        .arg("some:key")
        .arg("value")
        .arg("EX")
        .arg(60)
        .clone();
    let unknown = redis::cmd("XAUTOCLAIM").arg("s").arg("g").clone();
    report(
        "is_idempotent(GET k)",
        time(|| {
            black_box(is_idempotent(black_box(&get)));
        }),
    );
    report(
        "is_idempotent(SET k v EX 60)",
        time(|| {
            black_box(is_idempotent(black_box(&set)));
        }),
    );
    report(
        "is_idempotent(unknown command)",
        time(|| {
            black_box(is_idempotent(black_box(&unknown)));
        }),
    );

    // A partial outage: every call withdraws and deposits, so the level
    // changes on every operation and the cache line bounces between cores.
    let b = Arc::new(RetryBudget::new(1_000_000, 1.0).unwrap_or_default());
    let b1 = b.clone();
    report(
        "budget withdraw+deposit, 1 thread",
        time(move || {
            black_box(b1.try_withdraw());
            b1.deposit();
        }),
    );
    report(
        "budget withdraw+deposit, 8 threads (per op)",
        time_threads(8, move || {
            black_box(b.try_withdraw());
            b.deposit();
        }),
    );
}

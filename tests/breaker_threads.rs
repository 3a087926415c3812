//! Many threads acquiring and reporting while another moves the clock: the
//! half-open probe bound holds at every moment and the counts add up.

// Test code: unwrap keeps the assertions short.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;
use resilient_redis::{BreakerConfig, BreakerState, CircuitBreaker, ManualClock, Verdict};

const THREADS: u64 = 8;
const ITERATIONS: u64 = 20_000;
const MAX_PROBES: u32 = 3;

#[derive(Default)]
struct Tally {
    granted: AtomicU64,
    rejected: AtomicU64,
    probes: AtomicU64,
    /// The most probes of one generation seen held at once.
    most_probes: AtomicU64,
    counted_ok: AtomicU64,
    counted_fail: AtomicU64,
    ignored: AtomicU64,
    stale: AtomicU64,
}

#[test]
fn probe_bound_and_counts_hold_under_contention() {
    let clock = ManualClock::new();
    let config = BreakerConfig {
        failure_threshold: 3,
        success_threshold: 2,
        open_timeout: Duration::from_millis(500),
        half_open_max_requests: MAX_PROBES,
        // Longer than the whole run: no slot is reclaimed, so the bound is exact.
        probe_timeout: Duration::from_secs(3600),
        ..BreakerConfig::default()
    };
    let breaker = Arc::new(CircuitBreaker::new(config, clock.shared()));
    // Probes outstanding per half-open generation, as seen by the callers.
    let outstanding: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));

    let ticker = {
        let (clock, stop, breaker) = (clock.clone(), stop.clone(), breaker.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                clock.advance(Duration::from_millis(50));
                assert!(breaker.snapshot().probes_in_flight <= MAX_PROBES);
                thread::yield_now();
            }
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (breaker, outstanding, tally) =
                (breaker.clone(), outstanding.clone(), tally.clone());
            let clock = clock.clone();
            thread::spawn(move || {
                let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                for _ in 0..ITERATIONS {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if x % 64 == 0 {
                        // Workers move time too, so it advances in step with the work.
                        clock.advance(Duration::from_millis(20));
                    }
                    let Ok(permit) = breaker.try_acquire() else {
                        tally.rejected.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    tally.granted.fetch_add(1, Ordering::Relaxed);
                    let gen = permit.generation();
                    // Counted from just after the grant to just before the
                    // verdict releases the slot, so the count never exceeds
                    // the slots really held: checked when it goes up, i.e.
                    // at the moment of maximum concurrency.
                    let probe = permit.is_probe();
                    if probe {
                        tally.probes.fetch_add(1, Ordering::Relaxed);
                        let mut out = outstanding.lock();
                        let n = out.entry(gen).or_default();
                        *n += 1;
                        assert!(*n <= MAX_PROBES, "{n} probes out in generation {gen}");
                        tally
                            .most_probes
                            .fetch_max(u64::from(*n), Ordering::Relaxed);
                        drop(out);
                        // Hold the probe a while, as a real call would, so
                        // that probes overlap.
                        for _ in 0..4 {
                            thread::yield_now();
                        }
                        *outstanding.lock().get_mut(&gen).unwrap() -= 1;
                    }
                    let verdict = match x % 10 {
                        0..=3 => permit.failure(),
                        4 => permit.ignore(),
                        5 => {
                            drop(permit);
                            Verdict::Ignored
                        }
                        _ => permit.success(),
                    };
                    let counter = match (verdict, x % 10) {
                        (Verdict::Stale, _) => &tally.stale,
                        (Verdict::Ignored, _) => &tally.ignored,
                        (Verdict::Counted, 0..=3) => &tally.counted_fail,
                        (Verdict::Counted, _) => &tally.counted_ok,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    ticker.join().unwrap();

    let s = breaker.snapshot();
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    assert_eq!(s.calls, get(&tally.granted));
    assert_eq!(s.rejections, get(&tally.rejected));
    assert_eq!(s.calls + s.rejections, THREADS * ITERATIONS);
    assert_eq!(s.successes, get(&tally.counted_ok));
    assert_eq!(s.failures, get(&tally.counted_fail));
    // Dropped permits can still be stale; the sum is what must match.
    assert_eq!(s.ignored + s.stale, get(&tally.ignored) + get(&tally.stale));
    assert_eq!(s.calls, s.successes + s.failures + s.ignored + s.stale);
    assert_eq!(s.reclaimed, 0);
    assert!(
        s.opens > 0 && get(&tally.probes) > 0,
        "scenario never half-opened: {s:?}"
    );
    assert!(s.probes_in_flight == 0 || s.state == BreakerState::HalfOpen);
    // The bound was reached: the check above ran at full concurrency.
    assert_eq!(get(&tally.most_probes), u64::from(MAX_PROBES));
}

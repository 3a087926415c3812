//! The lock-free closed path against failures and transitions on other
//! threads: no failure is lost, and no success counts against a generation
//! that has ended.
//!
//! Nothing here depends on timing. What is asserted holds for every
//! serialised order of the operations, or follows from a happens-before
//! edge the test creates (a flag set after a transition and read before a
//! verdict, a scoped thread joined).

// Test code: unwrap keeps the assertions short.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::Duration;

use resilient_redis::{BreakerConfig, BreakerState, CircuitBreaker, ManualClock, Verdict};

const K: u32 = 3;
const SUCCESS_THREADS: usize = 3;
const ROUNDS: u64 = 200;
/// Batches of held permits each success thread settles per round, at most.
const BATCHES: u64 = 200;

fn config() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: K,
        // Never elapses: once open, every acquire is rejected.
        open_timeout: Duration::from_secs(3600),
        ..BreakerConfig::default()
    }
}

#[derive(Default)]
struct Round {
    granted: AtomicU64,
    rejected: AtomicU64,
    counted: AtomicU64,
    stale: AtomicU64,
    /// Successes reported after the opening was seen: must all be stale.
    after_open: AtomicU64,
}

/// Each round: the breaker is reset; three threads take permits in small
/// batches and report success while one thread reports failures until the
/// breaker opens. For any serialised order, the opening failure ends the
/// first run of `K` failures with no success between them, so with `S`
/// successes counted before it the failures number between `K` and
/// `K + S·(K−1)`, and exactly `K` when no success was counted; a lost
/// failure or a lost reset breaks that. A success reported after its
/// thread saw the breaker open must be stale, and the snapshot must account
/// for every verdict.
///
/// Opening too early (a success that did not reset the count) is caught
/// with a marker: a success that began after failure `m` had returned and
/// was counted before failure `j` began lies between them in every
/// serialised order, so a breaker opened by failure `j` needs `j − m ≥ K`.
#[test]
fn successes_racing_failures_lose_nothing_and_never_count_stale() {
    let breaker = CircuitBreaker::new(config(), ManualClock::new().shared());
    let barrier = Barrier::new(SUCCESS_THREADS + 2);
    let opened = AtomicBool::new(false);
    let generation = AtomicU64::new(0);
    let failures = AtomicU64::new(0);
    // Failures returned so far this round, and the most of them any counted
    // success had seen before it began.
    let failures_done = AtomicU64::new(0);
    let success_marker = AtomicU64::new(0);
    let rounds: Vec<Round> = (0..ROUNDS).map(|_| Round::default()).collect();
    // Threads record what went wrong instead of panicking, which would
    // leave the others waiting at the barrier; all stop after that round.
    let faults: Mutex<Vec<String>> = Mutex::default();
    let fault = |message: String| faults.lock().unwrap().push(message);
    let abort = AtomicBool::new(false);
    let mut stale_after_open = 0;

    thread::scope(|s| {
        for _ in 0..SUCCESS_THREADS {
            s.spawn(|| {
                for (i, round) in rounds.iter().enumerate() {
                    barrier.wait();
                    if abort.load(Ordering::Relaxed) {
                        return;
                    }
                    let gen = generation.load(Ordering::Relaxed);
                    let mut held = Vec::new();
                    for _ in 0..BATCHES {
                        for _ in 0..4 {
                            match breaker.try_acquire() {
                                Ok(p) => {
                                    round.granted.fetch_add(1, Ordering::Relaxed);
                                    if p.generation() != gen {
                                        fault(format!("round {i}: granted in {}", p.generation()));
                                    }
                                    held.push(p);
                                }
                                Err(_) => {
                                    round.rejected.fetch_add(1, Ordering::Relaxed);
                                    break;
                                }
                            }
                        }
                        if held.is_empty() {
                            break;
                        }
                        for p in held.drain(..) {
                            // Acquire: the transition happened before this.
                            let seen_open = opened.load(Ordering::Acquire);
                            let done = failures_done.load(Ordering::Acquire);
                            let verdict = p.success();
                            if verdict == Verdict::Counted {
                                success_marker.fetch_max(done, Ordering::Release);
                            }
                            if seen_open {
                                round.after_open.fetch_add(1, Ordering::Relaxed);
                                if verdict != Verdict::Stale {
                                    fault(format!("round {i}: {verdict:?} after the opening"));
                                }
                            }
                            match verdict {
                                Verdict::Counted => &round.counted,
                                _ => &round.stale,
                            }
                            .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    barrier.wait();
                }
            });
        }
        s.spawn(|| {
            for (i, round) in rounds.iter().enumerate() {
                barrier.wait();
                if abort.load(Ordering::Relaxed) {
                    return;
                }
                let mut n = 0u64;
                loop {
                    let marker = success_marker.load(Ordering::Acquire);
                    let Ok(p) = breaker.try_acquire() else {
                        round.rejected.fetch_add(1, Ordering::Relaxed);
                        break;
                    };
                    round.granted.fetch_add(1, Ordering::Relaxed);
                    // Only this thread fails and successes never change the
                    // state, so its permits are never stale.
                    let verdict = p.failure();
                    if verdict != Verdict::Counted {
                        fault(format!("round {i}: failure {verdict:?}"));
                    }
                    n += 1;
                    failures_done.store(n, Ordering::Release);
                    if breaker.state() == BreakerState::Open {
                        opened.store(true, Ordering::Release);
                        if n - marker < u64::from(K) {
                            fault(format!(
                                "round {i}: opened by failure {n}, \
                                 but a success came after failure {marker}"
                            ));
                        }
                    }
                    // Let successes in between failures, even on few cores.
                    thread::yield_now();
                }
                if !opened.load(Ordering::Relaxed) {
                    fault(format!("round {i}: rejected while closed"));
                }
                failures.store(n, Ordering::Relaxed);
                barrier.wait();
            }
        });

        let mut before = breaker.snapshot();
        for (i, round) in rounds.iter().enumerate() {
            generation.store(breaker.generation(), Ordering::Relaxed);
            opened.store(false, Ordering::Relaxed);
            failures_done.store(0, Ordering::Relaxed);
            success_marker.store(0, Ordering::Relaxed);
            barrier.wait();
            if abort.load(Ordering::Relaxed) {
                return;
            }
            barrier.wait();
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            let s = breaker.snapshot();
            let (f, counted) = (get(&failures), get(&round.counted));
            let check = |ok: bool, what: &str| {
                if !ok {
                    fault(format!(
                        "round {i}: {what} (failures {f}, counted {counted}, {s:?})"
                    ));
                }
            };
            check(s.state == BreakerState::Open, "not open");
            check(s.generation == before.generation + 1, "generation");
            check(s.opens == before.opens + 1, "opens");
            check(s.failures - before.failures == f, "failures total");
            check(s.successes - before.successes == counted, "successes total");
            check(s.stale - before.stale == get(&round.stale), "stale total");
            check(s.calls - before.calls == get(&round.granted), "calls total");
            check(
                s.rejections - before.rejections == get(&round.rejected),
                "rejections total",
            );
            let most = u64::from(K) + counted * u64::from(K - 1);
            check(
                f >= u64::from(K) && f <= most,
                "failures to open out of range",
            );
            check(
                counted > 0 || f == u64::from(K),
                "no success, yet not K failures",
            );
            stale_after_open += get(&round.after_open);
            if !faults.lock().unwrap().is_empty() {
                abort.store(true, Ordering::Relaxed);
            }
            breaker.reset();
            before = breaker.snapshot();
        }
    });
    let faults = faults.into_inner().unwrap();
    assert!(
        faults.is_empty(),
        "{} faults, first: {:?}",
        faults.len(),
        faults.first()
    );
    // Not asserted (it depends on scheduling): how often the stale check ran.
    eprintln!("successes reported after the opening was seen: {stale_after_open}");
}

/// Permits granted while closed and clean, reported from another thread
/// after the breaker tripped and was reset: the word is clean and closed
/// again, but of a later generation, so every success is stale and nothing
/// is counted in the new generation.
#[test]
fn lock_free_success_of_an_ended_generation_is_stale() {
    let breaker = CircuitBreaker::new(config(), ManualClock::new().shared());
    let held: Vec<_> = (0..8).map(|_| breaker.try_acquire().unwrap()).collect();
    let gen = breaker.generation();
    thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..K {
                breaker.try_acquire().unwrap().failure();
            }
            assert_eq!(breaker.state(), BreakerState::Open);
            breaker.reset();
        });
    });
    assert_eq!(breaker.generation(), gen + 2);
    thread::scope(|s| {
        s.spawn(|| {
            for p in held {
                assert_eq!(p.success(), Verdict::Stale);
            }
        });
    });
    let snap = breaker.snapshot();
    assert_eq!(
        (snap.successes, snap.stale, snap.consecutive_successes),
        (0, 8, 0)
    );
}

/// A success reported after a failure on another thread goes through the
/// lock and resets the count: `K − 1` more failures leave it closed.
#[test]
fn success_after_a_failure_on_another_thread_resets_the_count() {
    let breaker = CircuitBreaker::new(config(), ManualClock::new().shared());
    let early = breaker.try_acquire().unwrap();
    thread::scope(|s| {
        s.spawn(|| breaker.try_acquire().unwrap().failure());
    });
    assert_eq!(breaker.failure_count(), 1);
    thread::scope(|s| {
        s.spawn(|| assert_eq!(early.success(), Verdict::Counted));
    });
    assert_eq!((breaker.failure_count(), breaker.success_count()), (0, 1));
    for _ in 0..K - 1 {
        breaker.try_acquire().unwrap().failure();
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    breaker.try_acquire().unwrap().failure();
    assert_eq!(breaker.state(), BreakerState::Open);
}

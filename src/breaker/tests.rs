// Test code: unwrap/expect keep the assertions short.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::*;
use crate::{Clock, ErrorKind, ManualClock};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn breaker(config: BreakerConfig) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    (
        CircuitBreaker::new(config, clock.shared()).with_jitter_seed(1),
        clock,
    )
}

fn small() -> BreakerConfig {
    BreakerConfig {
        failure_threshold: 3,
        success_threshold: 2,
        open_timeout: secs(10),
        half_open_max_requests: 2,
        probe_timeout: secs(5),
        ..BreakerConfig::default()
    }
}

fn trip(b: &CircuitBreaker) {
    while b.state() == BreakerState::Closed {
        b.try_acquire().unwrap().failure();
    }
}

#[test]
fn is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<CircuitBreaker>();
    check::<Permit<'static>>();
}

#[test]
fn opens_after_consecutive_failures_and_success_resets_count() {
    let (b, _clock) = breaker(small());
    b.try_acquire().unwrap().failure();
    b.try_acquire().unwrap().failure();
    assert_eq!(b.failure_count(), 2);
    assert_eq!(b.try_acquire().unwrap().success(), Verdict::Counted);
    assert_eq!(b.failure_count(), 0);
    assert_eq!(b.success_count(), 1);
    for _ in 0..2 {
        b.try_acquire().unwrap().failure();
    }
    assert_eq!(b.state(), BreakerState::Closed);
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), BreakerState::Open);
    let s = b.snapshot();
    assert_eq!((s.calls, s.failures, s.successes, s.opens), (6, 5, 1, 1));
}

#[test]
fn ignored_outcomes_do_not_count() {
    let (b, _clock) = breaker(small());
    for _ in 0..10 {
        b.try_acquire().unwrap().failure();
        b.reset();
        b.try_acquire().unwrap().failure();
        assert_eq!(b.try_acquire().unwrap().ignore(), Verdict::Ignored);
        drop(b.try_acquire().unwrap());
        assert_eq!(b.failure_count(), 1);
        b.reset();
    }
    assert_eq!(b.state(), BreakerState::Closed);
    let err = Error::from(Rejected {
        state: BreakerState::Open,
        retry_after: secs(1),
    });
    // A non-counting error is ignored by record_error.
    b.try_acquire().unwrap().record_error(&err);
    assert_eq!(b.failure_count(), 0);
    assert_eq!(b.snapshot().ignored, 21); // 10 × (ignore + drop) + record_error
}

#[test]
fn open_rejects_with_remaining_time_then_half_opens_lazily() {
    let (b, clock) = breaker(small());
    trip(&b);
    let r = b.try_acquire().unwrap_err();
    assert_eq!((r.state(), r.retry_after()), (BreakerState::Open, secs(10)));
    clock.advance(secs(4));
    assert_eq!(b.try_acquire().unwrap_err().retry_after(), secs(6));
    clock.advance(secs(6));
    // Lazy: nothing changes until someone asks for a permit.
    assert_eq!(b.state(), BreakerState::Open);
    let probe = b.try_acquire().unwrap();
    assert!(probe.is_probe());
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.snapshot().rejections, 2);
}

#[test]
fn half_open_bounds_probes_and_closes_after_successes() {
    let (b, clock) = breaker(small());
    trip(&b);
    clock.advance(secs(10));
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    let r = b.try_acquire().unwrap_err();
    assert_eq!(r.state(), BreakerState::HalfOpen);
    assert_eq!(r.retry_after(), secs(5)); // until the oldest probe's deadline
    assert_eq!(p1.success(), Verdict::Counted);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.success_count(), 1);
    let p3 = b.try_acquire().unwrap(); // p1's slot is free again
    assert_eq!(p2.success(), Verdict::Counted);
    assert_eq!(b.state(), BreakerState::Closed);
    // p3 was granted in the half-open generation: stale now.
    assert_eq!(p3.failure(), Verdict::Stale);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.failure_count(), 0);
}

#[test]
fn half_open_reopens_on_any_failure() {
    let (b, clock) = breaker(small());
    trip(&b);
    clock.advance(secs(10));
    b.try_acquire().unwrap().success();
    let gen = b.generation();
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.generation(), gen + 1);
    assert_eq!(b.try_acquire().unwrap_err().retry_after(), secs(10));
}

#[test]
fn dropped_or_ignored_probe_releases_its_slot() {
    let (b, clock) = breaker(small());
    trip(&b);
    clock.advance(secs(10));
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    drop(p1);
    let p3 = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    assert_eq!(p2.ignore(), Verdict::Ignored);
    assert!(b.try_acquire().is_ok());
    drop(p3);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert_eq!(b.snapshot().probes_in_flight, 0);
}

#[test]
fn hung_probe_is_reclaimed_after_deadline_and_its_verdict_is_stale() {
    let (b, clock) = breaker(small());
    trip(&b);
    clock.advance(secs(10));
    let hung1 = b.try_acquire().unwrap();
    let hung2 = b.try_acquire().unwrap();
    clock.advance(secs(4));
    assert!(
        b.try_acquire().is_err(),
        "slots still held before the deadline"
    );
    clock.advance(secs(1));
    let fresh = b.try_acquire().unwrap();
    assert_eq!(b.snapshot().reclaimed, 2);
    assert_eq!(
        hung1.failure(),
        Verdict::Stale,
        "reclaimed probe must not reopen"
    );
    assert_eq!(b.state(), BreakerState::HalfOpen);
    fresh.success();
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(hung2.success(), Verdict::Stale);
    assert_eq!(b.snapshot().stale, 2);
}

#[test]
fn verdicts_from_before_a_transition_are_stale() {
    let (b, clock) = breaker(small());
    let slow = b.try_acquire().unwrap();
    let gen0 = slow.generation();
    trip(&b);
    clock.advance(secs(10));
    let probe = b.try_acquire().unwrap();
    assert!(probe.generation() > gen0);
    // A failure that started while closed must not reopen a half-open breaker.
    assert_eq!(slow.failure(), Verdict::Stale);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    probe.success();
    assert_eq!(b.success_count(), 1);
    let before_reset = b.try_acquire().unwrap();
    b.reset();
    assert_eq!(before_reset.success(), Verdict::Stale);
    assert_eq!(b.success_count(), 0);
}

#[test]
fn failure_rate_rule_trips_within_window_only() {
    let config = BreakerConfig {
        failure_threshold: 100,
        failure_rate: Some(FailureRate {
            threshold: 0.5,
            window: secs(10),
            min_calls: 4,
        }),
        ..small()
    };
    let (b, clock) = breaker(config);
    // Alternating outcomes: 50 % failed, tripping once 4 calls are seen.
    b.try_acquire().unwrap().failure();
    b.try_acquire().unwrap().success();
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), BreakerState::Closed);
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), BreakerState::Open);
    b.reset();
    // Old failures slide out of the window.
    for _ in 0..3 {
        b.try_acquire().unwrap().failure();
    }
    clock.advance(secs(11));
    for _ in 0..3 {
        b.try_acquire().unwrap().success();
    }
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), BreakerState::Closed, "1 failure in 4 calls");
}

#[test]
fn open_period_grows_with_jitter_and_resets_on_close() {
    let config = BreakerConfig {
        open_timeout: secs(10),
        backoff: Some(OpenBackoff {
            multiplier: 2.0,
            max_open_timeout: secs(30),
            jitter: 0.5,
        }),
        ..small()
    };
    let (b, clock) = breaker(config);
    trip(&b);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let open_for = b.snapshot().open_for.unwrap();
        seen.push(open_for);
        clock.advance(open_for);
        b.try_acquire().unwrap().failure();
    }
    let nominal = [10, 20, 30, 30].map(secs);
    for (i, (d, n)) in seen.iter().zip(nominal).enumerate() {
        assert!(*d <= n && *d >= n / 2, "trip {i}: {d:?}");
    }
    assert_ne!(seen, nominal, "jitter shortened no period");
    let open_for = b.snapshot().open_for.unwrap();
    clock.advance(open_for);
    b.try_acquire().unwrap().success();
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), BreakerState::Closed);
    trip(&b);
    assert!(b.snapshot().open_for.unwrap() <= secs(10));
}

#[test]
fn force_open_holds_until_reset() {
    let (b, clock) = breaker(small());
    let outstanding = b.try_acquire().unwrap();
    b.force_open();
    b.force_open(); // idempotent
    clock.advance(secs(3600));
    let r = b.try_acquire().unwrap_err();
    assert_eq!(r.state(), BreakerState::ForcedOpen);
    assert_eq!(outstanding.failure(), Verdict::Stale);
    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(b.try_acquire().is_ok());
    assert_eq!(b.snapshot().opens, 1);
}

#[test]
fn rejection_converts_to_non_counting_circuit_open_error() {
    let (b, _clock) = breaker(small());
    trip(&b);
    let e = b.acquire().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CircuitOpen);
    assert!(e.is_transient());
    assert!(!e.counts_against_breaker());
    assert!(!e.may_have_executed());
    assert_eq!(e.retry_after(), Some(secs(10)));
    // Formatted only when shown, the same text as before.
    assert_eq!(
        e.to_string(),
        "circuit breaker is open (retry after 10000 ms)"
    );
    assert!(format!("{e:?}").contains("retry after 10000 ms"), "{e:?}");
    let e = e.context("after 3 attempts");
    assert_eq!(
        e.to_string(),
        "after 3 attempts: circuit breaker is open (retry after 10000 ms)"
    );
    assert_eq!(e.kind(), ErrorKind::CircuitOpen);
}

#[derive(Default)]
struct Recorder(Mutex<Vec<Transition>>);

impl BreakerListener for Recorder {
    fn on_transition(&self, t: &Transition) {
        self.0.lock().push(t.clone());
    }
}

#[test]
fn listeners_hear_every_transition() {
    let rec = Arc::new(Recorder::default());
    let clock = ManualClock::new();
    let b = CircuitBreaker::new(small(), clock.shared())
        .with_listener(rec.clone())
        .with_listener(Arc::new(Recorder::default()));
    let t0 = clock.now();
    trip(&b);
    clock.advance(secs(10));
    b.try_acquire().unwrap().failure();
    clock.advance(secs(10));
    b.try_acquire().unwrap().success();
    b.try_acquire().unwrap().success();
    b.force_open();
    b.reset();
    b.reset(); // closed → closed is not a transition
    use BreakerState::*;
    use TransitionReason::*;
    let got: Vec<_> = rec
        .0
        .lock()
        .iter()
        .map(|t| (t.from, t.to, t.reason))
        .collect();
    assert_eq!(
        got,
        [
            (Closed, Open, ConsecutiveFailures),
            (Open, HalfOpen, OpenTimeoutElapsed),
            (HalfOpen, Open, ProbeFailed),
            (Open, HalfOpen, OpenTimeoutElapsed),
            (HalfOpen, Closed, ProbesSucceeded),
            (Closed, ForcedOpen, Forced),
            (ForcedOpen, Closed, TransitionReason::Reset),
        ]
    );
    let all = rec.0.lock();
    assert_eq!(all[1].at - t0, secs(10));
    assert_eq!(all[0].open_for, Some(secs(10)));
    assert!(all.windows(2).all(|w| w[1].generation > w[0].generation));
}

/// Calls back into the breaker from inside the listener.
struct Reentrant(Mutex<Option<Arc<CircuitBreaker>>>, Mutex<u32>);

impl BreakerListener for Reentrant {
    fn on_transition(&self, t: &Transition) {
        let Some(b) = self.0.lock().clone() else {
            return;
        };
        assert_eq!(b.state(), t.to);
        let _ = b.snapshot();
        let _ = b.try_acquire().map(|p| p.ignore());
        *self.1.lock() += 1;
        if t.to == BreakerState::Open {
            b.reset(); // a nested transition, announced from inside this one
        }
    }
}

#[test]
fn listener_calling_back_into_the_breaker_does_not_deadlock() {
    let listener = Arc::new(Reentrant(Mutex::new(None), Mutex::new(0)));
    let clock = ManualClock::new();
    let b = Arc::new(CircuitBreaker::new(small(), clock.shared()).with_listener(listener.clone()));
    *listener.0.lock() = Some(b.clone());
    for _ in 0..3 {
        b.try_acquire().unwrap().failure();
    }
    assert_eq!(b.state(), BreakerState::Closed, "listener reset it");
    assert_eq!(*listener.1.lock(), 2); // the open, then the nested reset
    *listener.0.lock() = None; // break the Arc cycle
}

#[test]
fn one_log_line_per_transition_never_per_rejection() {
    crate::test_log::start();
    let clock = ManualClock::new();
    let b = CircuitBreaker::new(small(), clock.shared()).with_name("redis://h:1");
    trip(&b);
    for _ in 0..1000 {
        assert!(b.try_acquire().is_err());
    }
    clock.advance(secs(10));
    b.try_acquire().unwrap().success();
    b.try_acquire().unwrap().success();
    let lines = crate::test_log::take("resilient_redis::breaker");
    let levels: Vec<_> = lines.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        levels,
        [log::Level::Warn, log::Level::Debug, log::Level::Info]
    );
    assert!(
        lines.iter().all(|(_, m)| m.starts_with("redis://h:1 ")),
        "{lines:?}"
    );
    assert!(lines[0].1.contains("consecutive_failures"), "{lines:?}");
}

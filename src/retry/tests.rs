//! Unit tests of the retry loop, on a manual clock.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a bug to see

use std::cell::{Cell, RefCell};

use super::*;
use crate::clock::{Clock, ManualClock};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A read timeout: transient, and the command may have executed.
fn read_timeout() -> Error {
    Error::new(ErrorKind::Timeout, ErrorClass::Transient, "read timed out")
        .with_may_have_executed(true)
}

/// A connect failure: transient, and the command was never sent.
fn connect_refused() -> Error {
    Error::new(ErrorKind::Connection, ErrorClass::Transient, "refused")
        .with_may_have_executed(false)
}

fn timeouts(n: usize) -> Vec<Error> {
    (0..n).map(|_| read_timeout()).collect()
}

#[derive(Default)]
struct Recorder {
    retries: RefCell<Vec<(u32, Duration)>>,
    denied: Cell<u32>,
}

impl RetryObserver for Recorder {
    fn on_retry(&self, retry: u32, delay: Duration, _error: &Error) {
        self.retries.borrow_mut().push((retry, delay));
    }
    fn on_budget_denied(&self, _error: &Error) {
        self.denied.set(self.denied.get() + 1);
    }
}

fn retrier(clock: &ManualClock, policy: RetryPolicy, budget: RetryBudget) -> Retrier {
    Retrier::new(policy, Arc::new(budget))
        .with_clock(clock.shared())
        .with_seed(42)
}

/// Runs a call whose attempts fail with `errors` in order, then succeed.
/// Returns the outcome and the number of attempts made.
fn run_failing(
    r: &Retrier,
    idempotent: bool,
    obs: &Recorder,
    errors: Vec<Error>,
) -> (Result<u32, Error>, u32) {
    let mut errors = errors.into_iter();
    let attempts = Cell::new(0);
    let out = r.run(idempotent, obs, |a| {
        assert_eq!(a.number, attempts.get());
        attempts.set(attempts.get() + 1);
        match errors.next() {
            Some(e) => Err(e),
            None => Ok(a.number),
        }
    });
    (out, attempts.get())
}

#[test]
fn first_attempt_success_does_not_retry_or_sleep() {
    let clock = ManualClock::new();
    let r = retrier(&clock, RetryPolicy::default(), RetryBudget::default());
    let obs = Recorder::default();
    let (out, attempts) = run_failing(&r, false, &obs, Vec::new());
    assert_eq!(out.unwrap(), 0);
    assert_eq!(attempts, 1);
    assert_eq!(clock.elapsed(), Duration::ZERO);
    assert!(obs.retries.borrow().is_empty());
    assert_eq!(r.budget().retries_granted(), 0);
}

#[test]
fn idempotent_command_is_retried_after_a_read_timeout() {
    let clock = ManualClock::new();
    let r = retrier(&clock, RetryPolicy::default(), RetryBudget::default());
    let obs = Recorder::default();
    let (out, attempts) = run_failing(&r, true, &obs, vec![read_timeout(), read_timeout()]);
    assert_eq!(out.unwrap(), 2);
    assert_eq!(attempts, 3);
    let retries = obs.retries.borrow();
    assert_eq!(retries.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
    assert!(
        retries[0].1 <= ms(100) && retries[1].1 <= ms(200),
        "{retries:?}"
    );
    // The backoff was slept through the injected clock, nothing else.
    assert_eq!(clock.elapsed(), retries[0].1 + retries[1].1);
    assert_eq!(r.budget().retries_granted(), 2);
}

#[test]
fn gives_up_after_max_retries_with_the_last_error() {
    let clock = ManualClock::new();
    let r = retrier(&clock, RetryPolicy::default(), RetryBudget::default());
    let obs = Recorder::default();
    let (out, attempts) = run_failing(&r, true, &obs, timeouts(10));
    let err = out.unwrap_err();
    assert_eq!(attempts, 3);
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.is_transient());
    assert_eq!(err.to_string(), "after 3 attempts: read timed out");
}

#[test]
fn non_idempotent_command_is_not_resent_after_it_may_have_executed() {
    let clock = ManualClock::new();
    let r = retrier(&clock, RetryPolicy::default(), RetryBudget::default());
    let obs = Recorder::default();
    let (out, attempts) = run_failing(&r, false, &obs, vec![read_timeout()]);
    let err = out.unwrap_err();
    assert_eq!(attempts, 1);
    assert_eq!(err.to_string(), "read timed out");
    assert!(obs.retries.borrow().is_empty());
    assert_eq!(r.budget().retries_granted(), 0);
}

#[test]
fn non_idempotent_command_is_retried_when_it_was_never_sent() {
    let clock = ManualClock::new();
    let r = retrier(&clock, RetryPolicy::default(), RetryBudget::default());
    let obs = Recorder::default();
    let (out, attempts) = run_failing(&r, false, &obs, vec![connect_refused()]);
    assert_eq!(out.unwrap(), 1);
    assert_eq!(attempts, 2);
    // ... but not once a later attempt may have reached the server.
    let (out, attempts) = run_failing(&r, false, &obs, vec![connect_refused(), read_timeout()]);
    assert_eq!(out.unwrap_err().kind(), ErrorKind::Timeout);
    assert_eq!(attempts, 2);
}

#[test]
fn rate_limited_permanent_open_circuit_and_exhausted_pool_are_never_retried() {
    let clock = ManualClock::new();
    let r = retrier(&clock, RetryPolicy::default(), RetryBudget::default());
    let obs = Recorder::default();
    let cases = [
        Error::new(ErrorKind::RateLimited, ErrorClass::RateLimited, "limit")
            .with_may_have_executed(false),
        Error::new(ErrorKind::Server, ErrorClass::Permanent, "WRONGTYPE"),
        Error::new(ErrorKind::CircuitOpen, ErrorClass::Transient, "open")
            .with_may_have_executed(false),
        Error::new(ErrorKind::CircuitOpen, ErrorClass::Permanent, "open"),
        // Overload: another checkout timeout in the queue would not help.
        Error::new(ErrorKind::PoolTimeout, ErrorClass::Transient, "pool full")
            .with_may_have_executed(false),
    ];
    for case in cases {
        let kind = case.kind();
        let (out, attempts) = run_failing(&r, true, &obs, vec![case]);
        assert_eq!(out.unwrap_err().kind(), kind);
        assert_eq!(attempts, 1, "{kind}");
    }
    assert_eq!(clock.elapsed(), Duration::ZERO);
    assert!(obs.retries.borrow().is_empty());
}

#[test]
fn zero_retries_means_one_attempt() {
    let clock = ManualClock::new();
    let r = retrier(&clock, RetryPolicy::NONE, RetryBudget::default());
    let obs = Recorder::default();
    let (out, attempts) = run_failing(&r, true, &obs, vec![connect_refused()]);
    assert!(out.is_err());
    assert_eq!(attempts, 1);
}

#[test]
fn call_deadline_caps_attempts_and_backoff() {
    let clock = ManualClock::new();
    let policy = RetryPolicy {
        max_retries: 20,
        base_delay: ms(50),
        max_delay: ms(50),
    };
    let r = retrier(&clock, policy, RetryBudget::default()).with_call_timeout(Some(ms(1000)));
    let start = clock.now();
    let attempts = Cell::new(0u32);
    let last_deadline = Cell::new(None);
    let out: Result<(), Error> = r.run(true, &(), |a| {
        attempts.set(attempts.get() + 1);
        last_deadline.set(a.deadline);
        // Each attempt takes 100 ms (a slow socket timeout).
        clock.advance(ms(100));
        Err(read_timeout())
    });
    assert!(out.is_err());
    assert_eq!(last_deadline.get(), Some(start + ms(1000)));
    // 20 retries were allowed, but attempts (100 ms) and backoff (≤ 50 ms)
    // stop within the deadline: at least 1000 / 150, at most 1000 / 100.
    assert!((6..=10).contains(&attempts.get()), "{}", attempts.get());
    // No backoff was started that would end past the deadline, so the call
    // ended at most one attempt after it.
    assert!(clock.now() <= start + ms(1100));
}

#[test]
fn budget_denial_stops_retries_and_is_reported() {
    let clock = ManualClock::new();
    // 4 tokens, threshold 2: two retries in all, no refill.
    let r = retrier(
        &clock,
        RetryPolicy::default(),
        RetryBudget::new(4, 0.0).unwrap(),
    );
    let obs = Recorder::default();
    let (out, attempts) = run_failing(&r, true, &obs, timeouts(10));
    assert!(out.is_err());
    assert_eq!(attempts, 3);
    let (out, attempts) = run_failing(&r, true, &obs, timeouts(10));
    assert_eq!(out.unwrap_err().to_string(), "read timed out");
    assert_eq!(attempts, 1);
    assert_eq!(obs.denied.get(), 1);
    assert_eq!(r.budget().retries_denied(), 1);
    assert_eq!(r.budget().retries_granted(), 2);
}

#[test]
fn a_retry_refused_for_other_reasons_spends_no_token() {
    let clock = ManualClock::new();
    let r = retrier(&clock, RetryPolicy::NONE, RetryBudget::default());
    let obs = Recorder::default();
    for _ in 0..100 {
        let _ = run_failing(&r, true, &obs, vec![read_timeout()]);
        let _ = run_failing(&r, false, &obs, vec![read_timeout()]);
    }
    assert_eq!(r.budget().tokens(), 100.0);
    assert_eq!(r.budget().retries_denied(), 0);
    assert_eq!(obs.denied.get(), 0);
}

/// A long outage: every attempt fails. Retries stop at half the bucket
/// (50 with the defaults), however many calls are made.
#[test]
fn sustained_outage_is_bounded_by_the_budget() {
    let clock = ManualClock::new();
    let r = retrier(&clock, RetryPolicy::default(), RetryBudget::default());
    let obs = Recorder::default();
    let mut attempts_total = 0;
    for _ in 0..10_000 {
        let (out, attempts) = run_failing(&r, true, &obs, timeouts(3));
        assert!(out.is_err());
        attempts_total += attempts;
    }
    assert_eq!(r.budget().retries_granted(), 50);
    assert_eq!(attempts_total, 10_000 + 50);
    assert_eq!(obs.retries.borrow().len(), 50);
    assert!(obs.denied.get() >= 10_000 - 50);
}

/// Mixed load: every third call's first attempt fails once. Retries stay
/// within `M/2 + ratio × successes`.
#[test]
fn mixed_load_retries_stay_within_the_documented_fraction() {
    let clock = ManualClock::new();
    let r = retrier(&clock, RetryPolicy::default(), RetryBudget::default());
    let obs = Recorder::default();
    let mut successes = 0u64;
    for i in 0..30_000 {
        let errors = if i % 3 == 0 {
            vec![read_timeout()]
        } else {
            Vec::new()
        };
        let (out, _) = run_failing(&r, true, &obs, errors);
        successes += u64::from(out.is_ok());
    }
    let retries = r.budget().retries_granted();
    let bound = 50.0 + 0.1 * successes as f64;
    assert!(retries as f64 <= bound, "{retries} > {bound}");
    // The budget, not the policy, is what limited them: 10 000 wanted one.
    assert!(retries < 10_000);
    assert!(retries > 2_000, "{retries}");
}

#[test]
fn from_config_uses_the_config() {
    let config = Config::memory_only()
        .max_retries(7)
        .call_timeout(Some(ms(300)))
        .build()
        .unwrap();
    let r = Retrier::from_config(&config, Arc::new(RetryBudget::default()));
    assert_eq!(r.policy().max_retries, 7);
    assert_eq!(r.call_timeout, Some(ms(300)));
    let debug = format!("{r:?}");
    assert!(debug.contains("max_retries: 7"), "{debug}");
}

#[test]
fn retrier_and_budget_are_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Retrier>();
    assert_send_sync::<RetryBudget>();
    assert_send_sync::<Attempt>();
}

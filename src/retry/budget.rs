//! The client-wide retry budget: a token bucket in the style of gRPC retry
//! throttling (gRPC proposal A6), so that a long outage cannot turn every
//! call into `1 + max_retries` calls against a server trying to recover.

use crate::log_fields::{log_fields, Fields};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::Error;

/// Tokens are counted in thousandths so that a fractional refill per success
/// stays exact integer arithmetic (and the bound below holds exactly).
const MILLI: u64 = 1000;

/// A token bucket shared by every call of a client that limits retries to a
/// fraction of successful traffic.
///
/// - The bucket holds at most `max_tokens` tokens and starts full.
/// - Each retry spends one token, and is granted only if the bucket still
///   holds at least `max_tokens / 2` tokens afterwards ("retries stop while
///   the bucket is below half").
/// - Each successful call puts `token_ratio` tokens back (up to the maximum).
///   The ratio is kept to thousandths of a token.
///
/// **The bound.** Over any period starting from a full bucket,
///
/// ```text
/// retries granted ≤ max_tokens / 2 + token_ratio × successes
/// ```
///
/// because the level never drops below `max_tokens / 2` and only successes
/// raise it. During an outage with no successes at all, at most
/// `max_tokens / 2` retries are made in total, then none until successes
/// refill the bucket. Under sustained partial failure, retries are at most
/// `token_ratio` of successful calls (plus the fixed `max_tokens / 2`).
/// With the defaults (100 tokens, ratio 0.1): at most 50 retries during a
/// total outage, and at most 10 % extra load from retries in the long run.
///
/// Thread-safe and lock-free: one atomic holds the level. A success on a
/// full bucket (the normal case) is a single atomic load.
///
/// **Logging.** The first denied retry logs one WARN; one INFO follows
/// when successes have refilled the bucket to three quarters. Between the
/// two nothing is logged, however often retries are granted and denied
/// around the half-full threshold.
///
/// # Examples
///
/// ```
/// use resilient_redis::RetryBudget;
///
/// let budget = RetryBudget::new(10, 0.5)?;
/// // 10 tokens, threshold 5: five retries, then none.
/// let granted = (0..100).filter(|_| budget.try_withdraw()).count();
/// assert_eq!(granted, 5);
/// assert_eq!(budget.retries_denied(), 95);
/// // Two successes earn one token: one more retry.
/// budget.deposit();
/// budget.deposit();
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw());
/// # Ok::<(), resilient_redis::Error>(())
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    /// Current level, in thousandths of a token.
    level: AtomicU64,
    max: u64,
    threshold: u64,
    /// The level at which a budget that denied retries counts as
    /// recovered (three quarters), well above `threshold`, so that the
    /// WARN/INFO pair does not flap around the threshold.
    recovered: u64,
    credit: u64,
    granted: AtomicU64,
    denied: AtomicU64,
    /// Set from the first denied retry until the level is back to
    /// `recovered`: the WARN and the INFO are each logged once per episode.
    exhausted: AtomicBool,
}

impl RetryBudget {
    /// Default capacity: 100 tokens (at most 50 retries during an outage).
    pub const DEFAULT_MAX_TOKENS: u32 = 100;
    /// Default refill per success: 0.1 token (retries ≤ 10 % of successes).
    pub const DEFAULT_TOKEN_RATIO: f64 = 0.1;

    /// A full bucket of `max_tokens` tokens refilled by `token_ratio` tokens
    /// per successful call. `max_tokens == 0` disables retries: every retry
    /// is denied.
    ///
    /// # Errors
    ///
    /// An [`ErrorKind::Config`](crate::ErrorKind::Config) error when
    /// `token_ratio` is not a finite number from 0 to `max_tokens`.
    pub fn new(max_tokens: u32, token_ratio: f64) -> Result<Self, Error> {
        if !token_ratio.is_finite() || token_ratio < 0.0 || token_ratio > f64::from(max_tokens) {
            return Err(Error::config(format!(
                "retry budget token_ratio: expected a number from 0 to max_tokens ({max_tokens}), got {token_ratio}"
            )));
        }
        // In range by the check above: at most max_tokens × 1000.
        let credit = (token_ratio * MILLI as f64).round() as u64;
        Ok(RetryBudget::with_credit(max_tokens, credit))
    }

    fn with_credit(max_tokens: u32, credit: u64) -> Self {
        let max = u64::from(max_tokens) * MILLI;
        RetryBudget {
            level: AtomicU64::new(max),
            max,
            threshold: max / 2,
            recovered: max - max / 4,
            credit,
            granted: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            exhausted: AtomicBool::new(false),
        }
    }

    /// Spends one token for a retry, if the bucket stays at or above half
    /// afterwards. Returns whether the retry may go ahead, and counts the
    /// answer ([`retries_granted`](Self::retries_granted) /
    /// [`retries_denied`](Self::retries_denied)).
    pub fn try_withdraw(&self) -> bool {
        // Relaxed is enough: the level is the only shared state, and each
        // read-modify-write on one atomic is totally ordered.
        let spent = self
            .level
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |level| {
                level
                    .checked_sub(MILLI)
                    .filter(|after| *after >= self.threshold)
            })
            .is_ok();
        if spent {
            // A grant near the threshold is no recovery: only deposits
            // (below) end an episode.
            self.granted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.denied.fetch_add(1, Ordering::Relaxed);
            if !self.exhausted.swap(true, Ordering::Relaxed) {
                log_fields!(
                    log::Level::Warn,
                    Fields::new("retry_budget").error("retry_budget_exhausted", "retry budget exhausted");
                    "retry budget exhausted: retries paused until successful calls refill it"
                );
            }
        }
        spent
    }

    /// Credits a successful call: `token_ratio` tokens back, up to the
    /// maximum.
    pub fn deposit(&self) {
        // The common case, a full bucket, costs one load and no write, so
        // successful calls on many threads do not contend on the line.
        if self.level.load(Ordering::Relaxed) >= self.max || self.credit == 0 {
            return;
        }
        let credited = |level: u64| level.saturating_add(self.credit).min(self.max);
        let Ok(before) = self
            .level
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |level| {
                (level < self.max).then(|| credited(level))
            })
        else {
            return;
        };
        if credited(before) >= self.recovered
            && self.exhausted.load(Ordering::Relaxed)
            && self.exhausted.swap(false, Ordering::Relaxed)
        {
            log_fields!(
                log::Level::Info,
                Fields::new("retry_budget");
                "retry budget refilled: retries resumed"
            );
        }
    }

    /// The current level, in tokens.
    pub fn tokens(&self) -> f64 {
        self.level.load(Ordering::Relaxed) as f64 / MILLI as f64
    }

    /// The capacity, in tokens.
    pub fn max_tokens(&self) -> f64 {
        self.max as f64 / MILLI as f64
    }

    /// Tokens credited per successful call (to thousandths).
    pub fn token_ratio(&self) -> f64 {
        self.credit as f64 / MILLI as f64
    }

    /// Retries this budget has allowed since it was created.
    pub fn retries_granted(&self) -> u64 {
        self.granted.load(Ordering::Relaxed)
    }

    /// Retries this budget has refused since it was created.
    pub fn retries_denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }
}

impl Default for RetryBudget {
    /// [`DEFAULT_MAX_TOKENS`](Self::DEFAULT_MAX_TOKENS) tokens, refilled by
    /// [`DEFAULT_TOKEN_RATIO`](Self::DEFAULT_TOKEN_RATIO) per success.
    fn default() -> Self {
        let credit = (Self::DEFAULT_TOKEN_RATIO * MILLI as f64).round() as u64;
        RetryBudget::with_credit(Self::DEFAULT_MAX_TOKENS, credit)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a bug to see
mod tests {
    use super::*;
    use crate::jitter::Jitter;

    #[test]
    fn default_matches_the_documented_constants() {
        let b = RetryBudget::default();
        let n = RetryBudget::new(
            RetryBudget::DEFAULT_MAX_TOKENS,
            RetryBudget::DEFAULT_TOKEN_RATIO,
        )
        .unwrap();
        assert_eq!(b.max_tokens(), 100.0);
        assert_eq!(b.token_ratio(), 0.1);
        assert_eq!(
            (b.max, b.threshold, b.credit),
            (n.max, n.threshold, n.credit)
        );
    }

    #[test]
    fn total_outage_allows_half_the_bucket_then_nothing() {
        let b = RetryBudget::default();
        let granted = (0..10_000).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 50);
        assert_eq!(b.retries_granted(), 50);
        assert_eq!(b.retries_denied(), 9_950);
        assert_eq!(b.tokens(), 50.0);
    }

    #[test]
    fn successes_refill_and_the_bucket_is_capped() {
        let b = RetryBudget::new(10, 0.25).unwrap();
        for _ in 0..1000 {
            b.deposit();
        }
        assert_eq!(b.tokens(), 10.0);
        while b.try_withdraw() {}
        assert_eq!(b.tokens(), 5.0);
        for _ in 0..4 {
            b.deposit();
        }
        assert_eq!(b.tokens(), 6.0);
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
    }

    #[test]
    fn zero_tokens_never_retries_and_bad_ratios_are_rejected() {
        let b = RetryBudget::new(0, 0.0).unwrap();
        b.deposit();
        assert!(!b.try_withdraw());
        for bad in [f64::NAN, f64::INFINITY, -0.1, 11.0] {
            let e = RetryBudget::new(10, bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Config);
            assert!(e.to_string().contains("token_ratio"), "{e}");
        }
    }

    /// Every call fails once and wants one retry; a fraction `p` of the
    /// retries succeed. The documented bound must hold at every step.
    #[test]
    fn bound_holds_under_mixed_load() {
        for (max_tokens, ratio, p_success) in [
            (100, 0.1, 0.0),
            (100, 0.1, 0.5),
            (100, 0.1, 0.9),
            (10, 0.5, 0.3),
            (1000, 0.01, 0.99),
        ] {
            let b = RetryBudget::new(max_tokens, ratio).unwrap();
            let rng = Jitter::with_seed(7);
            let mut successes = 0u64;
            let mut calls = 0u64;
            for _ in 0..100_000 {
                calls += 1;
                // The first attempt succeeds with probability p; otherwise
                // one retry, if granted, succeeds with probability p.
                let ok = rng.unit() < p_success || (b.try_withdraw() && rng.unit() < p_success);
                if ok {
                    b.deposit();
                    successes += 1;
                }
                let bound = f64::from(max_tokens) / 2.0 + ratio * successes as f64;
                assert!(
                    b.retries_granted() as f64 <= bound + 1e-9,
                    "{max_tokens} {ratio} {p_success}: {} > {bound}",
                    b.retries_granted()
                );
            }
            // Long-run: retries are at most `ratio` of traffic plus M/2.
            let fraction = b.retries_granted() as f64 / calls as f64;
            assert!(
                fraction <= ratio + f64::from(max_tokens) / 2.0 / calls as f64,
                "{fraction}"
            );
        }
    }

    /// Calls that alternate between a granted and a denied retry around
    /// the half-full threshold log one WARN, then one INFO once successes
    /// have refilled the bucket to three quarters: not a pair per flap.
    #[test]
    fn exhaustion_is_logged_once_per_episode_not_per_flap() {
        use log::Level::{Info, Warn};
        crate::test_log::start();
        let b = RetryBudget::new(10, 0.5).unwrap();
        let target = "resilient_redis::retry::budget";
        while b.try_withdraw() {}
        assert_eq!(b.tokens(), 5.0);
        let levels: Vec<_> = crate::test_log::take(target)
            .iter()
            .map(|(l, _)| *l)
            .collect();
        assert_eq!(levels, [Warn]);
        // Hovering at the threshold: two successes earn the next retry.
        let mut flaps = 0;
        for _ in 0..100 {
            b.deposit();
            b.deposit();
            flaps += usize::from(b.try_withdraw());
            flaps += usize::from(!b.try_withdraw());
        }
        assert_eq!(flaps, 200, "the test must make the budget flap");
        assert_eq!(crate::test_log::take(target), []);
        // Refilling to 3/4 (7.5 tokens) ends the episode, once.
        for _ in 0..4 {
            b.deposit();
        }
        assert_eq!(b.tokens(), 7.0);
        assert_eq!(crate::test_log::take(target), []);
        for _ in 0..10 {
            b.deposit();
        }
        let lines = crate::test_log::take(target);
        let levels: Vec<_> = lines.iter().map(|(l, _)| *l).collect();
        assert_eq!(levels, [Info], "{lines:?}");
        // The next outage is a new episode: one WARN again.
        while b.try_withdraw() {}
        assert!(!b.try_withdraw());
        let levels: Vec<_> = crate::test_log::take(target)
            .iter()
            .map(|(l, _)| *l)
            .collect();
        assert_eq!(levels, [Warn]);
    }

    #[test]
    fn concurrent_withdrawals_never_exceed_the_bound() {
        let b = std::sync::Arc::new(RetryBudget::new(1000, 0.1).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..10_000).filter(|_| b.try_withdraw()).count())
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 500);
        assert_eq!(b.retries_denied(), 80_000 - 500);
    }
}

//! Retries: which failures are retried, how often, how long to wait, and how
//! many retries the whole client may make. The rules are documented on
//! [`Retrier`], where users see them.

mod budget;
mod idempotency;
mod policy;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::error::{Error, ErrorClass, ErrorKind};
use crate::jitter::Jitter;

pub use budget::RetryBudget;
pub use idempotency::{is_idempotent, is_pipeline_idempotent, Idempotency};
pub(crate) use idempotency::{IDEMPOTENT_WRITES, READ_ONLY};
pub use policy::RetryPolicy;

/// What one attempt of a call is told by [`Retrier::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempt {
    /// 0 for the first attempt, 1 for the first retry, ...
    pub number: u32,
    /// When the whole call must be over, if a call timeout is set. An
    /// attempt should cap its checkout and socket timeouts by it.
    pub deadline: Option<Instant>,
}

/// Hooks called by [`Retrier::run`], so that the client can count retries
/// and emit events without this module knowing about either. Every method
/// has a no-op default; `()` implements the trait and ignores everything.
pub trait RetryObserver {
    /// A retry is about to happen: retry number `retry` (1 for the first
    /// retry), after sleeping `delay`, because of `error`.
    fn on_retry(&self, retry: u32, delay: Duration, error: &Error) {
        let _ = (retry, delay, error);
    }

    /// The retry budget refused a retry that would otherwise have been made;
    /// the call fails with `error`.
    fn on_budget_denied(&self, error: &Error) {
        let _ = error;
    }
}

impl RetryObserver for () {}

/// Runs a call's attempts under a [`RetryPolicy`], a shared
/// [`RetryBudget`] and an optional per-call deadline.
///
/// A retry hides a transient fault (a reset idle connection, a restart) but
/// can also apply `INCR` twice or keep a recovering server down with a retry
/// storm. A failed attempt is retried only when **all** hold:
///
/// 1. the error is [`ErrorClass::Transient`] and neither
///    [`ErrorKind::CircuitOpen`] nor [`ErrorKind::PoolTimeout`]: a rate
///    limit is never retried against the same endpoint (the failover layer
///    sends it elsewhere), a permanent error fails the same way again, an
///    open breaker rejects at once, and a pool that stayed exhausted for a
///    whole checkout timeout is overloaded by its own callers — retrying
///    would only queue this call again behind them, one more checkout
///    timeout each time, and add to the overload;
/// 2. the command is idempotent (see [`Idempotency`] and [`is_idempotent`]),
///    **or** the failure certainly came before any byte was written
///    ([`Error::may_have_executed`] is `false`: checkout or connect failed);
/// 3. retries are left ([`RetryPolicy::max_retries`]);
/// 4. the optional per-call deadline leaves room for the backoff;
/// 5. the client-wide [`RetryBudget`] grants a token (asked last, so that
///    only retries really made spend tokens).
///
/// The delay before retry `n` (0 for the first retry) is uniform in
/// `[0, min(max_delay, base_delay · 2^n)]` ([`RetryPolicy`]). It is slept
/// through the [`Clock`](crate::Clock), so a
/// [`ManualClock`](crate::ManualClock) makes tests instant.
///
/// Each retry is logged at DEBUG (never WARN: during an outage that would be
/// a log flood); the budget logs WARN once when it starts denying retries
/// and INFO once when it grants one again.
///
/// Cheap to share: `run` takes `&self` and the jitter source is lock-free.
/// Retriers built for one client share one budget (`Arc<RetryBudget>`).
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use std::sync::Arc;
/// use std::time::Duration;
/// use resilient_redis::{ManualClock, Retrier, RetryBudget, RetryPolicy};
///
/// let clock = ManualClock::new();
/// let retrier = Retrier::new(RetryPolicy::default(), Arc::new(RetryBudget::default()))
///     .with_clock(clock.shared());
///
/// // An idempotent call whose first attempt hits a reset connection.
/// let attempts = Cell::new(0);
/// let value = retrier.run(true, &(), |attempt| {
///     attempts.set(attempts.get() + 1);
///     if attempt.number == 0 {
///         let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
///         return Err(resilient_redis::redis::RedisError::from(reset).into());
///     }
///     Ok("value")
/// })?;
/// assert_eq!(value, "value");
/// assert_eq!(attempts.get(), 2);
/// // The backoff was "slept" on the manual clock: at most 100 ms.
/// assert!(clock.elapsed() <= Duration::from_millis(100));
/// # Ok::<(), resilient_redis::Error>(())
/// ```
pub struct Retrier {
    policy: RetryPolicy,
    budget: Arc<RetryBudget>,
    jitter: Jitter,
    clock: SharedClock,
    call_timeout: Option<Duration>,
}

/// Why a failed attempt is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveUp {
    /// Not transient, or the breaker is open.
    NotRetryable,
    /// May have executed, and the command is not idempotent.
    NotIdempotent,
    /// `max_retries` reached.
    Exhausted,
    /// The call deadline leaves no room for the backoff.
    Deadline,
    /// The retry budget refused a token.
    Budget,
}

impl Retrier {
    /// A retrier on the system clock, with entropy-seeded jitter and no call
    /// deadline.
    pub fn new(policy: RetryPolicy, budget: Arc<RetryBudget>) -> Self {
        Retrier {
            policy,
            budget,
            jitter: Jitter::from_entropy(),
            clock: SystemClock::shared(),
            call_timeout: None,
        }
    }

    /// A retrier with the config's policy ([`RetryPolicy::from`]) and
    /// [`Config::call_timeout`], spending from `budget`.
    pub fn from_config(config: &Config, budget: Arc<RetryBudget>) -> Self {
        Retrier::new(RetryPolicy::from(config), budget).with_call_timeout(config.call_timeout)
    }

    /// Reads time and sleeps through `clock`. Defaults to the system clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Seeds the jitter, for reproducible delays. Defaults to a seed from
    /// the process' randomness and the time.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.jitter = Jitter::with_seed(seed);
        self
    }

    /// Caps each call, attempts and backoff included: no retry starts whose
    /// backoff would end past `call_timeout` after the call began. Defaults
    /// to `None` (bounded by the retry count alone).
    pub fn with_call_timeout(mut self, call_timeout: Option<Duration>) -> Self {
        self.call_timeout = call_timeout;
        self
    }

    /// The policy in use.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The shared budget in use.
    pub fn budget(&self) -> &Arc<RetryBudget> {
        &self.budget
    }

    /// Runs `attempt` until it succeeds or a failure is not to be retried
    /// (see the rules [above](Retrier)). `idempotent` says whether the command
    /// may be re-sent after it may have reached the server (see
    /// [`Idempotency::for_cmd`]). Each success credits the budget.
    ///
    /// A call takes at most `max_retries + 1` attempts plus
    /// [`RetryPolicy::max_total_backoff`] of sleeping, and never starts a
    /// backoff that would end past the call deadline.
    ///
    /// # Errors
    ///
    /// The last attempt's error. When at least one retry was made, its
    /// message starts with `after N attempts`; its kind and class are the
    /// last attempt's.
    pub fn run<T>(
        &self,
        idempotent: bool,
        observer: &dyn RetryObserver,
        mut attempt: impl FnMut(Attempt) -> Result<T, Error>,
    ) -> Result<T, Error> {
        // Only read the clock when a deadline is configured: the hot path is
        // one closure call plus one budget credit.
        let deadline = self
            .call_timeout
            .and_then(|t| self.clock.now().checked_add(t));
        let mut number = 0;
        loop {
            let err = match attempt(Attempt { number, deadline }) {
                Ok(value) => {
                    self.budget.deposit();
                    return Ok(value);
                }
                Err(err) => err,
            };
            match self.decide(&err, idempotent, number, deadline) {
                Ok(delay) => {
                    number += 1;
                    log::debug!(
                        "retry {number}/{} in {delay:?} after {} error: {err}",
                        self.policy.max_retries,
                        err.kind()
                    );
                    observer.on_retry(number, delay, &err);
                    if !delay.is_zero() {
                        self.clock.sleep(delay);
                    }
                    // The call goes on past its last checkin: that checkin
                    // no longer ends it (the next attempt may not reach one).
                    crate::stats::call_timer::resumed();
                }
                Err(reason) => {
                    if reason == GiveUp::Budget {
                        observer.on_budget_denied(&err);
                    }
                    return Err(if number == 0 {
                        err
                    } else {
                        err.context(format_args!("after {} attempts", number + 1))
                    });
                }
            }
        }
    }

    /// Whether the failure of attempt `number` is retried, and after what
    /// delay. The budget is asked last, so that a token is spent only on a
    /// retry that will really be made.
    pub(crate) fn decide(
        &self,
        err: &Error,
        idempotent: bool,
        number: u32,
        deadline: Option<Instant>,
    ) -> Result<Duration, GiveUp> {
        if err.class() != ErrorClass::Transient
            || matches!(err.kind(), ErrorKind::CircuitOpen | ErrorKind::PoolTimeout)
        {
            return Err(GiveUp::NotRetryable);
        }
        if !idempotent && err.may_have_executed() {
            return Err(GiveUp::NotIdempotent);
        }
        if number >= self.policy.max_retries {
            return Err(GiveUp::Exhausted);
        }
        let delay = self.policy.backoff(number, &self.jitter);
        if let Some(deadline) = deadline {
            // Strictly before: a retry needs some time to run after the sleep.
            if self
                .clock
                .now()
                .checked_add(delay)
                .is_none_or(|t| t >= deadline)
            {
                return Err(GiveUp::Deadline);
            }
        }
        if !self.budget.try_withdraw() {
            return Err(GiveUp::Budget);
        }
        Ok(delay)
    }
}

impl fmt::Debug for Retrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retrier")
            .field("policy", &self.policy)
            .field("budget_tokens", &self.budget.tokens())
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;

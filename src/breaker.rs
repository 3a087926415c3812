//! A circuit breaker: stop calling an endpoint that keeps failing, probe it
//! gently once a pause has passed, resume when probes succeed.
//!
//! Three states. **Closed**: calls go through; `failure_threshold`
//! consecutive failures (or the optional failure-rate rule) open it.
//! **Open**: calls are rejected at once with the time left
//! ([`Rejected::retry_after`]); after the open period the next
//! [`CircuitBreaker::try_acquire`] moves it to **half-open**, which admits at
//! most `half_open_max_requests` probes at a time: `success_threshold`
//! consecutive successes close it, any failure opens it again (for longer,
//! with [`OpenBackoff`]). A probe that never reports loses its slot after
//! `probe_timeout`, so a hung call cannot wedge the breaker half-open.
//!
//! Every state change starts a new *generation*. A [`Permit`] remembers the
//! generation it was granted in, and a verdict from an older one is dropped
//! as [`Verdict::Stale`]: a slow call started while closed cannot count
//! against a half-open breaker.
//!
//! A closed breaker costs no lock: the state and generation are published
//! in an atomic word, and granting a permit or counting a success while
//! closed (with no failure counted and no failure-rate rule) only reads it
//! and bumps a per-thread counter. So does a call rejected while open.
//! Failures, the rate window, half-open probes and every state change run
//! under one `parking_lot::Mutex`, held for a few field updates, which
//! republishes the word; logging and listeners run after it is released.

mod config;
mod core;
mod fast;
mod types;

#[cfg(test)]
mod tests;

use crate::log_fields::{log_fields, millis, Fields};
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use self::core::{Core, Grant, Outcome};
use self::fast::{Fast, Quick};
use crate::clock::SharedClock;
use crate::jitter::Jitter;
use crate::Error;

pub use self::config::{BreakerConfig, FailureRate, OpenBackoff};
pub use self::types::{
    BreakerListener, BreakerSnapshot, BreakerState, Rejected, Transition, TransitionReason, Verdict,
};

/// A thread-safe circuit breaker (see the [module docs](self)).
///
/// `Send + Sync`: share it behind an `Arc`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use resilient_redis::{BreakerConfig, BreakerState, CircuitBreaker, ManualClock};
///
/// let clock = ManualClock::new();
/// let config = BreakerConfig { failure_threshold: 2, ..BreakerConfig::default() };
/// let breaker = CircuitBreaker::new(config, clock.shared()).with_name("redis://cache:6379");
///
/// for _ in 0..2 {
///     breaker.try_acquire().expect("closed").failure();
/// }
/// assert_eq!(breaker.state(), BreakerState::Open);
/// let rejected = breaker.try_acquire().unwrap_err();
/// assert_eq!(rejected.retry_after(), Duration::from_secs(60));
///
/// clock.advance(Duration::from_secs(60));
/// let probe = breaker.try_acquire().expect("half-open admits a probe");
/// assert_eq!(breaker.state(), BreakerState::HalfOpen);
/// probe.success();
/// breaker.try_acquire().expect("second probe").success();
/// assert_eq!(breaker.state(), BreakerState::Closed);
/// ```
pub struct CircuitBreaker {
    core: Mutex<Core>,
    /// What the lock-free paths read and count; written by the lock holder.
    fast: Fast,
    config: BreakerConfig,
    clock: SharedClock,
    jitter: Jitter,
    name: String,
    /// The `endpoint` log field: `primary`, `secondary` or `none`.
    endpoint: &'static str,
    listeners: Vec<Arc<dyn BreakerListener>>,
}

impl CircuitBreaker {
    /// A closed breaker. Out-of-range settings are clamped (see
    /// [`BreakerConfig`]).
    pub fn new(config: BreakerConfig, clock: SharedClock) -> Self {
        let config = config.normalized();
        let now = clock.now();
        let core = Core::new(&config, now);
        let fast = Fast::new(now);
        fast.publish(core.word(), None);
        CircuitBreaker {
            core: Mutex::new(core),
            fast,
            config,
            clock,
            jitter: Jitter::from_entropy(),
            name: String::from("circuit breaker"),
            endpoint: "none",
            listeners: Vec::new(),
        }
    }

    /// Names the breaker in log lines, typically the endpoint's redacted
    /// URL. Must not contain a secret. Defaults to `"circuit breaker"`.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The `endpoint` field of its log lines (a client's endpoint role).
    pub(crate) fn with_endpoint(mut self, endpoint: &'static str) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// Adds a listener told of every transition; several may be added.
    pub fn with_listener(mut self, listener: Arc<dyn BreakerListener>) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Seeds the open-period jitter, for reproducible tests. Defaults to a
    /// seed drawn from process entropy, so processes do not jitter in step.
    pub fn with_jitter_seed(mut self, seed: u64) -> Self {
        self.jitter = Jitter::with_seed(seed);
        self
    }

    /// The settings in force (after clamping).
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The name given with [`CircuitBreaker::with_name`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Asks to make one call. Closed: always granted, without reading the
    /// clock. Open: rejected until the open period has passed, then the
    /// breaker turns half-open. Half-open: granted while fewer than
    /// `half_open_max_requests` probes are outstanding (probes older than
    /// `probe_timeout` are reclaimed first).
    ///
    /// # Errors
    ///
    /// [`Rejected`] when the breaker refuses the call; it says how long to
    /// wait and converts into an [`Error`] of kind `CircuitOpen`.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        self.try_acquire_with(|| self.clock.now())
    }

    /// [`CircuitBreaker::try_acquire`] for an attempt of a client call on
    /// this thread: before the call's first checkout, the clock read that
    /// started the call is still "now" (see
    /// `stats::call_timer::call_start`), so a call the open breaker refuses
    /// needs no clock read of its own. A state change (the open period
    /// over) still reads the clock under the lock. The client's breakers
    /// share its clock, which the call's start was read from.
    #[inline]
    pub(crate) fn try_acquire_for_call(&self) -> Result<Permit<'_>, Rejected> {
        self.try_acquire_with(|| crate::stats::call_timer::call_start(&*self.clock))
    }

    #[inline]
    fn try_acquire_with(
        &self,
        now: impl FnOnce() -> std::time::Instant,
    ) -> Result<Permit<'_>, Rejected> {
        match self.fast.try_acquire(self.config.open_timeout, now) {
            Quick::Granted(generation) => {
                let grant = Grant {
                    generation,
                    probe: None,
                };
                return Ok(self.permit(grant));
            }
            Quick::Rejected(state, retry_after) => {
                return Err(Rejected { state, retry_after });
            }
            Quick::Locked => {}
        }
        let (result, transition) = {
            let mut core = self.core.lock();
            let r = core.acquire(&self.config, &self.fast, self.clock.now());
            self.publish(&core);
            r
        };
        if let Some(t) = transition {
            self.announce(&t);
        }
        result.map(|grant| self.permit(grant))
    }

    /// Like [`CircuitBreaker::try_acquire`], with the rejection as an
    /// [`Error`].
    ///
    /// # Errors
    ///
    /// An [`Error`] of kind `CircuitOpen` when the breaker refuses the call.
    pub fn acquire(&self) -> Result<Permit<'_>, Error> {
        self.try_acquire().map_err(Error::from)
    }

    fn permit(&self, grant: Grant) -> Permit<'_> {
        Permit {
            breaker: self,
            grant,
            settled: false,
        }
    }

    /// Republishes the lock holder's state for the lock-free paths.
    fn publish(&self, core: &Core) {
        self.fast.publish(core.word(), core.open_until());
    }

    fn settle(&self, grant: Grant, outcome: Outcome) -> Verdict {
        if outcome == Outcome::Success
            && grant.probe.is_none()
            && self.fast.try_success(grant.generation)
        {
            return Verdict::Counted;
        }
        let (verdict, transition) = {
            let mut core = self.core.lock();
            let r = core.settle(
                &self.config,
                &self.fast,
                &self.jitter,
                &*self.clock,
                grant,
                outcome,
            );
            self.publish(&core);
            r
        };
        if let Some(t) = transition {
            self.announce(&t);
        }
        verdict
    }

    /// The current state. An open period that has passed still shows as
    /// `Open` until the next [`CircuitBreaker::try_acquire`].
    pub fn state(&self) -> BreakerState {
        self.fast.state()
    }

    /// Consecutive failures counted in the current state.
    pub fn failure_count(&self) -> u32 {
        self.core.lock().failures
    }

    /// Consecutive successes counted in the current state (in half-open,
    /// the probes that succeeded so far).
    ///
    /// While closed, successes are counted without the lock: one that races
    /// a failure or a state change on another thread is ordered before it,
    /// but may still be added to this count after it (at most one per
    /// racing thread, until the next failure or state change). The totals
    /// of [`CircuitBreaker::snapshot`] are exact.
    pub fn success_count(&self) -> u32 {
        self.core.lock().consecutive_successes(&self.fast)
    }

    /// The current generation: it grows by one on every state change and
    /// on every reset.
    pub fn generation(&self) -> u64 {
        self.fast.generation()
    }

    /// Closes the breaker, clears its counts and its trip history (the next
    /// open lasts `open_timeout` again), and makes every outstanding permit
    /// stale. This is also how a forced-open breaker is released.
    pub fn reset(&self) {
        let transition = {
            let mut core = self.core.lock();
            let t = core.reset(&self.fast, self.clock.now());
            self.publish(&core);
            t
        };
        if let Some(t) = transition {
            self.announce(&t);
        }
    }

    /// Opens the breaker until [`CircuitBreaker::reset`], whatever happens:
    /// for maintenance, or to drain traffic away from an endpoint.
    pub fn force_open(&self) {
        let transition = {
            let mut core = self.core.lock();
            let t = core.force_open(&self.fast, self.clock.now());
            self.publish(&core);
            t
        };
        if let Some(t) = transition {
            self.announce(&t);
        }
    }

    /// The state and the counts since creation, read under the lock.
    ///
    /// Closed-state grants and successes and rejected calls are counted
    /// without the lock: the totals are exact for every call that has
    /// returned, and a call still running on another thread may or may not
    /// be in them yet.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = self.clock.now();
        self.core.lock().snapshot(&self.fast, now)
    }

    /// One log line, then the listeners; called with the lock released.
    fn announce(&self, t: &Transition) {
        let name = &self.name;
        let fields = Fields::new("breaker_transition").at(self.endpoint, t.to.as_str());
        let cooldown = t.open_for.unwrap_or_default();
        let failures = u64::from(self.config.failure_threshold);
        match t.to {
            BreakerState::Open => log_fields!(
                log::Level::Warn,
                fields
                    .error(t.reason.as_str(), "circuit breaker opened")
                    .count(match t.reason {
                        TransitionReason::ConsecutiveFailures => failures,
                        _ => 1,
                    }),
                cooldown_ms = millis(cooldown);
                "{name} opened ({}); next probe in {} ms",
                t.reason,
                cooldown.as_millis()
            ),
            BreakerState::ForcedOpen => log_fields!(
                log::Level::Warn,
                fields.error(t.reason.as_str(), "circuit breaker forced open");
                "{name} forced open"
            ),
            BreakerState::Closed => log_fields!(
                log::Level::Info,
                fields;
                "{name} closed ({})",
                t.reason
            ),
            BreakerState::HalfOpen => log::debug!(
                "{name} half-open: admitting up to {} probes",
                self.config.half_open_max_requests
            ),
        }
        for listener in &self.listeners {
            listener.on_transition(t);
        }
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.name)
            .field("state", &self.state())
            .field("config", &self.config)
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

/// Leave to make one call, granted by [`CircuitBreaker::try_acquire`].
///
/// Report the outcome with [`Permit::success`], [`Permit::failure`] or
/// [`Permit::ignore`]. Dropped without a verdict (a panic, an early
/// return), it releases its slot and counts as ignored.
#[must_use = "report the call's outcome, or drop the permit to ignore it"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    grant: Grant,
    settled: bool,
}

impl Permit<'_> {
    /// The call succeeded: the endpoint is healthy.
    pub fn success(mut self) -> Verdict {
        self.settle(Outcome::Success)
    }

    /// The call failed in a way that says the endpoint is unhealthy
    /// (connection lost, timeout, `LOADING`...).
    pub fn failure(mut self) -> Verdict {
        self.settle(Outcome::Failure)
    }

    /// The outcome says nothing about health (a `WRONGTYPE` reply, a call
    /// cancelled by the caller). Releases the slot, counts nothing.
    pub fn ignore(mut self) -> Verdict {
        self.settle(Outcome::Ignore)
    }

    /// [`Permit::failure`] when `error` counts against the breaker
    /// ([`Error::counts_against_breaker`]), [`Permit::ignore`] otherwise.
    pub fn record_error(self, error: &Error) -> Verdict {
        if error.counts_against_breaker() {
            self.failure()
        } else {
            self.ignore()
        }
    }

    /// The generation the permit was granted in.
    pub fn generation(&self) -> u64 {
        self.grant.generation
    }

    /// `true` for a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.grant.probe.is_some()
    }

    fn settle(&mut self, outcome: Outcome) -> Verdict {
        self.settled = true;
        self.breaker.settle(self.grant, outcome)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.settle(Outcome::Ignore);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &self.breaker.name)
            .field("generation", &self.grant.generation)
            .field("probe", &self.grant.probe.is_some())
            .finish()
    }
}

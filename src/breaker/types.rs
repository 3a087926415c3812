//! The breaker's public vocabulary: states, verdicts, rejections,
//! transitions, listeners and snapshots.

use std::fmt;
use std::time::{Duration, Instant};

use crate::Error;

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through; failures are counted.
    Closed,
    /// Calls are rejected until the open period has passed.
    Open,
    /// A bounded number of probe calls go through to test recovery.
    HalfOpen,
    /// Opened by [`CircuitBreaker::force_open`](crate::CircuitBreaker::force_open):
    /// calls are rejected until [`CircuitBreaker::reset`](crate::CircuitBreaker::reset).
    ForcedOpen,
}

impl BreakerState {
    /// A short lowercase name, as used in log lines and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::ForcedOpen => "forced_open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of a permit's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// A success or failure counted in the current state.
    Counted,
    /// An ignored outcome (or a permit dropped without a verdict); its
    /// half-open slot, if any, was released.
    Ignored,
    /// The permit came from an earlier generation (the breaker changed state
    /// since it was granted) or its probe slot was reclaimed after
    /// [`BreakerConfig::probe_timeout`](crate::BreakerConfig::probe_timeout):
    /// the verdict was dropped.
    Stale,
}

impl Verdict {
    /// `true` for [`Verdict::Stale`].
    pub fn is_stale(self) -> bool {
        self == Verdict::Stale
    }
}

/// A call refused by the breaker, without touching the network.
///
/// Converts into an [`Error`] of kind [`ErrorKind::CircuitOpen`](crate::ErrorKind::CircuitOpen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub(crate) state: BreakerState,
    pub(crate) retry_after: Duration,
}

impl Rejected {
    /// How long until the breaker may admit a call: the rest of the open
    /// period; while half-open and full, the time until the oldest probe's
    /// slot is reclaimed at the latest; while forced open (no scheduled
    /// end), the configured open timeout as a hint.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The state that refused the call.
    pub fn state(&self) -> BreakerState {
        self.state
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // u64 formats faster than the u128 of `as_millis` and never
        // saturates in practice (585 million years).
        let ms = u64::try_from(self.retry_after.as_millis()).unwrap_or(u64::MAX);
        write!(f, "circuit breaker is {} (retry after {ms} ms)", self.state)
    }
}

impl std::error::Error for Rejected {}

impl From<Rejected> for Error {
    /// A transient [`ErrorKind::CircuitOpen`](crate::ErrorKind::CircuitOpen) error that does not count
    /// against the breaker, certainly did not execute, and carries
    /// [`Rejected::retry_after`].
    fn from(r: Rejected) -> Self {
        Error::rejected(r)
    }
}

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransitionReason {
    /// `failure_threshold` consecutive failures while closed.
    ConsecutiveFailures,
    /// The failure-rate rule tripped while closed.
    FailureRate,
    /// The open period passed and a call asked for a permit.
    OpenTimeoutElapsed,
    /// A half-open probe failed.
    ProbeFailed,
    /// `success_threshold` consecutive half-open probes succeeded.
    ProbesSucceeded,
    /// [`CircuitBreaker::force_open`](crate::CircuitBreaker::force_open).
    Forced,
    /// [`CircuitBreaker::reset`](crate::CircuitBreaker::reset).
    Reset,
}

impl TransitionReason {
    /// A short lowercase name, as used in log lines and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionReason::ConsecutiveFailures => "consecutive_failures",
            TransitionReason::FailureRate => "failure_rate",
            TransitionReason::OpenTimeoutElapsed => "open_timeout_elapsed",
            TransitionReason::ProbeFailed => "probe_failed",
            TransitionReason::ProbesSucceeded => "probes_succeeded",
            TransitionReason::Forced => "forced",
            TransitionReason::Reset => "reset",
        }
    }
}

impl fmt::Display for TransitionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One state change, as told to a [`BreakerListener`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transition {
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// Why.
    pub reason: TransitionReason,
    /// When, by the breaker's clock.
    pub at: Instant,
    /// The generation that starts with this transition. Listeners run on
    /// the thread that caused the change, so two transitions can reach a
    /// listener out of order; the generation orders them.
    pub generation: u64,
    /// For a transition to [`BreakerState::Open`], how long it stays open.
    pub open_for: Option<Duration>,
}

/// Hears about breaker state changes. Every method has a no-op default.
///
/// Called after the breaker's lock is released, on the thread whose call
/// caused the change, so a listener may call back into the breaker. Keep it
/// quick: it runs inside a caller's request.
pub trait BreakerListener: Send + Sync {
    /// The breaker changed state.
    fn on_transition(&self, transition: &Transition) {
        let _ = transition;
    }
}

/// A point-in-time view of a breaker. `#[non_exhaustive]`: more fields may
/// come.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The current state (an elapsed open period shows as `Open` until the
    /// next [`try_acquire`](crate::CircuitBreaker::try_acquire)).
    pub state: BreakerState,
    /// The current generation; it grows by one on every state change and
    /// reset.
    pub generation: u64,
    /// Consecutive failures counted in the current state.
    pub consecutive_failures: u32,
    /// Consecutive successes counted in the current state (see
    /// [`CircuitBreaker::success_count`](crate::CircuitBreaker::success_count)
    /// for how closed-state successes racing a failure are counted).
    pub consecutive_successes: u32,
    /// Half-open probes outstanding.
    pub probes_in_flight: u32,
    /// While open, the length of the current open period (after backoff and
    /// jitter).
    pub open_for: Option<Duration>,
    /// While open, the time left in it.
    pub retry_after: Option<Duration>,
    /// Permits granted since creation.
    pub calls: u64,
    /// Successes counted since creation.
    pub successes: u64,
    /// Failures counted since creation.
    pub failures: u64,
    /// Ignored verdicts and permits dropped without one, since creation.
    pub ignored: u64,
    /// Stale verdicts dropped since creation.
    pub stale: u64,
    /// Calls rejected since creation.
    pub rejections: u64,
    /// Times the breaker opened (including forced opens) since creation.
    pub opens: u64,
    /// Half-open probe slots reclaimed after `probe_timeout` since creation.
    pub reclaimed: u64,
}

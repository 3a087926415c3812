//! The state machine behind the lock: plain data, time passed in.
//!
//! Every method runs inside the breaker's critical section, so each does a
//! bounded amount of work and never calls out (no logging, no listeners):
//! transitions are returned for the caller to announce after unlocking.
//! The counts made without the lock live in [`Fast`]; [`Core::word`] is what
//! the caller publishes there after each method.

use std::time::{Duration, Instant};

use super::config::BreakerConfig;
use super::fast::{pack, Fast};
use super::types::{
    BreakerSnapshot, BreakerState, Rejected, Transition, TransitionReason, Verdict,
};
use crate::clock::Clock;
use crate::jitter::Jitter;

/// Buckets of the failure-rate window.
const BUCKETS: u64 = 10;

/// The verdict a permit reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failure,
    Ignore,
}

/// What a granted permit must remember.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grant {
    pub(crate) generation: u64,
    /// Set for half-open probes: identifies the slot.
    pub(crate) probe: Option<u64>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Bucket {
    index: u64,
    calls: u32,
    failures: u32,
}

/// Calls and failures over a sliding window of `BUCKETS` buckets.
#[derive(Debug)]
struct Window {
    origin: Instant,
    bucket_nanos: u64,
    buckets: [Bucket; BUCKETS as usize],
}

impl Window {
    fn new(origin: Instant, window: Duration) -> Self {
        let nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        Window {
            origin,
            bucket_nanos: (nanos / BUCKETS).max(1),
            buckets: [Bucket::default(); BUCKETS as usize],
        }
    }

    fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS as usize];
    }

    fn index(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since / u128::from(self.bucket_nanos)).unwrap_or(u64::MAX)
    }

    /// Records one call; returns the window's (calls, failures).
    fn record(&mut self, now: Instant, failed: bool) -> (u64, u64) {
        let index = self.index(now);
        let b = &mut self.buckets[(index % BUCKETS) as usize];
        if b.index != index {
            *b = Bucket {
                index,
                calls: 0,
                failures: 0,
            };
        }
        b.calls = b.calls.saturating_add(1);
        b.failures = b.failures.saturating_add(u32::from(failed));
        self.buckets
            .iter()
            .filter(|b| b.index <= index && b.index.saturating_add(BUCKETS) > index)
            .fold((0, 0), |(c, f), b| {
                (c + u64::from(b.calls), f + u64::from(b.failures))
            })
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    calls: u64,
    successes: u64,
    failures: u64,
    ignored: u64,
    stale: u64,
    rejections: u64,
    opens: u64,
    reclaimed: u64,
}

#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) state: BreakerState,
    pub(crate) generation: u64,
    pub(crate) failures: u32,
    /// Consecutive successes counted under the lock; while closed, the
    /// lock-free ones since `fast_base` are added (see
    /// [`Core::consecutive_successes`]).
    pub(crate) successes: u32,
    /// [`Fast::successes`] when the consecutive count last restarted.
    fast_base: u64,
    /// Consecutive opens without closing in between (drives backoff).
    trips: u32,
    open_until: Instant,
    open_for: Duration,
    /// Outstanding half-open probes: (id, deadline).
    probes: Vec<(u64, Instant)>,
    next_probe: u64,
    window: Option<Window>,
    counters: Counters,
}

impl Core {
    pub(crate) fn new(config: &BreakerConfig, now: Instant) -> Self {
        Core {
            state: BreakerState::Closed,
            generation: 0,
            failures: 0,
            successes: 0,
            fast_base: 0,
            trips: 0,
            open_until: now,
            open_for: Duration::ZERO,
            // Reserved up front so that half-open never allocates.
            probes: Vec::with_capacity(config.half_open_max_requests.min(1024) as usize),
            next_probe: 0,
            window: config
                .failure_rate
                .as_ref()
                .map(|r| Window::new(now, r.window)),
            counters: Counters::default(),
        }
    }

    /// The word to publish in [`Fast`]: state, generation, and whether a
    /// closed-state success may be counted without the lock (no failure
    /// counted, no rate window to update).
    pub(crate) fn word(&self) -> u64 {
        let clean =
            self.state == BreakerState::Closed && self.failures == 0 && self.window.is_none();
        pack(self.state, self.generation, clean)
    }

    /// The end of the open period while open, for [`Fast::publish`].
    pub(crate) fn open_until(&self) -> Option<Instant> {
        (self.state == BreakerState::Open).then_some(self.open_until)
    }

    /// Consecutive successes in the current state. While closed, successes
    /// counted without the lock are included; a failure always leaves 0
    /// (successes that raced it are ordered before it).
    pub(crate) fn consecutive_successes(&self, fast: &Fast) -> u32 {
        if self.state != BreakerState::Closed {
            return self.successes;
        }
        if self.failures > 0 {
            return 0;
        }
        let lock_free = fast.successes().saturating_sub(self.fast_base);
        let lock_free = u32::try_from(lock_free).unwrap_or(u32::MAX);
        self.successes.saturating_add(lock_free)
    }

    /// The closed-state grant under the lock: no clock read.
    #[inline]
    pub(crate) fn try_grant_closed(&mut self) -> Option<Grant> {
        (self.state == BreakerState::Closed).then(|| {
            self.counters.calls += 1;
            Grant {
                generation: self.generation,
                probe: None,
            }
        })
    }

    pub(crate) fn acquire(
        &mut self,
        config: &BreakerConfig,
        fast: &Fast,
        now: Instant,
    ) -> (Result<Grant, Rejected>, Option<Transition>) {
        let mut transition = None;
        match self.state {
            BreakerState::Closed => {
                if let Some(g) = self.try_grant_closed() {
                    return (Ok(g), None);
                }
            }
            BreakerState::ForcedOpen => {
                return (Err(self.reject(config.open_timeout)), None);
            }
            BreakerState::Open => {
                if now < self.open_until {
                    let left = self.open_until - now;
                    return (Err(self.reject(left)), None);
                }
                transition = Some(self.enter(
                    fast,
                    BreakerState::HalfOpen,
                    TransitionReason::OpenTimeoutElapsed,
                    now,
                ));
            }
            BreakerState::HalfOpen => {}
        }
        // Half-open: reclaim hung probes, then admit if a slot is free.
        let before = self.probes.len();
        self.probes.retain(|&(_, deadline)| deadline > now);
        self.counters.reclaimed += (before - self.probes.len()) as u64;
        if self.probes.len() < config.half_open_max_requests as usize {
            let id = self.next_probe;
            self.next_probe += 1;
            let deadline = now.checked_add(config.probe_timeout).unwrap_or(now);
            self.probes.push((id, deadline));
            self.counters.calls += 1;
            let grant = Grant {
                generation: self.generation,
                probe: Some(id),
            };
            return (Ok(grant), transition);
        }
        let oldest = self.probes.iter().map(|&(_, d)| d).min().unwrap_or(now);
        let rejected = self.reject(oldest.saturating_duration_since(now));
        (Err(rejected), transition)
    }

    fn reject(&mut self, retry_after: Duration) -> Rejected {
        self.counters.rejections += 1;
        Rejected {
            state: self.state,
            retry_after,
        }
    }

    pub(crate) fn settle(
        &mut self,
        config: &BreakerConfig,
        fast: &Fast,
        jitter: &Jitter,
        clock: &dyn Clock,
        grant: Grant,
        outcome: Outcome,
    ) -> (Verdict, Option<Transition>) {
        if grant.generation != self.generation {
            return (self.stale(), None);
        }
        match (self.state, grant.probe) {
            (BreakerState::Closed, None) => {
                self.settle_closed(config, fast, jitter, clock, outcome)
            }
            (BreakerState::HalfOpen, Some(id)) => {
                let Some(pos) = self.probes.iter().position(|&(p, _)| p == id) else {
                    return (self.stale(), None); // reclaimed after probe_timeout
                };
                self.probes.swap_remove(pos);
                self.settle_half_open(config, fast, jitter, clock, outcome)
            }
            // Permits are never granted in these combinations; be safe anyway.
            _ => (self.stale(), None),
        }
    }

    fn stale(&mut self) -> Verdict {
        self.counters.stale += 1;
        Verdict::Stale
    }

    fn settle_closed(
        &mut self,
        config: &BreakerConfig,
        fast: &Fast,
        jitter: &Jitter,
        clock: &dyn Clock,
        outcome: Outcome,
    ) -> (Verdict, Option<Transition>) {
        let failed = match outcome {
            Outcome::Ignore => {
                self.counters.ignored += 1;
                return (Verdict::Ignored, None);
            }
            Outcome::Success => {
                self.counters.successes += 1;
                self.successes = self.successes.saturating_add(1);
                self.failures = 0;
                false
            }
            Outcome::Failure => {
                self.counters.failures += 1;
                self.failures = self.failures.saturating_add(1);
                self.successes = 0;
                self.fast_base = fast.successes();
                true
            }
        };
        // The clock is read only when needed: rate rule on, or a trip.
        let mut now = None;
        let mut rate_tripped = false;
        if let (Some(window), Some(rule)) = (&mut self.window, &config.failure_rate) {
            let t = clock.now();
            now = Some(t);
            let (calls, fails) = window.record(t, failed);
            rate_tripped = failed
                && calls >= u64::from(rule.min_calls)
                && fails as f64 >= rule.threshold * calls as f64;
        }
        let reason = if failed && self.failures >= config.failure_threshold {
            TransitionReason::ConsecutiveFailures
        } else if rate_tripped {
            TransitionReason::FailureRate
        } else {
            return (Verdict::Counted, None);
        };
        let now = now.unwrap_or_else(|| clock.now());
        (
            Verdict::Counted,
            Some(self.open(config, fast, jitter, now, reason)),
        )
    }

    fn settle_half_open(
        &mut self,
        config: &BreakerConfig,
        fast: &Fast,
        jitter: &Jitter,
        clock: &dyn Clock,
        outcome: Outcome,
    ) -> (Verdict, Option<Transition>) {
        match outcome {
            Outcome::Ignore => {
                self.counters.ignored += 1;
                (Verdict::Ignored, None)
            }
            Outcome::Failure => {
                self.counters.failures += 1;
                let t = self.open(
                    config,
                    fast,
                    jitter,
                    clock.now(),
                    TransitionReason::ProbeFailed,
                );
                (Verdict::Counted, Some(t))
            }
            Outcome::Success => {
                self.counters.successes += 1;
                self.successes = self.successes.saturating_add(1);
                if self.successes < config.success_threshold {
                    return (Verdict::Counted, None);
                }
                self.trips = 0;
                let t = self.enter(
                    fast,
                    BreakerState::Closed,
                    TransitionReason::ProbesSucceeded,
                    clock.now(),
                );
                (Verdict::Counted, Some(t))
            }
        }
    }

    fn open(
        &mut self,
        config: &BreakerConfig,
        fast: &Fast,
        jitter: &Jitter,
        now: Instant,
        reason: TransitionReason,
    ) -> Transition {
        self.trips = self.trips.saturating_add(1);
        let base = config.open_period(self.trips);
        let share = config.backoff.as_ref().map_or(0.0, |b| b.jitter);
        self.open_for = if share > 0.0 {
            let keep = 1.0 - share * jitter.unit();
            Duration::try_from_secs_f64(base.as_secs_f64() * keep).unwrap_or(base)
        } else {
            base
        };
        self.open_until = now.checked_add(self.open_for).unwrap_or(now);
        self.counters.opens += 1;
        let mut t = self.enter(fast, BreakerState::Open, reason, now);
        t.open_for = Some(self.open_for);
        t
    }

    /// Moves to `to`, starting a new generation with fresh counts.
    fn enter(
        &mut self,
        fast: &Fast,
        to: BreakerState,
        reason: TransitionReason,
        now: Instant,
    ) -> Transition {
        let from = self.state;
        self.state = to;
        self.generation += 1;
        self.failures = 0;
        self.successes = 0;
        self.fast_base = fast.successes();
        self.probes.clear();
        if let Some(w) = &mut self.window {
            w.clear();
        }
        Transition {
            from,
            to,
            reason,
            at: now,
            generation: self.generation,
            open_for: None,
        }
    }

    /// Closes and forgets the trip history. A transition is returned only
    /// if the state changed; the generation moves on in any case, so
    /// permits granted before the reset become stale.
    pub(crate) fn reset(&mut self, fast: &Fast, now: Instant) -> Option<Transition> {
        let from = self.state;
        self.trips = 0;
        let t = self.enter(fast, BreakerState::Closed, TransitionReason::Reset, now);
        (from != BreakerState::Closed).then_some(t)
    }

    pub(crate) fn force_open(&mut self, fast: &Fast, now: Instant) -> Option<Transition> {
        if self.state == BreakerState::ForcedOpen {
            return None;
        }
        self.counters.opens += 1;
        Some(self.enter(
            fast,
            BreakerState::ForcedOpen,
            TransitionReason::Forced,
            now,
        ))
    }

    /// The lock-free counts are added in: exact for every call that has
    /// returned.
    pub(crate) fn snapshot(&self, fast: &Fast, now: Instant) -> BreakerSnapshot {
        let open = self.state == BreakerState::Open;
        let c = &self.counters;
        let f = fast.counts();
        BreakerSnapshot {
            state: self.state,
            generation: self.generation,
            consecutive_failures: self.failures,
            consecutive_successes: self.consecutive_successes(fast),
            probes_in_flight: self.probes.len() as u32,
            open_for: open.then_some(self.open_for),
            retry_after: open.then(|| self.open_until.saturating_duration_since(now)),
            calls: c.calls + f.calls,
            successes: c.successes + f.successes,
            failures: c.failures,
            ignored: c.ignored,
            stale: c.stale,
            rejections: c.rejections + f.rejections,
            opens: c.opens,
            reclaimed: c.reclaimed,
        }
    }
}

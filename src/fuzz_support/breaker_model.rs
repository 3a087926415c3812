//! A plain reference model of the circuit breaker, and the step-by-step
//! check of a real breaker against it. Used by the `breaker` fuzz target and
//! by the proptest in `tests/breaker_model.rs`.
//!
//! The model is written for clarity, not speed: the rate window is a list of
//! (bucket, failed) events, the open period is recomputed by repeated
//! multiplication, and the jittered period is accepted if it lies in the
//! documented range (the model then adopts the breaker's value).

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::{
    BreakerConfig, BreakerListener, BreakerState, CircuitBreaker, Clock, ManualClock, Permit,
    Transition, TransitionReason, Verdict,
};

/// One step of a breaker scenario. Permit indexes wrap around the permits
/// currently held; with none held the step does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerOp {
    /// `try_acquire`; a granted permit is held.
    Acquire,
    /// Report success on a held permit.
    Success(u8),
    /// Report failure on a held permit.
    Failure(u8),
    /// Report an ignored outcome on a held permit.
    Ignore(u8),
    /// Drop a held permit without a verdict.
    Drop(u8),
    /// Advance the clock by this many milliseconds.
    Advance(u16),
    /// `reset()`.
    Reset,
    /// `force_open()`.
    ForceOpen,
}

#[derive(Debug, Clone, Copy)]
struct ModelPermit {
    generation: u64,
    probe: Option<u64>,
}

#[derive(Debug, Default)]
struct Counts {
    calls: u64,
    successes: u64,
    failures: u64,
    ignored: u64,
    stale: u64,
    rejections: u64,
    opens: u64,
    reclaimed: u64,
}

struct Model {
    cfg: BreakerConfig,
    origin: Instant,
    state: BreakerState,
    generation: u64,
    failures: u32,
    successes: u32,
    trips: u32,
    open_until: Instant,
    open_for: Duration,
    probes: Vec<(u64, Instant)>,
    next_probe: u64,
    events: Vec<(u128, bool)>,
    counts: Counts,
    /// Transitions the breaker must have announced since the last check.
    expected: Vec<(BreakerState, BreakerState, TransitionReason)>,
}

impl Model {
    fn enter(&mut self, to: BreakerState, reason: TransitionReason) {
        self.expected.push((self.state, to, reason));
        self.state = to;
        self.generation += 1;
        self.failures = 0;
        self.successes = 0;
        self.probes.clear();
        self.events.clear();
    }

    /// Opens; the breaker's jittered period is checked against the range
    /// and adopted.
    fn open(&mut self, now: Instant, reason: TransitionReason, actual: Option<Duration>) {
        self.trips += 1;
        let mut nominal = self.cfg.open_timeout;
        let mut jitter = 0.0;
        if let Some(b) = &self.cfg.backoff {
            for _ in 1..self.trips.min(2000) {
                let grown = nominal.as_secs_f64() * b.multiplier;
                nominal = Duration::try_from_secs_f64(grown)
                    .unwrap_or(b.max_open_timeout)
                    .min(b.max_open_timeout);
            }
            jitter = b.jitter;
        }
        let Some(actual) = actual else {
            panic!("breaker did not open ({reason:?})");
        };
        let tolerance = Duration::from_micros(1) + nominal / 1_000_000;
        let lowest = nominal.mul_f64(1.0 - jitter).saturating_sub(tolerance);
        assert!(
            actual >= lowest && actual <= nominal + tolerance,
            "open period {actual:?} outside {lowest:?}..={nominal:?}"
        );
        self.open_for = actual;
        self.open_until = now + actual;
        self.counts.opens += 1;
        self.enter(BreakerState::Open, reason);
    }

    fn acquire(&mut self, now: Instant) -> Result<ModelPermit, (BreakerState, Duration)> {
        match self.state {
            BreakerState::Closed => {
                self.counts.calls += 1;
                return Ok(ModelPermit {
                    generation: self.generation,
                    probe: None,
                });
            }
            BreakerState::ForcedOpen => {
                self.counts.rejections += 1;
                return Err((BreakerState::ForcedOpen, self.cfg.open_timeout));
            }
            BreakerState::Open if now < self.open_until => {
                self.counts.rejections += 1;
                return Err((BreakerState::Open, self.open_until - now));
            }
            BreakerState::Open => {
                self.enter(BreakerState::HalfOpen, TransitionReason::OpenTimeoutElapsed)
            }
            BreakerState::HalfOpen => {}
        }
        let before = self.probes.len();
        self.probes.retain(|p| p.1 > now);
        self.counts.reclaimed += (before - self.probes.len()) as u64;
        if self.probes.len() < self.cfg.half_open_max_requests as usize {
            let id = self.next_probe;
            self.next_probe += 1;
            self.probes.push((id, now + self.cfg.probe_timeout));
            self.counts.calls += 1;
            return Ok(ModelPermit {
                generation: self.generation,
                probe: Some(id),
            });
        }
        self.counts.rejections += 1;
        let mut oldest = self.probes[0].1;
        for p in &self.probes {
            if p.1 < oldest {
                oldest = p.1;
            }
        }
        Err((BreakerState::HalfOpen, oldest - now))
    }

    /// `outcome`: Some(true) success, Some(false) failure, None ignore.
    fn settle(
        &mut self,
        p: ModelPermit,
        outcome: Option<bool>,
        now: Instant,
        actual_open_for: impl Fn() -> Option<Duration>,
    ) -> Verdict {
        if p.generation != self.generation {
            self.counts.stale += 1;
            return Verdict::Stale;
        }
        if self.state == BreakerState::HalfOpen {
            let Some(pos) = self.probes.iter().position(|q| Some(q.0) == p.probe) else {
                self.counts.stale += 1;
                return Verdict::Stale;
            };
            self.probes.remove(pos);
        } else if self.state != BreakerState::Closed || p.probe.is_some() {
            self.counts.stale += 1;
            return Verdict::Stale;
        }
        let Some(ok) = outcome else {
            self.counts.ignored += 1;
            return Verdict::Ignored;
        };
        if ok {
            self.counts.successes += 1;
            self.successes += 1;
            self.failures = 0;
        } else {
            self.counts.failures += 1;
            self.failures += 1;
            self.successes = 0;
        }
        if self.state == BreakerState::HalfOpen {
            if !ok {
                self.open(now, TransitionReason::ProbeFailed, actual_open_for());
            } else if self.successes >= self.cfg.success_threshold {
                self.trips = 0;
                self.enter(BreakerState::Closed, TransitionReason::ProbesSucceeded);
            }
            return Verdict::Counted;
        }
        let mut rate_tripped = false;
        if let Some(rule) = self.cfg.failure_rate.clone() {
            let bucket_len = (rule.window.as_nanos() / 10).max(1);
            let bucket = (now - self.origin).as_nanos() / bucket_len;
            self.events.push((bucket, !ok));
            self.events.retain(|e| e.0 + 10 > bucket);
            let calls = self.events.len() as f64;
            let fails = self.events.iter().filter(|e| e.1).count() as f64;
            rate_tripped =
                !ok && calls >= f64::from(rule.min_calls) && fails >= rule.threshold * calls;
        }
        if !ok && self.failures >= self.cfg.failure_threshold {
            self.open(
                now,
                TransitionReason::ConsecutiveFailures,
                actual_open_for(),
            );
        } else if rate_tripped {
            self.open(now, TransitionReason::FailureRate, actual_open_for());
        }
        Verdict::Counted
    }
}

#[derive(Default)]
struct Heard(Mutex<Vec<(BreakerState, BreakerState, TransitionReason)>>);

impl BreakerListener for Heard {
    fn on_transition(&self, t: &Transition) {
        self.0.lock().push((t.from, t.to, t.reason));
    }
}

/// Runs `ops` against a breaker built from `config` (jitter seeded with
/// `seed`) on a manual clock and against the model, comparing results,
/// announced transitions and the snapshot after every step. Panics on the
/// first difference.
pub fn check_breaker_case(config: &BreakerConfig, seed: u64, ops: &[BreakerOp]) {
    let clock = ManualClock::new();
    let heard = Arc::new(Heard::default());
    let breaker = CircuitBreaker::new(config.clone(), clock.shared())
        .with_jitter_seed(seed)
        .with_listener(heard.clone());
    let now = clock.now();
    let mut m = Model {
        cfg: breaker.config().clone(),
        origin: now,
        state: BreakerState::Closed,
        generation: 0,
        failures: 0,
        successes: 0,
        trips: 0,
        open_until: now,
        open_for: Duration::ZERO,
        probes: Vec::new(),
        next_probe: 0,
        events: Vec::new(),
        counts: Counts::default(),
        expected: Vec::new(),
    };
    let mut held: Vec<(Permit<'_>, ModelPermit)> = Vec::new();
    let open_for = || breaker.snapshot().open_for;
    for (step, op) in ops.iter().enumerate() {
        let now = clock.now();
        match *op {
            BreakerOp::Acquire => match (breaker.try_acquire(), m.acquire(now)) {
                (Ok(p), Ok(mp)) => {
                    assert_eq!(p.generation(), mp.generation, "step {step}");
                    assert_eq!(p.is_probe(), mp.probe.is_some(), "step {step}");
                    held.push((p, mp));
                }
                (Err(r), Err((state, after))) => {
                    assert_eq!((r.state(), r.retry_after()), (state, after), "step {step}");
                }
                (got, want) => panic!("step {step}: breaker {got:?}, model {want:?}"),
            },
            BreakerOp::Success(i)
            | BreakerOp::Failure(i)
            | BreakerOp::Ignore(i)
            | BreakerOp::Drop(i) => {
                if held.is_empty() {
                    continue;
                }
                let (p, mp) = held.swap_remove(usize::from(i) % held.len());
                let (got, outcome) = match *op {
                    BreakerOp::Success(_) => (p.success(), Some(true)),
                    BreakerOp::Failure(_) => (p.failure(), Some(false)),
                    BreakerOp::Ignore(_) => (p.ignore(), None),
                    _ => {
                        drop(p);
                        (Verdict::Ignored, None)
                    }
                };
                let want = m.settle(mp, outcome, now, open_for);
                if !matches!(op, BreakerOp::Drop(_)) {
                    assert_eq!(got, want, "step {step}: {op:?}");
                }
            }
            BreakerOp::Advance(ms) => clock.advance(Duration::from_millis(u64::from(ms))),
            BreakerOp::Reset => {
                breaker.reset();
                let from = m.state;
                m.trips = 0;
                m.enter(BreakerState::Closed, TransitionReason::Reset);
                if from == BreakerState::Closed {
                    m.expected.pop();
                }
            }
            BreakerOp::ForceOpen => {
                breaker.force_open();
                if m.state != BreakerState::ForcedOpen {
                    m.counts.opens += 1;
                    m.enter(BreakerState::ForcedOpen, TransitionReason::Forced);
                }
            }
        }
        compare(&breaker, &m, clock.now(), step, op);
        let heard: Vec<_> = std::mem::take(&mut *heard.0.lock());
        assert_eq!(
            heard,
            std::mem::take(&mut m.expected),
            "step {step}: {op:?}"
        );
    }
}

fn compare(b: &CircuitBreaker, m: &Model, now: Instant, step: usize, op: &BreakerOp) {
    let s = b.snapshot();
    let c = &m.counts;
    let open = m.state == BreakerState::Open;
    let want = (
        (
            m.state,
            m.generation,
            m.failures,
            m.successes,
            m.probes.len() as u32,
        ),
        (
            open.then_some(m.open_for),
            open.then(|| m.open_until.saturating_duration_since(now)),
        ),
        (c.calls, c.successes, c.failures, c.ignored, c.stale),
        (c.rejections, c.opens, c.reclaimed),
    );
    let got = (
        (
            s.state,
            s.generation,
            s.consecutive_failures,
            s.consecutive_successes,
            s.probes_in_flight,
        ),
        (s.open_for, s.retry_after),
        (s.calls, s.successes, s.failures, s.ignored, s.stale),
        (s.rejections, s.opens, s.reclaimed),
    );
    assert_eq!(got, want, "step {step}: after {op:?}");
    assert!(s.probes_in_flight <= m.cfg.half_open_max_requests);
}

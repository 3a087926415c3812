//! Time as data: every timer in the crate reads a [`Clock`].
//!
//! The breaker's open timeout, the pool's idle and lifetime expiry, retry
//! backoff and fallback TTLs all ask a `Clock` for `now()` (and retry sleeps
//! through it), so tests drive hours of behaviour with a [`ManualClock`] in
//! microseconds and never sleep.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A monotonic source of time, and a way to wait on it.
///
/// Implementations must be cheap: `now()` is called on every command.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant. Never goes backwards.
    fn now(&self) -> Instant;

    /// Waits for `duration`. The system clock sleeps the thread; the manual
    /// clock advances itself instead, so code under test never blocks.
    fn sleep(&self, duration: Duration);
}

/// A shared, dynamically chosen clock, as held by every component.
pub type SharedClock = Arc<dyn Clock>;

/// The real clock: [`Instant::now`] and [`std::thread::sleep`].
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl SystemClock {
    /// The system clock behind an `Arc`, ready to hand to a component.
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// A clock whose time moves only when it is told to.
///
/// Cloning shares the same time: advance one handle and every component
/// holding a clone sees it. [`Clock::sleep`] advances the clock by the
/// requested duration and returns at once.
///
/// Time saturates [`ManualClock::MAX_ELAPSED`] after the clock's start:
/// advancing further (even by [`Duration::MAX`]) stops there instead of
/// panicking, and the crate's timers, whose durations are all bounded by
/// the configuration limits, can still add to that instant.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use resilient_redis::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let start = clock.now();
/// clock.advance(Duration::from_secs(3600));
/// assert_eq!(clock.now() - start, Duration::from_secs(3600));
/// clock.sleep(Duration::from_millis(5));
/// assert_eq!(clock.elapsed(), Duration::from_millis(3_600_005));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: Instant,
    offset: Arc<Mutex<Duration>>,
}

impl ManualClock {
    /// How far a manual clock can be advanced: 100 years (of 365 days).
    /// Every `Instant` the platforms Rust supports can represent its start
    /// plus this plus the longest duration a configuration allows.
    pub const MAX_ELAPSED: Duration = Duration::from_secs(100 * 365 * 86_400);

    /// A manual clock that starts at the current instant and stands still.
    pub fn new() -> Self {
        ManualClock {
            start: Instant::now(),
            offset: Arc::new(Mutex::new(Duration::ZERO)),
        }
    }

    /// Moves time forward by `by`, up to [`ManualClock::MAX_ELAPSED`] after
    /// the clock's start (never panics, whatever `by` is).
    pub fn advance(&self, by: Duration) {
        let mut offset = self.offset.lock();
        *offset = offset.saturating_add(by).min(Self::MAX_ELAPSED);
    }

    /// How far this clock has been advanced since it was created.
    pub fn elapsed(&self) -> Duration {
        *self.offset.lock()
    }

    /// This clock behind an `Arc`, ready to hand to a component; the
    /// returned handle shares time with `self`.
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        saturating_add(self.start, *self.offset.lock())
    }

    fn sleep(&self, duration: Duration) {
        self.advance(duration);
    }
}

/// `now + by`, or the latest instant after `now` that an [`Instant`] can
/// represent when `now + by` cannot be (the bound is platform-specific, so
/// it is found by bisection; that only happens for absurd durations).
/// Never panics.
pub(crate) fn saturating_add(now: Instant, by: Duration) -> Instant {
    if let Some(t) = now.checked_add(by) {
        return t;
    }
    // Invariant: `now + ok` is representable, `now + too_far` is not.
    let (mut ok, mut too_far) = (Duration::ZERO, by);
    while too_far.saturating_sub(ok) > Duration::from_nanos(1) {
        let mid = ok.saturating_add(too_far.saturating_sub(ok) / 2);
        if now.checked_add(mid).is_some() {
            ok = mid;
        } else {
            too_far = mid;
        }
    }
    now.checked_add(ok).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::from_millis(250));
        assert_eq!(clock.now() - t0, Duration::from_millis(250));
    }

    #[test]
    fn clones_share_time() {
        let clock = ManualClock::new();
        let shared = clock.shared();
        let t0 = shared.now();
        clock.advance(Duration::from_secs(10));
        assert_eq!(shared.now() - t0, Duration::from_secs(10));
        shared.sleep(Duration::from_secs(1));
        assert_eq!(clock.elapsed(), Duration::from_secs(11));
    }

    #[test]
    fn manual_clock_saturates_instead_of_panicking() {
        let clock = ManualClock::new();
        let t0 = clock.now();
        clock.advance(Duration::MAX);
        clock.advance(Duration::MAX);
        assert_eq!(clock.elapsed(), ManualClock::MAX_ELAPSED);
        assert_eq!(clock.now() - t0, ManualClock::MAX_ELAPSED);
        clock.sleep(Duration::MAX);
        assert_eq!(clock.now() - t0, ManualClock::MAX_ELAPSED);
        // The crate's longest configurable duration still fits after it.
        assert!(clock
            .now()
            .checked_add(Duration::from_secs(10 * 365 * 86_400))
            .is_some());
    }

    #[test]
    fn saturating_add_stops_at_the_last_representable_instant() {
        let now = Instant::now();
        assert_eq!(
            saturating_add(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        let end = saturating_add(now, Duration::MAX);
        assert!(end > now);
        // Nothing, not even a nanosecond, fits after it.
        assert_eq!(end.checked_add(Duration::from_nanos(1)), None);
        assert_eq!(saturating_add(end, Duration::MAX), end);
        assert_eq!(saturating_add(end, Duration::ZERO), end);
    }

    #[test]
    fn system_clock_is_monotonic() {
        let clock = SystemClock;
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
    }
}

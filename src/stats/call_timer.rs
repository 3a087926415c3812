//! Timing a call for the duration histogram without clock reads of its own.
//!
//! A clock read costs about 22 ns on the machines we measure on, and the
//! histogram's budget is 20 ns a call, while the call path already reads
//! the clock twice: the pool needs "now" at checkout (the checkout
//! deadline, idle expiry) and at checkin (the connection's last use). So
//! the two are shared, through two thread-local cells:
//!
//! - [`CallTimer::start`] reads the clock once when the call begins and
//!   leaves that instant for the call's first checkout
//!   ([`checkout_now`]), which would otherwise read the clock itself, and
//!   for the breaker's check before it ([`call_start`]): a call the open
//!   breaker refuses reads no clock of its own;
//! - the pool reports each checkin's instant ([`checked_in`]), and
//!   [`CallTimer::finish`] takes the last one as the call's end, unless the
//!   call went on after it: a later checkout or a retry ([`resumed`])
//!   forgets it.
//!
//! A call served from memory ends at the instant read for the store
//! ([`CallTimer::finish`]'s `served_at`): the store's work after it (its
//! locks and a copy) is not timed, as the reply's decoding after a checkin
//! is not. Any other call that did not end
//! at a checkin (failed before a checkout, a failed checkout after a
//! backoff) reads the clock at the end instead. The
//! measured duration stops when the connection went back to the pool: the
//! reply is decoded a few hundred nanoseconds later, far below the first
//! bucket (50 µs).
//!
//! Calls nest on one thread (a `get_or_load` loader may call the client):
//! each timer saves the cells on start and restores them when dropped
//! (after `finish`, or during a panic), so an inner call's checkin never
//! ends the outer call and no stale start outlives its call.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::clock::Clock;

thread_local! {
    /// The running call's start, until its first checkout takes it.
    static START: Cell<Option<Instant>> = const { Cell::new(None) };
    /// The running call's last checkin.
    static END: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Times one call on this thread; see the module docs.
#[must_use = "a timer measures nothing until finish"]
pub(crate) struct CallTimer {
    start: Instant,
    /// The enclosing call's cells, put back by `finish`.
    outer: (Option<Instant>, Option<Instant>),
}

impl CallTimer {
    /// Reads `clock` once: the call's start, and the first checkout's now.
    pub(crate) fn start(clock: &dyn Clock) -> CallTimer {
        let start = clock.now();
        let outer = (START.replace(Some(start)), END.replace(None));
        CallTimer { start, outer }
    }

    /// How long the call took: to `served_at` when the in-memory store
    /// served it (read for the store, after every checkin), else to its
    /// last checkin, or to now (read from `clock`) when it checked nothing
    /// in.
    pub(crate) fn finish(self, clock: &dyn Clock, served_at: Option<Instant>) -> Duration {
        served_at
            .or_else(|| END.get())
            .unwrap_or_else(|| clock.now())
            .saturating_duration_since(self.start)
        // Dropped here: the cells are restored.
    }
}

impl Drop for CallTimer {
    /// Puts the enclosing call's cells back, also when a panic (a user's
    /// loader, a user's `FromRedisValue`) unwinds through the call, so
    /// that no later checkout on this thread takes a stale start.
    fn drop(&mut self) {
        START.set(self.outer.0);
        END.set(self.outer.1);
    }
}

/// "Now" for a checkout: the running call's start when this is its first
/// checkout (read moments ago, nothing waited since), else `clock.now()`.
/// The call goes on: an earlier checkin no longer ends it.
pub(crate) fn checkout_now(clock: &dyn Clock) -> Instant {
    END.set(None);
    START.take().unwrap_or_else(|| clock.now())
}

/// "Now" for a check made before the call's first checkout (the breaker's):
/// the running call's start while no checkout has taken it, else
/// `clock.now()`. Does not take it: the checkout that follows uses it too.
pub(crate) fn call_start(clock: &dyn Clock) -> Instant {
    START.get().unwrap_or_else(|| clock.now())
}

/// The running call goes on after its last checkin (a retry's backoff, a
/// next attempt that may fail before any checkout): it ends at its next
/// checkin, or when it finishes. Its start is no longer "now" for the next
/// attempt (an attempt the breaker refused leaves it untaken, and the
/// backoff waited since): dropped.
pub(crate) fn resumed() {
    START.set(None);
    END.set(None);
}

/// A connection went back to the pool at `now` (the pool's read).
pub(crate) fn checked_in(now: Instant) {
    END.set(Some(now));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_call_ends_at_its_last_checkin_and_its_first_checkout_uses_its_start() {
        let clock = ManualClock::new();
        let timer = CallTimer::start(&clock);
        clock.advance(ms(1));
        // The first checkout reuses the start; a second one (a retry) reads.
        assert_eq!(checkout_now(&clock) + ms(1), clock.now());
        assert_eq!(checkout_now(&clock), clock.now());
        clock.advance(ms(2));
        checked_in(clock.now());
        clock.advance(ms(40));
        assert_eq!(timer.finish(&clock, None), ms(3));
    }

    #[test]
    fn a_call_without_a_checkin_reads_the_clock_at_its_end() {
        let clock = ManualClock::new();
        let timer = CallTimer::start(&clock);
        clock.advance(ms(7));
        assert_eq!(timer.finish(&clock, None), ms(7));
        // Nothing is left behind for the next call's checkout.
        clock.advance(ms(1));
        assert_eq!(checkout_now(&clock), clock.now());
    }

    #[test]
    fn a_retried_call_ends_after_its_backoff_even_without_a_checkin() {
        let clock = ManualClock::new();
        let timer = CallTimer::start(&clock);
        let _ = checkout_now(&clock);
        clock.advance(ms(2));
        checked_in(clock.now());
        // Backoff, then an attempt the open breaker refuses (no checkout).
        clock.advance(ms(100));
        resumed();
        assert_eq!(timer.finish(&clock, None), ms(102));
        // A checkout that fails (no checkin) does not end the call early.
        let timer = CallTimer::start(&clock);
        let _ = checkout_now(&clock);
        checked_in(clock.now());
        let _ = checkout_now(&clock);
        clock.advance(ms(30));
        assert_eq!(timer.finish(&clock, None), ms(30));
    }

    #[test]
    fn the_start_is_now_for_the_breaker_until_a_checkout_or_a_backoff() {
        let clock = ManualClock::new();
        let timer = CallTimer::start(&clock);
        let start = clock.now();
        clock.advance(ms(1));
        // Not taken: the checkout that follows uses it as well.
        assert_eq!(call_start(&clock), start);
        assert_eq!(checkout_now(&clock), start);
        assert_eq!(call_start(&clock), clock.now());
        drop(timer);
        // An attempt the breaker refused leaves the start untaken; the
        // backoff before the next attempt drops it.
        let _timer = CallTimer::start(&clock);
        clock.advance(ms(50));
        resumed();
        assert_eq!(call_start(&clock), clock.now());
        assert_eq!(checkout_now(&clock), clock.now());
    }

    #[test]
    fn a_panicking_call_leaves_no_stale_start_behind() {
        let clock = ManualClock::new();
        let c = clock.clone();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _timer = CallTimer::start(&c);
            panic!("a user's loader panicked");
        }));
        assert!(unwound.is_err());
        clock.advance(ms(9));
        assert_eq!(checkout_now(&clock), clock.now());
    }

    #[test]
    fn a_nested_call_does_not_end_the_outer_one() {
        let clock = ManualClock::new();
        let outer = CallTimer::start(&clock);
        clock.advance(ms(1));
        let _ = checkout_now(&clock);
        checked_in(clock.now()); // outer: 1 ms
        let inner = CallTimer::start(&clock);
        clock.advance(ms(5));
        checked_in(clock.now());
        assert_eq!(inner.finish(&clock, None), ms(5));
        clock.advance(ms(10));
        // The outer call's last checkin is still its own.
        assert_eq!(outer.finish(&clock, None), ms(1));
    }
}

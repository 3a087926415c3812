//! The lock-free side of the breaker: a packed state word that the lock
//! holder republishes after every change, and per-thread counter slots.
//!
//! The word packs the state (2 bits), a `CLEAN` bit and the generation (the
//! remaining 61 bits). `CLEAN` means "closed, no failure counted, no
//! failure-rate window": a success in that state changes nothing but the
//! counts, so it needs no lock. Everything else (failures, the window,
//! every transition) runs under the mutex, which then stores the new word
//! with `Release`; readers load it with `Acquire`.
//!
//! Counts made without the lock go to [`Slot`]s, one cache line each, so
//! threads do not write to a shared line: a thread bumps the slot of its
//! leased index (`crate::thread_slot`, the same index in every breaker)
//! with a plain load and store, no locked instruction. Sums are exact
//! once the calls they count have returned.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::types::BreakerState;
use crate::thread_slot::{self, OWNED};

const STATE_MASK: u64 = 0b11;
const CLEAN: u64 = 0b100;
const GEN_SHIFT: u32 = 3;

/// Counts kept without the lock, one cache line per slot.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot {
    /// Closed-state permits granted without the lock.
    calls: AtomicU64,
    /// Closed-state successes counted without the lock.
    successes: AtomicU64,
    /// Calls rejected without the lock.
    rejections: AtomicU64,
}

/// A snapshot of the lock-free counts.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FastCounts {
    pub(crate) calls: u64,
    pub(crate) successes: u64,
    pub(crate) rejections: u64,
}

/// What a lock-free `try_acquire` found.
pub(crate) enum Quick {
    /// Closed: a permit of this generation (the call is counted).
    Granted(u64),
    /// Open or forced open, and the period has not elapsed (counted).
    Rejected(BreakerState, Duration),
    /// Anything else: take the lock.
    Locked,
}

#[derive(Debug)]
pub(crate) struct Fast {
    word: AtomicU64,
    /// While open: the end of the open period, in nanoseconds since
    /// `origin`. Written before the word that announces the open state.
    open_until: AtomicU64,
    origin: Instant,
    slots: Box<[Slot]>,
}

fn state_bits(state: BreakerState) -> u64 {
    match state {
        BreakerState::Closed => 0,
        BreakerState::Open => 1,
        BreakerState::HalfOpen => 2,
        BreakerState::ForcedOpen => 3,
    }
}

fn decode_state(word: u64) -> BreakerState {
    match word & STATE_MASK {
        0 => BreakerState::Closed,
        1 => BreakerState::Open,
        2 => BreakerState::HalfOpen,
        _ => BreakerState::ForcedOpen,
    }
}

/// The word for a state. Generations stay far below 2^61 (one per state
/// change), so the shift loses nothing.
pub(crate) fn pack(state: BreakerState, generation: u64, clean: bool) -> u64 {
    (generation << GEN_SHIFT) | state_bits(state) | if clean { CLEAN } else { 0 }
}

impl Fast {
    pub(crate) fn new(origin: Instant) -> Self {
        Fast {
            word: AtomicU64::new(pack(BreakerState::Closed, 0, false)),
            open_until: AtomicU64::new(0),
            origin,
            slots: (0..=OWNED).map(|_| Slot::default()).collect(),
        }
    }

    /// Adds one to a counter of this thread's slot (the shared slot while
    /// the thread's locals are being torn down).
    #[inline]
    fn count(&self, which: fn(&Slot) -> &AtomicU64) {
        let (index, owned) = thread_slot::index();
        let slot = &self.slots[index];
        thread_slot::add(which(slot), 1, owned);
    }

    /// The published state.
    pub(crate) fn state(&self) -> BreakerState {
        decode_state(self.word.load(Ordering::Acquire))
    }

    /// The published generation.
    pub(crate) fn generation(&self) -> u64 {
        self.word.load(Ordering::Acquire) >> GEN_SHIFT
    }

    /// Publishes the lock holder's state. Call with the lock held, after
    /// every change: `open_until` first, then the word with `Release`.
    pub(crate) fn publish(&self, word: u64, open_until: Option<Instant>) {
        if let Some(until) = open_until {
            let nanos = until.saturating_duration_since(self.origin).as_nanos();
            let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
            if self.open_until.load(Ordering::Relaxed) != nanos {
                // Release: a reader that loads this deadline (Acquire) then
                // sees every word stored before it, so its re-read of the
                // word cannot still show an older open period.
                self.open_until.store(nanos, Ordering::Release);
            }
        }
        // Only the lock holder stores, so a relaxed read of our own last
        // store is exact; skipping an unchanged word keeps the line shared.
        if self.word.load(Ordering::Relaxed) != word {
            self.word.store(word, Ordering::Release);
        }
    }

    /// `try_acquire` without the lock where the answer needs no change.
    #[inline]
    pub(crate) fn try_acquire(
        &self,
        open_timeout: Duration,
        now: impl FnOnce() -> Instant,
    ) -> Quick {
        let word = self.word.load(Ordering::Acquire);
        match decode_state(word) {
            BreakerState::Closed => {
                self.count(|s| &s.calls);
                Quick::Granted(word >> GEN_SHIFT)
            }
            BreakerState::ForcedOpen => {
                self.count(|s| &s.rejections);
                Quick::Rejected(BreakerState::ForcedOpen, open_timeout)
            }
            BreakerState::Open => {
                // The word was stored (Release) after this period's deadline,
                // so the deadline read here is that one or a later one; a
                // later one was stored (Release) after the word moved on, so
                // then the re-read (after this Acquire) shows a changed word.
                // Unchanged word: the deadline is that of the period seen.
                let until = self.open_until.load(Ordering::Acquire);
                if self.word.load(Ordering::Relaxed) != word {
                    return Quick::Locked;
                }
                let since = now().saturating_duration_since(self.origin).as_nanos();
                let since = u64::try_from(since).unwrap_or(u64::MAX);
                if since >= until {
                    return Quick::Locked; // elapsed: turn half-open under the lock
                }
                self.count(|s| &s.rejections);
                Quick::Rejected(BreakerState::Open, Duration::from_nanos(until - since))
            }
            BreakerState::HalfOpen => Quick::Locked,
        }
    }

    /// Counts a success of a closed-state permit of `generation` without the
    /// lock, if the breaker is still clean in that generation. `false`: take
    /// the lock.
    #[inline]
    pub(crate) fn try_success(&self, generation: u64) -> bool {
        if self.word.load(Ordering::Acquire) != pack(BreakerState::Closed, generation, true) {
            return false;
        }
        self.count(|s| &s.successes);
        true
    }

    /// Sum of the lock-free counts.
    pub(crate) fn counts(&self) -> FastCounts {
        self.slots
            .iter()
            .fold(FastCounts::default(), |c, s| FastCounts {
                calls: c.calls + s.calls.load(Ordering::Relaxed),
                successes: c.successes + s.successes.load(Ordering::Relaxed),
                rejections: c.rejections + s.rejections.load(Ordering::Relaxed),
            })
    }

    /// Sum of the lock-free successes.
    pub(crate) fn successes(&self) -> u64 {
        self.slots
            .iter()
            .map(|s| s.successes.load(Ordering::Relaxed))
            .sum()
    }
}

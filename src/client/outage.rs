//! The in-memory fallback's engaged/released state and its log lines.
//!
//! One WARN when the fallback engages, one INFO when it releases, and while
//! it is engaged a summary at most once per [`SUMMARY_PERIOD`] instead of one
//! line per failed call.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, ErrorKind};

/// How often an outage summary is logged while the fallback is engaged.
pub(crate) const SUMMARY_PERIOD: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct State {
    engaged_since: Option<Instant>,
    served_total: u64,
    /// Since the last summary line.
    served: u64,
    suppressed: u64,
    last_summary: Option<Instant>,
}

/// What changed when an operation was served from memory or Redis answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    None,
    Engaged(ErrorKind),
    Released { served: u64, duration: Duration },
}

/// Outage bookkeeping shared by every clone of a client.
#[derive(Debug, Default)]
pub(crate) struct Outage {
    state: Mutex<State>,
    /// Mirrors `state.engaged_since.is_some()` for lock-free reads.
    engaged: std::sync::atomic::AtomicBool,
}

impl Outage {
    pub(crate) fn is_engaged(&self) -> bool {
        self.engaged.load(std::sync::atomic::Ordering::Acquire)
    }

    /// An operation is being served from memory because of `cause`.
    pub(crate) fn served_from_memory(&self, cause: &Error, now: Instant) -> Change {
        let mut s = self.state.lock();
        s.served += 1;
        s.served_total += 1;
        s.suppressed += 1;
        if s.engaged_since.is_none() {
            s.engaged_since = Some(now);
            s.last_summary = Some(now);
            self.engaged
                .store(true, std::sync::atomic::Ordering::Release);
            log::warn!(
                "redis unavailable ({cause}); serving cache operations from memory until it answers again"
            );
            return Change::Engaged(cause.kind());
        }
        self.maybe_summarize(&mut s, now);
        Change::None
    }

    /// A journaled key was served from memory (no Redis attempt was made).
    pub(crate) fn served_journaled(&self, now: Instant) {
        if !self.is_engaged() {
            return;
        }
        let mut s = self.state.lock();
        s.served += 1;
        s.served_total += 1;
        self.maybe_summarize(&mut s, now);
    }

    /// An error was returned to a caller (no fallback) during an outage.
    pub(crate) fn error_suppressed(&self, now: Instant) {
        if !self.is_engaged() {
            return;
        }
        let mut s = self.state.lock();
        s.suppressed += 1;
        self.maybe_summarize(&mut s, now);
    }

    /// Redis answered: releases the fallback if it was engaged.
    pub(crate) fn redis_answered(&self, now: Instant) -> Change {
        if !self.is_engaged() {
            return Change::None;
        }
        let mut s = self.state.lock();
        let Some(since) = s.engaged_since.take() else {
            return Change::None;
        };
        self.engaged
            .store(false, std::sync::atomic::Ordering::Release);
        let served = std::mem::take(&mut s.served_total);
        let duration = now.saturating_duration_since(since);
        s.served = 0;
        s.suppressed = 0;
        s.last_summary = None;
        log::info!(
            "redis answers again after {:.1} s; {served} operations were served from memory",
            duration.as_secs_f64()
        );
        Change::Released { served, duration }
    }

    fn maybe_summarize(&self, s: &mut State, now: Instant) {
        let due = s
            .last_summary
            .is_none_or(|last| now.saturating_duration_since(last) >= SUMMARY_PERIOD);
        if due {
            log::warn!(
                "redis still unavailable: {} operations served from memory, {} errors suppressed in the last {} s",
                s.served,
                s.suppressed,
                SUMMARY_PERIOD.as_secs()
            );
            s.served = 0;
            s.suppressed = 0;
            s.last_summary = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;

    #[test]
    fn engage_summarize_release() {
        let outage = Outage::default();
        let t0 = Instant::now();
        let cause = Error::new(
            ErrorKind::Connection,
            ErrorClass::Transient,
            "connection refused",
        );
        assert_eq!(
            outage.served_from_memory(&cause, t0),
            Change::Engaged(ErrorKind::Connection)
        );
        assert!(outage.is_engaged());
        for i in 1..100u64 {
            assert_eq!(
                outage.served_from_memory(&cause, t0 + Duration::from_secs(i)),
                Change::None
            );
        }
        match outage.redis_answered(t0 + Duration::from_secs(100)) {
            Change::Released { served, duration } => {
                assert_eq!(served, 100);
                assert_eq!(duration, Duration::from_secs(100));
            }
            other => panic!("{other:?}"),
        }
        assert!(!outage.is_engaged());
        assert_eq!(outage.redis_answered(t0), Change::None);
    }
}

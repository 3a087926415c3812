//! The in-memory fallback's engaged/released state and its log lines.
//!
//! One WARN when the fallback engages, one INFO when it releases, and while
//! it is engaged a summary at most once per [`SUMMARY_PERIOD`] instead of one
//! line per failed call.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, ErrorKind};
use crate::log_fields::{log_fields, millis, Fields};

/// Where the outage is seen, for the log fields: the active endpoint and
/// its breaker's state. Asked only when a line is logged.
pub(crate) type Scope<'a> = &'a dyn Fn() -> (&'static str, &'static str);

/// How often an outage summary is logged while the fallback is engaged.
pub(crate) const SUMMARY_PERIOD: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct State {
    engaged_since: Option<Instant>,
    served_total: u64,
    /// Since the last summary line.
    served: u64,
    suppressed: u64,
    /// When the next summary is due (`None`: now): the last one's instant
    /// plus [`SUMMARY_PERIOD`], kept rather than the last one's so that a
    /// call served from memory compares two instants instead of taking a
    /// difference (most of the bookkeeping's cost, issue #12).
    next_summary: Option<Instant>,
    /// What engaged the fallback: kind and message, for the log fields.
    cause: Option<(ErrorKind, String)>,
    /// Errors suppressed since it engaged.
    suppressed_total: u64,
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
    pub(crate) fn served_from_memory(&self, cause: &Error, now: Instant, at: Scope<'_>) -> Change {
        let summary = {
            let mut s = self.state.lock();
            s.served += 1;
            s.served_total += 1;
            s.suppressed += 1;
            s.suppressed_total += 1;
            if s.engaged_since.is_none() {
                s.engaged_since = Some(now);
                s.next_summary = next_summary(now);
                s.cause = Some((cause.kind(), cause.to_string()));
                self.engaged
                    .store(true, std::sync::atomic::Ordering::Release);
                None
            } else {
                Some(Self::summary_due(&mut s, now))
            }
        };
        // Logged after the lock is released: a slow logger must not stall
        // every other thread that is being served from memory.
        match summary {
            None => {
                let (endpoint, breaker) = at();
                let message = cause.to_string();
                log_fields!(
                    log::Level::Warn,
                    Fields::new("fallback_engaged")
                        .error(cause.kind().as_str(), &message)
                        .at(endpoint, breaker);
                    "redis unavailable ({cause}); serving cache operations from memory until it answers again"
                );
                Change::Engaged(cause.kind())
            }
            Some(summary) => {
                log_summary(summary, at);
                Change::None
            }
        }
    }

    /// A journaled key was served from memory (no Redis attempt was made).
    pub(crate) fn served_journaled(&self, now: Instant, at: Scope<'_>) {
        if !self.is_engaged() {
            return;
        }
        let summary = {
            let mut s = self.state.lock();
            s.served += 1;
            s.served_total += 1;
            Self::summary_due(&mut s, now)
        };
        log_summary(summary, at);
    }

    /// An error was returned to a caller (no fallback) during an outage.
    pub(crate) fn error_suppressed(&self, now: Instant, at: Scope<'_>) {
        if !self.is_engaged() {
            return;
        }
        let summary = {
            let mut s = self.state.lock();
            s.suppressed += 1;
            s.suppressed_total += 1;
            Self::summary_due(&mut s, now)
        };
        log_summary(summary, at);
    }

    /// Redis answered: releases the fallback if it was engaged.
    pub(crate) fn redis_answered(&self, now: Instant, at: Scope<'_>) -> Change {
        if !self.is_engaged() {
            return Change::None;
        }
        let (served, duration, errors, cause) = {
            let mut s = self.state.lock();
            let Some(since) = s.engaged_since.take() else {
                return Change::None;
            };
            self.engaged
                .store(false, std::sync::atomic::Ordering::Release);
            let served = std::mem::take(&mut s.served_total);
            s.served = 0;
            s.suppressed = 0;
            s.next_summary = None;
            let errors = std::mem::take(&mut s.suppressed_total);
            (
                served,
                now.saturating_duration_since(since),
                errors,
                s.cause.take(),
            )
        };
        let (endpoint, breaker) = at();
        let (kind, message) = cause.unwrap_or((ErrorKind::Connection, String::new()));
        log_fields!(
            log::Level::Info,
            Fields::new("fallback_released")
                .error(kind.as_str(), &message)
                .count(errors)
                .at(endpoint, breaker),
            duration_ms = millis(duration);
            "redis answers again after {:.1} s; {served} operations were served from memory",
            duration.as_secs_f64()
        );
        Change::Released { served, duration }
    }

    /// The counts for a summary line when one is due (and starts the next
    /// period); the caller logs it once the lock is released.
    #[inline]
    fn summary_due(s: &mut State, now: Instant) -> Option<Summary> {
        let due = s.next_summary.is_none_or(|at| now >= at);
        if !due {
            return None;
        }
        Self::summary(s, now)
    }

    /// The counts for the summary line due at `now`. Out of line: once a
    /// minute, while [`Outage::summary_due`] runs on every call served from
    /// memory.
    #[cold]
    fn summary(s: &mut State, now: Instant) -> Option<Summary> {
        let (kind, message) = s
            .cause
            .clone()
            .unwrap_or((ErrorKind::Connection, String::new()));
        let summary = Summary {
            served: std::mem::take(&mut s.served),
            suppressed: std::mem::take(&mut s.suppressed),
            kind,
            message,
        };
        s.next_summary = next_summary(now);
        Some(summary)
    }
}

/// When the summary after one at `now` is due. An instant too late to
/// represent (a clock 292 years past boot) makes every call due, which
/// only logs more.
fn next_summary(now: Instant) -> Option<Instant> {
    now.checked_add(SUMMARY_PERIOD)
}

/// The counts of one periodic outage summary.
#[derive(Debug)]
struct Summary {
    served: u64,
    suppressed: u64,
    /// What engaged the fallback.
    kind: ErrorKind,
    message: String,
}

/// Logs `summary`, if there is one. Never called with the state locked.
/// Inline: it is called on every call served from memory, and almost
/// always with nothing to log.
#[inline]
fn log_summary(summary: Option<Summary>, at: Scope<'_>) {
    if let Some(summary) = summary {
        log_summary_line(summary, at);
    }
}

/// The summary line itself (once a minute at most).
#[cold]
fn log_summary_line(summary: Summary, at: Scope<'_>) {
    let Summary {
        served,
        suppressed,
        kind,
        message,
    } = summary;
    let (endpoint, breaker) = at();
    log_fields!(
        log::Level::Warn,
        Fields::new("outage_summary")
            .error(kind.as_str(), &message)
            .count(suppressed)
            .at(endpoint, breaker),
        duration_ms = millis(SUMMARY_PERIOD);
        "redis still unavailable: {served} operations served from memory, {suppressed} errors suppressed in the last {} s",
        SUMMARY_PERIOD.as_secs()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorClass;

    const NOWHERE: Scope<'static> = &nowhere;

    fn nowhere() -> (&'static str, &'static str) {
        ("none", "none")
    }

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
            outage.served_from_memory(&cause, t0, NOWHERE),
            Change::Engaged(ErrorKind::Connection)
        );
        assert!(outage.is_engaged());
        for i in 1..100u64 {
            assert_eq!(
                outage.served_from_memory(&cause, t0 + Duration::from_secs(i), NOWHERE),
                Change::None
            );
        }
        match outage.redis_answered(t0 + Duration::from_secs(100), NOWHERE) {
            Change::Released { served, duration } => {
                assert_eq!(served, 100);
                assert_eq!(duration, Duration::from_secs(100));
            }
            other => panic!("{other:?}"),
        }
        assert!(!outage.is_engaged());
        assert_eq!(outage.redis_answered(t0, NOWHERE), Change::None);
    }

    /// Every line (engaged, summaries from each entry point, released) is
    /// logged with the state mutex released: a logger that blocks, or that
    /// logs through code calling back into the client, must not stall or
    /// deadlock the threads being served from memory.
    #[test]
    fn logs_with_the_lock_released() {
        use std::cell::RefCell;
        use std::rc::Rc;
        use std::sync::Arc;

        crate::test_log::start();
        let outage = Arc::new(Outage::default());
        let locked_while_logging = Rc::new(RefCell::new(Vec::new()));
        {
            let outage = outage.clone();
            let seen = locked_while_logging.clone();
            crate::test_log::on_log(move |_| seen.borrow_mut().push(outage.state.is_locked()));
        }
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let cause = Error::new(ErrorKind::Connection, ErrorClass::Transient, "refused");
        outage.served_from_memory(&cause, t0, NOWHERE);
        outage.served_from_memory(&cause, at(60), NOWHERE);
        outage.served_journaled(at(120), NOWHERE);
        outage.error_suppressed(at(180), NOWHERE);
        outage.error_suppressed(at(181), NOWHERE);
        outage.redis_answered(at(200), NOWHERE);

        let lines = crate::test_log::take("resilient_redis::client::outage");
        let levels: Vec<_> = lines.iter().map(|(l, _)| *l).collect();
        use log::Level::{Info, Warn};
        assert_eq!(levels, [Warn, Warn, Warn, Warn, Info], "{lines:?}");
        assert!(lines[1]
            .1
            .contains("2 operations served from memory, 2 errors"));
        assert!(lines[3]
            .1
            .contains("0 operations served from memory, 1 errors"));
        assert_eq!(*locked_while_logging.borrow(), [false; 5]);
    }
}

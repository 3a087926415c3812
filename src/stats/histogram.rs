//! The call-duration histogram: one per endpoint and outcome, fixed
//! Prometheus buckets from 50 µs to 10 s, `AtomicU64` counts per thread
//! slot ([`crate::thread_slot`]), summed by a snapshot. Recording is a
//! bucket search over 17 bounds and two relaxed load-and-stores in the
//! thread's own slot: no locked instruction (two `fetch_add`s cost about
//! 10 ns a call, issue #12).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::thread_slot::{self, Striped};

/// Upper bounds of the buckets, in nanoseconds (`le` in Prometheus); a
/// last, implicit bucket is `+Inf`.
pub(crate) const BOUNDS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

const BUCKETS: usize = BOUNDS_NS.len() + 1;

/// Where a call was sent: the `endpoint` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallEndpoint {
    Primary,
    Secondary,
    /// A memory-only client (no Redis configured).
    Memory,
}

/// How a call ended: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallOutcome {
    /// Redis answered.
    Ok,
    /// An error was returned to the caller.
    Error,
    /// Served by the in-memory fallback store while Redis was unavailable
    /// (or because the key's newest value was written during an outage).
    Fallback,
}

const ENDPOINTS: [(CallEndpoint, &str); 3] = [
    (CallEndpoint::Primary, "primary"),
    (CallEndpoint::Secondary, "secondary"),
    (CallEndpoint::Memory, "memory"),
];
const OUTCOMES: [(CallOutcome, &str); 3] = [
    (CallOutcome::Ok, "ok"),
    (CallOutcome::Error, "error"),
    (CallOutcome::Fallback, "fallback"),
];

/// One series: a count per bucket (not cumulative) and the sum.
#[derive(Debug, Default)]
struct Series {
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

/// Durations of calls, per endpoint and outcome, per thread slot: about
/// 1.4 KB a slot, 24 KB a client.
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    slots: Striped<[[Series; 3]; 3]>,
}

impl Histogram {
    /// Counts one call. Relaxed atomics: a snapshot may see a bucket
    /// without its sum for an instant, never a torn count.
    pub(crate) fn record(&self, endpoint: CallEndpoint, outcome: CallOutcome, took: Duration) {
        // u64 arithmetic (`as_nanos` is u128), saturating past 584 years.
        let ns = took
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(took.subsec_nanos()));
        // A linear scan: most calls end in the first buckets, where it
        // stops after a compare or two (a binary search always takes five).
        let bucket = BOUNDS_NS
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(BOUNDS_NS.len());
        let Some((series, owned)) = self.slots.mine() else {
            return;
        };
        let series = &series[endpoint as usize][outcome as usize];
        if let Some(count) = series.buckets.get(bucket) {
            thread_slot::add(count, 1, owned);
        }
        thread_slot::add(&series.sum_ns, ns, owned);
    }

    /// Every series that counted a call.
    pub(crate) fn snapshot(&self) -> Vec<DurationHistogram> {
        let mut out = Vec::new();
        for (e, endpoint) in ENDPOINTS {
            for (o, outcome) in OUTCOMES {
                let slots = || self.slots.all().map(|s| &s[e as usize][o as usize]);
                let mut cumulative = 0u64;
                let buckets: Vec<u64> = (0..BUCKETS)
                    .map(|i| {
                        for s in slots() {
                            let n = s.buckets.get(i).map_or(0, |b| b.load(Ordering::Relaxed));
                            cumulative = cumulative.saturating_add(n);
                        }
                        cumulative
                    })
                    .collect();
                let sum_ns = slots().fold(0u64, |sum, s| {
                    sum.wrapping_add(s.sum_ns.load(Ordering::Relaxed))
                });
                if cumulative == 0 {
                    continue;
                }
                out.push(DurationHistogram {
                    endpoint,
                    outcome,
                    cumulative: buckets,
                    count: cumulative,
                    sum_seconds: sum_ns as f64 / 1e9,
                });
            }
        }
        out
    }
}

/// One series of the call-duration histogram in [`Stats`](super::Stats):
/// `resilient_redis_request_duration_seconds{endpoint, outcome}`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DurationHistogram {
    /// `"primary"`, `"secondary"` (the endpoint calls went to when the
    /// call ended) or `"memory"` (a client with no Redis configured).
    pub endpoint: &'static str,
    /// `"ok"` (Redis answered), `"error"` (an error was returned) or
    /// `"fallback"` (served by the in-memory store).
    pub outcome: &'static str,
    /// Calls that took at most each bound of
    /// [`DurationHistogram::bounds`], cumulative, then every call (`+Inf`).
    pub cumulative: Vec<u64>,
    /// Calls counted.
    pub count: u64,
    /// Their total duration.
    pub sum_seconds: f64,
}

impl DurationHistogram {
    /// The buckets' upper bounds, in seconds: 50 µs to 10 s.
    pub fn bounds() -> impl Iterator<Item = f64> {
        BOUNDS_NS.iter().map(|&ns| ns as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        let h = Histogram::default();
        let (p, ok) = (CallEndpoint::Primary, CallOutcome::Ok);
        h.record(p, ok, us(10));
        h.record(p, ok, us(50)); // le="0.00005"
        h.record(p, ok, us(51)); // le="0.0001"
        h.record(p, ok, Duration::from_secs(11)); // +Inf only
        h.record(CallEndpoint::Secondary, CallOutcome::Fallback, us(300));
        let snap = h.snapshot();
        assert_eq!(snap.len(), 2);
        let primary = &snap[0];
        assert_eq!((primary.endpoint, primary.outcome), ("primary", "ok"));
        assert_eq!(primary.cumulative.len(), BOUNDS_NS.len() + 1);
        assert_eq!(primary.cumulative[0], 2);
        assert_eq!(primary.cumulative[1], 3);
        assert_eq!(primary.cumulative[BOUNDS_NS.len() - 1], 3);
        assert_eq!(primary.cumulative[BOUNDS_NS.len()], 4);
        assert_eq!(primary.count, 4);
        assert!((primary.sum_seconds - 11.000111).abs() < 1e-9);
        let secondary = &snap[1];
        assert_eq!(
            (secondary.endpoint, secondary.outcome),
            ("secondary", "fallback")
        );
        assert_eq!(secondary.cumulative[2], 0);
        assert_eq!(secondary.cumulative[3], 1);
    }

    #[test]
    fn bounds_span_50us_to_10s() {
        let b: Vec<f64> = DurationHistogram::bounds().collect();
        assert_eq!(b.first(), Some(&0.00005));
        assert_eq!(b.last(), Some(&10.0));
        assert!(b.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn huge_durations_do_not_overflow() {
        let h = Histogram::default();
        h.record(CallEndpoint::Memory, CallOutcome::Error, Duration::MAX);
        assert_eq!(h.snapshot()[0].count, 1);
    }
}

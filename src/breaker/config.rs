//! The breaker's settings, and their clamping to values that cannot panic.

use std::time::Duration;

use crate::Config;

/// Longest duration any breaker timer accepts. Longer values are clamped, so
/// that `now + duration` can never overflow an `Instant`.
pub(crate) const MAX_BREAKER_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Settings of a [`CircuitBreaker`](crate::CircuitBreaker).
///
/// Fields are public; out-of-range values are clamped when the breaker is
/// built (a threshold of 0 acts as 1, durations are capped at ten years, a
/// non-finite ratio disables its rule), never a panic.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use resilient_redis::{BreakerConfig, FailureRate, OpenBackoff};
///
/// let config = BreakerConfig {
///     failure_threshold: 3,
///     open_timeout: Duration::from_secs(10),
///     failure_rate: Some(FailureRate::default()),
///     backoff: Some(OpenBackoff::default()),
///     ..BreakerConfig::default()
/// };
/// assert_eq!(config.success_threshold, 2);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive failures in the closed state that open the breaker.
    /// Defaults to 5.
    pub failure_threshold: u32,
    /// Consecutive successful half-open probes that close the breaker.
    /// Defaults to 2.
    pub success_threshold: u32,
    /// How long the breaker stays open before it lets probes through (the
    /// first time; see [`BreakerConfig::backoff`]). Defaults to 60 s.
    pub open_timeout: Duration,
    /// Most probes in flight at once while half-open. Defaults to 3.
    pub half_open_max_requests: u32,
    /// How long a half-open probe may stay outstanding before its slot is
    /// reclaimed (its late verdict is then stale). A probe that hangs or is
    /// leaked would otherwise hold a slot forever and wedge the breaker
    /// half-open. Defaults to 30 s: far longer than a sane Redis call
    /// (socket timeouts are seconds), shorter than the default open timeout,
    /// so a leaked probe delays recovery by less than one open period.
    pub probe_timeout: Duration,
    /// An optional failure-rate rule beside the consecutive-failure rule.
    /// Defaults to `None`.
    pub failure_rate: Option<FailureRate>,
    /// An optional growing open duration for repeated trips. Defaults to
    /// `None` (every open lasts `open_timeout`, without jitter).
    pub backoff: Option<OpenBackoff>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            success_threshold: 2,
            open_timeout: Duration::from_secs(60),
            half_open_max_requests: 3,
            probe_timeout: Duration::from_secs(30),
            failure_rate: None,
            backoff: None,
        }
    }
}

impl From<&Config> for BreakerConfig {
    /// Takes the four breaker settings of a client [`Config`]; the optional
    /// rules keep their defaults.
    fn from(config: &Config) -> Self {
        BreakerConfig {
            failure_threshold: config.failure_threshold,
            success_threshold: config.success_threshold,
            open_timeout: config.open_timeout,
            half_open_max_requests: config.half_open_max_requests,
            ..BreakerConfig::default()
        }
    }
}

/// Opens the breaker when the share of failed calls in a sliding time window
/// reaches `threshold`, once at least `min_calls` calls were seen in it.
///
/// The window is kept as 10 buckets of `window / 10` each and slides one
/// bucket at a time, so memory is constant whatever the traffic. Only
/// successes and failures are calls here; ignored outcomes are not.
#[derive(Debug, Clone, PartialEq)]
pub struct FailureRate {
    /// Failed share, in `0.0..=1.0`, that opens the breaker. Defaults to 0.5.
    pub threshold: f64,
    /// Length of the sliding window. Defaults to 60 s.
    pub window: Duration,
    /// Calls the window must hold before the rule applies. Defaults to 20.
    pub min_calls: u32,
}

impl Default for FailureRate {
    fn default() -> Self {
        FailureRate {
            threshold: 0.5,
            window: Duration::from_secs(60),
            min_calls: 20,
        }
    }
}

/// Lengthens the open period on repeated trips: the n-th consecutive open
/// (without the breaker closing in between) lasts
/// `open_timeout × multiplier^(n-1)`, capped at `max_open_timeout`, then
/// shortened by a random share of up to `jitter` so that many processes
/// tripped by the same outage do not all probe at the same instant.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenBackoff {
    /// Growth factor per repeated trip, at least 1. Defaults to 2.
    pub multiplier: f64,
    /// Longest open period. Defaults to 10 minutes.
    pub max_open_timeout: Duration,
    /// Largest share, in `0.0..=1.0`, removed at random from each open
    /// period. Defaults to 0.2.
    pub jitter: f64,
}

impl Default for OpenBackoff {
    fn default() -> Self {
        OpenBackoff {
            multiplier: 2.0,
            max_open_timeout: Duration::from_secs(600),
            jitter: 0.2,
        }
    }
}

fn clamp_duration(d: Duration) -> Duration {
    d.min(MAX_BREAKER_DURATION)
}

fn unit_ratio(x: f64) -> Option<f64> {
    x.is_finite().then(|| x.clamp(0.0, 1.0))
}

impl BreakerConfig {
    /// The same settings with every value moved into its safe range.
    pub(crate) fn normalized(&self) -> BreakerConfig {
        let open_timeout = clamp_duration(self.open_timeout);
        BreakerConfig {
            failure_threshold: self.failure_threshold.max(1),
            success_threshold: self.success_threshold.max(1),
            open_timeout,
            half_open_max_requests: self.half_open_max_requests.max(1),
            probe_timeout: clamp_duration(self.probe_timeout),
            failure_rate: self.failure_rate.as_ref().and_then(|r| {
                Some(FailureRate {
                    threshold: unit_ratio(r.threshold)?,
                    window: clamp_duration(r.window),
                    min_calls: r.min_calls.max(1),
                })
            }),
            backoff: self.backoff.as_ref().map(|b| OpenBackoff {
                multiplier: if b.multiplier.is_finite() {
                    b.multiplier.max(1.0)
                } else {
                    1.0
                },
                max_open_timeout: clamp_duration(b.max_open_timeout).max(open_timeout),
                jitter: unit_ratio(b.jitter).unwrap_or(0.0),
            }),
        }
    }

    /// The open period before jitter for the `trips`-th consecutive open
    /// (1-based). Call on a normalized config.
    pub(crate) fn open_period(&self, trips: u32) -> Duration {
        let Some(b) = &self.backoff else {
            return self.open_timeout;
        };
        let exp = trips.saturating_sub(1).min(1024) as i32;
        let secs = self.open_timeout.as_secs_f64() * b.multiplier.powi(exp);
        Duration::try_from_secs_f64(secs)
            .unwrap_or(b.max_open_timeout)
            .min(b.max_open_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_hostile_values() {
        let c = BreakerConfig {
            failure_threshold: 0,
            success_threshold: 0,
            open_timeout: Duration::MAX,
            half_open_max_requests: 0,
            probe_timeout: Duration::MAX,
            failure_rate: Some(FailureRate {
                threshold: f64::NAN,
                window: Duration::ZERO,
                min_calls: 0,
            }),
            backoff: Some(OpenBackoff {
                multiplier: f64::INFINITY,
                max_open_timeout: Duration::ZERO,
                jitter: 7.0,
            }),
        }
        .normalized();
        assert_eq!(c.failure_threshold, 1);
        assert_eq!(c.success_threshold, 1);
        assert_eq!(c.half_open_max_requests, 1);
        assert_eq!(c.open_timeout, MAX_BREAKER_DURATION);
        assert_eq!(c.failure_rate, None);
        let b = c.backoff.clone().unwrap_or_default();
        assert_eq!(b.multiplier, 1.0);
        assert_eq!(b.jitter, 1.0);
        assert_eq!(b.max_open_timeout, MAX_BREAKER_DURATION);
        assert_eq!(c.open_period(u32::MAX), MAX_BREAKER_DURATION);
    }

    #[test]
    fn open_period_grows_and_caps() {
        let c = BreakerConfig {
            open_timeout: Duration::from_secs(10),
            backoff: Some(OpenBackoff {
                multiplier: 2.0,
                max_open_timeout: Duration::from_secs(35),
                jitter: 0.0,
            }),
            ..BreakerConfig::default()
        }
        .normalized();
        let secs: Vec<u64> = (1..=5).map(|n| c.open_period(n).as_secs()).collect();
        assert_eq!(secs, [10, 20, 35, 35, 35]);
        let plain = BreakerConfig::default().normalized();
        assert_eq!(plain.open_period(9), Duration::from_secs(60));
    }

    #[test]
    fn from_client_config() {
        let config = Config::builder("redis://127.0.0.1:6379")
            .failure_threshold(7)
            .success_threshold(4)
            .half_open_max_requests(1)
            .open_timeout(Duration::from_secs(9))
            .build();
        let Ok(config) = config else {
            panic!("valid config rejected");
        };
        let b = BreakerConfig::from(&config);
        assert_eq!(
            (
                b.failure_threshold,
                b.success_threshold,
                b.half_open_max_requests
            ),
            (7, 4, 1)
        );
        assert_eq!(b.open_timeout, Duration::from_secs(9));
    }
}

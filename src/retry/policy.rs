//! How many times to retry and how long to wait between attempts.

use std::time::Duration;

use crate::config::Config;
use crate::jitter::Jitter;

/// Retry count and exponential backoff with full jitter.
///
/// Retry number `n` (0 for the first retry) waits a delay drawn uniformly
/// from
///
/// ```text
/// [0, min(max_delay, base_delay · 2^n)]
/// ```
///
/// ("full jitter", from the AWS architecture blog's backoff study): clients
/// that failed together do not come back together. With the defaults the
/// caps are 100 ms, 200 ms, 400 ms, ... up to 2 s.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use resilient_redis::RetryPolicy;
///
/// let policy = RetryPolicy::default();
/// assert_eq!(policy.max_retries, 2);
/// assert_eq!(policy.backoff_cap(0), Duration::from_millis(100));
/// assert_eq!(policy.backoff_cap(3), Duration::from_millis(800));
/// assert_eq!(policy.backoff_cap(10), Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt. Defaults to 2 (three attempts in
    /// all); 0 disables retries.
    pub max_retries: u32,
    /// Cap of the first retry's delay, doubled for each further retry.
    /// Defaults to 100 ms.
    pub base_delay: Duration,
    /// Largest cap of any delay. Defaults to 2 s.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// A policy that never retries.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_retries: 0,
        base_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
    };

    /// The upper bound of retry `n`'s delay (`n` = 0 for the first retry):
    /// `min(max_delay, base_delay · 2^n)`, without overflow for any `n`.
    pub fn backoff_cap(&self, n: u32) -> Duration {
        let mut cap = self.base_delay;
        // Doubling stops at the cap, so this runs at most ~94 times (from
        // 1 ns to Duration::MAX) whatever `n` is.
        for _ in 0..n {
            if cap >= self.max_delay || cap.is_zero() {
                break;
            }
            cap = cap.checked_mul(2).unwrap_or(Duration::MAX);
        }
        cap.min(self.max_delay)
    }

    /// Retry `n`'s delay: uniform in `[0, backoff_cap(n)]`.
    pub(crate) fn backoff(&self, n: u32, jitter: &Jitter) -> Duration {
        jitter.up_to(self.backoff_cap(n))
    }

    /// The longest total backoff a call can spend sleeping:
    /// the sum of the caps of every retry.
    pub fn max_total_backoff(&self) -> Duration {
        // Sum the doubling caps until they stop growing (at most ~94 of
        // them); every later one equals the last: multiply instead of
        // looping up to `max_retries` (which may be u32::MAX) times.
        let mut total = Duration::ZERO;
        let mut n = 0;
        while n < self.max_retries {
            let cap = self.backoff_cap(n);
            n += 1;
            if cap >= self.max_delay || cap.is_zero() || cap == self.backoff_cap(n) {
                let rest = self.max_retries - n;
                return total
                    .saturating_add(cap)
                    .saturating_add(cap.saturating_mul(rest));
            }
            total = total.saturating_add(cap);
        }
        total
    }
}

impl Default for RetryPolicy {
    /// 2 retries, 100 ms base delay, 2 s maximum delay (the [`Config`]
    /// defaults).
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl From<&Config> for RetryPolicy {
    /// [`Config::max_retries`], [`Config::retry_base_delay`] and
    /// [`Config::retry_max_delay`].
    fn from(config: &Config) -> Self {
        RetryPolicy {
            max_retries: config.max_retries,
            base_delay: config.retry_base_delay,
            max_delay: config.retry_max_delay,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a bug to see
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config as PropConfig, RngSeed};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn caps_double_then_saturate() {
        let p = RetryPolicy::default();
        let caps: Vec<_> = (0..7).map(|n| p.backoff_cap(n)).collect();
        assert_eq!(
            caps,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(2000),
                ms(2000)
            ]
        );
        assert_eq!(p.backoff_cap(u32::MAX), ms(2000));
        assert_eq!(p.max_total_backoff(), ms(300));
        let many = RetryPolicy {
            max_retries: 8,
            ..p
        };
        // 100 + 200 + 400 + 800 + 1600 + 3 × 2000
        assert_eq!(many.max_total_backoff(), ms(9100));
        let endless = RetryPolicy {
            max_retries: u32::MAX,
            ..p
        };
        assert_eq!(
            endless.max_total_backoff(),
            ms(3100) + ms(2000) * (u32::MAX - 5)
        );
        assert_eq!(RetryPolicy::NONE.max_total_backoff(), Duration::ZERO);
        let huge = RetryPolicy {
            max_retries: u32::MAX,
            base_delay: Duration::MAX,
            max_delay: Duration::MAX,
        };
        assert_eq!(huge.backoff_cap(40), Duration::MAX);
        assert_eq!(huge.max_total_backoff(), Duration::MAX);
        let tiny = RetryPolicy {
            max_retries: 1,
            base_delay: Duration::from_nanos(1),
            max_delay: Duration::from_secs(1 << 20),
        };
        assert_eq!(tiny.backoff_cap(40), Duration::from_nanos(1 << 40));
        assert_eq!(tiny.backoff_cap(u32::MAX), Duration::from_secs(1 << 20));
    }

    #[test]
    fn from_config() {
        let config = Config::memory_only()
            .max_retries(5)
            .retry_base_delay(ms(10))
            .retry_max_delay(ms(500))
            .build()
            .unwrap();
        let p = RetryPolicy::from(&config);
        assert_eq!(
            p,
            RetryPolicy {
                max_retries: 5,
                base_delay: ms(10),
                max_delay: ms(500)
            }
        );
        let defaults = RetryPolicy::from(&Config::memory_only().build().unwrap());
        assert_eq!(defaults, RetryPolicy::default());
    }

    /// Full jitter is spread over the whole interval: with a fixed seed,
    /// each tenth of `[0, cap]` gets about a tenth of the draws, and the
    /// mean is about half the cap.
    #[test]
    fn delays_are_uniform_over_the_cap() {
        let p = RetryPolicy::default();
        let j = Jitter::with_seed(0x5EED);
        for n in 0..6 {
            let cap = p.backoff_cap(n).as_nanos() as f64;
            let mut buckets = [0u32; 10];
            let mut sum = 0.0;
            let draws = 50_000;
            for _ in 0..draws {
                let d = p.backoff(n, &j).as_nanos() as f64;
                sum += d;
                buckets[((d / cap * 10.0) as usize).min(9)] += 1;
            }
            for b in buckets {
                assert!((4_500..5_500).contains(&b), "retry {n}: {buckets:?}");
            }
            let mean = sum / f64::from(draws) / cap;
            assert!((0.49..0.51).contains(&mean), "retry {n}: mean {mean}");
        }
    }

    proptest! {
        #![proptest_config(PropConfig {
            cases: 2_000,
            rng_seed: RngSeed::Fixed(0x5EED),
            failure_persistence: None,
            ..PropConfig::default()
        })]

        #[test]
        fn delay_within_full_jitter_bounds(
            base_ms in 0u64..10_000,
            // Includes caps reached only after more than 32 doublings.
            max_ms in 0u64..u64::MAX / 4,
            n in 0u32..100,
            seed in any::<u64>(),
        ) {
            let p = RetryPolicy { max_retries: 3, base_delay: ms(base_ms), max_delay: ms(max_ms) };
            let expected_cap = (0..n)
                .try_fold(ms(base_ms), |d, _| d.checked_mul(2))
                .map_or(ms(max_ms), |d| d.min(ms(max_ms)));
            prop_assert_eq!(p.backoff_cap(n), expected_cap);
            let j = Jitter::with_seed(seed);
            for _ in 0..20 {
                prop_assert!(p.backoff(n, &j) <= expected_cap);
            }
        }
    }
}

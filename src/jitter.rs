//! A tiny seedable random source for backoff and expiry jitter.
//!
//! SplitMix64 over an atomic counter: lock-free, `Sync`, and good enough to
//! spread retries and expiries; not for anything security-related. No `rand`
//! dependency is needed for this.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A thread-safe pseudo-random generator.
#[derive(Debug)]
pub(crate) struct Jitter {
    state: AtomicU64,
}

impl Jitter {
    /// A generator with a fixed seed: the same seed gives the same sequence.
    pub(crate) fn with_seed(seed: u64) -> Self {
        Jitter {
            state: AtomicU64::new(seed),
        }
    }

    /// A generator seeded from the process' hash randomness and the clock,
    /// so that processes started together do not jitter in step.
    pub(crate) fn from_entropy() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        Jitter::with_seed(h.finish())
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in `[0, 1)`.
    pub(crate) fn unit(&self) -> f64 {
        // 53 random bits: every value is exactly representable.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A duration uniform in `[0, max]` (full jitter).
    pub(crate) fn up_to(&self, max: Duration) -> Duration {
        let nanos = max.as_nanos().min(u64::MAX as u128) as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.next_u64() % (nanos.saturating_add(1)).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let a = Jitter::with_seed(7);
        let b = Jitter::with_seed(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn bounds_hold() {
        let j = Jitter::with_seed(1);
        let max = Duration::from_millis(250);
        for _ in 0..10_000 {
            assert!(j.up_to(max) <= max);
            let u = j.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert_eq!(j.up_to(Duration::ZERO), Duration::ZERO);
        // The largest duration does not overflow.
        let _ = j.up_to(Duration::MAX);
    }

    #[test]
    fn roughly_uniform() {
        let j = Jitter::with_seed(42);
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            buckets[(j.unit() * 10.0) as usize] += 1;
        }
        for b in buckets {
            assert!((9_000..11_000).contains(&b), "{buckets:?}");
        }
    }
}

//! Model-based property test: random operation sequences run against the
//! breaker and a plain reference model (`fuzz_support::check_breaker_case`),
//! compared after every step: results, verdicts, announced transitions and
//! the full snapshot.

use std::time::Duration;

use proptest::prelude::*;
use resilient_redis::fuzz_support::{check_breaker_case, BreakerOp};
use resilient_redis::{BreakerConfig, FailureRate, OpenBackoff};

fn op() -> impl Strategy<Value = BreakerOp> {
    prop_oneof![
        4 => Just(BreakerOp::Acquire),
        3 => any::<u8>().prop_map(BreakerOp::Success),
        3 => any::<u8>().prop_map(BreakerOp::Failure),
        1 => any::<u8>().prop_map(BreakerOp::Ignore),
        1 => any::<u8>().prop_map(BreakerOp::Drop),
        // Whole 100 ms steps, so that deadlines are hit exactly as often as passed.
        2 => (0u16..30).prop_map(|n| BreakerOp::Advance(n * 100)),
        1 => Just(BreakerOp::Reset).boxed(),
        1 => Just(BreakerOp::ForceOpen).boxed(),
    ]
}

fn config() -> impl Strategy<Value = BreakerConfig> {
    let ms = |r: std::ops::Range<u64>| r.prop_map(|n| Duration::from_millis(n / 100 * 100));
    let rate =
        (0u32..=100, ms(0..5_000), 0u32..10).prop_map(|(pct, window, min_calls)| FailureRate {
            threshold: f64::from(pct) / 100.0,
            window,
            min_calls,
        });
    let backoff =
        (1.0f64..4.0, ms(0..20_000), 0.0f64..=1.0).prop_map(|(multiplier, max, jitter)| {
            OpenBackoff {
                multiplier,
                max_open_timeout: max,
                jitter,
            }
        });
    (
        (0u32..6, 0u32..4, 0u32..4),
        (ms(0..3_000), ms(0..5_000)),
        proptest::option::of(rate),
        proptest::option::of(backoff),
    )
        .prop_map(
            |((f, s, h), (open, probe), failure_rate, backoff)| BreakerConfig {
                failure_threshold: f,
                success_threshold: s,
                half_open_max_requests: h,
                open_timeout: open,
                probe_timeout: probe,
                failure_rate,
                backoff,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn breaker_matches_reference_model(
        config in config(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 0..300),
    ) {
        check_breaker_case(&config, seed, &ops);
    }
}

/// The default configuration through a long outage-and-recovery scenario.
#[test]
fn default_config_matches_model_through_outage_and_recovery() {
    let mut ops = Vec::new();
    for _ in 0..5 {
        ops.extend([BreakerOp::Acquire, BreakerOp::Failure(0)]);
    }
    ops.extend([BreakerOp::Acquire, BreakerOp::Advance(60_000)]);
    ops.extend([
        BreakerOp::Acquire,
        BreakerOp::Acquire,
        BreakerOp::Acquire,
        BreakerOp::Acquire,
    ]);
    ops.extend([
        BreakerOp::Success(0),
        BreakerOp::Success(0),
        BreakerOp::Drop(0),
    ]);
    check_breaker_case(&BreakerConfig::default(), 0, &ops);
}

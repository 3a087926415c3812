//! Random operation sequences on the fallback store,
//! checked against plain `HashMap`/`Vec` models by the same function the
//! `fallback` fuzz target runs.

use proptest::prelude::*;
use resilient_redis::fuzz_support::fallback::{check_fallback_case, FallbackOp, KEYS};

fn op() -> impl Strategy<Value = FallbackOp> {
    let k = 0..KEYS;
    let small_ttl = proptest::option::of(0u16..2000);
    prop_oneof![
        4 => k.clone().prop_map(FallbackOp::Get),
        4 => (k.clone(), proptest::collection::vec(any::<u8>(), 0..300), small_ttl)
            .prop_map(|(k, v, t)| FallbackOp::Set(k, v, t)),
        2 => (k.clone(), prop_oneof![-3i64..3, Just(i64::MAX), Just(i64::MIN)])
            .prop_map(|(k, n)| FallbackOp::SetInt(k, n)),
        2 => k.clone().prop_map(FallbackOp::Delete),
        1 => k.clone().prop_map(FallbackOp::Exists),
        1 => (k.clone(), 0u16..2000).prop_map(|(k, t)| FallbackOp::Expire(k, t)),
        1 => k.clone().prop_map(FallbackOp::Persist),
        1 => k.clone().prop_map(FallbackOp::Ttl),
        2 => (k.clone(), prop_oneof![-2i64..3, Just(i64::MAX), Just(i64::MIN)])
            .prop_map(|(k, d)| FallbackOp::IncrBy(k, d)),
        1 => k.clone().prop_map(FallbackOp::Replay),
        2 => (0u16..1500).prop_map(FallbackOp::Advance),
        1 => Just(FallbackOp::Purge),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Bounds the sequence can never reach: the store must match the model
    /// exactly (no evictions at all).
    #[test]
    fn unbounded_store_matches_the_model(ops in proptest::collection::vec(op(), 1..200)) {
        check_fallback_case(1_000, 1 << 20, 4, &ops);
    }

    /// Tight bounds and any shard count: evictions happen, and every key the
    /// store drops must be counted as evicted; reads never return a value
    /// the model does not hold.
    #[test]
    fn bounded_store_never_returns_a_stale_value(
        max_entries in 1usize..12,
        max_bytes in 1usize..3000,
        shards in 1usize..8,
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        check_fallback_case(max_entries, max_bytes, shards, &ops);
    }
}

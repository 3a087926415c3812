//! Fuzz inputs, shared by the fuzz targets and by `tests/regression_fuzz.rs`
//! (which decodes committed crash inputs the same way libFuzzer does).
#![allow(dead_code)] // each includer uses only some cases

use arbitrary::Arbitrary;

/// Input of the `config` target.
#[derive(Arbitrary, Debug)]
pub struct ConfigCase {
    pub url: String,
    pub env: Vec<(u8, String)>,
}

/// The variables the loader reads; the fuzzer picks among them by index.
pub const ENV_NAMES: &[&str] = &[
    "REDIS_URL",
    "REDIS__URL",
    "REDIS_FALLBACK_URL",
    "REDIS_FALLBACK_ENABLED",
    "CACHE_SOCKET_CONNECT_TIMEOUT_MS",
    "CACHE_SOCKET_TIMEOUT_MS",
    "CACHE_CHECKOUT_TIMEOUT_MS",
    "CACHE_HEALTH_CHECK_INTERVAL",
    "CACHE_MAX_CONNECTIONS",
    "CACHE_MIN_IDLE",
    "CACHE_IDLE_TIMEOUT",
    "CACHE_MAX_LIFETIME",
    "CACHE_KEEPALIVE_IDLE",
    "CACHE_KEEPALIVE_INTERVAL",
    "CACHE_KEEPALIVE_COUNT",
    "CACHE_MAX_RETRIES",
    "CACHE_RETRY_DELAY",
    "CACHE_RETRY_MAX_DELAY",
    "CACHE_CALL_TIMEOUT_MS",
    "REDIS_CIRCUIT_BREAKER_THRESHOLD",
    "REDIS_CIRCUIT_BREAKER_TIMEOUT",
    "REDIS_CIRCUIT_BREAKER_SUCCESS_THRESHOLD",
    "REDIS_CIRCUIT_BREAKER_HALF_OPEN_MAX_REQUESTS",
    "REDIS_COMPRESSION_THRESHOLD",
    "REDIS_FAILOVER_COOLDOWN",
    "CACHE_KEY_PREFIX",
    "CACHE_DEFAULT_TTL",
    "CACHE_FALLBACK_MODE",
    "CACHE_FALLBACK_MAX_ENTRIES",
    "CACHE_FALLBACK_MAX_BYTES",
];

pub fn run_config(case: &ConfigCase) {
    if case.url.len() > 4096 || case.env.len() > 64 {
        return;
    }
    resilient_redis::fuzz_support::check_config_case(&case.url, &case.env, ENV_NAMES);
}

/// One operation of the `fallback` target; mirrors
/// `resilient_redis::fuzz_support::fallback::FallbackOp`.
#[derive(Arbitrary, Debug)]
pub enum FallbackOpCase {
    Get(u8),
    Set(u8, Vec<u8>, Option<u16>),
    SetInt(u8, i64),
    Delete(u8),
    Exists(u8),
    Expire(u8, u16),
    Persist(u8),
    Ttl(u8),
    IncrBy(u8, i64),
    Replay(u8),
    Advance(u16),
    Purge,
    Clear,
    JournalSet(u8),
    JournalDelete(u8),
    JournalDrain,
}

/// Input of the `fallback` target: bounds, shard count and operations.
#[derive(Arbitrary, Debug)]
pub struct FallbackCase {
    pub max_entries: u8,
    pub max_bytes: u16,
    pub shards: u8,
    pub ops: Vec<FallbackOpCase>,
}

pub fn run_fallback(case: &FallbackCase) {
    use resilient_redis::fuzz_support::fallback::{check_fallback_case, FallbackOp as Op};
    if case.ops.len() > 1000 {
        return;
    }
    let ops: Vec<Op> = case
        .ops
        .iter()
        .map(|op| match op {
            FallbackOpCase::Get(k) => Op::Get(*k),
            // Values past 4 KiB only slow the run; the bounds are u16 anyway.
            FallbackOpCase::Set(k, v, t) => Op::Set(*k, v[..v.len().min(4096)].to_vec(), *t),
            FallbackOpCase::SetInt(k, n) => Op::SetInt(*k, *n),
            FallbackOpCase::Delete(k) => Op::Delete(*k),
            FallbackOpCase::Exists(k) => Op::Exists(*k),
            FallbackOpCase::Expire(k, t) => Op::Expire(*k, *t),
            FallbackOpCase::Persist(k) => Op::Persist(*k),
            FallbackOpCase::Ttl(k) => Op::Ttl(*k),
            FallbackOpCase::IncrBy(k, d) => Op::IncrBy(*k, *d),
            FallbackOpCase::Replay(k) => Op::Replay(*k),
            FallbackOpCase::Advance(t) => Op::Advance(*t),
            FallbackOpCase::Purge => Op::Purge,
            FallbackOpCase::Clear => Op::Clear,
            FallbackOpCase::JournalSet(k) => Op::JournalSet(*k),
            FallbackOpCase::JournalDelete(k) => Op::JournalDelete(*k),
            FallbackOpCase::JournalDrain => Op::JournalDrain,
        })
        .collect();
    check_fallback_case(
        usize::from(case.max_entries),
        usize::from(case.max_bytes),
        usize::from(case.shards % 16),
        &ops,
    );
}

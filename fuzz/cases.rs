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

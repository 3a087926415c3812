//! Fuzz inputs, shared by the fuzz targets in `fuzz/` (which include this
//! file by path) and by `tests/regression_fuzz.rs` (which decodes the
//! inputs committed under `tests/fuzz_regressions/` the same way libFuzzer
//! does). It lives here, not in `fuzz/`, so that the published crate's
//! tests compile: `cargo package` leaves out `fuzz/`. Not declared in
//! `support/mod.rs`: it needs `arbitrary` and the `test-support` feature.
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
    "REDIS_FAILOVER_GRACE",
    "CACHE_KEY_PREFIX",
    "CACHE_DEFAULT_TTL",
    "CACHE_FALLBACK_MODE",
    "CACHE_FALLBACK_MAX_ENTRIES",
    "CACHE_FALLBACK_MAX_BYTES",
    "REDIS_SENTINEL_PASSWORD",
];

pub fn run_config(case: &ConfigCase) {
    if case.url.len() > 4096 || case.env.len() > 64 {
        return;
    }
    resilient_redis::fuzz_support::check_config_case(&case.url, &case.env, ENV_NAMES);
    // The same bytes as the rest of a sentinel URL, so the sentinel parser
    // is fuzzed without a dictionary (and the input format is unchanged).
    let sentinel = format!("redis+sentinel://{}", case.url);
    resilient_redis::fuzz_support::check_config_case(&sentinel, &case.env, ENV_NAMES);
    // And of a cluster URL (issue #14).
    let cluster = format!("redis+cluster://{}", case.url);
    resilient_redis::fuzz_support::check_config_case(&cluster, &case.env, ENV_NAMES);
}

/// One operation of the `fallback` target; mirrors
/// `resilient_redis::fuzz_support::fallback::FallbackOp`. The mirror exists
/// so that the library does not depend on `arbitrary`: only this crate and
/// the stable regression test derive it.
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
        })
        .collect();
    check_fallback_case(
        usize::from(case.max_entries),
        usize::from(case.max_bytes),
        usize::from(case.shards % 16),
        &ops,
    );
}

/// Input of the `breaker` target: a small configuration and a scenario.
#[derive(Arbitrary, Debug)]
pub struct BreakerCase {
    pub failure_threshold: u8,
    pub success_threshold: u8,
    pub half_open_max: u8,
    pub open_timeout_ms: u16,
    pub probe_timeout_ms: u16,
    /// (threshold %, window ms, min calls)
    pub rate: Option<(u8, u16, u8)>,
    /// (multiplier in 32nds above 1, max open ms, jitter %)
    pub backoff: Option<(u8, u16, u8)>,
    pub seed: u64,
    pub ops: Vec<BreakerCaseOp>,
}

/// Mirrors `fuzz_support::BreakerOp` (the library does not depend on `arbitrary`).
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum BreakerCaseOp {
    Acquire,
    Success(u8),
    Failure(u8),
    Ignore(u8),
    Drop(u8),
    Advance(u16),
    Reset,
    ForceOpen,
}

pub fn run_breaker(case: &BreakerCase) {
    use resilient_redis::fuzz_support::BreakerOp;
    use resilient_redis::{BreakerConfig, FailureRate, OpenBackoff};
    use std::time::Duration;

    if case.ops.len() > 1024 {
        return;
    }
    let ms = |n: u16| Duration::from_millis(u64::from(n));
    // Small thresholds (0 included: it must act as 1) reach every state quickly.
    let config = BreakerConfig {
        failure_threshold: u32::from(case.failure_threshold % 8),
        success_threshold: u32::from(case.success_threshold % 5),
        open_timeout: ms(case.open_timeout_ms),
        half_open_max_requests: u32::from(case.half_open_max % 5),
        probe_timeout: ms(case.probe_timeout_ms),
        failure_rate: case.rate.map(|(pct, window, min)| FailureRate {
            threshold: f64::from(pct % 101) / 100.0,
            window: ms(window),
            min_calls: u32::from(min % 16),
        }),
        backoff: case.backoff.map(|(m, max, jitter)| OpenBackoff {
            multiplier: 1.0 + f64::from(m) / 32.0,
            max_open_timeout: ms(max),
            jitter: f64::from(jitter % 101) / 100.0,
        }),
    };
    let ops: Vec<BreakerOp> = case
        .ops
        .iter()
        .map(|op| match *op {
            BreakerCaseOp::Acquire => BreakerOp::Acquire,
            BreakerCaseOp::Success(i) => BreakerOp::Success(i),
            BreakerCaseOp::Failure(i) => BreakerOp::Failure(i),
            BreakerCaseOp::Ignore(i) => BreakerOp::Ignore(i),
            BreakerCaseOp::Drop(i) => BreakerOp::Drop(i),
            BreakerCaseOp::Advance(n) => BreakerOp::Advance(n),
            BreakerCaseOp::Reset => BreakerOp::Reset,
            BreakerCaseOp::ForceOpen => BreakerOp::ForceOpen,
        })
        .collect();
    resilient_redis::fuzz_support::check_breaker_case(&config, case.seed, &ops);
}

/// Input of the `reply` target: raw bytes, as a server would send them.
pub fn run_reply(bytes: &[u8]) {
    if bytes.len() > 64 * 1024 {
        return;
    }
    resilient_redis::fuzz_support::check_reply(bytes);
}

/// Input of the `codec` target: raw bytes, as a value stored in Redis.
pub fn run_codec(bytes: &[u8]) {
    if bytes.len() > 1 << 20 {
        return;
    }
    resilient_redis::fuzz_support::check_codec(bytes);
}

/// Input of the `consistency` target; mirrors
/// `resilient_redis::fuzz_support::consistency::Action` (see `FallbackOpCase`
/// for why the mirror exists).
#[derive(Arbitrary, Debug)]
pub struct ConsistencyCase {
    /// Bit 0: replay (else invalidate); bit 1: write-through; bit 2: no
    /// secondary.
    pub config: u8,
    pub actions: Vec<ActionCase>,
}

#[derive(Arbitrary, Debug)]
pub enum OpCase {
    Read(u8),
    Write(u8),
    Delete(u8),
}

#[derive(Arbitrary, Debug)]
pub enum ActionCase {
    Start(u8, OpCase),
    Step(u8, bool),
    Down(bool),
    Up(bool),
    Failover,
    Restore,
    Evict(u8),
    Reconcile,
}

pub fn run_consistency(case: &ConsistencyCase) {
    use resilient_redis::fuzz_support::consistency::{
        check, Action, Ev, OpSpec, Reconcile, KEYS, THREADS,
    };
    if case.actions.len() > 2000 {
        return;
    }
    let t = |t: &u8| usize::from(*t) % THREADS;
    let k = |k: &u8| *k % KEYS;
    let actions: Vec<Action> = case
        .actions
        .iter()
        .map(|a| match a {
            ActionCase::Start(th, op) => Action::Start(
                t(th),
                match op {
                    OpCase::Read(x) => OpSpec::Read(k(x)),
                    OpCase::Write(x) => OpSpec::Write(k(x)),
                    OpCase::Delete(x) => OpSpec::Delete(k(x)),
                },
            ),
            ActionCase::Step(th, lose) => Action::Step(t(th), *lose),
            ActionCase::Down(p) => Action::Event(Ev::Down(*p)),
            ActionCase::Up(p) => Action::Event(Ev::Up(*p)),
            ActionCase::Failover => Action::Event(Ev::Failover),
            ActionCase::Restore => Action::Event(Ev::Restore),
            ActionCase::Evict(x) => Action::Event(Ev::Evict(k(x))),
            ActionCase::Reconcile => Action::Reconcile,
        })
        .collect();
    let mode = if case.config & 1 == 0 {
        Reconcile::Invalidate
    } else {
        Reconcile::Replay
    };
    check(mode, case.config & 2 != 0, case.config & 4 == 0, &actions);
}

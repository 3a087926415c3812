//! # resilient-redis
//!
//! A blocking Redis client for threaded services, CLIs and batch jobs that
//! keeps working when Redis misbehaves: idle connections reset by a cloud
//! load balancer, a server restart, a blackholed network, a hosted Redis
//! that starts answering "max requests limit exceeded".
//!
//! The layers, outside in: retries with full-jitter backoff and a retry
//! budget, a router with failover to a secondary Redis, one circuit breaker
//! and one bounded connection pool per endpoint, and an in-memory fallback
//! store used while Redis is unavailable.
//!
//! ## Usage
//!
//! ```
//! use std::time::Duration;
//! use resilient_redis::{Client, Config};
//!
//! // `Config::from_env()` reads REDIS_URL and friends; with no URL at all
//! // the client runs on its in-memory store, as here.
//! let client = Client::new(Config::memory_only().build()?)?;
//! client.set_ex("session:9", "data", Duration::from_secs(60))?;
//! let value: Option<String> = client.get("session:9")?;
//! assert_eq!(value.as_deref(), Some("data"));
//! println!("{}", client.health());
//! # Ok::<(), resilient_redis::Error>(())
//! ```
//!
//! The parts are usable on their own too: [`Pool`], [`CircuitBreaker`],
//! [`Retrier`] with [`RetryPolicy`] and [`RetryBudget`].
//!
//! ## Error handling
//!
//! Every fallible call returns [`Error`]: [`Error::kind`] says what failed
//! ([`ErrorKind`]), [`Error::class`] what to do about it (transient,
//! rate-limited, permanent), [`Error::may_have_executed`] whether a
//! non-idempotent command may have been applied. Availability failures are
//! answered from memory when the fallback is on, so callers mostly see
//! permanent errors: error replies such as `WRONGTYPE`, bad input, bad
//! credentials, a certificate that does not verify.
//!
//! ## Features
//!
//! - `tls` (default): `rediss://` through rustls with the ring provider.
//!   Without it a `rediss://` URL is a configuration error.
//! - `compression` (default): LZ4 value compression (pure Rust, `lz4_flex`
//!   with its safe encoder and decoder) above
//!   [`ConfigBuilder::compression_threshold`], which is off unless set.
//!   Without the feature the threshold is ignored and compressed values
//!   written by other clients are returned as stored.
//!
//! ## Log levels
//!
//! The crate logs through [`log`] and never configures a logger.
//!
//! - WARN: a breaker opened, failover engaged, the in-memory fallback engaged,
//!   a configuration that weakens security (TLS verification off), more keys
//!   written to an old sentinel master just before a switch than could be
//!   noted for invalidation (`fallback_max_entries`).
//! - INFO: recovery (breaker closed, primary restored, fallback released), a
//!   sentinel master switch (one line, with how long it took), a change of
//!   a Redis Cluster's slot map (one line per change).
//! - DEBUG: retries, connections created and closed with their reason.
//! - TRACE: per-command detail.
//!
//! Every WARN and INFO line carries structured fields as `log` key-values
//! (the `kv` feature of `log`): `operation`, `error_type`, `error_message`,
//! `error_count`, `circuit_breaker_state`, `endpoint`, and `cooldown_ms`,
//! `keys` or `duration_ms` where they apply. The message says the same in
//! words.
//!
//! Passwords never appear at any level: URLs are logged as
//! `redis://user:***@host:port`.
//!
//! ## Minimum supported Rust version
//!
//! Rust 1.88 (the `redis` crate's own minimum).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod breaker;
mod client;
mod clock;
mod codec;
mod config;
mod consistency;
mod error;
mod events;
// Part of the store's surface (statistics, purge, replay lookups) is used
// only by the reference model in
// `fuzz_support` and by the benches: without the `test-support` feature it
// is unused. Dead code is still caught by the all-features clippy run.
#[cfg_attr(not(feature = "test-support"), allow(dead_code, unused_imports))]
mod fallback;
mod jitter;
mod key_hash;
mod log_fields;
mod pool;
mod retry;
mod router;
mod stats;
mod thread_slot;
mod tls;
mod topology;

#[cfg(test)]
mod test_log;

// Test and fuzz helpers, only with the (non-default, non-API) feature
// `test-support`: see Cargo.toml.
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub mod fuzz_support;
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub mod test_support;

pub use breaker::{
    BreakerConfig, BreakerListener, BreakerSnapshot, BreakerState, CircuitBreaker, FailureRate,
    OpenBackoff, Permit, Rejected, Transition, TransitionReason, Verdict,
};
pub use client::{Client, ClientBuilder, EndpointHealth, Health, HealthStatus, LoadError};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock};
pub use config::{Config, ConfigBuilder, FallbackMode};
pub use error::{Error, ErrorClass, ErrorKind, RateLimit};
pub use events::{Event, EventListener, FailoverReason};
pub use fallback::Reconcile;
pub use pool::{CloseReason, Pool, PoolListener, PoolState, PoolStats, PooledConnection};
pub use retry::{
    is_idempotent, is_pipeline_idempotent, Attempt, Idempotency, Retrier, RetryBudget,
    RetryObserver, RetryPolicy,
};

/// The `redis` crate this one is built on, re-exported so that callers use
/// the same version for commands, pipelines and values.
pub use redis;
pub use stats::{DurationHistogram, EndpointStats, Stats};

// Compiles the README's examples as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

//! Hooks for the integration tests in `tests/`, which reach the same
//! connect path the pool uses. Not part of the API: hidden from the docs
//! and may change at any time.

use crate::{Config, Error};

/// The `redis::ConnectionInfo` the pool connects the primary with (TLS
/// material attached), or `None` for a memory-only config.
pub fn primary_connection_info(config: &Config) -> Option<redis::ConnectionInfo> {
    config.primary.as_ref().map(|e| e.info.clone())
}

/// How the pool classifies a failed connect to the primary.
pub fn primary_connect_error(config: &Config, err: redis::RedisError) -> Option<Error> {
    config
        .primary
        .as_ref()
        .map(|e| crate::tls::connect_error(err, e.tls))
}

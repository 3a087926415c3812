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

/// The client's call-duration histogram on its own, for its benchmark
/// (`benches/client.rs`): [`DurationHistogramProbe::timed_call`] is exactly
/// what the call path adds per call.
#[derive(Default)]
pub struct DurationHistogramProbe {
    histogram: crate::stats::Histogram,
}

impl DurationHistogramProbe {
    /// Records `took` as an `ok` call to the primary.
    pub fn record(&self, took: std::time::Duration) {
        self.histogram.record(
            crate::stats::CallEndpoint::Primary,
            crate::stats::CallOutcome::Ok,
            took,
        );
    }

    /// Reads `clock` before and after `call`, and records the duration:
    /// the histogram's whole cost on the call path.
    pub fn timed_call<T>(&self, clock: &crate::SharedClock, call: impl FnOnce() -> T) -> T {
        let start = clock.now();
        let out = call();
        self.record(clock.now().saturating_duration_since(start));
        out
    }

    /// Calls counted.
    pub fn count(&self) -> u64 {
        self.histogram.snapshot().iter().map(|h| h.count).sum()
    }
}

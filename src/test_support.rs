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
/// (`benches/client.rs`). A call reads the clock twice whether or not it is
/// timed (the pool's checkout and checkin): [`DurationHistogramProbe::untimed_call`]
/// is those two reads, [`DurationHistogramProbe::timed_call`] is the same
/// call timed as the client times it, so the difference is exactly what
/// the histogram adds per call.
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

    /// A call's own clock reads, untimed: the pool's "now" at checkout and
    /// at checkin.
    pub fn untimed_call(clock: &crate::SharedClock) {
        std::hint::black_box(clock.now());
        std::hint::black_box(clock.now());
    }

    /// The same call, timed and recorded as the client does it: the timer
    /// starts with the checkout's read and ends with the checkin's.
    pub fn timed_call(&self, clock: &crate::SharedClock) {
        use crate::stats::call_timer;
        let timer = call_timer::CallTimer::start(&**clock);
        std::hint::black_box(call_timer::checkout_now(&**clock));
        call_timer::checked_in(std::hint::black_box(clock.now()));
        self.record(timer.finish(&**clock, None));
    }

    /// Calls counted.
    pub fn count(&self) -> u64 {
        self.histogram.snapshot().iter().map(|h| h.count).sum()
    }
}

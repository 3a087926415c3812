//! [`Config::call_bound`]: the longest one call can take, derived from the
//! code paths a call walks.

use std::time::Duration;

use super::{Config, Endpoint};
use crate::pool::handshake_replies;
use crate::retry::RetryPolicy;

/// What one endpoint attempt may take beyond its timeouts: the 1 ms floor
/// of a health-check `PING` that starts at the checkout deadline, the 1 ms
/// granularity of a pipeline's read deadline, and the kernel rounding each
/// socket timeout up to its timer tick (4 ms at `HZ=250`, 10 ms at
/// `HZ=100`) for the last wait of the checkout and of the I/O.
pub(crate) const ATTEMPT_OVERHEAD: Duration = Duration::from_millis(20);

impl Config {
    /// The longest a call (`get`, `set`, `mset`, `execute`, `pipeline`, ...)
    /// can take with this configuration before it returns a value or an
    /// error. [`Duration::ZERO`] for a memory-only configuration (a call
    /// never waits). Never panics: every sum saturates.
    ///
    /// Without [`call_timeout`](Config::call_timeout):
    ///
    /// ```text
    /// (max_retries + 1) × Σ_endpoints (checkout_timeout + tls_dial_overrun
    ///                                   + socket_timeout + 20 ms)
    ///   + Σ_{n < max_retries} min(retry_max_delay, retry_base_delay · 2^n)
    /// ```
    ///
    /// - every attempt checks a connection out: waiting for one, a
    ///   health-check `PING` and a connect all end by the checkout
    ///   deadline; a TLS connect can overrun it by one handshake wait
    ///   (`min(connect_timeout, checkout_timeout)` divided among the
    ///   handshake replies), which is `tls_dial_overrun`;
    /// - then sends and reads within one `socket_timeout`: a pipeline is
    ///   abandoned at its first timeout instead of waiting once per command;
    /// - the sum is over the primary and the secondary: an attempt that
    ///   fails over re-sends to the secondary within the same attempt;
    /// - a [`PoolTimeout`](crate::ErrorKind::PoolTimeout) is not retried,
    ///   but an attempt that waited nearly a checkout timeout and then timed
    ///   out on the socket is, so both terms count per attempt;
    /// - for a `redis+sentinel://` endpoint, an attempt after a `READONLY`
    ///   or a failed connect first asks the sentinels where the master is,
    ///   within one `connect_timeout` more, and the first attempts after a
    ///   master switch wait for the deletion on the new master of the keys
    ///   it may lack, one `socket_timeout` more (both counted in that
    ///   endpoint's overrun, so also with `call_timeout`); a dial's
    ///   discovery shares the dial's time;
    /// - for a `redis+cluster://` endpoint, each attempt may follow up to
    ///   [`max_redirects`](Config::max_redirects) redirects, each one more
    ///   checkout and send (one more socket wait for the `ASKING` of an
    ///   `ASK`), and the first call of a client reads the slot map within
    ///   one `connect_timeout` and one `socket_timeout`;
    /// - the backoff sleeps are at most their caps
    ///   ([`RetryPolicy::max_total_backoff`]).
    ///
    /// With `call_timeout`, also at most `call_timeout + Σ_endpoints
    /// (tls_dial_overrun + 20 ms)`: each attempt's checkout ends by the call
    /// deadline and its socket timeouts are lowered to the time left, and
    /// no retry starts whose backoff would end past it. The smaller of the
    /// two is returned.
    ///
    /// The bound counts one wait per socket operation, which holds when a
    /// request fits in the socket's send buffer (so writing it does not
    /// wait) and each reply arrives in one piece (`socket_timeout` is a
    /// limit per wait for bytes, not per reply: a reply larger than the
    /// socket buffers trickling in can take longer), and when the host
    /// name resolves to one address (redis-rs tries each address with the
    /// full connect timeout). Reconciliation after an outage is not part of
    /// a call.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilient_redis::Config;
    ///
    /// let ms = Duration::from_millis;
    /// let config = Config::builder("redis://127.0.0.1:6379")
    ///     .checkout_timeout(ms(200))
    ///     .socket_timeout(ms(200))
    ///     .max_retries(2)
    ///     .retry_base_delay(ms(5))
    ///     .retry_max_delay(ms(20))
    ///     .build()?;
    /// // 3 × (200 + 200 + 20) + (5 + 10)
    /// assert_eq!(config.call_bound(), ms(1275));
    ///
    /// let capped = Config::builder("redis://127.0.0.1:6379")
    ///     .call_timeout(Some(ms(300)))
    ///     .build()?;
    /// assert_eq!(capped.call_bound(), ms(320));
    /// # Ok::<(), resilient_redis::Error>(())
    /// ```
    pub fn call_bound(&self) -> Duration {
        let mut attempt = Duration::ZERO;
        let mut overrun = Duration::ZERO;
        for endpoint in self.primary.iter().chain(self.secondary.iter()) {
            let mut late = self
                .tls_dial_overrun(endpoint)
                .saturating_add(ATTEMPT_OVERHEAD);
            if endpoint.sentinel.is_some() {
                // After a READONLY or a failed connect, an attempt asks the
                // sentinels where the master is first, within one connect
                // timeout (plus a TLS handshake wait, as for a dial); after
                // a switch, the first attempts on the new master wait for
                // the deletion of what it may lack (one socket wait).
                late = late
                    .saturating_add(self.connect_timeout)
                    .saturating_add(self.tls_dial_overrun(endpoint))
                    .saturating_add(self.socket_timeout);
            }
            let mut one = self
                .checkout_timeout
                .saturating_add(self.socket_timeout)
                .saturating_add(late);
            if endpoint.cluster.is_some() {
                // A redirect re-sends to another node within the attempt
                // (an ASK with one more socket wait for ASKING), and the
                // first call of a client reads the slot map first, within
                // one connect and one socket timeout (plus a TLS wait).
                let redirect = one.saturating_add(self.socket_timeout);
                let discovery = self
                    .connect_timeout
                    .saturating_add(self.socket_timeout)
                    .saturating_add(self.tls_dial_overrun(endpoint));
                one = one
                    .saturating_add(redirect.saturating_mul(self.max_redirects))
                    .saturating_add(discovery);
                late = late
                    .saturating_mul(self.max_redirects.saturating_add(1))
                    .saturating_add(discovery);
            }
            attempt = attempt.saturating_add(one);
            overrun = overrun.saturating_add(late);
        }
        if attempt.is_zero() {
            return Duration::ZERO;
        }
        let retried = attempt
            .saturating_mul(self.max_retries.saturating_add(1))
            .saturating_add(RetryPolicy::from(self).max_total_backoff());
        match self.call_timeout {
            Some(limit) => retried.min(limit.saturating_add(overrun)),
            None => retried,
        }
    }

    /// How far a connect to `endpoint` can run past its timeout: redis-rs
    /// divides nothing for the TLS handshake, which waits once more (for
    /// the server's flight) with the per-reply share of the timeout.
    fn tls_dial_overrun(&self, endpoint: &Endpoint) -> Duration {
        if !endpoint.tls {
            return Duration::ZERO;
        }
        // A dial never gets more than the connect timeout, nor more than
        // the checkout deadline leaves.
        let dial = self.connect_timeout.min(self.checkout_timeout);
        dial / handshake_replies(&endpoint.info)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is a bug to see
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn plain() -> Config {
        Config::builder("redis://127.0.0.1:6379")
            .checkout_timeout(ms(200))
            .connect_timeout(ms(300))
            .socket_timeout(ms(100))
            .max_retries(2)
            .retry_base_delay(ms(10))
            .retry_max_delay(ms(15))
            .build()
            .unwrap()
    }

    #[test]
    fn every_term_counts() {
        // 3 attempts × (200 + 100 + 20) + backoff caps 10 + 15.
        assert_eq!(plain().call_bound(), ms(985));

        // A secondary doubles each attempt: failover re-sends within it.
        let mut c = plain();
        c.secondary = c.primary.clone();
        assert_eq!(c.call_bound(), ms(3 * 640 + 25));

        // TLS: one more handshake wait, the dial (min(300, 200)) shared by
        // the handshake replies (the two CLIENT SETINFO).
        let tls = Config::builder("rediss://localhost:6380")
            .checkout_timeout(ms(200))
            .connect_timeout(ms(300))
            .socket_timeout(ms(100))
            .max_retries(0)
            .build()
            .unwrap();
        assert_eq!(handshake_replies(&tls.primary.as_ref().unwrap().info), 2);
        assert_eq!(tls.call_bound(), ms(200 + 100 + 100 + 20));

        assert_eq!(
            Config::memory_only().build().unwrap().call_bound(),
            Duration::ZERO
        );
    }

    #[test]
    fn call_timeout_caps_it_when_smaller() {
        let mut c = plain();
        c.call_timeout = Some(ms(250));
        assert_eq!(c.call_bound(), ms(270));
        c.secondary = c.primary.clone();
        assert_eq!(c.call_bound(), ms(290));
        c.call_timeout = Some(ms(10_000));
        assert_eq!(c.call_bound(), ms(3 * 640 + 25));
    }

    #[test]
    fn huge_inputs_saturate_instead_of_panicking() {
        let mut c = plain();
        c.secondary = Config::builder("rediss://localhost:6380")
            .build()
            .unwrap()
            .primary;
        c.checkout_timeout = Duration::MAX;
        c.connect_timeout = Duration::MAX;
        c.socket_timeout = Duration::MAX;
        c.max_retries = u32::MAX;
        c.retry_base_delay = Duration::MAX;
        c.retry_max_delay = Duration::MAX;
        assert_eq!(c.call_bound(), Duration::MAX);
        c.call_timeout = Some(Duration::MAX);
        assert_eq!(c.call_bound(), Duration::MAX);
        c.call_timeout = Some(Duration::MAX - ms(1));
        assert_eq!(c.call_bound(), Duration::MAX);

        // Each term alone at its maximum.
        for field in 0..4 {
            let mut c = plain();
            match field {
                0 => c.checkout_timeout = Duration::MAX,
                1 => c.socket_timeout = Duration::MAX,
                2 => c.retry_max_delay = Duration::MAX,
                _ => c.max_retries = u32::MAX,
            }
            if field == 2 {
                c.retry_base_delay = Duration::MAX;
            }
            let bound = c.call_bound();
            assert!(bound > ms(985), "field {field}: {bound:?}");
            c.call_timeout = Some(ms(1));
            assert_eq!(c.call_bound(), ms(21), "field {field}");
        }
    }

    #[test]
    fn the_smallest_config_is_not_zero() {
        let c = Config::builder("redis://127.0.0.1:6379")
            .checkout_timeout(ms(1))
            .connect_timeout(ms(1))
            .socket_timeout(ms(1))
            .max_retries(0)
            .build()
            .unwrap();
        assert_eq!(c.call_bound(), ms(22));
    }
}

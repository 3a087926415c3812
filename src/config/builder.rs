//! [`ConfigBuilder`] and the checks every value goes through.

use std::fmt;
use std::time::Duration;

use super::{limits, Config, Endpoint, FallbackMode};
use crate::error::Error;

/// Builds a [`Config`]; every setter is checked by [`ConfigBuilder::build`].
#[derive(Clone)]
#[must_use]
pub struct ConfigBuilder {
    url: Option<String>,
    fallback_url: Option<String>,
    fallback_enabled: Option<bool>,
    /// The sentinels' password (never shown).
    sentinel_password: Option<String>,
    /// The values set so far (the env loader reads them back).
    pub(super) config: Config,
}

impl ConfigBuilder {
    pub(super) fn new(url: Option<String>) -> ConfigBuilder {
        ConfigBuilder {
            url,
            fallback_url: None,
            fallback_enabled: None,
            sentinel_password: None,
            config: Config::default(),
        }
    }

    /// Connect timeout (TCP connect plus handshake). Defaults to 2 s.
    pub fn connect_timeout(mut self, v: Duration) -> Self {
        self.config.connect_timeout = v;
        self
    }

    /// Read and write timeout of every socket. Defaults to 2 s.
    pub fn socket_timeout(mut self, v: Duration) -> Self {
        self.config.socket_timeout = v;
        self
    }

    /// Most connections open per endpoint (idle + in use + connecting).
    /// Defaults to 20.
    pub fn max_connections(mut self, v: u32) -> Self {
        self.config.max_connections = v;
        self
    }

    /// Idle connections kept warm per endpoint. Defaults to 0.
    pub fn min_idle(mut self, v: u32) -> Self {
        self.config.min_idle = v;
        self
    }

    /// How long a call waits for a pooled connection. Defaults to 2 s.
    pub fn checkout_timeout(mut self, v: Duration) -> Self {
        self.config.checkout_timeout = v;
        self
    }

    /// A connection idle for longer than this is checked with `PING` before
    /// reuse. Defaults to 30 s.
    pub fn health_check_interval(mut self, v: Duration) -> Self {
        self.config.health_check_interval = v;
        self
    }

    /// Idle connections older than this are closed. Defaults to 300 s;
    /// `None` disables.
    pub fn idle_timeout(mut self, v: Option<Duration>) -> Self {
        self.config.idle_timeout = v;
        self
    }

    /// Connections older than this (with jitter) are closed. Defaults to
    /// 30 min; `None` disables.
    pub fn max_lifetime(mut self, v: Option<Duration>) -> Self {
        self.config.max_lifetime = v;
        self
    }

    /// TCP keepalive idle time before the first probe. Defaults to 60 s.
    pub fn keepalive_idle(mut self, v: Duration) -> Self {
        self.config.keepalive_idle = v;
        self
    }

    /// TCP keepalive interval between probes. Defaults to 30 s.
    pub fn keepalive_interval(mut self, v: Duration) -> Self {
        self.config.keepalive_interval = v;
        self
    }

    /// TCP keepalive probes before the connection is dropped. Defaults to 3.
    pub fn keepalive_count(mut self, v: u32) -> Self {
        self.config.keepalive_count = v;
        self
    }

    /// Consecutive failures that open the breaker. Defaults to 5.
    pub fn failure_threshold(mut self, v: u32) -> Self {
        self.config.failure_threshold = v;
        self
    }

    /// Consecutive half-open successes that close the breaker. Defaults to 2.
    pub fn success_threshold(mut self, v: u32) -> Self {
        self.config.success_threshold = v;
        self
    }

    /// How long the breaker stays open before probing. Defaults to 60 s.
    pub fn open_timeout(mut self, v: Duration) -> Self {
        self.config.open_timeout = v;
        self
    }

    /// Probes admitted at once while half-open. Defaults to 3.
    pub fn half_open_max_requests(mut self, v: u32) -> Self {
        self.config.half_open_max_requests = v;
        self
    }

    /// Retries after the first attempt. Defaults to 2.
    pub fn max_retries(mut self, v: u32) -> Self {
        self.config.max_retries = v;
        self
    }

    /// Backoff base delay. Defaults to 100 ms.
    pub fn retry_base_delay(mut self, v: Duration) -> Self {
        self.config.retry_base_delay = v;
        self
    }

    /// Backoff cap. Defaults to 2 s.
    pub fn retry_max_delay(mut self, v: Duration) -> Self {
        self.config.retry_max_delay = v;
        self
    }

    /// Overall deadline of one call: checkouts, socket I/O (each attempt's
    /// socket timeouts are lowered to the time left) and backoff. Defaults
    /// to `None`: bounded by attempts × timeouts only. See
    /// [`Config::call_bound`].
    pub fn call_timeout(mut self, v: Option<Duration>) -> Self {
        self.config.call_timeout = v;
        self
    }

    /// The password of the sentinels (`requirepass` in sentinel.conf), for
    /// `redis+sentinel://` URLs; the password in the URL is the data
    /// nodes'. Never shown in `Debug`, errors or logs. Defaults to none.
    pub fn sentinel_password(mut self, password: impl Into<String>) -> Self {
        self.sentinel_password = Some(password.into());
        self
    }

    /// A secondary Redis to fail over to. Defaults to none.
    pub fn fallback_url(mut self, url: impl Into<String>) -> Self {
        self.fallback_url = Some(url.into());
        self
    }

    /// Whether the secondary Redis is used. Defaults to `true` when a
    /// fallback URL is set; `true` without a URL is an error.
    pub fn fallback_enabled(mut self, v: bool) -> Self {
        self.fallback_enabled = Some(v);
        self
    }

    /// What the in-memory store does. Defaults to [`FallbackMode::OnFailure`].
    pub fn fallback_mode(mut self, v: FallbackMode) -> Self {
        self.config.fallback_mode = v;
        self
    }

    /// Most entries in the in-memory store. Defaults to 10 000.
    pub fn fallback_max_entries(mut self, v: usize) -> Self {
        self.config.fallback_max_entries = v;
        self
    }

    /// Most bytes the in-memory fallback takes: the store's keys and values,
    /// and the journal's keys (a quarter of the bound is kept for those; a
    /// write that would not fit in the journal is refused with
    /// [`ErrorKind::JournalFull`](crate::ErrorKind::JournalFull)). Defaults
    /// to 64 MiB.
    pub fn fallback_max_bytes(mut self, v: usize) -> Self {
        self.config.fallback_max_bytes = v;
        self
    }

    /// Prefix put before every key (a namespace). Defaults to empty.
    pub fn key_prefix(mut self, v: impl Into<String>) -> Self {
        self.config.key_prefix = v.into();
        self
    }

    /// TTL applied by `set` when none is given. Defaults to `None` (no expiry).
    pub fn default_ttl(mut self, v: Option<Duration>) -> Self {
        self.config.default_ttl = v;
        self
    }

    /// Values at least this many bytes are stored LZ4-compressed, when that
    /// saves at least 1/8 of their size; `None` stores every value as
    /// given. Defaults to `None`: other services may read the same keys,
    /// and they would see the compressed bytes (format in the README).
    /// `Some(512)` is what the Python design this crate replaces used.
    ///
    /// Compressed values are read back whatever this setting, so it can be
    /// turned on and off across a fleet. Needs the `compression` feature
    /// (on by default); without it the setting is ignored.
    pub fn compression_threshold(mut self, v: Option<usize>) -> Self {
        self.config.compression_threshold = v;
        self
    }

    /// Automatic pipelining: concurrent calls from many threads to one
    /// endpoint share one of its pool's connections; requests that queue
    /// up while it is busy are written in one batch and their replies read
    /// back in order. A call that finds it idle sends and reads itself (no
    /// hop to another thread); while calls queue, a thread of the client's
    /// (`rr-pipeline`, one per endpoint, started at the first contention)
    /// reads the replies and hands them over. With fewer calls in progress
    /// than [`auto_pipeline_share_from`](Self::auto_pipeline_share_from),
    /// a call that finds it busy takes a pooled connection of its own
    /// instead. Blocking commands, `MULTI`/`EXEC`/`WATCH`, `SUBSCRIBE`,
    /// connection-state commands (`SELECT`, `CLIENT`, `AUTH`, `HELLO`) and
    /// commands the client does not know always get a connection of their
    /// own. Defaults to `false`: see README, Automatic pipelining, for the
    /// measurements behind that. Turn it on for many threads sharing one
    /// client.
    pub fn auto_pipeline(mut self, v: bool) -> Self {
        self.config.auto_pipeline = v;
        self
    }

    /// With [`auto_pipeline`](Self::auto_pipeline): how many calls must be
    /// in progress on an endpoint for a call that finds the shared
    /// connection busy to wait for it; with fewer, it takes a pooled
    /// connection of its own. Batches of one or two gain nothing and cost
    /// a hop to another thread. Defaults to 8; 0 or 1: always wait.
    pub fn auto_pipeline_share_from(mut self, calls: usize) -> Self {
        self.config.auto_pipeline_share_from = calls;
        self
    }

    /// How long the primary is left alone after a failover. Defaults to 5 min.
    pub fn failover_cooldown(mut self, v: Duration) -> Self {
        self.config.failover_cooldown = v;
        self
    }

    /// No switch back to the primary within this long after a switch.
    /// Defaults to the longer of `health_check_interval` and `open_timeout`.
    pub fn failover_grace(mut self, v: Duration) -> Self {
        self.config.failover_grace = Some(v);
        self
    }

    /// Redis Cluster only: reads (`get`, `mget`, `exists`, read-only
    /// commands) may go to a replica of the key's master. Defaults to
    /// `false`. Replication is asynchronous, so such a read may be stale
    /// with respect to writes by *other* processes; a key this process
    /// wrote is always read from its master (read-your-writes holds). Each
    /// replica read costs one more round trip (`READONLY` first).
    pub fn read_from_replicas(mut self, v: bool) -> Self {
        self.config.read_from_replicas = v;
        self
    }

    /// Redis Cluster only: redirects (`MOVED`, `ASK`) one attempt follows
    /// before it fails with a transient error the retry loop may retry.
    /// Defaults to 5; from 0 to 16.
    pub fn max_redirects(mut self, v: u32) -> Self {
        self.config.max_redirects = v;
        self
    }

    /// Checks every value and builds the config.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) naming the first
    /// field that is out of range or the URL that does not parse.
    pub fn build(self) -> Result<Config, Error> {
        self.build_labelled(&Labels::FIELDS)
    }

    /// `build`, with error messages naming `labels` (field or env names).
    pub(super) fn build_labelled(self, labels: &Labels) -> Result<Config, Error> {
        use limits::*;
        let mut c = self.config;
        c.primary = match &self.url {
            Some(raw) => Some(Endpoint::parse(labels.url, raw)?),
            None => None,
        };
        let enabled = self.fallback_enabled.unwrap_or(self.fallback_url.is_some());
        c.secondary = match (&self.fallback_url, enabled) {
            (Some(raw), true) => Some(Endpoint::parse(labels.fallback_url, raw)?),
            (Some(raw), false) => {
                // Still checked: a wrong value is an error even while unused.
                Endpoint::parse(labels.fallback_url, raw)?;
                None
            }
            (None, true) => {
                return Err(Error::config(format!(
                    "{}: is true but {} is not set",
                    labels.fallback_enabled, labels.fallback_url
                )))
            }
            (None, false) => None,
        };
        super::sentinel::apply_password(
            labels,
            self.sentinel_password.as_deref(),
            [c.primary.as_mut(), c.secondary.as_mut()],
        )?;
        crate::tls::apply(&c.tls, labels, c.primary.as_mut(), c.secondary.as_mut())?;
        if c.secondary.is_some() && c.primary.is_none() {
            return Err(Error::config(format!(
                "{}: a fallback Redis needs a primary {} as well",
                labels.fallback_url, labels.url
            )));
        }

        let socket = MIN_DURATION..=MAX_SOCKET_TIMEOUT;
        check_duration(labels.connect_timeout, c.connect_timeout, &socket)?;
        check_duration(labels.socket_timeout, c.socket_timeout, &socket)?;
        check_duration(labels.checkout_timeout, c.checkout_timeout, &socket)?;
        check_duration(
            labels.health_check_interval,
            c.health_check_interval,
            &(MIN_DURATION..=MAX_INTERVAL),
        )?;
        let expiry = MIN_DURATION..=MAX_EXPIRY;
        check_optional(labels.idle_timeout, c.idle_timeout, &expiry)?;
        check_optional(labels.max_lifetime, c.max_lifetime, &expiry)?;
        let keepalive = Duration::from_secs(1)..=MAX_KEEPALIVE;
        check_duration(labels.keepalive_idle, c.keepalive_idle, &keepalive)?;
        check_duration(labels.keepalive_interval, c.keepalive_interval, &keepalive)?;
        check_u32(
            labels.keepalive_count,
            c.keepalive_count,
            1,
            MAX_KEEPALIVE_COUNT,
        )?;
        check_u32(
            labels.max_connections,
            c.max_connections,
            1,
            MAX_CONNECTIONS,
        )?;
        check_u32(labels.min_idle, c.min_idle, 0, c.max_connections)?;
        check_u32(
            labels.failure_threshold,
            c.failure_threshold,
            1,
            MAX_THRESHOLD,
        )?;
        check_u32(
            labels.success_threshold,
            c.success_threshold,
            1,
            MAX_THRESHOLD,
        )?;
        check_u32(
            labels.half_open_max_requests,
            c.half_open_max_requests,
            1,
            MAX_THRESHOLD,
        )?;
        check_duration(
            labels.open_timeout,
            c.open_timeout,
            &(MIN_DURATION..=MAX_INTERVAL),
        )?;
        check_u32(labels.max_retries, c.max_retries, 0, MAX_RETRIES)?;
        check_duration(
            labels.retry_base_delay,
            c.retry_base_delay,
            &(Duration::ZERO..=MAX_RETRY_DELAY),
        )?;
        check_duration(
            labels.retry_max_delay,
            c.retry_max_delay,
            &(c.retry_base_delay..=MAX_RETRY_DELAY),
        )?;
        check_optional(
            labels.call_timeout,
            c.call_timeout,
            &(MIN_DURATION..=MAX_SOCKET_TIMEOUT),
        )?;
        check_usize(
            labels.fallback_max_entries,
            c.fallback_max_entries,
            1,
            MAX_FALLBACK_ENTRIES,
        )?;
        check_usize(
            labels.fallback_max_bytes,
            c.fallback_max_bytes,
            1,
            MAX_FALLBACK_BYTES,
        )?;
        if c.key_prefix.len() > MAX_KEY_PREFIX {
            return Err(Error::config(format!(
                "{}: expected at most {MAX_KEY_PREFIX} bytes, got {}",
                labels.key_prefix,
                c.key_prefix.len()
            )));
        }
        check_optional(labels.default_ttl, c.default_ttl, &(MIN_DURATION..=MAX_TTL))?;
        if let Some(threshold) = c.compression_threshold {
            check_usize(
                labels.compression_threshold,
                threshold,
                0,
                MAX_COMPRESSION_THRESHOLD,
            )?;
        }
        check_duration(
            labels.failover_cooldown,
            c.failover_cooldown,
            &(MIN_DURATION..=MAX_INTERVAL),
        )?;
        check_optional(
            labels.failover_grace,
            c.failover_grace,
            &(MIN_DURATION..=MAX_INTERVAL),
        )?;
        check_u32("max_redirects", c.max_redirects, 0, 16)?;
        Ok(c)
    }
}

/// The names that error messages use for each setting: builder field names,
/// or environment variable names when loading from the environment.
#[derive(Clone, Copy)]
pub(crate) struct Labels {
    pub url: &'static str,
    pub fallback_url: &'static str,
    pub fallback_enabled: &'static str,
    pub connect_timeout: &'static str,
    pub socket_timeout: &'static str,
    pub max_connections: &'static str,
    pub min_idle: &'static str,
    pub checkout_timeout: &'static str,
    pub health_check_interval: &'static str,
    pub idle_timeout: &'static str,
    pub max_lifetime: &'static str,
    pub keepalive_idle: &'static str,
    pub keepalive_interval: &'static str,
    pub keepalive_count: &'static str,
    pub failure_threshold: &'static str,
    pub success_threshold: &'static str,
    pub open_timeout: &'static str,
    pub half_open_max_requests: &'static str,
    pub max_retries: &'static str,
    pub retry_base_delay: &'static str,
    pub retry_max_delay: &'static str,
    pub call_timeout: &'static str,
    pub fallback_max_entries: &'static str,
    pub fallback_max_bytes: &'static str,
    pub key_prefix: &'static str,
    pub default_ttl: &'static str,
    pub compression_threshold: &'static str,
    pub failover_cooldown: &'static str,
    pub failover_grace: &'static str,
    pub tls_ca_file: &'static str,
    pub tls_cert_file: &'static str,
    pub tls_key_file: &'static str,
    pub sentinel_password: &'static str,
}

impl Labels {
    const FIELDS: Labels = Labels {
        url: "url",
        fallback_url: "fallback_url",
        fallback_enabled: "fallback_enabled",
        connect_timeout: "connect_timeout",
        socket_timeout: "socket_timeout",
        max_connections: "max_connections",
        min_idle: "min_idle",
        checkout_timeout: "checkout_timeout",
        health_check_interval: "health_check_interval",
        idle_timeout: "idle_timeout",
        max_lifetime: "max_lifetime",
        keepalive_idle: "keepalive_idle",
        keepalive_interval: "keepalive_interval",
        keepalive_count: "keepalive_count",
        failure_threshold: "failure_threshold",
        success_threshold: "success_threshold",
        open_timeout: "open_timeout",
        half_open_max_requests: "half_open_max_requests",
        max_retries: "max_retries",
        retry_base_delay: "retry_base_delay",
        retry_max_delay: "retry_max_delay",
        call_timeout: "call_timeout",
        fallback_max_entries: "fallback_max_entries",
        fallback_max_bytes: "fallback_max_bytes",
        key_prefix: "key_prefix",
        default_ttl: "default_ttl",
        compression_threshold: "compression_threshold",
        failover_cooldown: "failover_cooldown",
        failover_grace: "failover_grace",
        tls_ca_file: "tls_ca_file",
        tls_cert_file: "tls_client_cert",
        tls_key_file: "tls_client_key",
        sentinel_password: "sentinel_password",
    };
}

fn check_duration(
    label: &str,
    v: Duration,
    range: &std::ops::RangeInclusive<Duration>,
) -> Result<(), Error> {
    if range.contains(&v) {
        Ok(())
    } else {
        Err(Error::config(format!(
            "{label}: expected a duration from {:?} to {:?}, got {v:?}",
            range.start(),
            range.end()
        )))
    }
}

fn check_optional(
    label: &str,
    v: Option<Duration>,
    range: &std::ops::RangeInclusive<Duration>,
) -> Result<(), Error> {
    match v {
        Some(v) => check_duration(label, v, range),
        None => Ok(()),
    }
}

fn check_u32(label: &str, v: u32, min: u32, max: u32) -> Result<(), Error> {
    check_usize(label, v as usize, min as usize, max as usize)
}

fn check_usize(label: &str, v: usize, min: usize, max: usize) -> Result<(), Error> {
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        Err(Error::config(format!(
            "{label}: expected a whole number from {min} to {max}, got {v}"
        )))
    }
}

impl fmt::Debug for ConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The raw URLs may hold passwords and are not yet parsed: never show them.
        f.debug_struct("ConfigBuilder")
            .field("url", &self.url.as_ref().map(|_| "<set, not shown>"))
            .field(
                "fallback_url",
                &self.fallback_url.as_ref().map(|_| "<set, not shown>"),
            )
            .field("fallback_enabled", &self.fallback_enabled)
            .field(
                "sentinel_password",
                &self.sentinel_password.as_ref().map(|_| "***"),
            )
            .finish_non_exhaustive()
    }
}

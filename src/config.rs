//! [`Config`]: everything the client needs, from a builder or the environment.
//!
//! Every value is checked when the config is built: a value that was given
//! but is wrong is an [`ErrorKind::Config`](crate::ErrorKind::Config) error
//! naming the field (or environment variable) and what was expected — never
//! a silent default. `Debug` and `Display` show passwords as `***`.
//!
//! See [`Config::from_env`] for the environment variables.

use std::fmt;
use std::time::Duration;

use crate::error::Error;

mod env;
mod tls;
mod url;

pub(crate) use self::tls::TlsOptions;
pub(crate) use self::url::Endpoint;

/// What the in-memory fallback store does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FallbackMode {
    /// No in-memory store: while Redis is unavailable, calls fail (fast,
    /// once the breaker is open).
    Disabled,
    /// Cache operations are served from memory only while Redis is
    /// unavailable.
    #[default]
    OnFailure,
    /// Like `OnFailure`, and every successful write to Redis also updates
    /// the memory store, so it is warm when an outage starts.
    WriteThrough,
}

impl FallbackMode {
    /// The spelling used in `CACHE_FALLBACK_MODE` and in `Display`.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackMode::Disabled => "disabled",
            FallbackMode::OnFailure => "on_failure",
            FallbackMode::WriteThrough => "write_through",
        }
    }
}

impl fmt::Display for FallbackMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Limits that every value is checked against, whether it comes from the
/// builder or the environment.
pub(crate) mod limits {
    use std::time::Duration;

    pub const MIN_DURATION: Duration = Duration::from_millis(1);
    pub const MAX_SOCKET_TIMEOUT: Duration = Duration::from_secs(600);
    pub const MAX_INTERVAL: Duration = Duration::from_secs(86_400);
    pub const MAX_EXPIRY: Duration = Duration::from_secs(7 * 86_400);
    pub const MAX_KEEPALIVE: Duration = Duration::from_secs(7_200);
    pub const MAX_KEEPALIVE_COUNT: u32 = 127;
    pub const MAX_CONNECTIONS: u32 = 10_000;
    pub const MAX_THRESHOLD: u32 = 10_000;
    pub const MAX_RETRIES: u32 = 20;
    pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);
    pub const MAX_FALLBACK_ENTRIES: usize = 100_000_000;
    pub const MAX_FALLBACK_BYTES: usize = 1 << 40;
    pub const MAX_KEY_PREFIX: usize = 1024;
    pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 86_400);
    pub const MAX_COMPRESSION_THRESHOLD: usize = 1 << 30;
}

/// The client's configuration. Build one with [`Config::builder`],
/// [`Config::memory_only`] or [`Config::from_env`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use resilient_redis::Config;
///
/// let config = Config::builder("redis://:hunter2@127.0.0.1:6379/0")
///     .max_connections(8)
///     .socket_timeout(Duration::from_millis(500))
///     .key_prefix("app:")
///     .build()?;
/// assert_eq!(config.max_connections(), 8);
/// assert_eq!(config.url(), Some("redis://:***@127.0.0.1:6379"));
/// assert!(!format!("{config:?}").contains("hunter2"));
/// # Ok::<(), resilient_redis::Error>(())
/// ```
#[derive(Clone)]
pub struct Config {
    pub(crate) primary: Option<Endpoint>,
    pub(crate) secondary: Option<Endpoint>,
    pub(crate) connect_timeout: Duration,
    pub(crate) socket_timeout: Duration,
    pub(crate) max_connections: u32,
    pub(crate) min_idle: u32,
    pub(crate) checkout_timeout: Duration,
    pub(crate) health_check_interval: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) keepalive_idle: Duration,
    pub(crate) keepalive_interval: Duration,
    pub(crate) keepalive_count: u32,
    pub(crate) failure_threshold: u32,
    pub(crate) success_threshold: u32,
    pub(crate) open_timeout: Duration,
    pub(crate) half_open_max_requests: u32,
    pub(crate) max_retries: u32,
    pub(crate) retry_base_delay: Duration,
    pub(crate) retry_max_delay: Duration,
    pub(crate) call_timeout: Option<Duration>,
    pub(crate) fallback_mode: FallbackMode,
    pub(crate) fallback_max_entries: usize,
    pub(crate) fallback_max_bytes: usize,
    pub(crate) key_prefix: String,
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) compression_threshold: usize,
    pub(crate) failover_cooldown: Duration,
    pub(crate) tls: TlsOptions,
}

impl Default for Config {
    /// The memory-only configuration with every default.
    fn default() -> Self {
        Config {
            primary: None,
            secondary: None,
            connect_timeout: Duration::from_millis(2000),
            socket_timeout: Duration::from_millis(2000),
            max_connections: 20,
            min_idle: 0,
            checkout_timeout: Duration::from_millis(2000),
            health_check_interval: Duration::from_secs(30),
            idle_timeout: Some(Duration::from_secs(300)),
            max_lifetime: Some(Duration::from_secs(1800)),
            keepalive_idle: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(30),
            keepalive_count: 3,
            failure_threshold: 5,
            success_threshold: 2,
            open_timeout: Duration::from_secs(60),
            half_open_max_requests: 3,
            max_retries: 2,
            retry_base_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(2),
            call_timeout: None,
            fallback_mode: FallbackMode::OnFailure,
            fallback_max_entries: 10_000,
            fallback_max_bytes: 64 << 20,
            key_prefix: String::new(),
            default_ttl: None,
            compression_threshold: 512,
            failover_cooldown: Duration::from_secs(300),
            tls: TlsOptions::default(),
        }
    }
}

impl Config {
    /// A builder for a client of the Redis server at `url`
    /// (`redis://[user[:password]@]host[:port][/db]`, or `rediss://` for TLS).
    /// The URL is checked by [`ConfigBuilder::build`].
    pub fn builder(url: impl Into<String>) -> ConfigBuilder {
        ConfigBuilder {
            url: Some(url.into()),
            fallback_url: None,
            fallback_enabled: None,
            config: Config::default(),
        }
    }

    /// A builder for a client with no Redis at all: every cache operation is
    /// served by the in-memory store.
    pub fn memory_only() -> ConfigBuilder {
        ConfigBuilder {
            url: None,
            fallback_url: None,
            fallback_enabled: None,
            config: Config::default(),
        }
    }

    /// The Redis URL with the password shown as `***`; `None` when memory-only.
    pub fn url(&self) -> Option<&str> {
        self.primary.as_ref().map(|e| e.redacted.as_str())
    }

    /// The secondary (failover) Redis URL, redacted; `None` when there is
    /// none or it is disabled.
    pub fn fallback_url(&self) -> Option<&str> {
        self.secondary.as_ref().map(|e| e.redacted.as_str())
    }

    /// `true` when no Redis URL is configured.
    pub fn is_memory_only(&self) -> bool {
        self.primary.is_none()
    }

    /// Timeout for establishing a TCP connection (and the handshake).
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Read and write timeout of every socket.
    pub fn socket_timeout(&self) -> Duration {
        self.socket_timeout
    }

    /// Upper bound on open connections per endpoint.
    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// Idle connections kept warm per endpoint.
    pub fn min_idle(&self) -> u32 {
        self.min_idle
    }

    /// How long a call waits for a pooled connection.
    pub fn checkout_timeout(&self) -> Duration {
        self.checkout_timeout
    }

    /// A connection idle for longer is checked with `PING` before reuse.
    pub fn health_check_interval(&self) -> Duration {
        self.health_check_interval
    }

    /// A connection idle for longer is closed; `None` keeps it.
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }

    /// A connection older than this is closed; `None` keeps it.
    pub fn max_lifetime(&self) -> Option<Duration> {
        self.max_lifetime
    }

    /// TCP keepalive: idle time before the first probe.
    pub fn keepalive_idle(&self) -> Duration {
        self.keepalive_idle
    }

    /// TCP keepalive: time between probes.
    pub fn keepalive_interval(&self) -> Duration {
        self.keepalive_interval
    }

    /// TCP keepalive: unanswered probes before the connection is dropped.
    pub fn keepalive_count(&self) -> u32 {
        self.keepalive_count
    }

    /// Consecutive failures that open the circuit breaker.
    pub fn failure_threshold(&self) -> u32 {
        self.failure_threshold
    }

    /// Consecutive half-open successes that close the circuit breaker.
    pub fn success_threshold(&self) -> u32 {
        self.success_threshold
    }

    /// How long the breaker stays open before it lets a probe through.
    pub fn open_timeout(&self) -> Duration {
        self.open_timeout
    }

    /// Probes admitted at once while half-open.
    pub fn half_open_max_requests(&self) -> u32 {
        self.half_open_max_requests
    }

    /// Retries after the first attempt.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }

    /// Backoff base: the n-th retry waits up to `base · 2^n`.
    pub fn retry_base_delay(&self) -> Duration {
        self.retry_base_delay
    }

    /// Backoff cap.
    pub fn retry_max_delay(&self) -> Duration {
        self.retry_max_delay
    }

    /// Overall deadline of one call, attempts and backoff included.
    pub fn call_timeout(&self) -> Option<Duration> {
        self.call_timeout
    }

    /// What the in-memory fallback store does.
    pub fn fallback_mode(&self) -> FallbackMode {
        self.fallback_mode
    }

    /// Most entries the in-memory store holds.
    pub fn fallback_max_entries(&self) -> usize {
        self.fallback_max_entries
    }

    /// Most bytes (keys plus values) the in-memory store holds.
    pub fn fallback_max_bytes(&self) -> usize {
        self.fallback_max_bytes
    }

    /// Prefix put before every key.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// TTL applied by `set` when none is given.
    pub fn default_ttl(&self) -> Option<Duration> {
        self.default_ttl
    }

    /// Values at least this large (bytes) are compressed, when compression
    /// is enabled.
    pub fn compression_threshold(&self) -> usize {
        self.compression_threshold
    }

    /// How long the primary is left alone after a failover before probing.
    pub fn failover_cooldown(&self) -> Duration {
        self.failover_cooldown
    }
}

/// Builds a [`Config`]; every setter is checked by [`ConfigBuilder::build`].
#[derive(Clone)]
#[must_use]
pub struct ConfigBuilder {
    url: Option<String>,
    fallback_url: Option<String>,
    fallback_enabled: Option<bool>,
    config: Config,
}

impl ConfigBuilder {
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

    /// Overall deadline of one call (attempts and backoff). Defaults to
    /// `None`: bounded by attempts × timeouts only.
    pub fn call_timeout(mut self, v: Option<Duration>) -> Self {
        self.config.call_timeout = v;
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

    /// Most bytes (keys plus values) in the in-memory store. Defaults to 64 MiB.
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

    /// Values at least this many bytes are compressed when compression is
    /// enabled. Defaults to 512.
    pub fn compression_threshold(mut self, v: usize) -> Self {
        self.config.compression_threshold = v;
        self
    }

    /// How long the primary is left alone after a failover. Defaults to 5 min.
    pub fn failover_cooldown(mut self, v: Duration) -> Self {
        self.config.failover_cooldown = v;
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
    fn build_labelled(self, labels: &Labels) -> Result<Config, Error> {
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
        check_usize(
            labels.compression_threshold,
            c.compression_threshold,
            0,
            MAX_COMPRESSION_THRESHOLD,
        )?;
        check_duration(
            labels.failover_cooldown,
            c.failover_cooldown,
            &(MIN_DURATION..=MAX_INTERVAL),
        )?;
        Ok(c)
    }
}

/// The names that error messages use for each setting: builder field names,
/// or environment variable names when loading from the environment.
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
    pub tls_ca_file: &'static str,
    pub tls_cert_file: &'static str,
    pub tls_key_file: &'static str,
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
        tls_ca_file: "tls_ca_file",
        tls_cert_file: "tls_client_cert",
        tls_key_file: "tls_client_key",
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

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.url())
            .field("fallback_url", &self.fallback_url())
            .field("connect_timeout", &self.connect_timeout)
            .field("socket_timeout", &self.socket_timeout)
            .field("max_connections", &self.max_connections)
            .field("min_idle", &self.min_idle)
            .field("checkout_timeout", &self.checkout_timeout)
            .field("health_check_interval", &self.health_check_interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field("keepalive_idle", &self.keepalive_idle)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_count", &self.keepalive_count)
            .field("failure_threshold", &self.failure_threshold)
            .field("success_threshold", &self.success_threshold)
            .field("open_timeout", &self.open_timeout)
            .field("half_open_max_requests", &self.half_open_max_requests)
            .field("max_retries", &self.max_retries)
            .field("retry_base_delay", &self.retry_base_delay)
            .field("retry_max_delay", &self.retry_max_delay)
            .field("call_timeout", &self.call_timeout)
            .field("fallback_mode", &self.fallback_mode)
            .field("fallback_max_entries", &self.fallback_max_entries)
            .field("fallback_max_bytes", &self.fallback_max_bytes)
            .field("key_prefix", &self.key_prefix)
            .field("default_ttl", &self.default_ttl)
            .field("compression_threshold", &self.compression_threshold)
            .field("failover_cooldown", &self.failover_cooldown)
            // Paths only: certificate and key contents are never shown.
            .field("tls", &self.tls)
            .finish()
    }
}

impl fmt::Display for Config {
    /// One `name = value` line per setting, passwords redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn opt(v: Option<Duration>) -> String {
            v.map_or_else(|| "none".to_string(), |d| format!("{d:?}"))
        }
        let url = self.url().unwrap_or("none (memory only)");
        writeln!(f, "url                    = {url}")?;
        writeln!(
            f,
            "fallback_url           = {}",
            self.fallback_url().unwrap_or("none")
        )?;
        writeln!(f, "connect_timeout        = {:?}", self.connect_timeout)?;
        writeln!(f, "socket_timeout         = {:?}", self.socket_timeout)?;
        writeln!(f, "max_connections        = {}", self.max_connections)?;
        writeln!(f, "min_idle               = {}", self.min_idle)?;
        writeln!(f, "checkout_timeout       = {:?}", self.checkout_timeout)?;
        writeln!(
            f,
            "health_check_interval  = {:?}",
            self.health_check_interval
        )?;
        writeln!(f, "idle_timeout           = {}", opt(self.idle_timeout))?;
        writeln!(f, "max_lifetime           = {}", opt(self.max_lifetime))?;
        writeln!(
            f,
            "keepalive              = idle {:?}, interval {:?}, count {}",
            self.keepalive_idle, self.keepalive_interval, self.keepalive_count
        )?;
        writeln!(
            f,
            "breaker                = open after {} failures for {:?}, close after {} successes, {} probes",
            self.failure_threshold, self.open_timeout, self.success_threshold, self.half_open_max_requests
        )?;
        writeln!(
            f,
            "retry                  = {} retries, backoff {:?}..{:?}, call timeout {}",
            self.max_retries,
            self.retry_base_delay,
            self.retry_max_delay,
            opt(self.call_timeout)
        )?;
        writeln!(
            f,
            "fallback               = {}, {} entries, {} bytes",
            self.fallback_mode, self.fallback_max_entries, self.fallback_max_bytes
        )?;
        writeln!(f, "key_prefix             = {:?}", self.key_prefix)?;
        writeln!(f, "default_ttl            = {}", opt(self.default_ttl))?;
        writeln!(f, "compression_threshold  = {}", self.compression_threshold)?;
        write!(f, "failover_cooldown      = {:?}", self.failover_cooldown)
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
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn config_err(b: ConfigBuilder) -> String {
        match b.build() {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Config);
                e.to_string()
            }
        }
    }

    #[test]
    fn defaults_match_the_design() -> Result<(), Error> {
        let c = Config::builder("redis://localhost").build()?;
        assert_eq!(c.connect_timeout(), Duration::from_millis(2000));
        assert_eq!(c.socket_timeout(), Duration::from_millis(2000));
        assert_eq!(c.health_check_interval(), Duration::from_secs(30));
        assert_eq!(c.max_connections(), 20);
        assert_eq!(c.max_retries(), 2);
        assert_eq!(c.retry_base_delay(), Duration::from_millis(100));
        assert_eq!(c.failure_threshold(), 5);
        assert_eq!(c.open_timeout(), Duration::from_secs(60));
        assert_eq!(c.compression_threshold(), 512);
        assert_eq!(c.keepalive_idle(), Duration::from_secs(60));
        assert_eq!(c.keepalive_interval(), Duration::from_secs(30));
        assert_eq!(c.keepalive_count(), 3);
        assert_eq!(c.success_threshold(), 2);
        assert_eq!(c.half_open_max_requests(), 3);
        assert_eq!(c.fallback_mode(), FallbackMode::OnFailure);
        assert!(!c.is_memory_only());
        assert!(Config::memory_only().build()?.is_memory_only());
        Ok(())
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let b = || Config::builder("redis://localhost");
        assert!(config_err(b().max_connections(0)).starts_with("max_connections: "));
        assert!(config_err(b().max_connections(1_000_000)).contains("from 1 to 10000"));
        assert!(config_err(b().connect_timeout(Duration::ZERO)).starts_with("connect_timeout: "));
        assert!(config_err(b().socket_timeout(Duration::from_secs(86_400)))
            .starts_with("socket_timeout: "));
        assert!(config_err(b().min_idle(21)).starts_with("min_idle: "));
        assert!(config_err(b().failure_threshold(0)).starts_with("failure_threshold: "));
        assert!(config_err(b().keepalive_count(0)).starts_with("keepalive_count: "));
        assert!(config_err(b().keepalive_idle(Duration::from_millis(10)))
            .starts_with("keepalive_idle: "));
        assert!(config_err(b().max_retries(1000)).starts_with("max_retries: "));
        assert!(config_err(b().retry_max_delay(Duration::from_millis(10)))
            .starts_with("retry_max_delay: "));
        assert!(config_err(b().fallback_max_entries(0)).starts_with("fallback_max_entries: "));
        assert!(config_err(b().key_prefix("x".repeat(2000))).starts_with("key_prefix: "));
        assert!(config_err(b().default_ttl(Some(Duration::ZERO))).starts_with("default_ttl: "));
        assert!(config_err(b().idle_timeout(Some(Duration::ZERO))).starts_with("idle_timeout: "));
        assert!(config_err(b().fallback_enabled(true)).contains("fallback_url is not set"));
        assert!(config_err(Config::memory_only().fallback_url("redis://b")).contains("primary"));
        assert!(config_err(b().fallback_url("nope")).starts_with("fallback_url: "));
        // A wrong value is an error even while the feature it feeds is off.
        assert!(config_err(b().fallback_url("nope").fallback_enabled(false))
            .starts_with("fallback_url: "));
    }

    #[test]
    fn secondary_is_enabled_by_its_url() -> Result<(), Error> {
        let c = Config::builder("redis://a")
            .fallback_url("redis://b:6380")
            .build()?;
        assert_eq!(c.fallback_url(), Some("redis://b:6380"));
        let c = Config::builder("redis://a")
            .fallback_url("redis://b:6380")
            .fallback_enabled(false)
            .build()?;
        assert_eq!(c.fallback_url(), None);
        Ok(())
    }

    #[test]
    fn secrets_are_redacted_everywhere() -> Result<(), Error> {
        let c = Config::builder("redis://admin:Sup3rS3cret@redis.example.com:6380/1")
            .fallback_url("redis://:An0th3r@127.0.0.1:6379")
            .build()?;
        for text in [format!("{c:?}"), format!("{c}")] {
            assert!(!text.contains("Sup3rS3cret"), "{text}");
            assert!(!text.contains("An0th3r"), "{text}");
            assert!(
                text.contains("redis://admin:***@redis.example.com:6380/1"),
                "{text}"
            );
            assert!(text.contains("redis://:***@127.0.0.1:6379"), "{text}");
        }
        let b = Config::builder("redis://admin:Sup3rS3cret@host");
        assert!(!format!("{b:?}").contains("Sup3rS3cret"));
        Ok(())
    }
}

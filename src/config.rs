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

mod bound;
mod builder;
pub(crate) mod cluster;
mod env;
mod host_list;
pub(crate) mod sentinel;
mod tls;
mod url;

pub use self::builder::ConfigBuilder;
pub(crate) use self::builder::Labels;

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
/// [`Config::call_bound`] says how long a call can take with it at worst.
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
    pub(crate) compression_threshold: Option<usize>,
    pub(crate) failover_cooldown: Duration,
    /// `None`: derived, see [`Config::failover_grace`].
    pub(crate) failover_grace: Option<Duration>,
    pub(crate) tls: TlsOptions,
    /// `redis+cluster://`: reads may go to replicas (see the builder).
    pub(crate) read_from_replicas: bool,
    /// `redis+cluster://`: redirects one attempt follows.
    pub(crate) max_redirects: u32,
    /// Automatic pipelining (see [`Config::auto_pipeline`]).
    pub(crate) auto_pipeline: bool,
    /// See [`Config::auto_pipeline_share_from`].
    pub(crate) auto_pipeline_share_from: usize,
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
            compression_threshold: None,
            failover_cooldown: Duration::from_secs(300),
            failover_grace: None,
            tls: TlsOptions::default(),
            read_from_replicas: false,
            max_redirects: crate::topology::cluster::DEFAULT_MAX_REDIRECTS,
            auto_pipeline: false,
            auto_pipeline_share_from: 8,
        }
    }
}

impl Config {
    /// A builder for a client of the Redis server at `url`
    /// (`redis://[user[:password]@]host[:port][/db]`, or `rediss://` for TLS),
    /// or of the master a set of Sentinels monitors
    /// (`redis+sentinel://[[user]:password@]host1[:port1][,host2[:port2]...]/service_name[/db]`,
    /// default port 26379; `rediss+sentinel://` for TLS to the sentinels and
    /// the data nodes). The password in a sentinel URL is the data nodes';
    /// the sentinels' own is [`ConfigBuilder::sentinel_password`].
    /// Or of a Redis Cluster
    /// (`redis+cluster://[[user]:password@]host1[:port1][,host2[:port2]...]`,
    /// default port 6379, `rediss+cluster://` for TLS): the hosts are seeds,
    /// any one that answers is enough; see the README's Cluster section.
    /// The URL is checked by [`ConfigBuilder::build`].
    pub fn builder(url: impl Into<String>) -> ConfigBuilder {
        ConfigBuilder::new(Some(url.into()))
    }

    /// A builder for a client with no Redis at all: every cache operation is
    /// served by the in-memory store.
    pub fn memory_only() -> ConfigBuilder {
        ConfigBuilder::new(None)
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

    /// Overall deadline of one call, checkouts, socket I/O and backoff
    /// included (see [`Config::call_bound`] for what a call can overrun it by).
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

    /// Values at least this large (bytes) are compressed (when that saves
    /// at least 1/8 of them); `None`: compression is off.
    pub fn compression_threshold(&self) -> Option<usize> {
        self.compression_threshold
    }

    /// Whether reads may go to replicas of a Redis Cluster
    /// ([`ConfigBuilder::read_from_replicas`]).
    pub fn read_from_replicas(&self) -> bool {
        self.read_from_replicas
    }

    /// Redirects (`MOVED`, `ASK`) one attempt on a Redis Cluster follows
    /// ([`ConfigBuilder::max_redirects`]).
    pub fn max_redirects(&self) -> u32 {
        self.max_redirects
    }

    /// Whether concurrent calls share connections, their requests written
    /// in one batch and their replies read back in order (see
    /// [`ConfigBuilder::auto_pipeline`](crate::ConfigBuilder::auto_pipeline)).
    pub fn auto_pipeline(&self) -> bool {
        self.auto_pipeline
    }

    /// Calls in progress from which a call that finds the shared
    /// connection busy waits for it (see
    /// [`ConfigBuilder::auto_pipeline_share_from`](crate::ConfigBuilder::auto_pipeline_share_from)).
    pub fn auto_pipeline_share_from(&self) -> usize {
        self.auto_pipeline_share_from
    }

    /// How long the primary is left alone after a failover before probing.
    pub fn failover_cooldown(&self) -> Duration {
        self.failover_cooldown
    }

    /// No switch back to the primary within this long after a switch, so a
    /// flapping primary cannot make calls flap with it. Unless set, the
    /// longer of `health_check_interval` and `open_timeout`.
    pub fn failover_grace(&self) -> Duration {
        self.failover_grace
            .unwrap_or(self.health_check_interval.max(self.open_timeout))
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
            .field("failover_grace", &self.failover_grace())
            .field("read_from_replicas", &self.read_from_replicas)
            .field("max_redirects", &self.max_redirects)
            // Paths only: certificate and key contents are never shown.
            .field("tls", &self.tls)
            .field("auto_pipeline", &self.auto_pipeline)
            .field("auto_pipeline_share_from", &self.auto_pipeline_share_from)
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
        match self.compression_threshold {
            Some(n) => writeln!(f, "compression_threshold  = {n}")?,
            None => writeln!(f, "compression_threshold  = off")?,
        }
        writeln!(
            f,
            "auto_pipeline          = {}, shared from {} calls",
            self.auto_pipeline, self.auto_pipeline_share_from
        )?;
        writeln!(f, "failover_cooldown      = {:?}", self.failover_cooldown)?;
        writeln!(f, "failover_grace         = {:?}", self.failover_grace())?;
        write!(
            f,
            "cluster                = read_from_replicas {}, max_redirects {}",
            self.read_from_replicas, self.max_redirects
        )
    }
}

#[cfg(test)]
mod tests;

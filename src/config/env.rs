//! `Config::from_env`: the variable names users of the Python and .NET
//! designs already set, plus the crate's own for what those do not cover.

use crate::log_fields::{log_fields, Fields};
use std::time::Duration;

use super::{Config, FallbackMode, Labels};
use crate::error::Error;

/// Every variable `from_env` reads, with its unit, default and meaning.
/// Kept as one table so the docs, the loader and the tests agree.
pub(crate) const VARIABLES: &[(&str, &str)] = &[
    (
        "REDIS_URL",
        "redis://, rediss://, redis+sentinel:// or redis+cluster:// URL; unset: memory only",
    ),
    ("REDIS__URL", "alias of REDIS_URL"),
    ("REDIS_FALLBACK_URL", "secondary Redis for failover"),
    (
        "REDIS_SENTINEL_PASSWORD",
        "password of the sentinels of a redis+sentinel:// URL",
    ),
    (
        "REDIS_FALLBACK_ENABLED",
        "true/false; default true when REDIS_FALLBACK_URL is set; true without it: redis://localhost:6379/0",
    ),
    (
        "CACHE_SOCKET_CONNECT_TIMEOUT_MS",
        "milliseconds; default 2000",
    ),
    ("CACHE_SOCKET_TIMEOUT_MS", "milliseconds; default 2000"),
    ("CACHE_CHECKOUT_TIMEOUT_MS", "milliseconds; default 2000"),
    ("CACHE_HEALTH_CHECK_INTERVAL", "seconds; default 30"),
    ("CACHE_MAX_CONNECTIONS", "default 20"),
    (
        "CACHE_AUTO_PIPELINE",
        "true/false: concurrent calls share connections; default false",
    ),
    ("CACHE_MIN_IDLE", "default 0"),
    ("CACHE_IDLE_TIMEOUT", "seconds, 0 = never; default 300"),
    ("CACHE_MAX_LIFETIME", "seconds, 0 = never; default 1800"),
    ("CACHE_KEEPALIVE_IDLE", "seconds; default 60"),
    ("CACHE_KEEPALIVE_INTERVAL", "seconds; default 30"),
    ("CACHE_KEEPALIVE_COUNT", "default 3"),
    ("CACHE_MAX_RETRIES", "default 2"),
    (
        "CACHE_RETRY_DELAY",
        "seconds (fractions allowed); default 0.1",
    ),
    (
        "CACHE_RETRY_MAX_DELAY",
        "seconds (fractions allowed); default 2",
    ),
    (
        "CACHE_CALL_TIMEOUT_MS",
        "milliseconds, 0 = none; default none",
    ),
    (
        "REDIS_CIRCUIT_BREAKER_THRESHOLD",
        "consecutive failures; default 5",
    ),
    (
        "REDIS_CIRCUIT_BREAKER_TIMEOUT",
        "seconds (fractions allowed); default 60",
    ),
    ("REDIS_CIRCUIT_BREAKER_SUCCESS_THRESHOLD", "default 2"),
    ("REDIS_CIRCUIT_BREAKER_HALF_OPEN_MAX_REQUESTS", "default 3"),
    (
        "REDIS_COMPRESSION_THRESHOLD",
        "bytes; empty or off: no compression; default off",
    ),
    (
        "REDIS_FAILOVER_COOLDOWN",
        "seconds (fractions allowed); default 300",
    ),
    (
        "REDIS_FAILOVER_GRACE",
        "seconds; default the longer of CACHE_HEALTH_CHECK_INTERVAL and REDIS_CIRCUIT_BREAKER_TIMEOUT",
    ),
    ("CACHE_KEY_PREFIX", "default empty"),
    ("CACHE_DEFAULT_TTL", "seconds, 0 = none; default none"),
    (
        "CACHE_FALLBACK_MODE",
        "disabled, on_failure or write_through; default on_failure",
    ),
    ("CACHE_FALLBACK_MAX_ENTRIES", "default 10000"),
    ("CACHE_FALLBACK_MAX_BYTES", "default 67108864"),
    (
        "REDIS_TLS_CA_FILE",
        "PEM CA bundle for rediss://, replaces the platform roots",
    ),
    ("REDIS_TLS_CERT_FILE", "PEM client certificate (mutual TLS)"),
    (
        "REDIS_TLS_KEY_FILE",
        "PEM private key of REDIS_TLS_CERT_FILE",
    ),
];

/// The fallback Redis when `REDIS_FALLBACK_ENABLED` is true and
/// `REDIS_FALLBACK_URL` is not set: the local one, as in the design this
/// crate replaces.
pub(crate) const DEFAULT_FALLBACK_URL: &str = "redis://localhost:6379/0";

/// Automatic pipelining on or off (see `ConfigBuilder::auto_pipeline`).
const AUTO_PIPELINE: &str = "CACHE_AUTO_PIPELINE";

const ENV_LABELS: Labels = Labels {
    url: "REDIS_URL",
    fallback_url: "REDIS_FALLBACK_URL",
    fallback_enabled: "REDIS_FALLBACK_ENABLED",
    connect_timeout: "CACHE_SOCKET_CONNECT_TIMEOUT_MS",
    socket_timeout: "CACHE_SOCKET_TIMEOUT_MS",
    max_connections: "CACHE_MAX_CONNECTIONS",
    min_idle: "CACHE_MIN_IDLE",
    checkout_timeout: "CACHE_CHECKOUT_TIMEOUT_MS",
    health_check_interval: "CACHE_HEALTH_CHECK_INTERVAL",
    idle_timeout: "CACHE_IDLE_TIMEOUT",
    max_lifetime: "CACHE_MAX_LIFETIME",
    keepalive_idle: "CACHE_KEEPALIVE_IDLE",
    keepalive_interval: "CACHE_KEEPALIVE_INTERVAL",
    keepalive_count: "CACHE_KEEPALIVE_COUNT",
    failure_threshold: "REDIS_CIRCUIT_BREAKER_THRESHOLD",
    success_threshold: "REDIS_CIRCUIT_BREAKER_SUCCESS_THRESHOLD",
    open_timeout: "REDIS_CIRCUIT_BREAKER_TIMEOUT",
    half_open_max_requests: "REDIS_CIRCUIT_BREAKER_HALF_OPEN_MAX_REQUESTS",
    max_retries: "CACHE_MAX_RETRIES",
    retry_base_delay: "CACHE_RETRY_DELAY",
    retry_max_delay: "CACHE_RETRY_MAX_DELAY",
    call_timeout: "CACHE_CALL_TIMEOUT_MS",
    fallback_max_entries: "CACHE_FALLBACK_MAX_ENTRIES",
    fallback_max_bytes: "CACHE_FALLBACK_MAX_BYTES",
    key_prefix: "CACHE_KEY_PREFIX",
    default_ttl: "CACHE_DEFAULT_TTL",
    compression_threshold: "REDIS_COMPRESSION_THRESHOLD",
    failover_cooldown: "REDIS_FAILOVER_COOLDOWN",
    failover_grace: "REDIS_FAILOVER_GRACE",
    tls_ca_file: "REDIS_TLS_CA_FILE",
    tls_cert_file: "REDIS_TLS_CERT_FILE",
    tls_key_file: "REDIS_TLS_KEY_FILE",
    sentinel_password: "REDIS_SENTINEL_PASSWORD",
};

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `REDIS_URL` (alias `REDIS__URL`) | `redis://`, `rediss://`, `redis+sentinel://` or `redis+cluster://` URL; unset: memory only |
    /// | `REDIS_FALLBACK_URL` | secondary Redis for failover (any of those forms) |
    /// | `REDIS_SENTINEL_PASSWORD` | the sentinels' password, for `redis+sentinel://` URLs |
    /// | `REDIS_FALLBACK_ENABLED` | `true`/`false`; default `true` when `REDIS_FALLBACK_URL` is set; `true` without it: the local `redis://localhost:6379/0` (logged at INFO) |
    /// | `CACHE_SOCKET_CONNECT_TIMEOUT_MS` | ms; default 2000 |
    /// | `CACHE_SOCKET_TIMEOUT_MS` | ms; default 2000 |
    /// | `CACHE_CHECKOUT_TIMEOUT_MS` | ms; default 2000 |
    /// | `CACHE_HEALTH_CHECK_INTERVAL` | s; default 30 |
    /// | `CACHE_MAX_CONNECTIONS` | default 20 |
    /// | `CACHE_AUTO_PIPELINE` | `true`/`false`: concurrent calls share connections (automatic pipelining); default `false` |
    /// | `CACHE_MIN_IDLE` | default 0 |
    /// | `CACHE_IDLE_TIMEOUT` | s, `0` = never; default 300 |
    /// | `CACHE_MAX_LIFETIME` | s, `0` = never; default 1800 |
    /// | `CACHE_KEEPALIVE_IDLE` / `_INTERVAL` / `_COUNT` | s, s, probes; default 60 / 30 / 3 |
    /// | `CACHE_MAX_RETRIES` | default 2 |
    /// | `CACHE_RETRY_DELAY` | s (fractions allowed); default 0.1 |
    /// | `CACHE_RETRY_MAX_DELAY` | s; default 2 |
    /// | `CACHE_CALL_TIMEOUT_MS` | ms, `0` = none; default none |
    /// | `REDIS_CIRCUIT_BREAKER_THRESHOLD` | failures; default 5 |
    /// | `REDIS_CIRCUIT_BREAKER_TIMEOUT` | s; default 60 |
    /// | `REDIS_CIRCUIT_BREAKER_SUCCESS_THRESHOLD` | default 2 |
    /// | `REDIS_CIRCUIT_BREAKER_HALF_OPEN_MAX_REQUESTS` | default 3 |
    /// | `REDIS_COMPRESSION_THRESHOLD` | bytes: values this large or larger are stored LZ4-compressed; empty or `off`: none; default off |
    /// | `REDIS_FAILOVER_COOLDOWN` | s; default 300 |
    /// | `REDIS_FAILOVER_GRACE` | s; default the longer of the health check interval and the breaker timeout |
    /// | `CACHE_KEY_PREFIX` | default empty |
    /// | `CACHE_DEFAULT_TTL` | s, `0` = none; default none |
    /// | `CACHE_FALLBACK_MODE` | `disabled`, `on_failure`, `write_through`; default `on_failure` |
    /// | `CACHE_FALLBACK_MAX_ENTRIES` / `_BYTES` | default 10000 / 64 MiB |
    /// | `REDIS_TLS_CA_FILE` | PEM CA bundle for `rediss://`; replaces the platform roots |
    /// | `REDIS_TLS_CERT_FILE` / `REDIS_TLS_KEY_FILE` | PEM client certificate and key (mutual TLS); set both |
    ///
    /// TLS verification cannot be turned off from the environment: that
    /// takes [`ConfigBuilder::danger_accept_invalid_certs`](crate::ConfigBuilder::danger_accept_invalid_certs).
    ///
    /// A variable that is set to an empty string counts as unset. Values
    /// are trimmed.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) naming the variable
    /// and what was expected, for a value that does not parse or is out of
    /// range, and for a value that is not valid Unicode.
    pub fn from_env() -> Result<Config, Error> {
        for (name, _) in VARIABLES {
            if let Err(std::env::VarError::NotUnicode(_)) = std::env::var(name) {
                return Err(Error::config(format!("{name}: expected valid UTF-8")));
            }
        }
        Config::from_env_with(|name| std::env::var(name).ok())
    }

    /// Like [`Config::from_env`], reading variables through `lookup`, so
    /// tests never touch the process environment.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use resilient_redis::Config;
    ///
    /// let env = HashMap::from([
    ///     ("REDIS_URL", "redis://127.0.0.1:6379"),
    ///     ("CACHE_MAX_CONNECTIONS", "8"),
    /// ]);
    /// let config = Config::from_env_with(|name| env.get(name).map(|v| v.to_string()))?;
    /// assert_eq!(config.max_connections(), 8);
    ///
    /// let env = HashMap::from([("CACHE_MAX_CONNECTIONS", "lots")]);
    /// let err = Config::from_env_with(|name| env.get(name).map(|v| v.to_string())).unwrap_err();
    /// assert!(err.to_string().starts_with("CACHE_MAX_CONNECTIONS: "));
    /// # Ok::<(), resilient_redis::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Config::from_env`].
    pub fn from_env_with<F>(lookup: F) -> Result<Config, Error>
    where
        F: Fn(&str) -> Option<String>,
    {
        let get = |name: &str| -> Option<String> {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        // Errors about the URL name the variable it came from.
        let mut labels = ENV_LABELS;
        let l = &ENV_LABELS;

        let url = match (get("REDIS_URL"), get("REDIS__URL")) {
            (Some(a), Some(b)) if a != b => {
                return Err(Error::config(
                    "REDIS_URL and REDIS__URL are both set and differ; set only one",
                ))
            }
            (Some(a), _) => Some(a),
            (None, Some(a)) => {
                labels.url = "REDIS__URL";
                Some(a)
            }
            (None, None) => None,
        };
        let has_primary = url.is_some();
        let mut b = match url {
            Some(url) => Config::builder(url),
            None => Config::memory_only(),
        };
        let fallback_url = get(l.fallback_url);
        let fallback_enabled = get(l.fallback_enabled)
            .map(|v| parse_bool(l.fallback_enabled, &v))
            .transpose()?;
        match (fallback_url, fallback_enabled) {
            (Some(v), _) => b = b.fallback_url(v),
            // As the design this replaces did: enabled without a URL means
            // the local Redis.
            (None, Some(true)) if has_primary => {
                log_fields!(
                    log::Level::Info,
                    Fields::new("config").at("secondary", "none");
                    "{} is true and {} is not set: the fallback Redis is {DEFAULT_FALLBACK_URL}",
                    l.fallback_enabled,
                    l.fallback_url
                );
                b = b.fallback_url(DEFAULT_FALLBACK_URL);
            }
            (None, Some(true)) => {
                return Err(Error::config(format!(
                    "{}: is true but neither REDIS_URL nor REDIS__URL is set (a fallback Redis needs a primary)",
                    l.fallback_enabled
                )))
            }
            (None, _) => {}
        }
        if let Some(enabled) = fallback_enabled {
            b = b.fallback_enabled(enabled);
        }
        if let Some(pw) = lookup(l.sentinel_password).filter(|v| !v.is_empty()) {
            // Not trimmed: a password may end in a space.
            b = b.sentinel_password(pw);
        }

        let ms = |name: &str| -> Result<Option<Duration>, Error> {
            get(name)
                .map(|v| parse_u64(name, &v).map(Duration::from_millis))
                .transpose()
        };
        let secs = |name: &str| -> Result<Option<Duration>, Error> {
            get(name).map(|v| parse_seconds(name, &v)).transpose()
        };
        // `0` means "off" for the optional durations.
        let optional = |d: Duration| if d.is_zero() { None } else { Some(d) };
        let count = |name: &str| -> Result<Option<u32>, Error> {
            get(name)
                .map(|v| {
                    parse_u64(name, &v).and_then(|n| {
                        u32::try_from(n).map_err(|_| {
                            Error::config(format!(
                                "{name}: expected a whole number, got {n} (too large)"
                            ))
                        })
                    })
                })
                .transpose()
        };
        let size = |name: &str| -> Result<Option<usize>, Error> {
            get(name)
                .map(|v| {
                    parse_u64(name, &v).and_then(|n| {
                        usize::try_from(n).map_err(|_| {
                            Error::config(format!(
                                "{name}: expected a whole number, got {n} (too large)"
                            ))
                        })
                    })
                })
                .transpose()
        };

        if let Some(v) = ms(l.connect_timeout)? {
            b = b.connect_timeout(v);
        }
        if let Some(v) = ms(l.socket_timeout)? {
            b = b.socket_timeout(v);
        }
        if let Some(v) = ms(l.checkout_timeout)? {
            b = b.checkout_timeout(v);
        }
        if let Some(v) = ms(l.call_timeout)? {
            b = b.call_timeout(optional(v));
        }
        if let Some(v) = secs(l.health_check_interval)? {
            b = b.health_check_interval(v);
        }
        if let Some(v) = secs(l.idle_timeout)? {
            b = b.idle_timeout(optional(v));
        }
        if let Some(v) = secs(l.max_lifetime)? {
            b = b.max_lifetime(optional(v));
        }
        if let Some(v) = secs(l.keepalive_idle)? {
            b = b.keepalive_idle(v);
        }
        if let Some(v) = secs(l.keepalive_interval)? {
            b = b.keepalive_interval(v);
        }
        if let Some(v) = count(l.keepalive_count)? {
            b = b.keepalive_count(v);
        }
        if let Some(v) = count(l.max_connections)? {
            b = b.max_connections(v);
        }
        if let Some(v) = count(l.min_idle)? {
            b = b.min_idle(v);
        }
        if let Some(v) = count(l.max_retries)? {
            b = b.max_retries(v);
        }
        if let Some(v) = secs(l.retry_base_delay)? {
            b = b.retry_base_delay(v);
        }
        if let Some(v) = secs(l.retry_max_delay)? {
            b = b.retry_max_delay(v);
        }
        if let Some(v) = count(l.failure_threshold)? {
            b = b.failure_threshold(v);
        }
        if let Some(v) = count(l.success_threshold)? {
            b = b.success_threshold(v);
        }
        if let Some(v) = count(l.half_open_max_requests)? {
            b = b.half_open_max_requests(v);
        }
        if let Some(v) = secs(l.open_timeout)? {
            b = b.open_timeout(v);
        }
        if let Some(v) = get(AUTO_PIPELINE) {
            b = b.auto_pipeline(parse_bool(AUTO_PIPELINE, &v)?);
        }
        // Off unless set (other services may read the same keys); `off`
        // says so explicitly, as does an empty value.
        match get(l.compression_threshold) {
            Some(v) if v.eq_ignore_ascii_case("off") => b = b.compression_threshold(None),
            Some(_) => b = b.compression_threshold(size(l.compression_threshold)?),
            None => {}
        }
        if let Some(v) = secs(l.failover_cooldown)? {
            b = b.failover_cooldown(v);
        }
        if let Some(v) = secs(l.failover_grace)? {
            b = b.failover_grace(v);
        }
        if let Some(v) = lookup(l.key_prefix).filter(|v| !v.is_empty()) {
            // Not trimmed: a prefix may end in a space on purpose.
            b = b.key_prefix(v);
        }
        if let Some(v) = secs(l.default_ttl)? {
            b = b.default_ttl(optional(v));
        }
        if let Some(v) = get("CACHE_FALLBACK_MODE") {
            b = b.fallback_mode(parse_mode(&v)?);
        }
        if let Some(v) = size(l.fallback_max_entries)? {
            b = b.fallback_max_entries(v);
        }
        if let Some(v) = size(l.fallback_max_bytes)? {
            b = b.fallback_max_bytes(v);
        }
        b = super::tls::from_env(b, get);
        let retry_delay_given = get(l.retry_base_delay).is_some();
        let retry_max_given = get(l.retry_max_delay).is_some();
        if retry_delay_given && !retry_max_given {
            // A base delay above the default cap raises the cap with it,
            // rather than failing on a variable the user never set.
            let cap = b.config.retry_max_delay.max(b.config.retry_base_delay);
            b = b.retry_max_delay(cap);
        }
        b.build_labelled(&labels)
    }
}

fn shown(value: &str) -> String {
    let v: String = value.chars().take(40).collect();
    if v.len() < value.len() {
        format!("\"{v}…\"")
    } else {
        format!("\"{v}\"")
    }
}

fn parse_u64(name: &str, value: &str) -> Result<u64, Error> {
    value.parse::<u64>().map_err(|_| {
        Error::config(format!(
            "{name}: expected a whole number, got {}",
            shown(value)
        ))
    })
}

fn parse_seconds(name: &str, value: &str) -> Result<Duration, Error> {
    let secs: f64 = value.parse().map_err(|_| {
        Error::config(format!(
            "{name}: expected a number of seconds (for example 0.5), got {}",
            shown(value)
        ))
    })?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(Error::config(format!(
            "{name}: expected a non-negative number of seconds, got {}",
            shown(value)
        )));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| {
        Error::config(format!(
            "{name}: expected a number of seconds, got {} (too large)",
            shown(value)
        ))
    })
}

fn parse_bool(name: &str, value: &str) -> Result<bool, Error> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::config(format!(
            "{name}: expected true or false, got {}",
            shown(value)
        ))),
    }
}

fn parse_mode(value: &str) -> Result<FallbackMode, Error> {
    match value.to_ascii_lowercase().replace('-', "_").as_str() {
        "disabled" | "off" | "none" => Ok(FallbackMode::Disabled),
        "on_failure" => Ok(FallbackMode::OnFailure),
        "write_through" => Ok(FallbackMode::WriteThrough),
        _ => Err(Error::config(format!(
            "CACHE_FALLBACK_MODE: expected disabled, on_failure or write_through, got {}",
            shown(value)
        ))),
    }
}

#[cfg(test)]
mod tests;

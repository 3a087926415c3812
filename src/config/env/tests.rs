//! Tests of `Config::from_env`: every variable set, unset and malformed.

use super::*;
use crate::ErrorKind;
use std::collections::HashMap;

fn load(pairs: &[(&str, &str)]) -> Result<Config, Error> {
    let env: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_env_with(|name| env.get(name).cloned())
}

fn load_err(pairs: &[(&str, &str)]) -> String {
    match load(pairs) {
        Ok(c) => panic!("{pairs:?} should fail, got {c:?}"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Config);
            e.to_string()
        }
    }
}

#[test]
fn nothing_set_means_memory_only_with_defaults() -> Result<(), Error> {
    let c = load(&[])?;
    assert!(c.is_memory_only());
    assert_eq!(c.max_connections(), 20);
    assert_eq!(c.url(), None);
    Ok(())
}

#[test]
fn url_and_alias() -> Result<(), Error> {
    assert_eq!(
        load(&[("REDIS_URL", "redis://a:1")])?.url(),
        Some("redis://a:1")
    );
    assert_eq!(
        load(&[("REDIS__URL", "redis://b:2")])?.url(),
        Some("redis://b:2")
    );
    let same = load(&[("REDIS_URL", "redis://b:2"), ("REDIS__URL", "redis://b:2")])?;
    assert_eq!(same.url(), Some("redis://b:2"));
    assert!(
        load_err(&[("REDIS_URL", "redis://a:1"), ("REDIS__URL", "redis://b:2")])
            .contains("both set")
    );
    assert!(load_err(&[("REDIS_URL", "localhost:6379")]).starts_with("REDIS_URL: "));
    // Empty counts as unset.
    assert!(load(&[("REDIS_URL", "  ")])?.is_memory_only());
    Ok(())
}

/// Every numeric variable: set, unset and malformed.
#[test]
fn every_variable_set_and_malformed() -> Result<(), Error> {
    let url = ("REDIS_URL", "redis://localhost");
    type Check = fn(&Config) -> bool;
    let cases: &[(&str, &str, Check)] = &[
        ("CACHE_SOCKET_CONNECT_TIMEOUT_MS", "1500", |c| {
            c.connect_timeout() == Duration::from_millis(1500)
        }),
        ("CACHE_SOCKET_TIMEOUT_MS", "250", |c| {
            c.socket_timeout() == Duration::from_millis(250)
        }),
        ("CACHE_CHECKOUT_TIMEOUT_MS", "750", |c| {
            c.checkout_timeout() == Duration::from_millis(750)
        }),
        ("CACHE_CALL_TIMEOUT_MS", "5000", |c| {
            c.call_timeout() == Some(Duration::from_secs(5))
        }),
        ("CACHE_HEALTH_CHECK_INTERVAL", "0.5", |c| {
            c.health_check_interval() == Duration::from_millis(500)
        }),
        ("CACHE_MAX_CONNECTIONS", "8", |c| c.max_connections() == 8),
        ("CACHE_MIN_IDLE", "2", |c| c.min_idle() == 2),
        ("CACHE_IDLE_TIMEOUT", "120", |c| {
            c.idle_timeout() == Some(Duration::from_secs(120))
        }),
        ("CACHE_MAX_LIFETIME", "600", |c| {
            c.max_lifetime() == Some(Duration::from_secs(600))
        }),
        ("CACHE_KEEPALIVE_IDLE", "10", |c| {
            c.keepalive_idle() == Duration::from_secs(10)
        }),
        ("CACHE_KEEPALIVE_INTERVAL", "5", |c| {
            c.keepalive_interval() == Duration::from_secs(5)
        }),
        ("CACHE_KEEPALIVE_COUNT", "4", |c| c.keepalive_count() == 4),
        ("CACHE_MAX_RETRIES", "0", |c| c.max_retries() == 0),
        ("CACHE_RETRY_DELAY", "0.25", |c| {
            c.retry_base_delay() == Duration::from_millis(250)
        }),
        ("CACHE_RETRY_MAX_DELAY", "3", |c| {
            c.retry_max_delay() == Duration::from_secs(3)
        }),
        ("REDIS_CIRCUIT_BREAKER_THRESHOLD", "3", |c| {
            c.failure_threshold() == 3
        }),
        ("REDIS_CIRCUIT_BREAKER_TIMEOUT", "1.5", |c| {
            c.open_timeout() == Duration::from_millis(1500)
        }),
        ("REDIS_CIRCUIT_BREAKER_SUCCESS_THRESHOLD", "1", |c| {
            c.success_threshold() == 1
        }),
        ("REDIS_CIRCUIT_BREAKER_HALF_OPEN_MAX_REQUESTS", "1", |c| {
            c.half_open_max_requests() == 1
        }),
        ("REDIS_COMPRESSION_THRESHOLD", "1024", |c| {
            c.compression_threshold() == Some(1024)
        }),
        ("REDIS_FAILOVER_COOLDOWN", "30", |c| {
            c.failover_cooldown() == Duration::from_secs(30)
        }),
        ("REDIS_FAILOVER_GRACE", "90", |c| {
            c.failover_grace() == Duration::from_secs(90)
        }),
        ("CACHE_DEFAULT_TTL", "3600", |c| {
            c.default_ttl() == Some(Duration::from_secs(3600))
        }),
        ("CACHE_FALLBACK_MAX_ENTRIES", "100", |c| {
            c.fallback_max_entries() == 100
        }),
        ("CACHE_FALLBACK_MAX_BYTES", "4096", |c| {
            c.fallback_max_bytes() == 4096
        }),
    ];
    for (name, value, check) in cases {
        let c = load(&[url, (name, value)])?;
        assert!(check(&c), "{name}={value} not applied: {c:?}");
        // Unset: the default stands.
        let d = load(&[url])?;
        assert!(
            !check(&d) || *name == "CACHE_MAX_RETRIES" && d.max_retries() == 0,
            "{name} default"
        );
        for bad in [
            "abc",
            "-1",
            "1e999",
            "NaN",
            "12abc",
            "99999999999999999999999",
        ] {
            let msg = load_err(&[url, (name, bad)]);
            assert!(msg.starts_with(&format!("{name}: ")), "{name}={bad}: {msg}");
        }
    }
    Ok(())
}

#[test]
fn compression_is_off_unless_set() -> Result<(), Error> {
    let url = ("REDIS_URL", "redis://localhost");
    let threshold = |v: &str| {
        load(&[url, ("REDIS_COMPRESSION_THRESHOLD", v)]).map(|c| c.compression_threshold())
    };
    assert_eq!(load(&[url])?.compression_threshold(), None);
    assert_eq!(threshold("")?, None);
    assert_eq!(threshold("off")?, None);
    assert_eq!(threshold(" Off ")?, None);
    assert_eq!(threshold("512")?, Some(512));
    assert_eq!(threshold("0")?, Some(0));
    let msg = load_err(&[url, ("REDIS_COMPRESSION_THRESHOLD", "on")]);
    assert!(msg.starts_with("REDIS_COMPRESSION_THRESHOLD: "), "{msg}");
    Ok(())
}

#[test]
fn out_of_range_values_name_the_variable() {
    let url = ("REDIS_URL", "redis://localhost");
    for (name, value) in [
        ("CACHE_MAX_CONNECTIONS", "0"),
        ("CACHE_SOCKET_TIMEOUT_MS", "0"),
        ("CACHE_SOCKET_CONNECT_TIMEOUT_MS", "86400000"),
        ("REDIS_CIRCUIT_BREAKER_THRESHOLD", "0"),
        ("CACHE_KEEPALIVE_COUNT", "1000"),
        ("CACHE_MAX_RETRIES", "1000"),
        ("CACHE_MIN_IDLE", "50"),
        ("CACHE_FALLBACK_MAX_ENTRIES", "0"),
    ] {
        let msg = load_err(&[url, (name, value)]);
        assert!(
            msg.starts_with(&format!("{name}: ")),
            "{name}={value}: {msg}"
        );
    }
}

#[test]
fn optional_durations_accept_zero_as_off() -> Result<(), Error> {
    let c = load(&[
        ("REDIS_URL", "redis://localhost"),
        ("CACHE_IDLE_TIMEOUT", "0"),
        ("CACHE_MAX_LIFETIME", "0"),
        ("CACHE_DEFAULT_TTL", "0"),
        ("CACHE_CALL_TIMEOUT_MS", "0"),
    ])?;
    assert_eq!(c.idle_timeout(), None);
    assert_eq!(c.max_lifetime(), None);
    assert_eq!(c.default_ttl(), None);
    assert_eq!(c.call_timeout(), None);
    Ok(())
}

#[test]
fn retry_delay_above_default_cap_raises_the_cap() -> Result<(), Error> {
    let c = load(&[("REDIS_URL", "redis://h"), ("CACHE_RETRY_DELAY", "5")])?;
    assert_eq!(c.retry_base_delay(), Duration::from_secs(5));
    assert_eq!(c.retry_max_delay(), Duration::from_secs(5));
    let msg = load_err(&[
        ("REDIS_URL", "redis://h"),
        ("CACHE_RETRY_DELAY", "5"),
        ("CACHE_RETRY_MAX_DELAY", "1"),
    ]);
    assert!(msg.starts_with("CACHE_RETRY_MAX_DELAY: "), "{msg}");
    Ok(())
}

#[test]
fn fallback_variables() -> Result<(), Error> {
    let base = ("REDIS_URL", "redis://primary");
    let c = load(&[base, ("REDIS_FALLBACK_URL", "redis://secondary:6380")])?;
    assert_eq!(c.fallback_url(), Some("redis://secondary:6380"));
    let c = load(&[
        base,
        ("REDIS_FALLBACK_URL", "redis://secondary:6380"),
        ("REDIS_FALLBACK_ENABLED", "false"),
    ])?;
    assert_eq!(c.fallback_url(), None);
    for yes in ["1", "true", "TRUE", "yes", "on"] {
        let c = load(&[
            base,
            ("REDIS_FALLBACK_URL", "redis://s"),
            ("REDIS_FALLBACK_ENABLED", yes),
        ])?;
        assert!(c.fallback_url().is_some(), "{yes}");
    }
    assert!(load_err(&[base, ("REDIS_FALLBACK_ENABLED", "maybe")])
        .starts_with("REDIS_FALLBACK_ENABLED: expected true or false"));
    assert!(load_err(&[base, ("REDIS_FALLBACK_URL", "nope")]).starts_with("REDIS_FALLBACK_URL: "));
    Ok(())
}

/// `REDIS_FALLBACK_ENABLED=true` without `REDIS_FALLBACK_URL` fails over
/// to the local Redis, as the design this replaces did, and says so once
/// at INFO; without a primary there is nothing to fail over from.
#[test]
fn fallback_enabled_without_a_url_means_the_local_redis() -> Result<(), Error> {
    crate::test_log::start();
    let base = ("REDIS_URL", "redis://primary");
    let c = load(&[base, ("REDIS_FALLBACK_ENABLED", "true")])?;
    // Shown without the default database 0.
    assert_eq!(c.fallback_url(), Some("redis://localhost:6379"));
    let lines = crate::test_log::take("resilient_redis::config");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].0, log::Level::Info);
    assert!(lines[0].1.contains("redis://localhost:6379/0"), "{lines:?}");

    // Anything but `true` adds nothing, and logs nothing.
    assert_eq!(
        load(&[base, ("REDIS_FALLBACK_ENABLED", "false")])?.fallback_url(),
        None
    );
    assert_eq!(load(&[base])?.fallback_url(), None);
    assert_eq!(crate::test_log::take("resilient_redis::config"), []);
    let err = load_err(&[("REDIS_FALLBACK_ENABLED", "true")]);
    assert!(err.starts_with("REDIS_FALLBACK_ENABLED: "), "{err}");
    assert!(err.contains("REDIS_URL"), "{err}");
    Ok(())
}

/// A bad URL is reported under the name of the variable that held it.
#[test]
fn url_errors_name_the_variable_that_was_set() {
    let err = load_err(&[("REDIS__URL", "localhost:6379")]);
    assert!(err.starts_with("REDIS__URL: "), "{err}");
    let err = load_err(&[("REDIS_URL", "localhost:6379")]);
    assert!(err.starts_with("REDIS_URL: "), "{err}");
    let err = load_err(&[("REDIS__URL", "redis://h:99999999")]);
    assert!(err.starts_with("REDIS__URL: "), "{err}");
}

#[test]
fn fallback_mode_and_prefix() -> Result<(), Error> {
    for (v, mode) in [
        ("disabled", FallbackMode::Disabled),
        ("on_failure", FallbackMode::OnFailure),
        ("write-through", FallbackMode::WriteThrough),
        ("WRITE_THROUGH", FallbackMode::WriteThrough),
    ] {
        assert_eq!(load(&[("CACHE_FALLBACK_MODE", v)])?.fallback_mode(), mode);
    }
    assert!(load_err(&[("CACHE_FALLBACK_MODE", "sometimes")]).starts_with("CACHE_FALLBACK_MODE: "));
    assert_eq!(
        load(&[("CACHE_KEY_PREFIX", "svc: ")])?.key_prefix(),
        "svc: "
    );
    Ok(())
}

#[test]
fn malformed_values_are_shown_truncated_and_urls_never() {
    let msg = load_err(&[("CACHE_MAX_CONNECTIONS", &"9x".repeat(100))]);
    assert!(msg.len() < 120, "{msg}");
    let msg = load_err(&[("REDIS_URL", "redis://u:pa55word@host:notaport")]);
    assert!(!msg.contains("pa55word"), "{msg}");
}

#[test]
fn the_table_lists_every_variable_read() {
    let names: Vec<&str> = VARIABLES.iter().map(|(n, _)| *n).collect();
    let l = &ENV_LABELS;
    for label in [
        l.url,
        l.fallback_url,
        l.fallback_enabled,
        l.connect_timeout,
        l.socket_timeout,
        l.max_connections,
        l.min_idle,
        l.checkout_timeout,
        l.health_check_interval,
        l.idle_timeout,
        l.max_lifetime,
        l.keepalive_idle,
        l.keepalive_interval,
        l.keepalive_count,
        l.failure_threshold,
        l.success_threshold,
        l.open_timeout,
        l.half_open_max_requests,
        l.max_retries,
        l.retry_base_delay,
        l.retry_max_delay,
        l.call_timeout,
        l.fallback_max_entries,
        l.fallback_max_bytes,
        l.key_prefix,
        l.default_ttl,
        l.compression_threshold,
        l.failover_cooldown,
        l.failover_grace,
        l.tls_ca_file,
        l.tls_cert_file,
        l.tls_key_file,
    ] {
        assert!(names.contains(&label), "{label} missing from VARIABLES");
    }
    assert!(names.contains(&"REDIS__URL"));
    assert!(names.contains(&"CACHE_FALLBACK_MODE"));
}

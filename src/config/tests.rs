//! Tests of the builder, its checks, and redaction.

use super::*;
use crate::{Error, ErrorKind};

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
    assert_eq!(c.compression_threshold(), None);
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
    assert!(
        config_err(b().socket_timeout(Duration::from_secs(86_400))).starts_with("socket_timeout: ")
    );
    assert!(config_err(b().min_idle(21)).starts_with("min_idle: "));
    assert!(config_err(b().failure_threshold(0)).starts_with("failure_threshold: "));
    assert!(config_err(b().keepalive_count(0)).starts_with("keepalive_count: "));
    assert!(
        config_err(b().keepalive_idle(Duration::from_millis(10))).starts_with("keepalive_idle: ")
    );
    assert!(config_err(b().max_retries(1000)).starts_with("max_retries: "));
    assert!(
        config_err(b().retry_max_delay(Duration::from_millis(10))).starts_with("retry_max_delay: ")
    );
    assert!(config_err(b().fallback_max_entries(0)).starts_with("fallback_max_entries: "));
    assert!(config_err(b().key_prefix("x".repeat(2000))).starts_with("key_prefix: "));
    assert!(config_err(b().default_ttl(Some(Duration::ZERO))).starts_with("default_ttl: "));
    assert!(config_err(b().idle_timeout(Some(Duration::ZERO))).starts_with("idle_timeout: "));
    assert!(config_err(b().fallback_enabled(true)).contains("fallback_url is not set"));
    assert!(config_err(Config::memory_only().fallback_url("redis://b")).contains("primary"));
    assert!(config_err(b().fallback_url("nope")).starts_with("fallback_url: "));
    // A wrong value is an error even while the feature it feeds is off.
    assert!(
        config_err(b().fallback_url("nope").fallback_enabled(false)).starts_with("fallback_url: ")
    );
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

//! Failover never downgrades a `rediss://` endpoint: the primary and a TLS
//! secondary see only TLS on the wire through failover and restore, and a
//! plain secondary behind a TLS primary needs `allow_tls_downgrade(true)`,
//! which is logged once.

use resilient_redis::{BreakerState, Client, ConfigBuilder, FallbackMode, ManualClock};

use super::support::ms;
use super::*;

/// Every failover timer here: long enough that the prober thread (real
/// time) never ticks within a test; the manual clock drives the rest.
const PERIOD: Duration = Duration::from_secs(600);

fn failover_config(primary: &str, secondary: &str, certs: &Certs) -> ConfigBuilder {
    Config::builder(primary)
        .fallback_url(secondary)
        .tls_ca_file(certs.path("ca.pem"))
        .connect_timeout(TIMEOUT)
        .socket_timeout(TIMEOUT)
        .checkout_timeout(TIMEOUT)
        .fallback_mode(FallbackMode::Disabled)
        .failure_threshold(1)
        .max_retries(0)
        .retry_base_delay(ms(1))
        .failover_cooldown(PERIOD)
        .health_check_interval(PERIOD)
        .open_timeout(PERIOD)
}

/// Stops the primary; the next read fails on its dead pooled connection,
/// opens the breaker (threshold 1) and is re-sent to the secondary.
fn fail_over(client: &Client, primary: &mut RedisServer) {
    primary.stop();
    let got: Option<String> = client.get("missing").unwrap();
    assert_eq!(got, None);
    let health = client.health();
    assert_eq!(health.active_endpoint, Some("secondary"), "{health}");
    assert_eq!(client.breaker_state(), Some(BreakerState::Open));
}

#[test]
fn tls_primary_and_tls_secondary_stay_tls_through_failover_and_restore() {
    let certs = Certs::new("failover-tls");
    let mut primary = tls_server(&certs, false);
    let secondary = tls_server(&certs, false);
    let (p_relay, s_relay) = (Relay::start(primary.port()), Relay::start(secondary.port()));
    let config = failover_config(
        &format!("rediss://localhost:{}", p_relay.port),
        &format!("rediss://localhost:{}", s_relay.port),
        &certs,
    )
    .build()
    .unwrap();
    let clock = ManualClock::new();
    let client = Client::builder(config)
        .clock(clock.shared())
        .build()
        .unwrap();
    client.set("k", "on the primary").unwrap();

    fail_over(&client, &mut primary);
    client.set("k", "on the secondary").unwrap();
    // It really is on the secondary, reached over TLS.
    let direct = Config::builder(format!("rediss://localhost:{}", secondary.port()))
        .tls_ca_file(certs.path("ca.pem"))
        .build()
        .unwrap();
    let stored: Option<String> = connect(&direct).unwrap().get("k").unwrap();
    assert_eq!(stored.as_deref(), Some("on the secondary"));

    // Restore: the primary is back; after the cooldown and grace period,
    // two good probes (success_threshold) switch calls back.
    primary.start();
    clock.advance(PERIOD + Duration::from_secs(1));
    assert!(!client.probe_primary());
    assert!(client.probe_primary());
    assert_eq!(client.health().active_endpoint, Some("primary"));
    client.set("k", "back on the primary").unwrap();

    let (p_seen, s_seen) = (p_relay.first_bytes(), s_relay.first_bytes());
    // Primary: the first connection, and the one the probes made after
    // the restart.
    assert!(p_seen.len() >= 2, "{p_seen:?}");
    assert!(p_seen.iter().all(|b| *b == TLS_HANDSHAKE), "{p_seen:?}");
    assert!(!s_seen.is_empty());
    assert!(s_seen.iter().all(|b| *b == TLS_HANDSHAKE), "{s_seen:?}");
}

#[test]
fn a_plain_secondary_needs_allow_tls_downgrade_which_warns_once() {
    let certs = Certs::new("failover-plain");
    let mut primary = tls_server(&certs, false);
    let secondary = RedisServer::new();
    let p_relay = Relay::start(primary.port());
    let p_url = format!("rediss://localhost:{}", p_relay.port);
    let marker = [
        "TLS downgrade allowed",
        &format!("127.0.0.1:{}", secondary.port()),
    ];

    let e = failover_config(&p_url, &secondary.url(), &certs)
        .build()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("allow_tls_downgrade(true)"), "{e}");
    assert_eq!(warnings_with(&marker), 0, "a refused config logs nothing");

    let config = failover_config(&p_url, &secondary.url(), &certs)
        .allow_tls_downgrade(true)
        .build()
        .unwrap();
    assert_eq!(warnings_with(&marker), 1);
    let client = Client::builder(config)
        .clock(ManualClock::new().shared())
        .build()
        .unwrap();
    client.set("k", "on the primary").unwrap();
    fail_over(&client, &mut primary);
    client.set("k", "on the plain secondary").unwrap();
    let stored: Option<String> = secondary.connection().get("k").unwrap();
    assert_eq!(stored.as_deref(), Some("on the plain secondary"));

    assert_eq!(
        warnings_with(&marker),
        1,
        "calls and failover do not repeat it"
    );
    // The primary itself was only ever spoken to over TLS.
    let p_seen = p_relay.first_bytes();
    assert!(!p_seen.is_empty());
    assert!(p_seen.iter().all(|b| *b == TLS_HANDSHAKE), "{p_seen:?}");
}

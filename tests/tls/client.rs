//! TLS through the public `Pool` and `Client`: the pool keeps the TLS
//! classification of a failed connect, the breaker ignores a certificate
//! that will never verify but counts a reset during the handshake, and the
//! in-memory fallback does not hide a TLS misconfiguration.

use resilient_redis::{BreakerState, Client, ConfigBuilder, FallbackMode, HealthStatus, Pool};

use super::support::{ms, FaultProxy, Mode};
use super::*;

/// Short timeouts and retry delays; a TLS handshake in a debug build still
/// fits easily in the connect timeout.
fn fast(url: &str) -> ConfigBuilder {
    Config::builder(url)
        .connect_timeout(TIMEOUT)
        .socket_timeout(TIMEOUT)
        .checkout_timeout(TIMEOUT)
        .retry_base_delay(ms(1))
        .retry_max_delay(ms(5))
}

fn assert_unknown_ca(e: &Error) {
    assert_eq!(e.kind(), ErrorKind::Tls, "{e:?}");
    assert_eq!(e.class(), ErrorClass::Permanent, "{e:?}");
    assert!(e.to_string().contains("signed by unknown CA"), "{e}");
    assert!(!e.counts_against_breaker(), "{e:?}");
    assert!(!e.may_have_executed(), "{e:?}");
}

#[test]
fn pool_right_ca_reuses_the_tls_connection_and_wrong_ca_keeps_the_tls_error() {
    let certs = Certs::new("pool");
    let server = tls_server(&certs, false);
    let relay = Relay::start(server.port());
    let url = format!("rediss://localhost:{}", relay.port);

    let pool = Pool::new(
        &fast(&url)
            .tls_ca_file(certs.path("ca.pem"))
            .build()
            .unwrap(),
    )
    .unwrap();
    roundtrip(pool.get().unwrap().raw_mut());
    let mut again = pool.get().unwrap();
    assert!(
        again.is_reused(),
        "the second checkout reuses the connection"
    );
    roundtrip(again.raw_mut());
    drop(again);
    assert_eq!(pool.stats().created, 1);

    let wrong = Pool::new(
        &fast(&url)
            .tls_ca_file(certs.path("other-ca.pem"))
            .build()
            .unwrap(),
    )
    .unwrap();
    for _ in 0..2 {
        let Err(e) = wrong.get() else {
            panic!("the certificate must not verify")
        };
        assert_unknown_ca(&e);
        // The pool says where it was connecting to.
        assert!(e.to_string().contains(&url), "{e}");
    }
    let stats = wrong.stats();
    assert_eq!((stats.created, stats.connect_failures), (0, 2));
    // One handshake for the good pool, one per failed checkout: all TLS.
    assert_eq!(relay.first_bytes(), vec![TLS_HANDSHAKE; 3]);
}

#[test]
fn client_right_ca_works_is_healthy_and_counts_the_calls() {
    let certs = Certs::new("client-right");
    let server = tls_server(&certs, false);
    let relay = Relay::start(server.port());
    let config = fast(&format!("rediss://localhost:{}", relay.port))
        .tls_ca_file(certs.path("ca.pem"))
        .build()
        .unwrap();
    let client = Client::new(config).unwrap();
    client.set("tls:client", "over tls").unwrap();
    let got: Option<String> = client.get("tls:client").unwrap();
    assert_eq!(got.as_deref(), Some("over tls"));
    client.ping().unwrap();

    let health = client.health();
    assert_eq!(health.status, HealthStatus::Healthy, "{health}");
    assert!(!health.serving_from_memory);
    let s = client.stats();
    assert_eq!((s.requests, s.hits, s.errors()), (3, 1, 0), "{s}");
    assert_eq!((s.fallback_reads, s.fallback_writes), (0, 0), "{s}");
    assert_eq!(s.endpoints[0].requests, 3, "{s}");
    assert_eq!(s.endpoints[0].connections_created, 1, "{s}");
    assert_eq!(relay.first_bytes(), vec![TLS_HANDSHAKE]);
}

#[test]
fn client_wrong_ca_is_a_tls_error_that_leaves_the_breaker_closed() {
    let certs = Certs::new("client-wrong");
    let server = tls_server(&certs, false);
    let relay = Relay::start(server.port());
    // A password in the URL: it must not reach any message.
    let config = fast(&format!("rediss://:s3cret@localhost:{}", relay.port))
        .tls_ca_file(certs.path("other-ca.pem"))
        .fallback_mode(FallbackMode::Disabled)
        .failure_threshold(2)
        .max_retries(3)
        .build()
        .unwrap();
    let client = Client::new(config).unwrap();
    const CALLS: usize = 5;
    for _ in 0..CALLS {
        let e = client.get::<_, String>("k").unwrap_err();
        assert_unknown_ca(&e);
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
    // Many more failures than the threshold, and still closed: failing
    // fast would not make the certificate verify.
    assert_eq!(client.breaker_state(), Some(BreakerState::Closed));
    let s = client.stats();
    assert_eq!(
        (s.errors_permanent, s.errors()),
        (CALLS as u64, CALLS as u64)
    );
    assert_eq!(s.retries, 0, "a certificate error is not retried: {s}");
    assert_eq!(s.endpoints[0].breaker_opens, 0);
    let health = client.health();
    let last = health.endpoints[0].last_error.clone().unwrap_or_default();
    assert!(last.contains("signed by unknown CA"), "{health}");
    assert!(!health.to_string().contains("s3cret"), "{health}");
    // The breaker stays closed, yet no call can succeed: not healthy.
    assert_eq!(health.status, HealthStatus::Unavailable, "{health}");
    // One handshake per call, no retry, never a plaintext byte.
    assert_eq!(relay.first_bytes(), vec![TLS_HANDSHAKE; CALLS]);
}

/// With the fallback on (the default), a certificate that will never
/// verify still reaches the caller: a misconfiguration must not hide
/// behind the in-memory store.
#[test]
fn client_wrong_ca_is_not_hidden_by_the_fallback() {
    let certs = Certs::new("client-wrong-fallback");
    let server = tls_server(&certs, false);
    let config = fast(&format!("rediss://localhost:{}", server.port()))
        .tls_ca_file(certs.path("other-ca.pem"))
        .build()
        .unwrap();
    assert_ne!(config.fallback_mode(), FallbackMode::Disabled);
    let client = Client::new(config).unwrap();
    assert_unknown_ca(&client.set("k", "v").unwrap_err());
    assert_unknown_ca(&client.get::<_, String>("k").unwrap_err());
    assert_unknown_ca(&client.incr("n", 1).unwrap_err());
    let s = client.stats();
    assert_eq!((s.fallback_reads, s.fallback_writes), (0, 0), "{s}");
    assert_eq!(s.fallback_entries, 0, "{s}");
    assert!(!s.fallback_active, "{s}");
    assert!(!client.health().serving_from_memory);
    assert_eq!(client.health().status, HealthStatus::Unavailable);
    assert_eq!(client.breaker_state(), Some(BreakerState::Closed));
}

#[test]
fn client_mutual_tls_with_and_without_a_client_certificate() {
    let certs = Certs::new("client-mtls");
    let server = tls_server(&certs, true);
    let url = format!("rediss://localhost:{}", server.port());
    let with = Client::new(
        fast(&url)
            .tls_ca_file(certs.path("ca.pem"))
            .tls_client_cert(certs.path("client.pem"), certs.path("client.key"))
            .build()
            .unwrap(),
    )
    .unwrap();
    with.set("mtls", 1).unwrap();
    assert_eq!(with.get::<_, i64>("mtls").unwrap(), Some(1));

    let without = Client::new(
        fast(&url)
            .tls_ca_file(certs.path("ca.pem"))
            .failure_threshold(1)
            .build()
            .unwrap(),
    )
    .unwrap();
    for _ in 0..3 {
        let e = without.get::<_, i64>("mtls").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Tls, "{e:?}");
        assert!(e.to_string().contains("client certificate"), "{e}");
        assert!(!e.counts_against_breaker(), "{e:?}");
    }
    assert_eq!(without.breaker_state(), Some(BreakerState::Closed));
    assert_eq!(without.stats().fallback_reads, 0);
}

#[test]
fn client_insecure_mode_works_and_warns_once() {
    let certs = Certs::new("client-insecure");
    let server = tls_server(&certs, false);
    let marker = format!("localhost:{}", server.port());
    // (Also installs the capturing logger before anything is logged.)
    assert_eq!(warnings_with(&[&marker, "verification is OFF"]), 0);
    let config = fast(&format!("rediss://localhost:{}", server.port()))
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    assert_eq!(warnings_with(&[&marker, "verification is OFF"]), 1);
    let client = Client::new(config).unwrap();
    for i in 0..3 {
        client.set("insecure", i).unwrap();
        assert_eq!(client.get::<_, i64>("insecure").unwrap(), Some(i));
    }
    let other = client.clone();
    other.ping().unwrap();
    assert_eq!(
        warnings_with(&[&marker, "verification is OFF"]),
        1,
        "clients and calls must not log it again"
    );
}

/// A reset during the handshake is transient: it counts against the
/// breaker (which opens), and the fallback serves while it lasts.
#[test]
fn client_handshake_reset_counts_against_the_breaker() {
    let certs = Certs::new("client-reset");
    let server = tls_server(&certs, false);
    let proxy = FaultProxy::new(server.addr());
    proxy.set_mode(Mode::Reset);
    let url = format!("rediss://127.0.0.1:{}", proxy.port());
    let strict = Client::new(
        fast(&url)
            .tls_ca_file(certs.path("ca.pem"))
            .fallback_mode(FallbackMode::Disabled)
            .failure_threshold(2)
            .open_timeout(Duration::from_secs(600))
            .max_retries(0)
            .build()
            .unwrap(),
    )
    .unwrap();
    for _ in 0..2 {
        let e = strict.get::<_, String>("k").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Tls, "{e:?}");
        assert!(e.to_string().contains("during the TLS handshake"), "{e}");
        assert!(e.is_transient() && e.counts_against_breaker(), "{e:?}");
    }
    assert_eq!(strict.breaker_state(), Some(BreakerState::Open));
    let e = strict.get::<_, String>("k").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CircuitOpen, "{e:?}");

    // With the fallback on, the outage is served from memory...
    let lenient = Client::new(
        fast(&url)
            .tls_ca_file(certs.path("ca.pem"))
            .max_retries(0)
            .build()
            .unwrap(),
    )
    .unwrap();
    lenient.set("k", "kept").unwrap();
    assert_eq!(
        lenient.get::<_, String>("k").unwrap().as_deref(),
        Some("kept")
    );
    assert_eq!(lenient.stats().fallback_writes, 1);
    // Control: the same path works once the proxy stops resetting, so the
    // errors above came from the resets alone.
    proxy.set_mode(Mode::PassThrough);
    let healthy = Client::new(
        fast(&url)
            .tls_ca_file(certs.path("ca.pem"))
            .build()
            .unwrap(),
    )
    .unwrap();
    healthy.set("k", "redis").unwrap();
    assert_eq!(healthy.stats().fallback_writes, 0);
}

/// Automatic pipelining over `rediss://`: eight threads share one TLS
/// connection (their requests batched, every reply to its own caller),
/// and nothing but TLS goes over the wire.
#[test]
fn auto_pipelining_shares_tls_connections() {
    let certs = Certs::new("autopipe");
    let server = tls_server(&certs, false);
    let relay = Relay::start(server.port());
    let url = format!("rediss://localhost:{}", relay.port);
    let client = std::sync::Arc::new(
        Client::new(
            fast(&url)
                .tls_ca_file(certs.path("ca.pem"))
                .auto_pipeline(true)
                .auto_pipeline_share_from(0)
                .fallback_mode(FallbackMode::Disabled)
                .build()
                .unwrap(),
        )
        .unwrap(),
    );
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let client = client.clone();
            thread::spawn(move || {
                for i in 0..200 {
                    let key = format!("tls:{t}");
                    client.set(&key, format!("{t}:{i}")).unwrap();
                    let v: Option<String> = client.get(&key).unwrap();
                    assert_eq!(v, Some(format!("{t}:{i}")));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let stats = client.stats();
    let primary = &stats.endpoints[0];
    assert!(primary.shared_requests >= 8 * 400, "{primary:?}");
    assert!(primary.connections_created <= 2, "{primary:?}");
    assert!(relay.first_bytes().iter().all(|&b| b == 0x16));
}

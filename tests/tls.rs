//! `rediss://` against a real TLS `redis-server` (Debian's 7.0 is built
//! with TLS), with certificates generated at test time by rcgen.
//!
//! The tests in this file connect through the config's
//! `redis::ConnectionInfo`, the same path the pool uses; `client` and
//! `failover` go through the public `Pool` and `Client`. A small TCP relay
//! in front of the server records the first byte of every connection, which proves that the
//! client never sent plaintext: a TLS connection starts with a handshake
//! record (0x16), a RESP command with `*`.
#![cfg(feature = "tls")]
// Test code: a failed setup should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use redis::Commands;
use resilient_redis::test_support::{primary_connect_error, primary_connection_info};
use resilient_redis::{Config, Error, ErrorClass, ErrorKind};
use support::server::PORT_PLACEHOLDER;
use support::RedisServer;

// End to end through the public Pool and Client, and through failover,
// with the helpers below (paths: `mod client;` here would be tests/client.rs).
#[path = "tls/client.rs"]
mod client;
#[path = "tls/cluster.rs"]
mod cluster;
#[path = "tls/failover.rs"]
mod failover;
#[path = "tls/sentinel.rs"]
mod sentinel;
mod support;

const TIMEOUT: Duration = Duration::from_secs(5);

// ---- certificates -------------------------------------------------------

struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(name: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!("rr-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, ca_key) = make_ca("resilient-redis test CA");
        let (other, other_key) = make_ca("unrelated CA");
        let server_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        let server = params.clone().signed_by(&server_key, &ca, &ca_key).unwrap();
        // The same server, with a certificate whose validity ended in 2020.
        let mut expired = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        expired.not_before = rcgen::date_time_ymd(2019, 1, 1);
        expired.not_after = rcgen::date_time_ymd(2020, 1, 1);
        let expired = expired.signed_by(&server_key, &ca, &ca_key).unwrap();
        // The same names and key, signed by the unrelated CA.
        let untrusted = params.signed_by(&server_key, &other, &other_key).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let client = CertificateParams::new(vec!["client".to_string()])
            .unwrap()
            .signed_by(&client_key, &ca, &ca_key)
            .unwrap();
        for (file, text) in [
            ("ca.pem", ca.pem()),
            ("other-ca.pem", other.pem()),
            ("server.pem", server.pem()),
            ("server.key", server_key.serialize_pem()),
            ("expired-server.pem", expired.pem()),
            ("untrusted-server.pem", untrusted.pem()),
            ("client.pem", client.pem()),
            ("client.key", client_key.serialize_pem()),
        ] {
            std::fs::write(dir.join(file), text).unwrap();
        }
        Certs { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn make_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    (params.self_signed(&key).unwrap(), key)
}

// ---- a TLS-only redis-server --------------------------------------------

/// A `redis-server` from the shared harness that speaks TLS only (`--port
/// 0`); its [`RedisServer::port`] is the TLS port.
fn tls_server(certs: &Certs, require_client_cert: bool) -> RedisServer {
    tls_server_with_cert(certs, "server.pem", require_client_cert)
}

/// [`tls_server`] presenting the certificate in `cert_file` (same key).
fn tls_server_with_cert(certs: &Certs, cert_file: &str, require_client_cert: bool) -> RedisServer {
    let path = |f: &str| certs.path(f).display().to_string();
    RedisServer::builder()
        .args(&["--port", "0", "--tls-port", PORT_PLACEHOLDER])
        .args(&["--tls-cert-file", &path(cert_file)])
        .args(&["--tls-key-file", &path("server.key")])
        .args(&["--tls-ca-cert-file", &path("ca.pem")])
        .args(&[
            "--tls-auth-clients",
            if require_client_cert { "yes" } else { "no" },
        ])
        .start()
}

// ---- a relay that records the first byte of every connection -------------

struct Relay {
    port: u16,
    first_bytes: Arc<Mutex<Vec<u8>>>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let first_bytes = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&first_bytes);
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let seen = Arc::clone(&seen);
                thread::spawn(move || {
                    let mut first = [0u8; 1];
                    if client.read_exact(&mut first).is_err() {
                        return;
                    }
                    seen.lock().unwrap().push(first[0]);
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", target)) else {
                        return;
                    };
                    if server.write_all(&first).is_err() {
                        return;
                    }
                    pipe(client, server);
                });
            }
        });
        Relay { port, first_bytes }
    }

    fn first_bytes(&self) -> Vec<u8> {
        self.first_bytes.lock().unwrap().clone()
    }
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let t = thread::spawn(move || {
        let _ = std::io::copy(&mut a2, &mut b2);
        let _ = b2.shutdown(Shutdown::Write);
    });
    let (mut a, mut b) = (a, b);
    let _ = std::io::copy(&mut b, &mut a);
    let _ = a.shutdown(Shutdown::Write);
    let _ = t.join();
}

/// TLS record type "handshake": the first byte of every TLS connection.
const TLS_HANDSHAKE: u8 = 0x16;

// ---- a logger that keeps WARN lines -------------------------------------

struct Capture(Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            self.0.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

fn warnings_mentioning(text: &str) -> usize {
    warnings_with(&[text])
}

/// WARN lines logged so far (by any test in this binary) that contain
/// every one of `texts`.
fn warnings_with(texts: &[&str]) -> usize {
    static LOGGER: OnceLock<&'static Capture> = OnceLock::new();
    let logger = LOGGER.get_or_init(|| {
        let l: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        let _ = log::set_logger(l);
        log::set_max_level(log::LevelFilter::Warn);
        l
    });
    logger
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|l| texts.iter().all(|t| l.contains(t)))
        .count()
}

// ---- helpers -------------------------------------------------------------

fn connect(config: &Config) -> Result<redis::Connection, Error> {
    let info = primary_connection_info(config).unwrap();
    let client = redis::Client::open(info).map_err(Error::from)?;
    client
        .get_connection_with_timeout(TIMEOUT)
        .map_err(|e| primary_connect_error(config, e).unwrap())
}

fn roundtrip(con: &mut redis::Connection) {
    let _: () = con.set("tls:key", "value over tls").unwrap();
    let v: String = con.get("tls:key").unwrap();
    assert_eq!(v, "value over tls");
}

fn tls_err(r: Result<redis::Connection, Error>) -> Error {
    match r {
        Ok(_) => panic!("connect should fail"),
        Err(e) => {
            assert_eq!(e.kind(), ErrorKind::Tls, "{e:?}");
            e
        }
    }
}

// ---- tests ---------------------------------------------------------------

#[test]
fn right_ca_works_and_only_tls_is_sent() {
    let certs = Certs::new("right");
    let server = tls_server(&certs, false);
    let relay = Relay::start(server.port());
    let config = Config::builder(format!("rediss://localhost:{}/2", relay.port))
        .tls_ca_file(certs.path("ca.pem"))
        .build()
        .unwrap();
    let mut con = connect(&config).unwrap();
    roundtrip(&mut con);
    // By IP address too (the certificate names 127.0.0.1).
    let config = Config::builder(format!("rediss://127.0.0.1:{}", relay.port))
        .tls_ca_file(certs.path("ca.pem"))
        .build()
        .unwrap();
    roundtrip(&mut connect(&config).unwrap());
    let seen = relay.first_bytes();
    assert_eq!(seen, vec![TLS_HANDSHAKE; 2]);
}

#[test]
fn wrong_ca_is_a_tls_error_and_no_plaintext_is_sent() {
    let certs = Certs::new("wrong");
    let server = tls_server(&certs, false);
    let relay = Relay::start(server.port());
    let config = Config::builder(format!("rediss://localhost:{}", relay.port))
        .tls_ca_file(certs.path("other-ca.pem"))
        .build()
        .unwrap();
    let e = tls_err(connect(&config));
    assert!(e.to_string().contains("signed by unknown CA"), "{e}");
    assert_eq!(e.class(), ErrorClass::Permanent);
    assert!(!e.counts_against_breaker());
    assert!(!e.may_have_executed());
    // Again: still the same error, still only TLS on the wire.
    tls_err(connect(&config));
    assert_eq!(relay.first_bytes(), vec![TLS_HANDSHAKE; 2]);
}

#[test]
fn platform_roots_are_used_by_default_and_do_not_trust_a_private_ca() {
    let certs = Certs::new("platform");
    let server = tls_server(&certs, false);
    let config = Config::builder(format!("rediss://localhost:{}", server.port()))
        .build()
        .unwrap();
    let e = tls_err(connect(&config));
    assert!(e.to_string().contains("unknown CA"), "{e}");
}

#[test]
fn an_expired_server_certificate_is_reported() {
    let certs = Certs::new("expired");
    let server = tls_server_with_cert(&certs, "expired-server.pem", false);
    let config = Config::builder(format!("rediss://localhost:{}", server.port()))
        .tls_ca_file(certs.path("ca.pem"))
        .build()
        .unwrap();
    let e = tls_err(connect(&config));
    assert_eq!(e.kind(), ErrorKind::Tls, "{e}");
    assert!(e.to_string().contains("expired"), "{e}");
    assert!(!e.is_transient(), "{e}");
    assert!(!e.counts_against_breaker(), "{e}");
}

#[test]
fn a_name_mismatch_is_reported() {
    let certs = Certs::new("name");
    let server = tls_server(&certs, false);
    // 127.0.0.2 is loopback too but not named in the certificate; the
    // server listens on 127.0.0.1 only, so relay from 127.0.0.2.
    let listener = TcpListener::bind("127.0.0.2:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let target = server.port();
    thread::spawn(move || {
        if let Some(Ok(client)) = listener.incoming().next() {
            let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
            pipe(client, server);
        }
    });
    let config = Config::builder(format!("rediss://127.0.0.2:{port}"))
        .tls_ca_file(certs.path("ca.pem"))
        .build()
        .unwrap();
    let e = tls_err(connect(&config));
    assert!(e.to_string().contains("not valid for name"), "{e}");
    assert!(e.to_string().contains("127.0.0.2"), "{e}");
    assert!(!e.counts_against_breaker());
}

#[test]
fn mutual_tls_with_and_without_a_client_certificate() {
    let certs = Certs::new("mtls");
    let server = tls_server(&certs, true);
    let url = format!("rediss://localhost:{}", server.port());
    let with = Config::builder(&url)
        .tls_ca_file(certs.path("ca.pem"))
        .tls_client_cert(certs.path("client.pem"), certs.path("client.key"))
        .build()
        .unwrap();
    roundtrip(&mut connect(&with).unwrap());

    let without = Config::builder(&url)
        .tls_ca_file(certs.path("ca.pem"))
        .build()
        .unwrap();
    let e = tls_err(connect(&without));
    eprintln!("without a client certificate: {e}");
    assert!(e.to_string().contains("client certificate"), "{e}");
    assert!(!e.counts_against_breaker(), "{e:?}");
}

#[test]
fn insecure_mode_works_and_warns_once() {
    let certs = Certs::new("insecure");
    let server = tls_server(&certs, false);
    let url = format!("rediss://localhost:{}#insecure", server.port());
    let marker = format!("localhost:{}#insecure", server.port());
    assert_eq!(warnings_mentioning(&marker), 0);
    // Refused without the explicit call, and nothing logged.
    let e = Config::builder(&url).build().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert_eq!(warnings_mentioning(&marker), 0);

    let config = Config::builder(&url)
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    assert_eq!(warnings_mentioning(&marker), 1);
    // No CA given: the private CA is trusted only because verification is off.
    roundtrip(&mut connect(&config).unwrap());
    roundtrip(&mut connect(&config).unwrap());
    assert_eq!(
        warnings_mentioning(&marker),
        1,
        "connects must not log again"
    );
    assert!(warnings_mentioning("verification is OFF") >= 1);
}

#[test]
fn a_reset_during_the_handshake_is_a_transient_tls_error() {
    // A listener that accepts and closes at once: the TLS handshake cannot finish.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for c in listener.incoming().flatten() {
            drop(c);
        }
    });
    let certs = Certs::new("reset");
    let config = Config::builder(format!("rediss://localhost:{port}"))
        .tls_ca_file(certs.path("ca.pem"))
        .build()
        .unwrap();
    let e = tls_err(connect(&config));
    assert!(e.to_string().contains("during the TLS handshake"), "{e}");
    assert_eq!(e.class(), ErrorClass::Transient);
    assert!(e.counts_against_breaker());
    assert!(!e.may_have_executed());
}

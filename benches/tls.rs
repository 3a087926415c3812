//! Per-connection cost of `rediss://` (TCP connect + TLS handshake + the
//! connection setup + one PING) against plain `redis://`, on loopback with
//! a local redis-server started here. Run: `cargo bench --bench tls`.
//!
//! Variants:
//! - plain: `redis://`;
//! - tls, custom CA: one CA certificate attached at config time;
//! - tls, platform-size bundle: the platform store plus the test CA
//!   (~150 roots), i.e. what a connect costs with the platform roots that
//!   `Config` loads once;
//! - `load_native_certs()`: what redis-rs would add to *every* connect
//!   without `tls-rustls-webpki-roots` (disk reads and parsing).
// Bench code: a failed setup should stop the run loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use resilient_redis::test_support::primary_connection_info;
use resilient_redis::Config;

const CONNECTS: u32 = 300;

fn main() {
    let dir = std::env::temp_dir().join(format!("rr-tls-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let server = params.signed_by(&key, &ca, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    let platform =
        std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap_or_default();
    std::fs::write(dir.join("bundle.pem"), platform + &ca.pem()).unwrap();

    let (plain, tls) = (free_port(), free_port());
    let p = |f: &str| dir.join(f).display().to_string();
    let mut child = Command::new("redis-server")
        .args(["--port", &plain.to_string(), "--tls-port", &tls.to_string()])
        .args([
            "--tls-cert-file",
            &p("server.pem"),
            "--tls-key-file",
            &p("server.key"),
        ])
        .args([
            "--tls-ca-cert-file",
            &p("ca.pem"),
            "--tls-auth-clients",
            "no",
        ])
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", tls)).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }

    let plain_cfg = Config::builder(format!("redis://localhost:{plain}"))
        .build()
        .unwrap();
    let ca_cfg = Config::builder(format!("rediss://localhost:{tls}"))
        .tls_ca_file(dir.join("ca.pem"))
        .build()
        .unwrap();
    let started = Instant::now();
    let bundle_cfg = Config::builder(format!("rediss://localhost:{tls}"))
        .tls_ca_file(dir.join("bundle.pem"))
        .build()
        .unwrap();
    let bundle_build = started.elapsed();
    let started = Instant::now();
    let _platform_cfg = Config::builder(format!("rediss://localhost:{tls}"))
        .build()
        .unwrap();
    let platform_build = started.elapsed();

    let t_plain = per_connect(&plain_cfg);
    let t_ca = per_connect(&ca_cfg);
    let t_bundle = per_connect(&bundle_cfg);
    let started = Instant::now();
    for _ in 0..50 {
        black_box(rustls_native_certs::load_native_certs());
    }
    let t_native = started.elapsed() / 50;

    println!("connect + setup + PING, mean of {CONNECTS}, loopback:");
    println!(
        "  plain redis://                      {:>8.1} µs",
        us(t_plain)
    );
    println!("  rediss://, custom CA (1 root)       {:>8.1} µs", us(t_ca));
    println!(
        "  rediss://, platform-size bundle     {:>8.1} µs",
        us(t_bundle)
    );
    println!(
        "  load_native_certs() (avoided)       {:>8.1} µs per call",
        us(t_native)
    );
    println!("config build, once per client:");
    println!(
        "  with the platform-size bundle file  {:>8.1} µs",
        us(bundle_build)
    );
    println!(
        "  with the platform trust store       {:>8.1} µs",
        us(platform_build)
    );

    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn per_connect(config: &Config) -> Duration {
    let client = redis::Client::open(primary_connection_info(config).unwrap()).unwrap();
    // Warm up (DNS, server-side allocations).
    for _ in 0..10 {
        let mut c = client.get_connection().unwrap();
        let _: String = redis::cmd("PING").query(&mut c).unwrap();
    }
    let started = Instant::now();
    for _ in 0..CONNECTS {
        let mut c = client.get_connection().unwrap();
        let pong: String = redis::cmd("PING").query(&mut c).unwrap();
        black_box(pong);
    }
    started.elapsed() / CONNECTS
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

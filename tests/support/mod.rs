//! Shared helpers for the integration tests and benches: a real
//! `redis-server` per test ([`RedisServer`]), a TCP fault-injection proxy
//! ([`FaultProxy`]) and a scripted RESP server for replies a real Redis cannot
//! give ([`FakeRedis`]).
//!
//! Include with `mod support;` from `tests/*.rs`, or with
//! `#[path = "../tests/support/mod.rs"] mod support;` from `benches/`. It uses
//! only std, `redis` (and its re-exported `socket2`) so both can build it.

// Every test file compiles this module separately and uses only part of it;
// without this, each file would warn about the helpers it does not call.
#![allow(dead_code, unused_imports)]
// Test helpers: a failure here is a broken test environment, and panicking
// with a clear message is the right report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
pub mod fake;
pub mod proxy;
pub mod sentinel;
pub mod server;

pub use cluster::RedisCluster;
pub use fake::FakeRedis;
pub use proxy::{FaultProxy, Mode};
pub use sentinel::{Sentinel, SentinelCluster};
pub use server::{RedisServer, RedisServerBuilder};

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// A loopback port that was free a moment ago: bind port 0, read the port,
/// drop the listener. Another process may take it before the caller binds,
/// so callers that start a server retry on failure.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Milliseconds, for short test literals.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Opens a plain `redis::Connection` to `url` with read and write timeouts,
/// so a test never hangs on a faulty endpoint.
pub fn connect(url: &str, timeout: Duration) -> redis::RedisResult<redis::Connection> {
    with_timeouts(redis::Client::open(url)?, timeout)
}

/// Opens a `redis::Connection` to `127.0.0.1:port` over TLS, trusting only
/// the CA certificate in `ca` (PEM), with read and write timeouts.
#[cfg(feature = "tls")]
pub fn connect_tls(
    port: u16,
    ca: &std::path::Path,
    timeout: Duration,
) -> redis::RedisResult<redis::Connection> {
    use redis::IntoConnectionInfo;
    let root = std::fs::read(ca).expect("read the test CA");
    let info = redis::ConnectionAddr::TcpTls {
        host: "127.0.0.1".to_string(),
        port,
        insecure: false,
        tls_params: None,
    }
    .into_connection_info()?;
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root),
    };
    with_timeouts(redis::Client::build_with_tls(info, certs)?, timeout)
}

fn with_timeouts(
    client: redis::Client,
    timeout: Duration,
) -> redis::RedisResult<redis::Connection> {
    let conn = client.get_connection_with_timeout(timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    Ok(conn)
}

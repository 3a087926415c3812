//! Making one ready `redis::Connection`: socket options, connect with a
//! deadline, socket timeouts.
//!
//! TLS needs nothing here: its parameters travel inside the endpoint's
//! `ConnectionInfo`, which is passed through untouched (apart from the TCP
//! settings). The address comes from the endpoint's [`Topology`] at each
//! dial: the URL's, or the master the sentinels name now.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::io::tcp::{socket2::TcpKeepalive, TcpSettings};
use redis::{Client, Connection, ConnectionInfo, ConnectionLike};

use super::core::{Manage, Ping};
use crate::clock::SharedClock;
use crate::config::{Config, Endpoint};
use crate::error::{Error, ErrorKind};
use crate::topology::{SentinelTopology, Topology};

/// Connects to one endpoint and checks its connections.
pub(crate) struct RedisManager {
    /// Where each dial goes.
    pub(crate) topology: Topology,
    clock: SharedClock,
    redacted: String,
    /// `rediss://`: a reset while connecting is a TLS handshake failure.
    tls: bool,
    /// Read and write timeout of every socket (restored after a checkout
    /// that lowered it).
    pub(crate) socket_timeout: Duration,
}

/// The TCP options every pooled socket gets: keepalive with the configured
/// timers (set explicitly: the OS default waits two hours before the first
/// probe), `TCP_NODELAY`, and on Linux `TCP_USER_TIMEOUT` equal to the time
/// keepalive takes to give up, so unacknowledged writes fail as fast.
pub(crate) fn tcp_settings(config: &Config) -> TcpSettings {
    let keepalive = TcpKeepalive::new()
        .with_time(config.keepalive_idle)
        .with_interval(config.keepalive_interval)
        .with_retries(config.keepalive_count);
    let settings = TcpSettings::default()
        .set_nodelay(true)
        .set_keepalive(keepalive);
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    let settings = settings.set_user_timeout(
        config.keepalive_idle.saturating_add(
            config
                .keepalive_interval
                .saturating_mul(config.keepalive_count),
        ),
    );
    settings
}

impl RedisManager {
    pub(crate) fn new(endpoint: &Endpoint, config: &Config, clock: SharedClock) -> RedisManager {
        let info = endpoint.info.clone().set_tcp_settings(tcp_settings(config));
        let topology = match &endpoint.sentinel {
            None => Topology::Standalone(Box::new(info)),
            Some(spec) => Topology::Sentinel(Arc::new(SentinelTopology::new(
                spec,
                info,
                config.connect_timeout,
                config.socket_timeout,
                &endpoint.redacted,
                clock.clone(),
                config.fallback_max_entries,
            ))),
        };
        RedisManager {
            topology,
            clock,
            redacted: endpoint.redacted.clone(),
            tls: endpoint.tls,
            socket_timeout: config.socket_timeout,
        }
    }

    fn connect_inner(
        &self,
        info: ConnectionInfo,
        timeout: Duration,
    ) -> redis::RedisResult<Connection> {
        // redis-rs waits up to its timeout for *each* reply of the handshake
        // pipeline (it keeps reading after a timed-out reply), so a silent
        // server would hold us for a multiple of it: share it out instead.
        let per_reply = (timeout / handshake_replies(&info)).max(Duration::from_millis(1));
        // `Client::open` on a ConnectionInfo does no I/O.
        let conn = Client::open(info)?.get_connection_with_timeout(per_reply)?;
        // redis-rs clears the socket timeouts after its handshake: without
        // these a blackholed server would block a command forever.
        conn.set_read_timeout(Some(self.socket_timeout))?;
        conn.set_write_timeout(Some(self.socket_timeout))?;
        Ok(conn)
    }
}

/// How many replies redis-rs reads during its connection handshake: AUTH
/// (or HELLO), SELECT, and the two CLIENT SETINFO.
pub(crate) fn handshake_replies(info: &ConnectionInfo) -> u32 {
    let redis = info.redis_settings();
    let mut n = 0;
    if redis.password().is_some() || redis.protocol().supports_resp3() {
        n += 1;
    }
    if redis.db() != 0 {
        n += 1;
    }
    if !redis.skip_set_lib_name() {
        n += 2;
    }
    n.max(1)
}

impl Manage for RedisManager {
    type Conn = Connection;

    fn connect(&self, timeout: Duration) -> Result<Connection, Error> {
        let start = self.clock.now();
        let deadline: Instant = crate::clock::saturating_add(start, timeout);
        // Discovery (sentinel) shares the dial's time.
        let info = self.topology.connection_info(deadline)?;
        let left = deadline
            .saturating_duration_since(self.clock.now())
            .max(Duration::from_millis(1));
        let result = self.connect_inner(info, left).map_err(|e| {
            crate::tls::connect_error(e, self.tls)
                .context(format_args!("connecting to {}", self.redacted))
                // Nothing of the caller's command was sent.
                .with_may_have_executed(false)
        });
        match &result {
            Ok(_) => self.topology.note_connected(),
            // The master may have moved: ask the sentinels at once.
            Err(_) => self.topology.note_trouble(),
        }
        result
    }

    fn generation(&self) -> u64 {
        self.topology.generation()
    }

    fn ping(&self, conn: &mut Connection, timeout: Duration) -> Ping {
        // Bounded by the caller's remaining checkout time, not just the
        // socket timeout.
        let shorter = timeout < self.socket_timeout;
        if shorter
            && (conn.set_read_timeout(Some(timeout)).is_err()
                || conn.set_write_timeout(Some(timeout)).is_err())
        {
            return Ping::Failed;
        }
        let answer = match redis::cmd("PING").query::<String>(conn) {
            Ok(_) => Ping::Pong,
            // The server answered: reachable, but refusing.
            Err(e) => match Error::from_redis(e).kind() {
                ErrorKind::RateLimited | ErrorKind::Server | ErrorKind::Auth => Ping::Refused,
                _ => Ping::Failed,
            },
        };
        if shorter
            && (conn.set_read_timeout(Some(self.socket_timeout)).is_err()
                || conn.set_write_timeout(Some(self.socket_timeout)).is_err())
        {
            return Ping::Failed;
        }
        answer
    }

    fn is_broken(&self, conn: &Connection) -> bool {
        !conn.is_open()
    }
}

/// `true` when an error from a command leaves the connection unusable for
/// the next borrower: anything but a well-formed reply the server chose to
/// send (an error reply, or a reply of the wrong type).
pub(crate) fn breaks_connection(err: &redis::RedisError) -> bool {
    use redis::ErrorKind as K;
    !matches!(
        err.kind(),
        K::Server(_) | K::Extension | K::UnexpectedReturnType
    )
}

/// `true` for a `READONLY` error reply as redis-rs hands it over before
/// `query` turns it into an error: a `Value::ServerError`.
pub(crate) fn is_readonly_reply(value: &redis::Value) -> bool {
    matches!(value, redis::Value::ServerError(e) if e.code() == "READONLY")
}

/// `true` for a `READONLY` error reply: the server is a replica now.
pub(crate) fn is_readonly(err: &redis::RedisError) -> bool {
    matches!(
        err.kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
    ) || err.code() == Some("READONLY")
}

//! The bounded connection pool: [`Pool`] holds `redis::Connection`s to one
//! Redis endpoint and lends them out as [`PooledConnection`] guards.
//!
//! What it guarantees:
//!
//! - **Bounded**: never more than `max_connections` open (idle + in use +
//!   connecting). A caller that finds it full waits until one deadline
//!   (`checkout_timeout`) and then gets [`ErrorKind::PoolTimeout`]; waiters
//!   are served in arrival order.
//! - **Fast when Redis is down**: connecting happens on the caller's thread,
//!   outside the pool's lock, bounded by the connect timeout and the
//!   remaining checkout time. At most `min(max_connections, 4)` connects run
//!   at once, so a restart does not cause a dial storm.
//! - **No dead connections handed out**: idle connections are reused last in,
//!   first out; one idle longer than `health_check_interval` is `PING`ed
//!   first and silently replaced if that fails; one past `idle_timeout` or
//!   `max_lifetime` (minus up to 10% jitter) is closed. A connection that saw
//!   an I/O error, a parse error or a timeout is discarded on return, never
//!   lent again (a late reply would reach the next borrower).
//! - **Sockets**: TCP keepalive with the configured timers, `TCP_NODELAY`,
//!   `TCP_USER_TIMEOUT` on Linux, and read/write timeouts on every socket.
//!
//! A maintenance thread per pool closes expired idle connections and keeps
//! `min_idle` warm; it holds only a weak reference and is stopped and joined
//! when the last [`Pool`] handle is dropped.
//!
//! [`ErrorKind::PoolTimeout`]: crate::ErrorKind::PoolTimeout

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{Connection, ConnectionLike, RedisError, RedisResult, Value};

use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, Endpoint};
use crate::error::{Error, ErrorClass, ErrorKind};

mod connect;
pub(crate) mod core;
mod maintenance;
mod mux;
#[cfg(test)]
mod tests;

pub(crate) use self::connect::handshake_replies;
pub(crate) use self::connect::is_readonly;
use self::connect::{breaks_connection, is_readonly_reply, RedisManager};
use self::core::{Entry, Settings, Shared};
use self::maintenance::Maintenance;
use self::mux::{Expect, Lease, Mux, Reply};

/// A bounded pool of connections to one Redis endpoint.
///
/// # About threads and cloning
///
/// `Pool` is `Send + Sync` and a cheap `Clone` (two `Arc`s): clones share
/// the same connections, counters and maintenance thread. The thread stops
/// when the last clone is dropped; connections still lent out are closed
/// when their guards drop.
///
/// # Examples
///
/// ```no_run
/// use resilient_redis::{Config, Pool};
///
/// let pool = Pool::new(&Config::builder("redis://127.0.0.1:6379").build()?)?;
/// let mut conn = pool.get()?;
/// let pong: String = resilient_redis::redis::cmd("PING").query(&mut conn)?;
/// assert_eq!(pong, "PONG");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared<RedisManager>>,
    // Held for its Drop: the last handle stops and joins the thread.
    _maintenance: Arc<Maintenance>,
    /// The shared connections of automatic pipelining, when it is on.
    mux: Option<Arc<Mux>>,
}

impl Pool {
    /// A pool for the configuration's primary endpoint, on the system clock.
    ///
    /// No connection is made here (unless `min_idle` asks the maintenance
    /// thread to warm some up in the background).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) when the configuration
    /// is memory-only (has no Redis URL).
    pub fn new(config: &Config) -> Result<Pool, Error> {
        Pool::with_clock(config, SystemClock::shared())
    }

    /// Like [`Pool::new`], with the clock that every timer of the pool
    /// reads (expiry, health checks, checkout deadline, maintenance).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) when the configuration
    /// is memory-only (has no Redis URL).
    pub fn with_clock(config: &Config, clock: SharedClock) -> Result<Pool, Error> {
        match &config.primary {
            Some(endpoint) => Ok(Pool::for_endpoint(endpoint.clone(), config, clock)),
            None => Err(Error::config(
                "Pool::new: the configuration has no Redis URL (it is memory-only)",
            )),
        }
    }

    /// A pool for `endpoint` (primary or secondary) with `config`'s limits.
    pub(crate) fn for_endpoint(endpoint: Endpoint, config: &Config, clock: SharedClock) -> Pool {
        let manager = RedisManager::new(&endpoint, config, clock.clone());
        let settings = Settings::new(config, &endpoint.redacted);
        let shared = Arc::new(Shared::new(manager, settings, clock));
        let maintenance = Arc::new(Maintenance::start(&shared));
        let db = endpoint.info.redis_settings().db();
        let mux = config
            .auto_pipeline
            .then(|| Mux::new(shared.clone(), db, config.auto_pipeline_share_from));
        Pool {
            shared,
            _maintenance: maintenance,
            mux,
        }
    }

    /// A connection, waiting at most the configured `checkout_timeout`.
    ///
    /// # Errors
    ///
    /// - [`ErrorKind::PoolTimeout`](crate::ErrorKind::PoolTimeout) when the
    ///   pool stayed full until the deadline (does not count against the
    ///   breaker: the pool is busy, Redis may be fine);
    /// - a connection, timeout, TLS or auth error when a new connection was
    ///   needed and could not be made.
    ///
    /// Nothing has been sent when this fails: every error has
    /// [`Error::may_have_executed`] `false`.
    pub fn get(&self) -> Result<PooledConnection, Error> {
        self.get_timeout(self.shared.settings.checkout_timeout)
    }

    /// A connection if one can be had without waiting for another caller:
    /// an idle one (health-checked if needed) or a new one when there is
    /// room (bounded by the connect timeout).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::PoolTimeout`](crate::ErrorKind::PoolTimeout) at once when
    /// the pool is full; otherwise as [`Pool::get`].
    pub fn try_get(&self) -> Result<PooledConnection, Error> {
        let deadline = self.shared.clock.now() + self.shared.settings.connect_timeout;
        self.checkout(deadline, false)
    }

    /// A connection, waiting at most `timeout` (any `Duration`: one too
    /// long for an `Instant` waits until the last one).
    ///
    /// # Errors
    ///
    /// As [`Pool::get`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<PooledConnection, Error> {
        self.get_deadline(deadline_after(self.shared.clock.now(), timeout))
    }

    /// A connection for one attempt of a call that must end by `deadline`
    /// (if any): the checkout waits until the earlier of `deadline` and the
    /// checkout timeout, and the connection's read and write timeouts are
    /// lowered to the time then left (see
    /// [`PooledConnection::cap_io_timeout`]).
    ///
    /// With automatic pipelining on, a lease of the shared connections
    /// instead (see `mux`): nothing is checked out until a request is sent.
    pub(crate) fn get_for_call(
        &self,
        deadline: Option<Instant>,
    ) -> Result<PooledConnection, Error> {
        if let Some(mux) = &self.mux {
            if deadline.is_some_and(|d| self.shared.clock.now() >= d) {
                return Err(no_time_left(&self.shared.settings.endpoint));
            }
            return Ok(PooledConnection {
                shared: self.shared.clone(),
                entry: None,
                broken: false,
                reused: false,
                io_timeout: self.shared.manager.socket_timeout,
                lease: Some(Box::new(Lease::new(mux.clone(), deadline))),
            });
        }
        lend_for_call(&self.shared, deadline)
    }

    /// A connection, waiting until `deadline` at most (an instant of the
    /// pool's clock). Connecting and health checks also end by then.
    ///
    /// # Errors
    ///
    /// As [`Pool::get`].
    pub fn get_deadline(&self, deadline: Instant) -> Result<PooledConnection, Error> {
        self.checkout(deadline, true)
    }

    fn checkout(&self, deadline: Instant, wait: bool) -> Result<PooledConnection, Error> {
        checkout(&self.shared, deadline, wait)
    }

    /// A snapshot of how many connections are idle, in use and connecting.
    pub fn state(&self) -> PoolState {
        self.shared.state()
    }

    /// Counters since the pool was made.
    pub fn stats(&self) -> PoolStats {
        let mut stats = self.shared.stats();
        if let Some(mux) = &self.mux {
            (stats.shared_requests, stats.shared_waits) = mux.counts();
        }
        stats
    }

    /// Sets the listener told about connections created and closed
    /// (replacing any previous one). It is called outside the pool's lock.
    pub fn set_listener(&self, listener: Arc<dyn PoolListener>) {
        self.shared.set_listener(listener);
    }

    /// The endpoint's URL, with the password shown as `***`.
    pub fn endpoint(&self) -> &str {
        &self.shared.settings.endpoint
    }

    /// Where this pool's connections go (standalone or sentinel).
    pub(crate) fn topology(&self) -> &crate::topology::Topology {
        &self.shared.manager.topology
    }
}

fn checkout(
    shared: &Arc<Shared<RedisManager>>,
    deadline: Instant,
    wait: bool,
) -> Result<PooledConnection, Error> {
    let (entry, reused) = shared.checkout(deadline, wait)?;
    Ok(own_connection(shared, entry, reused))
}

fn own_connection(
    shared: &Arc<Shared<RedisManager>>,
    entry: Entry<Connection>,
    reused: bool,
) -> PooledConnection {
    PooledConnection {
        shared: shared.clone(),
        entry: Some(entry),
        broken: false,
        reused,
        io_timeout: shared.manager.socket_timeout,
        lease: None,
    }
}

/// A connection of the pool's for a shared lane: waits until the earlier
/// of `deadline` and the checkout timeout; socket timeouts as configured
/// (the lane lowers the read timeout per reply).
fn lend(
    shared: &Arc<Shared<RedisManager>>,
    deadline: Option<Instant>,
) -> Result<PooledConnection, Error> {
    let own = deadline_after(shared.clock.now(), shared.settings.checkout_timeout);
    checkout(shared, deadline.map_or(own, |d| d.min(own)), true)
}

/// [`Pool::get_for_call`] without automatic pipelining: a connection of
/// its own, socket timeouts capped by the time left until `deadline`.
fn lend_for_call(
    shared: &Arc<Shared<RedisManager>>,
    deadline: Option<Instant>,
) -> Result<PooledConnection, Error> {
    // The call's first checkout reuses the clock read that started the
    // call (see `stats::call_timer`).
    let now = crate::stats::call_timer::checkout_now(&*shared.clock);
    let own = deadline_after(now, shared.settings.checkout_timeout);
    let (entry, reused) = shared.checkout_at(now, deadline.map_or(own, |d| d.min(own)), true)?;
    let mut conn = own_connection(shared, entry, reused);
    if let Some(deadline) = deadline {
        conn.cap_io_timeout(deadline.saturating_duration_since(shared.clock.now()))?;
    }
    Ok(conn)
}

/// The error of a call whose deadline passed before anything was sent.
fn no_time_left(endpoint: &str) -> Error {
    Error::new(
        ErrorKind::Timeout,
        ErrorClass::Transient,
        format!("no time left for the command to {endpoint}: the call deadline has passed"),
    )
    // The caller's time ran out; nothing says the server is unwell.
    .with_counts_against_breaker(false)
    .with_may_have_executed(false)
}

/// `now + timeout`, or the latest instant this platform can represent on
/// the way there (`Instant + Duration::MAX` would panic).
fn deadline_after(now: Instant, timeout: Duration) -> Instant {
    let mut step = timeout;
    loop {
        if let Some(at) = now.checked_add(step) {
            return at;
        }
        step /= 2;
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("endpoint", &self.shared.settings.endpoint)
            .field("state", &self.state())
            .finish()
    }
}

/// A connection lent by a [`Pool`]; returned to it on drop.
///
/// Run commands through it directly (`cmd.query(&mut conn)`, or the
/// [`redis::Commands`] methods): it watches every result and, after an I/O
/// error, a timeout or a malformed reply, closes the connection on drop
/// instead of returning it. Error replies such as `WRONGTYPE` leave it
/// usable.
///
/// A pipeline (and a `MULTI`/`EXEC` transaction) is sent at once and its
/// replies are read one at a time, all within one socket timeout from the
/// moment it is sent: at the first I/O error, timeout or malformed reply
/// the connection is abandoned (closed on drop) and the error returned, so
/// a silent server costs one socket timeout, not one per command. Such an
/// error says [`Error::may_have_executed`]: the commands were written.
///
/// It dereferences to [`redis::Connection`] for reading. It deliberately
/// does not implement `DerefMut` (redis-rs would then run commands on the
/// bare connection, unwatched); [`PooledConnection::raw_mut`] gives mutable
/// access for the rare call that needs it, together with
/// [`PooledConnection::mark_broken`].
pub struct PooledConnection {
    shared: Arc<Shared<RedisManager>>,
    /// `Some` until drop.
    entry: Option<Entry<Connection>>,
    broken: bool,
    reused: bool,
    /// The read and write timeout now set on the socket: the configured
    /// socket timeout unless [`PooledConnection::cap_io_timeout`] lowered it.
    io_timeout: Duration,
    /// Automatic pipelining: a lease of the shared connections instead of
    /// a connection of its own (`entry` is `None`). Only the client's own
    /// closures get one, and they use it through `ConnectionLike` only.
    lease: Option<Box<Lease>>,
}

/// How far a pipeline's reply reads may overrun its I/O budget: the read
/// timeout is lowered to the time left only when it would otherwise
/// overrun by more than this, so a pipeline whose replies come at once
/// costs no extra syscall.
pub(crate) const IO_GRANULARITY: Duration = Duration::from_millis(1);

/// An I/O timeout raised by the pool itself (a pipeline past its budget).
fn timed_out(what: &str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        what.to_string(),
    ))
}

impl PooledConnection {
    /// Closes this connection on drop instead of returning it to the pool.
    /// Call it after an error seen through [`PooledConnection::raw_mut`].
    pub fn mark_broken(&mut self) {
        self.broken = true;
        if let Some(lease) = &mut self.lease {
            lease.mark_broken();
        }
    }

    /// `true` once an error has marked this connection for closing.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// The generation of the endpoint's topology it was dialled in (see
    /// `topology`).
    pub(crate) fn generation(&self) -> u64 {
        match &self.lease {
            Some(lease) => lease.generation(),
            None => self.entry.as_ref().map_or(0, |e| e.generation),
        }
    }

    /// `false` once the endpoint's server changed since this connection
    /// was made (a sentinel master switch): nothing more may be sent on it.
    pub(crate) fn is_current(&self) -> bool {
        // A lease checks each shared connection before it writes on it.
        self.lease.is_some()
            || self
                .entry
                .as_ref()
                .is_some_and(|entry| !self.shared.is_retired(entry))
    }

    /// `false` when this connection was made for this checkout, `true` when
    /// it was reused from the idle stack.
    pub fn is_reused(&self) -> bool {
        self.reused
    }

    /// Lowers this connection's read and write timeouts to `max` until it
    /// goes back to the pool (which then restores the configured socket
    /// timeout). Does nothing when `max` is not below the timeout in force,
    /// so it costs no syscall then. The client calls it with the time left
    /// until the call's deadline (`call_timeout`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) when `max` is zero
    /// (no time is left: nothing is sent), or the socket error when the
    /// timeout cannot be set (the connection is then closed on drop).
    /// Nothing was sent: [`Error::may_have_executed`] is `false`.
    pub fn cap_io_timeout(&mut self, max: Duration) -> Result<(), Error> {
        if max >= self.io_timeout {
            return Ok(());
        }
        if max.is_zero() {
            return Err(no_time_left(&self.shared.settings.endpoint));
        }
        if self.lease.is_some() {
            // The lease bounds each request by its call deadline.
            return Ok(());
        }
        let conn = &self.conn_mut().conn;
        let set = conn
            .set_read_timeout(Some(max))
            .and_then(|()| conn.set_write_timeout(Some(max)));
        // Whatever happened, the socket's timeouts are no longer known to be
        // the configured ones.
        self.io_timeout = max;
        if let Err(err) = set {
            self.broken = true;
            return Err(Error::from_redis(err).with_may_have_executed(false));
        }
        Ok(())
    }

    /// The bare connection, mutably (for `as_pubsub`, `send_packed_command`
    /// and the like). Errors seen through it are not watched: call
    /// [`PooledConnection::mark_broken`] after an I/O error or a timeout.
    /// Subscriptions are connection state the pool cannot see: call
    /// [`PooledConnection::mark_broken`] after using `as_pubsub`, too.
    pub fn raw_mut(&mut self) -> &mut Connection {
        &mut self.conn_mut().conn
    }

    fn conn_mut(&mut self) -> &mut Entry<Connection> {
        match &mut self.entry {
            Some(entry) => entry,
            // `entry` is taken only in `drop`, and is `None` from the start
            // only in a lease, which `Pool::get_for_call` alone makes and
            // only the client's closures get (they use `ConnectionLike`,
            // which a lease serves). No public path reaches this.
            None => unreachable!("PooledConnection used after drop, or a lease dereferenced"),
        }
    }

    /// Sends a packed pipeline at once and reads its replies one at a time
    /// within one I/O timeout from now, stopping at the first failure (the
    /// caller marks the connection broken then). Mirrors redis-rs'
    /// `req_packed_commands`: the first `offset` replies (`MULTI` and the
    /// `QUEUED`s of a transaction) are checked for error replies and
    /// dropped, push messages are skipped, `count` replies are returned
    /// with the first error reply among the dropped ones, if any.
    fn pipelined(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<(Vec<Value>, Option<redis::ServerError>)> {
        let budget = self.io_timeout;
        let start = Instant::now();
        let conn = &mut self.conn_mut().conn;
        conn.send_packed_command(cmd)?;
        let mut read_timeout = budget;
        let mut values = Vec::with_capacity(count);
        let mut queued_error = None;
        let mut idx = 0;
        while idx < offset.saturating_add(count) {
            let left = budget.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(timed_out(
                    "pipeline replies did not arrive within the socket timeout",
                ));
            }
            // Only when the timeout in force could overrun the budget by
            // more than the granularity: no syscall while replies flow.
            if left.saturating_add(IO_GRANULARITY) < read_timeout {
                conn.set_read_timeout(Some(left))?;
                read_timeout = left;
            }
            match conn.recv_response()? {
                // RESP3 pushes are not replies.
                Value::Push { .. } => continue,
                Value::ServerError(err) if idx < offset => {
                    queued_error.get_or_insert(err);
                }
                _ if idx < offset => {}
                value => values.push(value),
            }
            idx += 1;
        }
        if read_timeout != budget {
            conn.set_read_timeout(Some(budget))?;
        }
        Ok((values, queued_error))
    }

    /// The error an attempt reports for its closure's `e`, and whether the
    /// breaker counts it: `e` itself, except through a lease whose last
    /// request was never sent (the pool's own error then) or failed with a
    /// shared connection another caller's failure already counts.
    pub(crate) fn settle(&mut self, e: Error) -> (Error, bool) {
        match &mut self.lease {
            Some(lease) => lease.settle(e),
            None => {
                let counts = e.counts_against_breaker();
                (e, counts)
            }
        }
    }

    /// A `READONLY` reply: the server is a replica now, so the master
    /// moved. This connection is never lent again, and the topology asks
    /// where the master is.
    fn readonly(&mut self) {
        self.broken = true;
        self.shared.manager.topology.note_trouble();
    }

    fn watch<T>(&mut self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(err) = &result {
            if breaks_connection(err) {
                self.broken = true;
                if err.is_connection_dropped() || err.is_connection_refusal() {
                    // The server went away: it may have been a master
                    // that died (a sentinel topology asks again).
                    self.shared.manager.topology.note_trouble();
                }
            } else if is_readonly(err) {
                self.readonly();
            }
        }
        result
    }

    /// `Err` without sending when this connection was dialled before the
    /// endpoint's server changed (a sentinel master switch): nothing more
    /// goes to the old master once the switch is known.
    fn check_current(&mut self) -> RedisResult<()> {
        let retired = match &self.entry {
            Some(entry) => self.shared.is_retired(entry),
            None => false,
        };
        if retired {
            self.broken = true;
            return Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "not sent: the master moved, this connection goes to the old one",
            )));
        }
        Ok(())
    }
}

/// A reply of the other shape than the request asked for (not expected).
fn mux_mismatch() -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "a shared connection answered a request with the wrong kind of reply",
    ))
}

impl Deref for PooledConnection {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match &self.entry {
            Some(entry) => &entry.conn,
            // As in `conn_mut`.
            None => unreachable!("PooledConnection used after drop, or a lease dereferenced"),
        }
    }
}

impl ConnectionLike for PooledConnection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        if let Some(lease) = &mut self.lease {
            return match lease.request(cmd, Expect::One)? {
                Reply::One(value) => Ok(value),
                Reply::Pipeline(..) => Err(mux_mismatch()),
            };
        }
        self.check_current()?;
        let result = self.raw_mut().req_packed_command(cmd);
        // Error replies come back as values (`query` makes them errors).
        if matches!(&result, Ok(v) if is_readonly_reply(v)) {
            self.readonly();
        }
        self.watch(result)
    }

    /// Not redis-rs' `req_packed_commands`, which keeps reading every reply
    /// after a timeout (N commands to a silent server would cost N socket
    /// timeouts): see [`PooledConnection`].
    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        if let Some(lease) = &mut self.lease {
            return match lease.request(cmd, Expect::Pipeline { offset, count })? {
                Reply::Pipeline(_, Some(queued)) => Err(RedisError::from(queued)),
                Reply::Pipeline(values, None) => Ok(values),
                Reply::One(_) => Err(mux_mismatch()),
            };
        }
        self.check_current()?;
        match self.pipelined(cmd, offset, count) {
            Ok((values, queued))
                if values.iter().any(is_readonly_reply)
                    || queued.as_ref().is_some_and(|e| e.code() == "READONLY") =>
            {
                self.readonly();
                match queued {
                    Some(queued) => Err(RedisError::from(queued)),
                    None => Ok(values),
                }
            }
            Ok((values, None)) => Ok(values),
            // A command refused while queueing aborted the transaction: its
            // error says which (EXEC's own reply only says EXECABORT). Every
            // reply was read: the connection stays usable.
            Ok((_, Some(queued))) => Err(RedisError::from(queued)),
            Err(err) => {
                // Replies may be left unread: whatever the error, the next
                // borrower must not get them.
                self.broken = true;
                Err(err)
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.lease {
            Some(lease) => lease.db(),
            None => self.deref().get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        if self.lease.is_some() {
            let ping = redis::cmd("PING").get_packed_command();
            return self.req_packed_command(&ping).is_ok();
        }
        let ok = self.raw_mut().check_connection();
        if !ok {
            self.broken = true;
        }
        ok
    }

    fn is_open(&self) -> bool {
        !self.broken && (self.lease.is_some() || self.deref().is_open())
    }
}

impl Drop for PooledConnection {
    fn drop(&mut self) {
        let configured = self.shared.manager.socket_timeout;
        if !self.broken && self.io_timeout != configured {
            // Give the next borrower the configured timeouts back.
            if let Some(entry) = &self.entry {
                let restored = entry
                    .conn
                    .set_read_timeout(Some(configured))
                    .and_then(|()| entry.conn.set_write_timeout(Some(configured)));
                if restored.is_err() {
                    self.broken = true;
                }
            }
        }
        if let Some(entry) = self.entry.take() {
            self.shared.checkin(entry, self.broken);
        }
    }
}

impl fmt::Debug for PooledConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledConnection")
            .field("endpoint", &self.shared.settings.endpoint)
            .field("id", &self.entry.as_ref().map(|e| e.id))
            .field("reused", &self.reused)
            .field("broken", &self.broken)
            .finish()
    }
}

/// A snapshot of a pool's connections. `#[non_exhaustive]`: more fields
/// may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolState {
    /// Open or opening: `idle + in_use + connecting`, never above `max`.
    pub total: u32,
    /// Open and waiting to be lent.
    pub idle: u32,
    /// Lent out.
    pub in_use: u32,
    /// Being connected right now.
    pub connecting: u32,
    /// Callers waiting for a connection.
    pub waiters: u32,
    /// The bound (`max_connections`).
    pub max: u32,
}

/// Counters since the pool was made. `#[non_exhaustive]`: more fields may
/// be added.
///
/// While the pool lives, `created - closed() == state().total -
/// state().connecting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PoolStats {
    /// Connections made.
    pub created: u64,
    /// Connects that failed.
    pub connect_failures: u64,
    /// Closed after an I/O error, a timeout or a malformed reply.
    pub closed_broken: u64,
    /// Closed after idling longer than `idle_timeout`.
    pub closed_idle_expired: u64,
    /// Closed after living longer than `max_lifetime`.
    pub closed_lifetime_expired: u64,
    /// Closed because the `PING` before reuse failed.
    pub closed_health_check_failed: u64,
    /// Closed because the endpoint's server changed (a sentinel master
    /// switch) since it was made.
    pub closed_retired: u64,
    /// Successful checkouts.
    pub checkouts: u64,
    /// Checkouts that had to wait for another caller.
    pub waits: u64,
    /// Checkouts that waited until the deadline and failed with `PoolTimeout`.
    pub wait_timeouts: u64,
    /// `PING`s sent before reusing a connection that had idled.
    pub health_checks: u64,
    /// Of those, the ones the server answered with an error reply (it is
    /// reachable but refuses: over quota, loading, ...).
    pub health_checks_refused: u64,
    /// Requests written on a shared connection (automatic pipelining; see
    /// [`ConfigBuilder::auto_pipeline`](crate::ConfigBuilder::auto_pipeline)).
    pub shared_requests: u64,
    /// Of those, the ones whose caller found every shared connection busy
    /// and waited for another caller to write or read for it.
    pub shared_waits: u64,
}

impl PoolStats {
    /// Connections closed, for any reason.
    pub fn closed(&self) -> u64 {
        self.closed_broken
            + self.closed_idle_expired
            + self.closed_lifetime_expired
            + self.closed_health_check_failed
            + self.closed_retired
    }
}

/// Why a pooled connection was closed. `#[non_exhaustive]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// It saw an I/O error, a timeout or a malformed reply, or it was closed.
    Broken,
    /// It idled longer than `idle_timeout`.
    IdleExpired,
    /// It lived longer than `max_lifetime`.
    LifetimeExpired,
    /// The `PING` before reuse failed.
    HealthCheckFailed,
    /// The pool was dropped while it was idle.
    PoolDropped,
    /// It goes to a server that is no longer the endpoint's: the sentinels
    /// named a new master.
    Retired,
}

impl CloseReason {
    /// A short lowercase name, as used in log lines and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Broken => "broken",
            CloseReason::IdleExpired => "idle_expired",
            CloseReason::LifetimeExpired => "lifetime_expired",
            CloseReason::HealthCheckFailed => "health_check_failed",
            CloseReason::PoolDropped => "pool_dropped",
            CloseReason::Retired => "retired",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Told when a pool creates or closes a connection. Every method has a
/// no-op default: implement the ones you need. Called outside the pool's
/// lock, on the thread that did the work; keep it quick.
///
/// `endpoint` is the redacted URL; `id` numbers connections per pool.
pub trait PoolListener: Send + Sync {
    /// A connection was made.
    fn connection_created(&self, endpoint: &str, id: u64) {
        let _ = (endpoint, id);
    }

    /// A connection was closed.
    fn connection_closed(&self, endpoint: &str, id: u64, reason: CloseReason) {
        let _ = (endpoint, id, reason);
    }

    /// A connect attempt failed with `error`.
    fn connect_failed(&self, endpoint: &str, error: &Error) {
        let _ = (endpoint, error);
    }
}

//! The sentinel topology: discover the master from a set of Sentinels and
//! follow it through failovers.
//!
//! Discovery (go-redis `FailoverClient` is the model) asks the sentinels in
//! turn, each within the connect timeout and with socket timeouts:
//! `SENTINEL MASTER <service>` gives the address and the sentinel's flags
//! (one that says `s_down` or `o_down` is skipped, as is one that is down),
//! `ROLE` on that address verifies it is a master, and `SENTINEL SENTINELS
//! <service>` adds the other sentinels to the list. The sentinel that
//! answered moves to the front. When none answers, the dial fails with a
//! transient connection error: the breaker counts it and the fallback
//! serves. A sentinel (or named master) whose certificate does not verify
//! is skipped like one that is down; but when every one failed that way,
//! the dial fails with the permanent TLS error a `rediss://` URL gives (the
//! breaker ignores it and the fallback does not hide it): waiting will not
//! make a certificate verify.
//!
//! The master is re-resolved at once after a failed connect or a
//! `READONLY` reply ([`SentinelTopology::note_trouble`]: the next dial, or
//! the watcher thread within a quarter second, whichever comes first), and
//! switched without asking when a sentinel publishes `+switch-master`
//! (see `watch`). Each switch bumps the generation, which retires the
//! pool's connections to the old master.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redis::{ConnectionAddr, ConnectionInfo, RedisConnectionInfo, Value};

use super::recent::{Key, RecentWrites, WINDOW};
use super::{MasterSwitch, TopologyListener};
use crate::clock::SharedClock;
use crate::config::sentinel::{host_port, SentinelSpec, MAX_SENTINELS};
use crate::error::{Error, ErrorClass, ErrorKind};

/// A master address: host (as the sentinels announce it) and port.
pub(crate) type Addr = (String, u16);

/// What is known now, under one mutex.
#[derive(Debug, Default)]
struct State {
    master: Option<Addr>,
    /// The sentinel that named it.
    via: Option<String>,
    /// The first sign of trouble with the current master since it last
    /// connected fine.
    trouble_since: Option<Instant>,
    /// Why the last discovery failed (never holds a secret).
    last_error: Option<String>,
}

/// One endpoint's sentinels and the master they name.
pub(crate) struct SentinelTopology {
    service: String,
    /// The data nodes' settings (password, db, TLS, TCP options); the
    /// address is replaced by the master's.
    template: ConnectionInfo,
    /// The sentinels' own auth.
    sentinel_auth: RedisConnectionInfo,
    /// Known sentinels, the last one that answered first.
    sentinels: Mutex<Vec<Addr>>,
    state: Mutex<State>,
    generation: AtomicU64,
    /// Set by trouble: the next dial (or the watcher) asks again.
    doubt: AtomicBool,
    /// One discovery at a time.
    resolving: Mutex<()>,
    /// Discoveries finished (so a thread that waited for another's can
    /// tell it happened).
    resolutions: AtomicU64,
    switches: AtomicU64,
    pub(crate) connect_timeout: Duration,
    pub(crate) socket_timeout: Duration,
    redacted: String,
    clock: SharedClock,
    listener: RwLock<Option<Arc<dyn TopologyListener>>>,
    /// Keys the master acknowledged lately (see `recent`).
    recent: RecentWrites,
}

impl SentinelTopology {
    /// A topology for `spec`; `template` is the data nodes' connection
    /// info (with TLS and TCP settings applied). No I/O.
    pub(crate) fn new(
        spec: &SentinelSpec,
        template: ConnectionInfo,
        connect_timeout: Duration,
        socket_timeout: Duration,
        redacted: &str,
        clock: SharedClock,
        max_keys: usize,
    ) -> SentinelTopology {
        let mut auth = RedisConnectionInfo::default().set_skip_set_lib_name();
        if let Some(pw) = &spec.password {
            auth = auth.set_password(pw);
        }
        SentinelTopology {
            service: spec.service.clone(),
            template,
            sentinel_auth: auth,
            sentinels: Mutex::new(spec.sentinels.clone()),
            state: Mutex::new(State::default()),
            generation: AtomicU64::new(0),
            doubt: AtomicBool::new(false),
            resolving: Mutex::new(()),
            resolutions: AtomicU64::new(0),
            switches: AtomicU64::new(0),
            connect_timeout,
            socket_timeout,
            redacted: redacted.to_string(),
            clock,
            listener: RwLock::new(None),
            recent: RecentWrites::new(max_keys),
        }
    }

    /// Notes `keys` written through a connection of `generation`, once
    /// acknowledged (before the caller sees it). Written to an old master
    /// after the switch, they are distrusted at once.
    pub(crate) fn acknowledged(&self, generation: u64, keys: &[&[u8]]) {
        let mut notes = self.recent.lock();
        if generation != self.generation() {
            // After the switch: no ordering with it to keep, so the notes
            // are not held while the pending list may be busy.
            drop(notes);
            self.recent.late(keys);
            return;
        }
        let now = self.clock.now();
        let trouble = self.state.lock().trouble_since.unwrap_or(now).min(now);
        notes.note(keys, now, before(trouble, WINDOW));
    }

    /// `true` when keys wait to be marked stale on the new master.
    pub(crate) fn has_distrusted(&self) -> bool {
        self.recent.has_pending()
    }

    /// Hands the keys the new master may hold older values of to `mark`
    /// (no attempt on the new master is sent before it returns).
    pub(crate) fn drain_distrusted(&self, mark: impl FnOnce(&[Key])) {
        self.recent.drain(mark);
    }

    /// Sets who is told of master switches.
    pub(crate) fn set_listener(&self, listener: Arc<dyn TopologyListener>) {
        *self.listener.write() = Some(listener);
    }

    /// Now, by the client's clock.
    pub(crate) fn now(&self) -> Instant {
        self.clock.now()
    }

    /// The service (master) name.
    pub(crate) fn service(&self) -> &str {
        &self.service
    }

    /// Bumped by every master switch.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Master switches seen since the client was made.
    pub(crate) fn switches(&self) -> u64 {
        self.switches.load(Ordering::Relaxed)
    }

    /// `host:port` of the current master, if known.
    pub(crate) fn master(&self) -> Option<String> {
        self.state
            .lock()
            .master
            .as_ref()
            .map(|(h, p)| host_port(h, *p))
    }

    /// `host:port` of the sentinel that named the current master.
    pub(crate) fn sentinel_in_use(&self) -> Option<String> {
        self.state.lock().via.clone()
    }

    /// The known sentinels, the preferred one first.
    pub(crate) fn sentinel_list(&self) -> Vec<Addr> {
        self.sentinels.lock().clone()
    }

    /// `true` after trouble, until the next discovery (one atomic load).
    pub(crate) fn doubtful(&self) -> bool {
        self.doubt.load(Ordering::Acquire)
    }

    /// `true` while the master is unknown or in doubt.
    pub(crate) fn in_doubt(&self) -> bool {
        self.doubt.load(Ordering::Acquire) || self.state.lock().master.is_none()
    }

    /// A connect failed or a connection answered `READONLY`.
    pub(crate) fn note_trouble(&self) {
        let now = self.clock.now();
        let mut st = self.state.lock();
        st.trouble_since.get_or_insert(now);
        self.doubt.store(true, Ordering::Release);
    }

    /// A connect to the current master succeeded.
    pub(crate) fn note_connected(&self) {
        if !self.doubt.load(Ordering::Acquire) {
            self.state.lock().trouble_since = None;
        }
    }

    /// The connection info of the master, resolving it first when unknown
    /// or in doubt. With a known master in doubt and another thread already
    /// resolving, the known address is used rather than waiting.
    pub(crate) fn master_info(&self, deadline: Instant) -> Result<ConnectionInfo, Error> {
        let known = self.state.lock().master.clone();
        if known.is_none() || self.doubt.load(Ordering::Acquire) {
            match self.refresh(deadline, known.is_some()) {
                Ok(addr) => return Ok(self.info_for(&addr)),
                Err(e) => {
                    if known.is_none() {
                        return Err(e);
                    }
                }
            }
        }
        match self.state.lock().master.clone() {
            Some(addr) => Ok(self.info_for(&addr)),
            None => Err(self.unavailable("no master is known yet".to_string())),
        }
    }

    /// Discovers the master now (one discovery at a time; a caller that
    /// waited for another's takes its answer). `skip_if_busy`: return at
    /// once when another thread is resolving.
    pub(crate) fn refresh(&self, deadline: Instant, skip_if_busy: bool) -> Result<Addr, Error> {
        let seen = self.resolutions.load(Ordering::Acquire);
        let guard = if skip_if_busy {
            self.resolving.try_lock()
        } else {
            let wait = deadline.saturating_duration_since(self.clock.now());
            self.resolving.try_lock_for(wait)
        };
        let Some(_guard) = guard else {
            return Err(self.unavailable("another discovery is under way".to_string()));
        };
        if self.resolutions.load(Ordering::Acquire) != seen {
            // Another thread resolved while we waited for the lock.
            if let Some(addr) = self.state.lock().master.clone() {
                if !self.doubt.load(Ordering::Acquire) {
                    return Ok(addr);
                }
            }
        }
        let result = self.discover(deadline);
        self.resolutions.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok((addr, via)) => {
                self.apply(addr.clone(), via);
                Ok(addr)
            }
            Err(e) => {
                self.state.lock().last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// A sentinel announced `+switch-master` to `addr`.
    pub(crate) fn switch_announced(&self, addr: Addr, via: String) {
        self.apply(addr, via);
    }

    /// Records `addr` as the master; a change bumps the generation and is
    /// reported to the listener (outside the lock).
    fn apply(&self, addr: Addr, via: String) {
        let now = self.clock.now();
        // The notes are locked across the snapshot and the generation bump
        // (see `recent`), before the state: the same order as `acknowledged`.
        let mut notes = self.recent.lock();
        let switch = {
            let mut st = self.state.lock();
            self.doubt.store(false, Ordering::Release);
            st.last_error = None;
            st.via = Some(via.clone());
            if st.master.as_ref() == Some(&addr) {
                // Verified (or announced) where it was: the trouble was not
                // a failover.
                st.trouble_since = None;
                None
            } else {
                let old = st.master.replace(addr.clone());
                let trouble = st.trouble_since.take();
                let (mut distrusted, mut untracked) = (0, false);
                // The first discovery retires nothing: no connection went
                // anywhere else before.
                if old.is_some() {
                    let since = before(trouble.unwrap_or(now).min(now), WINDOW);
                    (distrusted, untracked) = notes.switch(since);
                    self.generation.fetch_add(1, Ordering::AcqRel);
                }
                let took = trouble.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                match old {
                    Some((h, p)) => Some(MasterSwitch {
                        from: host_port(&h, p),
                        to: host_port(&addr.0, addr.1),
                        sentinel: via,
                        took,
                        distrusted,
                        untracked,
                    }),
                    None => {
                        log::debug!(
                            "{}: the sentinels name {} as the master of '{}'",
                            self.redacted,
                            host_port(&addr.0, addr.1),
                            self.service
                        );
                        None
                    }
                }
            }
        };
        drop(notes);
        if let Some(switch) = switch {
            self.switches.fetch_add(1, Ordering::Relaxed);
            let listener = self.listener.read().clone();
            if let Some(l) = listener {
                l.master_switched(&switch);
            }
        }
    }

    /// The data nodes' connection info with `addr` as the address.
    fn info_for(&self, addr: &Addr) -> ConnectionInfo {
        super::at_address(&self.template, addr.0.clone(), addr.1)
    }

    /// The connection info of a sentinel.
    pub(crate) fn sentinel_info(&self, addr: &Addr) -> ConnectionInfo {
        self.info_for(addr)
            .set_redis_settings(self.sentinel_auth.clone())
    }

    /// The error of a dial that found no master because no certificate
    /// verified.
    fn untrusted(&self, why: String) -> Error {
        Error::new(
            ErrorKind::Tls,
            ErrorClass::Permanent,
            format!(
                "no master for '{}' from the sentinels of {}: {why}",
                self.service, self.redacted
            ),
        )
        .with_may_have_executed(false)
    }

    /// The error of a dial that found no master.
    fn unavailable(&self, why: String) -> Error {
        Error::new(
            ErrorKind::Connection,
            ErrorClass::Transient,
            format!(
                "no master for '{}' from the sentinels of {}: {why}",
                self.service, self.redacted
            ),
        )
        .with_may_have_executed(false)
    }

    /// Asks the sentinels in turn; returns the verified master and the
    /// sentinel that named it.
    fn discover(&self, deadline: Instant) -> Result<(Addr, String), Error> {
        let sentinels = self.sentinel_list();
        let mut reasons: Vec<String> = Vec::new();
        // Every attempt failed on a certificate that will not verify.
        let mut untrusted = true;
        for (i, sentinel) in sentinels.iter().enumerate() {
            let left = deadline.saturating_duration_since(self.clock.now());
            if left.is_zero() {
                reasons.push("out of time".to_string());
                untrusted = false;
                break;
            }
            // One sentinel may not take all the time: leave some for the
            // next ones.
            let own =
                crate::clock::saturating_add(self.clock.now(), left.min(self.connect_timeout));
            let name = host_port(&sentinel.0, sentinel.1);
            match self.ask(sentinel, own) {
                Ok((addr, others)) => match self.verify(&addr, deadline) {
                    Ok(()) => {
                        self.promote(i, others);
                        return Ok((addr, name));
                    }
                    Err(miss) => {
                        untrusted &= miss.untrusted;
                        reasons.push(format!(
                            "{name} named {} which {}",
                            host_port(&addr.0, addr.1),
                            miss.why
                        ))
                    }
                },
                Err(miss) => {
                    untrusted &= miss.untrusted;
                    reasons.push(format!("{name}: {}", miss.why))
                }
            }
        }
        if untrusted && !reasons.is_empty() {
            return Err(self.untrusted(reasons.join("; ")));
        }
        Err(self.unavailable(reasons.join("; ")))
    }

    /// Moves sentinel `i` to the front and adds `others` (from `SENTINEL
    /// SENTINELS`), up to [`MAX_SENTINELS`].
    fn promote(&self, i: usize, others: Vec<Addr>) {
        let mut list = self.sentinels.lock();
        if i < list.len() && i > 0 {
            let s = list.remove(i);
            list.insert(0, s);
        }
        for o in others {
            if list.len() >= MAX_SENTINELS {
                break;
            }
            if !list.contains(&o) {
                list.push(o);
            }
        }
    }

    /// Opens a connection to a sentinel with socket timeouts (the
    /// watcher's subscription).
    pub(crate) fn connect_sentinel(
        &self,
        sentinel: &Addr,
        timeout: Duration,
    ) -> Result<redis::Connection, String> {
        let deadline = crate::clock::saturating_add(self.clock.now(), timeout);
        let conn =
            open(self.sentinel_info(sentinel), deadline, &self.clock).map_err(|e| e.to_string())?;
        // redis-rs clears them after its handshake: SUBSCRIBE must not
        // wait forever on a sentinel that hangs.
        conn.set_read_timeout(Some(self.socket_timeout))
            .and_then(|()| conn.set_write_timeout(Some(self.socket_timeout)))
            .map_err(describe)?;
        Ok(conn)
    }

    /// `SENTINEL MASTER` and `SENTINEL SENTINELS` on one sentinel, all by
    /// `deadline`.
    fn ask(&self, sentinel: &Addr, deadline: Instant) -> Result<(Addr, Vec<Addr>), Miss> {
        let mut conn = open(self.sentinel_info(sentinel), deadline, &self.clock)?;
        let mut master = redis::cmd("SENTINEL");
        master.arg("MASTER").arg(&self.service);
        let reply = query(&mut conn, &master, deadline, &self.clock)?;
        let fields = pairs(&reply).ok_or("malformed SENTINEL MASTER reply")?;
        let flags = field(&fields, "flags").unwrap_or_default();
        if flags
            .split(',')
            .any(|f| f == "s_down" || f == "o_down" || f == "disconnected")
        {
            return Err(format!("reports the master as down ({flags})").into());
        }
        let addr = addr_of(&fields).ok_or("SENTINEL MASTER reply without a usable ip and port")?;
        // Other sentinels: best effort, a failure here does not disqualify
        // the answer.
        let mut list = redis::cmd("SENTINEL");
        list.arg("SENTINELS").arg(&self.service);
        let others = query(&mut conn, &list, deadline, &self.clock)
            .map(|v| sentinels_of(&v))
            .unwrap_or_default();
        Ok((addr, others))
    }

    /// `ROLE` on `addr` says `master`, by `deadline`.
    fn verify(&self, addr: &Addr, deadline: Instant) -> Result<(), Miss> {
        let mut conn = open(self.info_for(addr), deadline, &self.clock).map_err(|e| Miss {
            why: format!("did not answer ({e})"),
            untrusted: is_untrusted(&e),
        })?;
        let role =
            query(&mut conn, &redis::cmd("ROLE"), deadline, &self.clock).map_err(|e| Miss {
                why: format!("did not answer ROLE ({e})"),
                untrusted: is_untrusted(&e),
            })?;
        match role_name(&role).as_deref() {
            Some("master") => Ok(()),
            Some(other) => Err(format!("says it is a {other}, not the master").into()),
            None => Err("gave a malformed ROLE reply".into()),
        }
    }
}

/// Why one sentinel's answer was not used.
struct Miss {
    why: String,
    /// A TLS connection failed for good (a certificate that does not
    /// verify), not for want of an answer.
    untrusted: bool,
}

impl From<String> for Miss {
    fn from(why: String) -> Miss {
        Miss {
            why,
            untrusted: false,
        }
    }
}

impl From<&str> for Miss {
    fn from(why: &str) -> Miss {
        why.to_string().into()
    }
}

impl From<Error> for Miss {
    fn from(e: Error) -> Miss {
        Miss {
            untrusted: is_untrusted(&e),
            why: e.to_string(),
        }
    }
}

/// A TLS error that retrying will not cure.
fn is_untrusted(e: &Error) -> bool {
    e.kind() == ErrorKind::Tls && e.class() == ErrorClass::Permanent
}

/// Connects with `info` by `deadline`: the time left is shared between
/// the TCP connect and each handshake reply, as the pool does. The error
/// is classified as the pool's connect errors are (and never holds a
/// secret).
pub(crate) fn open(
    info: ConnectionInfo,
    deadline: Instant,
    clock: &SharedClock,
) -> Result<redis::Connection, Error> {
    let left = deadline.saturating_duration_since(clock.now());
    if left.is_zero() {
        return Err(out_of_time());
    }
    let share = (left / crate::pool::handshake_replies(&info).saturating_add(1))
        .max(Duration::from_millis(1));
    let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
    redis::Client::open(info)
        .and_then(|c| c.get_connection_with_timeout(share))
        .map_err(|e| crate::tls::connect_error(e, tls))
}

/// One command with the socket timeouts lowered to the time left. The
/// error is classified: without a password to send, the TLS handshake
/// happens here, on the first command, rather than in `open`.
pub(crate) fn query(
    conn: &mut redis::Connection,
    cmd: &redis::Cmd,
    deadline: Instant,
    clock: &SharedClock,
) -> Result<Value, Error> {
    let left = deadline.saturating_duration_since(clock.now());
    if left.is_zero() {
        return Err(out_of_time());
    }
    conn.set_read_timeout(Some(left))
        .and_then(|()| conn.set_write_timeout(Some(left)))
        .map_err(Error::from_redis)?;
    cmd.query(conn).map_err(Error::from_redis)
}

fn out_of_time() -> Error {
    Error::new(ErrorKind::Timeout, ErrorClass::Transient, "out of time")
}

/// `at - d`, or `at` itself when that is before what an `Instant` can hold.
fn before(at: Instant, d: Duration) -> Instant {
    at.checked_sub(d).unwrap_or(at)
}

/// A redis error as text, classified (never holds a secret: the
/// classifier drops the connection info).
fn describe(e: redis::RedisError) -> String {
    Error::from_redis(e).to_string()
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// A flat `[k, v, k, v, ...]` array (RESP2) or a map (RESP3) as pairs.
fn pairs(v: &Value) -> Option<Vec<(String, String)>> {
    match v {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((text(k)?, text(v).unwrap_or_default()));
            }
            Some(out)
        }
        Value::Map(items) => items
            .iter()
            .map(|(k, v)| Some((text(k)?, text(v).unwrap_or_default())))
            .collect(),
        _ => None,
    }
}

fn field(fields: &[(String, String)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// `ip` and `port` of a `SENTINEL MASTER`/`SENTINELS` entry; the port must
/// be 1..=65535 and the host non-empty.
fn addr_of(fields: &[(String, String)]) -> Option<Addr> {
    let ip = field(fields, "ip").filter(|ip| !ip.is_empty() && ip.len() <= 255)?;
    let port = field(fields, "port")?
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)?;
    Some((ip, port))
}

/// The sentinels listed by `SENTINEL SENTINELS` that are not flagged down.
fn sentinels_of(v: &Value) -> Vec<Addr> {
    let Value::Array(entries) = v else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(pairs)
        .filter(|f| {
            !field(f, "flags")
                .unwrap_or_default()
                .split(',')
                .any(|flag| flag == "s_down" || flag == "o_down" || flag == "disconnected")
        })
        .filter_map(|f| addr_of(&f))
        .take(MAX_SENTINELS)
        .collect()
}

/// The first element of a `ROLE` reply.
fn role_name(v: &Value) -> Option<String> {
    match v {
        Value::Array(items) => items.first().and_then(text),
        _ => None,
    }
}

/// Parses a `+switch-master` payload, `<name> <old ip> <old port> <new ip>
/// <new port>`, for `service`.
pub(crate) fn parse_switch(payload: &str, service: &str) -> Option<Addr> {
    let parts: Vec<&str> = payload.split(' ').collect();
    match parts.as_slice() {
        [name, _, _, ip, port] if *name == service && !ip.is_empty() => {
            let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
            Some((ip.to_string(), port))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn switch_payloads() {
        assert_eq!(
            parse_switch("mymaster 127.0.0.1 6379 127.0.0.1 6380", "mymaster"),
            Some(("127.0.0.1".to_string(), 6380))
        );
        assert_eq!(parse_switch("other 1 2 3 4", "mymaster"), None);
        assert_eq!(parse_switch("mymaster a 1 b 0", "mymaster"), None);
        assert_eq!(parse_switch("mymaster a 1 b 70000", "mymaster"), None);
        assert_eq!(parse_switch("mymaster a 1 b", "mymaster"), None);
        assert_eq!(parse_switch("", "mymaster"), None);
    }

    #[test]
    fn replies_are_parsed_defensively() {
        let master = Value::Array(vec![
            bulk("name"),
            bulk("m"),
            bulk("ip"),
            bulk("10.0.0.1"),
            bulk("port"),
            bulk("6380"),
            bulk("flags"),
            bulk("master"),
        ]);
        let f = pairs(&master).unwrap_or_default();
        assert_eq!(addr_of(&f), Some(("10.0.0.1".to_string(), 6380)));
        let bad_port = Value::Array(vec![bulk("ip"), bulk("h"), bulk("port"), bulk("99999")]);
        assert_eq!(addr_of(&pairs(&bad_port).unwrap_or_default()), None);
        // Odd length: the last key is dropped, no panic.
        assert!(pairs(&Value::Array(vec![bulk("ip")])).is_some());
        assert_eq!(pairs(&Value::Nil), None);
        let list = Value::Array(vec![
            master.clone(),
            Value::Array(vec![
                bulk("ip"),
                bulk("h2"),
                bulk("port"),
                bulk("1"),
                bulk("flags"),
                bulk("s_down,sentinel"),
            ]),
            Value::Int(3),
        ]);
        assert_eq!(sentinels_of(&list), vec![("10.0.0.1".to_string(), 6380)]);
        assert_eq!(
            role_name(&Value::Array(vec![bulk("slave"), bulk("h")])).as_deref(),
            Some("slave")
        );
        assert_eq!(role_name(&Value::Array(vec![])), None);
    }
}

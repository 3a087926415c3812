//! The pool's accounting, generic over what it pools.
//!
//! Everything that decides *when* to connect, reuse, health-check, expire or
//! wait lives here, written against the small [`Manage`] trait, so the unit
//! tests drive it with fake connections and the manual clock — no server, no
//! sleeping. `connect.rs` supplies the real `redis::Connection` manager.
//!
//! Invariants, all under the one state mutex:
//! - `idle.len() + in_use + connecting <= max` (connecting counts as open);
//! - `connecting <= dial_cap`;
//! - waiters are served in arrival order: whoever frees something hands it
//!   to the front waiter (a connection, or the right to dial), so a caller
//!   that arrives later never overtakes one that is waiting.
//!
//! Slow work (connect, PING, close) happens outside the lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Mutex, RwLock};

use super::{CloseReason, PoolListener, PoolState, PoolStats};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::error::{Error, ErrorClass, ErrorKind};
use crate::jitter::Jitter;

/// Most connects in flight at once per pool, so that a Redis restart with
/// many callers waiting does not become a dial storm.
pub(crate) const MAX_DIALS: u32 = 4;

/// What the pool needs from the things it pools (cf. r2d2's `ManageConnection`).
/// How a health-check `PING` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ping {
    /// `PONG`.
    Pong,
    /// The server answered with an error reply (over quota, loading, ...):
    /// it is reachable but will not serve; another connection would get
    /// the same answer.
    Refused,
    /// No usable answer (I/O error, timeout): this connection is dead.
    Failed,
}

pub(crate) trait Manage: Send + Sync + 'static {
    /// The pooled connection.
    type Conn: Send + 'static;
    /// Makes a ready connection, taking at most `timeout`.
    fn connect(&self, timeout: Duration) -> Result<Self::Conn, Error>;
    /// `PING`, waiting at most `timeout`.
    fn ping(&self, conn: &mut Self::Conn, timeout: Duration) -> Ping;
    /// `true` when the connection already knows it is unusable (closed).
    fn is_broken(&self, conn: &Self::Conn) -> bool;
    /// Connections made in an older generation go to a server that is no
    /// longer the endpoint's (a sentinel master switch): retired, never
    /// lent again.
    fn generation(&self) -> u64 {
        0
    }
}

/// The limits and timers the pool runs with, taken from a [`Config`].
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) endpoint: String,
    pub(crate) max: u32,
    pub(crate) min_idle: u32,
    pub(crate) dial_cap: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) checkout_timeout: Duration,
    pub(crate) health_check_interval: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
}

impl Settings {
    pub(crate) fn new(config: &Config, endpoint: &str) -> Settings {
        let max = config.max_connections.max(1);
        Settings {
            endpoint: endpoint.to_string(),
            max,
            min_idle: config.min_idle.min(max),
            dial_cap: max.min(MAX_DIALS),
            connect_timeout: config.connect_timeout,
            checkout_timeout: config.checkout_timeout,
            health_check_interval: config.health_check_interval,
            idle_timeout: config.idle_timeout,
            max_lifetime: config.max_lifetime,
        }
    }
}

/// One pooled connection with its timestamps.
#[derive(Debug)]
pub(crate) struct Entry<C> {
    pub(crate) conn: C,
    pub(crate) id: u64,
    /// The manager's generation when it was dialled.
    pub(crate) generation: u64,
    last_used: Instant,
    /// Creation time plus the (jittered) max lifetime.
    expires: Option<Instant>,
}

/// What a returning or discarded connection hands to the front waiter.
enum Grant<C> {
    /// A connection (already counted as in use), to validate and use.
    Conn(Entry<C>),
    /// The right to dial (already counted as connecting).
    Dial,
}

struct Waiter<C> {
    id: u64,
    tx: Sender<Grant<C>>,
}

struct State<C> {
    /// LIFO stack: the most recently returned connection is on top, so
    /// surplus connections sink to the bottom and age out.
    idle: Vec<Entry<C>>,
    in_use: u32,
    connecting: u32,
    waiters: VecDeque<Waiter<C>>,
    next_waiter: u64,
}

impl<C> State<C> {
    fn total(&self) -> u32 {
        self.idle.len() as u32 + self.in_use + self.connecting
    }
}

/// What a checkout does next, decided under the lock.
enum Step<C> {
    Reuse(Entry<C>),
    Dial,
    Wait(u64, Receiver<Grant<C>>),
    Full,
}

#[derive(Default)]
struct Counters {
    created: AtomicU64,
    connect_failures: AtomicU64,
    closed_broken: AtomicU64,
    closed_idle: AtomicU64,
    closed_lifetime: AtomicU64,
    closed_health: AtomicU64,
    closed_retired: AtomicU64,
    checkouts: AtomicU64,
    waits: AtomicU64,
    wait_timeouts: AtomicU64,
    health_checks: AtomicU64,
    health_checks_refused: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The state shared by the pool handles, the guards and the maintenance thread.
pub(crate) struct Shared<M: Manage> {
    pub(crate) manager: M,
    pub(crate) settings: Settings,
    pub(crate) clock: SharedClock,
    jitter: Jitter,
    state: Mutex<State<M::Conn>>,
    counters: Counters,
    listener: RwLock<Option<Arc<dyn PoolListener>>>,
    next_id: AtomicU64,
}

impl<M: Manage> Shared<M> {
    pub(crate) fn new(manager: M, settings: Settings, clock: SharedClock) -> Self {
        Shared {
            manager,
            settings,
            clock,
            jitter: Jitter::from_entropy(),
            state: Mutex::new(State {
                idle: Vec::new(),
                in_use: 0,
                connecting: 0,
                waiters: VecDeque::new(),
                next_waiter: 0,
            }),
            counters: Counters::default(),
            listener: RwLock::new(None),
            next_id: AtomicU64::new(1),
        }
    }

    pub(crate) fn set_listener(&self, listener: Arc<dyn PoolListener>) {
        *self.listener.write() = Some(listener);
    }

    /// Checks out a connection before `deadline`; without `wait`, fails at
    /// once with `PoolTimeout` instead of queueing behind other callers.
    /// Returns the entry and whether it was reused (not freshly connected).
    pub(crate) fn checkout(
        &self,
        deadline: Instant,
        wait: bool,
    ) -> Result<(Entry<M::Conn>, bool), Error> {
        self.checkout_at(self.clock.now(), deadline, wait)
    }

    /// [`Shared::checkout`] that began at `now` (the caller's clock read,
    /// so that a call reads the clock once for its checkout: see
    /// [`crate::stats::call_timer`]).
    pub(crate) fn checkout_at(
        &self,
        mut now: Instant,
        deadline: Instant,
        wait: bool,
    ) -> Result<(Entry<M::Conn>, bool), Error> {
        let mut counted_wait = false;
        loop {
            let step = {
                let mut st = self.state.lock();
                if st.waiters.is_empty() {
                    if let Some(entry) = st.idle.pop() {
                        st.in_use += 1;
                        Step::Reuse(entry)
                    } else if st.total() < self.settings.max
                        && st.connecting < self.settings.dial_cap
                    {
                        st.connecting += 1;
                        Step::Dial
                    } else {
                        self.enqueue(&mut st, wait)
                    }
                } else {
                    // Others are already waiting: do not overtake them.
                    self.enqueue(&mut st, wait)
                }
            };
            let grant = match step {
                Step::Reuse(entry) => Grant::Conn(entry),
                Step::Dial => Grant::Dial,
                Step::Full => return Err(self.pool_timeout(Duration::ZERO)),
                Step::Wait(id, rx) => {
                    if !counted_wait {
                        counted_wait = true;
                        bump(&self.counters.waits);
                    }
                    match self.wait_for(id, &rx, deadline) {
                        Some(grant) => {
                            now = self.clock.now();
                            grant
                        }
                        None => {
                            bump(&self.counters.wait_timeouts);
                            return Err(self.pool_timeout(self.settings.checkout_timeout));
                        }
                    }
                }
            };
            match grant {
                Grant::Conn(entry) => {
                    // An expired or dead connection is replaced invisibly:
                    // loop and take the next one, or dial.
                    if let Some(entry) = self.validate(entry, deadline, now) {
                        bump(&self.counters.checkouts);
                        return Ok((entry, true));
                    }
                    // A failed health check may have used up the time: do
                    // not PING the next idle connection past the deadline.
                    now = self.clock.now();
                    if now >= deadline {
                        bump(&self.counters.wait_timeouts);
                        return Err(self.pool_timeout(self.settings.checkout_timeout));
                    }
                }
                Grant::Dial => {
                    let entry = self.dial(deadline)?;
                    bump(&self.counters.checkouts);
                    return Ok((entry, false));
                }
            }
        }
    }

    fn enqueue(&self, st: &mut State<M::Conn>, wait: bool) -> Step<M::Conn> {
        if !wait {
            return Step::Full;
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let id = st.next_waiter;
        st.next_waiter += 1;
        st.waiters.push_back(Waiter { id, tx });
        Step::Wait(id, rx)
    }

    /// Waits for a grant until `deadline` (by the pool's clock). On timeout
    /// the waiter withdraws; a grant that raced in is handed back.
    fn wait_for(
        &self,
        id: u64,
        rx: &Receiver<Grant<M::Conn>>,
        deadline: Instant,
    ) -> Option<Grant<M::Conn>> {
        loop {
            let remaining = deadline.saturating_duration_since(self.clock.now());
            if remaining.is_zero() {
                break;
            }
            match rx.recv_timeout(remaining) {
                Ok(grant) => return Some(grant),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.state.lock().waiters.retain(|w| w.id != id);
        // Grants are sent under the lock, so after withdrawing no new one
        // can come; one sent just before is in the channel now.
        if let Ok(grant) = rx.try_recv() {
            match grant {
                Grant::Conn(entry) => self.checkin(entry, false),
                Grant::Dial => {
                    let mut st = self.state.lock();
                    st.connecting -= 1;
                    self.dispatch(&mut st);
                }
            }
        }
        None
    }

    fn pool_timeout(&self, waited: Duration) -> Error {
        let st = self.state.lock();
        Error::new(
            ErrorKind::PoolTimeout,
            ErrorClass::Transient,
            format!(
                "no connection to {} available after {} ms ({} in use, {} connecting, max {})",
                self.settings.endpoint,
                waited.as_millis(),
                st.in_use,
                st.connecting,
                self.settings.max
            ),
        )
        // The pool is saturated by its own callers: no evidence that Redis is down.
        .with_counts_against_breaker(false)
        .with_may_have_executed(false)
    }

    /// Hands what is free (idle connections, capacity to dial) to waiters
    /// in arrival order. Called under the lock after every change.
    fn dispatch(&self, st: &mut State<M::Conn>) {
        while !st.waiters.is_empty() {
            let grant = if let Some(entry) = st.idle.pop() {
                st.in_use += 1;
                Grant::Conn(entry)
            } else if st.total() < self.settings.max && st.connecting < self.settings.dial_cap {
                st.connecting += 1;
                Grant::Dial
            } else {
                return;
            };
            let Some(waiter) = st.waiters.pop_front() else {
                return;
            };
            // Cannot fail: a waiter withdraws (under this lock) before it
            // drops its receiver, and gets at most one grant.
            if let Err(err) = waiter.tx.try_send(grant) {
                match err.into_inner() {
                    Grant::Conn(entry) => {
                        st.in_use -= 1;
                        st.idle.push(entry);
                    }
                    Grant::Dial => st.connecting -= 1,
                }
            }
        }
    }

    /// Checks an idle connection before handing it out; closes it and
    /// returns `None` when it is expired, broken or fails its health check.
    /// `now` was read when the checkout began or last waited.
    fn validate(
        &self,
        mut entry: Entry<M::Conn>,
        deadline: Instant,
        now: Instant,
    ) -> Option<Entry<M::Conn>> {
        let idle_for = now.saturating_duration_since(entry.last_used);
        let reason = if self.is_retired(&entry) {
            Some(CloseReason::Retired)
        } else if self.is_expired(&entry, now) {
            Some(CloseReason::LifetimeExpired)
        } else if self.settings.idle_timeout.is_some_and(|t| idle_for >= t) {
            Some(CloseReason::IdleExpired)
        } else if self.manager.is_broken(&entry.conn) {
            Some(CloseReason::Broken)
        } else if idle_for >= self.settings.health_check_interval {
            bump(&self.counters.health_checks);
            let budget = deadline
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            match self.manager.ping(&mut entry.conn, budget) {
                Ping::Pong => None,
                Ping::Refused => {
                    bump(&self.counters.health_checks_refused);
                    Some(CloseReason::HealthCheckFailed)
                }
                Ping::Failed => Some(CloseReason::HealthCheckFailed),
            }
        } else {
            None
        };
        match reason {
            None => Some(entry),
            Some(reason) => {
                {
                    let mut st = self.state.lock();
                    st.in_use -= 1;
                    self.dispatch(&mut st);
                }
                self.closed(entry, reason);
                None
            }
        }
    }

    /// Dialled before the endpoint's server changed.
    pub(crate) fn is_retired(&self, entry: &Entry<M::Conn>) -> bool {
        entry.generation != self.manager.generation()
    }

    fn is_expired(&self, entry: &Entry<M::Conn>, now: Instant) -> bool {
        entry.expires.is_some_and(|at| now >= at)
    }

    /// Connects; the caller already holds a `connecting` slot, which this
    /// turns into an `in_use` one on success and frees on failure.
    fn dial(&self, deadline: Instant) -> Result<Entry<M::Conn>, Error> {
        // Read before the address is: a switch in between retires this one.
        let generation = self.manager.generation();
        let start = self.clock.now();
        let timeout = deadline
            .saturating_duration_since(start)
            .min(self.settings.connect_timeout);
        let result = if timeout.is_zero() {
            Err(self.pool_timeout(self.settings.checkout_timeout))
        } else {
            self.manager.connect(timeout)
        };
        let now = self.clock.now();
        {
            let mut st = self.state.lock();
            st.connecting -= 1;
            if result.is_ok() {
                st.in_use += 1;
            }
            self.dispatch(&mut st);
        }
        match result {
            Ok(conn) => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                bump(&self.counters.created);
                log::debug!(
                    "connection #{id} to {} created in {} ms",
                    self.settings.endpoint,
                    now.saturating_duration_since(start).as_millis()
                );
                if let Some(l) = self.listener() {
                    l.connection_created(&self.settings.endpoint, id);
                }
                Ok(Entry {
                    conn,
                    id,
                    generation,
                    last_used: now,
                    expires: self.settings.max_lifetime.map(|life| {
                        // Up to 10% early, so that connections made together
                        // do not all expire together.
                        let life = life.saturating_sub(self.jitter.up_to(life / 10));
                        crate::clock::saturating_add(now, life)
                    }),
                })
            }
            Err(err) => {
                bump(&self.counters.connect_failures);
                log::debug!("connecting to {} failed: {err}", self.settings.endpoint);
                if let Some(l) = self.listener() {
                    l.connect_failed(&self.settings.endpoint, &err);
                }
                Err(err)
            }
        }
    }

    /// Takes back a checked-out connection: onto the idle stack (or to the
    /// front waiter), or closed when it is broken or past its lifetime.
    pub(crate) fn checkin(&self, mut entry: Entry<M::Conn>, broken: bool) {
        let now = self.clock.now();
        // The end of the call this connection served, for the duration
        // histogram (which thereby reads no clock of its own).
        crate::stats::call_timer::checked_in(now);
        let reason = if broken || self.manager.is_broken(&entry.conn) {
            Some(CloseReason::Broken)
        } else if self.is_retired(&entry) {
            Some(CloseReason::Retired)
        } else if self.is_expired(&entry, now) {
            Some(CloseReason::LifetimeExpired)
        } else {
            None
        };
        let closing = {
            let mut st = self.state.lock();
            st.in_use -= 1;
            let closing = match reason {
                Some(reason) => Some((entry, reason)),
                None => {
                    entry.last_used = now;
                    st.idle.push(entry);
                    None
                }
            };
            self.dispatch(&mut st);
            closing
        };
        if let Some((entry, reason)) = closing {
            self.closed(entry, reason);
        }
    }

    /// Counts, logs and reports a close, then drops the connection (outside
    /// the lock: closing a socket is a syscall).
    fn closed(&self, entry: Entry<M::Conn>, reason: CloseReason) {
        let counter = match reason {
            CloseReason::Broken => Some(&self.counters.closed_broken),
            CloseReason::IdleExpired => Some(&self.counters.closed_idle),
            CloseReason::LifetimeExpired => Some(&self.counters.closed_lifetime),
            CloseReason::HealthCheckFailed => Some(&self.counters.closed_health),
            CloseReason::Retired => Some(&self.counters.closed_retired),
            // Nobody can read the counters of a dropped pool.
            CloseReason::PoolDropped => None,
        };
        if let Some(counter) = counter {
            bump(counter);
        }
        log::debug!(
            "connection #{} to {} closed: {reason}",
            entry.id,
            self.settings.endpoint
        );
        if let Some(l) = self.listener() {
            l.connection_closed(&self.settings.endpoint, entry.id, reason);
        }
        drop(entry);
    }

    fn listener(&self) -> Option<Arc<dyn PoolListener>> {
        self.listener.read().clone()
    }

    /// One maintenance pass: closes idle connections past their idle
    /// timeout or lifetime, then tops the idle stack up to `min_idle`.
    /// Returns how many connections it made.
    pub(crate) fn maintain(&self) -> u32 {
        let now = self.clock.now();
        let expired: Vec<(Entry<M::Conn>, CloseReason)> = {
            let mut st = self.state.lock();
            let (keep, expired): (Vec<_>, Vec<_>) = std::mem::take(&mut st.idle)
                .into_iter()
                .map(|e| {
                    let idle_for = now.saturating_duration_since(e.last_used);
                    let reason = if self.is_retired(&e) {
                        Some(CloseReason::Retired)
                    } else if self.is_expired(&e, now) {
                        Some(CloseReason::LifetimeExpired)
                    } else if self.settings.idle_timeout.is_some_and(|t| idle_for >= t) {
                        Some(CloseReason::IdleExpired)
                    } else {
                        None
                    };
                    (e, reason)
                })
                .partition(|(_, reason)| reason.is_none());
            st.idle = keep.into_iter().map(|(e, _)| e).collect();
            self.dispatch(&mut st);
            expired
                .into_iter()
                .filter_map(|(e, r)| r.map(|r| (e, r)))
                .collect()
        };
        for (entry, reason) in expired {
            self.closed(entry, reason);
        }

        let mut made = 0;
        loop {
            {
                let mut st = self.state.lock();
                // Waiters get capacity through dispatch; warm-up only fills
                // a quiet pool.
                if st.idle.len() as u32 >= self.settings.min_idle
                    || !st.waiters.is_empty()
                    || st.total() >= self.settings.max
                    || st.connecting >= self.settings.dial_cap
                {
                    return made;
                }
                st.connecting += 1;
            }
            let deadline = self.clock.now() + self.settings.connect_timeout;
            match self.dial(deadline) {
                Ok(entry) => {
                    made += 1;
                    self.checkin(entry, false);
                }
                // Already logged and counted; try again on the next pass.
                Err(_) => return made,
            }
        }
    }

    pub(crate) fn state(&self) -> PoolState {
        let st = self.state.lock();
        PoolState {
            total: st.total(),
            idle: st.idle.len() as u32,
            in_use: st.in_use,
            connecting: st.connecting,
            waiters: st.waiters.len() as u32,
            max: self.settings.max,
        }
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PoolStats {
            created: get(&c.created),
            connect_failures: get(&c.connect_failures),
            closed_broken: get(&c.closed_broken),
            closed_idle_expired: get(&c.closed_idle),
            closed_lifetime_expired: get(&c.closed_lifetime),
            closed_health_check_failed: get(&c.closed_health),
            closed_retired: get(&c.closed_retired),
            checkouts: get(&c.checkouts),
            waits: get(&c.waits),
            wait_timeouts: get(&c.wait_timeouts),
            health_checks: get(&c.health_checks),
            health_checks_refused: get(&c.health_checks_refused),
            // Filled in by `Pool::stats` from its shared connections.
            shared_requests: 0,
            shared_waits: 0,
        }
    }
}

impl<M: Manage> Drop for Shared<M> {
    fn drop(&mut self) {
        // Only idle connections remain: a guard keeps the pool alive.
        let idle = std::mem::take(&mut self.state.get_mut().idle);
        for entry in idle {
            self.closed(entry, CloseReason::PoolDropped);
        }
    }
}

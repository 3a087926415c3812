//! Redis Cluster (`redis+cluster://`): which node serves a key, and
//! keeping that map current.
//!
//! The cluster splits the key space into 16384 hash slots ([`slot`]), each
//! served by one master (and copied to its replicas). This module keeps
//! the *slot map* read from any node that answers (`CLUSTER SHARDS`, or
//! `CLUSTER SLOTS` before Redis 7: [`shards`]), and one
//! [`RedisEndpoint`] — its own breaker and its own pool — per master, so
//! that a dead master opens the circuit for its own slots only. Endpoints
//! are made when the map first names a node and dropped (their pools
//! closed) when a refresh no longer does.
//!
//! A call names its first key ([`Route`]); the slot's master serves it.
//! The cluster's answers are followed here, below the retry loop, so the
//! client above sees one endpoint:
//!
//! - `MOVED`: the command did not run. The slot is re-pointed at once, a
//!   refresh is asked for, and the command is re-sent to the new owner.
//! - `ASK` (a slot being migrated): `ASKING` and then the command, once,
//!   on the target; the map is not changed. A pipeline that meets `ASK`
//!   is not re-sent (its commands on keys still on the source ran there,
//!   and `ASKING` covers one command): a transient error that the retry
//!   loop retries only when the pipeline is idempotent.
//! - at most `max_redirects` redirects per attempt (5 by default); more is
//!   a transient error the retry loop may retry.
//! - `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `LOADING`, `READONLY` to a
//!   single command: it did not run, so the error is marked so and the
//!   retry loop retries it with backoff, within the call's deadline and
//!   the retry budget, whatever the command.
//! - `CROSSSLOT` is a permanent server error: returned, never retried.
//!
//! The map is refreshed on the client's background thread (`rr-prober`):
//! every [`REFRESH_EVERY`], and as soon as a call saw a sign that it is
//! out of date (a `MOVED`, a connection failure or open breaker on a
//! master, `READONLY`, `CLUSTERDOWN`), at most once per [`REFRESH_GAP`]:
//! a storm of `MOVED` replies costs one refresh. A refresh asks the node
//! that answered last, then the known masters (those whose breaker is
//! closed first), their replicas and the seeds, one after the other; a
//! node that fails is skipped, never the end of the refresh. The first
//! call of a client, with no map yet, discovers it itself within one
//! connect and one socket timeout.

pub(crate) mod redirect;
pub(crate) mod shards;
pub(crate) mod slot;
mod written;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redis::{ConnectionAddr, ConnectionInfo, Value};

use self::redirect::{calls_for_refresh, is_single_reply, not_executed, redirect_of, Redirect};
use self::shards::{parse_shards, parse_slots, NodeAddr, Shard, SlotTable};
use self::slot::key_slot;
use crate::breaker::{BreakerListener, BreakerState};
use crate::clock::SharedClock;
use crate::config::{Config, Endpoint};
use crate::error::{Error, ErrorClass, ErrorKind};
use crate::log_fields::{log_fields, Fields};
use crate::pool::{PoolListener, PooledConnection};
use crate::router::{RedisEndpoint, Role};
use crate::topology::recent::{Key, RecentWrites};
use crate::topology::TopologyListener;

/// The periodic refresh: a reshard or a failover the client's calls have
/// not run into yet is seen within this.
pub(crate) const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// At most one refresh per this, however many calls ask for one.
pub(crate) const REFRESH_GAP: Duration = Duration::from_millis(200);

/// Redirects one attempt follows by default before giving up.
pub(crate) const DEFAULT_MAX_REDIRECTS: u32 = 5;

/// Which node a call goes to: the master of its first key's slot, or
/// any master for a keyless command.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route<'a> {
    /// The call's keys; the first decides the slot. None: any master.
    pub(crate) keys: &'a [&'a [u8]],
    /// The call may write them: once acknowledged they are noted, so that
    /// a failover to a replica that may lack them distrusts them.
    pub(crate) write: bool,
}

impl<'a> Route<'a> {
    /// Any master (a keyless command, or a topology without slots).
    pub(crate) const ANY: Route<'static> = Route {
        keys: &[],
        write: false,
    };

    /// By the first of `keys`.
    pub(crate) fn keys(keys: &'a [&'a [u8]], write: bool) -> Route<'a> {
        Route { keys, write }
    }
}

/// What a node endpoint reports its breaker and pool events to.
#[derive(Clone)]
pub(crate) struct Hooks {
    pub(crate) breaker: Arc<dyn BreakerListener>,
    pub(crate) pool: Arc<dyn PoolListener>,
    pub(crate) topology: Arc<dyn TopologyListener>,
}

/// One master: its address and its endpoint (breaker + pool).
pub(crate) struct ClusterNode {
    pub(crate) addr: NodeAddr,
    pub(crate) endpoint: RedisEndpoint,
    /// Keys it acknowledged writes of lately (see `topology::recent`).
    recent: RecentWrites,
    /// When calls to it started failing (cleared by a success): the
    /// writes it acknowledged from a window before then may be missing
    /// on the replica that replaces it.
    trouble_since: Mutex<Option<Instant>>,
    /// Fast path: `trouble_since` is set.
    troubled: AtomicBool,
}

/// The slot map, immutable once built (a change builds a new one).
#[derive(Clone)]
struct View {
    table: SlotTable,
    /// Slots assigned in `table`.
    assigned: usize,
    /// Index = the shard index in `table`.
    masters: Vec<Arc<ClusterNode>>,
    /// Replica addresses, asked when refreshing.
    replicas: Vec<NodeAddr>,
    /// With `read_from_replicas`: each shard's online replicas.
    replica_nodes: Vec<Vec<Arc<ClusterNode>>>,
}

impl View {
    fn empty() -> View {
        View {
            table: SlotTable::empty(),
            assigned: 0,
            masters: Vec::new(),
            replicas: Vec::new(),
            replica_nodes: Vec::new(),
        }
    }
}

#[derive(Default)]
struct RefreshState {
    last: Option<Instant>,
    /// The node that answered the last refresh: asked first next time.
    last_good: Option<NodeAddr>,
    last_error: Option<String>,
}

/// Counted for the stats (relaxed atomics).
#[derive(Debug, Default)]
pub(crate) struct ClusterCounts {
    /// Slot maps read.
    pub(crate) refreshes: AtomicU64,
    /// Refreshes where no node answered.
    pub(crate) refresh_failures: AtomicU64,
    /// Slots whose master changed (refreshes and `MOVED` replies).
    pub(crate) slot_moves: AtomicU64,
    /// `MOVED` replies followed.
    pub(crate) moved: AtomicU64,
    /// `ASK` replies followed.
    pub(crate) asks: AtomicU64,
    /// Refreshes that changed the map.
    pub(crate) changes: AtomicU64,
}

/// See the module docs.
pub(crate) struct ClusterTopology {
    /// Which configured endpoint this is (for the log fields).
    role: Role,
    seeds: Vec<NodeAddr>,
    /// The nodes' connection settings (credentials, TLS, TCP); each
    /// node's address is set on a copy.
    template: ConnectionInfo,
    /// `rediss+cluster://`: nodes announce TLS ports.
    tls: bool,
    /// `redis://user:***@` or `rediss://`, the front of each node's
    /// redacted URL.
    url_prefix: String,
    insecure_fragment: bool,
    config: Config,
    clock: SharedClock,
    hooks: Hooks,
    view: RwLock<Arc<View>>,
    refresh: Mutex<RefreshState>,
    /// A call saw a sign that the map is out of date.
    wanted: AtomicBool,
    /// Round robin for keyless commands.
    next_any: AtomicUsize,
    max_redirects: u32,
    pub(crate) counts: ClusterCounts,
    /// Keys a dead master acknowledged lately, to be marked stale before
    /// the next attempt (the replica promoted in its place may lack them).
    distrusted: Mutex<Vec<Key>>,
    has_distrusted: AtomicBool,
    /// `read_from_replicas`: reads of keys this process never wrote may go
    /// to a replica.
    read_from_replicas: bool,
    written: written::Written,
}

impl std::fmt::Debug for ClusterTopology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTopology")
            .field("seeds", &self.seeds)
            .field("masters", &self.view.read().masters.len())
            .finish_non_exhaustive()
    }
}

impl ClusterTopology {
    /// The topology of a `redis+cluster://` endpoint; no I/O (the first
    /// call or the background thread reads the map).
    pub(crate) fn new(
        role: Role,
        seeds: &[(String, u16)],
        endpoint: &Endpoint,
        config: &Config,
        clock: &SharedClock,
        hooks: Hooks,
    ) -> ClusterTopology {
        let redis = endpoint.info.redis_settings();
        let mut url_prefix = String::from(if endpoint.tls {
            "rediss://"
        } else {
            "redis://"
        });
        match (redis.username(), redis.password().is_some()) {
            (Some(u), true) => url_prefix.push_str(&format!("{u}:***@")),
            (None, true) => url_prefix.push_str(":***@"),
            (Some(u), false) => url_prefix.push_str(&format!("{u}@")),
            (None, false) => {}
        }
        ClusterTopology {
            role,
            seeds: seeds
                .iter()
                .map(|(host, port)| NodeAddr {
                    host: host.clone(),
                    port: *port,
                })
                .collect(),
            template: endpoint.info.clone(),
            tls: endpoint.tls,
            url_prefix,
            insecure_fragment: endpoint.insecure_fragment,
            config: config.clone(),
            clock: clock.clone(),
            hooks,
            view: RwLock::new(Arc::new(View::empty())),
            refresh: Mutex::new(RefreshState::default()),
            wanted: AtomicBool::new(false),
            next_any: AtomicUsize::new(0),
            max_redirects: config.max_redirects,
            counts: ClusterCounts::default(),
            distrusted: Mutex::new(Vec::new()),
            has_distrusted: AtomicBool::new(false),
            read_from_replicas: config.read_from_replicas,
            written: written::Written::new(),
        }
    }

    /// `true` when keys wait to be marked stale (see [`Self::drain_distrusted`]).
    pub(crate) fn has_distrusted(&self) -> bool {
        self.has_distrusted.load(Ordering::Acquire)
    }

    /// Hands the keys a dead master acknowledged lately to `mark` (which
    /// marks them stale), holding the lock meanwhile so that no attempt
    /// that saw them pending goes on before they are marked.
    pub(crate) fn drain_distrusted(&self, mark: impl FnOnce(&[Key])) {
        let mut pending = self.distrusted.lock();
        if !pending.is_empty() {
            mark(&pending);
            pending.clear();
        }
        self.has_distrusted.store(false, Ordering::Release);
    }

    /// `node` is no longer the master of its slots and failed: what
    /// it acknowledged lately is distrusted. Called before the new map is
    /// visible, so that every attempt that sees it finds them pending.
    fn distrust(&self, node: &ClusterNode) {
        let now = self.clock.now();
        let trouble = node.trouble_since.lock().unwrap_or(now);
        let since = trouble
            .checked_sub(super::recent::WINDOW)
            .unwrap_or(trouble);
        let (n, lost) = {
            let mut notes = node.recent.lock();
            notes.switch(since)
        };
        if n > 0 {
            let mut pending = self.distrusted.lock();
            node.recent.drain(|keys| pending.extend_from_slice(keys));
            self.has_distrusted.store(true, Ordering::Release);
            let addr = node.addr.to_string();
            log_fields!(
                log::Level::Info,
                Fields::new("cluster_distrust").at(self.role.as_str(), "none"),
                keys = n, node = addr.as_str();
                "redis cluster: master {addr} is gone; {n} keys it acknowledged lately are deleted on its successor before they are served"
            );
        }
        if lost {
            let addr = node.addr.to_string();
            log_fields!(
                log::Level::Warn,
                Fields::new("cluster_distrust").at(self.role.as_str(), "none"),
                node = addr.as_str();
                "redis cluster: more keys were written to master {addr} just before it failed than could be noted: reads of some may return values older than those writes"
            );
        }
    }

    /// `true` when a master's breaker is not closed or its last attempt
    /// could not be served: some slots are not served from Redis.
    pub(crate) fn degraded(&self) -> bool {
        self.view
            .read()
            .masters
            .iter()
            .any(|n| n.endpoint.is_failing() || n.endpoint.breaker.state() != BreakerState::Closed)
    }

    /// The masters now, in shard order.
    pub(crate) fn masters(&self) -> Vec<Arc<ClusterNode>> {
        self.view.read().masters.clone()
    }

    /// One attempt of a call: to the master of `route`'s slot, following
    /// redirects (see the module docs).
    pub(crate) fn call<T>(
        &self,
        route: Route<'_>,
        deadline: Option<Instant>,
        f: &mut dyn FnMut(&mut PooledConnection, Role) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let slot = route.keys.first().map(|k| key_slot(k));
        if self.read_from_replicas {
            if route.write {
                // Before it is sent: a read that follows its acknowledgement
                // must find it noted.
                self.written.insert(route.keys);
            } else if let Some(value) = self.call_replica(route, slot, deadline, f) {
                return Ok(value);
            }
        }
        let mut node = self.node_for(slot, deadline)?;
        let mut asking = false;
        let mut redirects = 0u32;
        loop {
            let result = if asking {
                node.endpoint.call(deadline, &mut |conn, role| {
                    redis::cmd("ASKING")
                        .query::<()>(conn)
                        .map_err(|e| Error::from_redis(e).with_may_have_executed(false))?;
                    f(conn, role)
                })
            } else {
                node.endpoint.call(deadline, f)
            };
            let err = match result {
                Ok(value) => {
                    if route.write {
                        let now = self.clock.now();
                        let keep = now.checked_sub(super::recent::WINDOW).unwrap_or(now);
                        node.recent.lock().note(route.keys, now, keep);
                    }
                    if node.troubled.load(Ordering::Relaxed) {
                        *node.trouble_since.lock() = None;
                        node.troubled.store(false, Ordering::Relaxed);
                    }
                    return Ok(value);
                }
                Err(e) => e,
            };
            let Some(redirect) = redirect_of(&err) else {
                if calls_for_refresh(&err) {
                    self.wanted.store(true, Ordering::Release);
                    let mut since = node.trouble_since.lock();
                    if since.is_none() {
                        *since = Some(self.clock.now());
                        node.troubled.store(true, Ordering::Relaxed);
                    }
                }
                return Err(if not_executed(&err) {
                    err.with_may_have_executed(false)
                } else {
                    err
                });
            };
            if matches!(redirect, Redirect::Ask { .. }) && !is_single_reply(&err) {
                // A pipeline during a migration: the commands on keys still
                // on the source ran there, and ASKING covers one command
                // only. Not re-sent: retried (when idempotent) once the
                // slot has moved.
                self.wanted.store(true, Ordering::Release);
                return Err(Error::new(
                    ErrorKind::Server,
                    ErrorClass::Transient,
                    format!(
                        "redis cluster: a pipeline met a slot being migrated ({}); its other commands may have run, so it is not re-sent there",
                        describe(&redirect)
                    ),
                )
                .with_may_have_executed(true)
                .with_counts_against_breaker(false));
            }
            if redirects >= self.max_redirects {
                self.wanted.store(true, Ordering::Release);
                return Err(Error::new(
                    ErrorKind::Server,
                    ErrorClass::Transient,
                    format!(
                        "redis cluster: more than {} redirects for one command (last: {})",
                        self.max_redirects,
                        describe(&redirect)
                    ),
                )
                .with_may_have_executed(false));
            }
            redirects = redirects.saturating_add(1);
            node = match redirect {
                Redirect::Moved { slot, to } => {
                    asking = false;
                    self.counts.moved.fetch_add(1, Ordering::Relaxed);
                    self.moved(slot, &to)
                }
                Redirect::Ask { to, .. } => {
                    asking = true;
                    self.counts.asks.fetch_add(1, Ordering::Relaxed);
                    self.node_at(&to)
                }
            };
        }
    }

    /// A read on a replica of `slot`'s master when one may serve it (a key
    /// this process never wrote, a replica whose breaker is closed):
    /// `READONLY`, then the command. `None` when no replica may, or when it
    /// failed in any way: the master serves the read then.
    fn call_replica<T>(
        &self,
        route: Route<'_>,
        slot: Option<u16>,
        deadline: Option<Instant>,
        f: &mut dyn FnMut(&mut PooledConnection, Role) -> Result<T, Error>,
    ) -> Option<T> {
        let slot = slot?;
        if !self.written.none_written(route.keys) {
            return None;
        }
        let view = self.view.read().clone();
        let replicas = view
            .table
            .get(slot)
            .and_then(|i| view.replica_nodes.get(i))?;
        let n = replicas.len();
        if n == 0 {
            return None;
        }
        let start = self.next_any.fetch_add(1, Ordering::Relaxed);
        let replica = (0..n)
            .filter_map(|i| replicas.get(start.wrapping_add(i) % n))
            .find(|r| r.endpoint.breaker.state() == BreakerState::Closed)?;
        replica
            .endpoint
            .call(deadline, &mut |conn, role| {
                redis::cmd("READONLY")
                    .query::<()>(conn)
                    .map_err(|e| Error::from_redis(e).with_may_have_executed(false))?;
                f(conn, role)
            })
            .ok()
    }

    /// The replicas of each master, as endpoints (only with
    /// `read_from_replicas`): kept from `old` when already known.
    fn replica_nodes(&self, shards: &[Shard], old: &View) -> Vec<Vec<Arc<ClusterNode>>> {
        if !self.read_from_replicas {
            return Vec::new();
        }
        let known = |addr: &NodeAddr| {
            old.replica_nodes
                .iter()
                .flatten()
                .find(|n| n.addr == *addr)
                .cloned()
        };
        shards
            .iter()
            .map(|s| {
                s.replicas
                    .iter()
                    .map(|r| known(r).unwrap_or_else(|| self.new_node(r)))
                    .collect()
            })
            .collect()
    }

    /// Replica endpoints, for the stats (empty without `read_from_replicas`).
    pub(crate) fn replicas(&self) -> Vec<Arc<ClusterNode>> {
        self.view
            .read()
            .replica_nodes
            .iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// The master for `slot` (any master for `None`), reading the map
    /// first when there is none yet.
    fn node_for(
        &self,
        slot: Option<u16>,
        deadline: Option<Instant>,
    ) -> Result<Arc<ClusterNode>, Error> {
        let mut view = self.view.read().clone();
        if view.assigned == 0 {
            self.discover(deadline)?;
            view = self.view.read().clone();
        }
        let node = match slot {
            Some(slot) => view
                .table
                .get(slot)
                .and_then(|i| view.masters.get(i))
                .cloned(),
            None => self.any_master(&view),
        };
        node.ok_or_else(|| {
            self.wanted.store(true, Ordering::Release);
            let what = slot.map_or("a keyless command".to_string(), |s| format!("slot {s}"));
            Error::new(
                ErrorKind::Connection,
                ErrorClass::Transient,
                format!("redis cluster: no master serves {what} in the slot map"),
            )
            .with_may_have_executed(false)
            .with_counts_against_breaker(false)
        })
    }

    /// A master for a keyless command: round robin, skipping masters
    /// whose breaker is open while another is not.
    fn any_master(&self, view: &View) -> Option<Arc<ClusterNode>> {
        let n = view.masters.len();
        if n == 0 {
            return None;
        }
        let start = self.next_any.fetch_add(1, Ordering::Relaxed);
        let pick = |i: usize| view.masters.get(start.wrapping_add(i) % n);
        (0..n)
            .filter_map(pick)
            .find(|m| {
                !matches!(
                    m.endpoint.breaker.state(),
                    BreakerState::Open | BreakerState::ForcedOpen
                )
            })
            .or_else(|| pick(0))
            .cloned()
    }

    /// The first map, read by a caller: one caller reads it, the others
    /// wait for its answer (never past their deadline, nor one connect
    /// and one socket timeout).
    fn discover(&self, deadline: Option<Instant>) -> Result<(), Error> {
        let now = self.clock.now();
        let limit = crate::clock::saturating_add(
            now,
            self.config
                .connect_timeout
                .saturating_add(self.config.socket_timeout),
        );
        let until = deadline.map_or(limit, |d| d.min(limit));
        let wait = until.saturating_duration_since(now);
        let no_map = |why: String| {
            Error::new(
                ErrorKind::Connection,
                ErrorClass::Transient,
                format!("redis cluster: no slot map ({why})"),
            )
            .with_may_have_executed(false)
            .with_counts_against_breaker(false)
        };
        let Some(mut state) = self.refresh.try_lock_for(wait) else {
            return Err(no_map("another call is reading it".to_string()));
        };
        if self.view.read().assigned > 0 {
            return Ok(());
        }
        // A read that just failed is not repeated by every call: they fail
        // fast (and the fallback serves) until the next one is due.
        let recent = state
            .last
            .is_some_and(|at| self.clock.now().saturating_duration_since(at) < REFRESH_GAP);
        if let (true, Some(why)) = (recent, &state.last_error) {
            return Err(no_map(why.clone()));
        }
        match self.refresh_locked(&mut state, until) {
            Ok(()) => Ok(()),
            Err(why) => Err(no_map(why)),
        }
    }

    /// The background thread's tick: refreshes when a call asked for it
    /// or the periodic refresh is due, at most once per [`REFRESH_GAP`].
    pub(crate) fn maintain(&self) {
        let now = self.clock.now();
        let Some(mut state) = self.refresh.try_lock() else {
            return;
        };
        let since = state.last.map(|at| now.saturating_duration_since(at));
        let wanted = self.wanted.load(Ordering::Acquire);
        let due = match since {
            None => true,
            Some(s) if wanted => s >= REFRESH_GAP,
            Some(s) => s >= REFRESH_EVERY,
        };
        if !due {
            return;
        }
        // Enough for two nodes that do not answer; the rest wait for the
        // next tick.
        let per_node = self
            .config
            .connect_timeout
            .saturating_add(self.config.socket_timeout);
        let until = crate::clock::saturating_add(now, per_node.saturating_mul(2));
        let _ = self.refresh_locked(&mut state, until);
    }

    /// Reads the map from the first node that answers; installs it.
    fn refresh_locked(&self, state: &mut RefreshState, until: Instant) -> Result<(), String> {
        self.wanted.store(false, Ordering::Release);
        state.last = Some(self.clock.now());
        let mut errors = Vec::new();
        for addr in self.candidates(state.last_good.as_ref()) {
            let now = self.clock.now();
            if now >= until {
                errors.push("out of time".to_string());
                break;
            }
            let per_node = crate::clock::saturating_add(
                now,
                self.config
                    .connect_timeout
                    .saturating_add(self.config.socket_timeout),
            )
            .min(until);
            match self.read_map(&addr, per_node) {
                Ok(shards) => match self.install(shards, &addr) {
                    Ok(()) => {
                        self.counts.refreshes.fetch_add(1, Ordering::Relaxed);
                        state.last_good = Some(addr);
                        state.last_error = None;
                        return Ok(());
                    }
                    Err(e) => errors.push(format!("{addr}: {e}")),
                },
                Err(e) => {
                    log::debug!("redis cluster: {addr} did not give the slot map: {e}");
                    errors.push(format!("{addr}: {e}"));
                }
            }
        }
        self.counts.refresh_failures.fetch_add(1, Ordering::Relaxed);
        // Keep it short: the first few reasons say enough.
        let why = if errors.is_empty() {
            "no node to ask".to_string()
        } else {
            errors
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        };
        state.last_error = Some(why.clone());
        Err(why)
    }

    /// Who to ask, in order, without repeats: the last node that
    /// answered, the masters whose breaker is closed, the other masters,
    /// the replicas, the seeds.
    fn candidates(&self, last_good: Option<&NodeAddr>) -> Vec<NodeAddr> {
        let view = self.view.read().clone();
        let closed = |n: &&Arc<ClusterNode>| n.endpoint.breaker.state() == BreakerState::Closed;
        let mut out: Vec<NodeAddr> = Vec::new();
        let ordered = last_good
            .cloned()
            .into_iter()
            .chain(view.masters.iter().filter(closed).map(|n| n.addr.clone()))
            .chain(
                view.masters
                    .iter()
                    .filter(|n| !closed(n))
                    .map(|n| n.addr.clone()),
            )
            .chain(view.replicas.iter().cloned())
            .chain(self.seeds.iter().cloned());
        for addr in ordered {
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        out
    }

    /// `CLUSTER SHARDS` on `addr` (`CLUSTER SLOTS` when the server does
    /// not know it), by `until`.
    fn read_map(&self, addr: &NodeAddr, until: Instant) -> Result<Vec<Shard>, Error> {
        let mut conn = crate::topology::sentinel::open(self.info_for(addr), until, &self.clock)?;
        let malformed = |e: shards::MapError| {
            Error::new(
                ErrorKind::UnexpectedReply,
                ErrorClass::Permanent,
                format!("malformed reply: {e}"),
            )
        };
        let shards = redis::cmd("CLUSTER").arg("SHARDS").clone();
        let reply = crate::topology::sentinel::query(&mut conn, &shards, until, &self.clock);
        let parsed = match reply {
            Ok(value) => parse_shards(&value, self.tls, &addr.host).map_err(malformed)?,
            // Redis < 7: no CLUSTER SHARDS.
            Err(e) if e.kind() == ErrorKind::Server && !is_cluster_disabled(&e) => {
                let slots = redis::cmd("CLUSTER").arg("SLOTS").clone();
                let value: Value =
                    crate::topology::sentinel::query(&mut conn, &slots, until, &self.clock)?;
                parse_slots(&value, &addr.host).map_err(malformed)?
            }
            Err(e) => return Err(e),
        };
        if parsed.is_empty() {
            return Err(Error::new(
                ErrorKind::UnexpectedReply,
                ErrorClass::Transient,
                "the node serves no slots (not part of a formed cluster)",
            ));
        }
        Ok(parsed)
    }

    /// Installs a new map: endpoints kept for the nodes it still names,
    /// made for the new ones, dropped for the others. One INFO line when
    /// anything changed.
    fn install(&self, shards: Vec<Shard>, from: &NodeAddr) -> Result<(), shards::MapError> {
        let table = SlotTable::from_shards(&shards)?;
        let old = self.view.read().clone();
        let mut masters = Vec::with_capacity(shards.len());
        let mut added = Vec::new();
        for shard in &shards {
            let node = match old.masters.iter().find(|n| n.addr == shard.master) {
                Some(n) => n.clone(),
                None => {
                    added.push(shard.master.to_string());
                    self.new_node(&shard.master)
                }
            };
            masters.push(node);
        }
        let replicas: Vec<NodeAddr> = shards.iter().flat_map(|s| s.replicas.clone()).collect();
        let replica_nodes = self.replica_nodes(&shards, &old);
        let assigned = table.assigned();
        let mut moves = 0u64;
        if old.assigned > 0 {
            for s in 0..slot::SLOTS {
                let was = old.table.get(s).and_then(|i| old.masters.get(i));
                let now = table.get(s).and_then(|i| masters.get(i));
                if was.map(|n| &n.addr) != now.map(|n| &n.addr) {
                    moves = moves.saturating_add(1);
                }
            }
        }
        let removed: Vec<String> = old
            .masters
            .iter()
            .filter(|o| !masters.iter().any(|n| n.addr == o.addr))
            .map(|o| o.addr.to_string())
            .collect();
        let changed = old.assigned == 0 || moves > 0 || !added.is_empty() || !removed.is_empty();
        // A master that left the map after failing (calls to it failed,
        // or the cluster reports it failed) may have acknowledged writes
        // its successor never received. One removed in good order (its
        // slots migrated first) lost nothing.
        let failed: Vec<&NodeAddr> = shards.iter().flat_map(|s| s.failed.iter()).collect();
        for gone in old.masters.iter().filter(|o| {
            !masters.iter().any(|n| n.addr == o.addr)
                && (o.troubled.load(Ordering::Relaxed) || failed.contains(&&o.addr))
        }) {
            self.distrust(gone);
        }
        *self.view.write() = Arc::new(View {
            table,
            assigned,
            masters,
            replicas,
            replica_nodes,
        });
        if changed {
            self.counts.changes.fetch_add(1, Ordering::Relaxed);
            self.counts.slot_moves.fetch_add(moves, Ordering::Relaxed);
            let list: Vec<String> = shards
                .iter()
                .map(|s| {
                    let n: usize = s
                        .slots
                        .iter()
                        .map(|(a, b)| usize::from(b.saturating_sub(*a)).saturating_add(1))
                        .sum();
                    format!("{} ({n} slots, {} replicas)", s.master, s.replicas.len())
                })
                .collect();
            log_fields!(
                log::Level::Info,
                Fields::new("cluster_topology").at(self.role.as_str(), "none"),
                slots_moved = moves, masters = shards.len();
                "redis cluster topology changed (map from {from}): {} masters [{}], {assigned} of 16384 slots served, {moves} slots moved, masters added [{}], removed [{}]",
                shards.len(),
                list.join(", "),
                added.join(", "),
                removed.join(", ")
            );
        }
        Ok(())
    }

    /// A `MOVED` reply: `slot` is served by `to` now.
    fn moved(&self, slot: u16, to: &NodeAddr) -> Arc<ClusterNode> {
        self.wanted.store(true, Ordering::Release);
        let mut guard = self.view.write();
        let current = guard
            .table
            .get(slot)
            .and_then(|i| guard.masters.get(i))
            .filter(|n| n.addr == *to)
            .cloned();
        if let Some(node) = current {
            // Another caller re-pointed it already.
            return node;
        }
        let mut view = (**guard).clone();
        // The old owner failed: a replica took its slots over, and may
        // lack what it acknowledged lately.
        let failed_owner = view
            .table
            .get(slot)
            .and_then(|i| view.masters.get(i))
            .filter(|n| n.troubled.load(Ordering::Relaxed))
            .cloned();
        if let Some(old) = failed_owner {
            self.distrust(&old);
        }
        let index = match view.masters.iter().position(|n| n.addr == *to) {
            Some(i) => i,
            None => {
                view.masters.push(self.new_node(to));
                view.masters.len().saturating_sub(1)
            }
        };
        let node = view.masters.get(index).cloned();
        match (u16::try_from(index), node) {
            (Ok(i), Some(node)) => {
                if view.table.get(slot).is_none() {
                    view.assigned = view.assigned.saturating_add(1);
                }
                view.table.set(slot, i);
                *guard = Arc::new(view);
                self.counts.slot_moves.fetch_add(1, Ordering::Relaxed);
                node
            }
            // More masters than slots: not a map to keep; follow the
            // redirect without recording it.
            _ => self.new_node(to),
        }
    }

    /// The node at `to` (an `ASK` target): a known master, or a new
    /// endpoint kept until the next refresh.
    fn node_at(&self, to: &NodeAddr) -> Arc<ClusterNode> {
        if let Some(n) = self.view.read().masters.iter().find(|n| n.addr == *to) {
            return n.clone();
        }
        let mut guard = self.view.write();
        if let Some(n) = guard.masters.iter().find(|n| n.addr == *to) {
            return n.clone();
        }
        let node = self.new_node(to);
        let mut view = (**guard).clone();
        view.masters.push(node.clone());
        *guard = Arc::new(view);
        node
    }

    fn new_node(&self, addr: &NodeAddr) -> Arc<ClusterNode> {
        let endpoint = Endpoint {
            info: self.info_for(addr),
            redacted: format!("{}{addr}", self.url_prefix),
            tls: self.tls,
            insecure_fragment: self.insecure_fragment,
            sentinel: None,
            cluster: None,
        };
        Arc::new(ClusterNode {
            recent: RecentWrites::new(self.config.fallback_max_entries),
            trouble_since: Mutex::new(None),
            troubled: AtomicBool::new(false),
            addr: addr.clone(),
            endpoint: RedisEndpoint::new(
                Role::Primary,
                &endpoint,
                &self.config,
                &self.clock,
                self.hooks.breaker.clone(),
                self.hooks.pool.clone(),
                self.hooks.topology.clone(),
            ),
        })
    }

    /// The nodes' settings with `addr` as the address.
    fn info_for(&self, addr: &NodeAddr) -> ConnectionInfo {
        let (host, port) = (addr.host.clone(), addr.port);
        let new_addr = match self.template.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        self.template.clone().set_addr(new_addr)
    }
}

/// `ERR This instance has cluster support disabled`: a standalone server.
fn is_cluster_disabled(e: &Error) -> bool {
    e.to_string().contains("cluster support disabled")
}

fn describe(r: &Redirect) -> String {
    match r {
        Redirect::Moved { slot, to } => format!("MOVED {slot} {to}"),
        Redirect::Ask { slot, to } => format!("ASK {slot} {to}"),
    }
}

/// How [`split`] groups a pipeline's commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grouping {
    /// One group per hash slot: a group's commands all move together, so
    /// a `MOVED` means none of them ran.
    Slot,
    /// One group per master now: fewer round trips, for commands safe to
    /// send twice (the reconciler's `DEL` and replayed `SET`).
    Node,
}

/// One part of a split pipeline.
pub(crate) struct Part {
    /// Indices of its commands in the original pipeline.
    pub(crate) indices: Vec<usize>,
    pub(crate) pipeline: redis::Pipeline,
    /// Its keys, every command's, in order.
    pub(crate) keys: Vec<Vec<u8>>,
}

impl ClusterTopology {
    /// The group a slot belongs to under `grouping`: the slot itself, or
    /// its master's shard index (slots not in the map keep their own
    /// group).
    fn group_of(&self, view: &View, slot: u16, grouping: Grouping) -> u32 {
        match grouping {
            Grouping::Slot => u32::from(slot),
            Grouping::Node => view
                .table
                .get(slot)
                .and_then(|i| u32::try_from(i).ok())
                .map_or(u32::from(slot).saturating_add(1 << 16), |i| i),
        }
    }

    /// Splits `pipeline` (not a transaction) by the slot of each command's
    /// first key; a keyless command goes with the first part. Parts come
    /// in the order of their first command. A command whose keys the
    /// client cannot tell is an [`ErrorKind::Unsupported`] error.
    pub(crate) fn split(
        &self,
        pipeline: &redis::Pipeline,
        grouping: Grouping,
    ) -> Result<Vec<Part>, Error> {
        use crate::consistency::{command_keys, CommandKeys};
        let view = self.view.read().clone();
        let mut parts: Vec<(Option<u32>, Part)> = Vec::new();
        for (index, cmd) in pipeline.cmd_iter().enumerate() {
            let keys = match command_keys(cmd) {
                CommandKeys::Known { keys, .. } => keys,
                CommandKeys::Unknown => {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        ErrorClass::Permanent,
                        format!(
                            "redis cluster: command #{index} of the pipeline is one whose keys the client cannot tell, so it cannot be routed to the node that owns them; send it alone with execute, or split the pipeline"
                        ),
                    )
                    .with_may_have_executed(false));
                }
            };
            let group = keys
                .first()
                .map(|k| self.group_of(&view, key_slot(k), grouping));
            let at = match group {
                None if !parts.is_empty() => 0,
                _ => match parts.iter().position(|(g, _)| g.is_some() && *g == group) {
                    Some(i) => i,
                    None => {
                        parts.push((
                            group,
                            Part {
                                indices: Vec::new(),
                                pipeline: redis::pipe(),
                                keys: Vec::new(),
                            },
                        ));
                        parts.len().saturating_sub(1)
                    }
                },
            };
            if let Some((g, part)) = parts.get_mut(at) {
                if g.is_none() {
                    *g = group;
                }
                part.indices.push(index);
                part.pipeline.add_command(cmd.clone());
                part.keys.extend(keys);
            }
        }
        Ok(parts.into_iter().map(|(_, p)| p).collect())
    }

    /// Sends `pipeline` split by `grouping`, each part to its master,
    /// and returns every command's reply in the original order (none
    /// ignored). Used by the reconciler, whose commands are safe to send
    /// again: a part that fails fails the whole.
    pub(crate) fn pipeline_by_slot(
        &self,
        pipeline: &redis::Pipeline,
        deadline: Option<Instant>,
    ) -> Result<Vec<Value>, Error> {
        let parts = self.split(pipeline, Grouping::Node)?;
        let mut replies = vec![Value::Nil; pipeline.len()];
        for part in parts {
            let keys: Vec<&[u8]> = part.keys.iter().map(Vec::as_slice).collect();
            let values = self.call(Route::keys(&keys, true), deadline, &mut |conn, _| {
                part.pipeline
                    .query::<Vec<Value>>(conn)
                    .map_err(Error::from_redis)
            })?;
            for (i, v) in part.indices.iter().zip(values) {
                if let Some(slot) = replies.get_mut(*i) {
                    *slot = v;
                }
            }
        }
        Ok(replies)
    }
}

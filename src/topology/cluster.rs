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
//! connect and one socket timeout ([`refresh`]).
//!
//! Multi-slot pipelines are split by [`split`]; reads may go to replicas
//! (`read_from_replicas`) for keys this process never wrote ([`written`]);
//! a master that fails has the keys it acknowledged lately distrusted on
//! its successor (as for sentinel, `topology::recent`).

pub(crate) mod redirect;
mod refresh;
pub(crate) mod shards;
pub(crate) mod slot;
mod split;
mod written;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redis::ConnectionInfo;

use self::redirect::{calls_for_refresh, is_single_reply, not_executed, redirect_of, Redirect};
use self::shards::{NodeAddr, Shard, SlotTable};
use self::slot::key_slot;
pub(crate) use self::split::Grouping;
use crate::breaker::BreakerState;
use crate::clock::SharedClock;
use crate::config::{Config, Endpoint};
use crate::error::{Error, ErrorClass, ErrorKind};
use crate::events::Bridge;
use crate::log_fields::{log_fields, Fields};
use crate::pool::PooledConnection;
use crate::router::{RedisEndpoint, Role};
use crate::topology::recent::{Key, RecentWrites};

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
    /// The cluster endpoint's events; each node's breaker names its node.
    bridge: Arc<Bridge>,
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
        bridge: Arc<Bridge>,
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
            bridge,
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

    /// Reads the slot map when the client has none yet (a split operation
    /// groups its slots by master before any call of its own), within the
    /// bound of a call's first read. A failure leaves it unknown: every
    /// slot is then a group of its own, and each part's call tries again.
    pub(crate) fn ensure_map(&self) {
        if self.view.read().assigned == 0 {
            let _ = self.discover(None);
        }
    }

    /// The index of the master serving `slot` now, in [`Self::masters`]'s
    /// order (`None` while no map names one).
    pub(crate) fn master_index(&self, slot: u16) -> Option<usize> {
        self.view.read().table.get(slot)
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
                Arc::new(self.bridge.for_node(addr.to_string())),
            ),
        })
    }

    /// The nodes' settings with `addr` as the address.
    fn info_for(&self, addr: &NodeAddr) -> ConnectionInfo {
        super::at_address(&self.template, addr.host.clone(), addr.port)
    }
}

fn describe(r: &Redirect) -> String {
    match r {
        Redirect::Moved { slot, to } => format!("MOVED {slot} {to}"),
        Redirect::Ask { slot, to } => format!("ASK {slot} {to}"),
    }
}

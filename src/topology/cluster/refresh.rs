//! Reading the slot map: the first map (by a caller), the background
//! refresh (periodic, or asked for by a call and rate-limited), the order
//! nodes are asked in, and installing a new map.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use redis::Value;

use super::shards::{self, parse_shards, parse_slots, NodeAddr, Shard, SlotTable};
use super::{slot, ClusterNode, ClusterTopology, RefreshState, View, REFRESH_EVERY, REFRESH_GAP};
use crate::breaker::BreakerState;
use crate::error::{Error, ErrorClass, ErrorKind};
use crate::log_fields::{log_fields, Fields};

impl ClusterTopology {
    /// The first map, read by a caller: one caller reads it, the others
    /// wait for its answer (never past their deadline, nor one connect
    /// and one socket timeout).
    pub(super) fn discover(&self, deadline: Option<Instant>) -> Result<(), Error> {
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
}

/// `ERR This instance has cluster support disabled`: a standalone server.
fn is_cluster_disabled(e: &Error) -> bool {
    e.to_string().contains("cluster support disabled")
}

//! What the client does differently on a Redis Cluster
//! (`redis+cluster://`): commands on keys of several hash slots are split
//! and their replies put back in the caller's order, and the slot map is
//! kept current on the background thread.
//!
//! Redis refuses a multi-key command whose keys are in different slots
//! (`CROSSSLOT`), even when one node serves them all, so every command
//! keeps to one slot: `mget` and `mset` send one pipeline of per-slot
//! `MGET`s or `MSET`s per master (a slot that moved under it is sent again
//! on its own: `MSET` is idempotent, and the parts that ran are only
//! written again with the same values); pipelines send one request per
//! slot. Parts go one after the other. The whole is therefore **not atomic**: an `mset`
//! across slots may be applied in part when it fails, and a pipeline's
//! parts are separate requests.

use redis::{ConnectionLike, FromRedisValue, Value};

use super::inner::{Fallback, Inner};
use super::Client;
use crate::consistency::{pipeline_keys, Access, CommandKeys, Mirror};
use crate::error::{Error, ErrorClass, ErrorKind};
use crate::fallback::MemoryStore;
use crate::retry::Idempotency;
use crate::router::{RedisEndpoint, Role, Router};
use crate::stats::Stats;
use crate::topology::cluster::slot::key_slot;
use crate::topology::cluster::{ClusterTopology, Grouping};

/// `f` on `endpoint`, or on each master of a cluster endpoint (then each
/// replica reads may go to) with its `host:port`: what `stats()` and
/// `health()` list.
pub(super) fn per_node<T>(
    endpoint: &RedisEndpoint,
    f: impl Fn(&RedisEndpoint, Option<String>) -> T,
) -> Vec<T> {
    let masters = endpoint.cluster().map(|c| c.masters()).unwrap_or_default();
    if masters.is_empty() {
        // Not a cluster, or no slot map yet.
        return vec![f(endpoint, None)];
    }
    let replicas = endpoint.cluster().map(|c| c.replicas()).unwrap_or_default();
    masters
        .iter()
        .chain(replicas.iter())
        .map(|n| f(&n.endpoint, Some(n.addr.to_string())))
        .collect()
}

/// The cluster counters in `stats`.
pub(super) fn fill_stats(router: &Router, stats: &mut Stats) {
    use std::sync::atomic::Ordering::Relaxed;
    for cluster in router.endpoints().filter_map(RedisEndpoint::cluster) {
        let c = &cluster.counts;
        stats.cluster_refreshes = stats
            .cluster_refreshes
            .saturating_add(c.refreshes.load(Relaxed));
        stats.cluster_refresh_failures = stats
            .cluster_refresh_failures
            .saturating_add(c.refresh_failures.load(Relaxed));
        stats.cluster_topology_changes = stats
            .cluster_topology_changes
            .saturating_add(c.changes.load(Relaxed));
        stats.cluster_slot_moves = stats
            .cluster_slot_moves
            .saturating_add(c.slot_moves.load(Relaxed));
        stats.cluster_moved = stats.cluster_moved.saturating_add(c.moved.load(Relaxed));
        stats.cluster_asks = stats.cluster_asks.saturating_add(c.asks.load(Relaxed));
    }
}

impl Inner {
    /// The cluster topology, when the primary (or else the secondary) is a
    /// `redis+cluster://` URL: multi-slot requests are split by slot then
    /// (harmless on a standalone server, needed on a cluster).
    pub(crate) fn cluster(&self) -> Option<&ClusterTopology> {
        let router = self.router.as_ref()?;
        router
            .primary
            .cluster()
            .or_else(|| router.secondary.as_ref().and_then(|s| s.cluster()))
    }

    /// The background thread's cluster work: a refresh of the slot map
    /// when one is due (see `topology::cluster`).
    pub(crate) fn cluster_tick(&self) {
        if let Some(router) = &self.router {
            for endpoint in router.endpoints() {
                if let Some(cluster) = endpoint.cluster() {
                    cluster.maintain();
                }
            }
        }
    }

    /// Marks `keys` stale on `role` (a cluster master failed over and
    /// its successor may lack them): each is deleted before it is served,
    /// and the reconciler deletes the rest.
    pub(crate) fn cluster_distrusted(&self, role: Role, keys: &[std::sync::Arc<[u8]>]) {
        let refused = self.consistency.mark_stale(role, keys);
        if refused > 0 {
            crate::log_fields::log_fields!(
                log::Level::Warn,
                crate::log_fields::Fields::new("cluster_distrust")
                    .count(refused as u64)
                    .at(role.as_str(), "none");
                "{refused} keys written to a failed redis cluster master could not be recorded for invalidation (the journal is full): reads of them may return older values"
            );
        }
    }

    /// Slot groups (see [`Inner::slot_groups`]) gathered by the master
    /// that serves them now (a slot no map names yet is a group of its
    /// own), in the order of their first key.
    pub(crate) fn by_master(&self, slots: Vec<(u16, Vec<usize>)>) -> Vec<Vec<Vec<usize>>> {
        if let Some(c) = self.cluster() {
            c.ensure_map();
        }
        let mut out: Vec<(Option<usize>, Vec<Vec<usize>>)> = Vec::new();
        for (slot, group) in slots {
            let master = self.cluster().and_then(|c| c.master_index(slot));
            match out
                .iter_mut()
                .find(|(m, _)| master.is_some() && *m == master)
            {
                Some((_, groups)) => groups.push(group),
                None => out.push((master, vec![group])),
            }
        }
        out.into_iter().map(|(_, g)| g).collect()
    }

    /// On a cluster, each hash slot of `keys` with the indices of its keys
    /// (in the order of their first key) when they span more than one
    /// slot; `None` otherwise (one slot, or not a cluster).
    pub(crate) fn slot_groups(&self, keys: &[&[u8]]) -> Option<Vec<(u16, Vec<usize>)>> {
        self.cluster()?;
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let slot = key_slot(key);
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, g)) => g.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
        (groups.len() > 1).then_some(groups)
    }

    /// A pipeline on a cluster whose keys span several slots: split by
    /// slot, each part tracked and routed as a pipeline of its own, the
    /// replies reassembled in order. `None` when the pipeline needs no
    /// split (not a cluster, or one slot).
    pub(crate) fn pipeline_across_slots<T: FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Option<Result<T, Error>> {
        let cluster = self.cluster()?;
        let slots = match pipeline_keys(pipe) {
            CommandKeys::Known { keys, .. } => {
                let mut slots: Vec<u16> = keys.iter().map(|k| key_slot(k)).collect();
                slots.sort_unstable();
                slots.dedup();
                slots.len()
            }
            CommandKeys::Unknown => usize::MAX,
        };
        if slots <= 1 {
            return None;
        }
        self.counters.requests.bump();
        let result = self.split_pipeline(cluster, pipe, slots);
        Some(result.map_err(|e| self.fail(e)))
    }

    fn split_pipeline<T: FromRedisValue>(
        &self,
        cluster: &ClusterTopology,
        pipe: &redis::Pipeline,
        slots: usize,
    ) -> Result<T, Error> {
        if pipe.is_transaction() {
            let what = if slots == usize::MAX {
                "commands whose keys the client cannot tell".to_string()
            } else {
                format!("keys in {slots} hash slots")
            };
            return Err(Error::new(
                ErrorKind::Unsupported,
                ErrorClass::Permanent,
                format!(
                    "redis cluster: a MULTI/EXEC transaction must keep to one hash slot, and this one has {what}; put its keys under one hash tag ({{user1}}:a, {{user1}}:b)"
                ),
            )
            .with_may_have_executed(false));
        }
        let kept = kept_replies(pipe);
        let parts = cluster.split(pipe, Grouping::Slot)?;
        let mut replies = vec![Value::Nil; pipe.len()];
        for part in parts {
            let keys: Vec<&[u8]> = part.keys.iter().map(Vec::as_slice).collect();
            let access = match pipeline_keys(&part.pipeline) {
                CommandKeys::Known {
                    read_only: true, ..
                } => Access::Read,
                _ => Access::Modify,
            };
            let idempotent = Idempotency::Auto.for_pipeline(&part.pipeline);
            let values = self.tracked(&keys, access, idempotent, Mirror::Forget, |c| {
                // Error replies stay in place, as redis-rs gives them for
                // a plain pipeline: collected below. The cluster's own
                // answers (MOVED, ASK, TRYAGAIN, ...) are the router's to
                // act on: one command's as its error, several commands'
                // as the pipeline error redis-rs would give (so that a
                // partly run part is never taken for one command).
                let packed = part.pipeline.get_packed_pipeline();
                let values = c
                    .req_packed_commands(&packed, 0, part.pipeline.len())
                    .map_err(Error::from_redis)?;
                let cluster_reply = values
                    .iter()
                    .any(|v| matches!(v, Value::ServerError(e) if is_cluster_reply(e.code())));
                match (cluster_reply, &values[..]) {
                    (false, _) => Ok(values),
                    (true, [Value::ServerError(e)]) => {
                        Err(Error::from_redis(redis::RedisError::from(e.clone())))
                    }
                    (true, _) => part
                        .pipeline
                        .query::<Vec<Value>>(&mut Replay(Some(values)))
                        .map_err(Error::from_redis),
                }
            })?;
            for (i, v) in part.indices.iter().zip(values) {
                if let Some(slot) = replies.get_mut(*i) {
                    *slot = v;
                }
            }
        }
        let errors: Vec<redis::RedisError> = replies
            .iter()
            .filter_map(|v| match v {
                Value::ServerError(e) => Some(redis::RedisError::from(e.clone())),
                _ => None,
            })
            .collect();
        if let Some(first) = errors.into_iter().next() {
            return Err(Error::from_redis(first));
        }
        let kept: Vec<Value> = replies
            .into_iter()
            .enumerate()
            .filter(|(i, _)| kept.get(*i).copied().unwrap_or(true))
            .map(|(_, v)| v)
            .collect();
        T::from_redis_value(Value::Array(kept)).map_err(|e| Error::from_redis(e.into()))
    }
}

/// The failure of a multi-slot `mset` part that met a slot moving under
/// it (see `Client::mset_groups`): some of its slots may be written, so it
/// is reported as possibly executed, then sent again one slot at a time.
/// Permanent so that it is neither retried as it is nor answered from
/// memory; never returned to a caller.
pub(super) fn slot_moved() -> Error {
    Error::new(
        ErrorKind::Server,
        ErrorClass::Permanent,
        "a hash slot of this mset moved or is moving (MOVED, ASK, TRYAGAIN, ...): sent again one slot at a time",
    )
    .with_may_have_executed(true)
    .resent_by_client()
}

/// `MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `LOADING`,
/// `READONLY`: answers about the cluster, not about the command.
pub(super) fn is_cluster_reply(code: &str) -> bool {
    matches!(
        code,
        "MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "LOADING" | "READONLY"
    )
}

/// Which replies of `pipe` its caller sees (`false` for an `ignore()`d
/// command): redis-rs keeps that to itself, so the pipeline is run
/// against a stand-in connection that answers each command with its own
/// index.
fn kept_replies(pipe: &redis::Pipeline) -> Vec<bool> {
    let numbers = (0..pipe.len())
        .map(|i| Value::Int(i64::try_from(i).unwrap_or(i64::MAX)))
        .collect();
    let mut kept = vec![false; pipe.len()];
    if let Ok(indices) = pipe.query::<Vec<i64>>(&mut Replay(Some(numbers))) {
        for i in indices {
            if let Some(k) = usize::try_from(i).ok().and_then(|i| kept.get_mut(i)) {
                *k = true;
            }
        }
    }
    kept
}

/// A stand-in connection that answers a pipeline with the replies it
/// holds (once), so that redis-rs composes its result, or its error, as it
/// would from a server.
struct Replay(Option<Vec<Value>>);

impl ConnectionLike for Replay {
    fn req_packed_command(&mut self, _: &[u8]) -> redis::RedisResult<Value> {
        Ok(Value::Nil)
    }
    fn req_packed_commands(
        &mut self,
        _: &[u8],
        _offset: usize,
        _count: usize,
    ) -> redis::RedisResult<Vec<Value>> {
        Ok(self.0.take().unwrap_or_default())
    }
    fn get_db(&self) -> i64 {
        0
    }
    fn check_connection(&mut self) -> bool {
        true
    }
    fn is_open(&self) -> bool {
        true
    }
}

impl Client {
    /// `mget` on a cluster with keys in several slots: per master, one
    /// pipeline of one `MGET` per slot (Redis refuses a multi-slot `MGET`
    /// even on one node); values put back in the caller's order. A slot
    /// whose `MGET` met the cluster's own answer (`MOVED`, `ASK`,
    /// `TRYAGAIN`: it moved or is moving) is read again on its own,
    /// through the redirect-following path.
    pub(super) fn mget_split<K: AsRef<[u8]>, V: FromRedisValue>(
        &self,
        keys: &[K],
        slots: Vec<(u16, Vec<usize>)>,
    ) -> Result<Vec<Option<V>>, Error> {
        let i = &*self.inner;
        let mut out: Vec<Option<V>> = (0..keys.len()).map(|_| None).collect();
        for node in i.by_master(slots) {
            let values = match &node[..] {
                [one] => vec![(one.clone(), None)],
                _ => self.mget_on_one_master(keys, &node)?,
            };
            for (slot, read) in values {
                let read = match read {
                    Some(read) => read,
                    // One slot (or one to read again): the full path.
                    None => {
                        let part: Vec<&[u8]> = slot
                            .iter()
                            .filter_map(|k| keys.get(*k).map(AsRef::as_ref))
                            .collect();
                        self.mget::<&[u8], V>(&part)?
                    }
                };
                for (k, v) in slot.into_iter().zip(read) {
                    if let Some(o) = out.get_mut(k) {
                        *o = v;
                    }
                }
            }
        }
        Ok(out)
    }

    /// One master's slots of an `mget`: each slot's values, or `None` for
    /// a slot to read again on its own.
    #[allow(clippy::type_complexity)]
    fn mget_on_one_master<K: AsRef<[u8]>, V: FromRedisValue>(
        &self,
        keys: &[K],
        slots: &[Vec<usize>],
    ) -> Result<Vec<(Vec<usize>, Option<Vec<Option<V>>>)>, Error> {
        let i = &*self.inner;
        let prefixed: Vec<Vec<std::borrow::Cow<'_, [u8]>>> = slots
            .iter()
            .map(|slot| {
                slot.iter()
                    .filter_map(|k| keys.get(*k).map(|k| i.key(k.as_ref())))
                    .collect()
            })
            .collect();
        let all: Vec<&[u8]> = prefixed.iter().flatten().map(|k| &k[..]).collect();
        let replies = i.cache_op(
            &all,
            Access::Read,
            true,
            Mirror::Forget,
            |c| {
                let mut pipe = redis::pipe();
                for slot in &prefixed {
                    let mget = pipe.cmd("MGET");
                    for k in slot {
                        mget.arg(&k[..]);
                    }
                }
                c.req_packed_commands(&pipe.get_packed_pipeline(), 0, pipe.len())
            },
            Fallback::Read(|m: &MemoryStore, now| {
                Ok(prefixed
                    .iter()
                    .map(|slot| {
                        Value::Array(
                            slot.iter()
                                .map(|k| m.get_vec_at(k, now).map_or(Value::Nil, Value::BulkString))
                                .collect(),
                        )
                    })
                    .collect::<Vec<Value>>())
            }),
        )?;
        let mut out = Vec::with_capacity(slots.len());
        let mut replies = replies.into_iter();
        for slot in slots {
            let values = match replies.next() {
                Some(Value::Array(items)) if items.len() == slot.len() => {
                    let mut values = Vec::with_capacity(items.len());
                    for item in items {
                        let bytes = match item {
                            Value::Nil => None,
                            Value::BulkString(b) => Some(b),
                            _ => {
                                return Err(i.fail(Error::new(
                                    ErrorKind::UnexpectedReply,
                                    ErrorClass::Permanent,
                                    "MGET returned a value that is neither a string nor nil",
                                )))
                            }
                        };
                        self.count_read(bytes.is_some());
                        values.push(
                            bytes
                                .map(|b| super::cache::convert(super::cache::unpack(&i.codec, b)))
                                .transpose()?,
                        );
                    }
                    Some(values)
                }
                // MOVED, ASK, TRYAGAIN, or a reply cut short: this slot
                // again, on its own.
                _ => None,
            };
            out.push((slot.clone(), values));
        }
        Ok(out)
    }

    /// `mset` on a cluster with keys in several slots (`entries` prefixed
    /// and encoded, `slots` their indices by slot): per master, one
    /// pipeline of one `MSET` per slot; when a slot moved or is moving
    /// under it, that master's slots again one at a time, through the
    /// redirect-following path. Not atomic: when one part fails, the parts
    /// before it stay written.
    pub(super) fn mset_split(
        &self,
        entries: &[(std::borrow::Cow<'_, [u8]>, Vec<u8>)],
        slots: Vec<(u16, Vec<usize>)>,
    ) -> Result<(), Error> {
        for node in self.inner.by_master(slots) {
            if node.len() > 1 {
                match self.mset_groups(entries, &node) {
                    Ok(()) => continue,
                    Err(e) if e.is_resent_by_client() => {}
                    Err(e) => return Err(e),
                }
            }
            for group in node {
                self.mset_groups(entries, std::slice::from_ref(&group))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::cluster::redirect::{is_single_reply, redirect_of};

    fn reply(raw: &[u8]) -> Value {
        match redis::parse_redis_value(raw) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn ignored_replies_are_found() {
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg("a").arg(1).ignore().cmd("GET").arg("a");
        assert_eq!(kept_replies(&pipe), vec![false, true]);
    }

    /// A part of several commands that met ASK is a pipeline error: never
    /// taken for one command's redirect (ASKING would cover one command).
    #[test]
    fn a_replayed_pipeline_error_is_not_a_single_reply() {
        let mut pipe = redis::pipe();
        pipe.cmd("INCR").arg("{a}1").cmd("INCR").arg("{a}2");
        let values = vec![Value::Int(1), reply(b"-ASK 1 127.0.0.1:7000\r\n")];
        let err = match pipe.query::<Vec<Value>>(&mut Replay(Some(values))) {
            Err(e) => Error::from_redis(e),
            Ok(v) => panic!("{v:?}"),
        };
        assert!(!is_single_reply(&err));
        assert!(redirect_of(&err).is_some());
        let single = Error::from_redis(redis::RedisError::from(
            match reply(b"-ASK 1 127.0.0.1:7000\r\n") {
                Value::ServerError(e) => e,
                v => panic!("{v:?}"),
            },
        ));
        assert!(is_single_reply(&single));
    }
}

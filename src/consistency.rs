//! The one state machine that keeps answers fresh across outages and
//! failovers: for every key whose freshest value is not simply "on the
//! primary", where it is, which places may hold an older value, and what
//! must be sent before such a place serves the key again.
//!
//! # The contract it keeps
//!
//! A read never returns a value older than the newest write to that key
//! that this process had acknowledged; a miss is always allowed. Values can
//! live in three places: the primary Redis, the secondary Redis (failover)
//! and the in-memory store (outage). A key with no entry here has its
//! freshest value on the primary, and the secondary holds nothing this
//! process wrote. An entry says:
//!
//! - `memory`: the newest acknowledged write was served from memory during
//!   an outage (the *outage journal*). Reads are served from memory until it
//!   is reconciled; a write that goes to Redis supersedes it.
//! - `stale_primary` / `stale_secondary`: that Redis may hold a value older
//!   than the newest acknowledged write. Before it serves the key (a read,
//!   or a write whose answer depends on the old value, such as `INCR`), the
//!   key is deleted there, in the same attempt on the same connection.
//! - `secondary_epoch`: the secondary holds a value written in that
//!   failover epoch. Once calls have switched back to the primary the value
//!   may become older than a primary write, so in any later epoch it counts
//!   as stale (the *failover journal*).
//!
//! Writes served from memory and writes sent to the secondary bump
//! counters in the entry; whoever cleans an entry (a caller's write or
//! invalidation, the background reconciler) clears a flag only if the
//! counters that could have set it again are still the ones it saw when it
//! started, so a write that raced with the cleaning is never forgotten. All of it happens
//! under the key's shard lock, and memory values are read and written under
//! the same lock, so reads and writes interleave with reconciliation,
//! failover and restore in only the ways checked by the model test.
//!
//! The record is made *before* a write is sent to the secondary or stored in
//! memory: a write this module could not record (the journal is full) is
//! refused rather than acknowledged.

mod command;
#[cfg(any(test, feature = "test-support"))]
pub(crate) mod model;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

pub(crate) use self::command::{command_keys, is_listed_command, pipeline_keys, CommandKeys};
use crate::error::{Error, ErrorClass, ErrorKind};
use crate::fallback::{Bytes, JournalOp, MemoryStore, Reconcile, SetOutcome};
use crate::key_hash::{Hashed, KeyHasher, KeyMap, MapKey};
use crate::router::Role;

/// Shards of the key map: enough that 16+ threads rarely meet on one lock.
/// A power of two (see [`Hashed::shard`]).
const SHARDS: usize = 16;

/// How an operation uses the keys it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Reads only.
    Read,
    /// Replaces the whole value whatever it was (`SET`, `MSET`): a stale
    /// copy needs no invalidation first, the write supersedes it.
    Overwrite,
    /// Depends on or keeps part of the old state (`INCR`, `EXPIRE`, `DEL`'s
    /// reply, `HSET`, scripts): a stale copy is deleted first.
    Modify,
}

/// What the write-through memory copy becomes when a write succeeds on
/// Redis. `values[i]` belongs to `keys[i]`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mirror<'a> {
    /// The memory copy is dropped: the client cannot tell the new value
    /// (`INCR`, `EXPIRE`, `DEL`, commands through `execute`).
    Forget,
    /// The memory copy becomes this value with this TTL.
    Set {
        values: &'a [&'a [u8]],
        ttl: Option<Duration>,
    },
}

#[derive(Debug, Default)]
struct KeyState {
    /// Bumped by every write served from memory: a cleaning that started
    /// before one must not clear what it recorded.
    memory_writes: u64,
    /// Bumped by every write sent to the secondary, likewise.
    secondary_writes: u64,
    /// The newest acknowledged write went to memory (and did this).
    memory: Option<JournalOp>,
    /// The primary may hold an older value than the newest write.
    stale_primary: bool,
    /// The secondary may hold an older value than the newest write.
    stale_secondary: bool,
    /// The failover epoch of the last write sent to the secondary; 0: none.
    secondary_epoch: u64,
    /// Writes in flight on Redis, and whether two of them overlapped
    /// (write-through: then Redis' order is unknown and the copy is dropped).
    in_flight: u32,
    contended: bool,
    /// Reconciler commands (a replay `SET` or a `DEL`) planned and not yet
    /// checked off: one may still land.
    replaying: u32,
    /// Bumped when a write overlapped a replay: the replay may have landed
    /// after it, so the endpoint is marked stale and the replay must not
    /// clear that.
    conflicts: u64,
    /// Bumped by [`Consistency::mark_stale`] (the Redis behind an endpoint
    /// changed and may have lost writes): an attempt or a reconciliation
    /// that started before must not clear the mark.
    marks: u64,
}

impl KeyState {
    fn is_clear(&self) -> bool {
        self.memory.is_none()
            && !self.stale_primary
            && !self.stale_secondary
            && self.secondary_epoch == 0
            && self.in_flight == 0
            && self.replaying == 0
    }

    /// Whether `role` may hold a value older than the newest write, in
    /// failover epoch `epoch`.
    fn stale_on(&self, role: Role, epoch: u64) -> bool {
        match role {
            Role::Primary => self.stale_primary,
            Role::Secondary => {
                // A value from a later epoch than the caller saw is newer
                // than its view, never stale.
                self.stale_secondary || (self.secondary_epoch != 0 && self.secondary_epoch < epoch)
            }
        }
    }
}

type Shard = KeyMap<KeyState>;

/// What one attempt on an endpoint must send first, and what it must check
/// off when it is done. Empty (no allocation) on the fast path.
#[derive(Debug, Default)]
pub(crate) struct Ticket {
    /// Every key to check off, with what `begin` saw.
    keys: Vec<Seen>,
    /// Sent before the operation on the same connection: `DEL` of stale
    /// keys, or the reconciliation of journaled ones.
    prepare: Option<redis::Pipeline>,
    /// In-flight counts were taken (must be given back).
    writes: bool,
    role: Option<Role>,
    access: Option<Access>,
}

impl Ticket {
    /// Commands to send before the operation, if any.
    pub(crate) fn prepare(&self) -> Option<&redis::Pipeline> {
        self.prepare.as_ref()
    }
}

/// What `begin` saw of one key, for `finish`.
#[derive(Debug)]
struct Seen {
    /// Index into the operation's keys.
    index: usize,
    memory_writes: u64,
    secondary_writes: u64,
    /// A reconciler replay was in flight when this write began.
    overlapped_replay: bool,
    /// The attempt's own `prepare` replays the memory value.
    replays: bool,
    /// `KeyState::marks` seen.
    marks: u64,
}

/// How the attempt ended, for [`Consistency::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The `prepare` commands were acknowledged.
    pub(crate) prepared: bool,
    /// The operation itself was acknowledged.
    pub(crate) done: bool,
}

/// One key of a reconciliation batch.
#[derive(Debug)]
struct Planned {
    key: Bytes,
    memory_writes: u64,
    secondary_writes: u64,
    conflicts: u64,
    marks: u64,
    /// A journaled (memory) key, rather than only a stale copy.
    journaled: bool,
    /// Replayed with `SET` (else deleted).
    replayed: bool,
}

/// A batch of keys the background reconciler sends to one endpoint.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) role: Role,
    pub(crate) pipeline: redis::Pipeline,
    planned: Vec<Planned>,
}

impl Batch {
    /// Keys in the batch.
    pub(crate) fn len(&self) -> usize {
        self.planned.len()
    }

    /// Journaled (memory) keys in the batch, as opposed to stale copies.
    pub(crate) fn journaled(&self) -> usize {
        self.planned.iter().filter(|p| p.journaled).count()
    }
}

/// The per-key consistency state of one client; see the module docs.
pub(crate) struct Consistency {
    shards: Box<[Mutex<Shard>]>,
    hasher: KeyHasher,
    /// Entries in all shards: 0 lets every call skip the locks.
    tracked: AtomicUsize,
    max_keys: usize,
    /// Bytes the tracked keys take (their length plus [`KEY_OVERHEAD`]),
    /// and the bound on it: the journal's share of the fallback's byte
    /// bound (see [`journal_bytes`]).
    key_bytes: AtomicUsize,
    max_key_bytes: usize,
    mode: Reconcile,
    write_through: bool,
    has_secondary: bool,
    /// Writes refused because the journal was full.
    refused: AtomicU64,
}

impl std::fmt::Debug for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys may be sensitive: counts only.
        f.debug_struct("Consistency")
            .field("tracked", &self.len())
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

impl Consistency {
    /// State for a client tracking at most `max_keys` keys taking at most
    /// `max_key_bytes` bytes.
    pub(crate) fn new(
        max_keys: usize,
        max_key_bytes: usize,
        mode: Reconcile,
        write_through: bool,
        has_secondary: bool,
    ) -> Consistency {
        Consistency {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: KeyHasher::new(),
            tracked: AtomicUsize::new(0),
            max_keys: max_keys.max(1),
            key_bytes: AtomicUsize::new(0),
            max_key_bytes: max_key_bytes.max(1),
            mode,
            write_through,
            has_secondary,
            refused: AtomicU64::new(0),
        }
    }

    /// `key` hashed once, for both its shard and the shard's map.
    fn hashed<'k>(&self, key: &'k [u8]) -> Hashed<'k> {
        self.hasher.hashed(key)
    }

    fn shard_of(&self, key: &Hashed<'_>) -> usize {
        key.shard(self.shards.len())
    }

    fn lock(&self, key: &Hashed<'_>) -> MutexGuard<'_, Shard> {
        self.shards[self.shard_of(key)].lock()
    }

    /// Keys tracked (journaled, or stale somewhere).
    pub(crate) fn len(&self) -> usize {
        self.tracked.load(Ordering::Acquire)
    }

    /// Keys tracked because their newest value is in memory (the outage
    /// journal).
    pub(crate) fn journaled(&self) -> usize {
        if self.len() == 0 {
            return 0;
        }
        self.shards
            .iter()
            .map(|s| s.lock().values().filter(|e| e.memory.is_some()).count())
            .sum()
    }

    /// How journaled keys are reconciled.
    pub(crate) fn mode(&self) -> Reconcile {
        self.mode
    }

    /// Writes refused because the journal was full.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// `true` when one of `keys` has its newest value in memory: a read is
    /// served from there until reconciliation.
    pub(crate) fn reads_from_memory(&self, keys: &[&[u8]]) -> bool {
        if self.len() == 0 {
            return false;
        }
        keys.iter().any(|k| {
            let k = self.hashed(k);
            self.lock(&k)
                .get(k.view())
                .is_some_and(|e| e.memory.is_some())
        })
    }

    fn journal_full(&self, what: &str) -> Error {
        self.refused.fetch_add(1, Ordering::Relaxed);
        Error::new(
            ErrorKind::JournalFull,
            ErrorClass::Permanent,
            format!(
                "not written: {what}, and the journal that keeps later reads from seeing older values is full ({} keys, {} bytes of keys at most)",
                self.max_keys, self.max_key_bytes
            ),
        )
    }

    fn insert<'s>(&self, shard: &'s mut Shard, key: &Hashed<'_>) -> Option<&'s mut KeyState> {
        if !shard.contains_key(key.view()) {
            let cost = key_cost(key.bytes);
            if self.len() >= self.max_keys
                || self.key_bytes.load(Ordering::Acquire).saturating_add(cost) > self.max_key_bytes
            {
                return None;
            }
            self.tracked.fetch_add(1, Ordering::AcqRel);
            self.key_bytes.fetch_add(cost, Ordering::AcqRel);
            shard.insert(MapKey(Arc::from(key.bytes)), KeyState::default());
        }
        shard.get_mut(key.view())
    }

    fn remove_if_clear(&self, shard: &mut Shard, key: &Hashed<'_>) {
        if shard.get(key.view()).is_some_and(KeyState::is_clear) {
            shard.remove(key.view());
            self.tracked.fetch_sub(1, Ordering::AcqRel);
            self.key_bytes
                .fetch_sub(key_cost(key.bytes), Ordering::AcqRel);
        }
    }

    /// Called by an attempt on `role` right before it sends an operation
    /// on `keys`: records a write to the secondary (before it is sent) and
    /// write-through bookkeeping, and says what must be sent first.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::JournalFull`] when a write to the secondary cannot be
    /// recorded; nothing is sent then.
    pub(crate) fn begin(
        &self,
        keys: &[&[u8]],
        role: Role,
        epoch: u64,
        access: Access,
        memory: Option<&MemoryStore>,
    ) -> Result<Ticket, Error> {
        let writes = access != Access::Read;
        let records = writes && (role == Role::Secondary || self.write_through);
        if !records && self.len() == 0 {
            return Ok(Ticket::default());
        }
        let mut ticket = Ticket {
            writes,
            role: Some(role),
            access: Some(access),
            ..Ticket::default()
        };
        let mut prepare = redis::pipe();
        let mut prepared = 0usize;
        for (i, key) in keys.iter().enumerate() {
            let hashed = self.hashed(key);
            let mut shard = self.lock(&hashed);
            let entry = if records {
                match self.insert(&mut shard, &hashed) {
                    Some(e) => e,
                    None => {
                        drop(shard);
                        // Keys recorded before this one stay recorded:
                        // harmless, they only cost an invalidation.
                        self.undo_in_flight(keys, &ticket);
                        return Err(self.journal_full("the primary is unavailable"));
                    }
                }
            } else {
                match shard.get_mut(hashed.view()) {
                    Some(e) => e,
                    None => continue,
                }
            };
            if access != Access::Overwrite && entry.replaying > 0 {
                // A reconciler `DEL` or replay in flight may land after
                // this command: after a read's own invalidation (the older
                // replayed value would be read), or after an `INCR` (a
                // count restarted). Not sent; retried after a backoff, and
                // a read is served from memory if that does not end it. A
                // plain overwrite may race it: it marks the key stale.
                drop(shard);
                self.undo_in_flight(keys, &ticket);
                return Err(Error::new(
                    ErrorKind::Connection,
                    ErrorClass::Transient,
                    "not sent: the key is being reconciled with redis; retried",
                )
                .with_counts_against_breaker(false));
            }
            let journaled = entry.memory.is_some() && access == Access::Modify;
            let stale = access != Access::Overwrite && entry.stale_on(role, epoch);
            let overlapped_replay = writes && entry.replaying > 0;
            let mut replays = false;
            if journaled {
                // Replaying the memory value races any other write in
                // flight (it may land after a newer one): delete instead.
                let op = if entry.in_flight == 0 {
                    entry.memory
                } else {
                    Some(JournalOp::Delete)
                };
                replays = self.push_reconcile(&mut prepare, key, op, memory);
                if replays {
                    entry.replaying += 1;
                }
                prepared += 1;
            } else if stale {
                prepare.cmd("DEL").arg(*key).ignore();
                prepared += 1;
            }
            if writes {
                if role == Role::Secondary {
                    entry.secondary_writes += 1;
                    entry.stale_primary = true;
                    // Until this write lands, the secondary still holds the
                    // older epoch's value: keep it known as stale.
                    if entry.secondary_epoch != 0 && entry.secondary_epoch < epoch {
                        entry.stale_secondary = true;
                    }
                    entry.secondary_epoch = epoch;
                }
                entry.in_flight += 1;
                entry.contended |= entry.in_flight > 1;
            }
            if writes || journaled || stale || entry.memory.is_some() {
                ticket.keys.push(Seen {
                    index: i,
                    memory_writes: entry.memory_writes,
                    secondary_writes: entry.secondary_writes,
                    overlapped_replay,
                    replays,
                    marks: entry.marks,
                });
            }
        }
        if prepared > 0 {
            ticket.prepare = Some(prepare);
        }
        Ok(ticket)
    }

    /// Gives back the in-flight counts of a ticket that will not be sent.
    fn undo_in_flight(&self, keys: &[&[u8]], ticket: &Ticket) {
        for seen in &ticket.keys {
            let Some(key) = keys.get(seen.index) else {
                continue;
            };
            let key = self.hashed(key);
            let mut shard = self.lock(&key);
            if let Some(e) = shard.get_mut(key.view()) {
                if seen.replays {
                    e.replaying = e.replaying.saturating_sub(1);
                }
                if ticket.writes {
                    e.in_flight = e.in_flight.saturating_sub(1);
                    if e.in_flight == 0 {
                        e.contended = false;
                    }
                }
            }
            self.remove_if_clear(&mut shard, &key);
        }
    }

    /// The command that reconciles a journaled key: the memory value
    /// written back (`Replay`), or a `DEL`.
    fn push_reconcile(
        &self,
        pipe: &mut redis::Pipeline,
        key: &[u8],
        op: Option<JournalOp>,
        memory: Option<&MemoryStore>,
    ) -> bool {
        let replay = match (self.mode, op, memory) {
            (Reconcile::Replay, Some(JournalOp::Set), Some(m)) => m.entry_for_replay(key),
            _ => None,
        };
        match replay {
            // A TTL that ran out to zero is a delete, not a SET without expiry.
            Some((value, ttl)) if ttl != Some(Duration::ZERO) => {
                pipe.cmd("SET").arg(key).arg(&value[..]);
                if let Some(ttl) = ttl {
                    pipe.arg("PX").arg(millis_at_least_one(ttl));
                }
                pipe.ignore();
                true
            }
            _ => {
                pipe.cmd("DEL").arg(key).ignore();
                false
            }
        }
    }

    /// Called by the attempt that got `ticket` from [`Consistency::begin`]
    /// once it knows how it ended: clears what its writes or invalidations
    /// made fresh (only if no other change raced with it) and keeps the
    /// write-through memory copy in Redis' order.
    pub(crate) fn finish(
        &self,
        ticket: Ticket,
        keys: &[&[u8]],
        outcome: Outcome,
        mirror: Mirror<'_>,
        memory: Option<&MemoryStore>,
    ) {
        // The fast path's empty ticket has nothing to check off.
        let (Some(role), Some(access)) = (ticket.role, ticket.access) else {
            return;
        };
        let write_done = access != Access::Read && outcome.done;
        for seen in ticket.keys {
            let Seen {
                index: i,
                memory_writes,
                secondary_writes,
                overlapped_replay,
                replays,
                marks,
            } = seen;
            let Some(key) = keys.get(i) else { continue };
            let hashed = self.hashed(key);
            let mut shard = self.lock(&hashed);
            let Some(entry) = shard.get_mut(hashed.view()) else {
                continue;
            };
            // Writes to the primary never race with a cleaning: whichever
            // Redis applies last is the newest. A write served from memory
            // or sent to the secondary since `begin` does.
            let unchanged = entry.memory_writes == memory_writes;
            let secondary_unchanged = entry.secondary_writes == secondary_writes;
            // A mark made since `begin` says this endpoint's server may have
            // changed under the attempt: its answer does not clear it.
            let unmarked = entry.marks == marks;
            // Once acknowledged, the invalidation or the write leaves this
            // endpoint without an older value.
            let fresh = (ticket.prepare.is_some() && outcome.prepared) || write_done;
            if unchanged && fresh {
                match role {
                    Role::Primary if secondary_unchanged && unmarked => entry.stale_primary = false,
                    Role::Primary => {}
                    Role::Secondary if !unmarked => {}
                    Role::Secondary => {
                        entry.stale_secondary = false;
                        if access == Access::Read && secondary_unchanged {
                            // Deleted there, and nothing written since.
                            entry.secondary_epoch = 0;
                        }
                    }
                }
                if entry.memory.take().is_some() && !self.write_through {
                    if let Some(m) = memory {
                        m.delete(key);
                    }
                }
            }
            if overlapped_replay && fresh {
                // The replay of an older value may land after this write.
                match role {
                    Role::Primary => entry.stale_primary = true,
                    Role::Secondary => entry.stale_secondary = true,
                }
                entry.conflicts += 1;
            }
            if replays {
                entry.replaying = entry.replaying.saturating_sub(1);
            }
            if ticket.writes {
                entry.in_flight = entry.in_flight.saturating_sub(1);
            }
            if ticket.writes && self.write_through {
                if let Some(m) = memory {
                    // A journaled value in memory is newer than this write.
                    if entry.memory.is_none() {
                        match mirror {
                            Mirror::Set { values, ttl }
                                if write_done && unchanged && !entry.contended =>
                            {
                                let stored = values
                                    .get(i)
                                    .is_some_and(|v| m.set(key, v, ttl) == SetOutcome::Stored);
                                if !stored {
                                    m.delete(key);
                                }
                            }
                            // Unknown value or unknown order: forget it.
                            _ => {
                                m.delete(key);
                            }
                        }
                    }
                }
                if entry.in_flight == 0 {
                    entry.contended = false;
                }
            }
            self.remove_if_clear(&mut shard, &hashed);
        }
    }

    /// Serves a write from memory while Redis is unavailable: records every
    /// key as journaled (and stale in Redis) and runs `op` on the store, all
    /// under the keys' locks.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::JournalFull`] when a key cannot be recorded (nothing is
    /// written then), or `op`'s error.
    pub(crate) fn write_to_memory<T>(
        &self,
        keys: &[&[u8]],
        op: JournalOp,
        memory: &MemoryStore,
        write: impl FnOnce(&MemoryStore) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let hashed: Vec<Hashed<'_>> = keys.iter().map(|k| self.hashed(k)).collect();
        let mut indices: Vec<usize> = hashed.iter().map(|k| self.shard_of(k)).collect();
        indices.sort_unstable();
        indices.dedup();
        // In index order, so two multi-key writes never deadlock.
        let mut guards: Vec<(usize, MutexGuard<'_, Shard>)> = indices
            .iter()
            .map(|&i| (i, self.shards[i].lock()))
            .collect();
        let (mut new_keys, mut new_bytes) = (0usize, 0usize);
        for key in &hashed {
            let i = self.shard_of(key);
            if let Some((_, g)) = guards.iter().find(|(j, _)| *j == i) {
                if !g.contains_key(key.view()) {
                    new_keys += 1;
                    new_bytes = new_bytes.saturating_add(key_cost(key.bytes));
                }
            }
        }
        if self.len().saturating_add(new_keys) > self.max_keys
            || self
                .key_bytes
                .load(Ordering::Acquire)
                .saturating_add(new_bytes)
                > self.max_key_bytes
        {
            return Err(self.journal_full("redis is unavailable"));
        }
        for key in &hashed {
            let i = self.shard_of(key);
            let Some((_, g)) = guards.iter_mut().find(|(j, _)| *j == i) else {
                continue;
            };
            // Another thread may have filled the journal since the count:
            // keys recorded so far stay recorded (an extra invalidation).
            let Some(entry) = self.insert(g, key) else {
                return Err(self.journal_full("redis is unavailable"));
            };
            entry.memory_writes += 1;
            entry.memory = Some(op);
            entry.stale_primary = true;
            if self.has_secondary && entry.secondary_epoch != 0 {
                entry.stale_secondary = true;
            }
        }
        write(memory)
    }

    /// The server behind `role` changed (a sentinel master switch) and may
    /// not hold the newest acknowledged writes of `keys`: each is deleted
    /// there before it serves the key again (by the next attempt on it, or
    /// the background reconciler), and no attempt or reconciliation that
    /// started before this clears that. Returns how many keys could not be
    /// recorded because the journal is full.
    pub(crate) fn mark_stale(&self, role: Role, keys: &[Arc<[u8]>]) -> usize {
        let mut refused = 0usize;
        for key in keys {
            let key = self.hashed(key);
            let mut shard = self.lock(&key);
            let Some(entry) = self.insert(&mut shard, &key) else {
                refused += 1;
                continue;
            };
            entry.marks += 1;
            match role {
                Role::Primary => entry.stale_primary = true,
                Role::Secondary => entry.stale_secondary = true,
            }
        }
        refused
    }

    /// An acknowledged write whose keys the client cannot tell went to the
    /// primary: it may have overwritten any journaled key, so every
    /// journaled memory value is dropped (reads miss until reconciled).
    pub(crate) fn forget_memory_values(&self, memory: Option<&MemoryStore>) {
        if self.len() == 0 {
            return;
        }
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            for (key, entry) in shard.iter_mut() {
                if entry.memory.is_some() {
                    entry.memory_writes += 1;
                    if let Some(m) = memory {
                        m.delete(&key.0);
                    }
                }
            }
        }
    }

    /// Up to `limit` keys the reconciler should send to `role` now:
    /// journaled keys when `role` is the `active` endpoint (replayed or
    /// deleted), and keys stale there (deleted).
    pub(crate) fn plan(
        &self,
        role: Role,
        active: bool,
        epoch: u64,
        limit: usize,
        memory: Option<&MemoryStore>,
    ) -> Option<Batch> {
        if self.len() == 0 {
            return None;
        }
        let mut pipeline = redis::pipe();
        let mut planned = Vec::new();
        'shards: for shard in self.shards.iter() {
            let mut shard = shard.lock();
            for (key, entry) in shard.iter_mut() {
                if planned.len() >= limit {
                    break 'shards;
                }
                let journaled = active && entry.memory.is_some();
                let stale = match role {
                    Role::Primary => entry.stale_primary,
                    // Calls switched back: every value written there up to
                    // `epoch` may be older than a primary write. Not one
                    // written since: calls may have switched to the
                    // secondary again after `epoch` was read.
                    Role::Secondary if !active => {
                        entry.stale_secondary
                            || (entry.secondary_epoch != 0 && entry.secondary_epoch <= epoch)
                    }
                    Role::Secondary => entry.stale_on(role, epoch),
                };
                // A write in flight may land before the reconciler's
                // command: a `DEL` would restart an `INCR`'s count, a replay
                // would overwrite a newer value. Left for the next pass.
                if (!journaled && !stale) || entry.in_flight > 0 {
                    continue;
                }
                let replayed = if journaled {
                    self.push_reconcile(&mut pipeline, &key.0, entry.memory, memory)
                } else {
                    pipeline.cmd("DEL").arg(&key.0[..]).ignore();
                    false
                };
                entry.replaying += 1;
                if replayed && role == Role::Secondary {
                    // Recorded before it is sent, like every write to the
                    // secondary: even if its check-off is skipped, the value
                    // there is known to exist and turns stale with the epoch.
                    entry.secondary_epoch = entry.secondary_epoch.max(epoch);
                }
                planned.push(Planned {
                    key: key.0.clone(),
                    memory_writes: entry.memory_writes,
                    secondary_writes: entry.secondary_writes,
                    conflicts: entry.conflicts,
                    marks: entry.marks,
                    journaled,
                    replayed,
                });
            }
        }
        (!planned.is_empty()).then_some(Batch {
            role,
            pipeline,
            planned,
        })
    }

    /// The reconciler's batch could not be sent (or its reply was lost):
    /// its keys stay as they are, but their replays are no longer pending.
    /// A replay that may have landed leaves the endpoint marked stale.
    pub(crate) fn abandon(&self, batch: Batch) {
        for p in batch.planned {
            let key = self.hashed(&p.key);
            let mut shard = self.lock(&key);
            if let Some(entry) = shard.get_mut(key.view()) {
                entry.replaying = entry.replaying.saturating_sub(1);
                if !p.replayed {
                    continue;
                }
                match batch.role {
                    Role::Primary => entry.stale_primary = true,
                    Role::Secondary => entry.stale_secondary = true,
                }
                entry.conflicts += 1;
            }
        }
    }

    /// The reconciler's batch was acknowledged by its endpoint (in failover
    /// epoch `epoch`): checks its keys off, unless they changed meanwhile.
    pub(crate) fn reconciled(&self, batch: Batch, epoch: u64, memory: Option<&MemoryStore>) {
        for p in batch.planned {
            let key = self.hashed(&p.key);
            let mut shard = self.lock(&key);
            let Some(entry) = shard.get_mut(key.view()) else {
                continue;
            };
            entry.replaying = entry.replaying.saturating_sub(1);
            if entry.memory_writes != p.memory_writes
                || entry.secondary_writes != p.secondary_writes
                || entry.conflicts != p.conflicts
                || entry.marks != p.marks
            {
                self.remove_if_clear(&mut shard, &key);
                continue;
            }
            match batch.role {
                Role::Primary => entry.stale_primary = false,
                Role::Secondary => {
                    entry.stale_secondary = false;
                    entry.secondary_epoch = if p.replayed { epoch } else { 0 };
                }
            }
            if p.journaled && entry.memory.take().is_some() && !self.write_through {
                if let Some(m) = memory {
                    m.delete(&p.key);
                }
            }
            self.remove_if_clear(&mut shard, &key);
        }
    }
}

/// What one tracked key costs against the journal's byte bound, beyond
/// its own bytes: the map slot, the shared pointer and the state.
pub(crate) const KEY_OVERHEAD: usize = 96;

fn key_cost(key: &[u8]) -> usize {
    key.len().saturating_add(KEY_OVERHEAD)
}

/// The journal's share of the fallback's byte bound: a quarter. The memory
/// store gets the rest, so that the store's values and the journal's keys
/// together stay within `fallback_max_bytes`.
pub(crate) fn journal_bytes(fallback_max_bytes: usize) -> usize {
    (fallback_max_bytes / 4).max(1)
}

/// `ttl` in whole milliseconds, at least 1 (a `PX 0` is an error).
fn millis_at_least_one(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

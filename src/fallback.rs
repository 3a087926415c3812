//! The in-memory fallback: a bounded LRU + TTL store that answers cache
//! operations while Redis is unavailable, and the outage journal that keeps
//! Redis from serving stale values once it is back.
//!
//! - [`MemoryStore`]: bounded by entries and bytes, sharded, TTLs read from
//!   the injected clock.
//! - [`OutageJournal`]: the keys written or deleted during the outage.
//! - [`Reconcile`] and [`reconcile_action`]: what recovery sends to Redis for
//!   each journaled key.

mod journal;
mod shard;
mod store;

use std::time::Duration;

pub use journal::{Drained, JournalEntry, JournalOp, OutageJournal, DEFAULT_JOURNAL_KEYS};
pub use shard::ENTRY_OVERHEAD;
pub use store::{MemoryStore, SetOutcome, StoreStats, MAX_SHARDS};

pub(crate) use shard::{entry_size as shard_entry_size, Bytes};

/// How keys changed during an outage are reconciled with Redis when it is
/// healthy again, before normal traffic resumes for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Reconcile {
    /// Delete each journaled key in Redis, so the next read misses and the
    /// caller repopulates it. Never serves an outage-time value from Redis,
    /// and never resurrects one that the fallback has since evicted. The
    /// default.
    #[default]
    Invalidate,
    /// Write the outage-time value back to Redis with its remaining TTL; a
    /// key deleted during the outage, or no longer in the fallback (evicted
    /// or expired), is deleted in Redis instead.
    Replay,
}

/// What reconciliation sends to Redis for one journaled key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReconcileAction {
    /// `DEL key`.
    Delete(Bytes),
    /// `SET key value [PX ttl]`.
    Set {
        /// The key.
        key: Bytes,
        /// The value the fallback holds.
        value: Bytes,
        /// Remaining time to live; `None` for no expiry.
        ttl: Option<Duration>,
    },
}

/// The command that reconciles `entry` under `mode`, reading the value to
/// replay from `store`.
pub fn reconcile_action(
    mode: Reconcile,
    entry: &JournalEntry,
    store: &MemoryStore,
) -> ReconcileAction {
    let replay = match (mode, entry.op) {
        (Reconcile::Replay, JournalOp::Set) => store.entry_for_replay(&entry.key),
        _ => None,
    };
    match replay {
        // A TTL that ran out to zero is a delete, not a SET without expiry.
        Some((value, ttl)) if ttl != Some(Duration::ZERO) => ReconcileAction::Set {
            key: entry.key.clone(),
            value,
            ttl,
        },
        _ => ReconcileAction::Delete(entry.key.clone()),
    }
}

#[cfg(test)]
mod tests;

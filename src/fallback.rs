//! The in-memory fallback: a bounded LRU + TTL store that answers cache
//! operations while Redis is unavailable.
//!
//! - [`MemoryStore`]: bounded by entries and bytes, sharded, TTLs read from
//!   the injected clock.
//! - [`Reconcile`]: what recovery sends to Redis for each key written during
//!   an outage (the journal itself is `crate::consistency`).

mod journal;
mod shard;
mod store;

pub use journal::JournalOp;
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

#[cfg(test)]
mod tests;

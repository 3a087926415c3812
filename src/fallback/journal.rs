//! The outage journal: which keys were written or deleted while Redis was
//! unavailable, so that recovery can make Redis forget (or learn) them
//! before it serves them again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::shard::Bytes;

/// Keys a journal holds unless told otherwise: the default entry bound of
/// the fallback store, since every journaled set is also a store entry.
pub const DEFAULT_JOURNAL_KEYS: usize = 10_000;

/// The last operation recorded for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalOp {
    /// The key was written (set, incremented, given a TTL) in the fallback.
    Set,
    /// The key was deleted in the fallback.
    Delete,
}

/// One journaled key and its last operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    /// The key, as sent to Redis (prefix included).
    pub key: Bytes,
    /// What happened to it last.
    pub op: JournalOp,
}

/// What [`OutageJournal::drain`] hands to reconciliation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drained {
    /// Journaled keys in the order they were first recorded.
    pub entries: Vec<JournalEntry>,
    /// Keys that changed but could not be recorded because the journal was
    /// full. Non-zero means `entries` is incomplete: Redis may still hold
    /// pre-outage values for keys that are not listed.
    pub dropped: u64,
}

impl Drained {
    /// `true` when some changed keys were not recorded.
    pub fn overflowed(&self) -> bool {
        self.dropped > 0
    }
}

#[derive(Default)]
struct Inner {
    positions: HashMap<Bytes, usize>,
    entries: Vec<JournalEntry>,
    /// Dropped since the last drain.
    dropped: u64,
}

/// A bounded, thread-safe record of keys changed during an outage, last
/// operation per key winning.
///
/// # Overflow
///
/// When `max_keys` distinct keys are recorded, further *new* keys are not
/// recorded (already recorded keys still update). Each such key is counted
/// ([`OutageJournal::overflow_total`], [`Drained::dropped`]), the first one
/// of an outage is logged at WARN, and [`OutageJournal::overflowed`] stays
/// `true` until the next drain. An overflowed journal cannot guarantee "no
/// stale reads": the keys it missed may still hold their pre-outage values in
/// Redis. Whoever reconciles must then do something conservative (delete the
/// whole key prefix, or report the gap), as [`Drained::overflowed`] tells it.
pub struct OutageJournal {
    inner: Mutex<Inner>,
    max_keys: usize,
    overflow_total: AtomicU64,
}

impl std::fmt::Debug for OutageJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys may be sensitive: show counts only.
        f.debug_struct("OutageJournal")
            .field("len", &self.len())
            .field("max_keys", &self.max_keys)
            .field("overflow_total", &self.overflow_total())
            .finish()
    }
}

impl Default for OutageJournal {
    fn default() -> Self {
        Self::new(DEFAULT_JOURNAL_KEYS)
    }
}

impl OutageJournal {
    /// A journal holding up to `max_keys` distinct keys (at least 1).
    pub fn new(max_keys: usize) -> Self {
        OutageJournal {
            inner: Mutex::new(Inner::default()),
            max_keys: max_keys.max(1),
            overflow_total: AtomicU64::new(0),
        }
    }

    fn record(&self, key: &[u8], op: JournalOp) {
        let mut inner = self.inner.lock();
        if let Some(&pos) = inner.positions.get(key) {
            if let Some(e) = inner.entries.get_mut(pos) {
                e.op = op;
            }
            return;
        }
        if inner.entries.len() >= self.max_keys {
            inner.dropped += 1;
            let first = inner.dropped == 1;
            drop(inner);
            self.overflow_total.fetch_add(1, Ordering::Relaxed);
            if first {
                log::warn!(
                    "outage journal full ({} keys): further keys changed during the outage \
                     are not recorded and may read stale after recovery",
                    self.max_keys
                );
            }
            return;
        }
        let key: Bytes = Arc::from(key);
        let pos = inner.entries.len();
        inner.positions.insert(key.clone(), pos);
        inner.entries.push(JournalEntry { key, op });
    }

    /// Records that `key` was written while Redis was unavailable.
    pub fn record_set(&self, key: &[u8]) {
        self.record(key, JournalOp::Set);
    }

    /// Records that `key` was deleted while Redis was unavailable.
    pub fn record_delete(&self, key: &[u8]) {
        self.record(key, JournalOp::Delete);
    }

    /// Takes every entry and the overflow count since the last drain,
    /// leaving the journal empty and not overflowed.
    pub fn drain(&self) -> Drained {
        let mut inner = self.inner.lock();
        let taken = std::mem::take(&mut *inner);
        Drained {
            entries: taken.entries,
            dropped: taken.dropped,
        }
    }

    /// The last operation recorded for `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<JournalOp> {
        let inner = self.inner.lock();
        let pos = *inner.positions.get(key)?;
        inner.entries.get(pos).map(|e| e.op)
    }

    /// `true` when `key` is journaled: reconciliation must run for it
    /// before Redis serves it again.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.inner.lock().positions.contains_key(key)
    }

    /// Distinct keys recorded.
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }

    /// `true` when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key bound.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// `true` when a key was dropped since the last drain.
    pub fn overflowed(&self) -> bool {
        self.inner.lock().dropped > 0
    }

    /// Keys dropped for lack of room over the journal's life.
    pub fn overflow_total(&self) -> u64 {
        self.overflow_total.load(Ordering::Relaxed)
    }
}

//! One shard of the memory store: a slab-backed doubly linked LRU list, a
//! key index, TTLs and byte accounting. Not synchronised; the store wraps
//! each shard in a mutex.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::key_hash::{Hashed, KeyHasher, KeyMap, MapKey};

/// Keys and values as stored: shared, so a read clones a pointer under the
/// lock instead of copying the bytes.
pub(crate) type Bytes = Arc<[u8]>;

/// Bytes charged per entry on top of its key and value: an estimate of the
/// bookkeeping (slab node, index slot, two reference-counted allocations).
pub const ENTRY_OVERHEAD: usize = 128;

/// Expired slots examined per write, so expired entries that are never read
/// again do not hold memory forever while bounding the work of one call.
const SWEEP_PER_WRITE: usize = 4;

const NIL: usize = usize::MAX;

/// What one entry costs against the byte budget.
pub(crate) fn entry_size(key_len: usize, value_len: usize) -> usize {
    key_len
        .saturating_add(value_len)
        .saturating_add(ENTRY_OVERHEAD)
}

fn is_expired(expires_at: Option<Instant>, now: Instant) -> bool {
    expires_at.is_some_and(|at| at <= now)
}

/// Remaining time to live, `None` for a key without expiry.
pub(crate) fn remaining(expires_at: Option<Instant>, now: Instant) -> Option<Duration> {
    expires_at.map(|at| at.saturating_duration_since(now))
}

struct Node {
    key: Bytes,
    value: Bytes,
    expires_at: Option<Instant>,
    prev: usize,
    next: usize,
}

/// Per-shard counters; summed by the store on request. Plain integers:
/// they are only touched under the shard's lock, so no shared cache line.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub hits: u64,
    pub misses: u64,
    pub sets: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub rejected_too_large: u64,
}

pub(crate) struct Shard {
    /// Searched with the key's hash, computed once by the store.
    index: KeyMap<usize>,
    slots: Vec<Option<Node>>,
    free: Vec<usize>,
    /// Most recently used.
    head: usize,
    /// Least recently used: the next to evict.
    tail: usize,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
    /// Largest single entry, the same for every shard of a store.
    max_entry: usize,
    sweep_cursor: usize,
    pub(crate) counters: Counters,
}

impl Shard {
    pub(crate) fn new(max_entries: usize, max_bytes: usize, max_entry: usize) -> Self {
        Shard {
            index: KeyMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes,
            max_entry: max_entry.min(max_bytes),
            sweep_cursor: 0,
            counters: Counters::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    fn node(&self, idx: usize) -> Option<&Node> {
        self.slots.get(idx).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, idx: usize) -> Option<&mut Node> {
        self.slots.get_mut(idx).and_then(Option::as_mut)
    }

    fn unlink(&mut self, idx: usize) {
        let Some((prev, next)) = self.node(idx).map(|n| (n.prev, n.next)) else {
            return;
        };
        match self.node_mut(prev) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.node_mut(next) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    fn push_front(&mut self, idx: usize) {
        let old_head = self.head;
        if let Some(n) = self.node_mut(idx) {
            n.prev = NIL;
            n.next = old_head;
        }
        match self.node_mut(old_head) {
            Some(h) => h.prev = idx,
            None => self.tail = idx,
        }
        self.head = idx;
    }

    fn touch(&mut self, idx: usize) {
        if self.head != idx {
            self.unlink(idx);
            self.push_front(idx);
        }
    }

    fn remove_at(&mut self, idx: usize) -> Option<Node> {
        self.unlink(idx);
        let node = self.slots.get_mut(idx)?.take()?;
        // Evictions and sweeps do not know the hash: computed again here
        // rather than stored in every entry.
        self.index.remove(KeyHasher::new().hashed(&node.key).view());
        self.free.push(idx);
        self.bytes = self
            .bytes
            .saturating_sub(entry_size(node.key.len(), node.value.len()));
        Some(node)
    }

    /// The slot of `key` if it is present and not expired; an expired entry
    /// is removed on the way (lazy expiry).
    fn live(&mut self, key: Hashed<'_>, now: Instant) -> Option<usize> {
        let idx = *self.index.get(key.view())?;
        let expired = is_expired(self.node(idx)?.expires_at, now);
        if expired {
            self.remove_at(idx);
            self.counters.expirations += 1;
            return None;
        }
        Some(idx)
    }

    pub(crate) fn get(&mut self, key: Hashed<'_>, now: Instant) -> Option<Bytes> {
        self.get_with(key, now, Bytes::clone)
    }

    /// [`Shard::get`], handing the value to `f` instead of cloning it.
    pub(crate) fn get_with<R>(
        &mut self,
        key: Hashed<'_>,
        now: Instant,
        f: impl FnOnce(&Bytes) -> R,
    ) -> Option<R> {
        match self.live(key, now) {
            Some(idx) => {
                self.touch(idx);
                self.counters.hits += 1;
                self.node(idx).map(|n| f(&n.value))
            }
            None => {
                self.counters.misses += 1;
                None
            }
        }
    }

    /// The value and expiry of a live entry, without touching LRU order.
    pub(crate) fn peek(
        &mut self,
        key: Hashed<'_>,
        now: Instant,
    ) -> Option<(Bytes, Option<Instant>)> {
        let idx = self.live(key, now)?;
        self.node(idx).map(|n| (n.value.clone(), n.expires_at))
    }

    /// Stores `value` under `key`. Returns `false`, and removes any previous
    /// value of `key` (a later read must not see it), when the entry alone
    /// exceeds this shard's byte budget.
    pub(crate) fn insert(
        &mut self,
        key: Hashed<'_>,
        value: Bytes,
        expires_at: Option<Instant>,
        now: Instant,
    ) -> bool {
        let size = entry_size(key.bytes.len(), value.len());
        if size > self.max_entry {
            self.reject(key, now);
            return false;
        }
        let existing = self.index.get(key.view()).copied();
        let idx = match existing {
            Some(idx) => {
                if let Some(n) = self.slots.get_mut(idx).and_then(Option::as_mut) {
                    let old = entry_size(n.key.len(), n.value.len());
                    n.value = value;
                    n.expires_at = expires_at;
                    self.bytes = self.bytes.saturating_sub(old).saturating_add(size);
                }
                self.touch(idx);
                idx
            }
            None => {
                let key: Bytes = Arc::from(key.bytes);
                let node = Node {
                    key: key.clone(),
                    value,
                    expires_at,
                    prev: NIL,
                    next: NIL,
                };
                let idx = match self.free.pop() {
                    Some(idx) => {
                        if let Some(slot) = self.slots.get_mut(idx) {
                            *slot = Some(node);
                        }
                        idx
                    }
                    None => {
                        self.slots.push(Some(node));
                        self.slots.len() - 1
                    }
                };
                self.index.insert(MapKey(key), idx);
                self.bytes = self.bytes.saturating_add(size);
                self.push_front(idx);
                idx
            }
        };
        self.counters.sets += 1;
        self.evict_to_fit(idx, now);
        self.sweep(SWEEP_PER_WRITE, now);
        true
    }

    /// Counts a refused write and removes the key's previous value.
    pub(crate) fn reject(&mut self, key: Hashed<'_>, now: Instant) {
        self.remove(key, now);
        self.counters.rejected_too_large += 1;
    }

    /// Evicts from the LRU end until both bounds hold. `keep` (the entry
    /// just written, at the MRU end) is never evicted: it fits on its own.
    fn evict_to_fit(&mut self, keep: usize, now: Instant) {
        while self.index.len() > self.max_entries || self.bytes > self.max_bytes {
            let victim = self.tail;
            if victim == keep || victim == NIL {
                break;
            }
            if let Some(node) = self.remove_at(victim) {
                if is_expired(node.expires_at, now) {
                    self.counters.expirations += 1;
                } else {
                    self.counters.evictions += 1;
                }
            }
        }
    }

    /// Removes expired entries among the next `budget` slots of the slab,
    /// resuming where the previous sweep stopped. Returns how many went.
    pub(crate) fn sweep(&mut self, budget: usize, now: Instant) -> usize {
        let len = self.slots.len();
        if len == 0 {
            return 0;
        }
        let mut removed = 0;
        for _ in 0..budget.min(len) {
            let idx = self.sweep_cursor % len;
            self.sweep_cursor = idx + 1;
            let expired = self
                .node(idx)
                .is_some_and(|n| is_expired(n.expires_at, now));
            if expired && self.remove_at(idx).is_some() {
                self.counters.expirations += 1;
                removed += 1;
            }
        }
        removed
    }

    /// Removes every expired entry.
    pub(crate) fn purge(&mut self, now: Instant) -> usize {
        self.sweep(self.slots.len(), now)
    }

    pub(crate) fn remove(&mut self, key: Hashed<'_>, now: Instant) -> bool {
        match self.live(key, now) {
            Some(idx) => self.remove_at(idx).is_some(),
            None => false,
        }
    }

    pub(crate) fn contains(&mut self, key: Hashed<'_>, now: Instant) -> bool {
        self.live(key, now).is_some()
    }

    /// Sets the expiry of a live entry; `false` when the key is missing.
    pub(crate) fn set_expiry(
        &mut self,
        key: Hashed<'_>,
        expires_at: Option<Instant>,
        now: Instant,
    ) -> bool {
        let Some(idx) = self.live(key, now) else {
            return false;
        };
        if let Some(n) = self.node_mut(idx) {
            n.expires_at = expires_at;
        }
        true
    }

    pub(crate) fn clear(&mut self) {
        self.index.clear();
        self.slots.clear();
        self.free.clear();
        self.head = NIL;
        self.tail = NIL;
        self.bytes = 0;
        self.sweep_cursor = 0;
    }

    /// Live entries, most recently used first.
    pub(crate) fn live_entries(
        &self,
        now: Instant,
        out: &mut Vec<(Bytes, Bytes, Option<Duration>)>,
    ) {
        let mut idx = self.head;
        // Bounded by the slab size even if the links were ever corrupted.
        for _ in 0..self.slots.len() {
            let Some(n) = self.node(idx) else { break };
            if !is_expired(n.expires_at, now) {
                out.push((n.key.clone(), n.value.clone(), remaining(n.expires_at, now)));
            }
            idx = n.next;
        }
    }
}

//! The keys this process has written, so that reads from replicas never
//! break read-your-writes: a key in here is read from its master.
//!
//! Kept as 64-bit hashes in a bounded set: a collision only sends one more
//! read to a master. Once the set is full, every read goes to the masters
//! (the set can no longer tell which keys were written), and the client
//! says so once.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// Distinct keys remembered (about 16 bytes each).
pub(crate) const CAPACITY: usize = 1 << 18;

const SHARDS: usize = 16;

/// See the module docs.
pub(crate) struct Written {
    shards: Box<[Mutex<HashSet<u64>>]>,
    /// A fixed hasher: the same key always hashes alike.
    hasher: BuildHasherDefault<DefaultHasher>,
    full: AtomicBool,
}

impl Written {
    pub(crate) fn new() -> Written {
        Written {
            shards: (0..SHARDS).map(|_| Mutex::new(HashSet::new())).collect(),
            hasher: BuildHasherDefault::default(),
            full: AtomicBool::new(false),
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn shard(&self, hash: u64) -> &Mutex<HashSet<u64>> {
        let i = usize::try_from(hash % SHARDS as u64).unwrap_or(0);
        &self.shards[i.min(SHARDS - 1)]
    }

    /// Notes `keys` as written (before the write is sent).
    pub(crate) fn insert(&self, keys: &[&[u8]]) {
        if self.full.load(Ordering::Relaxed) {
            return;
        }
        for key in keys {
            let h = self.hash(key);
            let mut shard = self.shard(h).lock();
            if shard.len() >= CAPACITY / SHARDS && !shard.contains(&h) {
                drop(shard);
                if !self.full.swap(true, Ordering::Relaxed) {
                    crate::log_fields::log_fields!(
                        log::Level::Warn,
                        crate::log_fields::Fields::new("read_from_replicas");
                        "redis cluster: more than {CAPACITY} distinct keys written by this process; from now on every read goes to the masters (read_from_replicas can no longer tell which keys this process wrote)"
                    );
                }
                return;
            }
            shard.insert(h);
        }
    }

    /// `true` when a replica may serve a read of `keys`: none was written
    /// by this process.
    pub(crate) fn none_written(&self, keys: &[&[u8]]) -> bool {
        if self.full.load(Ordering::Relaxed) {
            return false;
        }
        keys.iter().all(|key| {
            let h = self.hash(key);
            !self.shard(h).lock().contains(&h)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_keys_are_remembered() {
        let w = Written::new();
        assert!(w.none_written(&[b"a", b"b"]));
        w.insert(&[b"a"]);
        assert!(!w.none_written(&[b"b", b"a"]));
        assert!(w.none_written(&[b"b"]));
    }
}

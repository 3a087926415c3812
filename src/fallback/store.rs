//! The bounded, sharded in-memory store that answers while Redis is
//! unavailable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::shard::{entry_size, remaining, Bytes, Shard};
use crate::key_hash::{Hashed, KeyHasher};
use crate::{Config, Error, ErrorClass, ErrorKind, SharedClock};

/// Most shards a store is split into.
pub const MAX_SHARDS: usize = 64;
/// Shards chosen when the bounds allow it (see [`MemoryStore::new`]).
const DEFAULT_SHARDS: usize = 16;
/// Smallest share of the entry bound a shard gets when the count is chosen
/// automatically, so that per-shard LRU stays close to global LRU.
const MIN_ENTRIES_PER_SHARD: usize = 64;
/// Smallest share of the byte bound a shard gets when the count is chosen
/// automatically; it is also the largest value such a store accepts.
const MIN_BYTES_PER_SHARD: usize = 1 << 20;

/// Values up to this size are copied out under the shard lock by
/// [`MemoryStore::get_vec_at`]: a copy this small costs about what sharing
/// the value would (an atomic increment under the lock, a decrement after
/// it), and saves those two. Larger values are shared and copied after the
/// lock is released, so that no read holds a shard for long.
const COPY_UNDER_LOCK: usize = 512;

/// Whether [`MemoryStore::set`] stored the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum SetOutcome {
    /// Stored; older entries may have been evicted to make room.
    Stored,
    /// The entry is larger than [`MemoryStore::max_entry_size`]: it was not
    /// stored, nothing was evicted for it, and any previous value of the key
    /// was removed so that no read returns it.
    TooLarge,
}

/// Counters and gauges of a [`MemoryStore`], summed over its shards.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Reads that found a live entry.
    pub hits: u64,
    /// Reads that found nothing (or an expired entry).
    pub misses: u64,
    /// Values stored (sets and increments).
    pub sets: u64,
    /// Live entries removed to respect the bounds.
    pub evictions: u64,
    /// Expired entries removed (on access, by sweeping or at eviction).
    pub expirations: u64,
    /// Values refused by [`MemoryStore::set`] for being too large.
    pub rejected_too_large: u64,
    /// Entries held now, including expired ones not yet swept.
    pub entries: usize,
    /// Bytes charged now: key + value + [`super::ENTRY_OVERHEAD`] per entry.
    pub bytes: usize,
}

/// Keeps each shard's lock on its own cache lines, so threads working on
/// different shards do not contend through false sharing.
#[repr(align(128))]
struct Padded(Mutex<Shard>);

/// A bounded LRU + TTL map of byte keys to byte values, safe to share
/// between threads.
///
/// Bounds: at most `max_entries` entries and `max_bytes` bytes, where an
/// entry costs its key and value lengths plus [`super::ENTRY_OVERHEAD`].
/// The store is split into shards by key hash, each with an equal share of
/// both bounds and its own LRU list, so eviction is least-recently-used
/// within a shard (approximately LRU overall) and a single entry larger than
/// one shard's byte share is refused ([`SetOutcome::TooLarge`]).
///
/// TTLs are read from the injected clock. Expired entries are removed when
/// touched, when found at the LRU end, by a bounded sweep on every write,
/// and by [`MemoryStore::purge_expired`].
pub struct MemoryStore {
    shards: Box<[Padded]>,
    hasher: KeyHasher,
    clock: SharedClock,
    max_entries: usize,
    max_bytes: usize,
    max_entry_size: usize,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys and values may be sensitive: show sizes only.
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("max_entries", &self.max_entries)
            .field("max_bytes", &self.max_bytes)
            .field("entries", &self.len())
            .field("bytes", &self.bytes())
            .finish()
    }
}

fn integer_error(message: &str) -> Error {
    // The same reply Redis would give, so callers see one behaviour
    // whether Redis or the fallback answered.
    Error::new(
        ErrorKind::Server,
        ErrorClass::Permanent,
        format!("in-memory fallback replied {message}"),
    )
}

/// Parses a value the way Redis' `string2ll` does: optional `-`, decimal
/// digits, no `+`, no leading zeros, no spaces, no `-0`.
pub(crate) fn parse_redis_i64(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let valid = match digits {
        [] => false,
        [b'0'] => bytes.len() == 1,
        [first, rest @ ..] => (b'1'..=b'9').contains(first) && rest.iter().all(u8::is_ascii_digit),
    };
    if !valid || bytes.len() > 20 {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

impl MemoryStore {
    /// A store bounded by `max_entries` and `max_bytes` (each at least 1),
    /// split into up to 16 shards: as many as keep at least 64 entries and
    /// 1 MiB per shard. With [`Config`]'s defaults (10 000 entries, 64 MiB)
    /// that is 16 shards and a largest entry of 4 MiB.
    pub fn new(max_entries: usize, max_bytes: usize, clock: SharedClock) -> Self {
        let mut shards = DEFAULT_SHARDS;
        while shards > 1
            && (max_entries / shards < MIN_ENTRIES_PER_SHARD
                || max_bytes / shards < MIN_BYTES_PER_SHARD)
        {
            shards /= 2;
        }
        Self::with_shards(max_entries, max_bytes, shards, clock)
    }

    /// A store with the bounds and clock of `config`.
    pub fn from_config(config: &Config, clock: SharedClock) -> Self {
        Self::new(
            config.fallback_max_entries,
            config.fallback_max_bytes,
            clock,
        )
    }

    /// A store with an explicit shard count, rounded down to a power of two
    /// and limited to [`MAX_SHARDS`] and to `max_entries` (every shard holds
    /// at least one entry).
    pub fn with_shards(
        max_entries: usize,
        max_bytes: usize,
        shards: usize,
        clock: SharedClock,
    ) -> Self {
        let max_entries = max_entries.max(1);
        let max_bytes = max_bytes.max(1);
        let wanted = shards.clamp(1, MAX_SHARDS).min(max_entries);
        // Largest power of two not above `wanted`.
        let n = 1usize << (usize::BITS - 1 - wanted.leading_zeros());
        // Spread the remainders so the shares add up to the bounds exactly.
        let share = |total: usize, i: usize| total / n + usize::from(i < total % n);
        let shards: Box<[Padded]> = (0..n)
            .map(|i| {
                Padded(Mutex::new(Shard::new(
                    share(max_entries, i),
                    share(max_bytes, i),
                    max_bytes / n,
                )))
            })
            .collect();
        MemoryStore {
            shards,
            hasher: KeyHasher::new(),
            clock,
            max_entries,
            max_bytes,
            max_entry_size: max_bytes / n,
        }
    }

    /// `key` hashed once, for both its shard and the shard's index.
    fn hashed<'k>(&self, key: &'k [u8]) -> Hashed<'k> {
        self.hasher.hashed(key)
    }

    fn shard(&self, key: Hashed<'_>) -> &Mutex<Shard> {
        // `shards.len()` is a power of two.
        &self.shards[key.shard(self.shards.len())].0
    }

    fn deadline(now: Instant, ttl: Option<Duration>) -> Option<Instant> {
        // A TTL too large to represent never expires rather than panicking.
        ttl.and_then(|ttl| now.checked_add(ttl))
    }

    /// The value of `key`, if present and not expired; marks it most
    /// recently used. Counts a hit or a miss.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        let key = self.hashed(key);
        let now = self.clock.now();
        self.shard(key).lock().get(key, now)
    }

    /// [`MemoryStore::get`] at `now`, an instant the caller read from this
    /// store's clock for the same call (one clock read per call served
    /// from memory, not one per step), as a copy of the value: what a
    /// caller of the client receives.
    pub(crate) fn get_vec_at(&self, key: &[u8], now: Instant) -> Option<Vec<u8>> {
        let key = self.hashed(key);
        let found = self.shard(key).lock().get_with(key, now, |v| {
            if v.len() <= COPY_UNDER_LOCK {
                Ok(v.to_vec())
            } else {
                Err(v.clone())
            }
        });
        // The lock is released: the large value is copied now.
        found.map(|v| v.unwrap_or_else(|shared| shared.to_vec()))
    }

    /// Stores `value` under `key`, replacing any previous value and TTL;
    /// `ttl: None` keeps it until evicted. The value is copied before the
    /// lock is taken.
    pub fn set(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> SetOutcome {
        let key = self.hashed(key);
        let now = self.clock.now();
        if entry_size(key.bytes.len(), value.len()) > self.max_entry_size {
            // Not copied; the old value goes so that no read returns it.
            self.shard(key).lock().reject(key, now);
            return SetOutcome::TooLarge;
        }
        let value: Bytes = Arc::from(value);
        if self
            .shard(key)
            .lock()
            .insert(key, value, Self::deadline(now, ttl), now)
        {
            SetOutcome::Stored
        } else {
            SetOutcome::TooLarge
        }
    }

    /// Removes `key`; `true` when a live entry was removed.
    pub fn delete(&self, key: &[u8]) -> bool {
        let key = self.hashed(key);
        let now = self.clock.now();
        self.shard(key).lock().remove(key, now)
    }

    /// `true` when `key` holds a live entry. Does not change LRU order.
    pub fn exists(&self, key: &[u8]) -> bool {
        let key = self.hashed(key);
        let now = self.clock.now();
        self.shard(key).lock().contains(key, now)
    }

    /// Sets the time to live of an existing key, like Redis `EXPIRE`: a zero
    /// TTL deletes it. `false` when the key is missing.
    pub fn expire(&self, key: &[u8], ttl: Duration) -> bool {
        let key = self.hashed(key);
        let now = self.clock.now();
        let mut shard = self.shard(key).lock();
        if ttl.is_zero() {
            return shard.remove(key, now);
        }
        shard.set_expiry(key, Self::deadline(now, Some(ttl)), now)
    }

    /// Removes the expiry of `key`, like Redis `PERSIST`. `false` when the
    /// key is missing.
    pub fn persist(&self, key: &[u8]) -> bool {
        let key = self.hashed(key);
        let now = self.clock.now();
        self.shard(key).lock().set_expiry(key, None, now)
    }

    /// The remaining time to live: `None` when the key is missing,
    /// `Some(None)` when it has no expiry (Redis' `-2` and `-1`).
    pub fn ttl(&self, key: &[u8]) -> Option<Option<Duration>> {
        let key = self.hashed(key);
        let now = self.clock.now();
        let (_, expires_at) = self.shard(key).lock().peek(key, now)?;
        Some(remaining(expires_at, now))
    }

    /// Adds `delta` to the integer stored at `key`, like Redis `INCRBY`: a
    /// missing key counts as 0, the TTL is kept, the result is stored as
    /// decimal text and returned.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Server`] (permanent), with Redis' own wording, when the
    /// value is not a decimal 64-bit integer (`ERR value is not an integer or
    /// out of range`) or the result overflows (`ERR increment or decrement
    /// would overflow`); the value is then unchanged. [`ErrorKind::InvalidInput`]
    /// when the key alone is too large for the store.
    pub fn incr_by(&self, key: &[u8], delta: i64) -> Result<i64, Error> {
        let key = self.hashed(key);
        let now = self.clock.now();
        let mut shard = self.shard(key).lock();
        let (current, expires_at) = match shard.peek(key, now) {
            Some((value, expires_at)) => match parse_redis_i64(&value) {
                Some(n) => (n, expires_at),
                None => return Err(integer_error("ERR value is not an integer or out of range")),
            },
            None => (0, None),
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| integer_error("ERR increment or decrement would overflow"))?;
        let text: Bytes = Arc::from(next.to_string().as_bytes());
        if shard.insert(key, text, expires_at, now) {
            Ok(next)
        } else {
            Err(Error::invalid_input(format!(
                "key of {} bytes is too large for the in-memory fallback",
                key.bytes.len()
            )))
        }
    }

    /// What a replay needs: the live value of `key` and its remaining TTL
    /// (`None` = no expiry). Does not count as a read or change LRU order.
    pub fn entry_for_replay(&self, key: &[u8]) -> Option<(Bytes, Option<Duration>)> {
        let key = self.hashed(key);
        let now = self.clock.now();
        let (value, expires_at) = self.shard(key).lock().peek(key, now)?;
        Some((value, remaining(expires_at, now)))
    }

    /// Removes every expired entry, one shard at a time; returns how many.
    /// For a maintenance thread: normal operations already sweep a little.
    pub fn purge_expired(&self) -> usize {
        let now = self.clock.now();
        self.shards.iter().map(|s| s.0.lock().purge(now)).sum()
    }

    /// Removes every entry. Counters are kept.
    pub fn clear(&self) {
        for s in self.shards.iter() {
            s.0.lock().clear();
        }
    }

    /// Entries held, including expired ones not yet swept.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().len()).sum()
    }

    /// `true` when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged against `max_bytes` now.
    pub fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().bytes()).sum()
    }

    /// The entry bound.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The byte bound.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The largest entry (key + value + overhead) accepted: one shard's
    /// share of the byte bound.
    pub fn max_entry_size(&self) -> usize {
        self.max_entry_size
    }

    /// How many shards the store is split into.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Counters and gauges, summed over the shards (each shard is read
    /// under its lock; the sum is not one atomic snapshot).
    pub fn stats(&self) -> StoreStats {
        let mut st = StoreStats::default();
        for s in self.shards.iter() {
            let s = s.0.lock();
            let c = s.counters;
            st.hits += c.hits;
            st.misses += c.misses;
            st.sets += c.sets;
            st.evictions += c.evictions;
            st.expirations += c.expirations;
            st.rejected_too_large += c.rejected_too_large;
            st.entries += s.len();
            st.bytes += s.bytes();
        }
        st
    }

    /// A copy of the live entries as `(key, value, remaining TTL)`, most
    /// recently used first within each shard. O(n), locks one shard at a
    /// time: for diagnostics and consistency checks, not for hot paths.
    pub fn entries(&self) -> Vec<(Bytes, Bytes, Option<Duration>)> {
        let now = self.clock.now();
        let mut out = Vec::new();
        for s in self.shards.iter() {
            s.0.lock().live_entries(now, &mut out);
        }
        out
    }
}

//! One hash per key per structure: a fast keyed hash of a key's bytes,
//! used both to pick a shard and, through [`KeyMap`], as the map's own
//! hash, so a lookup in the journal or the memory store hashes the key once
//! instead of twice (shard, then map).
//!
//! # Why not std's `RandomState`
//!
//! SipHash-1-3 took about 200 instructions for a 10-byte key, four times a
//! `get` served from memory: a third of the call (issue #12). This hash
//! (the wyhash/foldhash construction: 64×64→128-bit multiplies of the key's
//! words xored with secret seeds, the two halves folded) takes a few dozen.
//!
//! # Why still seeded
//!
//! Keys come from the application, and often from its users: a hash
//! anyone could compute would let a client of the application send keys
//! that all land in one shard and one probe sequence. The seeds are drawn
//! once per process from std's `RandomState` (the OS generator) and never
//! leave it, so colliding keys cannot be chosen without them; that is the
//! protection of `foldhash` and `ahash`'s fallback, weaker than SipHash's
//! (no proof, only no known seed-independent collision), and enough for a
//! bounded cache whose maps hold at most `fallback_max_entries` keys.
//!
//! # Shard bits
//!
//! std's `HashMap` (hashbrown) takes the bucket from the hash's low bits
//! and a 7-bit tag from its top bits. A shard chosen from either would
//! leave every key of a shard with the same low bits (most buckets never
//! used) or the same tag bits (more false matches), so the shard comes
//! from bits 48 and up, which neither uses for maps under 2^48 buckets.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::OnceLock;

use crate::fallback::Bytes;

/// Where the shard index starts in a hash; see the module docs.
const SHARD_SHIFT: u32 = 48;

/// The process's seeds, drawn once.
static SEEDS: OnceLock<[u64; 3]> = OnceLock::new();

fn seeds() -> [u64; 3] {
    *SEEDS.get_or_init(|| {
        // Each `RandomState` is keyed from the OS generator; three hashes
        // of distinct values are three independent 64-bit secrets.
        let s = RandomState::new();
        [s.hash_one(1u64), s.hash_one(2u64), s.hash_one(3u64)]
    })
}

/// The 128-bit product of `a` and `b`, its halves xored: the mixing step
/// of wyhash and foldhash (the middle bits of a product depend on most
/// bits of both factors; the fold brings them to both ends).
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let full = u128::from(a) * u128::from(b);
    (full as u64) ^ ((full >> 64) as u64)
}

/// Two words that together hold every byte of `rest` (shorter than 16),
/// read as overlapping little-endian loads (wyhash's way): with the length
/// hashed separately, two tails of one length give the same words only if
/// they are equal. Loads, not a copy into a zeroed buffer: the copy's
/// stores stalled the wide load that followed (store forwarding), a fifth
/// of a lookup.
#[inline]
fn tail(rest: &[u8]) -> (u64, u64) {
    let n = rest.len();
    if n >= 8 {
        (word8(rest, 0), word8(rest, n - 8))
    } else if n >= 4 {
        (word4(rest, 0), word4(rest, n - 4))
    } else if n > 0 {
        let byte = |i: usize| u64::from(rest.get(i).copied().unwrap_or(0));
        ((byte(0) << 16) | (byte(n / 2) << 8) | byte(n - 1), 0)
    } else {
        (0, 0)
    }
}

/// The 8 bytes of `bytes` at `at`, little-endian; 0 past the end (never:
/// the callers stay inside).
#[inline]
fn word8(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at.saturating_add(8))
        .and_then(|c| <[u8; 8]>::try_from(c).ok())
        .map_or(0, u64::from_le_bytes)
}

/// The 4 bytes of `bytes` at `at`, as [`word8`].
#[inline]
fn word4(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at.saturating_add(4))
        .and_then(|c| <[u8; 4]>::try_from(c).ok())
        .map_or(0, |c| u64::from(u32::from_le_bytes(c)))
}

/// The keyed hash of a key's bytes. A copy of the process's seeds, so a
/// structure holding one hashes without touching the `OnceLock`; every
/// `KeyHasher` of a process hashes alike.
#[derive(Clone, Copy)]
pub(crate) struct KeyHasher {
    seeds: [u64; 3],
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seeds are the whole protection: never shown.
        f.write_str("KeyHasher")
    }
}

impl KeyHasher {
    /// The process's hasher.
    pub(crate) fn new() -> KeyHasher {
        KeyHasher { seeds: seeds() }
    }

    /// The hash of `key`.
    #[inline]
    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        let [k0, k1, k2] = self.seeds;
        // The length goes in first: a key and the same key with trailing
        // zero bytes (the padding below) hash apart.
        let mut h = k0 ^ (key.len() as u64);
        let (blocks, rest) = key.as_chunks::<16>();
        for block in blocks {
            let v = u128::from_le_bytes(*block);
            h = fold_mul((v as u64) ^ k1, ((v >> 64) as u64) ^ h);
        }
        // The last 0..=15 bytes (keys are short: for most, this is the
        // only block).
        let (a, b) = tail(rest);
        h = fold_mul(a ^ k1, b ^ h);
        fold_mul(h ^ k2, k0 ^ k1)
    }

    /// `key` with its hash, for a shard choice and a [`KeyMap`] lookup.
    #[inline]
    pub(crate) fn hashed<'k>(&self, key: &'k [u8]) -> Hashed<'k> {
        Hashed {
            bytes: key,
            hash: self.hash(key),
        }
    }
}

/// A key and its hash, computed once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hashed<'k> {
    pub(crate) bytes: &'k [u8],
    pub(crate) hash: u64,
}

impl Hashed<'_> {
    /// The shard of `shards` (a power of two) this key belongs to.
    #[inline]
    pub(crate) fn shard(&self, shards: usize) -> usize {
        ((self.hash >> SHARD_SHIFT) as usize) & shards.wrapping_sub(1)
    }

    /// The form a [`KeyMap`] is searched with.
    #[inline]
    pub(crate) fn view(&self) -> &dyn KeyView {
        self
    }
}

/// A key as stored in a [`KeyMap`]: the shared bytes. Its hash is computed
/// again only when the map inserts it or grows (not on a lookup), so no
/// hash is stored and an entry costs what a `Bytes` key did.
#[derive(Debug, Clone)]
pub(crate) struct MapKey(pub(crate) Bytes);

/// What a [`KeyMap`] is searched by: a stored key or a [`Hashed`] one,
/// compared by bytes and hashed alike.
pub(crate) trait KeyView {
    /// The key, compared for equality.
    fn bytes(&self) -> &[u8];
    /// [`KeyHasher::hash`] of [`KeyView::bytes`].
    fn key_hash(&self) -> u64;
}

impl KeyView for MapKey {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
    fn key_hash(&self) -> u64 {
        KeyHasher::new().hash(&self.0)
    }
}

impl KeyView for Hashed<'_> {
    fn bytes(&self) -> &[u8] {
        self.bytes
    }
    fn key_hash(&self) -> u64 {
        self.hash
    }
}

impl<'a> Borrow<dyn KeyView + 'a> for MapKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.key_hash());
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for dyn KeyView + '_ {}

impl Hash for MapKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `dyn KeyView` hashes, or a lookup would miss.
        (self as &dyn KeyView).hash(state);
    }
}

impl PartialEq for MapKey {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for MapKey {}

/// The map's hash is the key's own ([`KeyView::key_hash`]), passed through.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PassThrough;

/// See [`PassThrough`].
#[derive(Debug, Default)]
pub(crate) struct PassThroughHasher(u64);

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;
    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

impl Hasher for PassThroughHasher {
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is ever called (by the `Hash` impls above); any
        // other input still gets a hash rather than a panic.
        self.0 = KeyHasher::new().hash(bytes) ^ self.0.rotate_left(5);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A map from keys to `V` that is searched with a [`Hashed`] key.
pub(crate) type KeyMap<V> = HashMap<MapKey, V, PassThrough>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_stored_key_and_its_lookup_hash_alike() {
        let h = KeyHasher::new();
        let mut map: KeyMap<u32> = KeyMap::default();
        for i in 0..1000u32 {
            map.insert(MapKey(Arc::from(format!("key:{i}").as_bytes())), i);
        }
        for i in 0..1000u32 {
            let k = format!("key:{i}");
            assert_eq!(map.get(h.hashed(k.as_bytes()).view()), Some(&i));
        }
        assert_eq!(map.get(h.hashed(b"key:1000").view()), None);
        assert_eq!(map.get(h.hashed(b"").view()), None);
    }

    #[test]
    fn keys_differing_in_length_or_one_bit_hash_apart() {
        let h = KeyHasher::new();
        let keys: [&[u8]; 8] = [
            b"",
            b"\0",
            b"\0\0",
            b"a",
            b"a\0",
            b"0123456789abcdef",
            b"0123456789abcdef\0",
            b"0123456789abcdeg",
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in keys.iter().skip(i + 1) {
                assert_ne!(h.hash(a), h.hash(b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn a_one_bit_change_anywhere_in_a_short_key_changes_the_hash() {
        let h = KeyHasher::new();
        for n in 1..=40usize {
            let base: Vec<u8> = (0..n).map(|i| i as u8).collect();
            for i in 0..n {
                let mut k = base.clone();
                k[i] ^= 1;
                assert_ne!(h.hash(&base), h.hash(&k), "length {n}, byte {i}");
            }
        }
    }

    #[test]
    fn every_shard_gets_keys() {
        let h = KeyHasher::new();
        let mut counts = [0usize; 64];
        for i in 0..64_000u32 {
            let s = h.hashed(format!("user:{i}").as_bytes()).shard(64);
            counts[s] += 1;
        }
        // 1000 expected per shard; a broken shard choice leaves some empty.
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}

//! The fallback store checked against a plain `HashMap` model, for the `fallback` fuzz target, its regression replay and
//! the proptest in `tests/fallback_model.rs`. Also re-exports the store for
//! `benches/fallback.rs`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::fallback::shard_entry_size as entry_size;
pub use crate::fallback::{MemoryStore, SetOutcome, StoreStats, ENTRY_OVERHEAD, MAX_SHARDS};
use crate::{Clock, ErrorKind, ManualClock};

/// Distinct keys the checker uses: few, so operations collide.
pub const KEYS: u8 = 16;

/// One operation on the store; keys are indexes.
#[derive(Debug, Clone)]
pub enum FallbackOp {
    /// `get`.
    Get(u8),
    /// `set` with bytes and an optional TTL in milliseconds.
    Set(u8, Vec<u8>, Option<u16>),
    /// `set` of a decimal integer, so that `incr_by` finds numbers.
    SetInt(u8, i64),
    /// `delete`.
    Delete(u8),
    /// `exists`.
    Exists(u8),
    /// `expire` in milliseconds (0 deletes).
    Expire(u8, u16),
    /// `persist`.
    Persist(u8),
    /// `ttl`.
    Ttl(u8),
    /// `incr_by`.
    IncrBy(u8, i64),
    /// `entry_for_replay`.
    Replay(u8),
    /// Moves the clock forward (milliseconds).
    Advance(u16),
    /// `purge_expired`.
    Purge,
    /// `clear`.
    Clear,
}

/// Key number `i`: short keys, and one long key that with small byte
/// bounds exercises the too-large path.
pub fn key(i: u8) -> Vec<u8> {
    let i = i % KEYS;
    if i == KEYS - 1 {
        vec![b'L'; 300]
    } else {
        format!("k{i}").into_bytes()
    }
}

type Model = HashMap<Vec<u8>, (Vec<u8>, Option<Instant>)>;

/// Independent of the store's parser: Redis accepts exactly the canonical
/// decimal spelling of an i64.
fn model_int(v: &[u8]) -> Option<i64> {
    let n: i64 = std::str::from_utf8(v).ok()?.parse().ok()?;
    (n.to_string().as_bytes() == v).then_some(n)
}

fn ttl_of(exp: Option<Instant>, now: Instant) -> Option<Duration> {
    exp.map(|e| e.saturating_duration_since(now))
}

/// Runs `ops` on a store with the given bounds and shard count and on the
/// models, panicking on any difference: a read returning a value the model
/// does not hold, a lost key not counted as an eviction, a bound exceeded,
/// byte accounting that does not match the contents.
pub fn check_fallback_case(
    max_entries: usize,
    max_bytes: usize,
    shards: usize,
    ops: &[FallbackOp],
) {
    let clock = ManualClock::new();
    let store = MemoryStore::with_shards(max_entries, max_bytes, shards, clock.shared());
    let mut model = Model::new();

    for op in ops {
        let now = clock.now();
        model.retain(|_, (_, exp)| !exp.is_some_and(|e| e <= now));
        let before = store.stats();
        match op {
            FallbackOp::Get(k) => {
                let k = key(*k);
                let got = store.get(&k).map(|v| v.to_vec());
                assert_eq!(got, model.get(&k).map(|(v, _)| v.clone()), "get {k:?}");
            }
            FallbackOp::Set(k, v, ttl) => {
                let ttl = ttl.map(|t| Duration::from_millis(u64::from(t)));
                set(&store, &mut model, &key(*k), v, ttl, now);
            }
            FallbackOp::SetInt(k, n) => {
                set(
                    &store,
                    &mut model,
                    &key(*k),
                    n.to_string().as_bytes(),
                    None,
                    now,
                );
            }
            FallbackOp::Delete(k) => {
                let k = key(*k);
                assert_eq!(store.delete(&k), model.remove(&k).is_some(), "delete");
            }
            FallbackOp::Exists(k) => {
                let k = key(*k);
                assert_eq!(store.exists(&k), model.contains_key(&k), "exists");
            }
            FallbackOp::Expire(k, t) => {
                let k = key(*k);
                let ttl = Duration::from_millis(u64::from(*t));
                assert_eq!(store.expire(&k, ttl), model.contains_key(&k), "expire");
                if ttl.is_zero() {
                    model.remove(&k);
                } else if let Some(e) = model.get_mut(&k) {
                    e.1 = now.checked_add(ttl);
                }
            }
            FallbackOp::Persist(k) => {
                let k = key(*k);
                assert_eq!(store.persist(&k), model.contains_key(&k), "persist");
                if let Some(e) = model.get_mut(&k) {
                    e.1 = None;
                }
            }
            FallbackOp::Ttl(k) => {
                let k = key(*k);
                let want = model.get(&k).map(|(_, e)| ttl_of(*e, now));
                assert_eq!(store.ttl(&k), want, "ttl");
            }
            FallbackOp::IncrBy(k, d) => incr(&store, &mut model, &key(*k), *d),
            FallbackOp::Replay(k) => {
                let k = key(*k);
                let got = store.entry_for_replay(&k).map(|(v, t)| (v.to_vec(), t));
                let want = model.get(&k).map(|(v, e)| (v.clone(), ttl_of(*e, now)));
                assert_eq!(got, want, "entry_for_replay");
            }
            FallbackOp::Advance(t) => clock.advance(Duration::from_millis(u64::from(*t))),
            FallbackOp::Purge => {
                store.purge_expired();
                let live: usize = model
                    .iter()
                    .map(|(k, (v, _))| entry_size(k.len(), v.len()))
                    .sum();
                assert_eq!(store.bytes(), live, "bytes after purge");
                assert_eq!(store.len(), model.len(), "len after purge");
            }
            FallbackOp::Clear => {
                store.clear();
                model.clear();
                assert_eq!((store.len(), store.bytes()), (0, 0));
            }
        }
        sync(&store, &mut model, &before, clock.now());
    }
}

fn set(
    store: &MemoryStore,
    model: &mut Model,
    k: &[u8],
    v: &[u8],
    ttl: Option<Duration>,
    now: Instant,
) {
    let too_large = entry_size(k.len(), v.len()) > store.max_entry_size();
    let outcome = store.set(k, v, ttl);
    if too_large {
        assert_eq!(outcome, SetOutcome::TooLarge);
        model.remove(k);
    } else {
        assert_eq!(outcome, SetOutcome::Stored);
        model.insert(
            k.to_vec(),
            (v.to_vec(), ttl.and_then(|t| now.checked_add(t))),
        );
    }
}

fn incr(store: &MemoryStore, model: &mut Model, k: &[u8], delta: i64) {
    let got = store.incr_by(k, delta);
    let (current, exp) = match model.get(k) {
        Some((v, exp)) => match model_int(v) {
            Some(n) => (n, *exp),
            None => {
                let e = got.err().map(|e| e.kind());
                assert_eq!(e, Some(ErrorKind::Server), "incr of a non-integer");
                return;
            }
        },
        None => (0, None),
    };
    let Some(next) = current.checked_add(delta) else {
        let e = got.err().map(|e| e.kind());
        assert_eq!(e, Some(ErrorKind::Server), "incr overflow");
        return;
    };
    let text = next.to_string().into_bytes();
    if entry_size(k.len(), text.len()) > store.max_entry_size() {
        assert_eq!(got.err().map(|e| e.kind()), Some(ErrorKind::InvalidInput));
        model.remove(k);
    } else {
        assert_eq!(got.ok(), Some(next), "incr result");
        model.insert(k.to_vec(), (text, exp));
    }
}

/// Compares the store's live contents with the model after an operation;
/// keys the store no longer holds must be exactly the ones it evicted.
fn sync(store: &MemoryStore, model: &mut Model, before: &StoreStats, now: Instant) {
    let after = store.stats();
    let entries = store.entries();
    let mut live_bytes = 0;
    for (k, v, ttl) in &entries {
        let Some((mv, exp)) = model.get(&k[..]) else {
            panic!("store holds {k:?}, which the model does not");
        };
        assert_eq!(&v[..], &mv[..], "value of {k:?}");
        assert_eq!(*ttl, ttl_of(*exp, now), "ttl of {k:?}");
        live_bytes += entry_size(k.len(), v.len());
    }
    let held: std::collections::HashSet<&[u8]> = entries.iter().map(|(k, _, _)| &k[..]).collect();
    let before_len = model.len();
    model.retain(|k, (_, exp)| held.contains(&k[..]) || exp.is_some_and(|e| e <= now));
    let lost = (before_len - model.len()) as u64;
    assert_eq!(
        lost,
        after.evictions - before.evictions,
        "keys lost without an eviction"
    );
    assert!(store.len() <= store.max_entries(), "entry bound");
    assert!(store.bytes() <= store.max_bytes(), "byte bound");
    assert!(store.bytes() >= live_bytes, "byte accounting");
    assert!(store.len() >= entries.len());
}

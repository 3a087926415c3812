//! Unit tests of the store and the journal, driven by the manual clock.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::{ErrorKind, ManualClock};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A single-shard store (exact global LRU) with a manual clock.
fn store(max_entries: usize, max_bytes: usize) -> (MemoryStore, ManualClock) {
    let clock = ManualClock::new();
    (
        MemoryStore::with_shards(max_entries, max_bytes, 1, clock.shared()),
        clock,
    )
}

fn val(s: &MemoryStore, k: &str) -> Option<String> {
    s.get(k.as_bytes())
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

fn set(s: &MemoryStore, k: &str, v: &str, ttl: Option<Duration>) {
    assert_eq!(s.set(k.as_bytes(), v.as_bytes(), ttl), SetOutcome::Stored);
}

#[test]
fn set_get_delete_exists() {
    let (s, _) = store(100, 1 << 20);
    assert_eq!(val(&s, "a"), None);
    set(&s, "a", "1", None);
    assert_eq!(val(&s, "a"), Some("1".into()));
    assert!(s.exists(b"a"));
    set(&s, "a", "2", None);
    assert_eq!(val(&s, "a"), Some("2".into()));
    assert_eq!(s.len(), 1);
    assert!(s.delete(b"a"));
    assert!(!s.delete(b"a"));
    assert!(!s.exists(b"a"));
    let st = s.stats();
    assert_eq!((st.hits, st.misses, st.sets), (2, 1, 2));
    assert_eq!((st.entries, st.bytes), (0, 0));
}

#[test]
fn ttl_expires_with_the_clock() {
    let (s, clock) = store(100, 1 << 20);
    set(&s, "k", "v", Some(ms(1000)));
    set(&s, "forever", "v", None);
    assert_eq!(s.ttl(b"k"), Some(Some(ms(1000))));
    assert_eq!(s.ttl(b"forever"), Some(None));
    assert_eq!(s.ttl(b"missing"), None);
    clock.advance(ms(999));
    assert_eq!(s.ttl(b"k"), Some(Some(ms(1))));
    assert_eq!(val(&s, "k"), Some("v".into()));
    clock.advance(ms(1));
    assert_eq!(val(&s, "k"), None);
    assert!(!s.exists(b"k"));
    assert_eq!(s.stats().expirations, 1);
    // An hour later the un-expiring key is still there.
    clock.advance(Duration::from_secs(3600));
    assert_eq!(val(&s, "forever"), Some("v".into()));
}

#[test]
fn set_replaces_ttl_and_expire_persist_change_it() {
    let (s, clock) = store(100, 1 << 20);
    set(&s, "k", "v", Some(ms(10)));
    set(&s, "k", "v2", None);
    clock.advance(ms(20));
    assert_eq!(val(&s, "k"), Some("v2".into()));
    assert!(s.expire(b"k", ms(5)));
    assert!(!s.expire(b"nope", ms(5)));
    assert!(s.persist(b"k"));
    clock.advance(ms(10));
    assert_eq!(val(&s, "k"), Some("v2".into()));
    assert!(s.expire(b"k", ms(5)));
    clock.advance(ms(5));
    assert_eq!(val(&s, "k"), None);
    // EXPIRE 0 deletes at once, like Redis.
    set(&s, "z", "v", None);
    assert!(s.expire(b"z", Duration::ZERO));
    assert!(!s.exists(b"z"));
    // A TTL too large for Instant never expires instead of panicking.
    set(&s, "huge", "v", Some(Duration::MAX));
    assert!(s.exists(b"huge"));
}

#[test]
fn expired_entries_are_swept_by_later_writes() {
    let (s, clock) = store(10_000, 1 << 24);
    for i in 0..100 {
        set(&s, &format!("old{i}"), "v", Some(ms(10)));
    }
    clock.advance(ms(10));
    assert_eq!(s.len(), 100, "nothing read them yet");
    // Writes of other keys reclaim them a few at a time.
    for i in 0..30 {
        set(&s, &format!("new{i}"), "v", None);
    }
    assert_eq!(s.len(), 30, "sweeping reclaimed every expired entry");
    assert_eq!(s.stats().expirations, 100);
    assert_eq!(s.purge_expired(), 0);
}

#[test]
fn purge_expired_removes_all_expired() {
    let (s, clock) = store(100, 1 << 20);
    set(&s, "a", "v", Some(ms(1)));
    set(&s, "b", "v", Some(ms(1)));
    set(&s, "c", "v", None);
    clock.advance(ms(1));
    assert_eq!(s.purge_expired(), 2);
    assert_eq!(s.len(), 1);
    assert_eq!(s.bytes(), ENTRY_OVERHEAD + 2);
}

#[test]
fn lru_evicts_least_recently_used_by_count() {
    let (s, _) = store(3, 1 << 20);
    set(&s, "a", "1", None);
    set(&s, "b", "2", None);
    set(&s, "c", "3", None);
    assert!(s.get(b"a").is_some()); // a is now most recent; b is least
    set(&s, "d", "4", None);
    assert_eq!(val(&s, "b"), None);
    assert!(s.exists(b"a") && s.exists(b"c") && s.exists(b"d"));
    // exists and ttl do not refresh: c is the next victim.
    assert!(s.exists(b"c"));
    set(&s, "e", "5", None);
    assert_eq!(val(&s, "c"), None);
    assert_eq!(s.len(), 3);
    assert_eq!(s.stats().evictions, 2);
}

#[test]
fn byte_bound_evicts_and_counts_overhead() {
    let entry = ENTRY_OVERHEAD + 1 + 100;
    let (s, _) = store(1000, entry * 3);
    for k in ["a", "b", "c"] {
        set(&s, k, &"x".repeat(100), None);
    }
    assert_eq!(s.bytes(), entry * 3);
    // A fourth entry one byte larger than the others: the two oldest go.
    set(&s, "d", &"x".repeat(101), None);
    assert_eq!(s.bytes(), entry * 2 + 1);
    assert_eq!((val(&s, "a"), val(&s, "b")), (None, None));
    assert_eq!(s.len(), 2);
    // Growing a value in place evicts others, never the value itself.
    set(&s, "d", &"y".repeat(entry * 3 - ENTRY_OVERHEAD - 1), None);
    assert_eq!(s.len(), 1);
    assert_eq!(s.bytes(), entry * 3);
    assert!(s.exists(b"d"));
}

#[test]
fn too_large_value_is_rejected_without_evicting() {
    let (s, _) = store(1000, 1000);
    set(&s, "a", "1", None);
    set(&s, "big", "old", None);
    let big = vec![b'x'; 1000];
    assert_eq!(s.set(b"big", &big, None), SetOutcome::TooLarge);
    // Nothing else was evicted for it, and the old value is gone (a read
    // must not return what the caller just overwrote).
    assert_eq!(val(&s, "a"), Some("1".into()));
    assert_eq!(val(&s, "big"), None);
    let st = s.stats();
    assert_eq!((st.rejected_too_large, st.evictions, st.entries), (1, 0, 1));
    // The limit is exact: the largest entry that fits is accepted.
    let fits = vec![b'x'; 1000 - ENTRY_OVERHEAD - 3];
    assert_eq!(s.set(b"fit", &fits, None), SetOutcome::Stored);
    assert_eq!(s.bytes(), 1000);
}

#[test]
fn sharded_store_keeps_the_global_bounds() {
    let clock = ManualClock::new();
    let s = MemoryStore::with_shards(100, 100 * 200, 8, clock.shared());
    assert_eq!(s.shard_count(), 8);
    assert_eq!(s.max_entry_size(), 100 * 200 / 8);
    for i in 0..1000 {
        set(&s, &format!("key{i}"), &"v".repeat(i % 50), None);
        assert!(s.len() <= 100);
        assert!(s.bytes() <= 100 * 200);
    }
    // The most recent write always survives.
    assert!(s.exists(b"key999"));
}

#[test]
fn shard_count_follows_the_bounds() {
    let clock = ManualClock::new();
    assert_eq!(
        MemoryStore::new(10_000, 64 << 20, clock.shared()).shard_count(),
        16
    );
    assert_eq!(
        MemoryStore::new(10_000, 64 << 20, clock.shared()).max_entry_size(),
        4 << 20
    );
    assert_eq!(
        MemoryStore::new(100, 64 << 20, clock.shared()).shard_count(),
        1
    );
    assert_eq!(
        MemoryStore::new(100_000, 1000, clock.shared()).shard_count(),
        1
    );
    assert_eq!(
        MemoryStore::with_shards(3, 1000, 64, clock.shared()).shard_count(),
        2
    );
    assert_eq!(
        MemoryStore::with_shards(0, 0, 0, clock.shared()).max_entries(),
        1
    );
}

#[test]
fn incr_by_follows_redis() {
    let (s, clock) = store(100, 1 << 20);
    assert_eq!(s.incr_by(b"n", 5).unwrap(), 5);
    assert_eq!(s.incr_by(b"n", -7).unwrap(), -2);
    assert_eq!(val(&s, "n"), Some("-2".into()));
    // The TTL survives an increment.
    assert!(s.expire(b"n", ms(100)));
    assert_eq!(s.incr_by(b"n", 1).unwrap(), -1);
    assert_eq!(s.ttl(b"n"), Some(Some(ms(100))));
    clock.advance(ms(100));
    assert_eq!(s.incr_by(b"n", 1).unwrap(), 1, "expired counts as missing");
    assert_eq!(s.ttl(b"n"), Some(None));

    for bad in [
        "abc",
        "",
        " 1",
        "1 ",
        "+1",
        "01",
        "-0",
        "1.5",
        "99999999999999999999",
    ] {
        set(&s, "b", bad, None);
        let e = s.incr_by(b"b", 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Server, "{bad:?}");
        assert!(!e.is_transient());
        assert!(
            e.to_string().contains("not an integer or out of range"),
            "{e}"
        );
        assert_eq!(val(&s, "b"), Some(bad.into()), "value unchanged");
    }
    set(&s, "max", &i64::MAX.to_string(), None);
    let e = s.incr_by(b"max", 1).unwrap_err();
    assert!(e.to_string().contains("would overflow"), "{e}");
    set(&s, "min", &i64::MIN.to_string(), None);
    assert_eq!(s.incr_by(b"min", 0).unwrap(), i64::MIN);
    assert!(s.incr_by(b"min", -1).is_err());
}

#[test]
fn parse_matches_string2ll() {
    use super::store::parse_redis_i64 as p;
    assert_eq!(p(b"0"), Some(0));
    assert_eq!(p(b"-1"), Some(-1));
    assert_eq!(p(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(p(b"-9223372036854775808"), Some(i64::MIN));
    for bad in [
        &b"-"[..],
        b"9223372036854775808",
        b"00",
        b"\xff",
        b"1e3",
        b"--1",
    ] {
        assert_eq!(p(bad), None, "{bad:?}");
    }
}

#[test]
fn entry_for_replay_and_entries_do_not_touch_lru_or_counters() {
    let (s, clock) = store(2, 1 << 20);
    set(&s, "a", "1", Some(ms(500)));
    set(&s, "b", "2", None);
    clock.advance(ms(200));
    let (v, ttl) = s.entry_for_replay(b"a").unwrap();
    assert_eq!((&*v, ttl), (&b"1"[..], Some(ms(300))));
    assert_eq!(s.entries().len(), 2);
    set(&s, "c", "3", None);
    assert!(!s.exists(b"a"), "replay lookup did not make `a` recent");
    let st = s.stats();
    assert_eq!((st.hits, st.misses), (0, 0));
}

#[test]
fn clear_empties_the_store() {
    let (s, _) = store(100, 1 << 20);
    set(&s, "a", "1", None);
    s.clear();
    assert!(s.is_empty());
    assert_eq!(s.bytes(), 0);
    set(&s, "a", "2", None);
    assert_eq!(val(&s, "a"), Some("2".into()));
}

#[test]
fn concurrent_use_keeps_bounds() {
    let clock = ManualClock::new();
    let s = Arc::new(MemoryStore::with_shards(64, 64 * 200, 4, clock.shared()));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for i in 0..2000u32 {
                    let k = format!("k{}", (i * 7 + t) % 300);
                    match i % 4 {
                        0 => drop(s.set(k.as_bytes(), &i.to_le_bytes(), None)),
                        1 => drop(s.get(k.as_bytes())),
                        2 => drop(s.incr_by(format!("n{t}").as_bytes(), 1)),
                        _ => drop(s.delete(k.as_bytes())),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(s.len() <= 64);
    assert!(s.bytes() <= 64 * 200);
    let live = s.entries();
    let charged: usize = live
        .iter()
        .map(|(k, v, _)| k.len() + v.len() + ENTRY_OVERHEAD)
        .sum();
    assert_eq!(charged, s.bytes(), "byte accounting matches contents");
}

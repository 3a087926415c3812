//! The keys a sentinel master acknowledged lately, so that a master switch
//! can keep later reads from the writes the new master never received.
//!
//! Replication is asynchronous. When the sentinels promote a replica, the
//! old master keeps acknowledging writes until clients move (graceful
//! `SENTINEL FAILOVER`: the old master is demoted seconds later and drops
//! them when it resyncs); when a master dies, what it had not yet sent to
//! the replica is gone. Either way the new master may hold an *older* value
//! of a key this process wrote: a stale read by this crate's contract.
//!
//! So every write a sentinel master acknowledges is noted here (key and
//! instant; a map, so a hot key costs one entry). On a switch, every key
//! written since the first trouble seen with the old master minus
//! [`WINDOW`] (or, with no trouble, within the last [`WINDOW`]) becomes
//! *pending*: before the next attempt on the new master is sent, the
//! client marks them stale there (`consistency`), so the first read or
//! modification deletes them first (a miss is allowed, an older value is
//! not), and the background reconciler deletes the rest.
//!
//! The switch takes the snapshot and bumps the generation under this
//! structure's lock, and a write acknowledged on a connection of an older
//! generation goes straight to pending: no acknowledged write falls
//! between the two.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};

/// How far back before a switch (or before the first trouble with the old
/// master) acknowledged writes are distrusted: covers the time from the
/// promotion to the `+switch-master` announcement reaching the client
/// (about a second with sentinel's 1 s INFO period during a failover) and
/// the replication lag before a master dies.
pub(crate) const WINDOW: Duration = Duration::from_secs(5);

/// How often the map is pruned of keys older than the window.
const PRUNE_EVERY: Duration = Duration::from_secs(1);

/// A key as noted.
pub(crate) type Key = Arc<[u8]>;

struct Noted {
    keys: HashMap<Key, Instant>,
    last_prune: Option<Instant>,
    /// The last write that did not fit (the map was full).
    overflowed: Option<Instant>,
}

/// See the module docs.
pub(crate) struct RecentWrites {
    noted: Mutex<Noted>,
    cap: usize,
    pending: Mutex<Vec<Key>>,
    /// Fast path: `false` while nothing is pending.
    has_pending: AtomicBool,
}

impl std::fmt::Debug for RecentWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys may be sensitive: counts only.
        f.debug_struct("RecentWrites")
            .field("noted", &self.noted.lock().keys.len())
            .field("pending", &self.pending.lock().len())
            .field("cap", &self.cap)
            .finish()
    }
}

impl RecentWrites {
    /// Notes at most `cap` distinct keys.
    pub(crate) fn new(cap: usize) -> RecentWrites {
        RecentWrites {
            noted: Mutex::new(Noted {
                keys: HashMap::new(),
                last_prune: None,
                overflowed: None,
            }),
            cap: cap.max(1),
            pending: Mutex::new(Vec::new()),
            has_pending: AtomicBool::new(false),
        }
    }

    /// Locks the notes: a switch holds this while it snapshots and bumps
    /// the generation.
    pub(crate) fn lock(&self) -> NotesGuard<'_> {
        NotesGuard {
            recent: self,
            noted: self.noted.lock(),
        }
    }

    /// `true` when keys wait to be marked stale on the new master.
    pub(crate) fn has_pending(&self) -> bool {
        self.has_pending.load(Ordering::Acquire)
    }

    /// Hands the pending keys to `mark` (which marks them stale), holding
    /// the pending lock meanwhile so that no attempt on the new master is
    /// sent before they are marked.
    pub(crate) fn drain(&self, mark: impl FnOnce(&[Key])) {
        let mut pending = self.pending.lock();
        if !pending.is_empty() {
            mark(&pending);
            pending.clear();
        }
        self.has_pending.store(false, Ordering::Release);
    }

    /// `keys` were acknowledged by an old master after the switch: pending
    /// at once.
    pub(crate) fn late(&self, keys: &[&[u8]]) {
        self.add_pending(keys.iter().map(|k| Key::from(*k)));
    }

    fn add_pending(&self, keys: impl IntoIterator<Item = Key>) {
        let mut pending = self.pending.lock();
        pending.extend(keys);
        if !pending.is_empty() {
            self.has_pending.store(true, Ordering::Release);
        }
    }
}

/// The notes, locked.
pub(crate) struct NotesGuard<'a> {
    recent: &'a RecentWrites,
    noted: MutexGuard<'a, Noted>,
}

impl NotesGuard<'_> {
    /// Notes `keys` acknowledged at `now` by the current master;
    /// `keep_since`: nothing older is needed any more (pruned at most once
    /// a second).
    pub(crate) fn note(&mut self, keys: &[&[u8]], now: Instant, keep_since: Instant) {
        let due = self
            .noted
            .last_prune
            .is_none_or(|at| now.saturating_duration_since(at) >= PRUNE_EVERY);
        if due {
            self.noted.keys.retain(|_, at| *at >= keep_since);
            self.noted.last_prune = Some(now);
        }
        for key in keys {
            if let Some(at) = self.noted.keys.get_mut(*key) {
                *at = now;
            } else if self.noted.keys.len() < self.recent.cap {
                self.noted.keys.insert(Arc::from(*key), now);
            } else {
                self.noted.overflowed = Some(now);
            }
        }
    }

    /// At a switch: every key noted at or after `since` becomes pending.
    /// Returns how many, and whether writes since `since` did not fit.
    pub(crate) fn switch(&mut self, since: Instant) -> (usize, bool) {
        let keys: Vec<Key> = self
            .noted
            .keys
            .drain()
            .filter(|(_, at)| *at >= since)
            .map(|(k, _)| k)
            .collect();
        let n = keys.len();
        self.recent.add_pending(keys);
        let lost = self.noted.overflowed.is_some_and(|at| at >= since);
        self.noted.overflowed = None;
        (n, lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_makes_recent_keys_pending_and_late_ones_go_straight_there() {
        let r = RecentWrites::new(2);
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        r.lock().note(&[b"old"], t0, t0);
        r.lock().note(&[b"a", b"b"], later, t0);
        // `old` and `a` fit; `b` did not (cap 2).
        let (n, lost) = r.lock().switch(later - WINDOW);
        assert_eq!(n, 1, "only `a` is recent");
        assert!(lost, "`b` did not fit");
        assert!(r.has_pending());
        let mut seen = Vec::new();
        r.drain(|keys| seen.extend(keys.iter().map(|k| k.to_vec())));
        assert_eq!(seen, vec![b"a".to_vec()]);
        assert!(!r.has_pending());

        r.late(&[b"c"]);
        let mut seen = Vec::new();
        r.drain(|keys| seen.extend(keys.iter().map(|k| k.to_vec())));
        assert_eq!(seen, vec![b"c".to_vec()]);
    }

    #[test]
    fn old_keys_are_pruned() {
        let r = RecentWrites::new(10);
        let t0 = Instant::now();
        r.lock().note(&[b"a"], t0, t0);
        let t1 = t0 + Duration::from_secs(20);
        r.lock().note(&[b"b"], t1, t1 - WINDOW);
        let (n, _) = r.lock().switch(t0);
        assert_eq!(n, 1, "`a` was pruned");
    }
}

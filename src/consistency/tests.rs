//! The consistency state machine against the contract, over generated
//! interleavings of the simulation in `model.rs`.

use proptest::prelude::*;

use super::model::*;
use crate::fallback::Reconcile;

fn action() -> impl Strategy<Value = Action> {
    let op = prop_oneof![
        (0..KEYS).prop_map(OpSpec::Read),
        (0..KEYS).prop_map(OpSpec::Write),
        (0..KEYS).prop_map(OpSpec::Delete),
    ];
    let ev = prop_oneof![
        any::<bool>().prop_map(Ev::Down),
        any::<bool>().prop_map(Ev::Up),
        Just(Ev::Failover),
        Just(Ev::Restore),
        (0..KEYS).prop_map(Ev::Evict),
    ];
    prop_oneof![
        3 => ((0..THREADS), op).prop_map(|(t, o)| Action::Start(t, o)),
        6 => ((0..THREADS), prop::bool::weighted(0.15)).prop_map(|(t, l)| Action::Step(t, l)),
        2 => ev.prop_map(Action::Event),
        2 => Just(Action::Reconcile),
    ]
}

proptest! {
    // 512 cases in CI; `PROPTEST_CASES=100000` for a long local run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512),
        max_shrink_iters: 1_000_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn invalidate_with_secondary(actions in prop::collection::vec(action(), 1..160)) {
        check(Reconcile::Invalidate, false, true, &actions);
    }

    #[test]
    fn replay_with_secondary(actions in prop::collection::vec(action(), 1..160)) {
        check(Reconcile::Replay, false, true, &actions);
    }

    #[test]
    fn write_through_replay(actions in prop::collection::vec(action(), 1..160)) {
        check(Reconcile::Replay, true, true, &actions);
    }

    #[test]
    fn primary_only(actions in prop::collection::vec(action(), 1..160)) {
        check(Reconcile::Invalidate, false, false, &actions);
    }
}

/// The checker itself finds a planted stale read and a value never written.
#[test]
fn checker_finds_planted_violations() {
    let rec = |key, write, read, invoke, complete| Rec {
        key,
        write,
        read,
        acked: true,
        invoke,
        complete,
    };
    let stale = [
        rec(0, Some(Some(1)), None, 1, 2),
        rec(0, Some(Some(2)), None, 3, 4),
        rec(0, None, Some(Some(1)), 5, 6),
    ];
    assert_eq!(violations(&stale).len(), 1);
    let garbage = [rec(0, None, Some(Some(9)), 1, 2)];
    assert_eq!(violations(&garbage).len(), 1);
    // Concurrent writes: either value may be read.
    let concurrent = [
        rec(0, Some(Some(1)), None, 1, 4),
        rec(0, Some(Some(2)), None, 2, 3),
        rec(0, None, Some(Some(1)), 5, 6),
    ];
    assert!(violations(&concurrent).is_empty());
}

/// A deliberately broken state machine (an outage write forgets to mark
/// the primary stale) must be caught, or the model proves nothing.
#[test]
fn model_catches_a_missing_invalidation() {
    let mut world = World::new(Reconcile::Invalidate, false, false);
    let w = |k| Action::Start(0, OpSpec::Write(k));
    let step = Action::Step(0, false);
    let read = [
        Action::Start(1, OpSpec::Read(0)),
        Action::Step(1, false),
        Action::Step(1, false),
        Action::Step(1, false),
    ];
    // Unbroken, the read after the outage write misses (or reads it).
    let mut healthy = World::new(Reconcile::Invalidate, false, false);
    healthy.run_more(&[w(0), step, step, step, Action::Event(Ev::Down(true)), w(0)]);
    healthy.run_more(&[Action::Event(Ev::Up(true))]);
    healthy.run(&read);
    assert!(violations(&healthy.history).is_empty());

    world.run_more(&[w(0), step, step, step, Action::Event(Ev::Down(true)), w(0)]);
    world.run_more(&[Action::Event(Ev::Up(true))]);
    // Break the entry: as if the journal had not recorded the outage write.
    for shard in world.cons.shards.iter() {
        for e in shard.lock().values_mut() {
            e.memory = None;
            e.stale_primary = false;
        }
    }
    world.run(&read);
    assert_eq!(violations(&world.history).len(), 1, "{:?}", world.history);
}

/// The journal's keys count against its byte bound: a write whose key would
/// not fit is refused (nothing written), one that fits is journaled.
#[test]
fn journal_keys_are_bounded_in_bytes() {
    use super::{journal_bytes, Consistency, KEY_OVERHEAD};
    use crate::clock::ManualClock;
    use crate::error::ErrorKind;
    use crate::fallback::{JournalOp, MemoryStore};

    let budget = journal_bytes(4 * (2 * KEY_OVERHEAD + 1050));
    let cons = Consistency::new(100, budget, Reconcile::Invalidate, false, false);
    let memory = MemoryStore::new(100, 1 << 20, ManualClock::new().shared());
    let big = vec![b'k'; 1000];
    let write = |key: &[u8]| {
        let keys: [&[u8]; 1] = [key];
        cons.write_to_memory(&keys, JournalOp::Set, &memory, |m| {
            let _ = m.set(key, b"v", None);
            Ok(())
        })
    };
    assert!(write(&big).is_ok());
    assert!(write(b"small").is_ok(), "a small key still fits");
    let mut other = big.clone();
    other[0] = b'x';
    let refused = write(&other).err().map(|e| e.kind());
    assert_eq!(refused, Some(ErrorKind::JournalFull));
    assert!(
        memory.get(&other).is_none(),
        "a refused write is not stored"
    );
    assert_eq!(cons.refused(), 1);
}

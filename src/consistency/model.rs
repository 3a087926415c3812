//! A simulation of the client around the consistency state machine, for
//! the model test (`tests.rs`) and the `consistency` fuzz target: simulated
//! callers whose attempts are cut into the steps the real client takes
//! (`begin`, the invalidation, the command, `finish`, the memory write), a
//! reconciler cut into plan / send / check-off, and outages, failovers,
//! restores and evictions between any two steps. Two Redis servers are
//! `HashMap`s; the memory store is the real one. The recorded history is
//! checked afterwards: no read returns a value older than a write
//! acknowledged before the read began, nor a value never written.

use std::collections::HashMap;

use super::*;
use crate::clock::ManualClock;

/// Simulated callers.
pub const THREADS: usize = 3;
/// Distinct keys: few, so operations collide.
pub const KEYS: u8 = 3;
/// Small, so that a full journal (refused writes) is exercised.
const MAX_KEYS: usize = 2;

#[derive(Debug, Clone, Copy)]
/// A caller's operation on key `n`.
pub enum OpSpec {
    /// `GET`.
    Read(u8),
    /// `SET` of a fresh value.
    Write(u8),
    /// `DEL`.
    Delete(u8),
}

#[derive(Debug, Clone, Copy)]
/// Something that happens to the world between two steps.
pub enum Ev {
    /// The primary (`true`) or the secondary goes down.
    Down(bool),
    /// It comes back.
    Up(bool),
    /// Calls switch to the secondary (a new failover epoch).
    Failover,
    /// Calls switch back to the primary.
    Restore,
    /// The memory store evicts the key.
    Evict(u8),
}

#[derive(Debug, Clone, Copy)]
/// One step of the interleaving.
pub enum Action {
    /// Thread `t` starts an operation (if it has none in flight).
    Start(usize, OpSpec),
    /// Advance a thread's operation; `true`: the reply is lost after the
    /// command ran.
    Step(usize, bool),
    /// Something happens.
    Event(Ev),
    /// The reconciler takes its next step.
    Reconcile,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Begun,
    Prepared,
    Executed(Option<u64>),
}

struct InFlight {
    spec: OpSpec,
    invoke: u64,
    value: u64,
    target: Role,
    ticket: Ticket,
    stage: Stage,
}

#[derive(Debug, Clone)]
pub(crate) struct Rec {
    pub(crate) key: u8,
    /// `Some(v)`: wrote v; `None` in a write: a delete.
    pub(crate) write: Option<Option<u64>>,
    /// What a read returned.
    pub(crate) read: Option<Option<u64>>,
    pub(crate) acked: bool,
    pub(crate) invoke: u64,
    pub(crate) complete: u64,
}

/// Where the simulated reconciler is in its pass.
enum Reconciler {
    /// Read the epoch and the active endpoint.
    Viewed(u64, Role),
    /// Planned a batch (in that epoch; for the active endpoint, so sent
    /// through the router).
    Planned(Batch, u64, bool),
    /// The batch landed; not checked off yet.
    Sent(Batch, u64),
}

pub(crate) struct World {
    pub(crate) cons: Consistency,
    memory: MemoryStore,
    redis: [HashMap<Vec<u8>, u64>; 2],
    up: [bool; 2],
    active: Role,
    epoch: u64,
    has_secondary: bool,
    step: u64,
    next_value: u64,
    threads: Vec<Option<InFlight>>,
    reconciler: Option<Reconciler>,
    pub(crate) history: Vec<Rec>,
}

fn key(k: u8) -> Vec<u8> {
    vec![b'k', b'0' + k]
}

fn idx(role: Role) -> usize {
    match role {
        Role::Primary => 0,
        Role::Secondary => 1,
    }
}

fn parse(v: &[u8]) -> u64 {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

impl World {
    pub(crate) fn new(mode: Reconcile, write_through: bool, has_secondary: bool) -> World {
        World {
            cons: Consistency::new(MAX_KEYS, usize::MAX, mode, write_through, has_secondary),
            memory: MemoryStore::new(100, 1 << 20, ManualClock::new().shared()),
            redis: [HashMap::new(), HashMap::new()],
            up: [true, true],
            active: Role::Primary,
            epoch: 1,
            has_secondary,
            step: 0,
            next_value: 1,
            threads: (0..THREADS).map(|_| None).collect(),
            reconciler: None,
            history: Vec::new(),
        }
    }

    /// Applies a pipeline the way Redis would (only `SET k v [PX ms]` and
    /// `DEL k..` occur).
    fn apply(&mut self, role: Role, pipe: &redis::Pipeline) {
        let store = &mut self.redis[idx(role)];
        for cmd in pipe.cmd_iter() {
            let args: Vec<Vec<u8>> = cmd
                .args_iter()
                .filter_map(|a| match a {
                    redis::Arg::Simple(a) => Some(a.to_vec()),
                    _ => None,
                })
                .collect();
            match args.first().map(Vec::as_slice) {
                Some(b"DEL") => args[1..].iter().for_each(|k| {
                    store.remove(k);
                }),
                Some(b"SET") => {
                    store.insert(args[1].clone(), parse(&args[2]));
                }
                other => panic!("unexpected command {other:?}"),
            }
        }
    }

    fn complete(&mut self, f: &InFlight, read: Option<Option<u64>>, acked: bool) {
        let (k, write) = match f.spec {
            OpSpec::Read(k) => (k, None),
            OpSpec::Write(k) => (k, Some(Some(f.value))),
            OpSpec::Delete(k) => (k, Some(None)),
        };
        self.history.push(Rec {
            key: k,
            write,
            read,
            acked,
            invoke: f.invoke,
            complete: self.step,
        });
    }

    /// The memory path, after an availability failure.
    fn fallback(&mut self, f: &InFlight) {
        let k = key(match f.spec {
            OpSpec::Read(k) | OpSpec::Write(k) | OpSpec::Delete(k) => k,
        });
        let keys: [&[u8]; 1] = [&k];
        match f.spec {
            OpSpec::Read(_) => {
                let v = self.memory.get(&k).map(|v| parse(&v));
                self.complete(f, Some(v), true);
            }
            OpSpec::Write(_) => {
                let value = f.value.to_string();
                let r = self
                    .cons
                    .write_to_memory(&keys, JournalOp::Set, &self.memory, |m| {
                        let _ = m.set(&k, value.as_bytes(), None);
                        Ok(())
                    });
                self.complete(f, None, r.is_ok());
            }
            OpSpec::Delete(_) => {
                let r = self
                    .cons
                    .write_to_memory(&keys, JournalOp::Delete, &self.memory, |m| {
                        m.delete(&k);
                        Ok(())
                    });
                self.complete(f, None, r.is_ok());
            }
        }
    }

    fn start(&mut self, t: usize, spec: OpSpec) {
        if self.threads[t].is_some() {
            return;
        }
        let (k, access) = match spec {
            OpSpec::Read(k) => (k, Access::Read),
            OpSpec::Write(k) => (k, Access::Overwrite),
            OpSpec::Delete(k) => (k, Access::Modify),
        };
        let value = self.next_value;
        self.next_value += 1;
        let target = if self.has_secondary {
            self.active
        } else {
            Role::Primary
        };
        let mut f = InFlight {
            spec,
            invoke: self.step,
            value,
            target,
            ticket: Ticket::default(),
            stage: Stage::Begun,
        };
        let k = key(k);
        let keys: [&[u8]; 1] = [&k];
        if access == Access::Read && self.cons.reads_from_memory(&keys) {
            return self.fallback(&f);
        }
        if !self.up[idx(target)] {
            return self.fallback(&f);
        }
        match self
            .cons
            .begin(&keys, target, self.epoch, access, Some(&self.memory))
        {
            Ok(ticket) => {
                f.ticket = ticket;
                self.threads[t] = Some(f);
            }
            // Refused: nothing sent, the caller sees the error.
            Err(e) if e.kind() == ErrorKind::JournalFull => self.complete(&f, None, false),
            // The key is being reconciled: not sent; the client's retries
            // end in the memory fallback at worst.
            Err(e) => {
                assert!(e.is_transient() && !e.may_have_executed(), "{e}");
                self.fallback(&f);
            }
        }
    }

    fn finish(&mut self, f: &mut InFlight, outcome: Outcome) {
        let k = key(match f.spec {
            OpSpec::Read(k) | OpSpec::Write(k) | OpSpec::Delete(k) => k,
        });
        let keys: [&[u8]; 1] = [&k];
        let value = f.value.to_string();
        let values: [&[u8]; 1] = [value.as_bytes()];
        let mirror = match f.spec {
            OpSpec::Write(_) => Mirror::Set {
                values: &values,
                ttl: None,
            },
            _ => Mirror::Forget,
        };
        let ticket = std::mem::take(&mut f.ticket);
        self.cons
            .finish(ticket, &keys, outcome, mirror, Some(&self.memory));
    }

    fn step_thread(&mut self, t: usize, lose_reply: bool) {
        let Some(mut f) = self.threads[t].take() else {
            return;
        };
        let role = f.target;
        let up = self.up[idx(role)];
        let k = key(match f.spec {
            OpSpec::Read(k) | OpSpec::Write(k) | OpSpec::Delete(k) => k,
        });
        match f.stage {
            Stage::Begun => {
                if let Some(p) = f.ticket.prepare().cloned() {
                    if !up {
                        let outcome = Outcome {
                            prepared: false,
                            done: false,
                        };
                        self.finish(&mut f, outcome);
                        return self.fallback(&f);
                    }
                    self.apply(role, &p);
                }
                f.stage = Stage::Prepared;
                self.threads[t] = Some(f);
            }
            Stage::Prepared => {
                let store = &mut self.redis[idx(role)];
                let result = if up {
                    match f.spec {
                        OpSpec::Read(_) => store.get(&k).copied(),
                        OpSpec::Write(_) => {
                            store.insert(k.clone(), f.value);
                            None
                        }
                        OpSpec::Delete(_) => {
                            store.remove(&k);
                            None
                        }
                    }
                } else {
                    None
                };
                if !up || lose_reply {
                    // The attempt failed (after the command ran, when the
                    // reply was lost): the client falls back to memory.
                    let outcome = Outcome {
                        prepared: true,
                        done: false,
                    };
                    self.finish(&mut f, outcome);
                    return self.fallback(&f);
                }
                f.stage = Stage::Executed(result);
                self.threads[t] = Some(f);
            }
            Stage::Executed(result) => {
                let outcome = Outcome {
                    prepared: true,
                    done: true,
                };
                self.finish(&mut f, outcome);
                let read = matches!(f.spec, OpSpec::Read(_)).then_some(result);
                self.complete(&f, read, true);
            }
        }
    }

    /// The reconciler, as `Inner::reconcile`: it reads the epoch and the
    /// active endpoint at the start of a pass (a switch may come after),
    /// plans against that view, sends (to the active endpoint through the
    /// router, which refuses a batch planned for the other one), and checks
    /// off.
    fn reconcile(&mut self) {
        match self.reconciler.take() {
            None => {
                self.reconciler = Some(Reconciler::Viewed(self.epoch, self.active));
            }
            Some(Reconciler::Viewed(epoch, active)) => {
                let role =
                    if active == Role::Primary && self.has_secondary && self.step.is_multiple_of(2)
                    {
                        Role::Secondary
                    } else {
                        active
                    };
                let is_active = role == active;
                if let Some(batch) = self
                    .cons
                    .plan(role, is_active, epoch, 2, Some(&self.memory))
                {
                    self.reconciler = Some(Reconciler::Planned(batch, epoch, is_active));
                }
            }
            Some(Reconciler::Planned(batch, epoch, via_router)) => {
                let refused = via_router && batch.role != self.active;
                if self.up[idx(batch.role)] && !refused {
                    let p = batch.pipeline.clone();
                    self.apply(batch.role, &p);
                    self.reconciler = Some(Reconciler::Sent(batch, epoch));
                } else {
                    self.cons.abandon(batch);
                }
            }
            Some(Reconciler::Sent(batch, epoch)) => {
                self.cons.reconciled(batch, epoch, Some(&self.memory));
            }
        }
    }

    fn event(&mut self, ev: Ev) {
        match ev {
            Ev::Down(p) => self.up[usize::from(!p)] = false,
            Ev::Up(p) => self.up[usize::from(!p)] = true,
            Ev::Failover if self.has_secondary && self.active == Role::Primary => {
                self.epoch += 1;
                self.active = Role::Secondary;
            }
            Ev::Restore => self.active = Role::Primary,
            Ev::Failover => {}
            Ev::Evict(k) => {
                self.memory.delete(&key(k));
            }
        }
    }

    pub(crate) fn run(&mut self, actions: &[Action]) {
        self.run_more(actions);
        self.end();
    }

    /// Runs `actions` and leaves operations in flight.
    pub(crate) fn run_more(&mut self, actions: &[Action]) {
        for &a in actions {
            self.step += 1;
            match a {
                Action::Start(t, op) => self.start(t, op),
                Action::Step(t, lose) => self.step_thread(t, lose),
                Action::Event(e) => self.event(e),
                Action::Reconcile => self.reconcile(),
            }
        }
    }

    fn end(&mut self) {
        // Writes still in flight may have been applied: indeterminate.
        self.step = u64::MAX;
        for t in 0..THREADS {
            if let Some(f) = self.threads[t].take() {
                self.complete(&f, None, false);
            }
        }
    }
}

/// Every violation of the contract in `history`.
pub(crate) fn violations(history: &[Rec]) -> Vec<String> {
    let mut out = Vec::new();
    for r in history {
        let Some(Some(v)) = r.read else { continue };
        let Some(w) = history
            .iter()
            .find(|w| w.key == r.key && w.write == Some(Some(v)))
        else {
            out.push(format!("read of k{} returned {v}, never written", r.key));
            continue;
        };
        if let Some(newer) = history.iter().find(|w2| {
            w2.key == r.key
                && w2.write.is_some()
                && w2.acked
                && w.complete < w2.invoke
                && w2.complete < r.invoke
        }) {
            out.push(format!(
                "stale read of k{}: {r:?} returned the value of {w:?}, overwritten by {newer:?}",
                r.key
            ));
        }
    }
    out
}

/// Runs `actions` on a fresh world and panics, listing them, on any
/// violation of the contract.
pub fn check(mode: Reconcile, write_through: bool, has_secondary: bool, actions: &[Action]) {
    let mut world = World::new(mode, write_through, has_secondary);
    world.run(actions);
    let v = violations(&world.history);
    assert!(v.is_empty(), "{v:#?}\nactions: {actions:?}");
}

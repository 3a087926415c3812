//! Automatic pipelining: concurrent calls to one endpoint share one of the
//! pool's connections (a "lane"); requests that queue up while it is busy
//! go out in one write, and their replies are read back in order.
//!
//! No async runtime: flat combining with a leader, and a lane thread for
//! contention. A caller that finds the lane idle leads it: it writes its
//! own request and reads its own reply, with no hop to another thread (a
//! batch of one, the cost of a pooled connection). A caller that finds it
//! led queues its request and waits on its own slot. One batch is in
//! flight at a time: what queues while it is out goes in the next, so
//! batches grow with contention (written as they came, requests would
//! trickle out one or two at a time, each costing a write, a server read
//! and a reply read of its own). Once its own reply is in and the replies
//! written with it are read, a leader writes what queued meanwhile (the
//! server works on it while its callers wake) and frees the lead. The
//! first to get there takes it: a caller arriving already running, or,
//! while callers wait, the lane's pump thread ([`pump`]), which leads for
//! as long as there is work, so that a batch's replies never wait for a
//! caller to be scheduled to read them. Callers are woken after the lead
//! has passed, so a leader preempted by a caller it wakes never holds the
//! lane up. With nobody left, the connection goes back to the pool
//! (health checks, lifetimes, retirement and accounting stay the pool's).
//!
//! Rules this keeps:
//!
//! - **Order**: replies are matched to requests by position on the
//!   connection only; each slot knows how many replies it takes.
//! - **Deadlines**: a waiter leaves at its own deadline. Never written: it
//!   is taken off the queue (`may_have_executed` false). Written: its slot
//!   is abandoned and its reply, when it comes, is read and dropped. A
//!   leader reads with the socket timeout lowered to the earlier of its own
//!   deadline (the pump has none) and that of the caller whose reply comes
//!   next; when that read
//!   times out, redis-rs skips the interrupted reply itself when it comes
//!   (its `messages_to_skip`), the rest of an interrupted pipeline's replies
//!   are counted as owed and dropped here, so the connection stays in step.
//!   A connection that returns no reply for a whole socket timeout while
//!   replies are owed is broken; one that saw a timed-out read is closed,
//!   not given back to the pool, once nobody shares it. A connection that
//!   owes replies only to callers that left (a slow command's, most
//!   likely) takes no new batch: the batch would wait behind it, so it
//!   goes out on a fresh connection and the old one is closed.
//! - **Broken connection**: every call written on it and not answered
//!   fails with an error that may have executed; one of them (the first
//!   still waiting) counts against the breaker, the others are told not to
//!   (see [`Lease::settle`]). Requests queued but not written go out on a
//!   new connection. A failed checkout fails the queued requests with the
//!   pool's error (nothing sent), counted once.
//! - **Master switches** (sentinel): a request goes only on a connection
//!   of the topology generation its attempt began in, else it is refused
//!   unsent, as a dedicated connection refuses it (see `Slot::generation`).
//! - **What never shares** ([`is_shareable`]): a lease pins a connection
//!   of its own for the rest of the call at the first such request.

mod classify;
mod pump;

use std::cell::Cell;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use redis::{RedisError, RedisResult, ServerError, Value};

use super::connect::{breaks_connection, is_readonly_reply, RedisManager};
use super::core::Shared;
use super::{lend, PooledConnection, IO_GRANULARITY};
use crate::error::{Error, ErrorClass, ErrorKind};

pub(crate) use classify::is_shareable;

/// Shared connections per endpoint. One: the lane writes its next batch
/// while the callers of the last are woken, and a second lane halves the
/// batches. Measured at 16 threads (`benches/auto_pipeline.rs`, three
/// interleaved sittings): 1.43–1.70× raw with one lane, 1.17–1.31× with
/// two.
pub(crate) const LANES: usize = 1;

/// An endpoint's shared connections.
pub(crate) struct Mux {
    shared: Arc<Shared<RedisManager>>,
    /// Itself, for the lanes' pump threads (which must not keep it alive).
    this: Weak<Mux>,
    lanes: Box<[Lane]>,
    /// The database of the endpoint's URL (`get_db`).
    db: i64,
    /// Calls in progress (leases alive).
    active: AtomicUsize,
    /// Calls in progress from which a caller that finds the lane busy
    /// waits for it; with fewer, it takes a pooled connection of its own,
    /// as without automatic pipelining (`Config::auto_pipeline_share_from`).
    /// Batches of one or two gain nothing and cost a hop: measured at 4
    /// threads, always waiting was 0.12–0.57× raw, taking a connection
    /// 0.74–1.03×.
    share_from: usize,
    /// Requests written on a shared connection.
    requests: AtomicU64,
    /// Requests whose caller found every lane led and waited for another
    /// caller (a thread hop).
    waits: AtomicU64,
}

struct Lane {
    /// Its place in `Mux::lanes`.
    index: usize,
    state: Mutex<LaneState>,
    /// Leads the lane between callers (see [`pump`]).
    pump: pump::Pump,
}

#[derive(Default)]
struct LaneState {
    /// Someone leads this lane (or the lead is on its way to a waiter).
    led: bool,
    /// Requests not written yet, in arrival order. Every one has a waiter.
    queued: VecDeque<Arc<Slot>>,
    /// The connection, between two leaders.
    io: Option<Io>,
    /// Batches written on this lane (numbers slots).
    batches: u64,
}

/// A lane's connection and what it still owes.
struct Io {
    conn: PooledConnection,
    /// Written, reply not (fully) read yet, oldest first.
    inflight: VecDeque<Arc<Slot>>,
    /// Replies of the head read so far (a pipeline's).
    progress: Progress,
    /// Replies to read and drop before the head's: the rest of a pipeline
    /// whose read was interrupted (redis-rs skips the interrupted one).
    owed: usize,
    /// The read timeout on the socket now.
    read_timeout: Duration,
    /// When a reply last arrived, if known: the clock is read only for
    /// reads a deadline bounds. `None` after a reply read without one (or
    /// a fresh connection): the stall clock then starts at the next
    /// timed-out read.
    last_reply: Option<Instant>,
    /// A `READONLY` reply: no more batches on it.
    retiring: bool,
    /// A read timed out on it: redis-rs owes itself a late reply. Kept
    /// while callers share it; closed, not given back to the pool, once
    /// nobody does (the pool never lends a connection that timed out).
    timed_out: bool,
}

#[derive(Default)]
struct Progress {
    read: usize,
    values: Vec<Value>,
    queued_error: Option<ServerError>,
}

/// What a request expects back.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Expect {
    /// One reply (`req_packed_command`).
    One,
    /// `offset + count` replies, the first `offset` dropped
    /// (`req_packed_commands`).
    Pipeline { offset: usize, count: usize },
}

impl Expect {
    fn replies(self) -> usize {
        match self {
            Expect::One => 1,
            Expect::Pipeline { offset, count } => offset.saturating_add(count),
        }
    }
}

/// A request's answer.
pub(crate) enum Reply {
    One(Value),
    Pipeline(Vec<Value>, Option<ServerError>),
}

/// How a request failed.
pub(crate) struct Failure {
    pub(crate) error: RedisError,
    /// The crate's error when nothing was sent (a failed checkout).
    pub(crate) unsent: Option<Error>,
    /// This caller's failure is the one the breaker counts.
    pub(crate) counted: bool,
}

enum Outcome {
    Reply(Reply, u64),
    Failed(Failure),
}

/// One caller's request.
struct Slot {
    cv: Condvar,
    deadline: Option<Instant>,
    /// The endpoint's topology generation when the call's attempt began:
    /// the request goes only on a connection of that generation. After a
    /// sentinel master switch it is refused (not sent) rather than moved to
    /// the new master, so that the attempt is made again through the
    /// client, which first invalidates there what the old master may have
    /// acknowledged last (as a dedicated connection refuses it).
    generation: u64,
    expect: Expect,
    /// Locked only under the lane's lock (never contended).
    inner: Mutex<SlotInner>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Queued,
    Written,
    Done,
    Abandoned,
}

struct SlotInner {
    phase: Phase,
    /// The lead was passed to this slot's caller.
    lead: bool,
    /// The request, for another caller to write.
    packed: Vec<u8>,
    /// Which batch of the lane carried it.
    batch: u64,
    outcome: Option<Outcome>,
}

impl Slot {
    fn new(deadline: Option<Instant>, generation: u64, expect: Expect) -> Slot {
        Slot {
            cv: Condvar::new(),
            deadline,
            generation,
            expect,
            inner: Mutex::new(SlotInner {
                phase: Phase::Queued,
                lead: false,
                packed: Vec::new(),
                batch: 0,
                outcome: None,
            }),
        }
    }
}

thread_local! {
    /// The lane a thread tries first, so that threads spread over lanes.
    static HOME: Cell<Option<usize>> = const { Cell::new(None) };
}

fn home_lane(n: usize) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    HOME.with(|h| {
        let i = h.get().unwrap_or_else(|| {
            let i = NEXT.fetch_add(1, Ordering::Relaxed);
            h.set(Some(i));
            i
        });
        i % n.max(1)
    })
}

/// An I/O error as redis-rs reports it.
fn io_error(kind: io::ErrorKind, what: &str) -> RedisError {
    RedisError::from(io::Error::new(kind, what.to_string()))
}

fn timeout_failure(counted: bool) -> Failure {
    Failure {
        error: io_error(
            io::ErrorKind::TimedOut,
            "no reply on the shared connection before the call deadline",
        ),
        unsent: None,
        counted,
    }
}

/// The failure of a request never written, carrying the crate's error.
fn unsent(e: &Error, counted: bool) -> Failure {
    let kind = if e.is_timeout() {
        io::ErrorKind::TimedOut
    } else {
        io::ErrorKind::Other
    };
    let typed = Error::new(e.kind(), e.class(), e.to_string())
        .with_counts_against_breaker(e.counts_against_breaker())
        .with_may_have_executed(false);
    Failure {
        error: io_error(kind, &e.to_string()),
        unsent: Some(typed),
        counted,
    }
}

/// Who the lead was offered to (see [`Mux::pass_lead`]).
enum Next {
    Nobody,
    Waiter(Arc<Slot>),
    Pump,
}

/// Failures of one cause: only the first still waiting is counted.
enum Failed {
    /// The connection broke after these were written.
    Broken(RedisError),
    /// Not sent: the checkout failed.
    Unsent(Error),
}

/// What one step of a leader found, applied under the lane's lock.
#[derive(Default)]
struct Events {
    replies: Vec<(Arc<Slot>, Outcome)>,
    failed: Vec<Arc<Slot>>,
    cause: Option<Failed>,
    /// Waiters whose outcome is set, to be woken.
    wake: Vec<Arc<Slot>>,
}

impl Events {
    fn wake_all(&mut self) {
        for slot in self.wake.drain(..) {
            slot.cv.notify_one();
        }
    }
}

impl Mux {
    /// A mux for `shared`'s endpoint (database `db`), in an `Arc` that
    /// its lanes' pump threads refer to weakly; see `Mux::share_from`.
    pub(crate) fn new(shared: Arc<Shared<RedisManager>>, db: i64, share_from: usize) -> Arc<Mux> {
        Arc::new_cyclic(|this| Mux {
            shared,
            share_from,
            this: this.clone(),
            db,
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            lanes: (0..LANES)
                .map(|index| Lane {
                    index,
                    state: Mutex::new(LaneState::default()),
                    pump: pump::Pump::new(),
                })
                .collect(),
        })
    }

    /// Requests written on a shared connection so far, and how many of
    /// them waited for another caller.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.waits.load(Ordering::Relaxed),
        )
    }

    fn now(&self) -> Instant {
        self.shared.clock.now()
    }

    /// Sends `own` (one command or a pipeline) on a shared connection and
    /// waits for its reply until `deadline`. Returns the reply and the
    /// generation of the connection that carried it, or `None` when the
    /// lane is busy and fewer than `share_from` calls are in progress:
    /// the caller then takes a connection of its own (nothing was sent).
    pub(crate) fn call(
        &self,
        own: &[u8],
        expect: Expect,
        deadline: Option<Instant>,
        generation: u64,
    ) -> Option<Result<(Reply, u64), Failure>> {
        if deadline.is_some_and(|d| self.now() >= d) {
            return Some(Err(timeout_failure(false).unsent_timeout(self)));
        }
        let slot = Arc::new(Slot::new(deadline, generation, expect));
        let n = self.lanes.len();
        let home = home_lane(n);
        for k in 0..n {
            let i = (home + k) % n;
            let Some(lane) = self.lanes.get(i) else {
                continue;
            };
            let mut st = lane.state.lock();
            if !st.led {
                // Idle: lead it, no hop.
                st.led = true;
                st.queued.push_back(slot.clone());
                return Some(self.lead(lane, st, &slot, own));
            }
        }
        let Some(lane) = self.lanes.get(home) else {
            return Some(Err(timeout_failure(false)));
        };
        let mut st = lane.state.lock();
        if !st.led {
            st.led = true;
            st.queued.push_back(slot.clone());
            return Some(self.lead(lane, st, &slot, own));
        }
        if self.active.load(Ordering::Relaxed) < self.share_from {
            // Few callers: waiting for the busy lane would cost a hop for
            // a batch of one or two; a connection of its own is quicker.
            return None;
        }
        slot.inner.lock().packed = own.to_vec();
        st.queued.push_back(slot.clone());
        self.waits.fetch_add(1, Ordering::Relaxed);
        Some(self.wait(st, lane, &slot, own))
    }

    /// Waits for the reply, for the lead, or for the deadline. The caller
    /// sleeps on its own slot's lock, not the lane's: a waiter woken with
    /// its reply goes on without touching the lane, so waking a batch's
    /// callers does not make them queue up for the lane's lock.
    fn wait(
        &self,
        st: MutexGuard<'_, LaneState>,
        lane: &Lane,
        slot: &Arc<Slot>,
        own: &[u8],
    ) -> Result<(Reply, u64), Failure> {
        drop(st);
        loop {
            let mut inner = slot.inner.lock();
            let timed_out = loop {
                if inner.outcome.is_some() || inner.lead {
                    break false;
                }
                match slot.deadline {
                    Some(d) => {
                        if slot.cv.wait_until(&mut inner, d).timed_out() {
                            break inner.outcome.is_none() && !inner.lead;
                        }
                    }
                    None => slot.cv.wait(&mut inner),
                }
            };
            if !inner.lead {
                if let Some(outcome) = inner.outcome.take() {
                    inner.phase = Phase::Done;
                    return finish(outcome);
                }
            }
            drop(inner);
            // The lane is needed: to lead, to pass on a lead offered too
            // late, or to leave at the deadline (lock order: lane, then slot).
            let mut st = lane.state.lock();
            let mut inner = slot.inner.lock();
            let offered = std::mem::take(&mut inner.lead);
            if let Some(outcome) = inner.outcome.take() {
                inner.phase = Phase::Done;
                drop(inner);
                if offered && !st.led {
                    // Woken to lead but answered meanwhile: the lead goes
                    // on to someone else.
                    self.pass_lead_and_unlock(lane, st);
                }
                return finish(outcome);
            }
            if offered && !st.led {
                drop(inner);
                st.led = true;
                return self.lead(lane, st, slot, own);
            }
            if !timed_out {
                continue;
            }
            let failure = self.leave(&mut st, slot, inner);
            if !st.led {
                // The lead may have been offered to this caller before it
                // left: offered on to the next.
                self.pass_lead_and_unlock(lane, st);
            }
            return Err(failure);
        }
    }

    /// A caller past its deadline leaves (the lane's lock is held): taken
    /// off the queue if not written yet (nothing sent), else its slot is
    /// abandoned and its reply, when it comes, is read and dropped.
    fn leave(
        &self,
        st: &mut LaneState,
        slot: &Arc<Slot>,
        mut inner: MutexGuard<'_, SlotInner>,
    ) -> Failure {
        if inner.phase == Phase::Queued {
            inner.phase = Phase::Done;
            drop(inner);
            st.queued.retain(|s| !Arc::ptr_eq(s, slot));
            return timeout_failure(false).unsent_timeout(self);
        }
        inner.phase = Phase::Abandoned;
        timeout_failure(true)
    }

    /// Writes what queued (one batch) on the lane's connection, the lane's
    /// lock released meanwhile, and hands out what that found (a failed
    /// checkout or write).
    fn write_queued(
        &self,
        st: &mut MutexGuard<'_, LaneState>,
        io: &mut Option<Io>,
        me: &Arc<Slot>,
        events: &mut Events,
        mine: &mut Option<Outcome>,
    ) {
        let batch = take_batch(st);
        MutexGuard::unlocked(st, || self.step(io, batch, me, &[], events, true));
        self.apply(events, me, mine);
    }

    /// Leads the lane (whose lock is `st`) until `me` has its answer (or its deadline passed)
    /// and the replies written with it are read; then passes the lead on.
    fn lead(
        &self,
        lane: &Lane,
        mut st: MutexGuard<'_, LaneState>,
        me: &Arc<Slot>,
        own: &[u8],
    ) -> Result<(Reply, u64), Failure> {
        let mut io = st.io.take();
        let mut events = Events::default();
        let mut my_outcome: Option<Outcome> = None;
        loop {
            let (phase, my_batch) = {
                let inner = me.inner.lock();
                (inner.phase, inner.batch)
            };
            let done = phase == Phase::Done || my_outcome.is_some();
            if done {
                // Read on while the head went out with mine (its reply is
                // most likely here already); then pass the lead.
                let more = io.as_ref().is_some_and(|io| {
                    io.owed == 0
                        && io.inflight.front().is_some_and(|h| {
                            let head = h.inner.lock();
                            head.batch <= my_batch && head.phase == Phase::Written
                        })
                });
                if !more {
                    break;
                }
            } else if me.deadline.is_some_and(|d| self.now() >= d) {
                let inner = me.inner.lock();
                my_outcome = Some(Outcome::Failed(self.leave(&mut st, me, inner)));
                break;
            }
            // One batch in flight per lane: what queues while it is out
            // goes in the next. Written as it came, requests would trickle
            // out one or two at a time (as their callers wake), each costing
            // a write, a server read and a reply read of its own.
            let awaited = io.as_ref().is_some_and(Io::awaited);
            let batch = if done || awaited {
                Vec::new()
            } else {
                take_batch(&mut st)
            };
            MutexGuard::unlocked(&mut st, || {
                self.step(&mut io, batch, me, own, &mut events, false);
            });
            self.apply(&mut events, me, &mut my_outcome);
            if my_outcome.is_none() {
                // Replies before the leader's own: their callers go on at
                // once. Those after it are woken once the lead has passed,
                // so that a leader preempted by a caller it wakes never
                // holds up the lane.
                events.wake_all();
            }
        }
        if me.inner.lock().phase == Phase::Done
            && io.as_ref().is_some_and(Io::usable)
            && !st.queued.is_empty()
        {
            // What queued meanwhile goes out now, while the lead passes on:
            // the server works on it during the hand-over.
            self.write_queued(&mut st, &mut io, me, &mut events, &mut my_outcome);
        }
        st.io = io;
        // The next leader is woken first: it has I/O to do.
        self.pass_lead_and_unlock(lane, st);
        events.wake_all();
        match my_outcome {
            Some(outcome) => finish(outcome),
            None => Err(timeout_failure(false)),
        }
    }

    /// Hands delivered replies and failures to their waiters (the lane's
    /// lock is held by the caller).
    fn apply(&self, events: &mut Events, me: &Arc<Slot>, mine: &mut Option<Outcome>) {
        for (slot, outcome) in events.replies.drain(..) {
            deliver(&slot, outcome, me, mine, &mut events.wake);
        }
        if let Some(cause) = events.cause.take() {
            let mut counted = false;
            for slot in events.failed.drain(..) {
                let alive = Arc::ptr_eq(&slot, me) || slot.inner.lock().phase != Phase::Abandoned;
                let count = alive && !counted;
                counted |= count;
                let failure = match &cause {
                    Failed::Broken(err) => Failure {
                        error: err.clone(),
                        unsent: None,
                        counted: count,
                    },
                    Failed::Unsent(e) => unsent(e, count && e.counts_against_breaker()),
                };
                deliver(&slot, Outcome::Failed(failure), me, mine, &mut events.wake);
            }
        }
        events.failed.clear();
    }

    /// Frees the lead: whoever comes first takes it, a caller arriving on
    /// its own (already running) or the one offered it here. While callers
    /// wait (a written reply, or a queued request), it is offered to the
    /// lane's pump; without one, to the first still waiting for a written
    /// reply (it reads next), else the first queued (it writes next). Who
    /// is offered it is woken once the lane's lock is released (woken under
    /// it, it would only wait for the lock). With nothing left to do, the
    /// connection is given back to the pool (or closed) before the lane's
    /// lock is released, so that the lane's next leader finds it there.
    fn pass_lead(&self, lane: &Lane, st: &mut LaneState) -> Next {
        st.led = false;
        let next = st
            .io
            .as_ref()
            .and_then(|io| {
                io.inflight
                    .iter()
                    .find(|s| s.inner.lock().phase == Phase::Written)
            })
            .or_else(|| st.queued.front());
        if let Some(next) = next {
            if lane.pump.available() {
                return Next::Pump;
            }
            next.inner.lock().lead = true;
            return Next::Waiter(next.clone());
        }
        if let Some(io) = st.io.take() {
            let mut conn = io.conn;
            if !io.inflight.is_empty() || io.owed > 0 || io.retiring || io.timed_out {
                // Nobody waits for what it still owes: closed rather than kept.
                conn.mark_broken();
            }
            drop(conn);
        }
        Next::Nobody
    }

    /// [`Mux::pass_lead`], then releases the lane and wakes the new leader.
    fn pass_lead_and_unlock(&self, lane: &Lane, mut st: MutexGuard<'_, LaneState>) {
        let next = self.pass_lead(lane, &mut st);
        drop(st);
        match next {
            Next::Nobody => {}
            Next::Waiter(slot) => {
                slot.cv.notify_one();
            }
            Next::Pump => {
                if !lane.pump.offer(&self.this, lane.index) {
                    // No pump thread: offered to a waiting caller instead.
                    let st = lane.state.lock();
                    if !st.led {
                        self.pass_lead_and_unlock(lane, st);
                    }
                }
            }
        }
    }

    /// Leads lane `index` for its pump thread, while callers wait: writes
    /// a batch when none is awaited, reads replies, and hands them over;
    /// gives the lead up when nobody waits any more.
    fn pump(&self, index: usize) {
        let Some(lane) = self.lanes.get(index) else {
            return;
        };
        let mut st = lane.state.lock();
        if st.led {
            // A caller got there first.
            return;
        }
        st.led = true;
        // The pump has no request of its own: a slot no queue holds.
        let nobody = Arc::new(Slot::new(None, 0, Expect::One));
        let mut io = st.io.take();
        let mut events = Events::default();
        let mut none = None;
        loop {
            let awaited = io.as_ref().is_some_and(Io::awaited);
            if !awaited && st.queued.is_empty() {
                break;
            }
            let batch = if awaited {
                Vec::new()
            } else {
                take_batch(&mut st)
            };
            MutexGuard::unlocked(&mut st, || {
                self.step(&mut io, batch, &nobody, &[], &mut events, false);
            });
            self.apply(&mut events, &nobody, &mut none);
            if !io.as_ref().is_some_and(Io::awaited)
                && io.as_ref().is_some_and(Io::usable)
                && !st.queued.is_empty()
            {
                // A batch answered: the next goes out before its callers
                // are woken, so the server works while they run.
                self.write_queued(&mut st, &mut io, &nobody, &mut events, &mut none);
            }
            if !events.wake.is_empty() {
                MutexGuard::unlocked(&mut st, || events.wake_all());
            }
        }
        st.io = io;
        self.pass_lead_and_unlock(lane, st);
        events.wake_all();
    }

    /// One step of I/O, without the lane's lock: the connection if needed,
    /// the write of `batch`, the read of one reply.
    fn step(
        &self,
        io: &mut Option<Io>,
        batch: Vec<Arc<Slot>>,
        me: &Arc<Slot>,
        own: &[u8],
        events: &mut Events,
        write_only: bool,
    ) {
        if !batch.is_empty() {
            if io.as_ref().is_some_and(Io::owes_only_callers_gone) {
                // What it still owes is a reply nobody waits for, most
                // likely a slow command's (its caller's deadline passed):
                // a new batch would wait behind it, so a fresh connection
                // takes the batch and this one is closed.
                if let Some(old) = io.take() {
                    let err = io_error(
                        io::ErrorKind::TimedOut,
                        "the shared connection owed replies only to callers that left",
                    );
                    self.broken(old, err, events);
                }
            }
            if !io.as_ref().is_some_and(Io::usable) {
                if let Some(old) = io.take() {
                    self.broken(
                        old,
                        io_error(
                            io::ErrorKind::NotConnected,
                            "the shared connection was replaced",
                        ),
                        events,
                    );
                }
                let deadline = batch.iter().filter_map(|s| s.deadline).min();
                match lend(&self.shared, deadline) {
                    Ok(conn) => *io = Some(Io::new(conn)),
                    Err(e) => {
                        events.failed.extend(batch);
                        events.cause = Some(Failed::Unsent(e));
                        return;
                    }
                }
            }
            let Some(current) = io.as_mut() else {
                return;
            };
            let generation = current.conn.generation();
            let (batch, moved): (Vec<_>, Vec<_>) =
                batch.into_iter().partition(|s| s.generation == generation);
            for slot in moved {
                events
                    .replies
                    .push((slot, Outcome::Failed(self.master_moved())));
            }
            if batch.is_empty() {
                return;
            }
            let sent = if batch.len() == 1 && batch.first().is_some_and(|s| Arc::ptr_eq(s, me)) {
                current.conn.raw_mut().send_packed_command(own)
            } else {
                let mut buf = Vec::new();
                for s in &batch {
                    if Arc::ptr_eq(s, me) {
                        buf.extend_from_slice(own);
                    } else {
                        buf.extend_from_slice(&std::mem::take(&mut s.inner.lock().packed));
                    }
                }
                current.conn.raw_mut().send_packed_command(&buf)
            };
            if sent.is_ok() {
                self.requests
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            current.inflight.extend(batch);
            if let Err(err) = sent {
                if let Some(old) = io.take() {
                    self.broken(old, err, events);
                }
                return;
            }
        }
        if write_only {
            return;
        }
        let Some(current) = io.as_mut() else {
            return;
        };
        if current.inflight.is_empty() && current.owed == 0 {
            return;
        }
        match self.read_one(current, me, events) {
            Ok(()) => {}
            Err(err) => {
                if let Some(old) = io.take() {
                    self.broken(old, err, events);
                }
            }
        }
    }

    /// Fails every call still waiting on `io` and closes it.
    fn broken(&self, mut io: Io, err: RedisError, events: &mut Events) {
        io.conn.mark_broken();
        if err.is_connection_dropped() || err.is_connection_refusal() {
            self.shared.manager.topology.note_trouble();
        }
        events.failed.extend(io.inflight.drain(..));
        if !events.failed.is_empty() {
            events.cause = Some(Failed::Broken(err));
        }
    }

    /// Reads one reply (to the head, or owed), within the earlier of the
    /// head's deadline and the leader's own. `Err` breaks the connection.
    fn read_one(&self, io: &mut Io, me: &Arc<Slot>, events: &mut Events) -> RedisResult<()> {
        let socket_timeout = self.shared.manager.socket_timeout;
        let head_deadline = match io.inflight.front() {
            Some(h) if io.owed == 0 && h.inner.lock().phase == Phase::Written => h.deadline,
            _ => None,
        };
        // The leader's own deadline too, answered or not: it never reads
        // past it (a head it interrupts fails with a timeout).
        let limit = [head_deadline, me.deadline].into_iter().flatten().min();
        // The clock is read only when a deadline bounds the read.
        let budget = limit.map_or(socket_timeout, |l| {
            l.saturating_duration_since(self.now()).min(socket_timeout)
        });
        if budget.is_zero() {
            // The head's time is up before its reply: it leaves without a
            // read (its reply, all of it, is owed).
            if io.owed == 0 {
                if let Some(head) = io.inflight.pop_front() {
                    let left = head.expect.replies().saturating_sub(io.progress.read);
                    io.owed = io.owed.saturating_add(left);
                    io.progress = Progress::default();
                    events
                        .replies
                        .push((head, Outcome::Failed(timeout_failure(true))));
                }
            }
            return Ok(());
        }
        // Lower the timeout when it would overrun, raise it when it would
        // cut a read short; no syscall while it is about right.
        if budget.saturating_add(IO_GRANULARITY) < io.read_timeout || budget > io.read_timeout {
            io.conn.raw_mut().set_read_timeout(Some(budget))?;
            io.read_timeout = budget;
            io.conn.io_timeout = budget;
        }
        match io.conn.raw_mut().recv_response() {
            // RESP3 pushes are not replies.
            Ok(Value::Push { .. }) => Ok(()),
            Ok(value) => {
                io.last_reply = limit.map(|_| self.now());
                if io.owed > 0 {
                    io.owed -= 1;
                    return Ok(());
                }
                if is_readonly_reply(&value) {
                    // A replica now: the master moved. No more batches on it.
                    io.retiring = true;
                    self.shared.manager.topology.note_trouble();
                }
                let Some(head) = io.inflight.front() else {
                    return Err(io_error(
                        io::ErrorKind::InvalidData,
                        "a reply nobody asked for on the shared connection",
                    ));
                };
                let expect = head.expect;
                let p = &mut io.progress;
                match expect {
                    Expect::One => {}
                    Expect::Pipeline { offset, .. } => match value {
                        Value::ServerError(err) if p.read < offset => {
                            p.queued_error.get_or_insert(err);
                            p.read += 1;
                            return self.complete(io, events);
                        }
                        _ if p.read < offset => {
                            p.read += 1;
                            return self.complete(io, events);
                        }
                        value => {
                            p.values.push(value);
                            p.read += 1;
                            return self.complete(io, events);
                        }
                    },
                }
                if let Some(head) = io.inflight.pop_front() {
                    let generation = io.conn.generation();
                    events
                        .replies
                        .push((head, Outcome::Reply(Reply::One(value), generation)));
                }
                Ok(())
            }
            Err(err) if err.is_timeout() => {
                io.timed_out = true;
                // redis-rs skips the interrupted reply when it comes.
                if io.owed > 0 {
                    io.owed -= 1;
                } else if let Some(head) = io.inflight.pop_front() {
                    let left = head.expect.replies().saturating_sub(io.progress.read);
                    io.owed = io.owed.saturating_add(left.saturating_sub(1));
                    io.progress = Progress::default();
                    events
                        .replies
                        .push((head, Outcome::Failed(timeout_failure(true))));
                }
                // A whole socket timeout without a reply: the connection is
                // dead (without a deadline the read waited that long).
                let now = self.now();
                let stalled = match io.last_reply {
                    _ if limit.is_none() => true,
                    Some(t) => now.saturating_duration_since(t) >= socket_timeout,
                    None => {
                        io.last_reply = Some(now);
                        false
                    }
                };
                if stalled {
                    return Err(err);
                }
                Ok(())
            }
            Err(err) if breaks_connection(&err) => Err(err),
            // Not expected from `recv_response` (error replies are values).
            Err(err) => Err(err),
        }
    }

    /// Completes the head pipeline once all its replies are read.
    fn complete(&self, io: &mut Io, events: &mut Events) -> RedisResult<()> {
        let Some(head) = io.inflight.front() else {
            return Ok(());
        };
        if io.progress.read < head.expect.replies() {
            return Ok(());
        }
        let progress = std::mem::take(&mut io.progress);
        if progress.values.iter().any(is_readonly_reply)
            || progress
                .queued_error
                .as_ref()
                .is_some_and(|e| e.code() == "READONLY")
        {
            io.retiring = true;
            self.shared.manager.topology.note_trouble();
        }
        if let Some(head) = io.inflight.pop_front() {
            let generation = io.conn.generation();
            events.replies.push((
                head,
                Outcome::Reply(
                    Reply::Pipeline(progress.values, progress.queued_error),
                    generation,
                ),
            ));
        }
        Ok(())
    }
}

impl Mux {
    /// A request not sent because the master moved since its attempt began.
    fn master_moved(&self) -> Failure {
        let e = Error::new(
            ErrorKind::Connection,
            ErrorClass::Transient,
            format!(
                "not sent to {}: the master moved",
                self.shared.settings.endpoint
            ),
        )
        .with_counts_against_breaker(false)
        .with_may_have_executed(false);
        unsent(&e, false)
    }
}

impl Failure {
    /// The deadline passed before the request was written.
    fn unsent_timeout(self, mux: &Mux) -> Failure {
        let e = Error::new(
            ErrorKind::Timeout,
            ErrorClass::Transient,
            format!(
                "no time left for the command to {}: the call deadline has passed",
                mux.shared.settings.endpoint
            ),
        )
        // The caller's time ran out; nothing says the server is unwell.
        .with_counts_against_breaker(false)
        .with_may_have_executed(false);
        unsent(&e, false)
    }
}

impl Io {
    fn new(conn: PooledConnection) -> Io {
        let read_timeout = conn.io_timeout;
        Io {
            conn,
            inflight: VecDeque::new(),
            progress: Progress::default(),
            owed: 0,
            read_timeout,
            last_reply: None,
            retiring: false,
            timed_out: false,
        }
    }

    /// A caller waits for a reply written on it (not only abandoned slots
    /// or owed replies): the next batch waits until it is answered.
    fn awaited(&self) -> bool {
        self.inflight
            .iter()
            .any(|s| s.inner.lock().phase == Phase::Written)
    }

    /// Replies are owed on it (or redis-rs owes itself the late reply of
    /// a timed-out read), but no caller waits for one.
    fn owes_only_callers_gone(&self) -> bool {
        (self.owed > 0 || !self.inflight.is_empty() || self.timed_out) && !self.awaited()
    }

    /// New batches may go out on it.
    fn usable(&self) -> bool {
        !self.retiring && !self.conn.is_broken() && self.conn.is_current()
    }
}

/// Takes every queued request as the lane's next batch (the lane's lock
/// is held): marked written, numbered.
fn take_batch(st: &mut LaneState) -> Vec<Arc<Slot>> {
    if st.queued.is_empty() {
        return Vec::new();
    }
    st.batches = st.batches.wrapping_add(1);
    let number = st.batches;
    let batch: Vec<Arc<Slot>> = st.queued.drain(..).collect();
    for s in &batch {
        let mut inner = s.inner.lock();
        inner.phase = Phase::Written;
        inner.batch = number;
    }
    batch
}

/// Gives `outcome` to `slot`'s waiter (to be woken through `wake`), or
/// keeps it for the leader (`me`). An abandoned slot's outcome is dropped.
fn deliver(
    slot: &Arc<Slot>,
    outcome: Outcome,
    me: &Arc<Slot>,
    mine: &mut Option<Outcome>,
    wake: &mut Vec<Arc<Slot>>,
) {
    if Arc::ptr_eq(slot, me) {
        me.inner.lock().phase = Phase::Done;
        *mine = Some(outcome);
        return;
    }
    let mut inner = slot.inner.lock();
    if inner.phase == Phase::Abandoned {
        return;
    }
    inner.phase = Phase::Done;
    inner.outcome = Some(outcome);
    drop(inner);
    wake.push(slot.clone());
}

fn finish(outcome: Outcome) -> Result<(Reply, u64), Failure> {
    match outcome {
        Outcome::Reply(reply, generation) => Ok((reply, generation)),
        Outcome::Failed(f) => Err(f),
    }
}

/// One call's use of the shared connections: what a [`PooledConnection`]
/// holds instead of a connection of its own when automatic pipelining is
/// on. Requests that may share go through the [`Mux`]; at the first one
/// that may not, a connection of its own is checked out for the rest of
/// the call.
pub(crate) struct Lease {
    mux: Arc<Mux>,
    deadline: Option<Instant>,
    /// The topology generation when the attempt began (see `Slot`).
    began: u64,
    pinned: Option<Box<PooledConnection>>,
    /// The generation of the connection that carried the last request.
    generation: u64,
    /// How the last request failed, when the endpoint must know better
    /// than the error the caller's closure saw.
    last: Option<Settled>,
}

enum Settled {
    /// Not sent (the checkout failed): the pool's own error; whether it
    /// is the one of its group the breaker counts.
    Unsent(Error, bool),
    /// The shared connection broke: another caller's failure counts.
    Uncounted,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.mux.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lease {
    pub(crate) fn new(mux: Arc<Mux>, deadline: Option<Instant>) -> Lease {
        let began = mux.shared.manager.topology.generation();
        mux.active.fetch_add(1, Ordering::Relaxed);
        Lease {
            mux,
            deadline,
            began,
            pinned: None,
            generation: 0,
            last: None,
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn db(&self) -> i64 {
        self.mux.db
    }

    /// Marks the pinned connection, if any, for closing.
    pub(crate) fn mark_broken(&mut self) {
        if let Some(pinned) = &mut self.pinned {
            pinned.mark_broken();
        }
    }

    /// Sends `packed`, shared when it may be.
    pub(crate) fn request(&mut self, packed: &[u8], expect: Expect) -> RedisResult<Reply> {
        self.last = None;
        if self.pinned.is_none() && is_shareable(packed) {
            if let Some(answer) = self.mux.call(packed, expect, self.deadline, self.began) {
                return match answer {
                    Ok((reply, generation)) => {
                        self.generation = generation;
                        Ok(reply)
                    }
                    Err(f) => {
                        self.last = match f.unsent {
                            Some(e) => Some(Settled::Unsent(e, f.counted)),
                            None if !f.counted => Some(Settled::Uncounted),
                            None => None,
                        };
                        Err(f.error)
                    }
                };
            }
        }
        let conn = match &mut self.pinned {
            Some(conn) => conn,
            None => match super::lend_for_call(&self.mux.shared, self.deadline) {
                Ok(conn) => self.pinned.insert(Box::new(conn)),
                Err(e) => {
                    let error = unsent(&e, false).error;
                    let counts = e.counts_against_breaker();
                    self.last = Some(Settled::Unsent(e, counts));
                    return Err(error);
                }
            },
        };
        if conn.generation() != self.began {
            // Dialled after a master switch this attempt did not see: not
            // sent (see `Slot::generation`).
            let failure = self.mux.master_moved();
            self.last = failure.unsent.map(|e| Settled::Unsent(e, false));
            return Err(failure.error);
        }
        self.generation = conn.generation();
        match expect {
            Expect::One => {
                redis::ConnectionLike::req_packed_command(&mut **conn, packed).map(Reply::One)
            }
            Expect::Pipeline { offset, count } => {
                redis::ConnectionLike::req_packed_commands(&mut **conn, packed, offset, count)
                    .map(|values| Reply::Pipeline(values, None))
            }
        }
    }

    /// The error the endpoint reports for a failed attempt whose closure
    /// returned `e`, and whether the breaker counts it.
    pub(crate) fn settle(&mut self, e: Error) -> (Error, bool) {
        match self.last.take() {
            Some(Settled::Unsent(typed, counted)) => (typed, counted),
            Some(Settled::Uncounted) => (e, false),
            None => {
                let counts = e.counts_against_breaker();
                (e, counts)
            }
        }
    }
}

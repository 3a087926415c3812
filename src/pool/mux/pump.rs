//! A lane's pump: the thread that leads a lane between callers.
//!
//! A caller that finds a lane idle leads it itself (no hop). When it is
//! done and others still wait (requests in flight or queued), the lead
//! goes to the lane's pump rather than to one of those waiting callers.
//! A waiting caller would first have to be woken to read, and would then
//! hold the lead only until its own reply: a hand-over, with a wake-up
//! on the way, every batch. The pump keeps the lead while there is work:
//! it writes a batch, reads its replies, writes what queued meanwhile,
//! wakes the callers answered, and reads again, so that while threads
//! contend, the connection's replies are read without waiting for any
//! caller to be scheduled. With no work left it gives the lead up and
//! sleeps; the next caller to find the lane idle leads it again.
//!
//! The thread is started at a lane's first hand-over (an endpoint that
//! never sees two callers at once never has one), holds only a weak
//! reference to the [`Mux`] while it sleeps, and ends when the mux is
//! dropped. If it cannot be started, the lead goes to a waiting caller,
//! as it would without a pump.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex};

use super::Mux;

/// The pump threads' name.
pub(crate) const THREAD_NAME: &str = "rr-pipeline";

/// A lane's pump thread, started on first use.
pub(super) struct Pump {
    signal: Arc<Signal>,
    /// Starting the thread failed: the lead goes to waiting callers.
    failed: AtomicBool,
}

struct Signal {
    state: Mutex<State>,
    cv: Condvar,
}

#[derive(Default)]
struct State {
    /// The thread runs.
    started: bool,
    /// The lead was offered to the pump and it has not looked yet.
    wanted: bool,
    /// The mux is gone: the thread ends.
    stop: bool,
}

impl Pump {
    pub(super) fn new() -> Pump {
        Pump {
            signal: Arc::new(Signal {
                state: Mutex::new(State::default()),
                cv: Condvar::new(),
            }),
            failed: AtomicBool::new(false),
        }
    }

    /// Whether the lead may be offered to the pump: false once starting
    /// its thread has failed.
    pub(super) fn available(&self) -> bool {
        !self.failed.load(Ordering::Relaxed)
    }

    /// Offers the lead of lane `lane` of `mux` to the pump, starting its
    /// thread on first use. False if the thread could not be started (the
    /// caller then offers the lead to a waiting caller).
    pub(super) fn offer(&self, mux: &Weak<Mux>, lane: usize) -> bool {
        let mut state = self.signal.state.lock();
        if !state.started {
            let signal = self.signal.clone();
            let mux = mux.clone();
            let spawned = std::thread::Builder::new()
                .name(THREAD_NAME.to_string())
                .spawn(move || run(&signal, &mux, lane));
            if let Err(e) = spawned {
                log::warn!(
                    "automatic pipelining: cannot start a lane thread ({e}); waiting callers lead the lane instead"
                );
                self.failed.store(true, Ordering::Relaxed);
                return false;
            }
            state.started = true;
        }
        state.wanted = true;
        drop(state);
        self.signal.cv.notify_one();
        true
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.signal.state.lock().stop = true;
        self.signal.cv.notify_one();
    }
}

/// The pump thread: sleeps until offered the lead, then leads while there
/// is work.
fn run(signal: &Signal, mux: &Weak<Mux>, lane: usize) {
    loop {
        {
            let mut state = signal.state.lock();
            while !state.wanted && !state.stop {
                signal.cv.wait(&mut state);
            }
            if state.stop {
                return;
            }
            state.wanted = false;
        }
        let Some(mux) = mux.upgrade() else {
            return;
        };
        mux.pump(lane);
    }
}

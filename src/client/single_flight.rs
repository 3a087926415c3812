//! Single-flight for [`Client::get_or_load`](super::Client::get_or_load):
//! while one thread loads a key, the others asking for it wait for that
//! load instead of running their own.
//!
//! A sharded map of the keys being loaded; each load is a [`Flight`] with
//! its own condition variable. The loading thread holds a [`Lead`]: it
//! publishes the value's bytes on success, and when it is dropped without
//! publishing (the loader failed or panicked) the flight fails, its waiters
//! wake up and one of them leads the next load. Errors are never shared:
//! waiters get bytes or nothing.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// Shards of the in-flight map.
const SHARDS: usize = 16;

#[derive(Debug)]
enum State {
    Loading,
    /// The loaded value, as the caller's type encoded it.
    Done(Arc<[u8]>),
    /// The load failed or panicked: the waiters try again.
    Failed,
}

#[derive(Debug)]
struct Flight {
    state: Mutex<State>,
    done: Condvar,
}

type Shard = Mutex<HashMap<Vec<u8>, Arc<Flight>>>;

/// The keys being loaded in this process.
pub(crate) struct SingleFlight {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

/// What a caller does about a key.
pub(crate) enum Join<'a> {
    /// Nobody is loading it: this caller loads, and must publish or drop.
    Lead(Lead<'a>),
    /// Another thread is loading it: wait with [`Wait::wait`].
    Wait(Wait),
}

/// The right (and duty) to load one key.
pub(crate) struct Lead<'a> {
    flights: &'a SingleFlight,
    key: Vec<u8>,
    flight: Arc<Flight>,
    finished: bool,
}

/// A wait for another thread's load.
pub(crate) struct Wait {
    flight: Arc<Flight>,
}

/// How a wait ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The load succeeded: its value's bytes.
    Value(Arc<[u8]>),
    /// The load failed or panicked: join again (one waiter leads next).
    Failed,
    /// The deadline passed first.
    TimedOut,
}

impl SingleFlight {
    pub(crate) fn new() -> SingleFlight {
        SingleFlight {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &[u8]) -> &Shard {
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        &self.shards[i]
    }

    /// Leads the load of `key`, or waits for the one in flight.
    pub(crate) fn join(&self, key: &[u8]) -> Join<'_> {
        let mut shard = self.shard(key).lock();
        if let Some(flight) = shard.get(key) {
            return Join::Wait(Wait {
                flight: flight.clone(),
            });
        }
        let flight = Arc::new(Flight {
            state: Mutex::new(State::Loading),
            done: Condvar::new(),
        });
        shard.insert(key.to_vec(), flight.clone());
        Join::Lead(Lead {
            flights: self,
            key: key.to_vec(),
            flight,
            finished: false,
        })
    }

    /// Keys being loaded now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

impl Lead<'_> {
    /// The load succeeded: hands `bytes` to every waiter.
    pub(crate) fn publish(mut self, bytes: Arc<[u8]>) {
        self.finish(State::Done(bytes));
    }

    fn finish(&mut self, state: State) {
        if self.finished {
            return;
        }
        self.finished = true;
        // Out of the map first: a caller arriving now starts afresh (and
        // finds the value in the cache, stored before this).
        {
            let mut shard = self.flights.shard(&self.key).lock();
            if shard
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                shard.remove(&self.key);
            }
        }
        *self.flight.state.lock() = state;
        self.flight.done.notify_all();
    }
}

impl Drop for Lead<'_> {
    /// Not published: the loader failed or panicked. The waiters must not
    /// hang, so they are woken to try again.
    fn drop(&mut self) {
        self.finish(State::Failed);
    }
}

impl Wait {
    /// Waits until the load ends or `deadline` passes.
    pub(crate) fn wait(self, deadline: Instant) -> Waited {
        let mut state = self.flight.state.lock();
        loop {
            match &*state {
                State::Done(bytes) => return Waited::Value(bytes.clone()),
                State::Failed => return Waited::Failed,
                State::Loading => {
                    if self
                        .flight
                        .done
                        .wait_until(&mut state, deadline)
                        .timed_out()
                    {
                        return match &*state {
                            State::Done(bytes) => Waited::Value(bytes.clone()),
                            State::Failed => Waited::Failed,
                            State::Loading => Waited::TimedOut,
                        };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[test]
    fn one_leads_the_others_wait_for_its_value() {
        let sf = SingleFlight::new();
        let Join::Lead(lead) = sf.join(b"k") else {
            panic!("the first caller leads");
        };
        let Join::Wait(wait) = sf.join(b"k") else {
            panic!("the second caller waits");
        };
        assert!(matches!(sf.join(b"other"), Join::Lead(_)));
        lead.publish(Arc::from(&b"v"[..]));
        assert_eq!(wait.wait(far()), Waited::Value(Arc::from(&b"v"[..])));
        assert_eq!(sf.len(), 0);
    }

    #[test]
    fn a_dropped_lead_fails_the_flight_and_the_next_caller_leads() {
        let sf = SingleFlight::new();
        let lead = sf.join(b"k");
        let Join::Wait(wait) = sf.join(b"k") else {
            panic!("waits");
        };
        drop(lead);
        assert_eq!(wait.wait(far()), Waited::Failed);
        assert!(matches!(sf.join(b"k"), Join::Lead(_)));
    }

    #[test]
    fn a_panicking_leader_releases_its_waiters() {
        let sf = Arc::new(SingleFlight::new());
        let (led_tx, led_rx) = crossbeam_channel::bounded::<()>(0);
        let (joined_tx, joined_rx) = crossbeam_channel::bounded::<()>(0);
        let leader = {
            let sf = sf.clone();
            std::thread::spawn(move || {
                let _lead = sf.join(b"k");
                let _ = led_tx.send(());
                // The waiter has joined before the panic.
                let _ = joined_rx.recv();
                panic!("loader panicked");
            })
        };
        assert!(led_rx.recv().is_ok());
        let Join::Wait(wait) = sf.join(b"k") else {
            panic!("the leader is in: this caller waits");
        };
        assert!(joined_tx.send(()).is_ok());
        assert_eq!(wait.wait(far()), Waited::Failed);
        assert!(leader.join().is_err());
        assert_eq!(sf.len(), 0);
    }

    #[test]
    fn a_wait_ends_at_its_deadline() {
        let sf = SingleFlight::new();
        let _lead = sf.join(b"k");
        let Join::Wait(wait) = sf.join(b"k") else {
            panic!("waits");
        };
        assert_eq!(wait.wait(Instant::now()), Waited::TimedOut);
    }
}

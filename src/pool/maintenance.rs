//! The maintenance thread: closes expired idle connections and keeps
//! `min_idle` warm, on a schedule read from the pool's `Clock`.
//!
//! It holds only a `Weak` reference, so it never keeps a pool alive, and it
//! exits as soon as the last `Pool` handle drops (its channel disconnects);
//! that drop joins it, so no thread outlives the pool.

use crate::log_fields::{log_fields, Fields};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};

use super::core::{Manage, Settings, Shared};

/// Owned by the pool handles; dropping the last one stops the thread.
pub(crate) struct Maintenance {
    /// Dropped first in `Drop`, which disconnects the thread's receiver.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    // Read by the tests only: proves the thread is gone.
    #[cfg_attr(not(test), allow(dead_code))]
    exited: Arc<AtomicBool>,
}

/// How often the thread runs: half the shortest timer it enforces, between
/// 100 ms and 30 s.
pub(crate) fn period(settings: &Settings) -> Duration {
    let mut p = settings.health_check_interval;
    if let Some(t) = settings.idle_timeout {
        p = p.min(t);
    }
    if let Some(t) = settings.max_lifetime {
        p = p.min(t);
    }
    (p / 2).clamp(Duration::from_millis(100), Duration::from_secs(30))
}

impl Maintenance {
    /// Starts the thread. If the OS refuses a thread the pool still works:
    /// expiry then happens lazily at checkout, and `min_idle` is not kept.
    pub(crate) fn start<M: Manage>(shared: &Arc<Shared<M>>) -> Maintenance {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let exited = Arc::new(AtomicBool::new(false));
        let weak: Weak<Shared<M>> = Arc::downgrade(shared);
        let every = period(&shared.settings);
        let clock = shared.clock.clone();
        let flag = exited.clone();
        let thread = std::thread::Builder::new()
            .name("resilient-redis-pool".into())
            .spawn(move || {
                let mut due = clock.now();
                loop {
                    if clock.now() >= due {
                        let Some(shared) = weak.upgrade() else { break };
                        shared.maintain();
                        drop(shared);
                        due = clock.now() + every;
                    }
                    let wait = due
                        .saturating_duration_since(clock.now())
                        .max(Duration::from_millis(1));
                    match stopped.recv_timeout(wait) {
                        Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                flag.store(true, Ordering::Release);
            });
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                let message = e.to_string();
                log_fields!(
                    log::Level::Warn,
                    Fields::new("start_thread").error("io", &message);
                    "could not start the pool maintenance thread: {e}"
                );
                exited.store(true, Ordering::Release);
                None
            }
        };
        Maintenance {
            stop: Some(stop),
            thread,
            exited,
        }
    }

    /// `true` once the thread has returned (tests).
    #[cfg(test)]
    pub(crate) fn exited(&self) -> Arc<AtomicBool> {
        self.exited.clone()
    }
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread itself may end up dropping the last handle (through
            // a listener); it cannot join itself.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

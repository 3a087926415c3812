//! A background thread that calls a tick function at an interval, holding
//! only a weak reference to its target, and stops when the target's owner
//! drops the [`Prober`].

use crate::log_fields::{log_fields, Fields};
use std::sync::Weak;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, Sender};

/// The thread name, as it shows in `/proc/<pid>/task/*/comm` (15 bytes at most).
pub(crate) const THREAD_NAME: &str = "rr-prober";

/// Owns the thread; dropping it stops and joins the thread.
pub(crate) struct Prober {
    stop: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Prober {
    /// Calls `tick` on the target every `interval` (real time: the tick
    /// itself reads the client's clock to decide what is due) until the
    /// `Prober` is dropped or the target is gone.
    pub(crate) fn start<T: Send + Sync + 'static>(
        target: Weak<T>,
        interval: Duration,
        tick: fn(&T),
    ) -> Prober {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let spawned = std::thread::Builder::new()
            .name(THREAD_NAME.to_string())
            .spawn(move || {
                // Ticks on every timeout; a stop message or a dropped
                // sender ends the loop.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    match target.upgrade() {
                        Some(t) => tick(&t),
                        None => break,
                    }
                }
            });
        match spawned {
            Ok(handle) => Prober {
                stop: Some(stop),
                handle: Some(handle),
            },
            Err(e) => {
                // Without the thread the primary is still restored by
                // explicit probes; say so once rather than fail the client.
                let message = e.to_string();
                log_fields!(
                    log::Level::Warn,
                    Fields::new("start_thread").error("io", &message);
                    "could not start the failover prober thread: {e}"
                );
                Prober {
                    stop: None,
                    handle: None,
                }
            }
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(handle) = self.handle.take() {
            // The last reference may be released inside a tick, on the
            // prober thread itself: joining would wait for ourselves.
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn ticks_and_stops_on_drop() {
        let target = Arc::new(AtomicU32::new(0));
        let prober = Prober::start(Arc::downgrade(&target), Duration::from_millis(1), |t| {
            t.fetch_add(1, Ordering::SeqCst);
        });
        while target.load(Ordering::SeqCst) < 3 {
            std::thread::yield_now();
        }
        // Drop joins the thread: once it returns, no tick can run any more.
        drop(prober);
        let after = target.load(Ordering::SeqCst);
        assert_eq!(
            Arc::strong_count(&target),
            1,
            "the thread holds no reference"
        );
        assert_eq!(target.load(Ordering::SeqCst), after);
    }

    #[test]
    fn exits_when_the_target_is_gone() {
        let target = Arc::new(AtomicU32::new(0));
        let prober = Prober::start(Arc::downgrade(&target), Duration::from_millis(1), |_| {});
        drop(target);
        // Drop joins: it returns only once the thread has exited.
        drop(prober);
    }
}

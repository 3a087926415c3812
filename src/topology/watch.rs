//! The watcher thread of a sentinel topology: subscribed to
//! `+switch-master` on one sentinel at a time, it applies each switch the
//! moment it is published. After each (re)subscription it resolves the
//! master once, so a switch published while it was not listening is not
//! missed; and it resolves at once when trouble put the master in doubt,
//! so a client with no dial in progress (its breaker open) still follows.
//! A sentinel that dies is left for the next one, with backoff.
//!
//! Like the failover prober, it holds only a weak reference and stops when
//! its [`Watcher`] is dropped (within the quarter second it blocks for).

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};

use super::sentinel::{parse_switch, SentinelTopology};
use crate::config::sentinel::host_port;

/// The thread name, as it shows in `/proc/<pid>/task/*/comm` (15 bytes at most).
pub(crate) const THREAD_NAME: &str = "rr-sentinel";

/// How long the subscription blocks before it checks for a stop or doubt.
const POLL: Duration = Duration::from_millis(250);
/// Reconnect backoff: doubles from the first to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(2);
/// A subscription that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(5);

/// Owns the thread; dropping it stops and joins the thread.
pub(crate) struct Watcher {
    stop: Option<Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Starts watching `topology`'s sentinels.
    pub(crate) fn start(topology: &Arc<SentinelTopology>) -> Watcher {
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let weak = Arc::downgrade(topology);
        let spawned = std::thread::Builder::new()
            .name(THREAD_NAME.to_string())
            .spawn(move || run(&weak, &stopped));
        match spawned {
            Ok(handle) => Watcher {
                stop: Some(stop),
                handle: Some(handle),
            },
            Err(e) => {
                // Without it the master is still followed on READONLY and
                // failed connects; say so once rather than fail the client.
                log::warn!("could not start the sentinel watcher thread: {e}");
                Watcher {
                    stop: None,
                    handle: None,
                }
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(handle) = self.handle.take() {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

/// `true` once the owner is gone.
fn stopping(stopped: &Receiver<()>) -> bool {
    !matches!(stopped.try_recv(), Err(TryRecvError::Empty))
}

/// Waits `d` unless stopped first; `true` when stopped.
fn pause(stopped: &Receiver<()>, d: Duration) -> bool {
    !matches!(stopped.recv_timeout(d), Err(RecvTimeoutError::Timeout))
}

fn run(weak: &Weak<SentinelTopology>, stopped: &Receiver<()>) {
    let mut next = 0usize;
    let mut backoff = BACKOFF_FIRST;
    loop {
        if stopping(stopped) {
            return;
        }
        let Some(topology) = weak.upgrade() else {
            return;
        };
        let list = topology.sentinel_list();
        if list.is_empty() {
            return;
        }
        let sentinel = list[next % list.len()].clone();
        let name = host_port(&sentinel.0, sentinel.1);
        let started = Instant::now();
        match watch_one(&topology, &sentinel, &name, stopped) {
            Ok(()) => return,
            Err(why) => {
                if started.elapsed() > STABLE {
                    backoff = BACKOFF_FIRST;
                }
                log::debug!(
                    "sentinel watcher: {name} for '{}': {why}; trying the next sentinel in {backoff:?}",
                    topology.service()
                );
                drop(topology);
                next = next.wrapping_add(1);
                if pause(stopped, backoff) {
                    return;
                }
                backoff = backoff.saturating_mul(2).min(BACKOFF_CAP);
                continue;
            }
        }
    }
}

/// Two connect timeouts from now: a sentinel and the master's `ROLE`.
fn deadline(topology: &SentinelTopology) -> Instant {
    crate::clock::saturating_add(topology.now(), topology.connect_timeout.saturating_mul(2))
}

/// Subscribes on one sentinel and handles its messages until it fails
/// (`Err`) or the owner stops the thread (`Ok`).
fn watch_one(
    topology: &SentinelTopology,
    sentinel: &(String, u16),
    name: &str,
    stopped: &Receiver<()>,
) -> Result<(), String> {
    let mut conn = topology.connect_sentinel(sentinel, topology.connect_timeout)?;
    let mut pubsub = conn.as_pubsub();
    pubsub
        .subscribe("+switch-master")
        .map_err(|e| format!("SUBSCRIBE failed: {e}"))?;
    pubsub
        .set_read_timeout(Some(POLL))
        .map_err(|e| e.to_string())?;
    log::debug!(
        "sentinel watcher: subscribed to +switch-master on {name} for '{}'",
        topology.service()
    );
    // Catch up with a switch published while nobody listened, until a
    // discovery answers: one that failed (dead sentinels listed first used
    // up its time) or found another under way must not leave a switch
    // published before this subscription unseen.
    let mut caught_up = false;
    loop {
        if stopping(stopped) {
            return Ok(());
        }
        if !caught_up || topology.in_doubt() {
            caught_up = topology.refresh(deadline(topology), true).is_ok();
        }
        match pubsub.get_message() {
            Ok(msg) => {
                let payload: String = msg.get_payload().unwrap_or_default();
                if let Some(addr) = parse_switch(&payload, topology.service()) {
                    topology.switch_announced(addr, name.to_string());
                }
            }
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(format!("subscription lost: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::config::sentinel::SentinelSpec;

    fn topology(port: u16) -> Arc<SentinelTopology> {
        let spec = SentinelSpec {
            sentinels: vec![("127.0.0.1".to_string(), port)],
            service: "mymaster".to_string(),
            password: None,
        };
        let addr = redis::ConnectionAddr::Tcp("127.0.0.1".to_string(), port);
        let Ok(info) = redis::IntoConnectionInfo::into_connection_info(addr) else {
            panic!("a TCP address is a connection info");
        };
        Arc::new(SentinelTopology::new(
            &spec,
            info,
            Duration::from_millis(100),
            Duration::from_millis(100),
            "redis+sentinel://127.0.0.1/mymaster",
            SystemClock::shared(),
            10,
        ))
    }

    #[test]
    fn stops_on_drop_while_no_sentinel_answers() {
        // Port 1 refuses: the thread is in its backoff loop.
        let t = topology(1);
        let watcher = Watcher::start(&t);
        assert!(watcher.handle.is_some());
        // Drop joins: it returns only once the thread has exited.
        drop(watcher);
        assert_eq!(Arc::strong_count(&t), 1, "the thread holds no reference");
    }

    #[test]
    fn exits_when_the_topology_is_gone() {
        let t = topology(1);
        let watcher = Watcher::start(&t);
        drop(t);
        drop(watcher);
    }
}

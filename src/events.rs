//! What happened, for whoever wants to know: [`Event`] and [`EventListener`].
//!
//! Listeners are called on the thread that caused the event, outside every
//! lock of the crate, so a listener may call back into the client. Keep them
//! quick: they run on the call path.

use std::sync::Arc;
use std::time::Duration;

use crate::breaker::{BreakerListener, Transition};
use crate::error::{ErrorKind, RateLimit};
use crate::pool::{CloseReason, PoolListener};
use crate::router::Role;
use crate::topology::{MasterSwitch, TopologyListener};

/// Something the client did or noticed. `#[non_exhaustive]`: match with a
/// `_` arm.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// An endpoint's circuit breaker changed state.
    BreakerTransition {
        /// `"primary"` or `"secondary"`.
        endpoint: &'static str,
        /// For a `redis+cluster://` endpoint, `host:port` of the master
        /// whose breaker it is (each master has its own); `None` otherwise.
        node: Option<String>,
        /// From, to, why and when.
        transition: Transition,
    },
    /// Redis became unavailable and operations are now served from memory.
    FallbackEngaged {
        /// What made Redis unavailable.
        cause: ErrorKind,
    },
    /// Redis answers again; operations go back to it.
    FallbackReleased {
        /// Operations served from memory while it was engaged.
        served_from_memory: u64,
        /// How long it was engaged.
        duration: Duration,
    },
    /// Keys written during an outage were reconciled with Redis.
    Reconciled {
        /// `"primary"` or `"secondary"`: where the keys were reconciled.
        endpoint: &'static str,
        /// Keys deleted (invalidated) or written back (replayed).
        keys: usize,
        /// Keys that could not be reconciled (they stay journaled).
        failed: usize,
    },
    /// The client-wide retry budget refused a retry.
    RetryBudgetExhausted,
    /// A pooled connection was closed and will be replaced.
    ConnectionReplaced {
        /// `"primary"` or `"secondary"`.
        endpoint: &'static str,
        /// Why it was closed: `"broken"`, `"idle_expired"`,
        /// `"lifetime_expired"`, `"health_check_failed"`.
        reason: &'static str,
    },
    /// Calls moved from the primary to the secondary Redis.
    FailoverActivated {
        /// Why.
        reason: FailoverReason,
        /// The quota details, when the primary rate-limited us.
        rate_limit: Option<RateLimit>,
        /// How long before the primary is probed again.
        cooldown: Duration,
    },
    /// The sentinels named a new master for a `redis+sentinel://` endpoint
    /// and calls now go to it: connections to the old master are retired
    /// and its breaker's verdict dropped.
    MasterSwitched {
        /// `"primary"` or `"secondary"`: which configured endpoint.
        endpoint: &'static str,
        /// `host:port` of the old master.
        from: String,
        /// `host:port` of the new master.
        to: String,
        /// `host:port` of the sentinel that named it.
        sentinel: String,
        /// How long the switch took as this client saw it: from its first
        /// failed connect or `READONLY` reply from the old master to the
        /// switch; zero when a `+switch-master` announcement came first.
        took: Duration,
    },
    /// The primary answered enough probes and calls moved back to it.
    FailoverRestored {
        /// How long the secondary served.
        duration: Duration,
    },
}

/// Why calls moved to the secondary Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailoverReason {
    /// The primary answered with a quota or rate-limit error.
    RateLimited,
    /// The primary's circuit breaker opened.
    BreakerOpen,
    /// The primary could not be reached.
    ConnectFailure,
}

impl FailoverReason {
    /// A short lowercase name, as used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailoverReason::RateLimited => "rate_limited",
            FailoverReason::BreakerOpen => "breaker_open",
            FailoverReason::ConnectFailure => "connect_failure",
        }
    }
}

/// Receives [`Event`]s. The default method does nothing, so an
/// implementation overrides only what it needs.
///
/// # Examples
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use resilient_redis::{Event, EventListener};
///
/// #[derive(Default)]
/// struct CountOutages(AtomicU64);
///
/// impl EventListener for CountOutages {
///     fn on_event(&self, event: &Event) {
///         if let Event::FallbackEngaged { .. } = event {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
/// ```
pub trait EventListener: Send + Sync {
    /// Called once per event, outside the crate's locks.
    fn on_event(&self, event: &Event) {
        let _ = event;
    }
}

/// Forwards an endpoint's breaker, pool and topology notifications to the
/// client's listeners, as [`Event`]s.
pub(crate) struct Bridge {
    pub(crate) role: Role,
    pub(crate) listeners: Arc<Listeners>,
    /// `host:port` of a cluster node (its breaker's events name it).
    pub(crate) node: Option<String>,
}

impl Bridge {
    /// The same, for the endpoint of cluster node `node`.
    pub(crate) fn for_node(&self, node: String) -> Bridge {
        Bridge {
            role: self.role,
            listeners: self.listeners.clone(),
            node: Some(node),
        }
    }
}

impl BreakerListener for Bridge {
    fn on_transition(&self, transition: &Transition) {
        self.listeners.emit(Event::BreakerTransition {
            endpoint: self.role.as_str(),
            node: self.node.clone(),
            transition: transition.clone(),
        });
    }
}

impl PoolListener for Bridge {
    fn connection_closed(&self, _endpoint: &str, _id: u64, reason: CloseReason) {
        if reason != CloseReason::PoolDropped {
            self.listeners.emit(Event::ConnectionReplaced {
                endpoint: self.role.as_str(),
                reason: reason.as_str(),
            });
        }
    }
}

impl TopologyListener for Bridge {
    fn master_switched(&self, switch: &MasterSwitch) {
        // One INFO line per switch (addresses only, never a secret).
        log::info!(
            "the {} redis master moved from {} to {} (named by sentinel {}; {} ms after the first trouble this client saw; {} keys written there lately are invalidated on the new master)",
            self.role.as_str(),
            switch.from,
            switch.to,
            switch.sentinel,
            switch.took.as_millis(),
            switch.distrusted
        );
        if switch.untracked {
            log::warn!(
                "more keys were written to the old {} redis master just before the switch than could be noted: reads of some may return values older than those writes",
                self.role.as_str()
            );
        }
        self.listeners.emit(Event::MasterSwitched {
            endpoint: self.role.as_str(),
            from: switch.from.clone(),
            to: switch.to.clone(),
            sentinel: switch.sentinel.clone(),
            took: switch.took,
        });
    }
}

/// The listeners of one client.
#[derive(Clone, Default)]
pub(crate) struct Listeners {
    listeners: Vec<Arc<dyn EventListener>>,
}

impl Listeners {
    pub(crate) fn add(&mut self, listener: Arc<dyn EventListener>) {
        self.listeners.push(listener);
    }

    pub(crate) fn emit(&self, event: Event) {
        for l in &self.listeners {
            l.on_event(&event);
        }
    }
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} listener(s)", self.listeners.len())
    }
}

//! Failover restore: the prober's tick, one probe of the primary, and the
//! switch back. Keys written on the secondary need no invalidation here for
//! correctness (the consistency rules make the primary delete each one
//! before serving it); the restore cleans them in bulk right away so that
//! few calls have to.

use super::inner::Inner;
use crate::events::Event;
use crate::log_fields::{log_fields, millis, Fields};
use crate::router::Router;

impl Inner {
    /// Probes the primary when a probe is due by the client's clock (see
    /// [`Router::probe_due`]).
    pub(crate) fn probe_tick(&self) {
        if let Some(router) = &self.router {
            if router.probe_due(self.clock.now()) {
                self.probe_primary();
            }
        }
    }

    /// One probe of the primary while failover is active (called by the
    /// background thread every `health_check_interval`, or by
    /// [`Client::probe_primary`](super::Client::probe_primary)). Restores
    /// the primary after `success_threshold` good probes, once the cooldown
    /// and the grace period have passed.
    pub(crate) fn probe_primary(&self) -> bool {
        let Some(router) = &self.router else {
            return false;
        };
        if router.secondary.is_none() || !router.failover_active() {
            return false;
        }
        let now = self.clock.now();
        {
            let mut state = router.failover.lock();
            if state.cooldown_until.is_some_and(|until| now < until) {
                return false;
            }
            state.next_probe = now.checked_add(router.probe_interval);
        }
        let ok = ping_once(&router.primary.pool);
        let restore = {
            let mut state = router.failover.lock();
            if ok {
                state.good_probes = state.good_probes.saturating_add(1);
            } else {
                state.good_probes = 0;
            }
            let grace_over = state
                .last_switch
                .is_none_or(|at| now.saturating_duration_since(at) >= router.grace);
            ok && state.good_probes >= self.config.success_threshold && grace_over
        };
        log::debug!(
            "probed the primary redis: {}",
            if ok { "answered" } else { "no answer" }
        );
        restore && self.restore_primary(router)
    }

    /// Switches calls back, then deletes on the primary the keys written
    /// on the secondary (best effort, see the module docs).
    fn restore_primary(&self, router: &Router) -> bool {
        let Some(duration) = router.restore() else {
            return false;
        };
        router.primary.breaker.reset();
        crate::stats::Counters::bump(&self.counters.restores);
        self.reconcile();
        log_fields!(
            log::Level::Info,
            Fields::new("failover_restored").at("primary", router.primary.breaker.state().as_str()),
            duration_ms = millis(duration);
            "restored the primary redis after {:.1} s on the secondary",
            duration.as_secs_f64()
        );
        self.listeners.emit(Event::FailoverRestored { duration });
        true
    }
}

/// One `PING` of the primary through its pool, and one only where the
/// server saw it: on hosted Redis every command is billed.
///
/// - When the checkout's health check `PING`ed a reused idle connection,
///   that answer is the probe.
/// - When the server answered that health check with an error (over its
///   quota, loading, ...), that refusal is the probe's answer: a fresh
///   connection would get the same, and a second `PING` would be billed.
/// - When the idle connection was dead (its `PING` never reached the
///   server), the pool dialled a fresh one, and the fresh one is what the
///   probe asks: a dead idle socket says nothing about the server.
///
/// The probe does not go through the breaker: it may be open, and a probe
/// must not wait for it. During failover nothing else uses the primary's
/// pool, so the health-check counters tell what the checkout did.
fn ping_once(pool: &crate::pool::Pool) -> bool {
    let before = pool.stats();
    let mut conn = match pool.get() {
        Ok(conn) => conn,
        Err(_) => return false,
    };
    let after = pool.stats();
    if after.health_checks > before.health_checks {
        if conn.is_reused() {
            return true;
        }
        if after.health_checks_refused > before.health_checks_refused {
            return false;
        }
    }
    redis::cmd("PING").query::<String>(&mut conn).is_ok()
}

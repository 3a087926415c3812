//! Failover restore: the prober's tick, one probe of the primary, and the
//! switch back with the invalidation of keys written on the secondary.

use super::inner::{Inner, RECONCILE_CHUNK};
use crate::error::Error;
use crate::events::Event;
use crate::router::{Role, Router};
use crate::stats::Counters;

impl Inner {
    /// The prober thread's tick: probes the primary when a probe is due by
    /// the client's clock (see [`Router::probe_due`]).
    pub(crate) fn probe_tick(&self) {
        if let Some(router) = &self.router {
            if router.probe_due(self.clock.now()) {
                self.probe_primary();
            }
        }
    }

    /// One probe of the primary while failover is active (called by the
    /// prober thread every `health_check_interval`, or by
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
            state.next_probe = Some(now + router.probe_interval);
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

    /// Invalidates on the primary every key written on the secondary, then
    /// switches back. Keys are also deleted on the secondary, so that a
    /// later failover does not serve them stale.
    fn restore_primary(&self, router: &Router) -> bool {
        if !self.invalidate_failover_keys(router) {
            return false;
        }
        let Some(duration) = router.restore() else {
            return false;
        };
        // Writes that reached the secondary while we switched.
        self.invalidate_failover_keys(router);
        router.primary.breaker.reset();
        log::info!(
            "restored the primary redis after {:.1} s on the secondary",
            duration.as_secs_f64()
        );
        self.listeners.emit(Event::FailoverRestored { duration });
        true
    }

    fn invalidate_failover_keys(&self, router: &Router) -> bool {
        let drained = self.failover_journal.drain();
        for (i, chunk) in drained.entries.chunks(RECONCILE_CHUNK).enumerate() {
            let mut del = redis::cmd("DEL");
            for e in chunk {
                del.arg(&e.key[..]);
            }
            let on_primary = router
                .primary
                .pool
                .get()
                .and_then(|mut c| del.query::<()>(&mut c).map_err(Error::from_redis));
            if let Err(e) = on_primary {
                log::debug!("primary not restored yet: invalidating keys failed: {e}");
                for e in &drained.entries[i * RECONCILE_CHUNK..] {
                    self.failover_journal.record_set(&e.key);
                }
                return false;
            }
            if let Some(secondary) = &router.secondary {
                if let Ok(mut c) = secondary.pool.get() {
                    let _ = del.query::<()>(&mut c);
                }
            }
            Counters::bump_by(&self.counters.reconciled_keys, chunk.len() as u64);
        }
        if !drained.entries.is_empty() {
            self.listeners.emit(Event::Reconciled {
                endpoint: Role::Primary.as_str(),
                keys: drained.entries.len(),
                failed: 0,
                overflowed: drained.overflowed(),
            });
        }
        true
    }
}

/// One `PING` of the primary through its pool, and never two: when the
/// checkout already `PING`ed an idle connection (the pool's health check),
/// that answer is the probe. On hosted Redis every command is billed.
///
/// The probe does not go through the breaker: it may be open, and a probe
/// must not wait for it. During failover nothing else uses the primary's
/// pool, so the health-check counter tells whether the checkout pinged.
fn ping_once(pool: &crate::pool::Pool) -> bool {
    let checks_before = pool.stats().health_checks;
    let mut conn = match pool.get() {
        Ok(conn) => conn,
        Err(_) => return false,
    };
    if pool.stats().health_checks > checks_before {
        // A reused connection passed the PING; a new one means the idle
        // one failed it (and was replaced).
        return conn.is_reused();
    }
    redis::cmd("PING").query::<String>(&mut conn).is_ok()
}

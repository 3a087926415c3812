//! The machinery behind [`Client`](super::Client): one call's walk through
//! retry → router → breaker → pool, the fallback decision, and the
//! reconciliation of keys written while Redis was unavailable.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use redis::RedisResult;

use super::outage::{Change, Outage};
use crate::breaker::{BreakerListener, BreakerState, Transition};
use crate::clock::SharedClock;
use crate::config::{Config, FallbackMode};
use crate::error::{Error, ErrorClass, ErrorKind};
use crate::events::{Event, Listeners};
use crate::fallback::{JournalOp, MemoryStore, OutageJournal, Reconcile};
use crate::pool::{CloseReason, PoolListener, PooledConnection};
use crate::retry::{Retrier, RetryObserver};
use crate::router::prober::Prober;
use crate::router::{Role, Router, Switch};
use crate::stats::Counters;

/// Keys per `DEL` (or per replay pipeline) during reconciliation.
pub(crate) const RECONCILE_CHUNK: usize = 256;

/// How a cache operation changes keys, for the journals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Write {
    /// A read: nothing to journal.
    None,
    /// The keys were written (set, incremented, given a TTL).
    Set,
    /// The keys were deleted.
    Delete,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) clock: SharedClock,
    /// `None` when memory-only (no Redis URL).
    pub(crate) router: Option<Router>,
    pub(crate) retrier: Retrier,
    /// `None` when the fallback mode is `Disabled`.
    pub(crate) memory: Option<MemoryStore>,
    /// Keys written in memory while Redis was unavailable.
    pub(crate) journal: OutageJournal,
    /// Keys written on the secondary while failover was active.
    pub(crate) failover_journal: OutageJournal,
    /// Set while `journal` or `reconciling` may hold keys: lets the hot
    /// path skip both lookups.
    journal_pending: AtomicBool,
    /// Keys drained from `journal` whose reconciliation has not finished:
    /// still served from memory, never from Redis.
    reconciling: Mutex<HashSet<Vec<u8>>>,
    reconcile_lock: Mutex<()>,
    reconcile_mode: Reconcile,
    overflow_logged: AtomicBool,
    pub(crate) counters: Counters,
    pub(crate) outage: Outage,
    pub(crate) listeners: Arc<Listeners>,
    pub(crate) prober: OnceLock<Prober>,
}

/// Forwards breaker and pool notifications to the client's listeners.
pub(crate) struct Bridge {
    pub(crate) role: Role,
    pub(crate) listeners: Arc<Listeners>,
}

impl BreakerListener for Bridge {
    fn on_transition(&self, transition: &Transition) {
        self.listeners.emit(Event::BreakerTransition {
            endpoint: self.role.as_str(),
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

/// Counts retries and budget denials for one client.
struct Observer<'a>(&'a Inner);

impl RetryObserver for Observer<'_> {
    fn on_retry(&self, _retry: u32, _delay: Duration, _error: &Error) {
        Counters::bump(&self.0.counters.retries);
    }

    fn on_budget_denied(&self, _error: &Error) {
        Counters::bump(&self.0.counters.retry_budget_denials);
        self.0.listeners.emit(Event::RetryBudgetExhausted);
    }
}

impl Inner {
    pub(crate) fn new(
        config: Config,
        clock: SharedClock,
        router: Option<Router>,
        retrier: Retrier,
        reconcile_mode: Reconcile,
        listeners: Arc<Listeners>,
    ) -> Inner {
        let memory = (config.fallback_mode != FallbackMode::Disabled)
            .then(|| MemoryStore::from_config(&config, clock.clone()));
        let journal_keys = config.fallback_max_entries;
        Inner {
            memory,
            journal: OutageJournal::new(journal_keys),
            failover_journal: OutageJournal::new(journal_keys),
            journal_pending: AtomicBool::new(false),
            reconciling: Mutex::new(HashSet::new()),
            reconcile_lock: Mutex::new(()),
            reconcile_mode,
            overflow_logged: AtomicBool::new(false),
            counters: Counters::default(),
            outage: Outage::default(),
            listeners,
            prober: OnceLock::new(),
            config,
            clock,
            router,
            retrier,
        }
    }

    /// `prefix + key`, as sent to Redis and stored in memory; no copy
    /// when there is no prefix.
    pub(crate) fn key<'k>(&self, key: &'k [u8]) -> Cow<'k, [u8]> {
        let prefix = self.config.key_prefix.as_bytes();
        if prefix.is_empty() {
            return Cow::Borrowed(key);
        }
        let mut k = Vec::with_capacity(prefix.len() + key.len());
        k.extend_from_slice(prefix);
        k.extend_from_slice(key);
        Cow::Owned(k)
    }

    /// One cache operation on `keys`: Redis first (retried, routed, guarded
    /// by the breaker), memory when Redis is unavailable and the fallback
    /// is on. `write` says how the operation changes the keys, for the
    /// outage and failover journals.
    pub(crate) fn cache_op<T>(
        &self,
        keys: &[&[u8]],
        write: Write,
        idempotent: bool,
        redis_op: impl FnMut(&mut PooledConnection) -> RedisResult<T>,
        memory_op: impl FnOnce(&MemoryStore) -> Result<T, Error>,
    ) -> Result<T, Error> {
        Counters::bump(&self.counters.requests);
        if self.router.is_none() {
            return self.serve_from_memory(keys, write, None, memory_op);
        }
        if self.reconciling_any(keys) {
            // Only reconciliation lets these keys back to Redis: attempt it
            // here too, or a workload touching nothing but journaled keys
            // would never reach Redis again.
            self.try_reconcile();
            if self.reconciling_any(keys) {
                return self.serve_from_memory(keys, write, None, memory_op);
            }
        }
        match self.redis(idempotent, redis_op) {
            Ok((value, role)) => {
                if role == Role::Secondary && write != Write::None {
                    for k in keys {
                        self.failover_journal.record_set(k);
                    }
                }
                Ok(value)
            }
            Err(e) if self.memory.is_some() && is_availability_failure(&e) => {
                self.serve_from_memory(keys, write, Some(&e), memory_op)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Counts an error returned to the caller.
    pub(crate) fn fail(&self, e: Error) -> Error {
        self.counters.error(&e);
        self.outage.error_suppressed(self.clock.now());
        e
    }

    fn serve_from_memory<T>(
        &self,
        keys: &[&[u8]],
        write: Write,
        cause: Option<&Error>,
        memory_op: impl FnOnce(&MemoryStore) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let Some(memory) = &self.memory else {
            return Err(self.fail(Error::new(
                ErrorKind::Connection,
                ErrorClass::Permanent,
                "no Redis is configured and the in-memory fallback is disabled",
            )));
        };
        match cause {
            Some(cause) => {
                if let Change::Engaged(kind) =
                    self.outage.served_from_memory(cause, self.clock.now())
                {
                    self.listeners.emit(Event::FallbackEngaged { cause: kind });
                }
            }
            // A journaled key, kept in memory until reconciled.
            None => self.outage.served_journaled(self.clock.now()),
        }
        let result = memory_op(memory);
        match write {
            Write::None => Counters::bump(&self.counters.fallback_reads),
            Write::Set | Write::Delete => {
                Counters::bump(&self.counters.fallback_writes);
                // Memory-only clients have nothing to reconcile with.
                if self.router.is_some() {
                    for k in keys {
                        if write == Write::Set {
                            self.journal.record_set(k);
                        } else {
                            self.journal.record_delete(k);
                        }
                    }
                    self.journal_pending.store(true, Ordering::Release);
                }
            }
        }
        result.map_err(|e| self.fail(e))
    }

    /// `true` when one of `keys` was written during an outage and is not
    /// reconciled yet: it must not be read from Redis, which may hold an
    /// older value.
    fn reconciling_any(&self, keys: &[&[u8]]) -> bool {
        if !self.journal_pending.load(Ordering::Acquire) {
            return false;
        }
        let reconciling = self.reconciling.lock();
        keys.iter()
            .any(|k| self.journal.contains(k) || reconciling.contains(*k))
    }

    /// Runs `op` against Redis: retries → router → breaker → pool. Returns
    /// the value and which endpoint served it.
    pub(crate) fn redis<T>(
        &self,
        idempotent: bool,
        mut op: impl FnMut(&mut PooledConnection) -> RedisResult<T>,
    ) -> Result<(T, Role), Error> {
        let Some(router) = &self.router else {
            return Err(Error::new(
                ErrorKind::Connection,
                ErrorClass::Permanent,
                "no Redis is configured (memory-only client)",
            ));
        };
        let result = self.retrier.run(idempotent, &Observer(self), |attempt| {
            let (result, switch) = router.call(idempotent, attempt.deadline, &mut op);
            if let Some(switch) = switch {
                self.failed_over(switch);
            }
            if matches!(&result, Err(e) if e.kind() == ErrorKind::Timeout) {
                // Counted per attempt: it is the time callers paid.
                Counters::bump(&self.counters.timeouts);
            }
            result
        });
        if result.is_ok() {
            self.redis_answered();
        }
        result
    }

    fn failed_over(&self, switch: Switch) {
        Counters::bump(&self.counters.failovers);
        log::warn!(
            "failing over to the secondary redis ({}); the primary is probed again in {:?}",
            switch.reason.as_str(),
            switch.cooldown
        );
        self.listeners.emit(Event::FailoverActivated {
            reason: switch.reason,
            rate_limit: switch.rate_limit,
            cooldown: switch.cooldown,
        });
    }

    /// Redis answered a call: release the fallback and reconcile.
    fn redis_answered(&self) {
        // Every successful call gets here: read the clock only during an
        // outage (`Outage::redis_answered` does nothing otherwise).
        let change = if self.outage.is_engaged() {
            self.outage.redis_answered(self.clock.now())
        } else {
            Change::None
        };
        if let Change::Released { served, duration } = change {
            self.listeners.emit(Event::FallbackReleased {
                served_from_memory: served,
                duration,
            });
            self.reconcile();
        } else if self.journal_pending.load(Ordering::Acquire) {
            self.reconcile();
        }
    }

    /// Reconciles unless the active endpoint's breaker is open (then the
    /// attempt could only fail, after draining and re-recording the journal).
    fn try_reconcile(&self) {
        let open = self.router.as_ref().is_some_and(|r| {
            let b = r.active().breaker.snapshot();
            // An open period that has elapsed still reads `Open` until the
            // next permit request: that one may go ahead and probe.
            b.state == BreakerState::ForcedOpen
                || (b.state == BreakerState::Open && b.retry_after.is_some_and(|d| !d.is_zero()))
        });
        if !open {
            self.reconcile();
        }
    }

    /// After a complete reconciliation in `OnFailure` mode, memory holds
    /// only what was written during the outage: Redis is the truth again,
    /// and a later outage must not serve those values.
    fn clear_memory_after_outage(&self) {
        if self.config.fallback_mode == FallbackMode::OnFailure
            && !self.outage.is_engaged()
            && !self.journal_pending.load(Ordering::Acquire)
        {
            if let Some(memory) = &self.memory {
                memory.clear();
            }
        }
    }

    /// Reconciles the outage journal with Redis: deletes (or replays) every
    /// key written in memory during the outage. One thread at a time; the
    /// others keep serving journaled keys from memory until it is done.
    pub(crate) fn reconcile(&self) {
        let Some(_guard) = self.reconcile_lock.try_lock() else {
            return;
        };
        let drained = self.journal.drain();
        if drained.overflowed() && !self.overflow_logged.swap(true, Ordering::Relaxed) {
            log::warn!(
                "the outage journal overflowed: {} keys written during the outage were not recorded and may read older values from redis until they expire",
                drained.dropped
            );
        }
        self.counters
            .journal_overflows
            .fetch_add(drained.dropped, Ordering::Relaxed);
        if drained.entries.is_empty() {
            self.settle_pending();
            self.clear_memory_after_outage();
            return;
        }
        {
            let mut reconciling = self.reconciling.lock();
            reconciling.extend(drained.entries.iter().map(|e| e.key.to_vec()));
        }
        let mut done = 0;
        let mut failed = 0;
        let mut endpoint = Role::Primary;
        for (i, chunk) in drained.entries.chunks(RECONCILE_CHUNK).enumerate() {
            match self.reconcile_chunk(chunk) {
                Ok(role) => {
                    endpoint = role;
                    done += chunk.len();
                    if role == Role::Secondary {
                        for e in chunk {
                            self.failover_journal.record_set(&e.key);
                        }
                    }
                }
                Err(e) => {
                    // Put the rest back: it is retried on the next success.
                    log::debug!("reconciliation stopped: {e}");
                    for e in &drained.entries[i * RECONCILE_CHUNK..] {
                        match e.op {
                            JournalOp::Set => self.journal.record_set(&e.key),
                            JournalOp::Delete => self.journal.record_delete(&e.key),
                        }
                    }
                    failed = drained.entries.len() - done;
                    break;
                }
            }
        }
        self.reconciling.lock().clear();
        self.settle_pending();
        self.clear_memory_after_outage();
        self.counters
            .reconciled_keys
            .fetch_add(done as u64, Ordering::Relaxed);
        if done > 0 {
            log::info!(
                "reconciled {done} keys written during the outage ({} on the {})",
                match self.reconcile_mode {
                    Reconcile::Invalidate => "invalidated",
                    Reconcile::Replay => "replayed",
                },
                endpoint.as_str()
            );
        }
        self.listeners.emit(Event::Reconciled {
            endpoint: endpoint.as_str(),
            keys: done,
            failed,
            overflowed: drained.overflowed(),
        });
    }

    /// Clears the pending flag once nothing is journaled or in flight.
    fn settle_pending(&self) {
        let reconciling = self.reconciling.lock();
        if reconciling.is_empty() && self.journal.is_empty() {
            self.journal_pending.store(false, Ordering::Release);
        }
    }

    fn reconcile_chunk(&self, chunk: &[crate::fallback::JournalEntry]) -> Result<Role, Error> {
        let mut pipe = redis::pipe();
        match self.reconcile_mode {
            Reconcile::Invalidate => {
                let mut del = redis::cmd("DEL");
                for e in chunk {
                    del.arg(&e.key[..]);
                }
                pipe.add_command(del).ignore();
            }
            Reconcile::Replay => {
                for e in chunk {
                    let replay = match e.op {
                        JournalOp::Set => self
                            .memory
                            .as_ref()
                            .and_then(|m| m.entry_for_replay(&e.key)),
                        JournalOp::Delete => None,
                    };
                    match replay {
                        Some((value, Some(ttl))) => {
                            let ms = ttl.as_millis().max(1) as u64;
                            pipe.cmd("SET")
                                .arg(&e.key[..])
                                .arg(&value[..])
                                .arg("PX")
                                .arg(ms);
                        }
                        Some((value, None)) => {
                            pipe.cmd("SET").arg(&e.key[..]).arg(&value[..]);
                        }
                        // Deleted, expired or evicted in memory: delete in Redis.
                        None => {
                            pipe.cmd("DEL").arg(&e.key[..]);
                        }
                    }
                    pipe.ignore();
                }
            }
        }
        // Both forms are idempotent: DEL and plain SET may be re-sent.
        self.redis(true, |c| pipe.query::<()>(c))
            .map(|((), role)| role)
    }
}

/// Failures that mean "Redis cannot serve this now": served from memory
/// when the fallback is on. Permanent errors (WRONGTYPE, bad auth, bad
/// input) are the caller's to see.
fn is_availability_failure(e: &Error) -> bool {
    matches!(e.class(), ErrorClass::Transient | ErrorClass::RateLimited)
}

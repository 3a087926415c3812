//! The machinery behind [`Client`](super::Client): one call's walk through
//! retry → router → breaker → pool with the consistency rules around each
//! attempt, and the fallback decision.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::RedisResult;

use super::outage::{Change, Outage};
use super::single_flight::SingleFlight;
use crate::clock::SharedClock;
use crate::codec::Codec;
use crate::config::{Config, FallbackMode};
use crate::consistency::{Access, CommandKeys, Consistency, Mirror, Outcome};
use crate::error::{Error, ErrorClass, ErrorKind};
use crate::events::{Event, Listeners};
use crate::fallback::{JournalOp, MemoryStore, Reconcile};
use crate::log_fields::{log_fields, millis, Fields};
use crate::pool::PooledConnection;
use crate::retry::{Retrier, RetryObserver};
use crate::router::prober::Prober;
use crate::router::{Role, Router, Switch};
use crate::stats::call_timer::CallTimer;
use crate::stats::{CallEndpoint, CallOutcome, Counters};
use crate::topology::cluster::Route;

/// Keys per reconciliation pipeline.
pub(crate) const RECONCILE_CHUNK: usize = 256;

/// Reconciliation pipelines per background tick, so that a key written
/// faster than it can be reconciled cannot hold the thread.
const RECONCILE_BATCHES_PER_TICK: usize = 64;

/// What the in-memory store does for an operation when Redis cannot. `F`
/// runs on the store with the instant the call was served at (read once
/// for the outage bookkeeping, the store's TTLs and the call's duration).
pub(crate) enum Fallback<F> {
    /// Nothing: the operation fails with the availability error (`INCR`:
    /// a count the caller cannot tell from a right one is the worst answer).
    /// A memory-only client (no Redis configured) still runs `F`: there the
    /// store is the only truth.
    MemoryOnly(F),
    /// A read served from memory.
    Read(F),
    /// A write served from memory, journaled as this operation.
    Write(JournalOp, F),
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) clock: SharedClock,
    /// `None` when memory-only (no Redis URL).
    pub(crate) router: Option<Router>,
    pub(crate) retrier: Retrier,
    /// `None` when the fallback mode is `Disabled`.
    pub(crate) memory: Option<MemoryStore>,
    /// Where each key's freshest value is; see [`crate::consistency`].
    pub(crate) consistency: Consistency,
    /// One background reconciliation (or restore cleaning) at a time.
    reconcile_lock: Mutex<()>,
    pub(crate) counters: Counters,
    pub(crate) outage: Outage,
    pub(crate) listeners: Arc<Listeners>,
    pub(crate) prober: OnceLock<Prober>,
    /// Value compression, applied in `cache.rs`.
    pub(crate) codec: Codec,
    /// Keys being loaded by `get_or_load`.
    pub(crate) flights: SingleFlight,
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
        // The journal's keys count in the fallback's byte bound: it gets a
        // share of it, the store the rest.
        let journal_bytes = crate::consistency::journal_bytes(config.fallback_max_bytes);
        let memory = (config.fallback_mode != FallbackMode::Disabled).then(|| {
            MemoryStore::new(
                config.fallback_max_entries,
                config.fallback_max_bytes.saturating_sub(journal_bytes),
                clock.clone(),
            )
        });
        let consistency = Consistency::new(
            config.fallback_max_entries,
            journal_bytes,
            reconcile_mode,
            config.fallback_mode == FallbackMode::WriteThrough,
            router.as_ref().is_some_and(|r| r.secondary.is_some()),
        );
        Inner {
            memory,
            consistency,
            reconcile_lock: Mutex::new(()),
            counters: Counters::default(),
            outage: Outage::default(),
            listeners,
            prober: OnceLock::new(),
            codec: Codec::new(config.compression_threshold),
            flights: SingleFlight::new(),
            config,
            clock,
            router,
            retrier,
        }
    }

    /// `prefix + key`, as sent to Redis and stored in memory; no copy
    /// when there is no prefix.
    pub(crate) fn key<'k>(&self, key: &'k [u8]) -> std::borrow::Cow<'k, [u8]> {
        let prefix = self.config.key_prefix.as_bytes();
        if prefix.is_empty() {
            return std::borrow::Cow::Borrowed(key);
        }
        let mut k = Vec::with_capacity(prefix.len() + key.len());
        k.extend_from_slice(prefix);
        k.extend_from_slice(key);
        std::borrow::Cow::Owned(k)
    }

    /// One cache operation on `keys`: Redis first (retried, routed, guarded
    /// by the breaker and the consistency rules), memory when Redis is
    /// unavailable and `fallback` allows it. Timed in the duration histogram.
    pub(crate) fn cache_op<T>(
        &self,
        keys: &[&[u8]],
        access: Access,
        idempotent: bool,
        mirror: Mirror<'_>,
        mut redis_op: impl FnMut(&mut PooledConnection) -> RedisResult<T>,
        fallback: Fallback<impl FnOnce(&MemoryStore, Instant) -> Result<T, Error>>,
    ) -> Result<T, Error> {
        self.cache_op_checked(
            keys,
            access,
            idempotent,
            mirror,
            |c| redis_op(c).map_err(Error::from_redis),
            fallback,
        )
    }

    /// [`Inner::cache_op`] with an operation that classifies its own
    /// failures (it may fail with an error of the crate's own making).
    pub(crate) fn cache_op_checked<T>(
        &self,
        keys: &[&[u8]],
        access: Access,
        idempotent: bool,
        mirror: Mirror<'_>,
        redis_op: impl FnMut(&mut PooledConnection) -> Result<T, Error>,
        fallback: Fallback<impl FnOnce(&MemoryStore, Instant) -> Result<T, Error>>,
    ) -> Result<T, Error> {
        let timer = CallTimer::start(&*self.clock);
        let (result, from_memory, served_at) =
            self.cache_op_untimed(keys, access, idempotent, mirror, redis_op, fallback);
        self.record_duration(timer, served_at, result.is_ok(), from_memory);
        result
    }

    /// [`Inner::cache_op`]; also says whether memory answered (as the
    /// fallback), and when the store served the call (a memory-only
    /// client's store too): the call's end, so it needs no clock read.
    fn cache_op_untimed<T>(
        &self,
        keys: &[&[u8]],
        access: Access,
        idempotent: bool,
        mirror: Mirror<'_>,
        redis_op: impl FnMut(&mut PooledConnection) -> Result<T, Error>,
        fallback: Fallback<impl FnOnce(&MemoryStore, Instant) -> Result<T, Error>>,
    ) -> (Result<T, Error>, bool, Option<Instant>) {
        self.counters.requests.bump();
        if self.router.is_none() {
            let (result, at) = self.serve_from_memory(keys, None, fallback);
            return (result, false, Some(at));
        }
        if access == Access::Read
            && self.memory.is_some()
            && self.consistency.reads_from_memory(keys)
        {
            // The newest value was written during an outage and is not
            // reconciled yet: Redis may hold an older one.
            let (result, at) = self.serve_from_memory(keys, None, fallback);
            return (result, true, Some(at));
        }
        match self.tracked(keys, access, idempotent, mirror, redis_op) {
            Ok(value) => (Ok(value), false, None),
            Err(e)
                if self.memory.is_some()
                    && is_availability_failure(&e)
                    && !matches!(fallback, Fallback::MemoryOnly(_)) =>
            {
                let (result, at) = self.serve_from_memory(keys, Some(&e), fallback);
                (result, true, Some(at))
            }
            Err(e) => (Err(self.fail(e)), false, None),
        }
    }

    /// Counts one call in the duration histogram: by the endpoint calls
    /// go to when it ends (`memory` for a memory-only client) and how it
    /// ended. `served_at`: when the store served it, the call's end.
    fn record_duration(
        &self,
        timer: CallTimer,
        served_at: Option<Instant>,
        ok: bool,
        from_memory: bool,
    ) {
        let took = timer.finish(&*self.clock, served_at);
        let endpoint = match &self.router {
            None => CallEndpoint::Memory,
            Some(r) if r.active().role == Role::Secondary => CallEndpoint::Secondary,
            Some(_) => CallEndpoint::Primary,
        };
        let outcome = match (ok, from_memory) {
            (false, _) => CallOutcome::Error,
            (true, true) => CallOutcome::Fallback,
            (true, false) => CallOutcome::Ok,
        };
        self.counters.durations.record(endpoint, outcome, took);
    }

    /// Runs `redis_op` on `keys` against Redis under the consistency rules:
    /// each attempt records itself before it is sent, invalidates stale
    /// copies first on the same connection, and checks off what it made
    /// fresh once it is acknowledged.
    pub(crate) fn tracked<T>(
        &self,
        keys: &[&[u8]],
        access: Access,
        idempotent: bool,
        mirror: Mirror<'_>,
        mut redis_op: impl FnMut(&mut PooledConnection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let memory = self.memory.as_ref();
        // On a cluster, the master of the first key's slot serves it.
        let route = Route::keys(keys, access != Access::Read);
        self.redis_routed(route, idempotent, |conn, role| {
            let cluster = self
                .router
                .as_ref()
                .and_then(|r| r.endpoint(role).cluster());
            if let Some(c) = cluster.filter(|c| c.has_distrusted()) {
                // A master failed over: what it acknowledged lately may be
                // missing on its successor; deleted before it is served.
                c.drain_distrusted(|keys| self.cluster_distrusted(role, keys));
            }
            let sentinel = self
                .router
                .as_ref()
                .and_then(|r| r.endpoint(role).sentinel());
            if let Some(s) = sentinel.filter(|s| s.has_distrusted()) {
                // The master changed and may not hold the newest writes of
                // these keys: they are deleted there before anything else
                // is sent to it (other attempts wait for this one).
                s.drain_distrusted(|keys| self.distrust(conn, role, keys));
            }
            let epoch = self.router.as_ref().map_or(0, Router::epoch);
            let ticket = self.consistency.begin(keys, role, epoch, access, memory)?;
            if let Some(prepare) = ticket.prepare() {
                if let Err(e) = prepare.query::<()>(conn) {
                    let outcome = Outcome {
                        prepared: false,
                        done: false,
                    };
                    self.consistency
                        .finish(ticket, keys, outcome, mirror, memory);
                    // Only the invalidation (idempotent) may have run; the
                    // operation itself was never sent.
                    return Err(Error::from_redis(e).with_may_have_executed(false));
                }
            }
            let result = redis_op(conn);
            if let (Some(s), Ok(_), false) = (sentinel, &result, access == Access::Read) {
                // Before the caller sees the acknowledgement (see
                // `topology::recent`).
                s.acknowledged(conn.generation(), keys);
            }
            let outcome = Outcome {
                prepared: true,
                done: result.is_ok(),
            };
            self.consistency
                .finish(ticket, keys, outcome, mirror, memory);
            result
        })
        .map(|(value, _)| value)
    }

    /// Deletes `keys` on the new master behind `role` through `conn` (the
    /// first attempt there after a switch); when that fails, marks them
    /// stale instead, so each is deleted before it is served.
    fn distrust(&self, conn: &mut PooledConnection, role: Role, keys: &[Arc<[u8]>]) {
        let mut pipe = redis::pipe();
        for chunk in keys.chunks(RECONCILE_CHUNK) {
            let del = pipe.cmd("DEL");
            for key in chunk {
                del.arg(&key[..]);
            }
            del.ignore();
        }
        if let Err(e) = pipe.query::<()>(conn) {
            log::debug!(
                "invalidating {} keys on the new {} redis master failed ({}); they are deleted before each is served",
                keys.len(),
                role.as_str(),
                Error::from_redis(e)
            );
            let refused = self.consistency.mark_stale(role, keys);
            if refused > 0 {
                log::warn!(
                    "{refused} keys written to the old {} redis master could not be recorded for invalidation (the journal is full): reads of them may return older values",
                    role.as_str()
                );
            }
        }
    }

    /// A command or pipeline through `execute`/`pipeline`: tracked by the
    /// keys the client can tell; a command whose keys it cannot tell is
    /// sent only to the primary, and when it may have written, every
    /// journaled or write-through memory value is dropped.
    pub(crate) fn command<T>(
        &self,
        keys: CommandKeys,
        idempotent: bool,
        mut op: impl FnMut(&mut PooledConnection) -> RedisResult<T>,
    ) -> Result<T, Error> {
        self.counters.requests.bump();
        let timer = CallTimer::start(&*self.clock);
        let result = match keys {
            CommandKeys::Known { keys, read_only } => {
                let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                let access = if read_only {
                    Access::Read
                } else {
                    Access::Modify
                };
                self.tracked(&refs, access, idempotent, Mirror::Forget, |c| {
                    op(c).map_err(Error::from_redis)
                })
            }
            CommandKeys::Unknown => {
                let result = self
                    .redis(idempotent, |conn, role| {
                        if role == Role::Secondary {
                            return Err(Error::new(
                                ErrorKind::Unsupported,
                                ErrorClass::Permanent,
                                "not sent to the secondary redis: the client cannot tell which keys this command touches, so a later read could not be kept from older values",
                            ));
                        }
                        op(conn).map_err(Error::from_redis)
                    })
                    .map(|(v, _)| v);
                // Acknowledged or not, it may have overwritten any key.
                self.forget_memory_values();
                result
            }
        };
        self.record_duration(timer, None, result.is_ok(), false);
        result.map_err(|e| self.fail(e))
    }

    fn forget_memory_values(&self) {
        let memory = self.memory.as_ref();
        self.consistency.forget_memory_values(memory);
        if self.config.fallback_mode == FallbackMode::WriteThrough {
            if let Some(m) = memory {
                m.clear();
            }
        }
    }

    /// Counts an error returned to the caller.
    pub(crate) fn fail(&self, e: Error) -> Error {
        if e.is_resent_by_client() {
            return e;
        }
        self.counters.error(&e);
        self.outage
            .error_suppressed(self.clock.now(), &|| self.scope());
        e
    }

    /// Runs `fallback` on the store; returns its result and the one
    /// instant read for it (the outage bookkeeping's, the store's and the
    /// end of the call's duration).
    fn serve_from_memory<T>(
        &self,
        keys: &[&[u8]],
        cause: Option<&Error>,
        fallback: Fallback<impl FnOnce(&MemoryStore, Instant) -> Result<T, Error>>,
    ) -> (Result<T, Error>, Instant) {
        let now = self.clock.now();
        let Some(memory) = &self.memory else {
            let e = Error::new(
                ErrorKind::Connection,
                ErrorClass::Permanent,
                "no Redis is configured and the in-memory fallback is disabled",
            );
            return (Err(self.fail(e)), now);
        };
        match cause {
            Some(cause) => {
                if let Change::Engaged(kind) =
                    self.outage.served_from_memory(cause, now, &|| self.scope())
                {
                    self.listeners.emit(Event::FallbackEngaged { cause: kind });
                }
            }
            // A journaled key, kept in memory until reconciled.
            None => self.outage.served_journaled(now, &|| self.scope()),
        }
        let result = match fallback {
            // Only `INCR` uses it: a write.
            Fallback::MemoryOnly(op) if self.router.is_none() => {
                Counters::bump(&self.counters.fallback_writes);
                op(memory, now)
            }
            Fallback::Read(op) => {
                self.counters.fallback_reads.bump();
                op(memory, now)
            }
            Fallback::Write(_, op) if self.router.is_none() => {
                Counters::bump(&self.counters.fallback_writes);
                op(memory, now)
            }
            Fallback::Write(journal_op, op) => {
                Counters::bump(&self.counters.fallback_writes);
                self.consistency
                    .write_to_memory(keys, journal_op, memory, |m| op(m, now))
            }
            // Not reached: `cache_op` never sends these here with a router.
            Fallback::MemoryOnly(_) => Err(Error::new(
                ErrorKind::Connection,
                ErrorClass::Transient,
                "redis is unavailable and this operation is not served from memory",
            )),
        };
        (result.map_err(|e| self.fail(e)), now)
    }

    /// Runs `op` against Redis: retries → router → breaker → pool. `op` is
    /// told which endpoint its connection goes to. Returns the value and
    /// which endpoint served it.
    pub(crate) fn redis<T>(
        &self,
        idempotent: bool,
        op: impl FnMut(&mut PooledConnection, Role) -> Result<T, Error>,
    ) -> Result<(T, Role), Error> {
        self.redis_routed(Route::ANY, idempotent, op)
    }

    /// [`Inner::redis`]; on a cluster, to the node `route` names.
    pub(crate) fn redis_routed<T>(
        &self,
        route: Route<'_>,
        idempotent: bool,
        mut op: impl FnMut(&mut PooledConnection, Role) -> Result<T, Error>,
    ) -> Result<(T, Role), Error> {
        let Some(router) = &self.router else {
            return Err(Error::new(
                ErrorKind::Connection,
                ErrorClass::Permanent,
                "no Redis is configured (memory-only client)",
            ));
        };
        let result = self.retrier.run(idempotent, &Observer(self), |attempt| {
            let (result, switch) = router.call_routed(route, idempotent, attempt.deadline, &mut op);
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

    /// The active endpoint and its breaker's state, for the log fields.
    pub(crate) fn scope(&self) -> (&'static str, &'static str) {
        match &self.router {
            Some(router) => {
                let active = router.active();
                (active.role.as_str(), active.breaker.state().as_str())
            }
            None => ("memory", "none"),
        }
    }

    fn failed_over(&self, switch: Switch) {
        Counters::bump(&self.counters.failovers);
        let primary = self.router.as_ref().map(|r| &r.primary);
        // What the primary last failed with (a quota reply, a refused connect).
        let message = primary.and_then(|p| p.last_error()).unwrap_or_default();
        log_fields!(
            log::Level::Warn,
            Fields::new("failover")
                .error(switch.reason.as_str(), &message)
                .at(
                    "primary",
                    primary.map_or("none", |p| p.breaker.state().as_str())
                ),
            cooldown_ms = millis(switch.cooldown);
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

    /// Redis answered a call: release the fallback. Reconciliation is the
    /// background thread's (see [`Inner::reconcile`]): no caller waits for it.
    fn redis_answered(&self) {
        // Every successful call gets here: read the clock only during an
        // outage (`Outage::redis_answered` does nothing otherwise).
        if !self.outage.is_engaged() {
            return;
        }
        if let Change::Released { served, duration } = self
            .outage
            .redis_answered(self.clock.now(), &|| self.scope())
        {
            self.listeners.emit(Event::FallbackReleased {
                served_from_memory: served,
                duration,
            });
        }
    }

    /// The background thread's tick: probes the primary when failover
    /// makes one due, and reconciles tracked keys.
    pub(crate) fn background_tick(&self) {
        self.cluster_tick();
        self.probe_tick();
        self.reconcile();
    }

    /// Sends the reconciliation of tracked keys to the endpoints that can
    /// take it now: journaled keys and stale copies to the active endpoint,
    /// stale copies to the secondary once calls have left it. Runs on the
    /// background thread (and before a restore), never in a caller's call.
    pub(crate) fn reconcile(&self) {
        let Some(router) = &self.router else {
            return;
        };
        if self.consistency.len() == 0 {
            return;
        }
        // Blocks only a concurrent restore (a user's `probe_primary`) for
        // the background thread's pass, never a cache call.
        let _guard = self.reconcile_lock.lock();
        // The epoch first: a switch after it only makes the pass's view
        // older, and the plan never treats a value newer than its view as
        // stale.
        let epoch = router.epoch();
        let active = router.active().role;
        for endpoint in router.endpoints() {
            let is_active = endpoint.role == active;
            // A primary calls have left (rate-limited or down) is cleaned
            // after the restore instead: every command there is billed.
            if is_active || endpoint.role == Role::Secondary {
                self.reconcile_on(router, endpoint, is_active, epoch);
            }
        }
    }

    /// Reconciles what `endpoint` can take; returns whether every batch
    /// went through.
    pub(crate) fn reconcile_on(
        &self,
        router: &Router,
        endpoint: &crate::router::RedisEndpoint,
        active: bool,
        epoch: u64,
    ) -> bool {
        let memory = self.memory.as_ref();
        let (mut keys, mut journaled, mut failed) = (0usize, 0usize, None);
        for _ in 0..RECONCILE_BATCHES_PER_TICK {
            let Some(batch) =
                self.consistency
                    .plan(endpoint.role, active, epoch, RECONCILE_CHUNK, memory)
            else {
                break;
            };
            let (n, j) = (batch.len(), batch.journaled());
            let mut send = |c: &mut PooledConnection, role: Role| {
                if role != batch.role {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        ErrorClass::Permanent,
                        "calls switched endpoints: the batch is planned again",
                    ));
                }
                batch.pipeline.query::<()>(c).map_err(Error::from_redis)
            };
            // To the active endpoint through the router, so that a quota
            // cooldown keeps it away (and its end lets it probe) as it does
            // callers; to a secondary calls have left, directly.
            let cluster = router.endpoint(endpoint.role).cluster();
            let sent = if let Some(cluster) = cluster {
                // Split by slot: each key goes to the master that owns it
                // now (after a failover, the promoted replica).
                cluster.pipeline_by_slot(&batch.pipeline, None).map(drop)
            } else if active {
                let (result, switch) = router.call(true, None, &mut send);
                if let Some(switch) = switch {
                    // The reconciler's own call may be what fails over.
                    self.failed_over(switch);
                }
                result.map(|((), _)| ())
            } else {
                endpoint.call(None, &mut send)
            };
            match sent {
                Ok(()) => {
                    self.consistency.reconciled(batch, epoch, memory);
                    keys += n;
                    journaled += j;
                }
                Err(e) => {
                    self.consistency.abandon(batch);
                    log::debug!(
                        "reconciliation on the {} redis stopped: {e}",
                        endpoint.role.as_str()
                    );
                    failed = Some(n);
                    break;
                }
            }
        }
        if keys > 0 {
            Counters::bump_by(&self.counters.reconciled_keys, keys as u64);
            log_fields!(
                log::Level::Info,
                Fields::new("reconcile")
                    .count(failed.unwrap_or(0) as u64)
                    .at(endpoint.role.as_str(), endpoint.breaker.state().as_str()),
                keys = keys;
                "reconciled {keys} keys on the {} redis ({journaled} written during an outage, {})",
                endpoint.role.as_str(),
                match self.consistency.mode() {
                    Reconcile::Invalidate => "invalidated",
                    Reconcile::Replay => "replayed",
                },
            );
            self.listeners.emit(Event::Reconciled {
                endpoint: endpoint.role.as_str(),
                keys,
                failed: failed.unwrap_or(0),
            });
        }
        failed.is_none()
    }
}

/// Failures that mean "Redis cannot serve this now": served from memory
/// when the fallback is on. Permanent errors (WRONGTYPE, bad auth, bad
/// input, a full journal) are the caller's to see.
fn is_availability_failure(e: &Error) -> bool {
    matches!(e.class(), ErrorClass::Transient | ErrorClass::RateLimited)
}

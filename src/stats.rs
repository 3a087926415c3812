//! Counters, the [`Stats`] snapshot, and its Prometheus text form.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::breaker::BreakerState;
use crate::error::{Error, ErrorClass};
use crate::thread_slot::Counter;

pub(crate) mod call_timer;
mod histogram;
mod prometheus;

pub use histogram::DurationHistogram;
pub(crate) use histogram::{CallEndpoint, CallOutcome, Histogram};

/// A point-in-time view of what the client did, from [`Client::stats`](crate::Client::stats).
///
/// Counters (`*_total` in Prometheus) count since the client was created.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Cache operations and commands requested.
    pub requests: u64,
    /// Reads that found a value (Redis or memory).
    pub hits: u64,
    /// Reads that found no value.
    pub misses: u64,
    /// Transient errors returned to callers.
    pub errors_transient: u64,
    /// Rate-limit errors returned to callers.
    pub errors_rate_limited: u64,
    /// Permanent errors returned to callers (server replies, bad input, ...).
    pub errors_permanent: u64,
    /// Attempts that hit a socket timeout (each one cost a caller the
    /// socket timeout).
    pub timeouts: u64,
    /// Attempts retried.
    pub retries: u64,
    /// Retries refused by the retry budget.
    pub retry_budget_denials: u64,
    /// Reads served from the in-memory store because Redis was unavailable.
    pub fallback_reads: u64,
    /// Writes served by the in-memory store because Redis was unavailable.
    pub fallback_writes: u64,
    /// `true` while operations are being served from memory.
    pub fallback_active: bool,
    /// Entries in the in-memory store.
    pub fallback_entries: u64,
    /// Keys in the outage journal, waiting for reconciliation.
    pub journal_len: u64,
    /// Writes refused because the journal was full (`ErrorKind::JournalFull`).
    pub journal_overflows: u64,
    /// Keys reconciled with Redis after outages.
    pub reconciled_keys: u64,
    /// `true` while calls go to the secondary Redis.
    pub failover_active: bool,
    /// Switches from the primary to the secondary.
    pub failovers: u64,
    /// One entry per configured Redis endpoint (primary first).
    pub endpoints: Vec<EndpointStats>,
    /// Switches back from the secondary to the primary Redis.
    pub restores: u64,
    /// Bytes of the values stored compressed, before compression.
    pub compression_input_bytes: u64,
    /// The same values' bytes as stored (header included).
    pub compression_output_bytes: u64,
    /// Values stored compressed.
    pub values_compressed: u64,
    /// Values read back and decompressed.
    pub values_decompressed: u64,
    /// Values that carried the compression header but did not decode; they
    /// were returned as stored.
    pub values_undecodable: u64,
    /// Loaders run by [`Client::get_or_load`](crate::Client::get_or_load).
    pub loads: u64,
    /// `get_or_load` calls that waited for another thread's load of the
    /// same key instead of running their own loader.
    pub loads_coalesced: u64,
    /// Loaders that returned an error or panicked.
    pub load_errors: u64,
    /// `get_or_load` waits for another thread's load that ran out (after
    /// [`Config::call_bound`](crate::Config::call_bound)); the waiter then
    /// ran its own loader.
    pub load_wait_timeouts: u64,
    /// Loaded values that could not be stored (the value was still
    /// returned to the caller).
    pub load_store_failures: u64,
    /// How long calls took, per endpoint and outcome (only the series
    /// that counted a call); `resilient_redis_request_duration_seconds`.
    pub request_duration: Vec<DurationHistogram>,
    /// `redis+cluster://`: slot maps read from the cluster.
    pub cluster_refreshes: u64,
    /// `redis+cluster://`: refreshes no node answered.
    pub cluster_refresh_failures: u64,
    /// `redis+cluster://`: refreshes that changed the slot map (each
    /// logged once at INFO).
    pub cluster_topology_changes: u64,
    /// `redis+cluster://`: slots seen moving to another master (refreshes
    /// and `MOVED` replies).
    pub cluster_slot_moves: u64,
    /// `redis+cluster://`: `MOVED` replies followed.
    pub cluster_moved: u64,
    /// `redis+cluster://`: `ASK` replies followed.
    pub cluster_asks: u64,
}

/// Per-endpoint part of [`Stats`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EndpointStats {
    /// `"primary"` or `"secondary"`.
    pub role: &'static str,
    /// The endpoint's URL, password redacted.
    pub url: String,
    /// Its circuit breaker's state.
    pub circuit: BreakerState,
    /// Times its breaker opened.
    pub breaker_opens: u64,
    /// Calls its open breaker rejected.
    pub breaker_rejections: u64,
    /// Idle pooled connections.
    pub pool_idle: u64,
    /// Pooled connections lent out.
    pub pool_in_use: u64,
    /// Connections being established.
    pub pool_connecting: u64,
    /// Callers waiting for a connection.
    pub pool_waiters: u64,
    /// Connections opened.
    pub connections_created: u64,
    /// Connections closed (broken, expired, failed health check).
    pub connections_closed: u64,
    /// Attempts sent to this endpoint.
    pub requests: u64,
    /// Connects that failed.
    pub connect_failures: u64,
    /// Attempts that succeeded.
    pub commands_succeeded: u64,
    /// Attempts the breaker let through that failed: connect or checkout
    /// failure, I/O error, timeout, rate limit, error reply. (Calls the
    /// open breaker refused are `breaker_rejections`.)
    pub commands_failed: u64,
    /// Rate-limit or quota replies from this endpoint.
    pub rate_limit_replies: u64,
    /// For a `redis+sentinel://` endpoint, `host:port` of the current
    /// master (`None` until discovered, and for other URLs).
    pub master: Option<String>,
    /// For a `redis+sentinel://` endpoint, `host:port` of the sentinel
    /// that named it.
    pub sentinel: Option<String>,
    /// Times the sentinels named a new master.
    pub master_switches: u64,
    /// Connections closed because they went to an old master.
    pub connections_retired: u64,
    /// For a `redis+cluster://` URL, `host:port` of this master: the
    /// cluster has one entry per master, and this is its Prometheus
    /// `endpoint` label (else the role is).
    pub node: Option<String>,
    /// Requests written on a shared connection (automatic pipelining).
    pub shared_requests: u64,
    /// Of those, the ones whose caller waited for another caller to write
    /// or read for it (every shared connection was busy).
    pub shared_waits: u64,
}

impl EndpointStats {
    /// The Prometheus `endpoint` label: the cluster node's `host:port`,
    /// else the role.
    fn label(&self) -> &str {
        self.node.as_deref().unwrap_or(self.role)
    }

    /// 0 closed, 1 half-open, 2 open (the Prometheus gauge's encoding).
    fn circuit_state_value(&self) -> f64 {
        match self.circuit {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            _ => 2.0,
        }
    }
}

impl Stats {
    /// The snapshot in the Prometheus text exposition format (0.0.4):
    /// metric families named `resilient_redis_*`, counters ending in `_total`,
    /// per-endpoint series labelled `endpoint="primary"|"secondary"`.
    pub fn to_prometheus(&self) -> String {
        prometheus::render(self)
    }

    /// Errors of every class returned to callers.
    pub fn errors(&self) -> u64 {
        self.errors_transient + self.errors_rate_limited + self.errors_permanent
    }
}

impl fmt::Display for Stats {
    /// A small human-readable table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "requests            {}", self.requests)?;
        writeln!(f, "hits / misses       {} / {}", self.hits, self.misses)?;
        writeln!(
            f,
            "errors              {} (transient {}, rate-limited {}, permanent {})",
            self.errors(),
            self.errors_transient,
            self.errors_rate_limited,
            self.errors_permanent
        )?;
        writeln!(f, "timeouts            {}", self.timeouts)?;
        writeln!(
            f,
            "retries             {} ({} denied by budget)",
            self.retries, self.retry_budget_denials
        )?;
        writeln!(
            f,
            "served from memory  {} reads, {} writes{}",
            self.fallback_reads,
            self.fallback_writes,
            if self.fallback_active {
                " (active)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "outage journal      {} keys, {} writes refused (full), {} reconciled",
            self.journal_len, self.journal_overflows, self.reconciled_keys
        )?;
        write!(
            f,
            "failover            {} switches{}",
            self.failovers,
            if self.failover_active {
                " (active)"
            } else {
                ""
            }
        )?;
        for e in &self.endpoints {
            write!(
                f,
                "\n{:<9} {}  circuit {} (opened {}x), pool {} idle / {} in use, {} attempts",
                e.role,
                e.url,
                e.circuit.as_str(),
                e.breaker_opens,
                e.pool_idle,
                e.pool_in_use,
                e.requests
            )?;
        }
        Ok(())
    }
}

/// The client's counters: relaxed atomics, one increment per event on the
/// call path. Those bumped by every call (`requests`, `hits`, `misses`,
/// `fallback_reads` and the duration histogram) are per-thread
/// ([`crate::thread_slot`]): no locked instruction on the call path.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub requests: Counter,
    pub hits: Counter,
    pub misses: Counter,
    pub errors_transient: AtomicU64,
    pub errors_rate_limited: AtomicU64,
    pub errors_permanent: AtomicU64,
    pub timeouts: AtomicU64,
    pub retries: AtomicU64,
    pub retry_budget_denials: AtomicU64,
    pub fallback_reads: Counter,
    pub fallback_writes: AtomicU64,
    pub reconciled_keys: AtomicU64,
    pub failovers: AtomicU64,
    pub restores: AtomicU64,
    pub loads: AtomicU64,
    pub loads_coalesced: AtomicU64,
    pub load_errors: AtomicU64,
    pub load_wait_timeouts: AtomicU64,
    pub load_store_failures: AtomicU64,
    pub durations: Histogram,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn bump_by(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts an error returned to the caller, by class.
    pub(crate) fn error(&self, e: &Error) {
        Counters::bump(match e.class() {
            ErrorClass::Transient => &self.errors_transient,
            ErrorClass::RateLimited => &self.errors_rate_limited,
            ErrorClass::Permanent => &self.errors_permanent,
        });
    }

    /// Copies the counters into `s` (the client fills in the rest).
    pub(crate) fn fill(&self, s: &mut Stats) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        s.requests = self.requests.get();
        s.hits = self.hits.get();
        s.misses = self.misses.get();
        s.errors_transient = get(&self.errors_transient);
        s.errors_rate_limited = get(&self.errors_rate_limited);
        s.errors_permanent = get(&self.errors_permanent);
        s.timeouts = get(&self.timeouts);
        s.retries = get(&self.retries);
        s.retry_budget_denials = get(&self.retry_budget_denials);
        s.fallback_reads = self.fallback_reads.get();
        s.fallback_writes = get(&self.fallback_writes);
        s.reconciled_keys = get(&self.reconciled_keys);
        s.failovers = get(&self.failovers);
        s.restores = get(&self.restores);
        s.loads = get(&self.loads);
        s.loads_coalesced = get(&self.loads_coalesced);
        s.load_errors = get(&self.load_errors);
        s.load_wait_timeouts = get(&self.load_wait_timeouts);
        s.load_store_failures = get(&self.load_store_failures);
        s.request_duration = self.durations.snapshot();
    }
}

//! [`Client`]: the cache API over retry, failover, breaker, pool and the
//! in-memory fallback.

mod cache;
mod cluster;
mod commands;
mod failover;
mod health;
mod inner;
mod load;
mod outage;
mod single_flight;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::FromRedisValue;

pub use self::health::{EndpointHealth, Health, HealthStatus};
use self::inner::Inner;
pub use self::load::LoadError;
use crate::breaker::BreakerState;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::consistency::{command_keys, pipeline_keys, CommandKeys};
use crate::error::{Error, ErrorKind};
use crate::events::Bridge;
use crate::events::{EventListener, Listeners};
use crate::fallback::Reconcile;
use crate::retry::{Idempotency, Retrier, RetryBudget};
use crate::router::prober::Prober;
use crate::router::{RedisEndpoint, Role, Router};
use crate::stats::{EndpointStats, Stats};

/// A Redis cache client that keeps working when Redis does not.
///
/// Every call walks: retry loop { router picks the endpoint → breaker
/// permit → pooled connection → command with socket timeouts → the outcome
/// is classified and recorded } → when Redis is unavailable and the
/// fallback is on, the in-memory store answers.
///
/// # How long a call can take
///
/// Every call returns within [`Config::call_bound`], which is computed from
/// the configuration (checkout, socket and call timeouts, retries and
/// backoff, failover to the secondary); with
/// [`call_timeout`](Config::call_timeout) set, within about that. A pipeline
/// to a silent server costs one socket timeout, not one per command; a pool
/// that stays exhausted for a whole checkout timeout fails the call with
/// [`ErrorKind::PoolTimeout`] without retrying (it is overloaded).
///
/// # About threads and cloning
///
/// `Client` is `Clone + Send + Sync`: an `Arc` inside, so a clone is cheap
/// and shares pools, breakers, the retry budget, the in-memory store and the
/// stats. Create one at start-up and hand clones to threads. Background
/// threads (pool maintenance, the failover prober) stop when the last clone
/// is dropped.
///
/// # Examples
///
/// With no Redis at all, a memory-only client still works:
///
/// ```
/// use std::time::Duration;
/// use resilient_redis::{Client, Config};
///
/// let client = Client::new(Config::memory_only().build()?)?;
/// client.set("user:1", "alice")?;
/// let name: Option<String> = client.get("user:1")?;
/// assert_eq!(name.as_deref(), Some("alice"));
/// assert_eq!(client.incr("hits", 2)?, 2);
/// assert!(client.delete("user:1")?);
/// assert!(!client.exists("user:1")?);
/// # Ok::<(), resilient_redis::Error>(())
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Builds a [`Client`] with a custom clock, event listeners or
/// reconciliation mode.
#[must_use]
pub struct ClientBuilder {
    config: Config,
    clock: SharedClock,
    listeners: Listeners,
    reconcile: Reconcile,
    seed: Option<u64>,
}

impl ClientBuilder {
    /// The clock every timer reads. Defaults to the system clock; tests use
    /// a [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Adds an event listener. Defaults to none.
    pub fn listener(mut self, listener: Arc<dyn EventListener>) -> Self {
        self.listeners.add(listener);
        self
    }

    /// What happens on recovery to keys written while Redis was
    /// unavailable. Defaults to [`Reconcile::Invalidate`].
    pub fn reconcile(mut self, mode: Reconcile) -> Self {
        self.reconcile = mode;
        self
    }

    /// Seeds the retry jitter, for reproducible tests. Defaults to a seed
    /// from the process' randomness.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Builds the client. No connection is made: pools connect lazily, so
    /// this succeeds while Redis is down.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for checks that need the
    /// runtime (the config was validated when it was built).
    pub fn build(self) -> Result<Client, Error> {
        let ClientBuilder {
            config,
            clock,
            listeners,
            reconcile,
            seed,
        } = self;
        let listeners = Arc::new(listeners);
        let endpoint = |role: Role, e: &crate::config::Endpoint| {
            let bridge = Arc::new(Bridge {
                role,
                listeners: listeners.clone(),
                node: None,
            });
            RedisEndpoint::new(role, e, &config, &clock, bridge)
        };
        let router = config.primary.as_ref().map(|primary| {
            let secondary = config
                .secondary
                .as_ref()
                .map(|s| endpoint(Role::Secondary, s));
            Router::new(
                endpoint(Role::Primary, primary),
                secondary,
                &config,
                clock.clone(),
            )
        });
        if router.is_none() {
            crate::log_fields::log_fields!(
                log::Level::Warn,
                crate::log_fields::Fields::new("config").at("memory", "none");
                "no REDIS_URL configured: running on the in-memory store only ({})",
                config.fallback_mode
            );
        }
        let mut retrier = Retrier::from_config(&config, Arc::new(RetryBudget::default()))
            .with_clock(clock.clone());
        if let Some(seed) = seed {
            retrier = retrier.with_seed(seed);
        }
        let has_router = router.is_some();
        // The thread wakes often and cheaply (atomic loads while no
        // failover is active and no key is tracked); whether a probe is due
        // is decided by the client's clock, so a manual clock drives it in
        // tests. It also reconciles keys written during outages, so that
        // no caller waits for that.
        let wake_every = config
            .health_check_interval
            .min(std::time::Duration::from_millis(50));
        let inner = Arc::new(Inner::new(
            config, clock, router, retrier, reconcile, listeners,
        ));
        if has_router {
            let prober = Prober::start(Arc::downgrade(&inner), wake_every, Inner::background_tick);
            let _ = inner.prober.set(prober);
        }
        Ok(Client { inner })
    }
}

impl Client {
    /// A client for `config`, on the system clock.
    ///
    /// Never fails because Redis is down: connections are made lazily.
    ///
    /// # Errors
    ///
    /// None today (a [`Config`] is valid once built); see
    /// [`ClientBuilder::build`].
    pub fn new(config: Config) -> Result<Client, Error> {
        Client::builder(config).build()
    }

    /// A client configured from the environment ([`Config::from_env`]).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`] naming the variable that is wrong.
    pub fn from_env() -> Result<Client, Error> {
        Client::new(Config::from_env()?)
    }

    /// A builder for a client with a custom clock, listeners or
    /// reconciliation mode.
    pub fn builder(config: Config) -> ClientBuilder {
        ClientBuilder {
            config,
            clock: SystemClock::shared(),
            listeners: Listeners::default(),
            reconcile: Reconcile::default(),
            seed: None,
        }
    }

    /// The configuration this client runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Runs any command, with retries decided by the command table
    /// ([`Idempotency::Auto`]).
    ///
    /// # Key prefix
    ///
    /// The key prefix is **not** applied: the arguments are sent as given,
    /// here, in [`Client::pipeline`] and in the `redis::Commands` methods
    /// (`(&client).hset(...)`, see `ConnectionLike` for `&Client`). The prefix
    /// namespaces the cache methods (`get`, `set`, ...), which know their
    /// keys; a raw command's key positions are not always known (scripts,
    /// patterns, module commands), and rewriting some arguments but not
    /// others would be worse than rewriting none. Name a key of the cache
    /// methods' namespace with [`Client::prefixed_key`]. Either way the
    /// read-your-writes guarantee holds across both: keys are tracked as
    /// sent to Redis.
    ///
    /// Arbitrary commands are never answered from memory: while Redis is
    /// unavailable this fails with the availability error
    /// ([`ErrorKind::CircuitOpen`], [`ErrorKind::Connection`], ...).
    ///
    /// # Guarantees
    ///
    /// The client reads the command's keys from a table of Redis' key
    /// positions (`GET`, `SET`, `MSET`, `DEL`, `HSET`, `EVAL` with its
    /// `numkeys`, ... about 140 commands), and keeps the read-your-writes
    /// guarantee for them as for the cache methods: a write through
    /// `execute` is journaled on the secondary, and a key written during an
    /// outage or a failover is invalidated before this command reads it.
    ///
    /// A command the table does not know (a module command, `FLUSHDB`, a
    /// cursor argument) may touch any key. The client takes the
    /// conservative path: it is sent only to the primary (during failover
    /// it fails with [`ErrorKind::Unsupported`], nothing sent), and once it
    /// may have run, every value written to memory during an outage is
    /// dropped (reads of those keys miss until reconciled).
    ///
    /// # Errors
    ///
    /// The command's error, classified ([`Error::kind`], [`Error::class`]).
    pub fn execute<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        self.execute_with(cmd, Idempotency::Auto)
    }

    /// [`Client::execute`] with an explicit retry rule, for a caller who
    /// knows better than the command table.
    ///
    /// # Errors
    ///
    /// As [`Client::execute`].
    pub fn execute_with<T: FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        idempotency: Idempotency,
    ) -> Result<T, Error> {
        self.inner
            .command(command_keys(cmd), idempotency.for_cmd(cmd), |c| {
                cmd.query::<T>(c)
            })
    }

    /// Runs a pipeline (or a `MULTI`/`EXEC` transaction with
    /// [`redis::Pipeline::atomic`]). Retried only when every command is
    /// idempotent and it is not a transaction, or when nothing was sent.
    /// Its keys are tracked as for [`Client::execute`], every command's
    /// together. The key prefix is not applied (see [`Client::execute`]).
    ///
    /// # Errors
    ///
    /// As [`Client::execute`].
    pub fn pipeline<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, Error> {
        // A Redis Cluster serves one slot per request: split by slot.
        if let Some(result) = self.inner.pipeline_across_slots(pipe) {
            return result;
        }
        self.inner.command(
            pipeline_keys(pipe),
            Idempotency::Auto.for_pipeline(pipe),
            |c| pipe.query::<T>(c),
        )
    }

    /// Sends `PING` and returns the round-trip time.
    ///
    /// # Errors
    ///
    /// The availability error when no Redis answers (never served from memory).
    pub fn ping(&self) -> Result<Duration, Error> {
        let start = Instant::now();
        let keyless = CommandKeys::Known {
            keys: Vec::new(),
            read_only: true,
        };
        let pong: String = self
            .inner
            .command(keyless, true, |c| redis::cmd("PING").query(c))?;
        if pong != "PONG" {
            return Err(self.inner.fail(Error::new(
                ErrorKind::UnexpectedReply,
                crate::ErrorClass::Permanent,
                "PING was not answered with PONG",
            )));
        }
        Ok(start.elapsed())
    }

    /// The primary's circuit breaker state (`None` when memory-only). On a
    /// Redis Cluster each master has its own breaker: this is `Closed`
    /// while none is, else the first that is not (see
    /// [`Client::stats`] for each).
    pub fn breaker_state(&self) -> Option<BreakerState> {
        if let Some(c) = self.inner.router.as_ref().and_then(|r| r.primary.cluster()) {
            let not_closed = c
                .masters()
                .iter()
                .map(|n| n.endpoint.breaker.state())
                .find(|s| *s != BreakerState::Closed);
            return Some(not_closed.unwrap_or(BreakerState::Closed));
        }
        self.inner
            .router
            .as_ref()
            .map(|r| r.primary.breaker.state())
    }

    /// Closes every endpoint's breaker at once (an operator's override),
    /// each cluster node's included.
    pub fn reset_breaker(&self) {
        if let Some(router) = &self.inner.router {
            for e in router.endpoints() {
                e.breaker.reset();
                cluster::per_node(e, |n, _| n.breaker.reset());
            }
        }
    }

    /// Probes the primary now, as the background prober does every
    /// `health_check_interval` while failover is active: one `PING` once
    /// the cooldown is over; switches back after `success_threshold`
    /// consecutive good probes and the grace period. Returns `true` when
    /// this probe restored the primary.
    pub fn probe_primary(&self) -> bool {
        self.inner.probe_primary()
    }

    /// Where the client stands: healthy, degraded or unavailable, with each
    /// endpoint's breaker, pool and last error.
    pub fn health(&self) -> Health {
        let i = &*self.inner;
        let serving_from_memory = i.outage.is_engaged() || i.router.is_none();
        let Some(router) = &i.router else {
            return Health {
                status: if i.memory.is_some() {
                    HealthStatus::Degraded
                } else {
                    HealthStatus::Unavailable
                },
                active_endpoint: None,
                failover_reason: None,
                serving_from_memory: i.memory.is_some(),
                endpoints: Vec::new(),
            };
        };
        let health = |e: &RedisEndpoint, node: Option<String>| EndpointHealth {
            role: e.role.as_str(),
            url: e.url().to_string(),
            circuit: e.breaker.state(),
            pool: e.pool.state(),
            last_error: e.last_error(),
            master: e.sentinel().and_then(|s| s.master()),
            sentinel: e.sentinel().and_then(|s| s.sentinel_in_use()),
            node,
        };
        let endpoints: Vec<EndpointHealth> = router
            .endpoints()
            .flat_map(|e| cluster::per_node(e, health))
            .collect();
        let active = router.active();
        // A cluster's own breaker never opens: its masters' do.
        let failing = active.is_failing() || active.cluster().is_some_and(|c| c.degraded());
        let status = match active.breaker.state() {
            BreakerState::Closed
                if !serving_from_memory && !router.failover_active() && !failing =>
            {
                HealthStatus::Healthy
            }
            BreakerState::Open | BreakerState::ForcedOpen if i.memory.is_none() => {
                HealthStatus::Unavailable
            }
            // Closed, but the last attempt could not be served and memory
            // is not answering either (e.g. a certificate that never
            // verifies): calls fail.
            BreakerState::Closed if failing && !serving_from_memory => HealthStatus::Unavailable,
            _ => HealthStatus::Degraded,
        };
        Health {
            status,
            active_endpoint: Some(active.role.as_str()),
            failover_reason: router.failover_reason_now(),
            serving_from_memory,
            endpoints,
        }
    }

    /// Counters and gauges since the client was created; see
    /// [`Stats::to_prometheus`].
    pub fn stats(&self) -> Stats {
        use std::sync::atomic::Ordering::Relaxed;
        let i = &*self.inner;
        let mut s = Stats::default();
        i.counters.fill(&mut s);
        s.fallback_active = i.outage.is_engaged();
        s.fallback_entries = i.memory.as_ref().map_or(0, |m| m.len() as u64);
        s.journal_len = i.consistency.journaled() as u64;
        s.journal_overflows = i.consistency.refused();
        i.codec.stats.fill(&mut s);
        if let Some(router) = &i.router {
            s.failover_active = router.failover_active();
            cluster::fill_stats(router, &mut s);
            let stats = |e: &RedisEndpoint, node: Option<String>| {
                let b = e.breaker.snapshot();
                let p = e.pool.state();
                let ps = e.pool.stats();
                EndpointStats {
                    role: e.role.as_str(),
                    url: e.url().to_string(),
                    circuit: b.state,
                    breaker_opens: b.opens,
                    breaker_rejections: b.rejections,
                    pool_idle: u64::from(p.idle),
                    pool_in_use: u64::from(p.in_use),
                    pool_connecting: u64::from(p.connecting),
                    pool_waiters: u64::from(p.waiters),
                    connections_created: ps.created,
                    connections_closed: ps.closed(),
                    requests: e.attempts(),
                    connect_failures: ps.connect_failures,
                    commands_succeeded: e.counts.succeeded.load(Relaxed),
                    commands_failed: e.counts.failed.load(Relaxed),
                    rate_limit_replies: e.counts.rate_limited.load(Relaxed),
                    master: e.sentinel().and_then(|s| s.master()),
                    sentinel: e.sentinel().and_then(|s| s.sentinel_in_use()),
                    master_switches: e.sentinel().map_or(0, |s| s.switches()),
                    connections_retired: ps.closed_retired,
                    node,
                    shared_requests: ps.shared_requests,
                    shared_waits: ps.shared_waits,
                }
            };
            s.endpoints = router
                .endpoints()
                .flat_map(|e| cluster::per_node(e, stats))
                .collect();
        }
        s
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.inner.config.url())
            .field("fallback_url", &self.inner.config.fallback_url())
            .field("fallback_mode", &self.inner.config.fallback_mode)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_is_send_sync_clone() {
        fn assert<T: Send + Sync + Clone + 'static>() {}
        assert::<Client>();
    }
}

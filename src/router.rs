//! Endpoints and failover: which Redis a call goes to.
//!
//! Each configured Redis server is an [`RedisEndpoint`]: a circuit breaker in
//! front of a bounded pool. The [`Router`] sends calls to the primary, and
//! to the secondary (`fallback_url`) while failover is active. Failover is
//! triggered by a rate-limit reply from the primary (at once; the rejected
//! command did not execute, so it is re-sent to the secondary) or by the
//! primary's breaker opening. A background prober restores the primary
//! (see [`prober`]).

pub(crate) mod prober;

use crate::log_fields::{log_fields, millis, Fields};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use crate::clock::SharedClock;
use crate::config::{Config, Endpoint};
use crate::error::{Error, ErrorClass, ErrorKind, RateLimit};
use crate::events::Bridge;
use crate::events::FailoverReason;
use crate::pool::{Pool, PooledConnection};
use crate::topology::cluster::{ClusterTopology, Route};
use crate::topology::{SentinelTopology, Watcher};

/// Which configured server an endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Primary,
    Secondary,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Secondary => "secondary",
        }
    }
}

/// One Redis server: breaker + pool, plus what health reporting needs.
pub(crate) struct RedisEndpoint {
    pub(crate) role: Role,
    pub(crate) breaker: CircuitBreaker,
    pub(crate) pool: Pool,
    attempts: AtomicU64,
    /// Counted per endpoint for the metrics: see [`EndpointCounts`].
    pub(crate) counts: EndpointCounts,
    last_error: Mutex<Option<String>>,
    /// The last attempt failed in a way that says this endpoint cannot
    /// serve (I/O, timeout, TLS, auth); cleared by the next success.
    failing: AtomicBool,
    /// The sentinel topology's generation this endpoint's breaker last
    /// saw: a newer one means a new master, and the breaker's verdict
    /// about the old one no longer applies.
    seen_generation: AtomicU64,
    /// Follows `+switch-master` (sentinel endpoints only); dropped with
    /// the endpoint, which stops and joins its thread.
    _watcher: Option<Watcher>,
    /// `redis+cluster://`: calls go to the node endpoints this holds, by
    /// slot; this endpoint's own breaker and pool stay unused.
    cluster: Option<ClusterTopology>,
}

impl RedisEndpoint {
    pub(crate) fn new(
        role: Role,
        endpoint: &Endpoint,
        config: &Config,
        clock: &SharedClock,
        bridge: Arc<Bridge>,
    ) -> RedisEndpoint {
        let cluster = endpoint.cluster.as_ref().map(|spec| {
            ClusterTopology::new(role, &spec.seeds, endpoint, config, clock, bridge.clone())
        });
        let breaker = CircuitBreaker::new(BreakerConfig::from(config), clock.clone())
            .with_name(format!("{} {}", role.as_str(), endpoint.redacted))
            .with_endpoint(role.as_str())
            .with_listener(bridge.clone());
        let pool = if cluster.is_some() {
            // Never lent (the nodes' pools are): no connection kept warm.
            let mut idle = config.clone();
            idle.min_idle = 0;
            Pool::for_endpoint(endpoint.clone(), &idle, clock.clone())
        } else {
            Pool::for_endpoint(endpoint.clone(), config, clock.clone())
        };
        pool.set_listener(bridge.clone());
        let watcher = pool.topology().sentinel().map(|s| {
            s.set_listener(bridge);
            Watcher::start(s)
        });
        RedisEndpoint {
            role,
            breaker,
            pool,
            attempts: AtomicU64::new(0),
            counts: EndpointCounts::default(),
            last_error: Mutex::new(None),
            failing: AtomicBool::new(false),
            seen_generation: AtomicU64::new(0),
            _watcher: watcher,
            cluster,
        }
    }

    /// The cluster topology, for a `redis+cluster://` endpoint.
    pub(crate) fn cluster(&self) -> Option<&ClusterTopology> {
        self.cluster.as_ref()
    }

    /// The sentinel topology, for a `redis+sentinel://` endpoint.
    pub(crate) fn sentinel(&self) -> Option<&Arc<SentinelTopology>> {
        self.pool.topology().sentinel()
    }

    /// After a master switch, the breaker's verdict was about the old
    /// master: an open breaker is closed so calls reach the new one at
    /// once (a forced-open one stays: that is an operator's decision).
    fn follow_master(&self) {
        let Some(s) = self.sentinel() else {
            return;
        };
        let generation = s.generation();
        if self.seen_generation.swap(generation, Ordering::AcqRel) != generation
            && matches!(
                self.breaker.state(),
                BreakerState::Open | BreakerState::HalfOpen
            )
        {
            self.breaker.reset();
            self.failing.store(false, Ordering::Relaxed);
        }
    }

    /// The URL, password redacted.
    pub(crate) fn url(&self) -> &str {
        self.pool.endpoint()
    }

    /// Attempts sent to this endpoint.
    pub(crate) fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// The last error seen on this endpoint (messages never hold secrets).
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// `true` while the last attempt on this endpoint failed for a reason
    /// that says it cannot serve. A certificate that never verifies keeps
    /// the breaker closed (retrying cannot help) but shows here.
    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }

    /// One attempt: breaker permit → pool checkout → `f` → verdict.
    pub(crate) fn call<T>(
        &self,
        deadline: Option<Instant>,
        f: &mut dyn FnMut(&mut PooledConnection, Role) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.call_routed(Route::ANY, deadline, f)
    }

    /// [`RedisEndpoint::call`]; on a cluster, to the node `route` names.
    pub(crate) fn call_routed<T>(
        &self,
        route: Route<'_>,
        deadline: Option<Instant>,
        f: &mut dyn FnMut(&mut PooledConnection, Role) -> Result<T, Error>,
    ) -> Result<T, Error> {
        if let Some(cluster) = &self.cluster {
            return cluster.call(route, deadline, f);
        }
        self.follow_master();
        let permit = self.breaker.try_acquire_for_call().map_err(Error::from)?;
        if let Some(s) = self.sentinel().filter(|s| s.doubtful()) {
            // A READONLY or a failed connect put the master in doubt: ask
            // the sentinels before lending a connection that may go to the
            // old one. One discovery at a time: a caller that finds one
            // under way (another caller's, or the watcher thread's) waits
            // for its answer rather than going on to the old master.
            // Within one connect timeout (counted in `Config::call_bound`).
            let limit = crate::clock::saturating_add(s.now(), s.connect_timeout);
            let _ = s.refresh(deadline.map_or(limit, |d| d.min(limit)), false);
            self.follow_master();
        }
        // The call deadline shortens the checkout and caps the socket
        // timeouts of this attempt, so it bounds the I/O too.
        let mut conn = match self.pool.get_for_call(deadline) {
            Ok(conn) => conn,
            Err(e) => {
                if e.counts_against_breaker() {
                    permit.failure();
                } else {
                    permit.ignore();
                }
                self.note(&e);
                return Err(e);
            }
        };
        if !conn.is_current() {
            // The master moved between the checkout and now: nothing is
            // sent to the old one, and the retry goes to the new one.
            conn.mark_broken();
            permit.ignore();
            return Err(Error::new(
                ErrorKind::Connection,
                ErrorClass::Transient,
                format!("not sent to {}: the master moved", self.url()),
            )
            .with_counts_against_breaker(false)
            .with_may_have_executed(false));
        }
        self.attempts.fetch_add(1, Ordering::Relaxed);
        match f(&mut conn, self.role) {
            Ok(value) => {
                self.counts.succeeded.fetch_add(1, Ordering::Relaxed);
                permit.success();
                // Read first: no store (and no cache-line traffic) on the
                // common path.
                if self.failing.load(Ordering::Relaxed) {
                    self.failing.store(false, Ordering::Relaxed);
                }
                Ok(value)
            }
            Err(e) => {
                // With automatic pipelining, a shared connection that broke
                // counts once, not once per caller on it (see `pool::mux`).
                let (e, counts) = conn.settle(e);
                if counts {
                    permit.failure();
                } else {
                    // An error reply (WRONGTYPE, ...) proves the server is
                    // up, but says nothing about its health either way.
                    permit.ignore();
                }
                self.note(&e);
                Err(e)
            }
        }
    }

    fn note(&self, e: &Error) {
        self.counts.failed.fetch_add(1, Ordering::Relaxed);
        if e.is_rate_limited() {
            self.counts.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        if e.kind() != ErrorKind::CircuitOpen {
            *self.last_error.lock() = Some(e.to_string());
        }
        let cannot_serve = e.counts_against_breaker()
            || matches!(
                e.kind(),
                ErrorKind::Tls | ErrorKind::Auth | ErrorKind::Config
            );
        if cannot_serve {
            self.failing.store(true, Ordering::Relaxed);
        }
    }
}

/// Outcomes of the attempts on one endpoint (relaxed atomics).
#[derive(Debug, Default)]
pub(crate) struct EndpointCounts {
    pub(crate) succeeded: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
}

/// Failover bookkeeping, behind one mutex (touched only on switches and probes).
#[derive(Debug)]
pub(crate) struct FailoverState {
    pub(crate) reason: Option<FailoverReason>,
    pub(crate) since: Option<Instant>,
    /// No probe of the primary before this instant.
    pub(crate) cooldown_until: Option<Instant>,
    /// Consecutive good probes of the primary.
    pub(crate) good_probes: u32,
    /// When calls last switched either way: no switch back within the
    /// grace period after it.
    pub(crate) last_switch: Option<Instant>,
    /// The background prober's next probe: one per `health_check_interval`
    /// (on hosted Redis every PING is billed).
    pub(crate) next_probe: Option<Instant>,
}

/// A quota cooldown of a primary without a secondary: while it lasts, calls
/// are not sent to the primary at all (each would be billed and refused).
#[derive(Debug, Default)]
struct Quota {
    /// No call before this instant.
    until: Option<Instant>,
    /// The last rate-limit reply's details.
    limit: Option<RateLimit>,
}

/// Where calls go: the primary, or the secondary while failover is active.
pub(crate) struct Router {
    pub(crate) primary: RedisEndpoint,
    pub(crate) secondary: Option<RedisEndpoint>,
    /// Fast-path flag: `true` while calls go to the secondary.
    on_secondary: AtomicBool,
    /// Failover epoch: bumped each time calls switch to the secondary,
    /// before the first of them is sent there. A value written on the
    /// secondary in an earlier epoch may be older than one written on the
    /// primary since (see `consistency`).
    epoch: AtomicU64,
    pub(crate) failover: Mutex<FailoverState>,
    pub(crate) cooldown: Duration,
    pub(crate) grace: Duration,
    pub(crate) probe_interval: Duration,
    /// Fast-path flag: `true` while a quota cooldown (no secondary) is on.
    quota_blocked: AtomicBool,
    quota: Mutex<Quota>,
    pub(crate) clock: SharedClock,
}

/// What a switch to the secondary looked like, for the caller to report.
#[derive(Debug)]
pub(crate) struct Switch {
    pub(crate) reason: FailoverReason,
    pub(crate) cooldown: Duration,
    pub(crate) rate_limit: Option<RateLimit>,
}

impl Router {
    pub(crate) fn new(
        primary: RedisEndpoint,
        secondary: Option<RedisEndpoint>,
        config: &Config,
        clock: SharedClock,
    ) -> Router {
        Router {
            primary,
            secondary,
            on_secondary: AtomicBool::new(false),
            epoch: AtomicU64::new(1),
            failover: Mutex::new(FailoverState {
                reason: None,
                since: None,
                cooldown_until: None,
                good_probes: 0,
                last_switch: None,
                next_probe: None,
            }),
            cooldown: config.failover_cooldown,
            // Long enough that a primary flapping at probe rate cannot make
            // calls switch at that rate.
            grace: config.failover_grace(),
            probe_interval: config.health_check_interval,
            quota_blocked: AtomicBool::new(false),
            quota: Mutex::new(Quota::default()),
            clock,
        }
    }

    /// `true` while calls go to the secondary.
    pub(crate) fn failover_active(&self) -> bool {
        self.on_secondary.load(Ordering::Acquire)
    }

    /// The current failover epoch (see the field).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The endpoint calls go to now.
    pub(crate) fn active(&self) -> &RedisEndpoint {
        match (&self.secondary, self.failover_active()) {
            (Some(secondary), true) => secondary,
            _ => &self.primary,
        }
    }

    /// The endpoint of `role` (the primary when there is no secondary).
    pub(crate) fn endpoint(&self, role: Role) -> &RedisEndpoint {
        match (role, &self.secondary) {
            (Role::Secondary, Some(s)) => s,
            _ => &self.primary,
        }
    }

    pub(crate) fn endpoints(&self) -> impl Iterator<Item = &RedisEndpoint> {
        std::iter::once(&self.primary).chain(self.secondary.iter())
    }

    /// One attempt on the active endpoint. When the primary fails in a way
    /// that calls for failover, switches to the secondary and re-sends
    /// there if that is safe. Returns the value and the role that served
    /// it, and the switch if this call made one.
    pub(crate) fn call<T>(
        &self,
        idempotent: bool,
        deadline: Option<Instant>,
        f: &mut dyn FnMut(&mut PooledConnection, Role) -> Result<T, Error>,
    ) -> (Result<(T, Role), Error>, Option<Switch>) {
        self.call_routed(Route::ANY, idempotent, deadline, f)
    }

    /// [`Router::call`]; on a cluster endpoint, to the node `route` names.
    pub(crate) fn call_routed<T>(
        &self,
        route: Route<'_>,
        idempotent: bool,
        deadline: Option<Instant>,
        f: &mut dyn FnMut(&mut PooledConnection, Role) -> Result<T, Error>,
    ) -> (Result<(T, Role), Error>, Option<Switch>) {
        let Some(secondary) = &self.secondary else {
            return (self.call_primary_alone(route, deadline, f), None);
        };
        if self.failover_active() {
            return (
                secondary
                    .call_routed(route, deadline, f)
                    .map(|v| (v, Role::Secondary)),
                None,
            );
        }
        let err = match self.primary.call_routed(route, deadline, f) {
            Ok(v) => return (Ok((v, Role::Primary)), None),
            Err(e) => e,
        };
        let Some(reason) = self.failover_reason(&err) else {
            return (Err(err), None);
        };
        let switch = self.activate(reason, err.rate_limit().cloned());
        // A command the quota refused did not execute (`may_have_executed`
        // is false for it, but not for a pipeline partly executed before
        // the refusal); nor did one that never left the client.
        let resend = !err.may_have_executed() || idempotent;
        let result = if resend {
            secondary
                .call_routed(route, deadline, f)
                .map(|v| (v, Role::Secondary))
        } else {
            Err(err)
        };
        (result, switch)
    }

    /// Whether `err` from the primary calls for failover, and why.
    fn failover_reason(&self, err: &Error) -> Option<FailoverReason> {
        if err.is_rate_limited() {
            return Some(FailoverReason::RateLimited);
        }
        let open = matches!(
            self.primary.breaker.state(),
            BreakerState::Open | BreakerState::ForcedOpen
        );
        if err.kind() == ErrorKind::CircuitOpen || (open && err.counts_against_breaker()) {
            return Some(
                if err.may_have_executed() || err.kind() == ErrorKind::CircuitOpen {
                    FailoverReason::BreakerOpen
                } else {
                    FailoverReason::ConnectFailure
                },
            );
        }
        None
    }

    /// Switches calls to the secondary. Returns `None` when another thread
    /// already did.
    fn activate(&self, reason: FailoverReason, rate_limit: Option<RateLimit>) -> Option<Switch> {
        let now = self.clock.now();
        let mut state = self.failover.lock();
        if self.on_secondary.load(Ordering::Acquire) {
            return None;
        }
        // A reset hint in the quota reply beats the configured cooldown.
        let hint = rate_limit.as_ref().and_then(|l| l.reset_after);
        let cooldown = cooldown_for(hint, self.cooldown);
        let until = cooldown_until(now, hint, self.cooldown);
        state.reason = Some(reason);
        state.since = Some(now);
        state.cooldown_until = Some(until);
        state.good_probes = 0;
        state.last_switch = Some(now);
        state.next_probe = Some(until);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.on_secondary.store(true, Ordering::Release);
        Some(Switch {
            reason,
            cooldown,
            rate_limit,
        })
    }

    /// Switches calls back to the primary. Returns how long failover lasted.
    pub(crate) fn restore(&self) -> Option<Duration> {
        let now = self.clock.now();
        let mut state = self.failover.lock();
        if !self.on_secondary.load(Ordering::Acquire) {
            return None;
        }
        let since = state.since.take();
        state.reason = None;
        state.cooldown_until = None;
        state.good_probes = 0;
        state.last_switch = Some(now);
        state.next_probe = None;
        self.on_secondary.store(false, Ordering::Release);
        Some(since.map_or(Duration::ZERO, |s| now.saturating_duration_since(s)))
    }

    /// `true` when the background prober should probe the primary now:
    /// failover is active, the cooldown is over and a probe interval has
    /// passed since the last probe.
    pub(crate) fn probe_due(&self, now: Instant) -> bool {
        if !self.failover_active() {
            return false;
        }
        let state = self.failover.lock();
        state.cooldown_until.is_none_or(|until| now >= until)
            && state.next_probe.is_none_or(|at| now >= at)
    }

    /// The primary alone (no secondary configured). A rate-limit reply
    /// starts a quota cooldown (the reset hint when the reply has one, else
    /// `failover_cooldown`) during which calls fail at once with a
    /// rate-limit error, without being sent: the caller serves them from
    /// memory. After it, one call goes through as the probe.
    fn call_primary_alone<T>(
        &self,
        route: Route<'_>,
        deadline: Option<Instant>,
        f: &mut dyn FnMut(&mut PooledConnection, Role) -> Result<T, Error>,
    ) -> Result<(T, Role), Error> {
        let mut probing = false;
        if self.quota_blocked.load(Ordering::Acquire) {
            let now = self.clock.now();
            let mut quota = self.quota.lock();
            match quota.until {
                Some(until) if now < until => {
                    let wait = until.saturating_duration_since(now);
                    return Err(quota_error(wait));
                }
                // Over: this call probes; the others keep away until it
                // has an answer (at most one more cooldown).
                Some(_) => {
                    quota.until = Some(cooldown_until(now, None, self.cooldown));
                    probing = true;
                }
                None => {}
            }
        }
        let result = self.primary.call_routed(route, deadline, f);
        match &result {
            Err(e) if e.is_rate_limited() => {
                let now = self.clock.now();
                let limit = e.rate_limit().cloned();
                let hint = limit.as_ref().and_then(|l| l.reset_after);
                let wait = cooldown_for(hint, self.cooldown);
                let mut quota = self.quota.lock();
                if !self.quota_blocked.swap(true, Ordering::AcqRel) {
                    let message = e.to_string();
                    log_fields!(
                        log::Level::Warn,
                        Fields::new("rate_limited")
                            .error("rate_limited", &message)
                            .at("primary", self.primary.breaker.state().as_str()),
                        cooldown_ms = millis(wait);
                        "the primary redis rate-limited us ({}); no call is sent to it for {wait:?}",
                        describe(limit.as_ref())
                    );
                }
                quota.until = Some(cooldown_until(now, hint, self.cooldown));
                quota.limit = limit;
            }
            // Any other answer ends the quota cooldown (a connection error
            // is the breaker's business).
            _ if probing => {
                let mut quota = self.quota.lock();
                quota.until = None;
                quota.limit = None;
                self.quota_blocked.store(false, Ordering::Release);
                log_fields!(
                    log::Level::Info,
                    Fields::new("rate_limit_cleared")
                        .at("primary", self.primary.breaker.state().as_str());
                    "the primary redis accepts calls again after its quota cooldown"
                );
            }
            _ => {}
        }
        result.map(|v| (v, Role::Primary))
    }

    /// The reason failover is active, if it is.
    pub(crate) fn failover_reason_now(&self) -> Option<FailoverReason> {
        if self.failover_active() {
            self.failover.lock().reason
        } else {
            None
        }
    }
}

/// The longest cooldown a server's reset hint can impose: 24 hours (a
/// daily quota resets within a day). A longer hint, up to `u64::MAX`
/// seconds from a reply, is clamped to it.
pub(crate) const MAX_COOLDOWN: Duration = Duration::from_secs(24 * 3600);

/// How long a cooldown lasts: the reply's reset `hint` when it has one,
/// else `default`, clamped to [`MAX_COOLDOWN`].
pub(crate) fn cooldown_for(hint: Option<Duration>, default: Duration) -> Duration {
    hint.unwrap_or(default).min(MAX_COOLDOWN)
}

/// When a cooldown that starts at `now` ends: `now` plus
/// [`cooldown_for`]`(hint, default)`, saturating at the last instant an
/// `Instant` can represent. The one place a cooldown deadline is computed:
/// the hint comes from a server reply, so this never panics and never
/// lies more than [`MAX_COOLDOWN`] after `now`.
pub(crate) fn cooldown_until(now: Instant, hint: Option<Duration>, default: Duration) -> Instant {
    crate::clock::saturating_add(now, cooldown_for(hint, default))
}

/// The error a call gets, without being sent, during a quota cooldown.
fn quota_error(wait: Duration) -> Error {
    Error::new(
        ErrorKind::RateLimited,
        ErrorClass::RateLimited,
        format!("the primary redis is over its request quota: not sent, next attempt in {wait:?}"),
    )
    .with_retry_after(wait)
}

/// `limit 10000, usage 10000`, or what part of it the reply stated.
fn describe(limit: Option<&RateLimit>) -> String {
    match limit {
        Some(RateLimit {
            limit: Some(l),
            usage: Some(u),
            ..
        }) => format!("limit {l}, usage {u}"),
        _ => "quota exceeded".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn cooldown_is_the_hint_else_the_default_clamped() {
        let now = Instant::now();
        let hint = Some(Duration::from_secs(30));
        assert_eq!(
            cooldown_until(now, hint, MINUTE),
            now + Duration::from_secs(30)
        );
        assert_eq!(cooldown_until(now, None, MINUTE), now + MINUTE);
        let huge = Some(Duration::from_secs(u64::MAX));
        assert_eq!(cooldown_until(now, huge, MINUTE), now + MAX_COOLDOWN);
        assert_eq!(
            cooldown_until(now, Some(Duration::MAX), MINUTE),
            now + MAX_COOLDOWN
        );
        assert_eq!(cooldown_for(huge, MINUTE), MAX_COOLDOWN);
    }

    #[test]
    fn cooldown_near_the_end_of_time_saturates() {
        let end = crate::clock::saturating_add(Instant::now(), Duration::MAX);
        assert_eq!(cooldown_until(end, Some(Duration::MAX), MINUTE), end);
        let before = end - Duration::from_secs(10);
        assert_eq!(cooldown_until(before, None, MINUTE), end);
        assert_eq!(
            cooldown_until(before, Some(Duration::from_secs(5)), MINUTE),
            before + Duration::from_secs(5)
        );
    }
}

//! [`Health`]: can the client serve, and from where.

use std::fmt;

use crate::breaker::BreakerState;
use crate::events::FailoverReason;
use crate::pool::PoolState;

/// The overall verdict of [`Health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthStatus {
    /// The active Redis endpoint's breaker is closed and nothing is served
    /// from memory.
    Healthy,
    /// Serving, but not as configured: from the in-memory store, from the
    /// secondary Redis, or with a breaker half-open (probing recovery).
    Degraded,
    /// Cache operations fail: no Redis answers and the in-memory fallback
    /// is disabled.
    Unavailable,
}

impl HealthStatus {
    /// A short lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Redis endpoint in a [`Health`] report.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EndpointHealth {
    /// `"primary"` or `"secondary"`.
    pub role: &'static str,
    /// The URL, password redacted.
    pub url: String,
    /// Its breaker's state.
    pub circuit: BreakerState,
    /// Its pool's connections.
    pub pool: PoolState,
    /// The last error seen on it (never holds a secret).
    pub last_error: Option<String>,
    /// For a `redis+sentinel://` endpoint, `host:port` of the master the
    /// sentinels name now (`None` until discovered, and for other URLs).
    pub master: Option<String>,
    /// For a `redis+sentinel://` endpoint, `host:port` of the sentinel
    /// that named it.
    pub sentinel: Option<String>,
    /// For a `redis+cluster://` URL, `host:port` of this master (the
    /// cluster has one entry per master).
    pub node: Option<String>,
}

/// What [`Client::health`](crate::Client::health) reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Health {
    /// The overall verdict.
    pub status: HealthStatus,
    /// Which endpoint calls go to: `"primary"`, `"secondary"`, or `None`
    /// when memory-only.
    pub active_endpoint: Option<&'static str>,
    /// Why calls go to the secondary, while they do.
    pub failover_reason: Option<FailoverReason>,
    /// `true` while cache operations are served from memory.
    pub serving_from_memory: bool,
    /// Every configured Redis endpoint (primary first).
    pub endpoints: Vec<EndpointHealth>,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.status)?;
        match self.active_endpoint {
            Some(active) => write!(f, ", calls go to the {active}")?,
            None => write!(f, ", memory only")?,
        }
        if let Some(reason) = self.failover_reason {
            write!(f, " (failover: {})", reason.as_str())?;
        }
        if self.serving_from_memory {
            write!(f, ", serving from memory")?;
        }
        for e in &self.endpoints {
            write!(f, "; {} {} circuit {}", e.role, e.url, e.circuit)?;
            if let Some(node) = &e.node {
                write!(f, " (cluster node {node})")?;
            }
            if let Some(master) = &e.master {
                write!(f, " master {master}")?;
            }
            if let Some(sentinel) = &e.sentinel {
                write!(f, " (via sentinel {sentinel})")?;
            }
            if let Some(err) = &e.last_error {
                write!(f, " (last error: {err})")?;
            }
        }
        Ok(())
    }
}

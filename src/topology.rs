//! Which address an endpoint connects to now.
//!
//! An endpoint is one logical Redis server. Its topology says where that
//! server is:
//!
//! - **standalone** (`redis://`, `rediss://`): the address in the URL,
//!   always;
//! - **sentinel** (`redis+sentinel://`): the master a set of Sentinels
//!   monitors under a service name, discovered and followed through
//!   failovers (see [`sentinel`]);
//! - **cluster** (`redis+cluster://`): one standalone endpoint per master
//!   of a Redis Cluster, chosen per call by the key's hash slot (see
//!   [`cluster`]).
//!
//! The pool asks the topology for the address at each dial
//! ([`Topology::connection_info`]) and tags every connection with the
//! topology's *generation*; a master switch bumps the generation, and the
//! pool retires every connection of an older one (never lent again, closed
//! on return). Everything above the pool (breaker, retries, fallback,
//! journal, stats) sees one endpoint whatever its topology.

pub(crate) mod cluster;
pub(crate) mod recent;
pub(crate) mod sentinel;
mod watch;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{ConnectionAddr, ConnectionInfo};

pub(crate) use self::sentinel::SentinelTopology;
pub(crate) use self::watch::Watcher;
use crate::error::Error;

/// Where an endpoint's connections go.
#[derive(Clone)]
pub(crate) enum Topology {
    /// The URL's address.
    Standalone(Box<ConnectionInfo>),
    /// The master named by the sentinels.
    Sentinel(Arc<SentinelTopology>),
}

impl Topology {
    /// What the next connection dials, resolving the master first when it
    /// is unknown or in doubt (never past `deadline`).
    pub(crate) fn connection_info(&self, deadline: Instant) -> Result<ConnectionInfo, Error> {
        match self {
            Topology::Standalone(info) => Ok((**info).clone()),
            Topology::Sentinel(s) => s.master_info(deadline),
        }
    }

    /// The current generation: connections made in an older one go to a
    /// server that is no longer this endpoint's.
    pub(crate) fn generation(&self) -> u64 {
        match self {
            Topology::Standalone(_) => 0,
            Topology::Sentinel(s) => s.generation(),
        }
    }

    /// A connect to the current address failed, or a connection there
    /// answered `READONLY`: the master may have moved, ask again.
    pub(crate) fn note_trouble(&self) {
        if let Topology::Sentinel(s) = self {
            s.note_trouble();
        }
    }

    /// A connect to the current address succeeded.
    pub(crate) fn note_connected(&self) {
        if let Topology::Sentinel(s) = self {
            s.note_connected();
        }
    }

    /// The sentinel topology, if this is one.
    pub(crate) fn sentinel(&self) -> Option<&Arc<SentinelTopology>> {
        match self {
            Topology::Standalone(_) => None,
            Topology::Sentinel(s) => Some(s),
        }
    }
}

/// `template` (the URL's settings: user, password, database, TLS roots and
/// client certificate) with `host:port` as the address: a node that
/// discovery named. TLS stays TLS, with the same verification.
pub(crate) fn at_address(template: &ConnectionInfo, host: String, port: u16) -> ConnectionInfo {
    let addr = match template.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host, port),
    };
    template.clone().set_addr(addr)
}

/// A change of master, as the client saw it.
#[derive(Debug, Clone)]
pub(crate) struct MasterSwitch {
    /// `host:port` of the previous master.
    pub(crate) from: String,
    /// `host:port` of the new one.
    pub(crate) to: String,
    /// `host:port` of the sentinel that named it.
    pub(crate) sentinel: String,
    /// From the first sign of trouble with the old master this client saw
    /// (a failed connect, a `READONLY`) to the switch; zero when the
    /// switch came before any trouble (a `+switch-master` message).
    pub(crate) took: Duration,
    /// Keys this client wrote to the old master shortly before the switch:
    /// the new master may hold older values, so they are deleted there
    /// before they are served again.
    pub(crate) distrusted: usize,
    /// More keys were written then than could be noted: reads of those
    /// may return older values.
    pub(crate) untracked: bool,
}

/// Told of each master switch (on the thread that saw it, outside the
/// topology's locks).
pub(crate) trait TopologyListener: Send + Sync {
    /// The master moved.
    fn master_switched(&self, switch: &MasterSwitch);
}

#[cfg(test)]
mod tests {
    use crate::error::tests::server_error;
    use crate::error::Error;
    use crate::pool::is_readonly;

    #[test]
    fn readonly_is_recognised_and_resent_only_when_idempotent() {
        let err = server_error(b"-READONLY You can't write against a read only replica.\r\n");
        assert!(is_readonly(&err));
        // The retry layer re-sends a command that may have executed only
        // when it is idempotent: the issue asks exactly that after READONLY.
        assert!(Error::from_redis(err).may_have_executed());
        assert!(!is_readonly(&server_error(b"-ERR nope\r\n")));
        assert!(!is_readonly(&server_error(b"-LOADING wait\r\n")));
    }
}

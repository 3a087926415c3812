//! Cluster URLs: `redis+cluster://[[username]:password@]host1[:port1][,host2[:port2]…]`,
//! `rediss+cluster://` for TLS to every node.
//!
//! The hosts are *seeds*: any one that answers gives the client the slot
//! map, and the nodes it names are used from then on (see
//! `topology::cluster`). Parsed by hand (the `url` crate cannot parse a
//! host list), with the sentinel URL's host-list rules; as for every URL,
//! each rejection names what is wrong and never echoes the password.

use super::host_list::{self, HostListUrl, Kind};
use super::sentinel::{host_port, parse_hosts};
use super::url::Endpoint;
use crate::error::Error;

/// A seed's port when the URL gives none.
const DEFAULT_PORT: u16 = 6379;

const EXPECTED: &str =
    "expected redis+cluster://[[user]:password@]host[:port][,host[:port]...] or rediss+cluster://...";

const KIND: Kind = Kind {
    plain: "redis+cluster",
    tls: "rediss+cluster",
    name: "cluster",
    expected: EXPECTED,
};

/// What a cluster URL names besides the nodes' settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterSpec {
    /// `(host, port)` of each seed, in the URL's order.
    pub(crate) seeds: Vec<(String, u16)>,
}

/// `true` when `raw` has a cluster scheme (the caller then parses it here).
pub(crate) fn is_cluster_url(raw: &str) -> bool {
    let raw = raw.trim();
    let head = raw.get(..18).unwrap_or(raw).to_ascii_lowercase();
    head.starts_with("redis+cluster://") || head.starts_with("rediss+cluster://")
}

/// Parses a cluster URL; `label` (a field or variable name) starts every
/// error message.
pub(crate) fn parse(label: &str, raw: &str) -> Result<Endpoint, Error> {
    let url = host_list::split(label, raw, &KIND)?;
    let err = |what: &str| Error::config(format!("{label}: {what}; {EXPECTED}"));
    match url.path {
        "" | "0" => {}
        _ => {
            return Err(Error::config(format!(
                "{label}: a Redis Cluster has database 0 only: nothing may follow the hosts but an optional /0"
            )))
        }
    }
    if url.hosts.is_empty() {
        return Err(err("no seed host"));
    }
    let seeds = parse_hosts(label, url.hosts, "cluster seed", DEFAULT_PORT)?;
    // The first seed's address until the slot map names the nodes: every
    // node's address is set from this template (see `topology::cluster`).
    let Some(first) = seeds.first().cloned() else {
        return Err(err("no seed host"));
    };
    let info = url.info_at(label, first, url.redis_settings())?;
    let HostListUrl {
        scheme,
        tls,
        insecure,
        username,
        password,
        ..
    } = url;

    let mut redacted =
        super::url::redacted_prefix(&scheme, username.as_deref(), password.is_some());
    let list: Vec<String> = seeds.iter().map(|(h, p)| host_port(h, *p)).collect();
    redacted.push_str(&list.join(","));
    if insecure {
        redacted.push_str("#insecure");
    }
    Ok(Endpoint {
        info,
        redacted,
        tls,
        insecure_fragment: insecure,
        sentinel: None,
        cluster: Some(ClusterSpec { seeds }),
    })
}

#[cfg(test)]
mod tests {
    use super::super::url::tests::{err, ok};

    #[test]
    fn cluster_forms() {
        let e = ok("redis+cluster://127.0.0.1:7000,127.0.0.1:7001");
        let seeds = e
            .cluster
            .as_ref()
            .map(|c| c.seeds.clone())
            .unwrap_or_default();
        assert_eq!(
            seeds,
            vec![
                ("127.0.0.1".to_string(), 7000),
                ("127.0.0.1".to_string(), 7001)
            ]
        );
        assert!(!e.tls);
        assert_eq!(e.redacted, "redis+cluster://127.0.0.1:7000,127.0.0.1:7001");

        let e = ok("rediss+cluster://alice:s%40cret@a.example,[::1]:7002/0#insecure");
        assert!(e.tls && e.insecure_fragment);
        assert_eq!(e.info.redis_settings().password(), Some("s@cret"));
        assert_eq!(e.info.redis_settings().username(), Some("alice"));
        assert_eq!(
            e.redacted,
            "rediss+cluster://alice:***@a.example:6379,[::1]:7002#insecure"
        );
        assert!(!format!("{e:?}").contains("cret"));

        let e = ok("REDIS+CLUSTER://:pw@h:1");
        assert_eq!(e.redacted, "redis+cluster://:***@h:1");
    }

    #[test]
    fn cluster_rejections_say_what_was_wrong() {
        assert!(err("redis+cluster://").contains("no seed host"));
        assert!(err("redis+cluster://:pw@").contains("no seed host"));
        assert!(err("redis+cluster://a:1,,b:2").contains("cluster seed #2 is empty"));
        assert!(err("redis+cluster://a:0").contains("cluster seed #1: port must be"));
        assert!(err("redis+cluster://a:x").contains("port must be"));
        assert!(err("redis+cluster://a:1/3").contains("database 0 only"));
        assert!(err("redis+cluster://a:1/mymaster").contains("database 0 only"));
        assert!(err("redis+cluster://a:1?x=1").contains("query parameters"));
        assert!(err("redis+cluster://a:1#insecure").contains("only applies to rediss+cluster"));
        assert!(err("redis+cluster://0.0.0.0:1").contains("wildcard"));
        assert!(err("redis+cluster://[::1:1").contains("without a closing"));
        assert!(err("redis+cluster://a b").contains("spaces"));
        assert!(err("redis+cluster://u:%FF@h").contains("not valid UTF-8"));
        assert!(!err("redis+cluster://u:topsecret@h:0").contains("topsecret"));
    }
}

//! The slot map, and the two replies it is read from: `CLUSTER SHARDS`
//! (Redis 7+) and `CLUSTER SLOTS` (older servers).
//!
//! Replies are untrusted input: every malformed shape is a typed
//! [`MapError`] saying what was wrong, never a panic, and a slot number
//! outside `0..16384` or a port outside `1..=65535` is rejected, not
//! wrapped.

use std::fmt;

use redis::Value;

use super::slot::SLOTS;

/// `host:port` of a cluster node, as the cluster announces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NodeAddr {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl NodeAddr {
    /// Parses `host:port` (as in a `MOVED` reply; `[v6]:port` accepted).
    pub(crate) fn parse(s: &str) -> Option<NodeAddr> {
        let (host, port) = s.rsplit_once(':')?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
        if host.is_empty() {
            return None;
        }
        Some(NodeAddr {
            host: host.to_string(),
            port,
        })
    }
}

/// One shard: slot ranges, their master and its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shard {
    /// Inclusive `(first, last)` slot ranges.
    pub(crate) slots: Vec<(u16, u16)>,
    pub(crate) master: NodeAddr,
    /// Replicas not reported failed (one still loading answers `LOADING`,
    /// and the read goes to the master then).
    pub(crate) replicas: Vec<NodeAddr>,
    /// Nodes of the shard the cluster reports failed (`CLUSTER SHARDS`
    /// only): a master among them was failed over, not removed.
    pub(crate) failed: Vec<NodeAddr>,
}

/// What was wrong with a cluster topology reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MapError(pub(crate) String);

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad<T>(what: impl Into<String>) -> Result<T, MapError> {
    Err(MapError(what.into()))
}

/// Most shards a reply may describe (one per master; the cluster spec
/// recommends at most 1000 nodes).
const MAX_SHARDS: usize = 16384;

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

/// A RESP2 flat `[k, v, k, v]` array or a RESP3 map, as pairs.
fn pairs(v: &Value) -> Result<Vec<(String, &Value)>, MapError> {
    match v {
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return bad("a field list has an odd number of items");
            }
            items
                .chunks(2)
                .map(|kv| match kv {
                    [k, v] => text(k)
                        .map(|k| (k, v))
                        .ok_or_else(|| MapError("a field name is not a string".into())),
                    _ => bad("a field list has an odd number of items"),
                })
                .collect()
        }
        Value::Map(items) => items
            .iter()
            .map(|(k, v)| {
                text(k)
                    .map(|k| (k, v))
                    .ok_or_else(|| MapError("a field name is not a string".into()))
            })
            .collect(),
        _ => bad("expected a map of fields"),
    }
}

fn items(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(items) | Value::Set(items) => Some(items),
        _ => None,
    }
}

fn slot(v: &Value) -> Result<u16, MapError> {
    match int(v) {
        Some(n) if (0..i64::from(SLOTS)).contains(&n) => {
            u16::try_from(n).or_else(|_| bad(format!("slot {n} is out of range")))
        }
        Some(n) => bad(format!("slot {n} is outside 0..16384")),
        None => bad("a slot number is not an integer"),
    }
}

fn port(v: &Value) -> Result<u16, MapError> {
    match int(v) {
        Some(n) if (1..=65535).contains(&n) => {
            u16::try_from(n).or_else(|_| bad(format!("port {n} is out of range")))
        }
        Some(n) => bad(format!("port {n} is outside 1..=65535")),
        None => bad("a port is not an integer"),
    }
}

fn range(first: &Value, last: &Value) -> Result<(u16, u16), MapError> {
    let (a, b) = (slot(first)?, slot(last)?);
    if a > b {
        return bad(format!("slot range {a}-{b} ends before it starts"));
    }
    Ok((a, b))
}

/// Parses a `CLUSTER SHARDS` reply. `tls`: use each node's `tls-port`.
/// `seed_host` replaces an empty or `?` endpoint (a node that does not
/// know its own address announces none).
pub(crate) fn parse_shards(
    reply: &Value,
    tls: bool,
    seed_host: &str,
) -> Result<Vec<Shard>, MapError> {
    let Some(shards) = items(reply) else {
        return bad("CLUSTER SHARDS: expected an array of shards");
    };
    if shards.len() > MAX_SHARDS {
        return bad(format!(
            "CLUSTER SHARDS: {} shards is too many",
            shards.len()
        ));
    }
    let mut out = Vec::with_capacity(shards.len());
    for (i, shard) in shards.iter().enumerate() {
        let fields =
            pairs(shard).map_err(|e| MapError(format!("CLUSTER SHARDS: shard {i}: {e}")))?;
        let at = |what: String| MapError(format!("CLUSTER SHARDS: shard {i}: {what}"));
        let mut slots = Vec::new();
        let mut master: Option<(NodeAddr, bool)> = None;
        let mut replicas = Vec::new();
        let mut failed = Vec::new();
        for (name, value) in &fields {
            match name.as_str() {
                "slots" => {
                    let list = items(value).ok_or_else(|| at("slots is not an array".into()))?;
                    if list.len() % 2 != 0 {
                        return Err(at("slots holds an odd number of bounds".into()));
                    }
                    for pair in list.chunks(2) {
                        if let [a, b] = pair {
                            slots.push(range(a, b).map_err(|e| at(e.0))?);
                        }
                    }
                }
                "nodes" => {
                    let list = items(value).ok_or_else(|| at("nodes is not an array".into()))?;
                    for (j, node) in list.iter().enumerate() {
                        let node = parse_node(node, tls, seed_host)
                            .map_err(|e| at(format!("node {j}: {e}")))?;
                        if !node.online {
                            failed.push(node.addr.clone());
                        }
                        match node {
                            Node {
                                addr,
                                master: true,
                                online,
                            } => {
                                // Two masters in a shard: the failed one is
                                // the one a replica replaced.
                                let better = match &master {
                                    None => true,
                                    Some((_, was_online)) => online && !was_online,
                                };
                                if better {
                                    master = Some((addr, online));
                                }
                            }
                            Node {
                                addr,
                                master: false,
                                online: true,
                            } => replicas.push(addr),
                            Node { .. } => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if slots.is_empty() {
            // A shard without slots (a master being added, or a replica
            // set left empty): nothing routes to it.
            continue;
        }
        let Some((master, _)) = master else {
            return Err(at("slots but no master".into()));
        };
        replicas.retain(|r| *r != master);
        out.push(Shard {
            slots,
            master,
            replicas,
            failed,
        });
    }
    Ok(out)
}

struct Node {
    addr: NodeAddr,
    master: bool,
    online: bool,
}

fn parse_node(v: &Value, tls: bool, seed_host: &str) -> Result<Node, MapError> {
    let fields = pairs(v)?;
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let host = ["endpoint", "ip", "hostname"]
        .iter()
        .filter_map(|n| get(n).and_then(text))
        .find(|h| !h.is_empty() && h != "?")
        .unwrap_or_else(|| seed_host.to_string());
    let port = match (tls, get("tls-port"), get("port")) {
        (true, Some(p), _) => port(p)?,
        (_, _, Some(p)) => port(p)?,
        (false, Some(p), None) => port(p)?,
        _ => return bad("no port"),
    };
    let role = get("role")
        .and_then(text)
        .ok_or(MapError("no role".into()))?;
    // `online`, `loading` or `failed`: only a failed node is left out.
    let online = get("health").and_then(text).is_none_or(|h| h != "failed");
    Ok(Node {
        addr: NodeAddr { host, port },
        master: role == "master",
        online,
    })
}

/// Parses a `CLUSTER SLOTS` reply (`[[first, last, [ip, port, id, ...],
/// replicas...], ...]`); ports are the nodes' plain ports, or their TLS
/// ports when the cluster runs TLS-only (`tls-cluster`).
pub(crate) fn parse_slots(reply: &Value, seed_host: &str) -> Result<Vec<Shard>, MapError> {
    let Some(ranges) = items(reply) else {
        return bad("CLUSTER SLOTS: expected an array of slot ranges");
    };
    let mut out: Vec<Shard> = Vec::new();
    for (i, entry) in ranges.iter().enumerate() {
        let at = |what: String| MapError(format!("CLUSTER SLOTS: range {i}: {what}"));
        let Some(fields) = items(entry) else {
            return Err(at("not an array".into()));
        };
        let [first, last, master, replicas @ ..] = fields else {
            return Err(at("fewer than 3 items".into()));
        };
        let range = range(first, last).map_err(|e| at(e.0))?;
        let node = |v: &Value| -> Result<NodeAddr, MapError> {
            let parts = items(v).ok_or_else(|| at("a node is not an array".into()))?;
            let [host, p, ..] = parts else {
                return Err(at("a node has no host and port".into()));
            };
            let host = text(host)
                .filter(|h| !h.is_empty() && h != "?")
                .unwrap_or_else(|| seed_host.to_string());
            Ok(NodeAddr {
                host,
                port: port(p).map_err(|e| at(e.0))?,
            })
        };
        let master = node(master)?;
        let replicas = replicas.iter().map(node).collect::<Result<Vec<_>, _>>()?;
        match out.iter_mut().find(|s| s.master == master) {
            Some(shard) => shard.slots.push(range),
            None => {
                if out.len() >= MAX_SHARDS {
                    return Err(at("too many masters".into()));
                }
                out.push(Shard {
                    slots: vec![range],
                    master,
                    replicas,
                    failed: Vec::new(),
                });
            }
        }
    }
    Ok(out)
}

/// No master for this slot.
pub(crate) const UNASSIGNED: u16 = u16::MAX;

/// Slot → index of the shard that serves it.
#[derive(Clone)]
pub(crate) struct SlotTable {
    owner: Box<[u16]>,
}

impl fmt::Debug for SlotTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let assigned = self.owner.iter().filter(|o| **o != UNASSIGNED).count();
        write!(f, "SlotTable({assigned} slots assigned)")
    }
}

impl SlotTable {
    /// Every slot unassigned.
    pub(crate) fn empty() -> SlotTable {
        SlotTable {
            owner: vec![UNASSIGNED; usize::from(SLOTS)].into_boxed_slice(),
        }
    }

    /// Slots assigned from `shards` (index = position in `shards`). A
    /// slot two shards claim is an error: a reply caught mid-change.
    pub(crate) fn from_shards(shards: &[Shard]) -> Result<SlotTable, MapError> {
        let mut table = SlotTable::empty();
        for (i, shard) in shards.iter().enumerate() {
            let index = u16::try_from(i).map_err(|_| MapError("too many shards".into()))?;
            for &(a, b) in &shard.slots {
                for s in a..=b {
                    let cell = table
                        .owner
                        .get_mut(usize::from(s))
                        .ok_or_else(|| MapError(format!("slot {s} is out of range")))?;
                    if *cell != UNASSIGNED && *cell != index {
                        return bad(format!("slot {s} is claimed by two masters"));
                    }
                    *cell = index;
                }
            }
        }
        Ok(table)
    }

    /// The shard index that serves `slot`.
    pub(crate) fn get(&self, slot: u16) -> Option<usize> {
        self.owner
            .get(usize::from(slot))
            .filter(|o| **o != UNASSIGNED)
            .map(|o| usize::from(*o))
    }

    /// Sets `slot`'s shard.
    pub(crate) fn set(&mut self, slot: u16, index: u16) {
        if let Some(cell) = self.owner.get_mut(usize::from(slot)) {
            *cell = index;
        }
    }

    /// Slots assigned.
    pub(crate) fn assigned(&self) -> usize {
        self.owner.iter().filter(|o| **o != UNASSIGNED).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn node(ip: &str, port: i64, role: &str, health: &str) -> Value {
        Value::Array(vec![
            bulk("id"),
            bulk("abc"),
            bulk("port"),
            Value::Int(port),
            bulk("ip"),
            bulk(ip),
            bulk("endpoint"),
            bulk(ip),
            bulk("role"),
            bulk(role),
            bulk("replication-offset"),
            Value::Int(1),
            bulk("health"),
            bulk(health),
        ])
    }

    fn shard(ranges: &[i64], nodes: Vec<Value>) -> Value {
        Value::Array(vec![
            bulk("slots"),
            Value::Array(ranges.iter().map(|n| Value::Int(*n)).collect()),
            bulk("nodes"),
            Value::Array(nodes),
        ])
    }

    #[test]
    fn shards_reply() -> Result<(), MapError> {
        let reply = Value::Array(vec![
            shard(
                &[0, 5460],
                vec![
                    node("127.0.0.1", 7000, "master", "online"),
                    node("127.0.0.1", 7003, "replica", "online"),
                ],
            ),
            shard(
                &[5461, 10922],
                vec![
                    // Failed over: the old master failed, a replica promoted.
                    node("127.0.0.1", 7001, "master", "failed"),
                    node("127.0.0.1", 7004, "master", "online"),
                ],
            ),
            shard(&[10923, 16383], vec![node("", 7002, "master", "online")]),
            // No slots: skipped.
            shard(&[], vec![node("127.0.0.1", 7009, "master", "online")]),
        ]);
        let shards = parse_shards(&reply, false, "seed")?;
        assert_eq!(shards.len(), 3);
        assert_eq!(shards[0].master.to_string(), "127.0.0.1:7000");
        assert_eq!(shards[0].replicas.len(), 1);
        assert_eq!(shards[1].master.port, 7004);
        assert_eq!(shards[1].failed.len(), 1);
        assert_eq!(shards[1].failed[0].port, 7001);
        assert_eq!(shards[2].master.to_string(), "seed:7002");
        let table = SlotTable::from_shards(&shards)?;
        assert_eq!(table.get(0), Some(0));
        assert_eq!(table.get(5461), Some(1));
        assert_eq!(table.get(16383), Some(2));
        assert_eq!(table.assigned(), 16384);
        Ok(())
    }

    #[test]
    fn slots_reply() -> Result<(), MapError> {
        let n = |port: i64| Value::Array(vec![bulk("127.0.0.1"), Value::Int(port), bulk("id")]);
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(99), n(7000), n(7003)]),
            Value::Array(vec![Value::Int(100), Value::Int(16383), n(7001)]),
            Value::Array(vec![Value::Int(200), Value::Int(300), n(7000)]),
        ]);
        let shards = parse_slots(&reply, "seed")?;
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].slots, vec![(0, 99), (200, 300)]);
        // 200..=300 claimed twice.
        assert!(SlotTable::from_shards(&shards).is_err());
        Ok(())
    }

    #[test]
    fn malformed_replies_are_errors() {
        let cases = [
            Value::Int(3),
            Value::Array(vec![Value::Int(3)]),
            Value::Array(vec![shard(
                &[0, 16384],
                vec![node("h", 1, "master", "online")],
            )]),
            Value::Array(vec![shard(&[5, 1], vec![node("h", 1, "master", "online")])]),
            Value::Array(vec![shard(&[0, 1, 2], vec![])]),
            Value::Array(vec![shard(
                &[0, 1],
                vec![node("h", 70000, "master", "online")],
            )]),
            Value::Array(vec![shard(
                &[0, 1],
                vec![node("h", 1, "replica", "online")],
            )]),
            Value::Array(vec![Value::Array(vec![bulk("slots")])]),
        ];
        for reply in &cases {
            assert!(parse_shards(reply, false, "s").is_err(), "{reply:?}");
        }
        for reply in [
            Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(1)])]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(1),
                Value::Array(vec![bulk("h"), Value::Int(0)]),
            ])]),
            Value::Array(vec![Value::Array(vec![
                Value::Int(-1),
                Value::Int(1),
                Value::Nil,
            ])]),
        ] {
            assert!(parse_slots(&reply, "s").is_err(), "{reply:?}");
        }
    }

    #[test]
    fn node_addresses() {
        assert_eq!(
            NodeAddr::parse("127.0.0.1:7000").map(|a| a.to_string()),
            Some("127.0.0.1:7000".to_string())
        );
        assert_eq!(
            NodeAddr::parse("[::1]:7000").map(|a| a.host),
            Some("::1".to_string())
        );
        assert_eq!(NodeAddr::parse("h:0"), None);
        assert_eq!(NodeAddr::parse(":1"), None);
        assert_eq!(NodeAddr::parse("nope"), None);
    }
}

//! A real Redis Cluster for the tests: `masters` masters with one replica
//! each, every node a [`RedisServer`] with `--cluster-enabled yes` and a
//! short `cluster-node-timeout`, joined by `redis-cli --cluster create`;
//! optionally TLS only (clients, replication and the cluster bus).

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::sentinel::TlsFiles;
use super::{free_port, RedisServer};

/// How long the cluster may take to form, fail over or settle.
pub const SETTLE: Duration = Duration::from_secs(30);

/// `cluster-node-timeout` of every node: a dead master is failed over
/// within a few of these.
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// A running cluster; every node is killed on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// TLS only (no plain port, `tls-cluster yes`) when set.
    pub tls: Option<TlsFiles>,
}

fn redis_cli(args: &[String]) -> Result<String, String> {
    let out = Command::new("redis-cli")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run redis-cli (install redis-tools): {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// `redis-cli` arguments to speak TLS to the nodes.
fn cli_tls(tls: Option<&TlsFiles>) -> Vec<String> {
    match tls {
        Some(t) => vec![
            "--tls".to_string(),
            "--cacert".to_string(),
            t.issuer.display().to_string(),
        ],
        None => Vec::new(),
    }
}

impl RedisCluster {
    /// Starts `masters` × 2 nodes and forms the cluster (one replica per
    /// master); returns once every node reports `cluster_state:ok`.
    pub fn start(masters: usize) -> RedisCluster {
        RedisCluster::form(masters, &[], None)
    }

    /// [`RedisCluster::start`] with extra `redis-server` arguments for
    /// every node.
    pub fn start_with(masters: usize, extra: &[&str]) -> RedisCluster {
        RedisCluster::form(masters, extra, None)
    }

    /// [`RedisCluster::start`] speaking TLS only: clients, replication and
    /// the cluster bus.
    pub fn start_tls(masters: usize, tls: &TlsFiles) -> RedisCluster {
        RedisCluster::form(masters, &[], Some(tls))
    }

    fn form(masters: usize, extra: &[&str], tls: Option<&TlsFiles>) -> RedisCluster {
        let mut tls_args: Vec<String> = tls.map(TlsFiles::server_args).unwrap_or_default();
        if tls.is_some() {
            tls_args.extend(["--tls-cluster".to_string(), "yes".to_string()]);
        }
        let nodes: Vec<RedisServer> = (0..masters * 2)
            .map(|_| {
                RedisServer::builder()
                    .args(&tls_args.iter().map(String::as_str).collect::<Vec<_>>())
                    .args(extra)
                    .args(&[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        &NODE_TIMEOUT_MS.to_string(),
                        // A replica fails over however long it was cut off.
                        "--cluster-replica-validity-factor",
                        "0",
                        "--cluster-port",
                        &free_port().to_string(),
                    ])
                    .start()
            })
            .collect();
        let mut args = cli_tls(tls);
        args.extend(["--cluster".to_string(), "create".to_string()]);
        args.extend(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(String::from));
        if let Err(e) = redis_cli(&args) {
            panic!("redis-cli --cluster create failed: {e}");
        }
        let cluster = RedisCluster {
            nodes,
            tls: tls.cloned(),
        };
        cluster.wait_ok(SETTLE);
        cluster
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "rediss+cluster"
        } else {
            "redis+cluster"
        }
    }

    /// `redis+cluster://127.0.0.1:<port of node 0>` (`rediss+cluster://`
    /// over TLS): one seed.
    pub fn seed_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.nodes[0].port())
    }

    /// Every node as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("{}://{}", self.scheme(), hosts.join(","))
    }

    /// A connection to node `i` (over TLS when the cluster speaks it),
    /// with `timeout` on the connect and on every read and write.
    pub fn try_connection(
        &self,
        i: usize,
        timeout: Duration,
    ) -> redis::RedisResult<redis::Connection> {
        let port = self.nodes[i].port();
        match &self.tls {
            None => super::connect(&format!("redis://127.0.0.1:{port}"), timeout),
            #[cfg(feature = "tls")]
            Some(t) => super::connect_tls(port, &t.issuer, timeout),
            #[cfg(not(feature = "tls"))]
            Some(_) => panic!("a TLS cluster needs the `tls` feature"),
        }
    }

    /// A connection to node `i`, or a panic with its log.
    pub fn connection(&self, i: usize) -> redis::Connection {
        self.try_connection(i, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("cannot connect to node {i}: {e}\n{}", self.nodes[i].log()))
    }

    fn info(&self, i: usize) -> Option<String> {
        let mut conn = self.try_connection(i, Duration::from_millis(500)).ok()?;
        redis::cmd("CLUSTER")
            .arg("INFO")
            .query::<String>(&mut conn)
            .ok()
    }

    /// Waits until every running node reports `cluster_state:ok` and sees
    /// all 16384 slots served.
    pub fn wait_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let running: Vec<usize> = (0..self.nodes.len()).filter(|i| self.is_up(*i)).collect();
            let ok = !running.is_empty()
                && running.iter().all(|n| {
                    self.info(*n).is_some_and(|i| {
                        i.contains("cluster_state:ok") && i.contains("cluster_slots_ok:16384")
                    })
                });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not reach cluster_state:ok within {within:?}: {:?}",
                running.iter().map(|n| self.info(*n)).collect::<Vec<_>>()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `true` when the node answers PING.
    pub fn is_up(&self, i: usize) -> bool {
        self.try_connection(i, Duration::from_millis(300))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// `ROLE` of node `i`: `"master"` or `"slave"` (`None` when down).
    pub fn role(&self, i: usize) -> Option<String> {
        let mut conn = self.try_connection(i, Duration::from_secs(2)).ok()?;
        let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).ok()?;
        match role.first() {
            Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Some(redis::Value::SimpleString(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// Indices of the running masters.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.role(*i).as_deref() == Some("master"))
            .collect()
    }

    /// The node id of node `i`.
    pub fn node_id(&self, i: usize) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.connection(i))
            .expect("CLUSTER MYID")
    }

    /// The hash slot of `key` as the server computes it.
    pub fn key_slot(&self, key: &[u8]) -> u16 {
        let i = (0..self.nodes.len())
            .find(|i| self.is_up(*i))
            .expect("a node is up");
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.connection(i))
            .expect("CLUSTER KEYSLOT")
    }

    /// The index of the running master that serves `key`: a master
    /// answers `EXISTS` itself or redirects with `MOVED <slot> host:port`.
    pub fn owner_of(&self, key: &[u8]) -> usize {
        let deadline = Instant::now() + SETTLE;
        loop {
            for i in self.masters() {
                let reply = self
                    .try_connection(i, Duration::from_secs(2))
                    .and_then(|mut c| redis::cmd("EXISTS").arg(key).query::<i64>(&mut c));
                match reply {
                    Ok(_) => return i,
                    Err(e) => {
                        let port = e
                            .redirect_node()
                            .and_then(|(addr, _)| addr.rsplit_once(':'))
                            .and_then(|(_, p)| p.parse::<u16>().ok());
                        let target = self.nodes.iter().position(|n| Some(n.port()) == port);
                        if let Some(j) = target.filter(|j| self.is_up(*j)) {
                            return j;
                        }
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no running master serves {:?}",
                String::from_utf8_lossy(key)
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET key` on node `i` directly (`Err` for a `MOVED`).
    pub fn get_on(&self, i: usize, key: &[u8]) -> redis::RedisResult<Option<Vec<u8>>> {
        let mut conn = self.try_connection(i, Duration::from_secs(2))?;
        redis::cmd("GET").arg(key).query(&mut conn)
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].stop();
    }

    /// Moves `slots` slots from node `from` to node `to` with
    /// `redis-cli --cluster reshard`.
    pub fn reshard(&self, from: usize, to: usize, slots: u32) {
        let mut args = cli_tls(self.tls.as_ref());
        args.extend([
            "--cluster".to_string(),
            "reshard".to_string(),
            format!("127.0.0.1:{}", self.nodes[from].port()),
            "--cluster-from".to_string(),
            self.node_id(from),
            "--cluster-to".to_string(),
            self.node_id(to),
            "--cluster-slots".to_string(),
            slots.to_string(),
            "--cluster-yes".to_string(),
            "--cluster-pipeline".to_string(),
            "50".to_string(),
        ]);
        if let Err(e) = redis_cli(&args) {
            panic!("redis-cli --cluster reshard failed: {e}");
        }
    }
}

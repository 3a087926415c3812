//! Redis Cluster (`redis+cluster://`, issue #14) against real clusters the
//! tests start: 3 masters and 3 replicas, `cluster-node-timeout` 1 s.
//! Routing and multi-slot commands share one cluster; the reshard, the
//! master kill and the total outage each get their own.

// Test code: a failed unwrap is a broken test environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use resilient_redis::{redis, Client, Config, ErrorKind};
use support::{ms, RedisCluster};

/// The cluster the non-destructive tests share.
fn shared() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(3))
}

fn config(url: &str) -> resilient_redis::ConfigBuilder {
    Config::builder(url)
        .connect_timeout(ms(500))
        .socket_timeout(ms(1000))
        .checkout_timeout(ms(1000))
        .retry_base_delay(ms(20))
        .retry_max_delay(ms(200))
}

#[test]
fn keys_go_to_the_master_of_their_slot_from_one_seed() {
    let cluster = shared();
    let client = Client::new(config(&cluster.seed_url()).build().unwrap()).unwrap();
    let mut owners = std::collections::HashSet::new();
    for i in 0..60 {
        let key = format!("route:{i}");
        client.set(&key, format!("v{i}")).unwrap();
        let owner = cluster.owner_of(key.as_bytes());
        owners.insert(owner);
        // On its owner, and nowhere else.
        assert_eq!(
            cluster.get_on(owner, key.as_bytes()).unwrap(),
            Some(format!("v{i}").into_bytes())
        );
        for other in cluster.masters().into_iter().filter(|m| *m != owner) {
            assert!(
                cluster.get_on(other, key.as_bytes()).is_err(),
                "{key} answered by node {other}"
            );
        }
        let back: Option<String> = client.get(&key).unwrap();
        assert_eq!(back.as_deref(), Some(format!("v{i}").as_str()));
    }
    assert_eq!(owners.len(), 3, "60 keys reach all three masters");
    // Hash tags: one slot, so one node.
    client.set("{user1}:a", "1").unwrap();
    client.set("{user1}:b", "2").unwrap();
    assert_eq!(
        cluster.owner_of(b"{user1}:a"),
        cluster.owner_of(b"{user1}:b")
    );
    assert_eq!(cluster.key_slot(b"{user1}:a"), cluster.key_slot(b"user1"));
    // Every node has its own endpoint in the stats.
    let stats = client.stats();
    assert!(stats.endpoints.len() >= 3, "{:?}", stats.endpoints);
}

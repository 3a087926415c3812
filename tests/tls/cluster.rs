//! `rediss+cluster://` end to end against a real TLS-only Redis Cluster:
//! 3 masters and 3 replicas with no plain port (`--port 0`), replication
//! and the cluster bus over TLS (`tls-cluster yes`, so the nodes announce
//! their TLS ports). The client trusts the test CA only.

use resilient_redis::Client;

use super::support::cluster::RedisCluster;
use super::support::ms;
use super::support::sentinel::TlsFiles;
use super::*;

#[test]
fn rediss_cluster_routes_by_slot_over_tls_only() {
    let certs = Certs::new("cluster");
    let files = TlsFiles::new(
        certs.path("ca.pem"),
        certs.path("server.pem"),
        certs.path("server.key"),
    );
    let cluster = RedisCluster::start_tls(3, &files);
    for node in &cluster.nodes {
        let plain = support::connect(&format!("redis://127.0.0.1:{}", node.port()), ms(500))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        assert!(plain.is_err(), "port {} answers plain RESP", node.port());
    }
    let url = cluster.seed_url();
    assert!(url.starts_with("rediss+cluster://"), "{url}");
    let config = Config::builder(&url)
        .tls_ca_file(certs.path("ca.pem"))
        .connect_timeout(ms(2000))
        .socket_timeout(ms(2000))
        .checkout_timeout(ms(2000))
        .build()
        .unwrap();
    let client = Client::new(config).unwrap();
    let pairs: Vec<(String, String)> = (0..30)
        .map(|i| (format!("tls:{i}"), format!("v{i}")))
        .collect();
    client.mset(&pairs).unwrap();
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    let values: Vec<Option<String>> = client.mget(&keys).unwrap();
    for ((k, v), got) in pairs.iter().zip(&values) {
        assert_eq!(got.as_deref(), Some(v.as_str()), "{k}");
        let owner = cluster.owner_of(k.as_bytes());
        assert_eq!(
            cluster.get_on(owner, k.as_bytes()).unwrap(),
            Some(v.clone().into_bytes())
        );
    }
    let stats = client.stats();
    assert_eq!(stats.endpoints.len(), 3, "{stats:?}");
    assert_eq!((stats.fallback_writes, stats.fallback_reads), (0, 0));
    assert!(stats
        .endpoints
        .iter()
        .all(|e| e.url.starts_with("rediss://")));
}

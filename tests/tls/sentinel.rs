//! `rediss+sentinel://` end to end against real TLS-only processes: a
//! master and its replica with no plain port (`--port 0`, replication over
//! TLS) and three sentinels that speak TLS only, monitor the master and
//! talk to each other over TLS. The client trusts the test CA only.
//!
//! Nothing here can work without TLS: every process refuses plain RESP
//! (checked first), so discovery, the `+switch-master` subscription and
//! every data connection must be TLS.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use resilient_redis::{Client, ConfigBuilder, FallbackMode};

use super::support::sentinel::{Sentinel, TlsFiles, SERVICE};
use super::support::{ms, SentinelCluster};
use super::*;

const DEADLINE: Duration = Duration::from_secs(90);

/// A TLS handshake in a debug build on a loaded machine takes tens of
/// milliseconds; discovery makes two per sentinel asked.
fn fast(url: &str, certs: &Certs) -> ConfigBuilder {
    Config::builder(url)
        .tls_ca_file(certs.path("ca.pem"))
        .connect_timeout(ms(2000))
        .socket_timeout(ms(2000))
        .checkout_timeout(ms(2000))
        .retry_base_delay(ms(5))
        .retry_max_delay(ms(20))
        .open_timeout(ms(500))
}

/// Polls `cond` every 20 ms until it holds; panics after 90 s.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(ms(20));
    }
}

fn master_port(client: &Client) -> Option<u16> {
    let health = client.health();
    let master = health.endpoints[0].master.clone()?;
    master.rsplit(':').next()?.parse().ok()
}

fn get_on(cluster: &SentinelCluster, node: usize, key: &str) -> Option<String> {
    let mut conn = cluster.node_connection(node).unwrap();
    redis::cmd("GET").arg(key).query(&mut conn).unwrap()
}

/// A plain (non-TLS) PING to `port` fails: the process has no plain port.
fn refuses_plaintext(port: u16) -> bool {
    support::connect(&format!("redis://127.0.0.1:{port}"), ms(500))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_err()
}

#[test]
fn rediss_sentinel_discovers_follows_a_failover_and_skips_an_untrusted_sentinel() {
    let certs = Certs::new("sentinel");
    let files = TlsFiles::new(
        certs.path("ca.pem"),
        certs.path("server.pem"),
        certs.path("server.key"),
    );
    let cluster = SentinelCluster::start_tls(&files);
    let (old, new) = (0, 1);
    for port in cluster
        .nodes
        .iter()
        .map(|n| n.port())
        .chain(cluster.sentinels.iter().map(Sentinel::port))
    {
        assert!(refuses_plaintext(port), "port {port} answers plain RESP");
    }
    let url = cluster.url();
    assert!(url.starts_with("rediss+sentinel://"), "{url}");

    // 1. Discovery through the TLS sentinels, SET/GET on the TLS master.
    let client = Client::new(fast(&url, &certs).build().unwrap()).unwrap();
    client.set("k", "v").unwrap();
    assert_eq!(client.get::<_, String>("k").unwrap().as_deref(), Some("v"));
    assert_eq!(master_port(&client), Some(cluster.nodes[old].port()));
    let stats = client.stats();
    assert_eq!(
        (stats.fallback_writes, stats.fallback_reads),
        (0, 0),
        "{stats}"
    );
    assert_eq!(get_on(&cluster, old, "k").as_deref(), Some("v"));

    // 2. SENTINEL FAILOVER while four threads write. No caller sees an
    // error (the default fallback covers the switch), and what is written
    // once the client follows the new master is on it.
    let stop = AtomicBool::new(false);
    let switched = AtomicBool::new(false);
    let written = AtomicU64::new(0);
    let after: Vec<Vec<(String, String)>> = thread::scope(|s| {
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let (client, stop, switched, written) = (&client, &stop, &switched, &written);
                s.spawn(move || {
                    let mut after = Vec::new();
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let seen = switched.load(Ordering::SeqCst);
                        let (key, value) = (format!("w{t}:{i}"), format!("v{i}"));
                        if let Err(e) = client.set(&key, &value) {
                            panic!("writer {t}: {key}: {e:?}");
                        }
                        if seen {
                            after.push((key, value));
                        }
                        written.fetch_add(1, Ordering::SeqCst);
                        i += 1;
                    }
                    after
                })
            })
            .collect();
        let writes = || written.load(Ordering::SeqCst);
        wait_until("the writers are under way", || writes() > 20);
        cluster.failover();
        wait_until("the client follows the failover", || {
            master_port(&client) == Some(cluster.nodes[new].port())
        });
        switched.store(true, Ordering::SeqCst);
        // A few more writes each past the switch, then stop.
        let target = writes() + 100;
        wait_until("more writes after the switch", || writes() >= target);
        stop.store(true, Ordering::SeqCst);
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert!(
        after.iter().all(|a| !a.is_empty()),
        "every writer wrote after the switch"
    );
    let role: Vec<redis::Value> = redis::cmd("ROLE")
        .query(&mut cluster.node_connection(new).unwrap())
        .unwrap();
    assert_eq!(
        redis::from_redis_value::<String>(role[0].clone()).unwrap(),
        "master"
    );
    // Writes the fallback held during the switch are replayed: poll.
    wait_until("the writes after the switch are on the new master", || {
        after
            .iter()
            .flatten()
            .all(|(k, v)| get_on(&cluster, new, k).as_deref() == Some(v.as_str()))
    });
    client.set("after", "x").unwrap();
    assert_eq!(get_on(&cluster, new, "after").as_deref(), Some("x"));
    let stats = client.stats();
    assert_eq!(stats.errors(), 0, "{stats}");
    assert_eq!(stats.endpoints[0].master_switches, 1, "{stats}");

    // 3. A fourth sentinel whose certificate is signed by another CA. It
    // works (trusting its CA, it names the master and is connected to it),
    // but the client does not trust it: it is skipped like a sentinel that
    // is down, and the next one listed answers.
    let untrusted_files = TlsFiles {
        ca: certs.path("ca.pem"),
        cert: certs.path("untrusted-server.pem"),
        key: certs.path("server.key"),
        issuer: certs.path("other-ca.pem"),
    };
    let untrusted = Sentinel::start(cluster.nodes[new].port(), Some(&untrusted_files));
    wait_until("the untrusted sentinel monitors the master", || {
        untrusted
            .query(&["SENTINEL", "MASTER", SERVICE])
            .ok()
            .and_then(|v| redis::from_redis_value::<Vec<String>>(v).ok())
            .is_some_and(|f| {
                let flag = f.iter().position(|k| k == "flags").map(|i| &f[i + 1]);
                flag.is_some_and(|fl| fl == "master")
            })
    });
    assert_eq!(untrusted.master_port(), Some(cluster.nodes[new].port()));
    let (bad, good) = (untrusted.port(), cluster.sentinels[1].port());
    let url = format!("rediss+sentinel://127.0.0.1:{bad},127.0.0.1:{good}/{SERVICE}");
    let skipping = Client::new(fast(&url, &certs).build().unwrap()).unwrap();
    skipping.set("k2", "v2").unwrap();
    assert_eq!(master_port(&skipping), Some(cluster.nodes[new].port()));
    let health = skipping.health();
    assert_eq!(
        health.endpoints[0].sentinel.as_deref(),
        Some(format!("127.0.0.1:{good}").as_str()),
        "{health}"
    );
    assert_eq!(skipping.stats().fallback_writes, 0);
    assert_eq!(get_on(&cluster, new, "k2").as_deref(), Some("v2"));

    // With only the untrusted sentinel no master is found, and for want of
    // a certificate that verifies, not of an answer: the dial fails with
    // the permanent TLS error a `rediss://` URL gives, which the breaker
    // ignores and the (default) fallback does not hide.
    let url = format!("rediss+sentinel://127.0.0.1:{bad}/{SERVICE}");
    let alone = Client::new(fast(&url, &certs).build().unwrap()).unwrap();
    assert_ne!(alone.config().fallback_mode(), FallbackMode::Disabled);
    for _ in 0..3 {
        let e = alone.set("k3", "v3").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Tls, "{e:?}");
        assert_eq!(e.class(), ErrorClass::Permanent, "{e:?}");
        assert!(!e.counts_against_breaker(), "{e:?}");
        assert!(!e.may_have_executed(), "{e:?}");
        assert!(e.to_string().contains("signed by unknown CA"), "{e}");
        assert!(e.to_string().contains(&format!("127.0.0.1:{bad}")), "{e}");
    }
    let stats = alone.stats();
    assert_eq!(stats.fallback_writes, 0, "{stats}");
    assert_eq!(stats.endpoints[0].breaker_opens, 0, "{stats}");
    assert!(!alone.health().serving_from_memory);
}

//! Redis Cluster (`redis+cluster://`, issue #14) against real clusters the
//! tests start: 3 masters and 3 replicas, `cluster-node-timeout` 1 s.
//! Routing and multi-slot commands share one cluster; the reshard, the
//! master kill and the total outage each get their own.

// Test code: a failed unwrap is a broken test environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/history.rs"]
mod history;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread;
use std::time::{Duration, Instant};

use history::{Call, History, Note, Op, Reply, Rules};
use resilient_redis::{redis, Client, Config, ErrorKind, FallbackMode};
use support::{ms, RedisCluster};

/// Every INFO-or-worse line logged in this test binary (one logger per
/// process: tests pick their own lines out by the ports they name).
struct Capture(std::sync::Mutex<Vec<String>>);

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            self.0.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(std::sync::Mutex::new(Vec::new()));

/// Installs [`CAPTURE`] (once) and returns the lines logged so far that
/// contain `needle`.
fn logged(needle: &str) -> Vec<String> {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Info);
    });
    CAPTURE
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(needle))
        .cloned()
        .collect()
}

/// The cluster the non-destructive tests share.
/// The cluster shared by the tests that leave it as they found it:
/// started by the first, stopped when the last one running lets go of it
/// (a static would never be dropped, and its servers would outlive the
/// test binary).
fn shared() -> Arc<RedisCluster> {
    static CLUSTER: Mutex<Weak<RedisCluster>> = Mutex::new(Weak::new());
    let mut slot = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(cluster) = slot.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(RedisCluster::start(3));
    *slot = Arc::downgrade(&cluster);
    cluster
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
    // A seed that does not answer is skipped.
    let dead_seed = support::free_port();
    let url = format!(
        "redis+cluster://127.0.0.1:{dead_seed},127.0.0.1:{}",
        cluster.nodes[0].port()
    );
    let client = Client::new(config(&url).build().unwrap()).unwrap();
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
    // Every master has its own endpoint in the stats.
    let stats = client.stats();
    assert_eq!(stats.endpoints.len(), 3, "{:?}", stats.endpoints);
    assert_eq!(
        client.breaker_state(),
        Some(resilient_redis::BreakerState::Closed)
    );
}

#[test]
fn mget_mset_pipeline_and_execute_across_slots() {
    let cluster = shared();
    let client = Client::new(config(&cluster.url()).key_prefix("ms:").build().unwrap()).unwrap();
    let pairs: Vec<(String, String)> = (0..40)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    client.mset(&pairs).unwrap();
    // Each key on its own master, under the prefix.
    let owners: std::collections::HashSet<usize> = pairs
        .iter()
        .map(|(k, v)| {
            let key = format!("ms:{k}");
            let owner = cluster.owner_of(key.as_bytes());
            assert_eq!(
                cluster.get_on(owner, key.as_bytes()).unwrap(),
                Some(v.clone().into_bytes())
            );
            owner
        })
        .collect();
    assert_eq!(owners.len(), 3);
    // Values come back in the caller's order, misses included.
    let mut keys: Vec<String> = pairs.iter().rev().map(|(k, _)| k.clone()).collect();
    keys.insert(7, "missing".into());
    let attempts = |c: &Client| -> u64 { c.stats().endpoints.iter().map(|e| e.requests).sum() };
    let before = attempts(&client);
    let values: Vec<Option<String>> = client.mget(&keys).unwrap();
    // One request per master (a pipeline of one MGET per slot), not one
    // per slot.
    assert_eq!(attempts(&client) - before, 3);
    // The same for mset (one MSET per slot, pipelined per master), and
    // with a default TTL (one SET ... PX per key).
    let before = attempts(&client);
    client.mset(&pairs).unwrap();
    assert_eq!(attempts(&client) - before, 3);
    let with_ttl = Client::new(
        config(&cluster.url())
            .key_prefix("mt:")
            .default_ttl(Some(Duration::from_secs(100)))
            .build()
            .unwrap(),
    )
    .unwrap();
    let before = attempts(&with_ttl);
    with_ttl.mset(&pairs).unwrap();
    assert_eq!(attempts(&with_ttl) - before, 3);
    for (k, v) in &pairs {
        let key = format!("mt:{k}");
        let owner = cluster.owner_of(key.as_bytes());
        assert_eq!(
            cluster.get_on(owner, key.as_bytes()).unwrap(),
            Some(v.clone().into_bytes())
        );
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query(&mut cluster.connection(owner))
            .unwrap();
        assert!(ttl > 0 && ttl <= 100_000, "{key}: {ttl}");
    }
    for (k, v) in keys.iter().zip(&values) {
        let expected = k.strip_prefix('k').map(|n| format!("v{n}"));
        assert_eq!(v, &expected, "{k}");
    }

    // A pipeline across slots is split and its replies kept in order
    // (ignored replies left out).
    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg("p:a").arg("1").ignore();
    pipe.cmd("SET").arg("p:b").arg("2").ignore();
    pipe.cmd("GET").arg("p:b");
    pipe.cmd("INCR").arg("p:c");
    pipe.cmd("GET").arg("p:a");
    let (b, c, a): (String, i64, String) = client.pipeline(&pipe).unwrap();
    assert_eq!((a.as_str(), b.as_str(), c), ("1", "2", 1));
    assert_ne!(cluster.key_slot(b"p:a"), cluster.key_slot(b"p:b"));
    // A transaction across slots: a typed error naming the problem.
    let mut tx = redis::pipe();
    tx.atomic()
        .cmd("SET")
        .arg("p:a")
        .arg("x")
        .cmd("SET")
        .arg("p:b")
        .arg("y");
    let err = client.pipeline::<()>(&tx).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("hash slot"), "{err}");
    // One slot (a hash tag): a transaction works.
    let mut tx = redis::pipe();
    tx.atomic()
        .cmd("SET")
        .arg("{t}a")
        .arg("x")
        .ignore()
        .cmd("SET")
        .arg("{t}b")
        .arg("y")
        .ignore()
        .cmd("MGET")
        .arg("{t}a")
        .arg("{t}b");
    let ((x, y),): ((String, String),) = client.pipeline(&tx).unwrap();
    assert_eq!((x.as_str(), y.as_str()), ("x", "y"));

    // execute routes by the first key; CROSSSLOT is the server's error,
    // not retried.
    let v: Option<String> = client.execute(redis::cmd("GET").arg("p:a")).unwrap();
    assert_eq!(v.as_deref(), Some("1"));
    let retries = client.stats().retries;
    let err = client
        .execute::<Vec<Option<String>>>(redis::cmd("MGET").arg("p:a").arg("p:b"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server);
    assert!(err.to_string().contains("CROSSSLOT"), "{err}");
    assert_eq!(
        client.stats().retries,
        retries,
        "CROSSSLOT is never retried"
    );
    // Keyless: any master.
    let pong: String = client.execute(&redis::cmd("PING")).unwrap();
    assert_eq!(pong, "PONG");
    assert!(client.ping().is_ok());

    // Per-node stats and breaker, labelled host:port.
    let stats = client.stats();
    assert_eq!(stats.endpoints.len(), 3);
    assert!(stats.cluster_refreshes >= 1);
    let text = stats.to_prometheus();
    for e in &stats.endpoints {
        let node = e.node.clone().unwrap();
        assert!(
            text.contains(&format!(
                "resilient_redis_circuit_state{{endpoint=\"{node}\"}} 0"
            )),
            "{text}"
        );
    }
    assert!(text.contains("resilient_redis_cluster_refreshes_total"));
    let health = client.health();
    assert_eq!(health.endpoints.len(), 3);
    assert!(health.endpoints.iter().all(|e| e.node.is_some()));
}

#[test]
fn cluster_urls_are_checked() {
    for (url, what) in [
        ("redis+cluster://", "no seed host"),
        ("redis+cluster://a:1,,b:2", "cluster seed #2 is empty"),
        ("redis+cluster://a:99999", "port must be"),
        ("redis+cluster://a:1/2", "database 0 only"),
        ("redis+cluster://a:1#insecure", "rediss+cluster"),
    ] {
        let err = Config::builder(url).build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{url}");
        assert!(err.to_string().contains(what), "{url}: {err}");
    }
    let env = |name: &'static str, url: &'static str| {
        move |key: &str| {
            (key == name).then(|| url.to_string()).or_else(|| {
                (name == "REDIS_FALLBACK_URL" && key == "REDIS_URL")
                    .then(|| "redis://127.0.0.1:1".to_string())
            })
        }
    };
    let err = Config::from_env_with(env("REDIS_URL", "redis+cluster://h:0")).unwrap_err();
    assert!(err.to_string().starts_with("REDIS_URL: "), "{err}");
    let err =
        Config::from_env_with(env("REDIS_FALLBACK_URL", "rediss+cluster://:pw@")).unwrap_err();
    assert!(err.to_string().starts_with("REDIS_FALLBACK_URL: "), "{err}");
    assert!(!err.to_string().contains("pw"));
    let ok = Config::from_env_with(env(
        "REDIS_URL",
        "redis+cluster://:secret@127.0.0.1:7000,127.0.0.1:7001",
    ))
    .unwrap();
    assert_eq!(
        ok.url(),
        Some("redis+cluster://:***@127.0.0.1:7000,127.0.0.1:7001")
    );
    let ok = Config::from_env_with(env("REDIS_FALLBACK_URL", "rediss+cluster://127.0.0.1:7000"))
        .unwrap();
    assert_eq!(ok.fallback_url(), Some("rediss+cluster://127.0.0.1:7000"));
}

/// Runs `work(thread, stop)` on `n` threads until `stop` is set; returns
/// what each returned.
fn on_threads<T: Send + 'static>(
    n: usize,
    stop: &Arc<AtomicBool>,
    work: impl Fn(usize, &AtomicBool) -> T + Send + Sync + 'static,
) -> Vec<thread::JoinHandle<T>> {
    let work = Arc::new(work);
    (0..n)
        .map(|t| {
            let (work, stop) = (work.clone(), stop.clone());
            thread::spawn(move || work(t, &stop))
        })
        .collect()
}

#[test]
fn reshard_under_load_with_the_fallback_off_fails_no_call() {
    logged("");
    let cluster = RedisCluster::start(3);
    let client = Client::new(
        config(&cluster.seed_url())
            .fallback_mode(FallbackMode::Disabled)
            .max_retries(6)
            .build()
            .unwrap(),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let c = client.clone();
    let workers = on_threads(4, &stop, move |t, stop| {
        let mut calls = 0u64;
        let mut failures = Vec::new();
        let mut last = std::collections::HashMap::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) || calls < 200 {
            i += 1;
            let key = format!("rs:{t}:{}", i % 300);
            let value = format!("{t}-{i}");
            match c.set(&key, &value) {
                Ok(()) => {
                    last.insert(key.clone(), value);
                }
                Err(e) => failures.push(format!("set {key}: {e}")),
            }
            match c.get::<_, String>(&key) {
                // Read-your-writes: this thread is the only writer.
                Ok(v) => {
                    if v.as_ref() != last.get(&key) {
                        failures.push(format!("get {key}: {v:?}, wrote {:?}", last.get(&key)));
                    }
                }
                Err(e) => failures.push(format!("get {key}: {e}")),
            }
            calls += 2;
            if i.is_multiple_of(8) {
                // Keys of several slots (and masters): split, in order.
                let keys: Vec<String> = (0..4)
                    .map(|j| format!("rs:{t}:{}", (i + j * 37) % 300))
                    .collect();
                match c.mget::<_, String>(&keys) {
                    Ok(values) => {
                        for (k, v) in keys.iter().zip(values) {
                            if v.as_ref() != last.get(k) {
                                failures.push(format!("mget {k}: {v:?}, wrote {:?}", last.get(k)));
                            }
                        }
                    }
                    Err(e) => failures.push(format!("mget {keys:?}: {e}")),
                }
                calls += 1;
            }
            if i % 8 == 4 {
                // An mset across slots: per master, one pipeline of one
                // MSET per slot; a slot moving under it is sent again on
                // its own.
                let pairs: Vec<(String, String)> = (0..6)
                    .map(|j| {
                        let k = format!("rs:{t}:{}", (i + j * 53) % 300);
                        (k, format!("{t}-{i}-m{j}"))
                    })
                    .collect();
                match c.mset(&pairs) {
                    Ok(()) => last.extend(pairs),
                    Err(e) => failures.push(format!("mset: {e}")),
                }
                calls += 1;
            }
        }
        (calls, failures, last)
    });
    let masters = cluster.masters();
    // Wait until the workers run, then move 1000 slots while they do.
    while client.stats().requests < 400 {
        thread::yield_now();
    }
    cluster.reshard(masters[0], masters[1], 1000);
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let (calls, failures, last) = w.join().unwrap();
        assert!(
            failures.is_empty(),
            "{} failures: {:?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
        total += calls;
        // Every last value is where the cluster says its slot is now.
        for (key, value) in last {
            let owner = cluster.owner_of(key.as_bytes());
            assert_eq!(
                cluster.get_on(owner, key.as_bytes()).unwrap(),
                Some(value.into_bytes())
            );
        }
    }
    let stats = client.stats();
    assert!(total > 400);
    assert!(
        stats.cluster_moved + stats.cluster_asks > 0 && stats.cluster_slot_moves > 0,
        "the reshard was seen: {stats:?}"
    );
    assert_eq!(stats.errors_transient + stats.errors_permanent, 0);
    // One INFO line per change of the map this client saw (polled: a
    // refresh may be logging its line right now).
    let seed = format!("127.0.0.1:{}", cluster.nodes[0].port());
    let ours = || -> Vec<String> {
        logged("redis cluster topology changed")
            .into_iter()
            .filter(|l| {
                cluster
                    .nodes
                    .iter()
                    .any(|n| l.contains(&format!(":{}", n.port())))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let changes = loop {
        let counted = client.stats().cluster_topology_changes;
        let changes = ours();
        if changes.len() as u64 == counted {
            break changes;
        }
        assert!(
            Instant::now() < deadline,
            "{counted} changes counted, logged: {changes:#?}"
        );
        thread::sleep(ms(10));
    };
    assert!(
        changes.len() >= 2,
        "first map, then the reshard: {changes:#?}"
    );
    assert!(changes.iter().any(|l| l.contains(&seed)), "{changes:#?}");
}

/// Keys the history workloads share.
const KEYS: u64 = 48;

fn hkey(i: u64) -> String {
    format!("h:{i}")
}

/// SplitMix64, to pick operations.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One history worker: cache operations on the shared keys until `stop`.
fn history_worker(client: &Client, thread: usize, t0: Instant, stop: &AtomicBool) -> Vec<Op> {
    let mut rng = 0x14_0000 ^ (thread as u64).wrapping_mul(0xA24B_AED4_963E_E407);
    let mut seq = 0u64;
    let mut ops = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let value = format!("t{thread}-{seq}");
        let k = next(&mut rng) % KEYS;
        let call = match next(&mut rng) % 10 {
            0..=3 => Call::Get { key: hkey(k) },
            4 => Call::MGet {
                keys: (0..3).map(|i| hkey((k + i * 5) % KEYS)).collect(),
            },
            5..=7 => Call::Set {
                key: hkey(k),
                value,
            },
            8 => Call::MSet {
                pairs: (0..3)
                    .map(|i| (hkey((k + i * 7) % KEYS), format!("{value}.{i}")))
                    .collect(),
            },
            _ => Call::Delete { key: hkey(k) },
        };
        let invoke = t0.elapsed();
        let result = match &call {
            Call::Get { key } => client.get::<_, String>(key).map(|v| Reply::Values(vec![v])),
            Call::MGet { keys } => client.mget::<_, String>(keys).map(Reply::Values),
            Call::Set { key, value } => client.set(key, value).map(|()| Reply::Done),
            Call::MSet { pairs } => client.mset(pairs).map(|()| Reply::Done),
            Call::Delete { key } => client.delete(key).map(|_| Reply::Done),
            _ => unreachable!(),
        }
        .map_err(|e| history::Failure::from(&e));
        ops.push(Op {
            thread,
            call,
            invoke,
            complete: t0.elapsed(),
            result,
        });
    }
    ops
}

/// Checks a history against the contract with the default fallback: no
/// stale read, no error, every call within `bound`.
fn assert_history(name: &str, ops: Vec<Op>, faults: Vec<Note>, bound: Duration) {
    let history = History {
        ops,
        faults,
        events: Vec::new(),
    };
    let rules = Rules {
        call_bound: bound,
        ttl_slack: ms(100),
        epoch_slack: bound,
        cache_ops_never_fail: true,
    };
    let violations = history::check(&history, &rules, &[]);
    assert!(
        violations.is_empty(),
        "{name}: {}\n{}",
        history::summary(&history, &violations),
        history::examples(&history, &violations, 3)
    );
}

/// A key served by master `owner` now.
fn key_on(cluster: &RedisCluster, owner: usize, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| cluster.owner_of(k.as_bytes()) == owner)
        .unwrap()
}

/// The node named by each breaker transition to open.
#[derive(Default)]
struct OpenedBreakers(std::sync::Mutex<Vec<Option<String>>>);

impl resilient_redis::EventListener for OpenedBreakers {
    fn on_event(&self, event: &resilient_redis::Event) {
        if let resilient_redis::Event::BreakerTransition {
            node, transition, ..
        } = event
        {
            if transition.to == resilient_redis::BreakerState::Open {
                self.0.lock().unwrap().push(node.clone());
            }
        }
    }
}

impl OpenedBreakers {
    fn nodes(&self) -> Vec<Option<String>> {
        self.0.lock().unwrap().clone()
    }
}

#[test]
fn a_master_killed_under_load_then_the_whole_cluster_down() {
    let mut cluster = RedisCluster::start(3);
    let config = config(&cluster.seed_url())
        .failure_threshold(3)
        .open_timeout(ms(500))
        .build()
        .unwrap();
    let bound = config.call_bound();
    let opened = Arc::new(OpenedBreakers::default());
    let client = Client::builder(config)
        .listener(opened.clone())
        .build()
        .unwrap();
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let c = client.clone();
    let workers = on_threads(8, &stop, move |t, stop| history_worker(&c, t, t0, stop));
    let mut faults = Vec::new();

    // Load on every master, then SIGKILL one of them.
    while client.stats().requests < 2000 {
        thread::yield_now();
    }
    let victim = cluster.owner_of(hkey(0).as_bytes());
    let victim_addr = format!("127.0.0.1:{}", cluster.nodes[victim].port());
    let probe = key_on(&cluster, victim, "probe:");
    logged("");
    cluster.kill(victim);
    faults.push(Note::new(
        t0.elapsed(),
        "kill",
        format!("SIGKILL master node {victim}"),
    ));
    // Its replica takes over; the rest of the cluster says so.
    cluster.wait_ok(support::cluster::SETTLE);
    let ok_at = Instant::now();
    faults.push(Note::new(
        t0.elapsed(),
        "cluster_ok",
        "cluster_state:ok again",
    ));
    // Within one refresh, writes of the dead master's slots reach Redis
    // again (the promoted replica), not memory.
    let deadline = ok_at + Duration::from_secs(5) + Duration::from_secs(2);
    loop {
        client.set(&probe, "after").unwrap();
        let owner = cluster.owner_of(probe.as_bytes());
        if cluster
            .get_on(owner, probe.as_bytes())
            .ok()
            .flatten()
            .as_deref()
            == Some(&b"after"[..])
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "writes still not on redis 7 s after cluster_state:ok: {:?}",
            client.stats()
        );
        thread::sleep(ms(20));
    }
    // The journal of the outage drains to the new owner.
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.stats().journal_len > 0 {
        assert!(
            Instant::now() < deadline,
            "journal not reconciled: {:?}",
            client.stats()
        );
        thread::sleep(ms(20));
    }
    let stats = client.stats();
    assert!(
        stats.fallback_writes + stats.fallback_reads > 0,
        "the outage was served from memory"
    );
    assert!(stats.cluster_topology_changes >= 2, "{stats:?}");
    // What the dead master acknowledged last was distrusted on its
    // successor (its replica may not have received it), once.
    let gone = logged(&format!("master {victim_addr} is gone"));
    assert_eq!(gone.len(), 1, "{gone:?}");
    // The breaker that opened is the dead master's, and its event says so.
    let nodes = opened.nodes();
    assert!(nodes.contains(&Some(victim_addr.clone())), "{nodes:?}");

    // Now every node: calls are served from memory, each within its bound.
    let down_at = t0.elapsed();
    for i in 0..cluster.nodes.len() {
        cluster.kill(i);
    }
    faults.push(Note::new(down_at, "kill_all", "SIGKILL every node"));
    let served = client.stats().fallback_writes + client.stats().fallback_reads;
    // Until every master's breaker has opened and 2000 more calls were
    // served from memory.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = client.stats();
        let all_open = stats
            .endpoints
            .iter()
            .all(|e| e.circuit != resilient_redis::BreakerState::Closed);
        if all_open && stats.fallback_writes + stats.fallback_reads >= served + 2000 {
            break;
        }
        assert!(Instant::now() < deadline, "{stats:?}");
        thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    let mut ops = Vec::new();
    for w in workers {
        ops.extend(w.join().unwrap());
    }
    assert!(client.health().serving_from_memory);
    assert_history("kill master, then all", ops, faults, bound);
}

/// `cmdstat_<name>` calls on node `i`.
fn calls_on(cluster: &RedisCluster, i: usize, name: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut cluster.connection(i))
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{name}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn reads_from_replicas_keep_read_your_writes() {
    let cluster = shared();
    let replicas: Vec<usize> = (0..cluster.nodes.len())
        .filter(|i| cluster.role(*i).as_deref() == Some("slave"))
        .collect();
    let before: u64 = replicas.iter().map(|r| calls_on(&cluster, *r, "get")).sum();
    // Keys another process wrote: replicas may serve them once replicated.
    let writer = Client::new(config(&cluster.seed_url()).build().unwrap()).unwrap();
    for i in 0..30 {
        writer.set(format!("rr:{i}"), "theirs").unwrap();
    }
    let reader = Client::new(
        config(&cluster.seed_url())
            .read_from_replicas(true)
            .build()
            .unwrap(),
    )
    .unwrap();
    for i in 0..30 {
        // A replica may lag (a miss or the value): never anything else.
        let v: Option<String> = reader.get(format!("rr:{i}")).unwrap();
        assert!(v.is_none() || v.as_deref() == Some("theirs"), "{v:?}");
    }
    let after: u64 = replicas.iter().map(|r| calls_on(&cluster, *r, "get")).sum();
    assert!(
        after > before,
        "no read reached a replica: {:?}",
        reader.stats().endpoints
    );
    assert_eq!(
        reader.stats().endpoints.len(),
        6,
        "masters and replicas listed"
    );
    // What this process writes, it reads back at once, however far the
    // replicas lag: from the master.
    for n in 0..200 {
        let key = format!("rr:{}", n % 30);
        reader.set(&key, n.to_string()).unwrap();
        let v: Option<String> = reader.get(&key).unwrap();
        assert_eq!(v, Some(n.to_string()));
    }
}

#[test]
fn redis_rs_pipelines_through_the_client_are_split_too() {
    let cluster = shared();
    let client = Client::new(config(&cluster.seed_url()).build().unwrap()).unwrap();
    let mut conn = &client;
    let (a, b): (String, String) = redis::pipe()
        .cmd("SET")
        .arg("rp:a")
        .arg("1")
        .ignore()
        .cmd("SET")
        .arg("rp:b")
        .arg("2")
        .ignore()
        .cmd("GET")
        .arg("rp:a")
        .cmd("GET")
        .arg("rp:b")
        .query(&mut conn)
        .unwrap();
    assert_eq!((a.as_str(), b.as_str()), ("1", "2"));
    assert_ne!(cluster.key_slot(b"rp:a"), cluster.key_slot(b"rp:b"));
    let err = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("rp:a")
        .arg("x")
        .cmd("SET")
        .arg("rp:b")
        .arg("y")
        .query::<()>(&mut conn)
        .unwrap_err();
    let err = resilient_redis::Error::from_redis_error(&err).unwrap();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
}

#[test]
fn no_seed_answering_is_served_from_memory_within_the_bound() {
    let port = support::free_port();
    let config = config(&format!("redis+cluster://127.0.0.1:{port}"))
        .build()
        .unwrap();
    let bound = config.call_bound();
    let client = Client::new(config).unwrap();
    for i in 0..50 {
        let start = Instant::now();
        client.set(format!("m:{i}"), "v").unwrap();
        let v: Option<String> = client.get(format!("m:{i}")).unwrap();
        assert_eq!(v.as_deref(), Some("v"));
        assert!(
            start.elapsed() < bound * 2,
            "{:?} > 2 × {bound:?}",
            start.elapsed()
        );
    }
    let err = client.execute::<String>(&redis::cmd("PING")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connection);
    assert!(err.to_string().contains("slot map"), "{err}");
    assert!(client.stats().cluster_refresh_failures > 0);
    assert!(client.health().serving_from_memory);
}

#[test]
fn with_the_fallback_off_a_dead_master_fails_only_its_own_slots_until_promoted() {
    // Redis' default (`yes`) makes every node refuse every slot with
    // CLUSTERDOWN while one is uncovered: no client can serve the others.
    let mut cluster = RedisCluster::start_with(3, &["--cluster-require-full-coverage", "no"]);
    let client = Client::new(
        config(&cluster.seed_url())
            .fallback_mode(FallbackMode::Disabled)
            .failure_threshold(3)
            .open_timeout(ms(500))
            .build()
            .unwrap(),
    )
    .unwrap();
    let victim = cluster.owner_of(b"dead:0");
    let dead = key_on(&cluster, victim, "dead:");
    let alive: Vec<String> = (0..40)
        .map(|i| format!("alive:{i}"))
        .filter(|k| cluster.owner_of(k.as_bytes()) != victim)
        .collect();
    for k in &alive {
        client.set(k, "1").unwrap();
    }
    client.set(&dead, "before").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (c, keys) = (client.clone(), alive.clone());
    let workers = on_threads(4, &stop, move |t, stop| {
        let mut failures = Vec::new();
        let mut n = 0usize;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let key = &keys[(n * 4 + t) % keys.len()];
            if let Err(e) = c.set(key, n.to_string()) {
                failures.push(format!("set {key}: {e}"));
            }
            if let Err(e) = c.get::<_, String>(key) {
                failures.push(format!("get {key}: {e}"));
            }
        }
        failures
    });
    cluster.kill(victim);
    // The dead master's slots fail (nothing to serve them) ...
    let err = client.get::<_, String>(&dead).unwrap_err();
    assert!(err.is_transient(), "{err}");
    // ... until its replica is promoted and the client has seen it.
    cluster.wait_ok(support::cluster::SETTLE);
    let deadline = Instant::now() + Duration::from_secs(7);
    while client.set(&dead, "after").is_err() {
        assert!(Instant::now() < deadline, "{:?}", client.stats());
        thread::sleep(ms(20));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let failures = w.join().unwrap();
        assert!(
            failures.is_empty(),
            "{} calls on other masters' keys failed, first: {:?}; killed node {} (port {}); {:?}",
            failures.len(),
            &failures[..failures.len().min(3)],
            victim,
            cluster.nodes[victim].port(),
            client.stats().endpoints
        );
    }
}

#[test]
fn ask_during_a_slot_migration_then_moved_once_it_is_done() {
    let cluster = shared();
    let client = Client::new(config(&cluster.seed_url()).build().unwrap()).unwrap();
    let key = "{ask-test}:k";
    client.set(key, "v1").unwrap();
    let slot = cluster.key_slot(key.as_bytes());
    let source = cluster.owner_of(key.as_bytes());
    let target = *cluster.masters().iter().find(|m| **m != source).unwrap();
    let (source_id, target_id) = (cluster.node_id(source), cluster.node_id(target));
    let setslot = |node: usize, how: &str, id: &str| {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(how)
            .arg(id)
            .query::<()>(&mut cluster.connection(node))
            .unwrap();
    };
    setslot(target, "IMPORTING", &source_id);
    setslot(source, "MIGRATING", &target_id);
    redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(cluster.nodes[target].port())
        .arg(key)
        .arg(0)
        .arg(5000)
        .query::<()>(&mut cluster.connection(source))
        .unwrap();

    // The key moved: the source answers ASK, the client asks the target.
    let asks = client.stats().cluster_asks;
    let v: Option<String> = client.get(key).unwrap();
    assert_eq!(v.as_deref(), Some("v1"));
    // A new key of the migrating slot is created on the target.
    client.set("{ask-test}:new", "n").unwrap();
    assert!(
        client.stats().cluster_asks >= asks + 2,
        "{:?}",
        client.stats()
    );
    let mut on_target = cluster.connection(target);
    let (_, created): ((), Option<String>) = redis::pipe()
        .cmd("ASKING")
        .cmd("GET")
        .arg("{ask-test}:new")
        .query(&mut on_target)
        .unwrap();
    assert_eq!(created.as_deref(), Some("n"));

    // An mset of two slots on the source, one of them migrating: the
    // source's pipeline meets ASK for one part, so each slot is sent again
    // on its own (the migrating one through ASKING); nothing fails, no
    // error is counted.
    let other = key_on(&cluster, source, "ask-mset:");
    assert_ne!(cluster.key_slot(other.as_bytes()), slot);
    let errors = |c: &Client| {
        let s = c.stats();
        s.errors_transient + s.errors_permanent + s.errors_rate_limited
    };
    let before = errors(&client);
    let msets = calls_on(&cluster, source, "mset");
    client
        .mset(&[("{ask-test}:m", "a"), (other.as_str(), "b")])
        .unwrap();
    assert_eq!(errors(&client), before);
    // The other slot's MSET ran twice on the source: in the pipeline, and
    // again on its own (the one that met ASK ran on the target only).
    assert_eq!(calls_on(&cluster, source, "mset"), msets + 2);
    let (_, m): ((), Option<String>) = redis::pipe()
        .cmd("ASKING")
        .cmd("GET")
        .arg("{ask-test}:m")
        .query(&mut on_target)
        .unwrap();
    assert_eq!(m.as_deref(), Some("a"));
    assert_eq!(
        cluster.get_on(source, other.as_bytes()).unwrap(),
        Some(b"b".to_vec())
    );

    // Done: the slot belongs to the target (every master told, as
    // `redis-cli --cluster reshard` does); the source answers MOVED.
    setslot(target, "NODE", &target_id);
    setslot(source, "NODE", &target_id);
    for node in cluster
        .masters()
        .into_iter()
        .filter(|m| ![source, target].contains(m))
    {
        setslot(node, "NODE", &target_id);
    }
    let moved = client.stats().cluster_moved;
    let v: Option<String> = client.get(key).unwrap();
    assert_eq!(v.as_deref(), Some("v1"));
    assert!(client.stats().cluster_moved > moved);
    // The map was re-pointed: the next call goes to the target at once.
    let moved = client.stats().cluster_moved;
    let v: Option<String> = client.get("{ask-test}:new").unwrap();
    assert_eq!(v.as_deref(), Some("n"));
    assert_eq!(client.stats().cluster_moved, moved);
}

#[test]
fn a_redis_6_cluster_is_read_with_cluster_slots() {
    // Only Redis 7 is installed: a scripted node answers as Redis 6 does.
    let node = support::FakeRedis::new();
    node.as_redis6_cluster();
    let port = node.addr().port();
    let client = Client::new(
        config(&format!("redis+cluster://127.0.0.1:{port}"))
            .build()
            .unwrap(),
    )
    .unwrap();
    client.set("k", "v").unwrap();
    let v: Option<String> = client.get("k").unwrap();
    assert_eq!(v.as_deref(), Some("v"));
    assert_eq!(node.count_of("CLUSTER"), 2, "SHARDS refused, then SLOTS");
    let stats = client.stats();
    assert_eq!(stats.cluster_refreshes, 1);
    assert_eq!(
        stats.endpoints[0].node.as_deref(),
        Some(format!("127.0.0.1:{port}").as_str())
    );
}

#[test]
fn a_storm_of_moved_replies_costs_one_refresh() {
    // The node every slot map names answers MOVED to a real server: a
    // MOVED on every call. The client's clock stands still, so only the
    // rate limit decides how often the map is read again.
    let real = support::RedisServer::new();
    let node = support::FakeRedis::new();
    node.as_redis6_cluster();
    let clock = resilient_redis::ManualClock::new();
    let client = Client::builder(
        config(&format!("redis+cluster://127.0.0.1:{}", node.addr().port()))
            .build()
            .unwrap(),
    )
    .clock(clock.shared())
    .build()
    .unwrap();
    client.ping().unwrap();
    node.reply_override(Some(
        format!("-MOVED 0 127.0.0.1:{}\r\n", real.port()).into_bytes(),
    ));
    let read = |c: &Client| {
        let s = c.stats();
        s.cluster_refreshes + s.cluster_refresh_failures
    };
    assert_eq!(read(&client), 1);
    for i in 0..500 {
        let v: Option<String> = client.get(format!("storm:{i}")).unwrap();
        assert_eq!(v, None);
    }
    let stats = client.stats();
    assert!(stats.cluster_moved >= 400, "{stats:?}");
    assert_eq!(read(&client), 1, "no refresh within the rate limit");
    // Once the limit allows, one more read (the background thread's).
    clock.advance(ms(250));
    let deadline = Instant::now() + Duration::from_secs(5);
    while read(&client) < 2 {
        assert!(Instant::now() < deadline);
        thread::sleep(ms(10));
    }
    // The clock stands still again: no further read can be due.
    assert_eq!(read(&client), 2);
}

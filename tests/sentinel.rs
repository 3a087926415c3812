//! Redis Sentinel against real processes: a master, a replica and three
//! `redis-server --sentinel` started by the test (`support::sentinel`).
//!
//! Each failover test runs 8 worker threads through one client while the
//! master moves (`SENTINEL FAILOVER`, or SIGKILL), records every operation
//! and checks the whole history (`support/history.rs`): no stale read, no
//! wrong answer, no error where the fallback promises none. The switch
//! latency is printed (`cargo test --test sentinel -- --nocapture`), never
//! asserted.

// Test code: a failed unwrap is a failed test, with the error printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/history.rs"]
mod history;
mod support;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use history::{Call, History, Note, Op, Reply, Rules};
use resilient_redis::{Client, Config, ConfigBuilder, Event, EventListener, FallbackMode};
use support::{ms, SentinelCluster};

const THREADS: usize = 8;
const KEYS: u64 = 64;
const COUNTERS_PER_THREAD: u64 = 4;
/// The longest a failover may take: a few seconds, unless the sentinels
/// enter TILT (a timer stalled for 2 s on an overloaded machine), which
/// stops them for 30 s.
const SWITCH_DEADLINE: Duration = Duration::from_secs(90);

fn fast(url: &str) -> ConfigBuilder {
    Config::builder(url)
        .connect_timeout(ms(300))
        .socket_timeout(ms(300))
        .checkout_timeout(ms(300))
        .retry_base_delay(ms(5))
        .retry_max_delay(ms(20))
        .open_timeout(ms(500))
        .failure_threshold(5)
}

/// The two load tests run one at a time: each is ten Redis processes and
/// sixteen worker threads, and sentinels starved of CPU stall (TILT).
static HEAVY: Mutex<()> = Mutex::new(());

/// The client's events on the history's time line, and the master
/// switches with their instants.
struct EventLog {
    t0: Instant,
    notes: Mutex<Vec<Note>>,
    switches: Mutex<Vec<(Duration, String, Duration)>>,
}

impl EventLog {
    fn new(t0: Instant) -> Arc<EventLog> {
        Arc::new(EventLog {
            t0,
            notes: Mutex::new(Vec::new()),
            switches: Mutex::new(Vec::new()),
        })
    }

    fn first_switch(&self) -> Option<(Duration, String, Duration)> {
        self.switches.lock().unwrap().first().cloned()
    }
}

impl EventListener for EventLog {
    fn on_event(&self, event: &Event) {
        let at = self.t0.elapsed();
        let note = match event {
            Event::MasterSwitched {
                from,
                to,
                sentinel,
                took,
                ..
            } => {
                self.switches.lock().unwrap().push((at, to.clone(), *took));
                // The Redis behind the client changed: counters may move
                // back (writes the old master acknowledged and never
                // replicated).
                Note::epoch(
                    at,
                    "master_switched",
                    format!("master {from} → {to} via {sentinel} (took {took:?})"),
                )
            }
            other => match Note::of_event(at, other) {
                Some(note) => note,
                None => return,
            },
        };
        self.notes.lock().unwrap().push(note);
    }
}

/// A tiny deterministic PRNG (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

fn key(i: u64) -> String {
    format!("k{i}")
}

/// One worker: random reads and writes until `stop`, every one recorded.
fn worker(client: &Client, thread: usize, t0: Instant, stop: &Mutex<bool>) -> Vec<Op> {
    let mut rng = Rng(0x5EED ^ (thread as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut ops = Vec::new();
    let mut seq = 0u64;
    while !*stop.lock().unwrap() {
        seq += 1;
        let call = match rng.range(0, 100) {
            0..=34 => Call::Get {
                key: key(rng.range(0, KEYS)),
            },
            35..=44 => Call::MGet {
                keys: (0..3).map(|_| key(rng.range(0, KEYS))).collect(),
            },
            45..=79 => Call::Set {
                key: key(rng.range(0, KEYS)),
                value: format!("t{thread}-{seq}"),
            },
            80..=89 => Call::Delete {
                key: key(rng.range(0, KEYS)),
            },
            _ => Call::Incr {
                key: format!("c{thread}.{}", rng.range(0, COUNTERS_PER_THREAD)),
            },
        };
        let invoke = t0.elapsed();
        let result = match &call {
            Call::Get { key } => client.get::<_, String>(key).map(|v| Reply::Values(vec![v])),
            Call::MGet { keys } => client.mget::<_, String>(keys).map(Reply::Values),
            Call::Set { key, value } => client.set(key, value).map(|()| Reply::Done),
            Call::Delete { key } => client.delete(key).map(|_| Reply::Done),
            Call::Incr { key } => client.incr(key, 1).map(Reply::Int),
            _ => unreachable!(),
        }
        .map_err(|e| history::Failure::from(&e));
        let complete = t0.elapsed();
        ops.push(Op {
            thread,
            call,
            invoke,
            complete,
            result,
        });
        // Load, not a spin: two clients' workers share 2 CPUs with five
        // Redis processes, and starved sentinels take many seconds to
        // elect a leader.
        thread::sleep(Duration::from_micros(200));
    }
    ops
}

/// What a failover run saw.
struct Run {
    history: History,
    /// When the first sentinel named the new master (polled in a loop,
    /// a few milliseconds apart).
    first: Duration,
    /// When every running sentinel named the new master, likewise.
    agreed: Duration,
    /// The first write the client acknowledged after its switch (to the
    /// new master: connections to the old one are retired by then).
    landed: Duration,
    switch: Option<(Duration, String, Duration)>,
    fault_at: Duration,
}

/// Polls every sentinel on `ports` until all name `new_port`; returns when
/// the first did and when all did.
fn poll_sentinels(ports: &[u16], new_port: u16, t0: Instant) -> (Duration, Duration) {
    let mut conns: Vec<Option<redis::Connection>> = ports.iter().map(|_| None).collect();
    let mut named: Vec<Option<Duration>> = ports.iter().map(|_| None).collect();
    let deadline = Instant::now() + SWITCH_DEADLINE;
    while named.iter().any(Option::is_none) {
        assert!(
            Instant::now() < deadline,
            "the sentinels did not agree within {SWITCH_DEADLINE:?}"
        );
        for (i, port) in ports.iter().enumerate() {
            if named[i].is_some() {
                continue;
            }
            if conns[i].is_none() {
                conns[i] = support::connect(&format!("redis://127.0.0.1:{port}"), ms(300)).ok();
            }
            let Some(conn) = conns[i].as_mut() else {
                continue;
            };
            let addr: Option<Vec<String>> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(support::sentinel::SERVICE)
                .query(conn)
                .ok();
            if addr.as_ref().and_then(|a| a.get(1)) == Some(&new_port.to_string()) {
                named[i] = Some(t0.elapsed());
            }
        }
        thread::sleep(ms(2));
    }
    let times: Vec<Duration> = named.into_iter().flatten().collect();
    (
        times.iter().copied().min().unwrap_or_default(),
        times.iter().copied().max().unwrap_or_default(),
    )
}

/// The completion of the first write invoked after `t` that succeeded.
fn first_write_after(ops: &[Op], t: Duration) -> Duration {
    ops.iter()
        .filter(|o| o.invoke >= t && o.result.is_ok())
        .filter(|o| matches!(o.call, Call::Set { .. }))
        .map(|o| o.complete)
        .min()
        .unwrap_or(Duration::MAX)
}

/// Runs `THREADS` workers on `client` while `fault` moves the master from
/// node 0 to node 1; returns once every sentinel agrees, a write has landed
/// on the new master and the workers ran 1 s more.
fn run_failover(
    cluster: &mut SentinelCluster,
    client: &Client,
    log: &Arc<EventLog>,
    fault: &dyn Fn(&mut SentinelCluster),
) -> Run {
    let t0 = log.t0;
    let stop = Arc::new(Mutex::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|i| {
            let client = client.clone();
            let stop = stop.clone();
            thread::Builder::new()
                .name(format!("w{i}"))
                .spawn(move || worker(&client, i, t0, &stop))
                .unwrap()
        })
        .collect();
    // Let the load run against the first master.
    let warm = Instant::now() + ms(500);
    while Instant::now() < warm {
        client.set("probe", "warm").unwrap();
    }
    // The sentinels' view, polled on persistent connections every 2 ms on
    // a thread of its own (from before the fault: `fault` may wait for the
    // failover to take); the client's switch is its event.
    let new_port = cluster.nodes[1].port();
    let ports: Vec<u16> = cluster
        .sentinels
        .iter()
        .filter(|s| s.is_running())
        .map(|s| s.port())
        .collect();
    let poller = thread::spawn(move || poll_sentinels(&ports, new_port, t0));
    let fault_at = t0.elapsed();
    fault(cluster);
    let mut faults = vec![Note::new(fault_at, "fault", "master moved")];
    // Sentinels in TILT (their timer stalled for 2 s on a loaded machine)
    // do nothing for 30 s: allow for one.
    let deadline = Instant::now() + SWITCH_DEADLINE;
    while log.first_switch().is_none() {
        assert!(
            Instant::now() < deadline,
            "the client did not switch within {SWITCH_DEADLINE:?}; health: {}\n{}",
            client.health(),
            cluster
                .sentinels
                .iter()
                .map(support::Sentinel::log)
                .collect::<Vec<_>>()
                .join("\n-----\n")
        );
        thread::sleep(ms(5));
    }
    let (first, agreed) = poller.join().unwrap();
    faults.push(Note::new(first, "first", "a sentinel names the new master"));
    faults.push(Note::new(
        agreed,
        "agreed",
        "every sentinel names the new master",
    ));
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle {
        thread::sleep(ms(10));
    }
    *stop.lock().unwrap() = true;
    let mut ops: Vec<Op> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    ops.sort_by_key(|o| o.invoke);
    let events = log.notes.lock().unwrap().clone();
    let switched = log.first_switch().map_or(Duration::MAX, |(at, _, _)| at);
    let landed = first_write_after(&ops, switched);
    // The first switch went to the replica the sentinels promoted.
    let (_, to, _) = log.first_switch().unwrap();
    assert_eq!(to, format!("127.0.0.1:{new_port}"));
    // And writes go to the master the client names (on an overloaded
    // machine the sentinels may move it again: not asserted here): a write
    // that is never served from memory is found there.
    let deadline = Instant::now() + SWITCH_DEADLINE;
    while client
        .execute::<()>(redis::cmd("SET").arg("probe").arg("last"))
        .is_err()
    {
        assert!(Instant::now() < deadline, "no master took the last probe");
        thread::sleep(ms(20));
    }
    let node = cluster
        .node_on(client_master_port(client))
        .expect("the client names one of the nodes");
    let mut conn = cluster.nodes[node].connection();
    let there: Option<String> = redis::cmd("GET").arg("probe").query(&mut conn).unwrap();
    assert_eq!(there.as_deref(), Some("last"));
    Run {
        history: History {
            ops,
            faults,
            events,
        },
        first,
        agreed,
        landed,
        switch: log.first_switch(),
        fault_at,
    }
}

fn rules(client: &Client, fallback: bool) -> Rules {
    Rules {
        call_bound: client.config().call_bound(),
        ttl_slack: ms(200),
        epoch_slack: Duration::from_secs(1),
        cache_ops_never_fail: fallback,
    }
}

fn report(name: &str, run: &Run) {
    let latency = |a: Duration, b: Duration| -> String {
        if b >= a {
            format!("+{} ms", (b - a).as_millis())
        } else {
            format!("-{} ms", (a - b).as_millis())
        }
    };
    println!(
        "{name}: fault at {}, first sentinel named the new master at {}, all agreed at {} ({} after the fault), client's writes landed on the new master at {} ({} after all agreed, {} after the first), switch event at {:?}",
        history::secs(run.fault_at),
        history::secs(run.first),
        history::secs(run.agreed),
        latency(run.fault_at, run.agreed),
        history::secs(run.landed),
        latency(run.agreed, run.landed),
        latency(run.first, run.landed),
        run.switch
            .as_ref()
            .map(|(at, to, took)| format!("{} → {to}, took {took:?} as the client saw it", history::secs(*at))),
    );
}

/// Checks a run: the history holds, no READONLY after the switch, and
/// (without the fallback) no error for a call invoked after the switch.
fn verify(name: &str, client: &Client, run: &Run, fallback: bool) {
    let (switched_at, _, _) = run
        .switch
        .clone()
        .unwrap_or_else(|| panic!("{name}: no MasterSwitched event"));
    let violations = history::check(&run.history, &rules(client, fallback), &[]);
    if !violations.is_empty() {
        println!("{name}: {}", history::summary(&run.history, &violations));
        println!("{}", history::examples(&run.history, &violations, 5));
    }
    // Strict also for a killed master: what it acknowledged and never
    // replicated is deleted on the new master before it is read, so such a
    // read misses; counters may restart (the switch is an epoch).
    assert!(violations.is_empty(), "{name}: {violations:?}");

    let ops = &run.history.ops;
    let readonly: Vec<&Op> = ops
        .iter()
        .filter(|o| o.invoke > switched_at)
        .filter(|o| matches!(&o.result, Err(e) if e.message.contains("READONLY")))
        .collect();
    assert!(
        readonly.is_empty(),
        "{name}: READONLY after the switch: {readonly:?}"
    );
    let errors: Vec<&Op> = ops.iter().filter(|o| o.result.is_err()).collect();
    if fallback {
        // `incr` is never answered from memory: it may fail while no
        // master answers (and never after the switch, checked above).
        let cache: Vec<&&Op> = errors.iter().filter(|o| o.call.is_cache_op()).collect();
        assert!(
            cache.is_empty(),
            "{name}: errors with the fallback on: {cache:?}"
        );
        let after: Vec<&&Op> = errors.iter().filter(|o| o.invoke > switched_at).collect();
        assert!(
            after.is_empty(),
            "{name}: errors after the switch: {after:?}"
        );
    } else {
        let after: Vec<&&Op> = errors.iter().filter(|o| o.invoke > switched_at).collect();
        assert!(
            after.is_empty(),
            "{name}: errors after the switch: {after:?}"
        );
        println!(
            "{name}: {} errors, all invoked before the switch at {}",
            errors.len(),
            history::secs(switched_at)
        );
    }
    let total = ops.len();
    assert!(total > 100, "{name}: the load ran ({total} ops)");
    println!("{name}: {total} operations checked");
}

fn client_master_port(client: &Client) -> u16 {
    let health = client.health();
    let master = health.endpoints[0]
        .master
        .clone()
        .expect("a master is known");
    master.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn discovers_the_master_with_the_first_sentinel_down_and_learns_the_others() {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut cluster = SentinelCluster::start();
    cluster.sentinels[0].stop();
    // Only the dead sentinel and one live one are listed: the third is
    // learned from SENTINEL SENTINELS.
    let url = cluster.url_with(&[0, 1]);
    let client = Client::new(fast(&url).build().unwrap()).unwrap();
    client.set("k", "v").unwrap();
    assert_eq!(client.get::<_, String>("k").unwrap().as_deref(), Some("v"));
    let health = client.health();
    let e = &health.endpoints[0];
    assert_eq!(
        e.master.as_deref(),
        Some(format!("127.0.0.1:{}", cluster.nodes[0].port()).as_str())
    );
    assert_eq!(
        e.sentinel.as_deref(),
        Some(format!("127.0.0.1:{}", cluster.sentinels[1].port()).as_str()),
        "{health}"
    );
    let stats = client.stats();
    assert_eq!(stats.endpoints[0].master, e.master);
    // The value went to the master the sentinels name.
    let mut conn = cluster.nodes[0].connection();
    let on_master: Option<String> = redis::cmd("GET").arg("k").query(&mut conn).unwrap();
    assert_eq!(on_master.as_deref(), Some("v"));

    // Now the listed live sentinel dies too: only the learned one is left,
    // and the client follows a failover it announces, with no call made
    // meanwhile (only the +switch-master watcher can tell it).
    cluster.sentinels[1].stop();
    cluster.failover();
    cluster.wait_until("the client follows the failover", |c| {
        client_master_port(&client) == c.nodes[1].port()
    });
    let health = client.health();
    assert_eq!(
        health.endpoints[0].sentinel.as_deref(),
        Some(format!("127.0.0.1:{}", cluster.sentinels[2].port()).as_str()),
        "{health}"
    );
    client.set("k", "x").unwrap();
    let mut conn = cluster.nodes[1].connection();
    let on_new: Option<String> = redis::cmd("GET").arg("k").query(&mut conn).unwrap();
    assert_eq!(on_new.as_deref(), Some("x"));
    assert_eq!(client.stats().endpoints[0].master_switches, 1);
}

/// A client with the default fallback and one with it off (keys prefixed
/// apart), each with its event log, both already talking to the master.
/// The second also shares its connections (automatic pipelining), so the
/// switch is checked through both connection paths.
fn both_clients(cluster: &SentinelCluster) -> (Client, Arc<EventLog>, Client, Arc<EventLog>) {
    let t0 = Instant::now();
    let log = EventLog::new(t0);
    let client = Client::builder(fast(&cluster.url()).build().unwrap())
        .listener(log.clone())
        .build()
        .unwrap();
    let off_log = EventLog::new(t0);
    let off = Client::builder(
        fast(&cluster.url())
            .fallback_mode(FallbackMode::Disabled)
            .key_prefix("off:")
            .auto_pipeline(true)
            .build()
            .unwrap(),
    )
    .listener(off_log.clone())
    .build()
    .unwrap();
    client.set("probe", "x").unwrap();
    off.set("probe", "x").unwrap();
    (client, log, off, off_log)
}

#[test]
fn graceful_failover_under_load() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = SentinelCluster::start();
    let (client, log, off, off_log) = both_clients(&cluster);

    // Both clients under load at once through the same failover.
    let off_run = {
        let off = off.clone();
        let off_log = off_log.clone();
        // The second client's workload runs on its own threads; the fault
        // is driven by the first run below.
        thread::spawn(move || load_only(&off, &off_log))
    };
    let run = run_failover(&mut cluster, &client, &log, &|c| c.failover());
    let off_history = off_run.join().unwrap();
    report("graceful (fallback on)", &run);
    verify("graceful (fallback on)", &client, &run, true);
    let off_run = Run {
        history: off_history,
        first: run.first,
        agreed: run.agreed,
        landed: run.landed,
        switch: off_log.first_switch(),
        fault_at: run.fault_at,
    };
    verify("graceful (fallback off)", &off, &off_run, false);
}

/// Load on `client` until its first master switch plus 1.5 s.
fn load_only(client: &Client, log: &Arc<EventLog>) -> History {
    let t0 = log.t0;
    let stop = Arc::new(Mutex::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|i| {
            let client = client.clone();
            let stop = stop.clone();
            thread::Builder::new()
                .name(format!("w{i}"))
                .spawn(move || worker(&client, i, t0, &stop))
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + SWITCH_DEADLINE;
    while log.first_switch().is_none() && Instant::now() < deadline {
        thread::sleep(ms(20));
    }
    let settle = Instant::now() + ms(1500);
    while Instant::now() < settle {
        thread::sleep(ms(20));
    }
    *stop.lock().unwrap() = true;
    let mut ops: Vec<Op> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    ops.sort_by_key(|o| o.invoke);
    History {
        ops,
        faults: Vec::new(),
        events: log.notes.lock().unwrap().clone(),
    }
}

#[test]
fn killed_master_under_load() {
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = SentinelCluster::start();
    let (client, log, off, off_log) = both_clients(&cluster);
    let off_run = {
        let off = off.clone();
        let off_log = off_log.clone();
        thread::spawn(move || load_only(&off, &off_log))
    };
    let run = run_failover(&mut cluster, &client, &log, &|c| c.nodes[0].stop());
    let off_history = off_run.join().unwrap();
    report("killed master (fallback on)", &run);
    verify("killed master (fallback on)", &client, &run, true);
    let off_run = Run {
        history: off_history,
        first: run.first,
        agreed: run.agreed,
        landed: run.landed,
        switch: off_log.first_switch(),
        fault_at: run.fault_at,
    };
    verify("killed master (fallback off)", &off, &off_run, false);
}

#[test]
fn all_sentinels_down_serves_from_memory_within_the_bound() {
    let mut cluster = SentinelCluster::start();
    // A client that found the master keeps using it while the sentinels
    // are away.
    let known = Client::new(fast(&cluster.url()).build().unwrap()).unwrap();
    known.set("k", "v").unwrap();
    for s in &mut cluster.sentinels {
        s.stop();
    }
    assert_eq!(known.get::<_, String>("k").unwrap().as_deref(), Some("v"));
    assert_eq!(known.stats().fallback_reads, 0);

    // A new one cannot find any master: every call is served from memory,
    // each within its bound.
    let client = Client::new(fast(&cluster.url()).build().unwrap()).unwrap();
    let bound = client.config().call_bound();
    let mut slowest = Duration::ZERO;
    for i in 0..50 {
        let start = Instant::now();
        client.set(format!("m{i}"), "v").unwrap();
        slowest = slowest.max(start.elapsed());
        let start = Instant::now();
        let got: Option<String> = client.get(format!("m{i}")).unwrap();
        slowest = slowest.max(start.elapsed());
        assert_eq!(got.as_deref(), Some("v"));
    }
    assert!(slowest <= bound, "a call took {slowest:?} > {bound:?}");
    let stats = client.stats();
    assert!(stats.fallback_writes >= 50, "{stats}");
    assert_eq!(stats.errors(), 0);
    // An availability failure: the breaker counted it and opened.
    assert!(stats.endpoints[0].breaker_opens >= 1, "{stats}");
    let health = client.health();
    assert!(health.serving_from_memory, "{health}");
    assert!(
        health.endpoints[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("sentinel")),
        "{health}"
    );
}

/// Only READONLY tells the client here (the fake sentinel never announces
/// a switch): it re-resolves at once, an idempotent command is re-sent to
/// the new master, a non-idempotent one is not.
#[test]
fn readonly_re_resolves_and_resends_only_idempotent_commands() {
    let _ = env_logger::builder().is_test(true).try_init();
    let a = support::RedisServer::new();
    let b = support::RedisServer::new();
    let sentinel = support::sentinel::FakeSentinel::start(a.port());
    let url = format!(
        "redis+sentinel://127.0.0.1:{}/{}",
        sentinel.port(),
        support::sentinel::SERVICE
    );
    let t0 = Instant::now();
    let log = EventLog::new(t0);
    let client = Client::builder(
        fast(&url)
            .fallback_mode(FallbackMode::Disabled)
            .build()
            .unwrap(),
    )
    .listener(log.clone())
    .build()
    .unwrap();
    client.set("k", "1").unwrap();
    assert_eq!(client_master_port(&client), a.port());

    // B becomes the master, A its replica; the sentinel names B, silently.
    let replicaof = |server: &support::RedisServer, master: Option<u16>| {
        let mut c = server.connection();
        let mut cmd = redis::cmd("REPLICAOF");
        match master {
            Some(p) => cmd.arg("127.0.0.1").arg(p),
            None => cmd.arg("NO").arg("ONE"),
        };
        cmd.query::<()>(&mut c).unwrap();
    };
    replicaof(&a, Some(b.port()));
    sentinel.set_master(b.port());
    // SET is idempotent: the READONLY from A is followed by a discovery and
    // the re-send to B, within the call.
    client.set("k", "2").unwrap();
    assert_eq!(client_master_port(&client), b.port());
    let mut conn = b.connection();
    let on_b: Option<String> = redis::cmd("GET").arg("k").query(&mut conn).unwrap();
    assert_eq!(on_b.as_deref(), Some("2"));
    let (_, to, took) = log.first_switch().expect("a MasterSwitched event");
    assert_eq!(to, format!("127.0.0.1:{}", b.port()));
    assert!(took > Duration::ZERO, "measured from the READONLY");

    // Back again, but INCR is not idempotent: the READONLY reply is
    // returned, not re-sent (and says it may have executed).
    replicaof(&a, None);
    replicaof(&b, Some(a.port()));
    sentinel.set_master(a.port());
    let err = client.incr("n", 1).unwrap_err();
    assert!(err.to_string().contains("READONLY"), "{err}");
    assert!(err.may_have_executed());
    // The next call goes to A: the READONLY re-resolved the master.
    assert_eq!(client.incr("n", 1).unwrap(), 1);
    assert_eq!(client_master_port(&client), a.port());
}

/// A sentinel that reports the master down is skipped: the next one's
/// answer is used.
#[test]
fn a_sentinel_reporting_the_master_down_is_skipped() {
    let a = support::RedisServer::new();
    let b = support::RedisServer::new();
    let doubting = support::sentinel::FakeSentinel::start(a.port());
    doubting.report_master_down(true);
    let other = support::sentinel::FakeSentinel::start(b.port());
    let url = format!(
        "redis+sentinel://127.0.0.1:{},127.0.0.1:{}/{}",
        doubting.port(),
        other.port(),
        support::sentinel::SERVICE
    );
    let client = Client::new(fast(&url).build().unwrap()).unwrap();
    client.set("k", "v").unwrap();
    assert_eq!(client_master_port(&client), b.port());
    let health = client.health();
    assert_eq!(
        health.endpoints[0].sentinel.as_deref(),
        Some(format!("127.0.0.1:{}", other.port()).as_str()),
        "{health}"
    );
    let mut conn = b.connection();
    let on_b: Option<String> = redis::cmd("GET").arg("k").query(&mut conn).unwrap();
    assert_eq!(on_b.as_deref(), Some("v"));
    assert_eq!(client.stats().fallback_writes, 0);
}

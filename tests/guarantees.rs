//! The client's guarantees under concurrent faults (issue #11, point 3): a
//! Jepsen/Elle-style history checker. Sixteen threads share ONE client and
//! run a random mix of get/set/set_ex/delete/mget/mset/incr/execute on 32
//! contended keys (plus per-thread counters) while a seeded schedule
//! resets, refuses, blackholes, cuts, slows, rate-limits and SIGKILLs the
//! primary (a real `redis-server`, AOF with `appendfsync always`, behind the
//! fault proxy); a second real `redis-server` is the failover secondary.
//! Every operation is recorded and the whole history is checked afterwards
//! (`tests/support/history.rs` states the model).
//!
//! A third variant runs the first with automatic pipelining on.
//!
//! CI runs about 30 s with a fixed seed. Longer and other runs:
//! `GUARANTEES_SECONDS` (each variant runs half of it: the two fallback
//! variants share it, the pipelining one adds as much again) and
//! `GUARANTEES_SEED`, or `scripts/soak.sh [SECONDS] [SEED]`.

// Test code: a failed unwrap is a broken test environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/history.rs"]
mod history;
mod support;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use history::{Call, FinalCounter, History, Note, Op, Reply, Rules};
use resilient_redis::{redis, Client, Config, Event, EventListener, FallbackMode, Reconcile};
use support::{ms, FaultProxy, Mode, RedisServer};

/// Threads sharing the client.
const THREADS: usize = 16;
/// Keys every thread reads and writes.
const KEYS: usize = 32;
/// Counter keys per thread (only that thread increments them).
const COUNTERS_PER_THREAD: usize = 2;
/// Workload seconds in CI of the two fallback variants together.
const DEFAULT_SECONDS: u64 = 20;
const DEFAULT_SEED: u64 = 0x11_0003;

/// The longest one call may take: the documented bound.
fn call_bound(config: &Config) -> Duration {
    config.call_bound()
}

/// The test's parameters, from the environment.
fn settings() -> (Duration, u64) {
    let seconds = std::env::var("GUARANTEES_SECONDS")
        .ok()
        .map(|s| s.parse::<u64>().expect("GUARANTEES_SECONDS: whole seconds"))
        .unwrap_or(DEFAULT_SECONDS);
    let seed = std::env::var("GUARANTEES_SEED")
        .ok()
        .map(|s| {
            match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            }
            .expect("GUARANTEES_SEED: a number, decimal or 0x-hex")
        })
        .unwrap_or(DEFAULT_SEED);
    // The two fallback variants share the time (the pipelining variant
    // runs as long as each of them).
    (Duration::from_secs(seconds.max(2)) / 2, seed)
}

/// SplitMix64: seeded, tiny, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    fn ms(&mut self, lo: u64, hi: u64) -> Duration {
        ms(self.range(lo, hi))
    }
}

/// Records the client's events on the history's time line.
struct EventLog {
    t0: Instant,
    notes: Mutex<Vec<Note>>,
}

impl EventListener for EventLog {
    fn on_event(&self, event: &Event) {
        let at = self.t0.elapsed();
        let mut note = match event {
            Event::FailoverActivated { reason, .. } => Note::epoch(
                at,
                "failover_activated",
                format!("failover activated ({})", reason.as_str()),
            ),
            Event::FailoverRestored { duration } => Note::epoch(
                at,
                "failover_restored",
                format!("primary restored after {duration:?}"),
            ),
            Event::Reconciled {
                endpoint,
                keys,
                failed,
            } => Note::new(
                at,
                "reconciled",
                format!("reconciled {keys} keys on the {endpoint} ({failed} failed)"),
            ),
            // Connection churn and budget refusals are too frequent to be
            // worth a note each.
            other => match Note::of_event(at, other) {
                Some(note) => note,
                None => return,
            },
        };
        // Worker threads are named `w<n>`: an event reported on one
        // happened during its operation in progress.
        note.thread = thread::current()
            .name()
            .and_then(|n| n.strip_prefix('w'))
            .and_then(|n| n.parse().ok());
        self.notes.lock().unwrap().push(note);
    }
}

fn key(i: u64) -> String {
    format!("k{i}")
}

fn counter(thread: usize, j: u64) -> String {
    format!("c{thread}.{j}")
}

/// One worker: random operations until `until`, every one recorded.
fn worker(client: &Client, thread: usize, seed: u64, t0: Instant, until: Instant) -> Vec<Op> {
    let mut rng = Rng::new(seed ^ (thread as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut ops = Vec::new();
    let mut seq = 0u64;
    let value = |seq: &mut u64| {
        *seq += 1;
        format!("t{thread}-{seq}")
    };
    while Instant::now() < until {
        let call = match rng.range(0, 100) {
            0..=19 => Call::Get {
                key: key(rng.range(0, KEYS as u64)),
            },
            20..=29 => Call::MGet {
                keys: (0..rng.range(2, 5))
                    .map(|_| key(rng.range(0, KEYS as u64)))
                    .collect(),
            },
            30..=37 => Call::ExecGet {
                key: key(rng.range(0, KEYS as u64)),
            },
            38..=51 => Call::Set {
                key: key(rng.range(0, KEYS as u64)),
                value: value(&mut seq),
            },
            52..=58 => Call::SetEx {
                key: key(rng.range(0, KEYS as u64)),
                value: value(&mut seq),
                ttl: rng.ms(100, 1500),
            },
            59..=65 => {
                // Distinct keys: MSET of one key twice keeps the last.
                let first = rng.range(0, KEYS as u64);
                let n = rng.range(2, 4);
                let v = value(&mut seq);
                Call::MSet {
                    pairs: (0..n)
                        .map(|i| (key((first + i * 7) % KEYS as u64), format!("{v}.{i}")))
                        .collect(),
                }
            }
            66..=73 => Call::ExecSet {
                key: key(rng.range(0, KEYS as u64)),
                value: value(&mut seq),
            },
            74..=81 => Call::Delete {
                key: key(rng.range(0, KEYS as u64)),
            },
            _ => Call::Incr {
                key: counter(thread, rng.range(0, COUNTERS_PER_THREAD as u64)),
            },
        };
        let invoke = t0.elapsed();
        let result = run(client, &call);
        let complete = t0.elapsed();
        ops.push(Op {
            thread,
            call,
            invoke,
            complete,
            result,
        });
    }
    ops
}

fn run(client: &Client, call: &Call) -> Result<Reply, history::Failure> {
    let r = match call {
        Call::Get { key } => client.get::<_, String>(key).map(|v| Reply::Values(vec![v])),
        Call::MGet { keys } => client.mget::<_, String>(keys).map(Reply::Values),
        Call::ExecGet { key } => client
            .execute::<Option<String>>(redis::cmd("GET").arg(key))
            .map(|v| Reply::Values(vec![v])),
        Call::Set { key, value } => client.set(key, value).map(|()| Reply::Done),
        Call::SetEx { key, value, ttl } => client.set_ex(key, value, *ttl).map(|()| Reply::Done),
        Call::MSet { pairs } => client.mset(pairs).map(|()| Reply::Done),
        Call::ExecSet { key, value } => client
            .execute::<()>(redis::cmd("SET").arg(key).arg(value))
            .map(|()| Reply::Done),
        Call::Delete { key } => client.delete(key).map(|_| Reply::Done),
        Call::Incr { key } => client.incr(key, 1).map(Reply::Int),
    };
    r.map_err(|e| history::Failure::from(&e))
}

/// The faults the schedule draws from.
#[derive(Debug, Clone, Copy)]
enum Fault {
    PassThrough,
    Reset,
    Refuse,
    Blackhole,
    CutAfterRequest,
    Latency,
    /// Rate limit, then pass-through long enough for the prober to restore.
    Quota,
    /// SIGKILL the primary, restart it on the same port (AOF).
    Kill,
    /// Single cuts and resets, too few to open the breaker.
    Sporadic,
}

/// Every fault once, and pass-through twice, per deck.
const DECK: [Fault; 10] = [
    Fault::PassThrough,
    Fault::PassThrough,
    Fault::Reset,
    Fault::Refuse,
    Fault::Blackhole,
    Fault::CutAfterRequest,
    Fault::Latency,
    Fault::Quota,
    Fault::Kill,
    Fault::Sporadic,
];

/// The fault schedule: faults from shuffled decks (so a short run still
/// sees every kind), each held 0.3–1.5 s, until `until`; then everything
/// healed (pass-through, primary running). The sleeps here are the
/// workload (how long a fault lasts), not synchronisation.
fn faults(
    proxy: &FaultProxy,
    primary: &mut RedisServer,
    seed: u64,
    t0: Instant,
    until: Instant,
) -> Vec<Note> {
    let mut rng = Rng::new(seed ^ 0xFA17);
    let mut notes = Vec::new();
    let hold = |d: Duration| thread::sleep(d.min(until.saturating_duration_since(Instant::now())));
    let mut deck: Vec<Fault> = Vec::new();
    while Instant::now() < until {
        if deck.is_empty() {
            deck = DECK.to_vec();
            for i in (1..deck.len()).rev() {
                deck.swap(i, rng.range(0, i as u64 + 1) as usize);
            }
        }
        let fault = deck.pop().unwrap();
        let d = rng.ms(300, 1500);
        let mut note = |label: &str, text: String| notes.push(Note::new(t0.elapsed(), label, text));
        let mode = match fault {
            Fault::PassThrough => Mode::PassThrough,
            Fault::Reset => Mode::Reset,
            Fault::Refuse => Mode::Refuse,
            Fault::Blackhole => Mode::Blackhole,
            Fault::CutAfterRequest => Mode::CutAfterRequest,
            Fault::Latency => Mode::Latency(rng.ms(20, 300)),
            Fault::Quota => Mode::QuotaExceeded,
            Fault::Sporadic => {
                // A reply lost after the command ran, or a request reset
                // before it was forwarded (an idle connection killed by a
                // load balancer): single failures the breaker tolerates.
                proxy.set_mode(Mode::PassThrough);
                note("sporadic", format!("sporadic cuts and resets for {d:?}"));
                let end = Instant::now() + d;
                while Instant::now() < end.min(until) {
                    if rng.range(0, 2) == 0 {
                        proxy.cut_next_request();
                    } else {
                        proxy.reset_next_request();
                    }
                    hold(rng.ms(20, 80));
                }
                continue;
            }
            Fault::Kill => {
                proxy.set_mode(Mode::PassThrough);
                primary.stop();
                note("kill_restart", format!("primary SIGKILLed for {d:?}"));
                hold(d);
                primary.start();
                note("restarted", "primary restarted (AOF)".into());
                continue;
            }
        };
        proxy.set_mode(mode);
        let label = format!("{fault:?}").to_lowercase();
        note(&label, format!("proxy {mode:?} for {d:?}"));
        hold(d);
        if let Fault::Quota = fault {
            // Quota back: long enough for cooldown, grace and good probes,
            // so the prober restores the primary.
            proxy.set_mode(Mode::PassThrough);
            note("passthrough", "proxy PassThrough (quota reset)".into());
            hold(ms(1500));
        }
    }
    proxy.set_mode(Mode::PassThrough);
    notes.push(Note::new(
        t0.elapsed(),
        "healed",
        "proxy PassThrough, primary running".to_string(),
    ));
    notes
}

/// One variant of the run: servers, client, workload and faults, checks.
fn run_variant(name: &str, mode: FallbackMode, reconcile: Reconcile, auto_pipeline: bool) {
    let (duration, seed) = settings();
    // Each variant its own schedule and mix, both derived from the seed.
    let seed = seed
        ^ name
            .bytes()
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut primary =
        RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"]);
    let secondary = RedisServer::new();
    let proxy = FaultProxy::new(primary.addr());
    let config = Config::builder(proxy.url())
        .fallback_url(secondary.url())
        .fallback_mode(mode)
        .max_connections(THREADS as u32 * 2)
        .connect_timeout(ms(150))
        .socket_timeout(ms(150))
        .checkout_timeout(ms(200))
        .health_check_interval(ms(100))
        .failure_threshold(3)
        .open_timeout(ms(400))
        .max_retries(2)
        .retry_base_delay(ms(10))
        .retry_max_delay(ms(50))
        .failover_cooldown(ms(500))
        .failover_grace(ms(500))
        .auto_pipeline(auto_pipeline)
        .build()
        .unwrap();
    let bound = call_bound(&config);
    let t0 = Instant::now();
    let log = Arc::new(EventLog {
        t0,
        notes: Mutex::new(Vec::new()),
    });
    let client = Client::builder(config)
        .listener(log.clone())
        .reconcile(reconcile)
        .jitter_seed(seed)
        .build()
        .unwrap();
    let until = t0 + duration;
    println!(
        "guarantees[{name}]: GUARANTEES_SEED={:#x} (variant seed {seed:#x}), {duration:?}, \
         {THREADS} threads, call bound {bound:?}",
        settings().1
    );

    let (ops, fault_notes) = thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let client = &client;
                thread::Builder::new()
                    .name(format!("w{t}"))
                    .spawn_scoped(s, move || worker(client, t, seed, t0, until))
                    .unwrap()
            })
            .collect();
        let schedule = s.spawn(|| faults(&proxy, &mut primary, seed, t0, until));
        let ops: Vec<Op> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect();
        (ops, schedule.join().unwrap())
    });

    // The primary's counters, read directly (not through the client or the
    // proxy) once everything stopped; only meaningful while the client is
    // on the primary, checked before and after the reads.
    let on_primary = || !client.stats().failover_active;
    let mut finals = Vec::new();
    if on_primary() {
        let mut conn = primary.connection();
        for t in 0..THREADS {
            for j in 0..COUNTERS_PER_THREAD as u64 {
                let key = counter(t, j);
                let value: Option<i64> = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
                finals.push(FinalCounter {
                    key,
                    value,
                    read_at: t0.elapsed(),
                });
            }
        }
        if !on_primary() {
            finals.clear();
        }
    }
    let finals_note = if finals.is_empty() {
        "skipped: the client ended on the secondary"
    } else {
        "checked"
    };

    let mut events = log.notes.lock().unwrap().clone();
    events.sort_by_key(|n| n.at);
    let history = History {
        ops,
        faults: fault_notes,
        events,
    };
    let rules = Rules {
        call_bound: bound,
        ttl_slack: ms(100),
        // A switch is reported after the command re-sent to the secondary,
        // or after the invalidation following a restore: at most one call.
        epoch_slack: bound,
        cache_ops_never_fail: mode != FallbackMode::Disabled,
    };
    let violations = history::check(&history, &rules, &finals);
    // Every switch is reported: the client cannot go back to the primary
    // more often than it left it, and each switch is counted once.
    let count = |label: &str| history.events.iter().filter(|n| n.label == label).count();
    let (activated, restored) = (count("failover_activated"), count("failover_restored"));
    assert!(
        restored <= activated,
        "guarantees[{name}]: {restored} restores reported after {activated} failovers"
    );
    assert_eq!(
        client.stats().failovers,
        activated as u64,
        "guarantees[{name}]"
    );
    if std::env::var_os("GUARANTEES_VERBOSE").is_some() {
        let mut timeline: Vec<&Note> = history.faults.iter().chain(&history.events).collect();
        timeline.sort_by_key(|n| n.at);
        for n in timeline {
            println!("  {} {}", history::secs(n.at), n.text);
        }
    }
    println!(
        "guarantees[{name}] summary (final counters {finals_note}):\n{}",
        history::summary(&history, &violations)
    );
    if !violations.is_empty() {
        println!("{}", history::examples(&history, &violations, 5));
    }
    assert!(
        violations.is_empty(),
        "guarantees[{name}]: {} violations of the contract (GUARANTEES_SEED={:#x}; details above)",
        violations.len(),
        settings().1
    );
}

/// The two variants share the machine's two cores: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn guarantees_hold_under_faults_on_failure_fallback() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    run_variant(
        "on_failure",
        FallbackMode::OnFailure,
        Reconcile::Invalidate,
        false,
    );
}

/// The same with automatic pipelining (issue #12): the 16 threads share
/// the endpoint's shared connections, requests batched, replies read back
/// in order, through every fault of the schedule.
#[test]
fn guarantees_hold_under_faults_with_auto_pipelining() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    run_variant(
        "on_failure_auto_pipeline",
        FallbackMode::OnFailure,
        Reconcile::Invalidate,
        true,
    );
}

#[test]
fn guarantees_hold_under_faults_write_through_replay() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    run_variant(
        "write_through",
        FallbackMode::WriteThrough,
        Reconcile::Replay,
        false,
    );
}

/// The checker on small synthetic histories: it must find what was planted
/// and accept a clean concurrent history. A checker that cannot fail is
/// worthless.
mod checker {
    use super::history::{
        check, Call, Failure, FinalCounter, History, Note, Op, Reply, Rules, ViolationKind,
    };
    use super::ms;
    use resilient_redis::ErrorKind;

    fn rules() -> Rules {
        Rules {
            call_bound: ms(1000),
            ttl_slack: ms(100),
            epoch_slack: ms(50),
            cache_ops_never_fail: true,
        }
    }

    fn op(thread: usize, call: Call, from: u64, to: u64, result: Result<Reply, Failure>) -> Op {
        Op {
            thread,
            call,
            invoke: ms(from),
            complete: ms(to),
            result,
        }
    }

    fn set(thread: usize, key: &str, value: &str, from: u64, to: u64) -> Op {
        let call = Call::Set {
            key: key.into(),
            value: value.into(),
        };
        op(thread, call, from, to, Ok(Reply::Done))
    }

    /// `execute(SET)`: it may fail where the cache API may not.
    fn exec_set(thread: usize, key: &str, value: &str, from: u64, to: u64) -> Op {
        let call = Call::ExecSet {
            key: key.into(),
            value: value.into(),
        };
        op(thread, call, from, to, Ok(Reply::Done))
    }

    fn get(thread: usize, key: &str, seen: Option<&str>, from: u64, to: u64) -> Op {
        let call = Call::Get { key: key.into() };
        op(
            thread,
            call,
            from,
            to,
            Ok(Reply::Values(vec![seen.map(Into::into)])),
        )
    }

    fn incr(thread: usize, key: &str, from: u64, to: u64, result: Result<i64, bool>) -> Op {
        let call = Call::Incr { key: key.into() };
        let result = result.map(Reply::Int).map_err(|may| Failure {
            kind: ErrorKind::Timeout,
            may_have_executed: may,
            message: "timed out".into(),
        });
        op(thread, call, from, to, result)
    }

    fn failed(mut op: Op) -> Op {
        op.result = Err(Failure {
            kind: ErrorKind::Connection,
            may_have_executed: true,
            message: "connection reset".into(),
        });
        op
    }

    fn kinds(ops: Vec<Op>, events: Vec<Note>, finals: &[FinalCounter]) -> Vec<ViolationKind> {
        let history = History {
            ops,
            faults: Vec::new(),
            events,
        };
        check(&history, &rules(), finals)
            .into_iter()
            .map(|v| v.kind)
            .collect()
    }

    #[test]
    fn planted_stale_read_is_found() {
        let ops = vec![
            set(0, "k", "a", 0, 10),
            set(1, "k", "b", 20, 30),
            get(2, "k", Some("a"), 40, 50),
        ];
        assert_eq!(kinds(ops, vec![], &[]), [ViolationKind::StaleRead]);
        // A delete is a write of nothing: the old value is stale after it.
        let ops = vec![
            set(0, "k", "a", 0, 10),
            op(1, Call::Delete { key: "k".into() }, 20, 30, Ok(Reply::Done)),
            op(
                2,
                Call::MGet {
                    keys: vec!["x".into(), "k".into()],
                },
                40,
                50,
                Ok(Reply::Values(vec![None, Some("a".into())])),
            ),
        ];
        assert_eq!(kinds(ops, vec![], &[]), [ViolationKind::StaleRead]);
    }

    #[test]
    fn planted_wrong_counter_is_found() {
        // 1, 2, then 5 with no failure in between: two increments from nowhere.
        let ops = vec![
            incr(0, "c", 0, 1, Ok(1)),
            incr(0, "c", 2, 3, Ok(2)),
            incr(0, "c", 4, 5, Ok(5)),
        ];
        assert_eq!(kinds(ops, vec![], &[]), [ViolationKind::CounterSkipped]);
        // Back to 1: served from a fresh memory store.
        let ops = vec![incr(0, "c", 0, 1, Ok(1)), incr(0, "c", 2, 3, Ok(1))];
        assert_eq!(kinds(ops, vec![], &[]), [ViolationKind::CounterWentBack]);
        // A failure that said "never executed" but did.
        let ops = vec![
            incr(0, "c", 0, 1, Ok(1)),
            incr(0, "c", 2, 3, Err(false)),
            incr(0, "c", 4, 5, Ok(3)),
        ];
        assert_eq!(
            kinds(ops, vec![], &[]),
            [ViolationKind::CounterMayHaveExecutedLied]
        );
        // The primary lost the count although nothing switched.
        let ops = vec![incr(0, "c", 0, 1, Ok(1)), incr(0, "c", 2, 3, Ok(2))];
        let finals = [FinalCounter {
            key: "c".into(),
            value: None,
            read_at: ms(100),
        }];
        assert_eq!(kinds(ops, vec![], &finals), [ViolationKind::CounterFinal]);
    }

    #[test]
    fn value_never_written_and_other_keys_values_are_found() {
        let ops = vec![set(0, "k", "a", 0, 10), get(1, "k", Some("zzz"), 20, 30)];
        assert_eq!(kinds(ops, vec![], &[]), [ViolationKind::ValueNeverWritten]);
        let ops = vec![set(0, "j", "a", 0, 10), get(1, "k", Some("a"), 20, 30)];
        assert_eq!(kinds(ops, vec![], &[]), [ViolationKind::WrongKey]);
        let ops = vec![
            get(1, "k", Some("a"), 0, 10),
            failed(exec_set(0, "k", "a", 20, 30)),
        ];
        assert_eq!(kinds(ops, vec![], &[]), [ViolationKind::ReadFromFuture]);
    }

    #[test]
    fn expired_ttl_read_is_found() {
        let set_ex = op(
            0,
            Call::SetEx {
                key: "k".into(),
                value: "a".into(),
                ttl: ms(1000),
            },
            0,
            10,
            Ok(Reply::Done),
        );
        // Within ttl + slack: fine.
        let ops = vec![set_ex.clone(), get(1, "k", Some("a"), 1100, 1105)];
        assert_eq!(kinds(ops, vec![], &[]), []);
        let ops = vec![set_ex, get(1, "k", Some("a"), 1200, 1205)];
        assert_eq!(kinds(ops, vec![], &[]), [ViolationKind::ExpiredRead]);
    }

    #[test]
    fn errors_where_none_are_promised_and_slow_calls_are_found() {
        let ops = vec![failed(get(0, "k", None, 0, 10))];
        assert_eq!(kinds(ops, vec![], &[]), [ViolationKind::UnexpectedError]);
        let mut invalid = failed(set(0, "k", "a", 0, 10));
        if let Err(f) = &mut invalid.result {
            f.kind = ErrorKind::InvalidInput;
        }
        assert_eq!(kinds(vec![invalid], vec![], &[]), []);
        // incr and execute may fail.
        let ops = vec![
            incr(0, "c", 0, 10, Err(true)),
            failed(op(
                1,
                Call::ExecGet { key: "k".into() },
                0,
                10,
                Ok(Reply::Done),
            )),
        ];
        assert_eq!(kinds(ops, vec![], &[]), []);
        let ops = vec![get(0, "k", None, 0, 1001)];
        assert_eq!(kinds(ops, vec![], &[]), [ViolationKind::TooSlow]);
    }

    /// Overlapping writes and reads, failed writes appearing late, deletes,
    /// misses, counters with failures and a failover: all allowed.
    #[test]
    fn clean_concurrent_history_passes() {
        let ops = vec![
            set(0, "k", "a", 0, 100),
            // Concurrent with the write of b: may see a or b.
            set(1, "k", "b", 50, 150),
            get(2, "k", Some("a"), 120, 130),
            get(3, "k", Some("b"), 60, 70),
            // After both: either, since they overlapped.
            get(2, "k", Some("a"), 200, 210),
            get(3, "k", Some("b"), 200, 210),
            // A failed write may appear at any time after its invocation,
            // even after a newer acknowledged one.
            failed(exec_set(0, "k", "late", 300, 310)),
            set(1, "k", "c", 400, 410),
            get(2, "k", Some("late"), 500, 510),
            // A miss is always fine, also right after a write.
            get(3, "k", None, 520, 530),
            op(
                0,
                Call::Delete { key: "k".into() },
                600,
                610,
                Ok(Reply::Done),
            ),
            get(2, "k", None, 620, 630),
            // A read concurrent with the delete may still see c.
            get(3, "k", Some("c"), 605, 640),
            op(
                1,
                Call::MSet {
                    pairs: vec![("k".into(), "m1".into()), ("j".into(), "m2".into())],
                },
                700,
                710,
                Ok(Reply::Done),
            ),
            op(
                2,
                Call::MGet {
                    keys: vec!["j".into(), "k".into(), "x".into()],
                },
                720,
                730,
                Ok(Reply::Values(vec![
                    Some("m2".into()),
                    Some("m1".into()),
                    None,
                ])),
            ),
            op(
                3,
                Call::ExecSet {
                    key: "j".into(),
                    value: "e1".into(),
                },
                740,
                750,
                Ok(Reply::Done),
            ),
            op(
                3,
                Call::ExecGet { key: "j".into() },
                760,
                770,
                Ok(Reply::Values(vec![Some("e1".into())])),
            ),
            // Counters: a failure that may have executed explains a gap.
            incr(4, "c", 0, 10, Ok(1)),
            incr(4, "c", 20, 30, Err(true)),
            incr(4, "c", 40, 50, Ok(3)),
            incr(4, "c", 60, 70, Err(true)),
            incr(4, "c", 80, 90, Ok(4)),
            // A failover in between: only >= 1 is required.
            incr(4, "c", 100, 110, Ok(1)),
            incr(4, "c", 200, 210, Ok(2)),
            incr(5, "d", 0, 10, Ok(1)),
        ];
        let events = vec![Note::epoch(ms(95), "failover_activated", "failover")];
        let finals = [
            FinalCounter {
                key: "c".into(),
                value: Some(2),
                read_at: ms(1000),
            },
            FinalCounter {
                key: "d".into(),
                value: Some(1),
                read_at: ms(1000),
            },
        ];
        assert_eq!(kinds(ops, events, &finals), []);
    }

    /// A failover reported a little after the switch still excuses a
    /// counter pair that completed just before the report.
    #[test]
    fn late_epoch_report_is_allowed_for_epoch_slack() {
        // Back to 1 (a failover emptied the counter), reported 40 ms after
        // the second call completed: within the 50 ms slack.
        let ops = vec![incr(0, "c", 0, 10, Ok(1)), incr(0, "c", 20, 30, Ok(1))];
        let late = vec![Note::epoch(ms(70), "failover_activated", "failover")];
        assert_eq!(kinds(ops.clone(), late, &[]), []);
        let too_late = vec![Note::epoch(ms(90), "failover_activated", "failover")];
        assert_eq!(
            kinds(ops.clone(), too_late, &[]),
            [ViolationKind::CounterWentBack]
        );
        // Reported on a worker thread: the switch happened during that
        // thread's operation in progress, however long ago it started.
        let mut on_worker = Note::epoch(ms(500), "failover_activated", "failover");
        on_worker.thread = Some(1);
        let mut ops_with_trigger = ops.clone();
        ops_with_trigger.push(get(1, "k", None, 25, 600));
        assert_eq!(kinds(ops_with_trigger, vec![on_worker.clone()], &[]), []);
        let mut ops_with_trigger = ops;
        ops_with_trigger.push(get(1, "k", None, 35, 600));
        assert_eq!(
            kinds(ops_with_trigger, vec![on_worker], &[]),
            [ViolationKind::CounterWentBack]
        );
    }
}

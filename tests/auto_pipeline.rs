//! Automatic pipelining (issue #12): concurrent calls share a few
//! connections, their requests written in batches and their replies read
//! back in order. What must hold: a call alone goes straight through, no
//! reply ever reaches the wrong caller (replies split at random byte
//! boundaries and delayed at random, some callers timing out), commands
//! that block or change connection state get a connection of their own, a
//! broken shared connection fails every call written on it as possibly
//! executed and counts once against the breaker, and deadlines hold.

// Test code: a failed unwrap is a broken test environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use resilient_redis::{redis, BreakerState, Client, Config, ErrorKind, FallbackMode};
use support::{ms, FakeRedis, FaultProxy, Mode, RedisServer};

/// A client with automatic pipelining whose errors reach the caller as
/// they are: no memory fallback, a breaker that does not open, no retry
/// unless `retries`.
/// A client whose callers always wait for the shared connection when it
/// is busy, however few they are (these tests are about sharing).
fn client(url: &str, call_timeout: Option<Duration>, retries: u32, threshold: u32) -> Client {
    client_sharing_from(url, call_timeout, retries, threshold, 0)
}

fn client_sharing_from(
    url: &str,
    call_timeout: Option<Duration>,
    retries: u32,
    threshold: u32,
    share_from: usize,
) -> Client {
    let config = Config::builder(url)
        .auto_pipeline(true)
        .auto_pipeline_share_from(share_from)
        .fallback_mode(FallbackMode::Disabled)
        .failure_threshold(threshold)
        .max_retries(retries)
        .retry_base_delay(ms(1))
        .retry_max_delay(ms(5))
        .call_timeout(call_timeout)
        .socket_timeout(Duration::from_secs(10))
        .max_connections(8)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    Client::new(config).unwrap()
}

fn shared_counts(client: &Client) -> (u64, u64) {
    let stats = client.stats();
    let primary = &stats.endpoints[0];
    (primary.shared_requests, primary.shared_waits)
}

/// Polls `cond` every millisecond until it holds or `limit` passes.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        thread::sleep(ms(1));
    }
    cond()
}

#[test]
fn config_and_environment_switch_it() {
    let off = Config::builder("redis://127.0.0.1:1").build().unwrap();
    assert!(!off.auto_pipeline(), "off by default");
    let on = Config::builder("redis://127.0.0.1:1")
        .auto_pipeline(true)
        .build()
        .unwrap();
    assert!(on.auto_pipeline());
    let env = |v: &str| {
        let vars = [
            ("REDIS_URL", "redis://127.0.0.1:1"),
            ("CACHE_AUTO_PIPELINE", v),
        ];
        Config::from_env_with(|k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    };
    assert!(!env("false").unwrap().auto_pipeline());
    assert!(env("on").unwrap().auto_pipeline());
    let err = env("sometimes").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().starts_with("CACHE_AUTO_PIPELINE: "),
        "names the variable: {err}"
    );
}

#[test]
fn a_call_alone_goes_straight_through() {
    let server = RedisServer::new();
    let client = client(&server.url(), None, 0, 1000);
    for i in 0..200 {
        client.set(format!("k{i}"), i).unwrap();
        assert_eq!(client.get::<_, i64>(format!("k{i}")).unwrap(), Some(i));
    }
    let (requests, waits) = shared_counts(&client);
    assert!(
        requests >= 400,
        "the calls went through a shared connection: {requests}"
    );
    // The caller wrote and read itself every time: nobody ever waited for
    // another thread.
    assert_eq!(waits, 0);
    // The shared connection went back to the pool between calls.
    assert_eq!(client.stats().endpoints[0].pool_in_use, 0);
}

#[test]
fn without_it_nothing_is_shared() {
    let server = RedisServer::new();
    let config = Config::builder(server.url())
        .auto_pipeline(false)
        .build()
        .unwrap();
    let client = Client::new(config).unwrap();
    client.set("k", 1).unwrap();
    assert_eq!(client.get::<_, i64>("k").unwrap(), Some(1));
    assert_eq!(shared_counts(&client), (0, 0));
}

/// One worker of the reply-routing property: its own keys, values that
/// name it and count up. A reply meant for another caller would name
/// another worker, another key, or be of another shape.
fn worker(client: &Client, t: usize, ops: usize, seed: u64, slow_every: u64) {
    let mut rng = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(t as u64)
        | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let key = format!("t{t}:k");
    let other = format!("t{t}:o");
    let mut acked = 0u64;
    for n in 1..=ops as u64 {
        let value = format!("t{t}:k:{n}");
        match next() % 4 {
            0 => {
                if client.set(&key, &value).is_ok() {
                    acked = n;
                }
            }
            1 => match client.get::<_, String>(&key) {
                Ok(Some(v)) => {
                    // A write that timed out may still run later (after
                    // a newer one on another connection): any value this
                    // worker wrote to this key is an answer, another
                    // key's or worker's is not.
                    let seq: u64 = v
                        .strip_prefix(&format!("t{t}:k:"))
                        .unwrap_or_else(|| panic!("worker {t} read {v:?} for {key}"))
                        .parse()
                        .unwrap();
                    assert!(seq <= n, "worker {t} read {seq} before writing it");
                }
                Ok(None) => assert_eq!(acked, 0, "worker {t} lost {key}"),
                // Availability errors are allowed (timeouts, and on a
                // starved machine a pool or connect timeout); a wrong value
                // is not.
                Err(e) => assert!(e.is_transient(), "{e}"),
            },
            2 => {
                // A pipeline: several replies for one caller.
                let mut p = redis::pipe();
                p.cmd("SET").arg(&other).arg(&value).ignore();
                p.cmd("GET").arg(&other).cmd("EXISTS").arg(&key);
                match client.pipeline::<(String, i64)>(&p) {
                    Ok((v, exists)) => {
                        assert_eq!(v, value, "worker {t}");
                        assert!(exists == 0 || exists == 1, "worker {t}: {exists}");
                    }
                    Err(e) => assert!(e.is_transient(), "{e}"),
                }
            }
            _ => {
                if slow_every > 0 && next() % slow_every == 0 {
                    // Held by the server past the call deadline: this
                    // caller leaves (its late reply must be dropped), or,
                    // on a starved machine, wakes late to its own reply.
                    match client.get::<_, String>(format!("slow:{t}")) {
                        Ok(v) => assert_eq!(v, None, "worker {t}: slow:{t} is never written"),
                        Err(e) => assert!(e.is_transient(), "{e}"),
                    }
                } else {
                    let n: i64 = client.incr(format!("t{t}:n"), 1).unwrap_or(0);
                    assert!(n >= 0, "worker {t}: {n}");
                }
            }
        }
    }
}

fn run_workers(client: &Arc<Client>, threads: usize, ops: usize, seed: u64, slow_every: u64) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let client = client.clone();
            thread::spawn(move || worker(&client, t, ops, seed, slow_every))
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Replies split at random byte boundaries and delayed at random; some
    /// callers time out and leave. No reply reaches the wrong caller. Half
    /// the cases keep the default `auto_pipeline_share_from`: callers then
    /// mix shared and connections of their own.
    #[test]
    fn replies_reach_the_right_caller(
        seed in any::<u64>(),
        threads in 2usize..16,
        always_share in any::<bool>(),
    ) {
        let fake = FakeRedis::new();
        fake.chop_replies(Some(seed));
        fake.slow_gets("slow:", ms(60));
        let share_from = if always_share { 0 } else { 8 };
        let client = Arc::new(client_sharing_from(&fake.url(), Some(ms(25)), 0, 10_000, share_from));
        run_workers(&client, threads, 60, seed, 8);
        // Still in step after everything: a fresh round trip per worker.
        for t in 0..threads {
            let v: Option<String> = client.get(format!("t{t}:o")).unwrap();
            let prefix = format!("t{t}:k:");
            prop_assert!(v.as_deref().is_none_or(|v| v.starts_with(&prefix)), "{:?}", v);
        }
    }
}

#[test]
fn concurrent_callers_are_pipelined_and_in_step() {
    let fake = FakeRedis::new();
    fake.chop_replies(Some(7));
    let client = Arc::new(client(&fake.url(), None, 0, 1000));
    // Until the server saw more than one command in one read (and the
    // client says callers waited for each other), rounds of 12 workers.
    let mut rounds = 0;
    let pipelined = wait_until(Duration::from_secs(60), || {
        rounds += 1;
        run_workers(&client, 12, 50, rounds, 0);
        fake.max_batch() > 1 && shared_counts(&client).1 > 0
    });
    assert!(pipelined, "12 threads never shared a write");
}

#[test]
fn blocking_and_connection_state_commands_get_their_own_connection() {
    let server = RedisServer::new();
    let client = Arc::new(client(
        &server.url(),
        Some(Duration::from_secs(20)),
        0,
        1000,
    ));
    let blpop = {
        let client = client.clone();
        thread::spawn(move || {
            client.execute::<Option<(String, String)>>(redis::cmd("BLPOP").arg("queue").arg(0))
        })
    };
    let xread = {
        let client = client.clone();
        thread::spawn(move || {
            client.execute::<redis::Value>(
                redis::cmd("XREAD")
                    .arg("BLOCK")
                    .arg(0)
                    .arg("STREAMS")
                    .arg("stream")
                    .arg("$"),
            )
        })
    };
    // Both block on the server now.
    let mut raw = server.connection();
    assert!(wait_until(Duration::from_secs(10), || {
        let n: i64 = redis::cmd("INFO")
            .arg("clients")
            .query::<String>(&mut raw)
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("blocked_clients:"))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0);
        n == 2
    }));
    // Shared calls from many threads go on meanwhile.
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (client, done) = (client.clone(), done.clone());
            thread::spawn(move || {
                for i in 0..50 {
                    client.set(format!("w{t}"), i).unwrap();
                    assert_eq!(client.get::<_, i64>(format!("w{t}")).unwrap(), Some(i));
                }
                done.fetch_add(1, SeqCst);
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(done.load(SeqCst), 4);
    assert!(!blpop.is_finished() && !xread.is_finished());
    // A connection-state command on its own connection leaves the shared
    // ones alone: they still serve database 0 unnamed.
    let _: () = client
        .execute(redis::cmd("CLIENT").arg("SETNAME").arg("named"))
        .unwrap();
    let _: i64 = redis::cmd("LPUSH")
        .arg("queue")
        .arg("job")
        .query(&mut raw)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("stream")
        .arg("*")
        .arg("f")
        .arg("v")
        .query(&mut raw)
        .unwrap();
    assert_eq!(
        blpop.join().unwrap().unwrap(),
        Some(("queue".to_string(), "job".to_string()))
    );
    assert!(xread.join().unwrap().is_ok());
    client.set("after", 1).unwrap();
    assert_eq!(client.get::<_, i64>("after").unwrap(), Some(1));
    let (requests, _) = shared_counts(&client);
    assert!(requests >= 400, "{requests}");
}

#[test]
fn a_broken_shared_connection_fails_its_calls_once_for_the_breaker() {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    // Two consecutive counted failures would open it.
    let client = Arc::new(client(&proxy.url(), None, 2, 2));
    // The shared connection is made before the proxy slows down (a connect
    // through it would take several slow round trips).
    client.set("k", "v").unwrap();
    assert_eq!(client.stats().endpoints[0].connections_created, 1);
    // Slow both ways, so that requests queue behind the first
    // and are then written together and stay in flight.
    proxy.set_mode(Mode::Latency(ms(400)));
    let (before, _) = shared_counts(&client);
    let threads = 12;
    let start = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (client, start) = (client.clone(), start.clone());
            thread::spawn(move || {
                start.wait();
                if t % 2 == 0 {
                    client.incr("n", 1).map(|_| ()).map_err(|e| (true, e))
                } else {
                    client
                        .get::<_, String>("k")
                        .map(|v| assert_eq!(v.as_deref(), Some("v")))
                        .map_err(|e| (false, e))
                }
            })
        })
        .collect();
    start.wait();
    // Every request written (some in a second batch), none
    // answered yet: then every connection through the proxy is reset.
    assert!(wait_until(Duration::from_secs(20), || shared_counts(
        &client
    )
    .0 >= before
        + threads as u64));
    proxy.set_mode(Mode::PassThrough);
    proxy.reset_all();
    let mut failed_incrs = 0;
    for h in handles {
        match h.join().unwrap() {
            Ok(()) => {}
            Err((true, e)) => {
                // INCR is not retried: it may have run.
                assert!(e.may_have_executed(), "{e}");
                assert_eq!(e.kind(), ErrorKind::Connection, "{e}");
                failed_incrs += 1;
            }
            Err((false, e)) => panic!("an idempotent GET is retried, got {e}"),
        }
    }
    assert!(
        failed_incrs >= 3,
        "only {failed_incrs} INCRs were in flight"
    );
    // The shared connection broke: one failure counted, not one per
    // caller (two would have opened the breaker).
    let stats = client.stats();
    assert_eq!(stats.endpoints[0].breaker_opens, 0);
    assert_eq!(stats.endpoints[0].circuit, BreakerState::Closed);
    client.set("k", "w").unwrap();
    assert_eq!(client.get::<_, String>("k").unwrap().as_deref(), Some("w"));
}

#[test]
fn a_caller_past_its_deadline_leaves_and_the_connection_stays_in_step() {
    let server = RedisServer::new();
    let client = Arc::new(client(&server.url(), Some(ms(150)), 0, 10_000));
    for t in 0..4 {
        client.set(format!("d{t}"), t).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let timeouts = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (client, stop, timeouts) = (client.clone(), stop.clone(), timeouts.clone());
            thread::spawn(move || {
                let key = format!("d{t}");
                let mut n = 0i64;
                while !stop.load(SeqCst) {
                    match client.get::<_, i64>(&key) {
                        Ok(v) => assert_eq!(v, Some(t), "worker {t}"),
                        Err(e) => {
                            assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
                            timeouts.fetch_add(1, SeqCst);
                        }
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    // The server stops answering for longer than the call deadline.
    let mut raw = server.connection();
    for _ in 0..3 {
        let _: () = redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(0.4)
            .query(&mut raw)
            .unwrap();
    }
    assert!(wait_until(Duration::from_secs(10), || timeouts
        .load(SeqCst)
        > 0));
    // After the late replies: every caller gets its own value again.
    let after = timeouts.load(SeqCst);
    let (requests, _) = shared_counts(&client);
    assert!(wait_until(Duration::from_secs(10), || shared_counts(
        &client
    )
    .0 > requests + 400));
    stop.store(true, SeqCst);
    for w in workers {
        assert!(w.join().unwrap() > 0);
    }
    assert!(after > 0);
}

#[test]
fn a_reply_nobody_waits_for_does_not_hold_up_the_callers_behind_it() {
    // One connection stalls: the fake server holds its reply to a slow GET,
    // and every reply after it on that connection, for 5 s: far past the
    // call deadline, short of the socket timeout. The slow GET sits in the
    // middle of a pipeline, so that when its caller leaves, the pipeline's
    // last reply is still owed on the connection. Callers behind it must
    // not wait for those replies: the next batch goes out on a fresh
    // connection.
    let fake = FakeRedis::new();
    fake.slow_gets("slow:", Duration::from_secs(5));
    // Written by another client: this one has no copy of its own to serve.
    client(&fake.url(), None, 0, 10_000).set("k", "v").unwrap();
    let client = Arc::new(client(&fake.url(), Some(ms(200)), 0, 10_000));
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (client, stop, answered) = (client.clone(), stop.clone(), answered.clone());
            thread::spawn(move || {
                while !stop.load(SeqCst) {
                    if client.get::<_, String>("k").ok() == Some(Some("v".to_string())) {
                        answered.fetch_add(1, SeqCst);
                    }
                }
            })
        })
        .collect();
    assert!(wait_until(Duration::from_secs(10), || answered
        .load(SeqCst)
        > 100));
    let mut p = redis::pipe();
    p.cmd("GET")
        .arg("k")
        .cmd("GET")
        .arg("slow:1")
        .cmd("GET")
        .arg("k");
    let err = client
        .pipeline::<(String, Option<String>, String)>(&p)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let before = answered.load(SeqCst);
    // Answers again within 3 s, well before the held replies come.
    let recovered = wait_until(Duration::from_secs(3), || {
        answered.load(SeqCst) > before + 100
    });
    stop.store(true, SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    assert!(
        recovered,
        "the callers waited for the replies of a caller that left"
    );
    assert_eq!(client.stats().endpoints[0].breaker_opens, 0);
}

//! Client benchmark against one local redis-server, side by side in one run
//! (issue #6):
//!
//! - `SET` + `GET` pairs at 1 and 16 threads through one raw
//!   `redis::Connection` per thread, r2d2 (with its default `PING` on every
//!   checkout, and with `test_on_check_out(false)`), and
//!   `resilient_redis::Client` with a pool of 16: ops/s (one command is one
//!   op) and per-command latency p50/p99/p99.9;
//! - ns per `Client::get` answered from the in-memory fallback while the
//!   breaker is open (a key written during the outage, and a missing key).
//!
//! - ns per call added by the call-duration histogram (the record and two
//!   thread-local accesses: it shares the pool's clock reads), with
//!   `--features test-support`.
//!
//! `cargo bench --bench client --features test-support`. Takes about a
//! minute; `CLIENT_BENCH=open` runs only the open-circuit part,
//! `CLIENT_BENCH=histogram` only the histogram. No criterion: plain
//! timing loops, numbers printed.

// A benchmark: a failure is a broken environment, panicking says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::Duration;

use common::{
    measure, median, ns_per_op, percentile_us, r2d2_pool, set_get_pair, thread_key, VALUE,
};
use resilient_redis::{BreakerState, Client, Config};
use support::RedisServer;

const RUN: Duration = Duration::from_millis(1000);
/// Rounds; variants run interleaved so that load from elsewhere hits all of
/// them alike. The median round's ops/s is printed; the percentiles are over
/// the samples of every round.
const ROUNDS: usize = 5;
const LABELS: [&str; 4] = [
    "raw connection per thread",
    "resilient-redis Client",
    "r2d2 (PING on checkout)",
    "r2d2 (no test on checkout)",
];

fn main() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    // `CLIENT_BENCH=open` runs only the open-circuit part (for profiling it
    // under callgrind without a server).
    if std::env::var("CLIENT_BENCH").as_deref() == Ok("open") {
        open_circuit();
        return;
    }
    histogram_cost();
    if std::env::var("CLIENT_BENCH").as_deref() == Ok("histogram") {
        return;
    }
    let server = RedisServer::new();
    let url = server.url();

    for threads in [1usize, 16] {
        println!(
            "SET+GET, {threads} thread(s), {ROUNDS} interleaved rounds of {} s:",
            RUN.as_secs_f64()
        );
        let client = Client::new(
            Config::builder(url.as_str())
                .max_connections(16)
                .build()
                .unwrap(),
        )
        .unwrap();
        let r2_test = r2d2_pool(&url, 16, true);
        let r2_plain = r2d2_pool(&url, 16, false);
        let mut ops: [Vec<f64>; 4] = Default::default();
        let mut lat: [Vec<u32>; 4] = Default::default();
        for round in 0..ROUNDS {
            // Rotate the order too: the first variant of a round would
            // otherwise always meet whatever the previous one left behind.
            for n in 0..LABELS.len() {
                let i = (round + n) % LABELS.len();
                let run = match i {
                    0 => measure(
                        threads,
                        RUN,
                        || (server.connection(), thread_key("client")),
                        |(c, k), rec| set_get_pair(c, k, rec),
                    ),
                    1 => measure(
                        threads,
                        RUN,
                        || (client.clone(), thread_key("client")),
                        |(c, k), rec| {
                            rec.time(|| c.set(&*k, VALUE).unwrap());
                            rec.time(|| c.get::<_, String>(&*k).unwrap().unwrap());
                        },
                    ),
                    _ => {
                        let pool = if i == 2 { &r2_test } else { &r2_plain };
                        measure(
                            threads,
                            RUN,
                            || (pool.clone(), thread_key("client")),
                            |(p, k), rec| set_get_pair(&mut *p.get().unwrap(), k, rec),
                        )
                    }
                };
                ops[i].push(run.ops_per_sec);
                lat[i].extend_from_slice(&run.latencies_ns);
            }
        }
        let raw = median(&mut ops[0].clone());
        println!(
            "  {:<27} {:>10} {:>7} {:>8} {:>8} {:>8}",
            "", "ops/s", "x raw", "p50 µs", "p99 µs", "p99.9 µs"
        );
        for i in 0..LABELS.len() {
            let o = median(&mut ops[i]);
            lat[i].sort_unstable();
            println!(
                "  {:<27} {o:>10.0} {:>6.2}x {:>8.1} {:>8.1} {:>8.1}",
                LABELS[i],
                o / raw,
                percentile_us(&lat[i], 0.50),
                percentile_us(&lat[i], 0.99),
                percentile_us(&lat[i], 0.999),
            );
        }
    }

    open_circuit();
}

/// `Client::get` while the breaker is open: a client pointed at a port
/// nobody listens on, `failure_threshold(1)` and a long open period, so
/// the first failed call opens the breaker and every later call is answered
/// from memory.
fn open_circuit() {
    let port = support::free_port();
    let client = Client::new(
        Config::builder(format!("redis://127.0.0.1:{port}"))
            .failure_threshold(1)
            .open_timeout(Duration::from_secs(3600))
            .max_retries(0)
            .connect_timeout(Duration::from_millis(200))
            .build()
            .unwrap(),
    )
    .unwrap();
    // Fails to connect, opens the breaker, and lands in memory.
    client.set("outage:key", VALUE).unwrap();
    assert_eq!(client.breaker_state(), Some(BreakerState::Open));
    assert_eq!(
        client.get::<_, String>("outage:key").unwrap().as_deref(),
        Some(VALUE)
    );
    assert_eq!(client.get::<_, String>("outage:missing").unwrap(), None);

    println!("Client::get served from memory, breaker open (1 thread):");
    let hit = ns_per_op(1_000_000, || {
        black_box(client.get::<_, String>(black_box("outage:key")).unwrap());
    });
    println!("  key written during the outage  {hit:>8.0} ns/op");
    let miss = ns_per_op(1_000_000, || {
        black_box(
            client
                .get::<_, String>(black_box("outage:missing"))
                .unwrap(),
        );
    });
    println!("  missing key                    {miss:>8.0} ns/op");
    let stats = client.stats();
    assert!(stats.fallback_active);
}

/// What the call-duration histogram adds to every call. A call reads the
/// clock at checkout and at checkin whether or not it is timed; the timer
/// shares those two reads (`stats::call_timer`), so the histogram adds two
/// thread-local accesses and the record (a bucket search, two relaxed
/// `fetch_add`s). Measured as the timed call minus the untimed one (both
/// with the pool's two clock reads), so the number is the histogram's
/// alone. On a shared machine a batch that was descheduled is
/// meaningless: each figure is the fastest of many short batches (the cost
/// when the thread runs), and the median batch is printed beside it.
#[cfg(feature = "test-support")]
fn histogram_cost() {
    use resilient_redis::test_support::DurationHistogramProbe;
    use resilient_redis::SystemClock;
    use std::sync::Arc;

    /// (fastest, median) ns per call of `f` over `BATCHES` batches.
    fn min_median(mut f: impl FnMut()) -> (f64, f64) {
        const BATCHES: usize = 400;
        const PER_BATCH: u32 = 20_000;
        let mut v: Vec<f64> = (0..BATCHES).map(|_| ns_per_op(PER_BATCH, &mut f)).collect();
        let fastest = v.iter().copied().fold(f64::INFINITY, f64::min);
        (fastest, median(&mut v))
    }

    let clock = SystemClock::shared();
    let probe = Arc::new(DurationHistogramProbe::default());
    println!("Call-duration histogram (fastest / median of 400 batches of 20,000 calls):");
    // Calls on loopback take 50–250 µs (the third bucket); the timed call
    // below takes nanoseconds (the first): the difference is the scan's.
    let record = min_median(|| probe.record(black_box(Duration::from_micros(180))));
    let record_first = min_median(|| probe.record(black_box(Duration::from_nanos(20))));
    let untimed = min_median(|| DurationHistogramProbe::untimed_call(&clock));
    let timed = min_median(|| probe.timed_call(&clock));
    for (label, (fastest, med)) in [
        ("record only (180 us), 1 thread", record),
        ("record only (20 ns), 1 thread", record_first),
        ("call's own 2 clock reads, untimed", untimed),
        ("the same call, timed + recorded", timed),
    ] {
        println!("  {label:<36} {fastest:>6.1} ns  (median {med:.1})");
    }
    println!(
        "  {:<36} {:>6.1} ns  (median {:.1})",
        "=> histogram cost, 1 thread",
        timed.0 - untimed.0,
        timed.1 - untimed.1
    );
    let two: Vec<_> = (0..2)
        .map(|_| {
            let (probe, clock) = (probe.clone(), clock.clone());
            std::thread::spawn(move || {
                let untimed = min_median(|| DurationHistogramProbe::untimed_call(&clock));
                let timed = min_median(|| probe.timed_call(&clock));
                (timed.0 - untimed.0, timed.1 - untimed.1)
            })
        })
        .collect();
    let per_thread: Vec<(f64, f64)> = two.into_iter().map(|t| t.join().unwrap()).collect();
    println!(
        "  {:<36} {:>6.1} ns  (per thread, one series shared; {per_thread:.1?})",
        "=> histogram cost, 2 threads",
        per_thread.iter().map(|t| t.0).fold(f64::MIN, f64::max)
    );
    assert!(probe.count() > 0);
}

#[cfg(not(feature = "test-support"))]
fn histogram_cost() {
    println!("(the histogram cost needs --features test-support)");
}

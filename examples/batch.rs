//! A batch job: writes N items and reads each one back, in chunks, from
//! several threads, with a progress line and a final summary. Kill Redis in
//! the middle of a run: the job keeps going.
//!
//! ```text
//! redis-server --port 6379 --appendonly yes &
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example batch -- 200000
//! # meanwhile, in another shell: redis-cli shutdown; sleep 5; redis-server --port 6379 --appendonly yes &
//! ```
//!
//! Usage: `batch [N]` (default 100,000 items). `BATCH_THREADS` (4),
//! `BATCH_CHUNK` (500 items) and `BATCH_MAX_RATE` (items per second, 0 =
//! as fast as it goes, the default) tune it; the client is configured from the
//! environment (`REDIS_URL`, ...). Exit code 0 when every item was written
//! and read back, 1 when an item read back wrong or the job gave up
//! (nothing worked for `BATCH_GIVE_UP_SECS`, 300), 2 on a usage or
//! configuration error.
//!
//! Each chunk is one `MSET` and one `MGET` (a round trip each, like a
//! pipeline). While Redis is unavailable the client serves both from its
//! in-memory store, and the job runs on. The client is built with
//! [`Reconcile::Replay`]: what was written to memory during the outage is
//! written to Redis once it is back (the default, `Invalidate`, deletes it
//! there instead, right for a cache, wrong for a job whose output is the
//! data). When the memory's journal is full (`CACHE_FALLBACK_MAX_ENTRIES`)
//! a chunk is refused; the job waits and sends it again. Before it exits
//! it waits until the journal is empty, so everything is in Redis.
//!
//! The progress line is written by hand (a dozen lines: rate, ETA, what
//! the client is doing) rather than with `indicatif`: one line redrawn with
//! `\r` on a terminal, one line a second otherwise (logs, CI).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use resilient_redis::{Client, Config, Event, EventListener, Reconcile};

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error")).init();
    let settings = match Settings::from_args_and_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "{e}\nusage: batch [N]   (BATCH_THREADS, BATCH_CHUNK, BATCH_MAX_RATE, BATCH_GIVE_UP_SECS, REDIS_URL, ...)"
            );
            std::process::exit(2);
        }
    };
    let outage = Arc::new(OutageClock::default());
    let client = match Config::from_env().and_then(|config| {
        Client::builder(config)
            .reconcile(Reconcile::Replay)
            .listener(outage.clone())
            .build()
    }) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("configuration error: {e}");
            std::process::exit(2);
        }
    };
    std::process::exit(run(&client, &settings, &outage));
}

struct Settings {
    items: usize,
    threads: usize,
    chunk: usize,
    max_rate: usize,
    give_up: Duration,
}

impl Settings {
    fn from_args_and_env() -> Result<Settings, String> {
        let mut args = std::env::args().skip(1);
        let items = match args.next() {
            None => 100_000,
            Some(n) => number("N", &n)?,
        };
        if let Some(extra) = args.next() {
            return Err(format!("unexpected argument {extra:?}"));
        }
        let env = |name: &str, default: usize| match std::env::var(name) {
            Ok(v) => number(name, &v),
            Err(_) => Ok(default),
        };
        Ok(Settings {
            items,
            threads: env("BATCH_THREADS", 4)?.max(1),
            chunk: env("BATCH_CHUNK", 500)?.max(1),
            max_rate: env("BATCH_MAX_RATE", 0)?,
            give_up: Duration::from_secs(env("BATCH_GIVE_UP_SECS", 300)? as u64),
        })
    }
}

fn number(name: &str, v: &str) -> Result<usize, String> {
    v.trim()
        .replace('_', "")
        .parse()
        .map_err(|_| format!("{name}: expected a whole number, got {v:?}"))
}

/// Time spent with the client serving from memory, from its events.
#[derive(Default)]
struct OutageClock {
    since: Mutex<Option<Instant>>,
    total: Mutex<Duration>,
}

impl OutageClock {
    fn total(&self) -> Duration {
        let ongoing = self
            .since
            .lock()
            .map(|s| s.map_or(Duration::ZERO, |s| s.elapsed()))
            .unwrap_or_default();
        self.total.lock().map(|t| *t).unwrap_or_default() + ongoing
    }
}

impl EventListener for OutageClock {
    fn on_event(&self, event: &Event) {
        match event {
            Event::FallbackEngaged { .. } => {
                if let Ok(mut since) = self.since.lock() {
                    since.get_or_insert_with(Instant::now);
                }
            }
            Event::FallbackReleased { .. } => {
                let started = self.since.lock().ok().and_then(|mut s| s.take());
                if let (Some(started), Ok(mut total)) = (started, self.total.lock()) {
                    *total += started.elapsed();
                }
            }
            _ => {}
        }
    }
}

/// Shared progress of the workers.
#[derive(Default)]
struct Progress {
    next: AtomicUsize,
    done: AtomicU64,
    wrong: AtomicU64,
    chunks_resent: AtomicU64,
    gave_up: AtomicBool,
}

fn run(client: &Client, s: &Settings, outage: &OutageClock) -> i32 {
    let progress = Progress::default();
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..s.threads {
            scope.spawn(|| worker(client, s, &progress, start));
        }
        // The progress line, until the workers are done.
        scope.spawn(|| report(client, s, &progress, outage, start));
    });
    let elapsed = start.elapsed();

    // Wait for the writes served from memory to reach Redis.
    let drain_deadline = Instant::now() + s.give_up;
    while client.stats().journal_len > 0 && Instant::now() < drain_deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = client.stats();
    let done = progress.done.load(Ordering::Relaxed);
    let wrong = progress.wrong.load(Ordering::Relaxed);
    let secs = elapsed.as_secs_f64().max(1e-9);
    println!("items:               {done} of {}", s.items);
    println!("wrong on read-back:  {wrong}");
    println!("elapsed:             {secs:.2} s");
    println!(
        "ops/s:               {:.0} (item writes + item reads)",
        (2 * done) as f64 / secs
    );
    println!("items/s:             {:.0}", done as f64 / secs);
    println!(
        "retries:             {} by the client, {} chunks sent again by the job",
        stats.retries,
        progress.chunks_resent.load(Ordering::Relaxed)
    );
    println!(
        "served from memory:  {} calls ({} writes, {} reads)",
        stats.fallback_writes + stats.fallback_reads,
        stats.fallback_writes,
        stats.fallback_reads
    );
    println!("time in outage:      {:.2} s", outage.total().as_secs_f64());
    println!(
        "left in journal:     {} keys (not yet written to Redis)",
        stats.journal_len
    );
    if progress.gave_up.load(Ordering::Relaxed) {
        eprintln!("gave up: nothing worked for {:?}", s.give_up);
        return 1;
    }
    if wrong > 0 || done != s.items as u64 || stats.journal_len > 0 {
        return 1;
    }
    0
}

fn worker(client: &Client, s: &Settings, progress: &Progress, start: Instant) {
    loop {
        let first = progress.next.fetch_add(s.chunk, Ordering::Relaxed);
        if first >= s.items || progress.gave_up.load(Ordering::Relaxed) {
            return;
        }
        if s.max_rate > 0 {
            // Item `first` is due `first / rate` seconds after the start.
            let due = start + Duration::from_secs_f64(first as f64 / s.max_rate as f64);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let last = (first + s.chunk).min(s.items);
        let pairs: Vec<(String, String)> = (first..last)
            .map(|i| (format!("batch:{i}"), format!("value-{i}")))
            .collect();
        // A failed chunk is sent again (SETs and GETs are safe to repeat)
        // until it works or nothing has worked for `give_up`.
        let mut wait = Duration::from_millis(50);
        let mut failing_since = None;
        loop {
            match write_and_verify(client, &pairs) {
                Ok(wrong) => {
                    progress.wrong.fetch_add(wrong, Ordering::Relaxed);
                    progress
                        .done
                        .fetch_add(pairs.len() as u64, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > s.give_up {
                        log::error!("chunk at {first} failed for {:?}: {e}", s.give_up);
                        progress.gave_up.store(true, Ordering::Relaxed);
                        return;
                    }
                    log::debug!("chunk at {first} failed, sent again in {wait:?}: {e}");
                    progress.chunks_resent.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// One `MSET` of the chunk, one `MGET` back; returns how many values read
/// back wrong. A value read back *missing* is not wrong: Redis went away
/// between the two, and the memory that answered the `MGET` never saw the
/// `MSET` that Redis took. The chunk is sent again.
fn write_and_verify(
    client: &Client,
    pairs: &[(String, String)],
) -> Result<u64, Box<dyn std::error::Error>> {
    client.mset(pairs)?;
    let keys: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    let values: Vec<Option<String>> = client.mget(&keys)?;
    if values.iter().any(Option::is_none) {
        return Err("a value read back missing (Redis went away in between)".into());
    }
    Ok(pairs
        .iter()
        .zip(&values)
        .filter(|((_, want), got)| got.as_deref() != Some(want.as_str()))
        .count() as u64)
}

fn report(client: &Client, s: &Settings, p: &Progress, outage: &OutageClock, start: Instant) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    };
    let total = s.items as u64;
    let mut last = Instant::now();
    loop {
        let done = p.done.load(Ordering::Relaxed);
        let finished = done >= total || p.gave_up.load(Ordering::Relaxed);
        if finished || last.elapsed() >= every {
            last = Instant::now();
            let secs = start.elapsed().as_secs_f64().max(1e-9);
            let rate = done as f64 / secs;
            let eta = if rate > 0.0 {
                format!("{:.0}s", (total - done.min(total)) as f64 / rate)
            } else {
                "?".to_string()
            };
            let stats = client.stats();
            let width = 30usize;
            let filled = (done.min(total) as usize * width)
                .checked_div(s.items)
                .unwrap_or(width);
            let state = if stats.fallback_active {
                format!(
                    " | REDIS DOWN {:.0}s, from memory {}",
                    outage.total().as_secs_f64(),
                    stats.fallback_reads + stats.fallback_writes
                )
            } else {
                String::new()
            };
            let line = format!(
                "[{}{}] {done}/{total} {:.0}% {rate:.0} items/s ETA {eta}{state}",
                "#".repeat(filled),
                ".".repeat(width - filled),
                done as f64 * 100.0 / total.max(1) as f64,
            );
            let mut err = std::io::stderr().lock();
            let _ = if tty {
                write!(err, "\r{line:<100}")
            } else {
                writeln!(err, "{line}")
            };
            let _ = err.flush();
        }
        if finished {
            if tty {
                eprintln!();
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

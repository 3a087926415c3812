//! The quick start: a short cache workload from several threads.
//!
//! ```text
//! cargo run --example quickstart                                        # no Redis: in-memory fallback
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --example quickstart      # a real Redis
//! ```
//!
//! It reads its configuration from the environment (`REDIS_URL`,
//! `CACHE_MAX_CONNECTIONS`, ...), runs a few thousand `set`/`get` calls from
//! four threads, and prints what happened: where the values were served
//! from, the breaker state, health and the stats table.
//!
//! `LOG_FORMAT=json` prints each log line as one JSON object with the
//! crate's structured fields (`operation`, `error_type`, `error_message`,
//! `error_count`, `circuit_breaker_state`, `endpoint`, ...), through
//! `env_logger`'s `kv` feature and a small formatter below: no other
//! dependency. Without it, `env_logger` prints the fields after the
//! message as `key=value`.

use std::io::Write as _;
use std::time::{Duration, Instant};

use resilient_redis::{Client, Config};

const THREADS: usize = 4;
const OPS_PER_THREAD: usize = 1_000;

/// A log line as one JSON object: level, target, message and every
/// key-value field.
fn json_line(
    buf: &mut env_logger::fmt::Formatter,
    record: &log::Record<'_>,
) -> std::io::Result<()> {
    struct Fields(String);
    impl<'kvs> log::kv::VisitSource<'kvs> for Fields {
        fn visit_pair(
            &mut self,
            key: log::kv::Key<'kvs>,
            value: log::kv::Value<'kvs>,
        ) -> Result<(), log::kv::Error> {
            // Numbers stay numbers; everything else is a string.
            let v = match value.to_u64() {
                Some(n) => n.to_string(),
                None => json_string(&value.to_string()),
            };
            self.0 += &format!(",{}:{v}", json_string(key.as_str()));
            Ok(())
        }
    }
    let mut fields = Fields(String::new());
    let _ = record.key_values().visit(&mut fields);
    writeln!(
        buf,
        "{{\"level\":\"{}\",\"target\":{},\"message\":{}{}}}",
        record.level(),
        json_string(record.target()),
        json_string(&record.args().to_string()),
        fields.0
    )
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn main() {
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"));
    if std::env::var("LOG_FORMAT").as_deref() == Ok("json") {
        logger.format(json_line);
    }
    logger.init();

    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("configuration error: {e}");
            std::process::exit(2);
        }
    };
    match config.url() {
        Some(url) => println!("Redis: {url}"),
        None => println!("REDIS_URL is not set: running on the in-memory store only."),
    }

    let client = match Client::new(config) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("cannot create the client: {e}");
            std::process::exit(2);
        }
    };
    if client.config().url().is_some() {
        match client.ping() {
            Ok(rtt) => println!("PING answered in {rtt:?}"),
            Err(e) => println!("Redis does not answer ({e}); the cache will run from memory."),
        }
    }

    let start = Instant::now();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            // A clone is cheap: it shares pools, breakers and the memory store.
            let client = client.clone();
            std::thread::spawn(move || -> Result<usize, resilient_redis::Error> {
                let mut hits = 0;
                for i in 0..OPS_PER_THREAD {
                    let key = format!("quickstart:{t}:{}", i % 100);
                    client.set_ex(&key, i as u64, Duration::from_secs(60))?;
                    let value: Option<u64> = client.get(&key)?;
                    hits += usize::from(value.is_some());
                }
                Ok(hits)
            })
        })
        .collect();
    let mut hits = 0;
    for worker in workers {
        match worker.join() {
            Ok(Ok(n)) => hits += n,
            Ok(Err(e)) => {
                eprintln!("a call failed: {e}");
                std::process::exit(1);
            }
            Err(_) => {
                eprintln!("a worker thread panicked");
                std::process::exit(1);
            }
        }
    }
    let elapsed = start.elapsed();
    let ops = THREADS * OPS_PER_THREAD * 2;
    println!(
        "\n{ops} operations from {THREADS} threads in {:.1} ms ({:.0} ops/s), {hits} of {} reads hit",
        elapsed.as_secs_f64() * 1e3,
        ops as f64 / elapsed.as_secs_f64(),
        ops / 2
    );

    let breaker = client
        .breaker_state()
        .map_or("none (memory only)".to_string(), |s| s.to_string());
    println!("breaker: {breaker}");
    println!("health:  {}", client.health());
    println!("\n{}", client.stats());
}

//! A small command-line tool over the client.
//!
//! ```text
//! cargo run --example cli -- --url redis://127.0.0.1:6379 set greeting hello --ttl 60
//! cargo run --example cli -- get greeting            # REDIS_URL from the environment
//! cargo run --example cli -- incr visits 5
//! cargo run --example cli -- health
//! cargo run --example cli -- stats --prometheus
//! cargo run --example cli -- watch                   # then stop redis-server and watch the breaker open
//! ```
//!
//! Commands:
//!
//! | command | prints |
//! |---|---|
//! | `get KEY` | the value, or `(nil)` when the key is missing |
//! | `set KEY VALUE [--ttl SECONDS]` | `OK` |
//! | `del KEY` | `1` when the key existed, else `0` |
//! | `incr KEY [BY]` | the new value |
//! | `ping` | `PONG` and the round-trip time |
//! | `health` | the health line; exit code 1 when unavailable |
//! | `stats [--prometheus]` | this process' counters (after a `PING`) |
//! | `watch [--interval MS] [--count N]` | health and counters, redrawn every second until Ctrl-C |
//!
//! Configuration: the same environment variables as the library
//! (`REDIS_URL`, `CACHE_SOCKET_TIMEOUT_MS`, ...), `--url URL` (before the
//! command) taking precedence over `REDIS_URL`. One difference: the
//! in-memory fallback is off unless `CACHE_FALLBACK_MODE` says otherwise,
//! since a value a one-shot process wrote to its own memory dies with it.
//!
//! Exit codes: 0 when it worked, 1 on a Redis error (down, timeout, an
//! error reply such as `WRONGTYPE`), 2 on a usage or configuration error.
//! Messages go to stderr.
//!
//! The arguments are parsed by hand (thirty lines for eight commands and
//! four flags); a parser crate would cost more to build than it saves here.

use std::io::Write;
use std::time::Duration;

use resilient_redis::{Client, Config, Error, HealthStatus};

const USAGE: &str = "usage: cli [--url URL] COMMAND
commands:
  get KEY
  set KEY VALUE [--ttl SECONDS]
  del KEY
  incr KEY [BY]
  ping
  health
  stats [--prometheus]
  watch [--interval MS] [--count N]";

/// What went wrong, and so the exit code.
enum Failure {
    /// Exit code 2.
    Usage(String),
    /// Exit code 1.
    Redis(Error),
    /// Exit code 1, nothing more to say (e.g. `health` found it unavailable).
    Quiet,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e.kind() {
            resilient_redis::ErrorKind::Config => Failure::Usage(e.to_string()),
            _ => Failure::Redis(e),
        }
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure::Usage(message.into())
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match run(&args) {
        Ok(()) => 0,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}\n{USAGE}");
            2
        }
        Err(Failure::Redis(e)) => {
            eprintln!("error: {e}");
            1
        }
        Err(Failure::Quiet) => 1,
    };
    std::process::exit(code);
}

fn run(args: &[String]) -> Result<(), Failure> {
    let (url, args) = match args {
        [flag, url, rest @ ..] if flag == "--url" => (Some(url.as_str()), rest),
        [flag] if flag == "--url" => return Err(usage("--url needs a value")),
        rest => (None, rest),
    };
    let Some((command, args)) = args.split_first() else {
        return Err(usage("no command"));
    };
    let client = client(url)?;
    let mut out = std::io::stdout().lock();
    let print = |out: &mut std::io::StdoutLock, text: &[u8]| -> Result<(), Failure> {
        out.write_all(text)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| usage(format!("cannot write to stdout: {e}")))
    };
    match (command.as_str(), args) {
        ("get", [key]) => match client.get::<_, Vec<u8>>(key)? {
            Some(value) => print(&mut out, &value),
            None => print(&mut out, b"(nil)"),
        },
        ("set", [key, value, rest @ ..]) => {
            match flags(rest, &["--ttl"])?.as_slice() {
                [] => client.set(key, value.as_str())?,
                [(_, ttl)] => client.set_ex(
                    key,
                    value.as_str(),
                    Duration::from_secs(positive("--ttl", ttl)?),
                )?,
                _ => return Err(usage("--ttl given twice")),
            }
            print(&mut out, b"OK")
        }
        ("del", [key]) => {
            let existed = client.delete(key)?;
            print(&mut out, if existed { b"1" } else { b"0" })
        }
        ("incr", [key, rest @ ..]) => {
            let by = match rest {
                [] => 1,
                [by] => by
                    .parse::<i64>()
                    .map_err(|_| usage(format!("BY: expected an integer, got {by:?}")))?,
                _ => return Err(usage("incr KEY [BY]")),
            };
            print(&mut out, client.incr(key, by)?.to_string().as_bytes())
        }
        ("ping", []) => {
            let rtt = client.ping()?;
            print(&mut out, format!("PONG in {rtt:?}").as_bytes())
        }
        ("health", []) => {
            // One PING, so that the report says what Redis does now.
            let _ = client.ping();
            let health = client.health();
            print(&mut out, health.to_string().as_bytes())?;
            if health.status == HealthStatus::Unavailable {
                return Err(Failure::Quiet);
            }
            Ok(())
        }
        ("stats", rest) => {
            let prometheus = match rest {
                [] => false,
                [flag] if flag == "--prometheus" => true,
                _ => return Err(usage("stats [--prometheus]")),
            };
            let _ = client.ping();
            let stats = client.stats();
            let text = if prometheus {
                stats.to_prometheus()
            } else {
                stats.to_string()
            };
            print(&mut out, text.trim_end().as_bytes())
        }
        ("watch", rest) => {
            let mut interval = Duration::from_secs(1);
            let mut count = None;
            for (flag, value) in flags(rest, &["--interval", "--count"])? {
                match flag {
                    "--interval" => interval = Duration::from_millis(positive(flag, value)?),
                    _ => count = Some(positive(flag, value)?),
                }
            }
            drop(out);
            watch(&client, interval, count);
            Ok(())
        }
        ("get" | "set" | "del" | "incr" | "ping" | "health", _) => {
            Err(usage(format!("wrong arguments for {command}")))
        }
        _ => Err(usage(format!("unknown command {command:?}"))),
    }
}

/// The client from the environment, `--url` overriding `REDIS_URL`, with
/// the in-memory fallback off unless configured.
fn client(url: Option<&str>) -> Result<Client, Failure> {
    let config = Config::from_env_with(|name| match name {
        "REDIS_URL" if url.is_some() => url.map(str::to_string),
        "REDIS__URL" if url.is_some() => None,
        "CACHE_FALLBACK_MODE" => {
            Some(std::env::var(name).unwrap_or_else(|_| "disabled".to_string()))
        }
        _ => std::env::var(name).ok(),
    })?;
    if config.is_memory_only() {
        return Err(usage("no Redis: set REDIS_URL or pass --url URL"));
    }
    Ok(Client::new(config)?)
}

/// `--flag value` pairs, each flag one of `known`.
fn flags<'a>(args: &'a [String], known: &[&str]) -> Result<Vec<(&'a str, &'a str)>, Failure> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if !known.contains(&flag.as_str()) {
            return Err(usage(format!("unexpected argument {flag:?}")));
        }
        let value = it
            .next()
            .ok_or_else(|| usage(format!("{flag} needs a value")))?;
        out.push((flag.as_str(), value.as_str()));
    }
    Ok(out)
}

fn positive(flag: &str, value: &str) -> Result<u64, Failure> {
    match value.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(usage(format!(
            "{flag}: expected a whole number above 0, got {value:?}"
        ))),
    }
}

/// Redraws health and counters every `interval` (a `PING` each time, so
/// the client notices an outage and a recovery), `count` times or until
/// Ctrl-C.
fn watch(client: &Client, interval: Duration, count: Option<u64>) {
    let mut n = 0u64;
    loop {
        let ping = match client.ping() {
            Ok(rtt) => format!("PONG in {rtt:?}"),
            Err(e) => format!("no answer: {e}"),
        };
        let stats = client.stats();
        let health = client.health();
        let mut screen = format!("\x1b[2J\x1b[H{}\nping: {ping}\n\n", health.status);
        screen.push_str(&format!("{health}\n\n"));
        screen.push_str(&format!(
            "requests {}  errors {}  retries {}  served from memory {}\n",
            stats.requests,
            stats.errors(),
            stats.retries,
            stats.fallback_reads + stats.fallback_writes
        ));
        for e in &stats.endpoints {
            screen.push_str(&format!(
                "{:<9} circuit {:<9} opened {}x  pool {} idle / {} in use  {} attempts\n",
                e.role,
                e.circuit.as_str(),
                e.breaker_opens,
                e.pool_idle,
                e.pool_in_use,
                e.requests
            ));
        }
        let mut out = std::io::stdout().lock();
        if out
            .write_all(screen.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return; // stdout closed (e.g. `| head`)
        }
        drop(out);
        n += 1;
        if count.is_some_and(|c| n >= c) {
            return;
        }
        std::thread::sleep(interval);
    }
}

//! Failover from a rate-limited hosted Redis to a local one, and back.
//!
//! The primary is a tiny scripted RESP server built into this example: after
//! a number of commands it answers like Upstash on a free plan
//! (`ERR max requests limit exceeded ...`). The secondary is a real
//! `redis-server`, which this example starts on a free port (and stops at
//! the end). Run with `cargo run --example failover`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use resilient_redis::{Client, Config, Event, EventListener};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(mut secondary) = start_redis_server()? else {
        println!("redis-server was not found on PATH; install it to run this example:");
        println!("  Debian/Ubuntu: sudo apt-get install redis-server   macOS: brew install redis");
        return Ok(());
    };
    let fake = FakePrimary::start(20)?;
    let start = Instant::now();
    let config = Config::builder(format!("redis://127.0.0.1:{}", fake.port))
        .fallback_url(format!("redis://127.0.0.1:{}", secondary.port))
        .failover_cooldown(Duration::from_secs(2))
        .health_check_interval(Duration::from_millis(500))
        .open_timeout(Duration::from_secs(1)) // grace: max(interval, open timeout)
        .success_threshold(2)
        .build()?;
    let client = Client::builder(config)
        .listener(Arc::new(Timeline(start)))
        .build()?;
    println!(
        "{:>6}  primary (fake, quota of 20 commands) and secondary (redis-server :{})",
        "0 ms", secondary.port
    );

    for i in 0..60 {
        client.set(format!("item:{i}"), i)?;
        let _: Option<i64> = client.get(format!("item:{i}"))?;
    }
    println!(
        "{:>6}  120 operations done, 0 errors; {}",
        ms(start),
        client.health()
    );

    println!("{:>6}  the primary's quota resets", ms(start));
    fake.limited.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.stats().failover_active && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    client.set("after-restore", "on the primary")?;
    println!("{:>6}  {}", ms(start), client.health());
    println!("\n{}", client.stats());
    println!(
        "primary received {} PINGs",
        fake.pings.load(Ordering::SeqCst)
    );
    secondary.stop();
    Ok(())
}

fn ms(start: Instant) -> String {
    format!("{} ms", start.elapsed().as_millis())
}

/// Prints failover events as they happen.
struct Timeline(Instant);

impl EventListener for Timeline {
    fn on_event(&self, event: &Event) {
        match event {
            Event::FailoverActivated {
                reason,
                rate_limit,
                cooldown,
                ..
            } => println!(
                "{:>6}  FAILOVER to the secondary ({}; {:?}); primary probed again in {cooldown:?}",
                ms(self.0),
                reason.as_str(),
                rate_limit
            ),
            Event::Reconciled { endpoint, keys, .. } => {
                println!(
                    "{:>6}  invalidated {keys} keys on the {endpoint}",
                    ms(self.0)
                )
            }
            Event::FailoverRestored { duration } => println!(
                "{:>6}  RESTORED the primary after {duration:?} on the secondary",
                ms(self.0)
            ),
            _ => {}
        }
    }
}

/// A real `redis-server` on a free port, without persistence.
struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis_server() -> std::io::Result<Option<RedisServer>> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn();
    let mut server = match child {
        Ok(child) => RedisServer { child, port },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            server.stop();
            return Err(std::io::Error::other("redis-server did not start"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(server))
}

/// The scripted primary: GET/SET/DEL on a map; after `quota` data commands
/// every command (PING included) gets Upstash's quota error while `limited`.
struct FakePrimary {
    port: u16,
    limited: Arc<AtomicBool>,
    pings: Arc<AtomicUsize>,
}

impl FakePrimary {
    fn start(quota: usize) -> std::io::Result<FakePrimary> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let limited = Arc::new(AtomicBool::new(true));
        let pings = Arc::new(AtomicUsize::new(0));
        let used = Arc::new(AtomicUsize::new(0));
        let data = Arc::new(Mutex::new(HashMap::<String, String>::new()));
        let (l, p) = (limited.clone(), pings.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (l, p, u, d) = (l.clone(), p.clone(), used.clone(), data.clone());
                std::thread::spawn(move || serve(stream, quota, &l, &p, &u, &d));
            }
        });
        Ok(FakePrimary {
            port,
            limited,
            pings,
        })
    }
}

fn serve(
    stream: TcpStream,
    quota: usize,
    limited: &AtomicBool,
    pings: &AtomicUsize,
    used: &AtomicUsize,
    data: &Mutex<HashMap<String, String>>,
) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut lines = BufReader::new(stream).lines();
    // Requests are RESP arrays of bulk strings: `*N`, then `$len` + arg pairs.
    while let Some(Ok(header)) = lines.next() {
        let n: usize = header.trim_start_matches('*').parse().unwrap_or(0);
        let args: Vec<String> = (0..n)
            .filter_map(|_| lines.nth(1).and_then(Result::ok))
            .collect();
        let cmd = args
            .first()
            .map(|c| c.to_ascii_uppercase())
            .unwrap_or_default();
        let setup = cmd == "CLIENT" || cmd == "SELECT";
        if cmd == "PING" {
            pings.fetch_add(1, Ordering::SeqCst);
        } else if !setup {
            used.fetch_add(1, Ordering::SeqCst);
        }
        let mut map = data.lock().unwrap_or_else(|e| e.into_inner());
        let reply = if limited.load(Ordering::SeqCst) && used.load(Ordering::SeqCst) > quota {
            format!("-ERR max requests limit exceeded. Limit: {quota}, Usage: {quota}. See https://upstash.com/docs/redis/troubleshooting/max_requests_limit for details\r\n")
        } else {
            match (cmd.as_str(), &args[1..]) {
                ("PING", _) => "+PONG\r\n".into(),
                ("SET", [k, v, ..]) => {
                    map.insert(k.clone(), v.clone());
                    "+OK\r\n".into()
                }
                ("GET", [k]) => match map.get(k) {
                    Some(v) => format!("${}\r\n{v}\r\n", v.len()),
                    None => "$-1\r\n".into(),
                },
                ("DEL", keys) => {
                    let n = keys.iter().filter(|k| map.remove(*k).is_some()).count();
                    format!(":{n}\r\n")
                }
                _ if setup => "+OK\r\n".into(),
                _ => format!("-ERR unknown command '{cmd}'\r\n"),
            }
        };
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

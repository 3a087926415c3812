//! A tiny scripted RESP2 server for replies a real Redis cannot give (a
//! hosted provider's rate-limit error, a malformed reply).

use std::collections::HashMap;
use std::io::{ErrorKind as IoKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::loopback;

/// Upstash's reply once the request quota is used up.
pub const UPSTASH_RATE_LIMIT: &str = "ERR max requests limit exceeded. Limit: 10000, \
    Usage: 10000. See https://upstash.com/docs/redis/troubleshooting/max_requests_limit for details";

/// Commands redis-rs sends while connecting; they never count as data
/// commands and are never overridden.
const SETUP: &[&str] = &["HELLO", "AUTH", "SELECT", "CLIENT"];

/// A scripted RESP2 server on a free loopback port: `PING`, `GET`, `SET`,
/// `DEL`, `INCR`, `INCRBY`, `EXISTS` on an in-memory map, `+OK` to connection setup,
/// plus scripted faults. Threads exit when it is dropped.
pub struct FakeRedis {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    shutdown: AtomicBool,
}

#[derive(Default)]
struct State {
    data: HashMap<Vec<u8>, Vec<u8>>,
    /// After this many data commands, every command gets the quota error.
    rate_limit_after: Option<usize>,
    data_commands: usize,
    reply_override: Option<Vec<u8>>,
    /// Answers `CLUSTER SLOTS` with every slot on this port, and `CLUSTER
    /// SHARDS` as Redis 6 does (unknown subcommand).
    cluster_port: Option<u16>,
    /// Replies written in random pieces with random pauses (seeded).
    chop: Option<u64>,
    /// `GET` of a key with this prefix holds the replies for this long.
    slow: Option<(Vec<u8>, Duration)>,
    /// Connections served so far (seeds each one's chopping).
    connections: u64,
    /// Most commands read from one `read` on any connection.
    max_batch: usize,
    total: usize,
    by_name: HashMap<String, usize>,
    workers: Vec<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FakeRedis {
    /// Starts the fake server on a free loopback port.
    pub fn new() -> Self {
        let listener = TcpListener::bind(loopback(0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let for_thread = Arc::clone(&shared);
        let acceptor = thread::spawn(move || accept_loop(&listener, &for_thread));
        FakeRedis {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// After `n` more data commands (anything but connection setup and
    /// `PING`), every command, `PING` included, gets Upstash's
    /// "max requests limit exceeded" error. `0` limits right away.
    pub fn rate_limit_after(&self, n: usize) {
        let mut state = lock(&self.shared.state);
        state.rate_limit_after = Some(state.data_commands + n);
    }

    /// Stops answering with the rate-limit error.
    pub fn stop_rate_limiting(&self) {
        lock(&self.shared.state).rate_limit_after = None;
    }

    /// Answers every command except connection setup with these raw bytes
    /// (e.g. `b"-LOADING loading\r\n"` or a malformed reply); `None` restores
    /// normal answers.
    pub fn reply_override(&self, reply: Option<Vec<u8>>) {
        lock(&self.shared.state).reply_override = reply;
    }

    /// Acts as the only master of a Redis 6 cluster: `CLUSTER SLOTS` names
    /// itself for all 16384 slots, `CLUSTER SHARDS` is unknown.
    pub fn as_redis6_cluster(&self) {
        lock(&self.shared.state).cluster_port = Some(self.port);
    }

    /// Writes every reply from now on in random pieces (1 to 16 bytes),
    /// pausing up to 200 µs after some of them, from a generator seeded
    /// with `seed` (and the connection's number): replies split at random
    /// byte boundaries, arriving at random times. `None` writes them whole.
    pub fn chop_replies(&self, seed: Option<u64>) {
        lock(&self.shared.state).chop = seed;
    }

    /// A `GET` of a key starting with `prefix` holds its reply, and every
    /// reply after it on that connection, for `delay` (a slow command, as
    /// a real server's single thread would serve it).
    pub fn slow_gets(&self, prefix: &str, delay: Duration) {
        lock(&self.shared.state).slow = Some((prefix.as_bytes().to_vec(), delay));
    }

    /// The most commands that arrived in one read on one connection: above
    /// one, a client pipelined.
    pub fn max_batch(&self) -> usize {
        lock(&self.shared.state).max_batch
    }

    /// Commands received so far, setup included.
    pub fn commands_received(&self) -> usize {
        lock(&self.shared.state).total
    }

    /// Commands received with this name (case-insensitive), e.g. `"PING"`.
    pub fn count_of(&self, name: &str) -> usize {
        let state = lock(&self.shared.state);
        state
            .by_name
            .get(&name.to_ascii_uppercase())
            .copied()
            .unwrap_or(0)
    }
}

impl Default for FakeRedis {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for FakeRedis {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let workers = std::mem::take(&mut lock(&self.shared.state).workers);
        for worker in workers {
            let _ = worker.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.shutdown.load(SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let for_thread = Arc::clone(shared);
                let worker = thread::spawn(move || serve(stream, &for_thread));
                let mut state = lock(&shared.state);
                state.workers.retain(|w| !w.is_finished());
                state.workers.push(worker);
            }
            Err(_) => thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// xorshift64*: the chopping's generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Writes `out` whole, or in random pieces with random pauses.
fn write_out(stream: &mut TcpStream, out: &[u8], rng: &mut Option<Rng>) -> std::io::Result<()> {
    let Some(rng) = rng else {
        return stream.write_all(out);
    };
    let mut rest = out;
    while !rest.is_empty() {
        let n = (1 + (rng.next() % 16) as usize).min(rest.len());
        stream.write_all(&rest[..n])?;
        rest = &rest[n..];
        if rng.next() % 4 == 0 {
            thread::sleep(Duration::from_micros(rng.next() % 200));
        }
    }
    Ok(())
}

fn serve(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(10)));
    let number = {
        let mut state = lock(&shared.state);
        state.connections += 1;
        state.connections
    };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut rng: Option<Rng> = None;
    while !shared.shutdown.load(SeqCst) {
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), IoKind::WouldBlock | IoKind::TimedOut) => continue,
            Err(_) => return,
        }
        let (chop, slow) = {
            let state = lock(&shared.state);
            (state.chop, state.slow.clone())
        };
        match (chop, &rng) {
            (None, _) => rng = None,
            (Some(seed), None) => {
                rng = Some(Rng((seed ^ number.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1));
            }
            (Some(_), Some(_)) => {}
        }
        let mut out = Vec::new();
        let mut batch = 0;
        loop {
            match parse_command(&buf) {
                Parsed::Complete(args, used) => {
                    buf.drain(..used);
                    if !args.is_empty() {
                        batch += 1;
                        let is_slow = slow.as_ref().is_some_and(|(prefix, _)| {
                            args[0].eq_ignore_ascii_case(b"GET")
                                && args.get(1).is_some_and(|k| k.starts_with(prefix))
                        });
                        if let (true, Some((_, delay))) = (is_slow, &slow) {
                            if write_out(&mut stream, &out, &mut rng).is_err() {
                                return;
                            }
                            out.clear();
                            thread::sleep(*delay);
                        }
                        out.extend(answer(&args, shared));
                    }
                }
                Parsed::Incomplete => break,
                Parsed::Invalid => {
                    let _ = stream.write_all(b"-ERR Protocol error\r\n");
                    return;
                }
            }
        }
        {
            let mut state = lock(&shared.state);
            state.max_batch = state.max_batch.max(batch);
        }
        if write_out(&mut stream, &out, &mut rng).is_err() {
            return;
        }
    }
}

fn answer(args: &[Vec<u8>], shared: &Shared) -> Vec<u8> {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    let mut state = lock(&shared.state);
    state.total += 1;
    *state.by_name.entry(name.clone()).or_default() += 1;
    let setup = SETUP.contains(&name.as_str());
    if !setup && name != "PING" {
        state.data_commands += 1;
    }
    // The command that reaches the quota is the first one refused.
    if state
        .rate_limit_after
        .is_some_and(|n| state.data_commands > n)
    {
        return format!("-{UPSTASH_RATE_LIMIT}\r\n").into_bytes();
    }
    if let (Some(raw), false) = (&state.reply_override, setup) {
        return raw.clone();
    }
    let key = args.get(1).cloned().unwrap_or_default();
    match (name.as_str(), args.len()) {
        ("PING", _) => b"+PONG\r\n".to_vec(),
        ("HELLO", _) => b"-ERR unknown command 'HELLO'\r\n".to_vec(),
        (n, _) if SETUP.contains(&n) => b"+OK\r\n".to_vec(),
        ("GET", 2) => match state.data.get(&key) {
            Some(v) => bulk(v),
            None => b"$-1\r\n".to_vec(),
        },
        ("SET", 3..) => {
            state.data.insert(key, args[2].clone());
            b"+OK\r\n".to_vec()
        }
        ("DEL" | "EXISTS", 2..) => {
            let mut n = 0;
            for k in &args[1..] {
                let hit = if name == "DEL" {
                    state.data.remove(k).is_some()
                } else {
                    state.data.contains_key(k)
                };
                n += usize::from(hit);
            }
            format!(":{n}\r\n").into_bytes()
        }
        ("INCR", 2) | ("INCRBY", 3) => {
            let by = match args.get(2) {
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok()),
                None => Some(1),
            };
            let current = match state.data.get(&key) {
                None => Some(0),
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok()),
            };
            match current.zip(by).and_then(|(v, by)| v.checked_add(by)) {
                Some(next) => {
                    state.data.insert(key, next.to_string().into_bytes());
                    format!(":{next}\r\n").into_bytes()
                }
                None => b"-ERR value is not an integer or out of range\r\n".to_vec(),
            }
        }
        ("QUIT", _) => b"+OK\r\n".to_vec(),
        ("CLUSTER", _) if state.cluster_port.is_some() => {
            let sub = String::from_utf8_lossy(&key).to_ascii_uppercase();
            match (sub.as_str(), state.cluster_port) {
                ("SLOTS", Some(port)) => format!(
                    "*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:{port}\r\n$4\r\nfake\r\n"
                )
                .into_bytes(),
                _ => format!("-ERR unknown subcommand '{sub}'. Try CLUSTER HELP.\r\n").into_bytes(),
            }
        }
        _ => format!("-ERR unknown command '{name}'\r\n").into_bytes(),
    }
}

fn bulk(v: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", v.len()).into_bytes();
    out.extend_from_slice(v);
    out.extend_from_slice(b"\r\n");
    out
}

enum Parsed {
    Complete(Vec<Vec<u8>>, usize),
    Incomplete,
    Invalid,
}

/// Parses one RESP array of bulk strings, or one inline command.
fn parse_command(buf: &[u8]) -> Parsed {
    let Some(line_end) = find_crlf(buf, 0) else {
        return if buf.len() > 64 * 1024 {
            Parsed::Invalid
        } else {
            Parsed::Incomplete
        };
    };
    if buf.first() != Some(&b'*') {
        let args = buf[..line_end]
            .split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        return Parsed::Complete(args, line_end + 2);
    }
    let Some(count) = parse_len(&buf[1..line_end]) else {
        return Parsed::Invalid;
    };
    let mut pos = line_end + 2;
    let mut args = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let Some(end) = find_crlf(buf, pos) else {
            return Parsed::Incomplete;
        };
        if buf[pos] != b'$' {
            return Parsed::Invalid;
        }
        let Some(len) = parse_len(&buf[pos + 1..end]) else {
            return Parsed::Invalid;
        };
        let start = end + 2;
        if buf.len() < start + len + 2 {
            return Parsed::Incomplete;
        }
        args.push(buf[start..start + len].to_vec());
        pos = start + len + 2;
    }
    Parsed::Complete(args, pos)
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

fn parse_len(digits: &[u8]) -> Option<usize> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

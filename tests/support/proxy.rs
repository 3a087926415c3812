//! A TCP fault-injection proxy in front of a Redis server.
//!
//! Each accepted connection gets an upstream connection and two pump threads
//! (client→server, server→client). The pumps read with a short timeout so
//! that mode changes and the proxy's drop take effect promptly; the mode is
//! checked for every chunk, so a change applies to existing connections too.

use std::io::{ErrorKind as IoKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redis::io::tcp::socket2::SockRef;

use super::{free_port, loopback};

/// How often blocked pumps and the acceptor look at the mode and shutdown flag.
const POLL: Duration = Duration::from_millis(10);

/// What the proxy does to traffic. Set with [`FaultProxy::set_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything unchanged.
    PassThrough,
    /// Stop listening: new connections get "connection refused". Existing
    /// connections keep working. The same port is bound again when the mode
    /// changes back.
    Refuse,
    /// Close every connection, existing and new, with a TCP RST: the client
    /// sees "connection reset by peer".
    Reset,
    /// Accept and read, never forward and never answer (existing
    /// connections stop forwarding too): the client times out.
    Blackhole,
    /// Sleep this long before forwarding each chunk, in both directions.
    Latency(Duration),
    /// Forward each data request to the server, wait for the reply, drop it
    /// and close the client connection: the command ran, the client sees an
    /// error. Connection setup (`HELLO`, `AUTH`, `SELECT`, `CLIENT ...`) and
    /// `PING` pass through, so new connections still succeed.
    CutAfterRequest,
    /// Forward this many bytes of replies per connection (counted from the
    /// moment the mode was set), then close the connection.
    CloseAfterBytes(usize),
    /// A hosted Redis whose request quota is used up: every command,
    /// `PING` included (as Upstash does), is answered by the proxy with
    /// [`QUOTA_REPLY`] and **not** forwarded; connection setup (`HELLO`,
    /// `AUTH`, `SELECT`, `CLIENT ...`) still passes, so connecting works.
    /// Requests are parsed as RESP arrays, so a pipelined chunk gets one
    /// error per command and a command split across reads is answered once.
    /// Replies are written by the request pump once every command
    /// forwarded earlier on the connection has been answered, so a reply
    /// of a forwarded command is never overtaken (a client that pipelines,
    /// as automatic pipelining does, has several in flight).
    QuotaExceeded,
}

/// The error line [`Mode::QuotaExceeded`] answers with: Upstash's reply once
/// the request quota is used up, which the crate classifies as
/// `ErrorKind::RateLimited` (failover to the secondary, never retried here).
pub const QUOTA_REPLY: &[u8] = b"-ERR max requests limit exceeded. Limit: 10000, Usage: 10000\r\n";

/// A TCP proxy on a free loopback port forwarding to a target address, with
/// faults switchable at runtime. All its threads exit when it is dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    port: u16,
    mode: Mutex<(Mode, u64)>,
    generation: AtomicU64,
    listener: Mutex<Option<TcpListener>>,
    conns: Mutex<Vec<Weak<Conn>>>,
    pumps: Mutex<Vec<JoinHandle<()>>>,
    shutdown: AtomicBool,
    accepted: AtomicUsize,
    open: AtomicUsize,
    cut_next: AtomicBool,
    reset_next_request: AtomicBool,
    reset_next_connection: AtomicBool,
}

/// One proxied connection. The sockets close when the last pump lets go of
/// it; with SO_LINGER 0 that close sends an RST.
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    closed: AtomicBool,
    /// A request was forwarded that must not get its reply.
    cut: AtomicBool,
    /// Commands forwarded to the server, and replies read back from it
    /// (relayed or dropped): `QuotaExceeded` answers only once they match,
    /// so its replies never overtake a forwarded command's on a client
    /// that pipelines.
    forwarded: AtomicUsize,
    answered: AtomicUsize,
    // Declared last so it drops after the sockets closed: `open` then only
    // counts connections whose sockets are still open.
    _open: OpenGuard,
}

struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl FaultProxy {
    /// A pass-through proxy to `target` on a free loopback port.
    pub fn new(target: SocketAddr) -> Self {
        let listener = bind_free_port();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            target,
            port,
            mode: Mutex::new((Mode::PassThrough, 0)),
            generation: AtomicU64::new(0),
            listener: Mutex::new(Some(listener)),
            conns: Mutex::new(Vec::new()),
            pumps: Mutex::new(Vec::new()),
            shutdown: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            cut_next: AtomicBool::new(false),
            reset_next_request: AtomicBool::new(false),
            reset_next_connection: AtomicBool::new(false),
        });
        let for_thread = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name(thread_name(port, "a"))
            .spawn(move || accept_loop(&for_thread))
            .unwrap();
        FaultProxy {
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        loopback(self.shared.port)
    }

    /// `redis://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.shared.port)
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        lock(&self.shared.mode).0
    }

    /// Switches the mode. When this returns: for [`Mode::Refuse`] the port
    /// refuses connections; for [`Mode::Reset`] every existing connection
    /// has been reset; switching away from `Refuse` has bound the port again.
    pub fn set_mode(&self, mode: Mode) {
        let generation = self.shared.generation.fetch_add(1, SeqCst) + 1;
        *lock(&self.shared.mode) = (mode, generation);
        {
            let mut listener = lock(&self.shared.listener);
            if mode == Mode::Refuse {
                *listener = None;
            } else if listener.is_none() {
                *listener = Some(rebind(self.shared.port));
            }
        }
        if mode == Mode::Reset {
            for conn in self.shared.live_conns() {
                conn.close(true);
            }
            self.wait_until_no_open_connections();
        }
    }

    /// One-shot: the next data request (not connection setup or `PING`, see
    /// [`Mode::CutAfterRequest`]) on any connection runs on the server but
    /// its client connection is closed before the reply. Then pass-through.
    pub fn cut_next_request(&self) {
        self.shared.cut_next.store(true, SeqCst);
    }

    /// One-shot: the next connection accepted is closed with an RST before
    /// any byte is forwarded (the client's connect succeeds, its first
    /// command fails with "connection reset"). Existing connections are not
    /// affected.
    pub fn reset_next_connection(&self) {
        self.shared.reset_next_connection.store(true, SeqCst);
    }

    /// One-shot: the next data request on any connection (existing or new;
    /// setup and `PING` excluded) is **not** forwarded; its connection is
    /// closed with an RST. Deterministic whatever the pool state is.
    pub fn reset_next_request(&self) {
        self.shared.reset_next_request.store(true, SeqCst);
    }

    /// Connections accepted so far (including refused-by-reset ones).
    pub fn connections_accepted(&self) -> usize {
        self.shared.accepted.load(SeqCst)
    }

    /// Connections currently open through the proxy.
    pub fn connections_open(&self) -> usize {
        self.shared.open.load(SeqCst)
    }

    /// Resets every open connection now, without changing the mode.
    pub fn reset_all(&self) {
        for conn in self.shared.live_conns() {
            conn.close(true);
        }
        self.wait_until_no_open_connections();
    }

    fn wait_until_no_open_connections(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.shared.open.load(SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, SeqCst);
        *lock(&self.shared.listener) = None;
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for conn in self.shared.live_conns() {
            conn.close(false);
        }
        let pumps = std::mem::take(&mut *lock(&self.shared.pumps));
        for pump in pumps {
            let _ = pump.join();
        }
    }
}

impl Shared {
    fn mode(&self) -> (Mode, u64) {
        *lock(&self.mode)
    }

    fn live_conns(&self) -> Vec<Arc<Conn>> {
        let mut conns = lock(&self.conns);
        conns.retain(|w| w.strong_count() > 0);
        conns.iter().filter_map(Weak::upgrade).collect()
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(SeqCst)
    }

    /// Sleeps `d` in short steps, returning early on shutdown.
    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopping() {
            let now = Instant::now();
            if now >= end {
                break;
            }
            thread::sleep((end - now).min(POLL));
        }
    }
}

impl Conn {
    /// Marks the connection closed. With `rst`, the final close of the
    /// client socket sends an RST (SO_LINGER 0) instead of a FIN; without,
    /// both sides get a FIN now.
    /// Only the first close counts: a pump that wakes up because the other
    /// side was shut down must not turn an RST into a FIN.
    fn close(&self, rst: bool) {
        if self.closed.swap(true, SeqCst) {
            return;
        }
        if rst {
            let _ = SockRef::from(&self.client).set_linger(Some(Duration::ZERO));
        } else {
            let _ = self.client.shutdown(Shutdown::Both);
        }
        let _ = self.upstream.shutdown(Shutdown::Both);
    }

    fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }
}

/// `fp<port><role>`: short enough for Linux's 15-byte thread names, so a
/// test can find this proxy's threads in `/proc/self/task/*/comm`.
pub fn thread_name(port: u16, role: &str) -> String {
    format!("fp{port}{role}")
}

fn bind_free_port() -> TcpListener {
    for _ in 0..20 {
        if let Ok(listener) = TcpListener::bind(loopback(0)) {
            listener.set_nonblocking(true).unwrap();
            return listener;
        }
    }
    // Fall back to the helper's panic message.
    TcpListener::bind(loopback(free_port())).unwrap()
}

/// Binds the proxy's own port again after `Refuse` (std sets SO_REUSEADDR).
fn rebind(port: u16) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(loopback(port)) {
            Ok(listener) => {
                listener.set_nonblocking(true).unwrap();
                return listener;
            }
            Err(e) if Instant::now() > deadline => {
                panic!("fault proxy cannot re-bind port {port}: {e}")
            }
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn accept_loop(shared: &Arc<Shared>) {
    while !shared.stopping() {
        let accepted = match lock(&shared.listener).as_ref() {
            Some(listener) => listener.accept(),
            None => Err(IoKind::WouldBlock.into()),
        };
        match accepted {
            Ok((client, _)) => start_connection(shared, client),
            Err(_) => thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn start_connection(shared: &Arc<Shared>, client: TcpStream) {
    shared.accepted.fetch_add(1, SeqCst);
    let _ = client.set_nonblocking(false);
    let (mode, _) = shared.mode();
    if mode == Mode::Reset || shared.reset_next_connection.swap(false, SeqCst) {
        let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
        return; // dropped: RST
    }
    let Ok(upstream) = TcpStream::connect_timeout(&shared.target, Duration::from_secs(1)) else {
        return; // target down: the client sees the connection closed
    };
    for s in [&client, &upstream] {
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(POLL));
    }
    shared.open.fetch_add(1, SeqCst);
    let conn = Arc::new(Conn {
        client,
        upstream,
        closed: AtomicBool::new(false),
        cut: AtomicBool::new(false),
        forwarded: AtomicUsize::new(0),
        answered: AtomicUsize::new(0),
        _open: OpenGuard(Arc::clone(shared)),
    });
    lock(&shared.conns).push(Arc::downgrade(&conn));
    let mut pumps = lock(&shared.pumps);
    pumps.retain(|p| !p.is_finished());
    for to_server in [true, false] {
        let (shared, conn) = (Arc::clone(shared), Arc::clone(&conn));
        let pump = thread::Builder::new()
            .name(thread_name(shared.port, "p"))
            .spawn(move || {
                if to_server {
                    pump_requests(&shared, &conn);
                } else {
                    pump_replies(&shared, &conn);
                }
            })
            .unwrap();
        pumps.push(pump);
    }
}

/// Reads a chunk; `None` when the connection is finished (closing it).
fn read_chunk(shared: &Shared, conn: &Conn, mut from: &TcpStream, buf: &mut [u8]) -> Option<usize> {
    loop {
        if shared.stopping() || conn.is_closed() {
            return None;
        }
        match from.read(buf) {
            Ok(0) => {
                conn.close(false);
                return None;
            }
            Ok(n) => return Some(n),
            Err(e)
                if matches!(
                    e.kind(),
                    IoKind::WouldBlock | IoKind::TimedOut | IoKind::Interrupted
                ) => {}
            Err(_) => {
                conn.close(false);
                return None;
            }
        }
    }
}

fn pump_requests(shared: &Shared, conn: &Conn) {
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes of an incomplete command held back in `QuotaExceeded` mode.
    let mut pending: Vec<u8> = Vec::new();
    // Forwarded bytes not counted as whole commands yet.
    let mut scan: Vec<u8> = Vec::new();
    while let Some(n) = read_chunk(shared, conn, &conn.client, &mut buf) {
        let chunk = &buf[..n];
        let (mode, _) = shared.mode();
        if mode == Mode::QuotaExceeded {
            if !answer_quota_exceeded(shared, conn, &mut pending, &mut scan, chunk) {
                return conn.close(false);
            }
            continue;
        }
        if !pending.is_empty() {
            // The quota mode ended mid-command: the server gets it whole.
            let whole = std::mem::take(&mut pending);
            if (&conn.upstream).write_all(&whole).is_err() {
                return conn.close(false);
            }
            count_forwarded(conn, &mut scan, &whole);
        }
        match mode {
            Mode::Reset => return conn.close(true),
            Mode::Blackhole => continue,
            Mode::Latency(d) => shared.sleep(d),
            _ => {}
        }
        if is_data_request(chunk) {
            if shared.reset_next_request.swap(false, SeqCst) {
                return conn.close(true);
            }
            if mode == Mode::CutAfterRequest || shared.cut_next.swap(false, SeqCst) {
                // Set before forwarding, so the reply pump cannot forward
                // the reply first.
                conn.cut.store(true, SeqCst);
            }
        }
        if (&conn.upstream).write_all(chunk).is_err() {
            return conn.close(false);
        }
        count_forwarded(conn, &mut scan, chunk);
    }
}

/// Counts the whole commands among the bytes forwarded so far.
fn count_forwarded(conn: &Conn, scan: &mut Vec<u8>, bytes: &[u8]) {
    scan.extend_from_slice(bytes);
    let mut used = 0;
    loop {
        match parse_request(&scan[used..]) {
            Request::Complete { len, .. } => {
                used += len;
                conn.forwarded.fetch_add(1, SeqCst);
            }
            Request::Incomplete => break,
            Request::Malformed => {
                // An inline command: not counted (the crate never sends one).
                used = scan.len();
                break;
            }
        }
    }
    scan.drain(..used);
}

/// Counts the whole replies among the bytes read from the server so far.
fn count_answered(conn: &Conn, scan: &mut Vec<u8>, bytes: &[u8]) {
    scan.extend_from_slice(bytes);
    let mut used = 0;
    loop {
        match reply_end(scan, used) {
            Ok(Some(end)) => {
                used = end;
                conn.answered.fetch_add(1, SeqCst);
            }
            Ok(None) => break,
            Err(()) => {
                used = scan.len();
                break;
            }
        }
    }
    scan.drain(..used);
}

/// Where the RESP2/RESP3 reply starting at `at` ends; `Ok(None)` when
/// more bytes are needed.
fn reply_end(buf: &[u8], at: usize) -> Result<Option<usize>, ()> {
    let Some(&tag) = buf.get(at) else {
        return Ok(None);
    };
    let Some(eol) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[at + 1..at + eol]).map_err(|_| ())?;
    let next = at + eol + 2;
    let count = || line.parse::<i64>().map_err(|_| ());
    match tag {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Ok(Some(next)),
        b'$' | b'=' | b'!' => {
            let n = count()?;
            if n < 0 {
                return Ok(Some(next));
            }
            let end = next + n as usize + 2;
            Ok((buf.len() >= end).then_some(end))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = count()?;
            let items = if matches!(tag, b'%' | b'|') { n * 2 } else { n };
            let mut pos = next;
            for _ in 0..items.max(0) {
                match reply_end(buf, pos)? {
                    Some(end) => pos = end,
                    None => return Ok(None),
                }
            }
            if tag == b'|' {
                // An attribute precedes the reply it annotates.
                return reply_end(buf, pos);
            }
            Ok(Some(pos))
        }
        _ => Err(()),
    }
}

/// [`Mode::QuotaExceeded`] for one chunk: complete commands are answered
/// with [`QUOTA_REPLY`] (one per command), connection setup is forwarded,
/// an incomplete command waits in `pending`. Bytes that do not start a RESP
/// array (an inline command, or the tail of a command forwarded before the
/// mode changed) are forwarded as they are. `false` when a socket failed.
fn answer_quota_exceeded(
    shared: &Shared,
    conn: &Conn,
    pending: &mut Vec<u8>,
    scan: &mut Vec<u8>,
    chunk: &[u8],
) -> bool {
    if pending.is_empty() && chunk.first() != Some(&b'*') {
        return (&conn.upstream).write_all(chunk).is_ok();
    }
    pending.extend_from_slice(chunk);
    let mut names = Vec::new();
    let mut used = 0;
    loop {
        match parse_request(&pending[used..]) {
            Request::Complete { name, len } => {
                names.push(name);
                used += len;
            }
            Request::Incomplete => break,
            Request::Malformed => {
                // Not ours to judge: the server answers it.
                return (&conn.upstream).write_all(&std::mem::take(pending)).is_ok();
            }
        }
    }
    if names.is_empty() {
        return true;
    }
    let batch: Vec<u8> = pending.drain(..used).collect();
    let setup_only = names.iter().all(|n| {
        matches!(
            n.to_ascii_uppercase().as_slice(),
            b"HELLO" | b"AUTH" | b"SELECT" | b"CLIENT"
        )
    });
    if setup_only {
        let sent = (&conn.upstream).write_all(&batch).is_ok();
        count_forwarded(conn, scan, &batch);
        return sent;
    }
    // Commands forwarded earlier on this connection are answered first
    // (a client that pipelines has them in flight): wait for their replies
    // (a server that never answers is given up on after a while).
    let until = Instant::now() + Duration::from_secs(2);
    while conn.answered.load(SeqCst) < conn.forwarded.load(SeqCst)
        && Instant::now() < until
        && !shared.stopping()
        && !conn.is_closed()
    {
        thread::sleep(Duration::from_millis(1));
    }
    let replies = QUOTA_REPLY.repeat(names.len());
    (&conn.client).write_all(&replies).is_ok()
}

/// One RESP request array (`*N\r\n` then N × `$len\r\n<bytes>\r\n`) at
/// the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// A whole command: its name and its length in bytes.
    Complete { name: Vec<u8>, len: usize },
    /// More bytes are needed.
    Incomplete,
    /// Not a RESP request array.
    Malformed,
}

fn parse_request(buf: &[u8]) -> Request {
    /// The number in a `<prefix><digits>\r\n` line at `at`, and where the
    /// next line starts.
    fn line(buf: &[u8], at: usize, prefix: u8) -> Result<Option<(usize, usize)>, ()> {
        if at >= buf.len() {
            return Ok(None);
        }
        if buf[at] != prefix {
            return Err(());
        }
        let Some(end) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            return if buf.len() - at > 32 {
                Err(())
            } else {
                Ok(None)
            };
        };
        let digits = std::str::from_utf8(&buf[at + 1..at + end]).map_err(|_| ())?;
        let n = digits.parse::<usize>().map_err(|_| ())?;
        Ok(Some((n, at + end + 2)))
    }
    let parse = || -> Result<Option<(Vec<u8>, usize)>, ()> {
        let Some((count, mut at)) = line(buf, 0, b'*')? else {
            return Ok(None);
        };
        if count == 0 {
            return Err(());
        }
        let mut name = Vec::new();
        for i in 0..count {
            let Some((len, start)) = line(buf, at, b'$')? else {
                return Ok(None);
            };
            let end = start.checked_add(len).ok_or(())?;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(());
            }
            if i == 0 {
                name = buf[start..end].to_vec();
            }
            at = end + 2;
        }
        Ok(Some((name, at)))
    };
    match parse() {
        Ok(Some((name, len))) => Request::Complete { name, len },
        Ok(None) => Request::Incomplete,
        Err(()) => Request::Malformed,
    }
}

fn pump_replies(shared: &Shared, conn: &Conn) {
    let mut buf = vec![0u8; 64 * 1024];
    // Bytes forwarded under the current CloseAfterBytes mode generation.
    let mut counted: (u64, usize) = (0, 0);
    // Reply bytes not counted as whole replies yet.
    let mut scan: Vec<u8> = Vec::new();
    while let Some(n) = read_chunk(shared, conn, &conn.upstream, &mut buf) {
        count_answered(conn, &mut scan, &buf[..n]);
        if conn.cut.load(SeqCst) {
            // The server has answered, so the command ran: drop the reply.
            return conn.close(false);
        }
        let mut chunk = &buf[..n];
        let (mode, generation) = shared.mode();
        let mut close_after = false;
        match mode {
            Mode::Reset => return conn.close(true),
            Mode::Blackhole => continue,
            Mode::Latency(d) => shared.sleep(d),
            Mode::CloseAfterBytes(limit) => {
                if counted.0 != generation {
                    counted = (generation, 0);
                }
                let allowed = limit.saturating_sub(counted.1);
                if chunk.len() >= allowed {
                    chunk = &chunk[..allowed];
                    close_after = true;
                }
                counted.1 += chunk.len();
            }
            _ => {}
        }
        if (&conn.client).write_all(chunk).is_err() || close_after {
            return conn.close(false);
        }
    }
}

/// `false` for connection setup (`HELLO`, `AUTH`, `SELECT`, `CLIENT ...`) and
/// `PING`, judged by the first command of the chunk.
fn is_data_request(chunk: &[u8]) -> bool {
    let name = first_command_name(chunk).to_ascii_uppercase();
    !matches!(
        name.as_slice(),
        b"HELLO" | b"AUTH" | b"SELECT" | b"CLIENT" | b"PING"
    )
}

/// The first command name in a RESP array or inline command.
fn first_command_name(chunk: &[u8]) -> Vec<u8> {
    if chunk.first() == Some(&b'*') {
        // *N\r\n$len\r\nNAME\r\n
        let mut lines = chunk.split(|&b| b == b'\n').skip(2);
        return lines
            .next()
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
            .unwrap_or_default();
    }
    chunk
        .split(|b| b.is_ascii_whitespace())
        .find(|w| !w.is_empty())
        .unwrap_or_default()
        .to_vec()
}

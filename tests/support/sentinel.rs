//! A real Sentinel deployment for tests: one master, one replica
//! (`--replicaof`) and three `redis-server --sentinel` processes, each on a
//! free loopback port in its own temporary directory (sentinel rewrites its
//! config file), all stopped on drop.
//!
//! [`SentinelCluster::start_tls`] starts the same deployment speaking TLS
//! only (`port 0`, `tls-port`, `tls-replication yes`): the nodes replicate
//! and the sentinels monitor and talk to each other over TLS, and a plain
//! connection to any of them is refused.
//!
//! Timers are short (`down-after-milliseconds 500`, `failover-timeout
//! 2000`) so a killed master is replaced within a few seconds. Every wait
//! polls a condition until a deadline; nothing sleeps for a fixed time to
//! "let things settle".

use std::fs::{self, File};
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::server::unique_temp_dir;
use super::{free_port, loopback, RedisServer};

/// The service name the sentinels monitor.
pub const SERVICE: &str = "mymaster";
/// How long the deployment may take to form (sentinels find each other
/// through hello messages every 2 s) or a change to happen (a sentinel in
/// TILT, after its timer stalled on an overloaded machine, waits 30 s).
const FORM_DEADLINE: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(20);

/// The files of a TLS-only process (PEM).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The CA the process trusts: its master's, replicas' and peers'
    /// certificates must be signed by it.
    pub ca: PathBuf,
    /// The certificate it presents (as a server and as a client), and its key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA that signed `cert`: what a client must trust to reach it
    /// (`ca`, unless a test wants a process with an untrusted certificate).
    pub issuer: PathBuf,
}

impl TlsFiles {
    /// `cert` and `key` signed by `ca`.
    pub fn new(ca: impl Into<PathBuf>, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        let ca = ca.into();
        TlsFiles {
            issuer: ca.clone(),
            ca,
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// `redis-server` arguments: TLS only (no plain port), client
    /// certificates not required, replication over TLS.
    pub fn server_args(&self) -> Vec<String> {
        let p = |p: &Path| p.display().to_string();
        [
            "--port",
            "0",
            "--tls-port",
            super::server::PORT_PLACEHOLDER,
            "--tls-cert-file",
            &p(&self.cert),
            "--tls-key-file",
            &p(&self.key),
            "--tls-ca-cert-file",
            &p(&self.ca),
            "--tls-auth-clients",
            "no",
            "--tls-replication",
            "yes",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// Connects to `127.0.0.1:port`, over TLS trusting `issuer` when given.
fn connect_to(port: u16, issuer: Option<&Path>) -> redis::RedisResult<redis::Connection> {
    let timeout = Duration::from_millis(500);
    match issuer {
        None => super::connect(&format!("redis://127.0.0.1:{port}"), timeout),
        #[cfg(feature = "tls")]
        Some(ca) => super::connect_tls(port, ca, timeout),
        #[cfg(not(feature = "tls"))]
        Some(_) => panic!("a TLS deployment needs the `tls` feature"),
    }
}

/// One `redis-server --sentinel` process.
pub struct Sentinel {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    tls: Option<TlsFiles>,
}

impl Sentinel {
    /// Starts a sentinel monitoring `127.0.0.1:master_port` as [`SERVICE`]
    /// (quorum 2), over TLS only with `tls`.
    pub fn start(master_port: u16, tls: Option<&TlsFiles>) -> Sentinel {
        for _ in 0..5 {
            let mut s = Sentinel {
                port: free_port(),
                dir: unique_temp_dir(),
                child: None,
                tls: tls.cloned(),
            };
            fs::create_dir_all(&s.dir).unwrap();
            let ports = match tls {
                None => format!("port {}\n", s.port),
                Some(t) => format!(
                    "port 0\ntls-port {}\ntls-cert-file {}\ntls-key-file {}\n\
                     tls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n",
                    s.port,
                    t.cert.display(),
                    t.key.display(),
                    t.ca.display()
                ),
            };
            let conf = format!(
                "{ports}bind 127.0.0.1\nprotected-mode no\ndir {dir}\nlogfile {dir}/sentinel.log\n\
                 sentinel resolve-hostnames no\n\
                 sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds {SERVICE} 500\n\
                 sentinel failover-timeout {SERVICE} 2000\n\
                 sentinel parallel-syncs {SERVICE} 1\n",
                dir = s.dir.display(),
            );
            fs::write(s.dir.join("sentinel.conf"), conf).unwrap();
            if s.spawn() {
                return s;
            }
        }
        panic!("no sentinel could start on a free port");
    }

    /// Spawns the process and waits until it answers PING; `false` when it
    /// exited (lost the port to another process).
    fn spawn(&mut self) -> bool {
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let stderr = File::create(self.dir.join("stderr.log")).unwrap();
        let child = Command::new(bin)
            .arg(self.dir.join("sentinel.conf"))
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn redis-server --sentinel (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            if self.query(&["PING"]).is_ok() {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "sentinel on port {} did not answer: {}",
                self.port,
                self.log()
            );
            thread::sleep(POLL);
        }
    }

    /// The sentinel's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs one command on this sentinel.
    pub fn query(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let issuer = self.tls.as_ref().map(|t| t.issuer.as_path());
        let mut conn = connect_to(self.port, issuer)?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn)
    }

    /// The master port this sentinel names now, if it answers.
    pub fn master_port(&self) -> Option<u16> {
        let v = self
            .query(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE])
            .ok()?;
        let addr: Vec<String> = redis::from_redis_value(v).ok()?;
        addr.get(1)?.parse().ok()
    }

    fn count(&self, what: &str) -> usize {
        self.query(&["SENTINEL", what, SERVICE])
            .ok()
            .and_then(|v| redis::from_redis_value::<Vec<redis::Value>>(v).ok())
            .map_or(0, |v| v.len())
    }

    /// `true` while the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, and wait until the port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&loopback(self.port), Duration::from_millis(100)).is_ok() {
            assert!(Instant::now() < deadline, "sentinel port still open");
            thread::sleep(POLL);
        }
    }

    /// Starts it again on the same port with its (rewritten) config.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(Instant::now() < deadline, "sentinel could not restart");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The sentinel's log.
    pub fn log(&self) -> String {
        let mut text = String::new();
        for name in ["sentinel.log", "stderr.log"] {
            if let Ok(mut f) = File::open(self.dir.join(name)) {
                let _ = f.read_to_string(&mut text);
            }
        }
        text
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Master + replica + three sentinels.
pub struct SentinelCluster {
    /// `nodes[0]` starts as the master, `nodes[1]` as its replica.
    pub nodes: Vec<RedisServer>,
    pub sentinels: Vec<Sentinel>,
    /// Set for a TLS-only deployment.
    pub tls: Option<TlsFiles>,
}

impl SentinelCluster {
    /// Starts the deployment and waits (with a deadline) until the replica
    /// is in sync and every sentinel knows the replica and the two other
    /// sentinels.
    pub fn start() -> SentinelCluster {
        Self::start_with(None)
    }

    /// [`SentinelCluster::start`], every process speaking TLS only with
    /// `tls` (nodes and sentinels present the same certificate).
    pub fn start_tls(tls: &TlsFiles) -> SentinelCluster {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<&TlsFiles>) -> SentinelCluster {
        let tls_args = tls.map(TlsFiles::server_args).unwrap_or_default();
        let node = |extra: &[&str]| {
            RedisServer::builder()
                .args(&tls_args.iter().map(String::as_str).collect::<Vec<_>>())
                .args(extra)
                .start()
        };
        let master = node(&[]);
        let replica = node(&["--replicaof", "127.0.0.1", &master.port().to_string()]);
        let sentinels: Vec<Sentinel> = (0..3)
            .map(|_| Sentinel::start(master.port(), tls))
            .collect();
        let cluster = SentinelCluster {
            nodes: vec![master, replica],
            sentinels,
            tls: tls.cloned(),
        };
        cluster.wait_until("the replica is in sync", |c| {
            c.node_info(1, "replication")
                .is_some_and(|i| i.contains("master_link_status:up"))
        });
        cluster.wait_until("the sentinels know each other and the replica", |c| {
            c.sentinels
                .iter()
                .all(|s| s.count("SENTINELS") == 2 && s.count("REPLICAS") == 1)
        });
        cluster
    }

    /// Polls `cond` every 20 ms until it holds; panics with the logs after
    /// 90 s.
    pub fn wait_until(&self, what: &str, cond: impl Fn(&SentinelCluster) -> bool) {
        let deadline = Instant::now() + FORM_DEADLINE;
        while !cond(self) {
            if Instant::now() > deadline {
                let logs: Vec<String> = self.sentinels.iter().map(Sentinel::log).collect();
                panic!("timed out waiting until {what}\n{}", logs.join("\n-----\n"));
            }
            thread::sleep(POLL);
        }
    }

    /// `redis+sentinel://` URL listing the sentinels in `order`.
    pub fn url_with(&self, order: &[usize]) -> String {
        let hosts: Vec<String> = order
            .iter()
            .map(|i| format!("127.0.0.1:{}", self.sentinels[*i].port()))
            .collect();
        let scheme = if self.tls.is_some() {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        };
        format!("{scheme}://{}/{SERVICE}", hosts.join(","))
    }

    /// `redis+sentinel://` URL listing every sentinel.
    pub fn url(&self) -> String {
        self.url_with(&[0, 1, 2])
    }

    /// `INFO <section>` of node `i`, if it answers.
    pub fn node_info(&self, i: usize, section: &str) -> Option<String> {
        let mut conn = self.node_connection(i).ok()?;
        redis::cmd("INFO").arg(section).query(&mut conn).ok()
    }

    /// A connection to node `i` (over TLS in a TLS deployment), with 500 ms
    /// socket timeouts.
    pub fn node_connection(&self, i: usize) -> redis::RedisResult<redis::Connection> {
        let issuer = self.tls.as_ref().map(|t| t.issuer.as_path());
        connect_to(self.nodes[i].port(), issuer)
    }

    /// The index of the node on `port`.
    pub fn node_on(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port() == port)
    }

    /// `true` when every running sentinel names node `i` as the master.
    pub fn all_agree_on(&self, i: usize) -> bool {
        let port = self.nodes[i].port();
        self.sentinels
            .iter()
            .filter(|s| s.is_running())
            .all(|s| s.master_port() == Some(port))
    }

    /// `SENTINEL FAILOVER` on the first running sentinel, until a running
    /// sentinel names another master than `nodes[from]`: retried while it
    /// answers NOGOODSLAVE/INPROG, and when a failover it accepted was
    /// aborted (on a loaded machine the replica's INFO can be too old for
    /// it to be a good candidate) with nothing after 10 s.
    pub fn failover(&self) {
        let from = self.nodes[0].port();
        let moved = |c: &SentinelCluster| {
            c.sentinels
                .iter()
                .filter(|s| s.is_running())
                .any(|s| s.master_port().is_some_and(|p| p != from))
        };
        let deadline = Instant::now() + FORM_DEADLINE;
        loop {
            assert!(Instant::now() < deadline, "SENTINEL FAILOVER never took");
            let s = self
                .sentinels
                .iter()
                .find(|s| s.is_running())
                .expect("a running sentinel");
            if s.query(&["SENTINEL", "FAILOVER", SERVICE]).is_err() {
                thread::sleep(POLL);
                continue;
            }
            let attempt = Instant::now() + Duration::from_secs(10);
            while Instant::now() < attempt {
                if moved(self) {
                    return;
                }
                thread::sleep(POLL);
            }
        }
    }
}

/// A scripted stand-in for a sentinel, for what real sentinels will not do
/// on cue: name a master the test chooses, and never announce a switch (so
/// only `READONLY` can tell the client). Answers `SENTINEL MASTER` with the
/// scripted address, `SENTINEL SENTINELS` with none, `SUBSCRIBE` with its
/// confirmation (and nothing after), `PING`, and `+OK` to anything else.
pub struct FakeSentinel {
    port: u16,
    master_port: std::sync::Arc<std::sync::atomic::AtomicU16>,
    /// `SENTINEL MASTER`'s flags say the master is down (`s_down`).
    master_down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl FakeSentinel {
    /// Starts it on a free port, naming `127.0.0.1:master_port`.
    pub fn start(master_port: u16) -> FakeSentinel {
        use std::sync::atomic::{AtomicBool, AtomicU16};
        use std::sync::Arc;
        let listener = std::net::TcpListener::bind(loopback(0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let master = Arc::new(AtomicU16::new(master_port));
        let down = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, d, s) = (master.clone(), down.clone(), stop.clone());
        let acceptor = thread::spawn(move || {
            let mut workers = Vec::new();
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (m, d, s) = (m.clone(), d.clone(), s.clone());
                        workers.push(thread::spawn(move || serve(stream, &m, &d, &s)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            for w in workers {
                let _ = w.join();
            }
        });
        FakeSentinel {
            port,
            master_port: master,
            master_down: down,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on, reports the master as subjectively down (`s_down`).
    pub fn report_master_down(&self, down: bool) {
        self.master_down
            .store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// Names `127.0.0.1:port` from now on.
    pub fn set_master(&self, port: u16) {
        self.master_port
            .store(port, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for FakeSentinel {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn bulk(s: &str) -> String {
    format!("${}\r\n{s}\r\n", s.len())
}

/// One connection: reads RESP arrays of bulk strings, answers each.
fn serve(
    stream: TcpStream,
    master: &std::sync::atomic::AtomicU16,
    down: &std::sync::atomic::AtomicBool,
    stop: &std::sync::atomic::AtomicBool,
) {
    use std::io::{BufRead, BufReader, Write};
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut args: Vec<String> = Vec::new();
    let mut expected: Option<usize> = None;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return,
        }
        let l = line.trim_end();
        if let Some(n) = l.strip_prefix('*') {
            expected = n.parse().ok();
            args.clear();
            continue;
        }
        if l.starts_with('$') {
            continue;
        }
        args.push(l.to_string());
        if Some(args.len()) != expected {
            continue;
        }
        let upper: Vec<String> = args.iter().map(|a| a.to_ascii_uppercase()).collect();
        let reply = match upper
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["SENTINEL", "MASTER", ..] => {
                let port = master.load(std::sync::atomic::Ordering::SeqCst).to_string();
                format!(
                    "*8\r\n{}{}{}{}{}{}{}{}",
                    bulk("name"),
                    bulk(SERVICE),
                    bulk("ip"),
                    bulk("127.0.0.1"),
                    bulk("port"),
                    bulk(&port),
                    bulk("flags"),
                    bulk(if down.load(std::sync::atomic::Ordering::SeqCst) {
                        "master,s_down"
                    } else {
                        "master"
                    })
                )
            }
            ["SENTINEL", ..] => "*0\r\n".to_string(),
            ["SUBSCRIBE", ..] => format!("*3\r\n{}{}:1\r\n", bulk("subscribe"), bulk(&args[1])),
            ["PING", ..] => "+PONG\r\n".to_string(),
            _ => "+OK\r\n".to_string(),
        };
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
        expected = None;
        args.clear();
    }
}

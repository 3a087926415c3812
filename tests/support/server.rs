//! A real `redis-server` on a free loopback port, stopped on drop.

use std::fs::{self, File};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{free_port, loopback};

/// How long a server may take to answer PING after it was spawned.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How many free ports the first start tries when it loses a bind race.
const BIND_ATTEMPTS: usize = 5;
/// Placeholder in extra arguments replaced by the server's port, for TLS
/// setups such as `["--port", "0", "--tls-port", "{port}", ...]`.
pub const PORT_PLACEHOLDER: &str = "{port}";

const INSTALL_HINT: &str = "redis-server is not installed: run \
    `apt-get update && apt-get install -y redis-server` (or scripts/test.sh), \
    or point REDIS_SERVER_BIN at a redis-server binary";

/// A real `redis-server` (7.x) listening on `127.0.0.1:<free port>`, with no
/// persistence, protected mode off and `DEBUG` enabled, in its own temporary
/// directory. Killed (and the directory removed) on drop, also when the test
/// panics.
///
/// ```ignore
/// let server = RedisServer::new();
/// let mut conn = server.connection();
/// redis::cmd("SET").arg("k").arg("v").exec(&mut conn).unwrap();
/// ```
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    password: Option<String>,
    child: Option<Child>,
}

/// Builds a [`RedisServer`] with extra `redis-server` arguments.
#[derive(Default)]
pub struct RedisServerBuilder {
    args: Vec<String>,
}

impl RedisServerBuilder {
    /// Appends one argument (later arguments override earlier ones, as in
    /// `redis-server` itself). `{port}` is replaced by the chosen port.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends several arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// `--requirepass <password>`; [`RedisServer::connection`] then
    /// authenticates with it.
    pub fn password(self, password: &str) -> Self {
        self.args(&["--requirepass", password])
    }

    /// Starts the server and waits until it is ready.
    ///
    /// Panics (with the server's log) if it does not become ready within
    /// 10 s, and with installation instructions if `redis-server` is missing.
    pub fn start(self) -> RedisServer {
        let password = self
            .args
            .windows(2)
            .rev()
            .find(|w| w[0] == "--requirepass")
            .map(|w| w[1].clone());
        let dir = unique_temp_dir();
        let mut last_error = String::new();
        for _ in 0..BIND_ATTEMPTS {
            let mut server = RedisServer {
                port: free_port(),
                dir: dir.clone(),
                args: self.args.clone(),
                password: password.clone(),
                child: None,
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                // Lost the race for the port to another test: try another.
                Err(e) if e.contains("Address already in use") => {
                    last_error = e;
                    // Keep the directory for the next attempt.
                    server.dir = PathBuf::new();
                }
                Err(e) => panic!("{e}"),
            }
        }
        let _ = fs::remove_dir_all(&dir);
        panic!("redis-server could not bind a free port in {BIND_ATTEMPTS} attempts: {last_error}");
    }
}

impl RedisServer {
    /// Starts a server with the default arguments.
    pub fn new() -> Self {
        RedisServerBuilder::default().start()
    }

    /// Starts a server with extra arguments, e.g. `&["--requirepass", "s3cret"]`.
    pub fn start_with_args(args: &[&str]) -> Self {
        RedisServerBuilder::default().args(args).start()
    }

    /// A builder for extra arguments.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// The port the server listens on (kept across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// `redis://127.0.0.1:port`, without the password.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis://:password@127.0.0.1:port` when the server requires a
    /// password, otherwise the same as [`url`](Self::url).
    pub fn url_with_password(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => self.url(),
        }
    }

    /// The temporary directory the server runs in (holds `redis.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A plain `redis::Connection` (authenticated if the server has a
    /// password, 5 s timeouts) for setup and assertions.
    pub fn connection(&self) -> redis::Connection {
        super::connect(&self.url_with_password(), Duration::from_secs(5)).unwrap_or_else(|e| {
            panic!(
                "cannot connect to redis-server at {}: {e}\n{}",
                self.addr(),
                self.log()
            )
        })
    }

    /// `true` while the server process is running (it may not be ready yet).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server (SIGKILL: no shutdown, no final fsync; with
    /// `--appendfsync always` every acknowledged write is on disk anyway)
    /// and waits until its port refuses connections.
    /// Does nothing if it is already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + START_DEADLINE;
        while TcpStream::connect_timeout(&self.addr(), Duration::from_millis(100)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "port {} still accepts connections after redis-server was killed",
                self.port
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server again on the **same port** after [`stop`](Self::stop)
    /// and waits until it is ready. The data is gone (no persistence).
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        // The port was ours a moment ago; retry briefly in case the kernel
        // still holds it.
        let mut last_error = String::new();
        for _ in 0..20 {
            match self.spawn_and_wait() {
                Ok(()) => return,
                Err(e) if e.contains("Address already in use") => {
                    last_error = e;
                    thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!(
            "redis-server could not restart on port {}: {last_error}",
            self.port
        );
    }

    /// [`stop`](Self::stop) then [`start`](Self::start) on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    /// The server's log and stderr, for panic messages.
    pub fn log(&self) -> String {
        let read = |name: &str| {
            let mut text = String::new();
            if let Ok(mut f) = File::open(self.dir.join(name)) {
                let _ = f.read_to_string(&mut text);
            }
            text
        };
        format!(
            "--- redis.log ---\n{}--- stderr ---\n{}",
            read("redis.log"),
            read("stderr.log")
        )
    }

    fn command_line(&self) -> Vec<String> {
        let port = self.port.to_string();
        let mut args: Vec<String> = [
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--enable-debug-command",
            "yes",
            "--dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(self.dir.display().to_string());
        args.push("--logfile".into());
        args.push(self.dir.join("redis.log").display().to_string());
        args.extend(self.args.iter().map(|a| a.replace(PORT_PLACEHOLDER, &port)));
        args
    }

    /// Spawns the process and waits until it is ready. `Err` carries a
    /// description with the server's log.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        fs::create_dir_all(&self.dir).map_err(|e| format!("create {}: {e}", self.dir.display()))?;
        // A fresh log per start, so readiness is judged on this start only.
        let _ = fs::remove_file(self.dir.join("redis.log"));
        let stderr = File::create(self.dir.join("stderr.log")).map_err(|e| e.to_string())?;
        let bin = std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&bin)
            .args(self.command_line())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{INSTALL_HINT}"),
            Err(e) => panic!("cannot spawn {bin}: {e}"),
        };
        self.child = Some(child);
        match self.wait_ready() {
            Ok(()) => Ok(()),
            Err(why) => {
                if let Some(mut child) = self.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                Err(format!(
                    "redis-server on port {} did not become ready: {why}\n{}",
                    self.port,
                    self.log()
                ))
            }
        }
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        // With TLS the plain port may be off (`--port 0`): judge readiness
        // by the log line and a TCP connect instead of a PING.
        let tls = self.args.iter().any(|a| a == "--tls-port");
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("exited with {status}"));
                }
            }
            let ready = if tls {
                self.log().contains("Ready to accept connections")
                    && TcpStream::connect(self.addr()).is_ok()
            } else {
                self.ping().is_ok()
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("no answer within {START_DEADLINE:?}"));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = super::connect(&self.url_with_password(), Duration::from_millis(500))?;
        redis::cmd("PING").query::<String>(&mut conn).map(|_| ())
    }
}

impl Default for RedisServer {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.dir.as_os_str().is_empty() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `<tmp>/resilient-redis-<pid>-<n>-<nanos>`, not yet created.
pub fn unique_temp_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "resilient-redis-{}-{n}-{nanos}",
        std::process::id()
    ))
}

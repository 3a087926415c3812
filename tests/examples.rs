//! The examples, end to end: each one is built with `cargo build
//! --example` (with this test's features and profile, so after `cargo test`
//! it is already built) and run as a process against a real
//! `redis-server`, which the tests stop and start under it.

// Test code: a failed unwrap is a failed test, with the error printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{free_port, RedisServer};

/// Builds example `name` like this test was built, and returns its path.
fn example(name: &str) -> PathBuf {
    // <target>/<profile>/deps/<this test>
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let target_dir = profile_dir.parent().unwrap();
    let mut features = Vec::new();
    if cfg!(feature = "tls") {
        features.push("tls");
    }
    if cfg!(feature = "test-support") {
        features.push("test-support");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let mut build = Command::new(cargo);
    build
        .args([
            "build",
            "--quiet",
            "--example",
            name,
            "--no-default-features",
        ])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir);
    if !features.is_empty() {
        build.args(["--features", &features.join(",")]);
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let out = build.output().unwrap();
    assert!(
        out.status.success(),
        "cargo build --example {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    profile_dir.join("examples").join(name)
}

/// A running example, killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An example process with a clean environment (no `REDIS_URL` from the
/// machine) plus `env`.
fn command(exe: &PathBuf, env: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Settings that make an outage and a recovery quick to see.
fn quick(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("REDIS_URL", url.to_string()),
        ("CACHE_SOCKET_CONNECT_TIMEOUT_MS", "300".into()),
        ("CACHE_SOCKET_TIMEOUT_MS", "1000".into()),
        ("CACHE_RETRY_DELAY", "0.01".into()),
        ("REDIS_CIRCUIT_BREAKER_THRESHOLD", "2".into()),
        ("REDIS_CIRCUIT_BREAKER_TIMEOUT", "1".into()),
        ("CACHE_HEALTH_CHECK_INTERVAL", "1".into()),
    ]
}

/// Polls `f` until it returns `Some`, or panics with `what` after `secs`.
fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- HTTP

struct HttpResponse {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl HttpResponse {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request with `Connection: close`; `None` when the server
/// does not answer.
fn http(port: u16, method: &str, path: &str, body: &[u8]) -> Option<HttpResponse> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = headers.split(' ').nth(1)?.parse().ok()?;
    Some(HttpResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    })
}

/// A sample's value in Prometheus text, by its full series name.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn http_service_serves_through_an_outage_and_recovers() {
    let mut redis = RedisServer::new();
    let exe = example("http_service");
    let port = free_port();
    let mut env = quick(&redis.url());
    env.push(("PORT", port.to_string()));
    let _service = Running(command(&exe, &env).stdout(Stdio::null()).spawn().unwrap());
    let get = |path: &str| http(port, "GET", path, b"");
    let put = |path: &str, body: &str| http(port, "PUT", path, body.as_bytes()).unwrap();
    let health = wait_for(30, "the service to listen", || get("/health"));
    assert_eq!(health.status, 200);
    assert!(
        health.headers.contains("application/json"),
        "{}",
        health.headers
    );
    let json = health.text();
    assert!(json.contains(r#""status":"healthy""#), "{json}");
    assert!(json.contains(r#""active_endpoint":"primary""#), "{json}");
    assert!(json.contains(r#""serving_from_memory":false"#), "{json}");
    assert!(json.contains(r#""circuit":"closed""#), "{json}");
    assert!(json.contains(r#""pool":{"idle":"#), "{json}");

    assert_eq!(put("/cache/user%3A1", "alice").status, 204);
    let got = get("/cache/user:1").unwrap();
    assert_eq!((got.status, got.text().as_str()), (200, "alice"));
    assert_eq!(get("/cache/missing").unwrap().status, 404);
    assert_eq!(put("/cache/t?ttl=60", "x").status, 204);
    let ttl: i64 = redis::cmd("TTL")
        .arg("t")
        .query(&mut redis.connection())
        .unwrap();
    assert!(ttl > 0 && ttl <= 60, "ttl {ttl}");
    assert_eq!(put("/cache/t?ttl=soon", "x").status, 400);
    let metrics = get("/metrics").unwrap();
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .headers
            .contains("Content-Type: text/plain; version=0.0.4"),
        "{}",
        metrics.headers
    );
    let text = metrics.text();
    assert!(metric(&text, "resilient_redis_requests_total").unwrap() >= 4.0);
    assert!(
        metric(
            &text,
            r#"resilient_redis_request_duration_seconds_count{endpoint="primary",outcome="ok"}"#
        )
        .unwrap()
            >= 4.0,
        "{text}"
    );

    // Redis goes away: writes and reads are served from memory.
    redis.stop();
    let json = wait_for(30, "/health to say degraded", || {
        assert_eq!(put("/cache/during", "outage").status, 204);
        let h = get("/health")?;
        let json = h.text();
        (h.status == 200 && json.contains(r#""status":"degraded""#)).then_some(json)
    });
    assert!(json.contains(r#""serving_from_memory":true"#), "{json}");
    assert!(!json.contains(r#""last_error":null"#), "{json}");
    let got = get("/cache/during").unwrap();
    assert_eq!((got.status, got.text().as_str()), (200, "outage"));
    let text = get("/metrics").unwrap().text();
    assert_eq!(metric(&text, "resilient_redis_fallback_active"), Some(1.0));
    assert!(metric(&text, "resilient_redis_fallback_writes_total").unwrap() >= 1.0);
    assert!(metric(&text, "resilient_redis_fallback_reads_total").unwrap() >= 1.0);
    assert!(
        metric(
            &text,
            r#"resilient_redis_request_duration_seconds_count{endpoint="primary",outcome="fallback"}"#
        )
        .unwrap()
            >= 2.0,
        "{text}"
    );

    // Redis is back: the service recovers on its own.
    redis.start();
    wait_for(60, "/health to say healthy again", || {
        // Calls let the client notice Redis is back.
        let _ = http(port, "GET", "/cache/probe", b"");
        let h = get("/health")?;
        (h.status == 200 && h.text().contains(r#""status":"healthy""#)).then_some(())
    });
    // Healthy: a write goes to Redis again.
    assert_eq!(put("/cache/after", "recovered").status, 204);
    let in_redis: Option<String> = redis::cmd("GET")
        .arg("after")
        .query(&mut redis.connection())
        .unwrap();
    assert_eq!(in_redis.as_deref(), Some("recovered"));
    let text = get("/metrics").unwrap().text();
    assert_eq!(metric(&text, "resilient_redis_fallback_active"), Some(0.0));
    // What was written during the outage is never read stale: here,
    // Redis restarted empty, so it is the outage's value or a miss.
    let got = get("/cache/during").unwrap();
    assert!(
        got.status == 404 || got.text() == "outage",
        "{} {}",
        got.status,
        got.text()
    );
}

// ---------------------------------------------------------------- batch

#[test]
fn batch_job_survives_a_redis_restart() {
    // Append-only with fsync on every write, so that a SIGKILL loses
    // nothing Redis acknowledged and the end state can be checked.
    let mut redis =
        RedisServer::start_with_args(&["--appendonly", "yes", "--appendfsync", "always"]);
    let exe = example("batch");
    const N: usize = 20_000;
    let mut env = quick(&redis.url());
    env.extend([
        ("BATCH_THREADS", "4".to_string()),
        ("BATCH_CHUNK", "100".to_string()),
        // About 5 s, so that the restart lands in the middle.
        ("BATCH_MAX_RATE", "4000".to_string()),
        ("BATCH_GIVE_UP_SECS", "60".to_string()),
    ]);
    let mut child = Running(
        command(&exe, &env)
            .arg(N.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // Progress lines (stderr is not a terminal: one a second).
    let (tx, progress) = mpsc::channel::<String>();
    let stderr = child.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        all
    });
    let mut stdout = child.0.stdout.take().unwrap();

    let mut conn = redis.connection();
    wait_for(60, "the job to write a tenth of the items", || {
        let n: usize = redis::cmd("DBSIZE").query(&mut conn).ok()?;
        (n >= N / 10).then_some(())
    });
    drop(conn);
    redis.stop();
    // The job notices, and goes on from memory.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = progress
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a progress line saying Redis is down");
        if line.contains("REDIS DOWN") {
            break;
        }
    }
    redis.start();

    let status = wait_for(120, "the job to finish", || child.0.try_wait().unwrap());
    let mut summary = String::new();
    stdout.read_to_string(&mut summary).unwrap();
    let log = reader.join().unwrap();
    assert!(status.success(), "exit {status}\n{summary}\n{log}");
    let field = |name: &str| -> String {
        summary
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in\n{summary}"))
            .trim()
            .to_string()
    };
    assert_eq!(field("items:"), format!("{N} of {N}"));
    assert_eq!(field("wrong on read-back:"), "0");
    assert!(
        field("ops/s:")
            .split(' ')
            .next()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 0.0
    );
    let served: u64 = field("served from memory:")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(served > 0, "{summary}");
    let outage: f64 = field("time in outage:")
        .trim_end_matches(" s")
        .parse()
        .unwrap();
    assert!(outage > 0.0, "{summary}");
    assert!(field("left in journal:").starts_with("0 keys"), "{summary}");
    assert!(field("retries:").contains("by the client"), "{summary}");

    // Every item is in Redis, with its value (the outage's writes were
    // replayed there).
    let mut conn = redis.connection();
    for chunk in (0..N).collect::<Vec<_>>().chunks(1000) {
        let keys: Vec<String> = chunk.iter().map(|i| format!("batch:{i}")).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut conn).unwrap();
        for (i, v) in chunk.iter().zip(values) {
            assert_eq!(v, Some(format!("value-{i}")), "batch:{i}");
        }
    }
}

#[test]
fn batch_job_usage_errors_exit_2() {
    let exe = example("batch");
    let out = command(&exe, &[]).arg("lots").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("N: expected a whole number"));
}

// ---------------------------------------------------------------- CLI

fn cli(exe: &PathBuf, env: &[(&str, String)], args: &[&str]) -> Output {
    command(exe, env).args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn ok(out: Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn cli_commands_exit_codes_and_configuration() {
    let redis = RedisServer::new();
    let exe = example("cli");
    let env = quick(&redis.url());
    let run = |args: &[&str]| cli(&exe, &env, args);

    assert_eq!(ok(run(&["set", "greeting", "hello"])), "OK");
    assert_eq!(ok(run(&["get", "greeting"])), "hello");
    assert_eq!(ok(run(&["set", "t", "x", "--ttl", "60"])), "OK");
    let ttl: i64 = redis::cmd("TTL")
        .arg("t")
        .query(&mut redis.connection())
        .unwrap();
    assert!(ttl > 0 && ttl <= 60, "ttl {ttl}");
    assert_eq!(ok(run(&["get", "missing"])), "(nil)");
    assert_eq!(ok(run(&["incr", "n"])), "1");
    assert_eq!(ok(run(&["incr", "n", "41"])), "42");
    assert_eq!(ok(run(&["del", "n"])), "1");
    assert_eq!(ok(run(&["del", "n"])), "0");
    assert!(ok(run(&["ping"])).starts_with("PONG in "));
    assert!(ok(run(&["health"])).starts_with("healthy"));
    assert!(ok(run(&["stats"])).contains("requests"));
    let prom = ok(run(&["stats", "--prometheus"]));
    assert!(prom.contains("resilient_redis_requests_total"), "{prom}");
    assert!(
        prom.contains(r#"resilient_redis_request_duration_seconds_bucket{endpoint="primary",outcome="ok",le="+Inf"} 1"#),
        "{prom}"
    );
    let watch = ok(run(&["watch", "--interval", "10", "--count", "2"]));
    assert_eq!(watch.matches("healthy").count(), 2 * 2, "{watch}");

    // A Redis error: 1, with the reason on stderr.
    ok(run(&["set", "s", "abc"]));
    let out = run(&["incr", "s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not an integer"), "{}", stderr(&out));

    // Usage errors: 2.
    for args in [
        &[][..],
        &["frobnicate"],
        &["get"],
        &["set", "k"],
        &["set", "k", "v", "--ttl", "0"],
        &["set", "k", "v", "--ttl"],
        &["incr", "k", "many"],
        &["stats", "--json"],
        &["--url"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("usage:"), "{args:?}");
    }
    // Configuration errors: 2, naming what is wrong.
    let mut bad = env.clone();
    bad.push(("CACHE_MAX_CONNECTIONS", "lots".into()));
    let out = cli(&exe, &bad, &["ping"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("CACHE_MAX_CONNECTIONS"),
        "{}",
        stderr(&out)
    );
    let out = cli(&exe, &[], &["ping"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("REDIS_URL"), "{}", stderr(&out));

    // --url wins over REDIS_URL.
    let closed = format!("redis://127.0.0.1:{}", free_port());
    let mut elsewhere = quick(&closed);
    assert_eq!(
        ok(cli(
            &exe,
            &elsewhere,
            &["--url", &redis.url(), "get", "greeting"]
        )),
        "hello"
    );
    // Redis down: 1 (the fallback is off in the CLI: nothing is answered
    // from this process' memory).
    let out = cli(&exe, &elsewhere, &["get", "greeting"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).starts_with("error: "), "{}", stderr(&out));
    let out = cli(&exe, &elsewhere, &["health"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    // ... unless the environment turns it on.
    elsewhere.push(("CACHE_FALLBACK_MODE", "on_failure".into()));
    assert_eq!(ok(cli(&exe, &elsewhere, &["get", "greeting"])), "(nil)");
}

//! Tests of the test harness itself (`tests/support/`): the real server,
//! the fault proxy and the fake server each produce what they promise, and
//! `resilient_redis::Error` classifies what a plain `redis::Connection` sees.

// Test code: a failed unwrap is a failed test with a clear location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use redis::Commands;
use resilient_redis::{Error, ErrorClass, ErrorKind};
use support::{connect, ms, FakeRedis, FaultProxy, Mode, RedisServer};

/// A server and a proxy in front of it.
fn proxied() -> (RedisServer, FaultProxy) {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    (server, proxy)
}

/// A plain connection through `url`, with timeouts generous enough for a
/// loaded machine; tests that expect a timeout set a short one themselves.
#[track_caller]
fn conn(url: &str) -> redis::Connection {
    connect(url, Duration::from_secs(5)).unwrap()
}

/// Runs `GET k` and classifies the error it must produce.
fn get_error(conn: &mut redis::Connection) -> Error {
    let err = conn.get::<_, Option<String>>("k").unwrap_err();
    Error::from(err)
}

#[test]
fn server_answers_and_restarts_on_the_same_port() {
    let mut server = RedisServer::new();
    let port = server.port();
    let mut conn = server.connection();
    let _: () = conn.set("k", "v").unwrap();
    assert_eq!(conn.get::<_, String>("k").unwrap(), "v");

    server.stop();
    assert!(std::net::TcpStream::connect(server.addr()).is_err());
    assert!(!server.is_running());

    server.start();
    assert_eq!(server.port(), port);
    let mut conn = server.connection();
    // No persistence: the restarted server is empty.
    assert_eq!(conn.get::<_, Option<String>>("k").unwrap(), None);

    server.restart();
    assert_eq!(server.port(), port);
    let pong: String = redis::cmd("PING").query(&mut server.connection()).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn server_takes_extra_args() {
    let server = RedisServer::builder().password("s3cret").start();
    let mut conn = server.connection();
    let pong: String = redis::cmd("PING").query(&mut conn).unwrap();
    assert_eq!(pong, "PONG");
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("requirepass")
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        config,
        vec!["requirepass".to_string(), "s3cret".to_string()]
    );
}

#[test]
fn server_directory_is_removed_on_drop() {
    let server = RedisServer::new();
    let dir = server.dir().to_path_buf();
    assert!(dir.join("redis.log").exists());
    drop(server);
    assert!(!dir.exists());
}

#[test]
fn proxy_passes_through_and_counts_connections() {
    let (_server, proxy) = proxied();
    let mut c = conn(&proxy.url());
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    assert_eq!(proxy.connections_accepted(), 1);
    assert_eq!(proxy.connections_open(), 1);
    let _c2 = conn(&proxy.url());
    assert_eq!(proxy.connections_accepted(), 2);
}

#[test]
fn reset_mode_resets_existing_and_new_connections() {
    let (_server, proxy) = proxied();
    let mut c = conn(&proxy.url());
    proxy.set_mode(Mode::Reset);
    assert_eq!(proxy.connections_open(), 0);
    let err = get_error(&mut c);
    assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("reset"), "{err}");

    // New connections are reset too (during the connection handshake).
    let err = Error::from(connect(&proxy.url(), ms(300)).map(|_| ()).unwrap_err());
    assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
    assert!(err.is_transient());

    proxy.set_mode(Mode::PassThrough);
    let mut c = conn(&proxy.url());
    assert_eq!(c.get::<_, Option<String>>("k").unwrap(), None);
}

#[test]
fn blackhole_times_out() {
    let (_server, proxy) = proxied();
    let mut c = conn(&proxy.url());
    c.set_read_timeout(Some(ms(300))).unwrap();
    proxy.set_mode(Mode::Blackhole);
    let err = get_error(&mut c);
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(err.is_timeout() && err.is_transient());

    // A new connection is accepted but its handshake never gets an answer.
    let err = Error::from(connect(&proxy.url(), ms(300)).map(|_| ()).unwrap_err());
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
}

#[test]
fn refuse_refuses_new_connections_until_switched_back() {
    let (_server, proxy) = proxied();
    proxy.set_mode(Mode::Refuse);
    let err = Error::from(connect(&proxy.url(), ms(300)).map(|_| ()).unwrap_err());
    assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().contains("refused"), "{err}");
    assert_eq!(proxy.connections_accepted(), 0);

    proxy.set_mode(Mode::PassThrough);
    let mut c = conn(&proxy.url());
    assert_eq!(c.get::<_, Option<String>>("k").unwrap(), None);
}

#[test]
fn cut_after_request_runs_the_command_but_fails_the_client() {
    let (server, proxy) = proxied();
    let mut c = conn(&proxy.url());
    proxy.set_mode(Mode::CutAfterRequest);
    let err = Error::from(c.incr::<_, _, i64>("counter", 1).unwrap_err());
    assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
    assert!(err.may_have_executed());
    let counter: i64 = server.connection().get("counter").unwrap();
    assert_eq!(counter, 1);

    // New connections still connect (setup passes), then every data command is cut.
    let mut c = conn(&proxy.url());
    assert!(c.incr::<_, _, i64>("counter", 1).is_err());
    assert_eq!(server.connection().get::<_, i64>("counter").unwrap(), 2);
}

#[test]
fn one_shot_cut_fails_exactly_one_request() {
    let (server, proxy) = proxied();
    let mut c = conn(&proxy.url());
    proxy.cut_next_request();
    assert!(c.incr::<_, _, i64>("counter", 1).is_err());
    // Back to pass-through: a new connection (its setup is not cut) works.
    let mut c = conn(&proxy.url());
    assert_eq!(c.incr::<_, _, i64>("counter", 1).unwrap(), 2);
    assert_eq!(server.connection().get::<_, i64>("counter").unwrap(), 2);
}

#[test]
fn one_shot_resets_fail_exactly_once() {
    let (server, proxy) = proxied();
    let mut existing = conn(&proxy.url());

    proxy.reset_next_request();
    let err = Error::from(existing.incr::<_, _, i64>("counter", 1).unwrap_err());
    assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
    assert!(err.to_string().contains("reset"), "{err}");
    // The request was not forwarded.
    assert_eq!(
        server
            .connection()
            .get::<_, Option<i64>>("counter")
            .unwrap(),
        None
    );
    let mut c = conn(&proxy.url());
    assert_eq!(c.incr::<_, _, i64>("counter", 1).unwrap(), 1);

    proxy.reset_next_connection();
    assert!(connect(&proxy.url(), ms(300)).is_err());
    let mut c = conn(&proxy.url());
    assert_eq!(c.incr::<_, _, i64>("counter", 1).unwrap(), 2);
}

#[test]
fn close_after_bytes_cuts_a_reply_short() {
    let (server, proxy) = proxied();
    let _: () = server.connection().set("k", "a fairly long value").unwrap();
    let mut c = conn(&proxy.url());
    proxy.set_mode(Mode::CloseAfterBytes(3));
    let err = get_error(&mut c);
    assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
    assert!(err.is_transient());
}

#[test]
fn latency_still_works() {
    let (_server, proxy) = proxied();
    proxy.set_mode(Mode::Latency(ms(20)));
    let mut c = connect(&proxy.url(), Duration::from_secs(2)).unwrap();
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    assert_eq!(proxy.mode(), Mode::Latency(ms(20)));
}

#[test]
fn quota_exceeded_answers_every_command_without_forwarding() {
    let (server, proxy) = proxied();
    let mut direct = server.connection();
    proxy.set_mode(Mode::QuotaExceeded);
    // Connection setup still passes: connecting works.
    let mut c = conn(&proxy.url());
    let err = Error::from(c.set::<_, _, ()>("k", "v").unwrap_err());
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err:?}");
    assert!(!err.may_have_executed(), "{err:?}");
    assert_eq!(direct.get::<_, Option<String>>("k").unwrap(), None);
    // A pipelined chunk gets one error per command, and the connection
    // stays in step: the next command gets its own answer.
    let pipelined = redis::pipe()
        .cmd("SET")
        .arg("a")
        .arg("1")
        .cmd("GET")
        .arg("a")
        .cmd("PING")
        .query::<redis::Value>(&mut c);
    let err = Error::from(pipelined.unwrap_err());
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err:?}");
    let err = Error::from(redis::cmd("PING").query::<String>(&mut c).unwrap_err());
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err:?}");
    assert_eq!(direct.get::<_, Option<String>>("a").unwrap(), None);
    // A large value arrives in several reads and is still answered once.
    let big = "x".repeat(200_000);
    let err = Error::from(c.set::<_, _, ()>("big", &big).unwrap_err());
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err:?}");
    proxy.set_mode(Mode::PassThrough);
    let _: () = c.set("k", "v2").unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v2");
    assert_eq!(direct.get::<_, Option<String>>("big").unwrap(), None);
}

#[test]
fn proxy_to_a_stopped_server_fails_the_connection() {
    let (mut server, proxy) = proxied();
    server.stop();
    let err = Error::from(connect(&proxy.url(), ms(300)).map(|_| ()).unwrap_err());
    assert_eq!(err.kind(), ErrorKind::Connection, "{err:?}");
}

#[test]
fn fake_redis_serves_data_and_rate_limits() {
    let fake = FakeRedis::new();
    let mut c = conn(&fake.url());
    let _: () = c.set("k", "v").unwrap();
    assert_eq!(c.get::<_, String>("k").unwrap(), "v");
    assert_eq!(c.incr::<_, _, i64>("n", 1).unwrap(), 1);
    assert!(c.exists::<_, bool>("k").unwrap());
    assert_eq!(c.del::<_, i64>("k").unwrap(), 1);

    fake.rate_limit_after(1);
    assert_eq!(c.incr::<_, _, i64>("n", 1).unwrap(), 2);
    let err = get_error(&mut c);
    assert_eq!(err.kind(), ErrorKind::RateLimited, "{err:?}");
    assert_eq!(err.class(), ErrorClass::RateLimited);
    let limit = err.rate_limit().unwrap();
    assert_eq!(limit.limit, Some(10000));
    assert_eq!(limit.usage, Some(10000));
    // PING is refused too, like Upstash.
    let ping = redis::cmd("PING").query::<String>(&mut c).unwrap_err();
    assert_eq!(Error::from(ping).kind(), ErrorKind::RateLimited);

    fake.stop_rate_limiting();
    assert_eq!(c.incr::<_, _, i64>("n", 1).unwrap(), 3);
    assert_eq!(fake.count_of("incrby"), 3);
    assert_eq!(fake.count_of("PING"), 1);
    assert!(fake.commands_received() >= 9);
}

#[test]
fn fake_redis_reply_override() {
    let fake = FakeRedis::new();
    let mut c = conn(&fake.url());
    fake.reply_override(Some(
        b"-LOADING Redis is loading the dataset in memory\r\n".to_vec(),
    ));
    let err = get_error(&mut c);
    assert_eq!(err.kind(), ErrorKind::Server, "{err:?}");
    assert!(err.is_transient());
    fake.reply_override(None);
    assert_eq!(c.get::<_, Option<String>>("k").unwrap(), None);
}

#[test]
fn wrongtype_is_permanent_and_does_not_count() {
    let server = RedisServer::new();
    let mut c = server.connection();
    let _: () = c.lpush("list", "x").unwrap();
    let err = Error::from(c.get::<_, String>("list").unwrap_err());
    assert_eq!(err.kind(), ErrorKind::Server, "{err:?}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(!err.counts_against_breaker());
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
}

#[test]
fn debug_sleep_times_out() {
    let server = RedisServer::new();
    let mut c = connect(&server.url(), ms(200)).unwrap();
    let err = Error::from(
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(1)
            .exec(&mut c)
            .unwrap_err(),
    );
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(err.is_transient() && err.counts_against_breaker());
}

#[test]
fn oom_is_permanent() {
    let server = RedisServer::new();
    let mut c = server.connection();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .exec(&mut c)
        .unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .exec(&mut c)
        .unwrap();
    let err = Error::from(c.set::<_, _, ()>("k", "v").unwrap_err());
    assert_eq!(err.kind(), ErrorKind::Server, "{err:?}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.to_string().contains("OOM"), "{err}");
}

#[test]
fn missing_password_is_an_auth_error() {
    let server = RedisServer::builder().password("s3cret").start();
    // redis-rs sends no AUTH without a password, so the first command fails.
    let mut c = conn(&server.url());
    let err = get_error(&mut c);
    assert_eq!(err.kind(), ErrorKind::Auth, "{err:?}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(err.counts_against_breaker());
}

#[test]
fn wrong_password_is_an_auth_error() {
    let server = RedisServer::builder().password("s3cret").start();
    let url = format!("redis://:wrong@127.0.0.1:{}", server.port());
    let err = Error::from(connect(&url, ms(300)).map(|_| ()).unwrap_err());
    assert_eq!(err.kind(), ErrorKind::Auth, "{err:?}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(!err.to_string().contains("wrong"), "password leaked: {err}");
}

/// Names of this process's threads (Linux only), to check for leaks.
#[cfg(target_os = "linux")]
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn dropping_the_proxy_ends_all_its_threads() {
    let (_server, proxy) = proxied();
    let prefix = format!("fp{}", proxy.port());
    let mut c = conn(&proxy.url());
    let _c2 = conn(&proxy.url());
    c.set_read_timeout(Some(ms(300))).unwrap();
    proxy.set_mode(Mode::Blackhole);
    assert!(get_error(&mut c).is_timeout());
    let ours = |names: Vec<String>| names.iter().filter(|n| n.starts_with(&prefix)).count();
    // Acceptor plus two pumps per connection.
    assert_eq!(ours(thread_names()), 5);
    drop(proxy);
    // Drop joined them; the kernel may list an exited thread a moment longer.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while ours(thread_names()) > 0 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(ours(thread_names()), 0);
}

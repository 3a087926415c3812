//! Tests of the test harness itself (`tests/support/`): the real server,
//! the fault proxy and the fake server each produce what they promise, and
//! `resilient_redis::Error` classifies what a plain `redis::Connection` sees.

// Test code: a failed unwrap is a failed test with a clear location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use redis::Commands;
use support::RedisServer;

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

//! Tests of the classification, with `redis` errors parsed from real reply bytes.

use super::*;

/// The `redis` error of a reply's bytes (an error reply, or a parse error):
/// the tests' one way to make the errors a server gives.
pub(crate) fn server_error(reply: &[u8]) -> redis::RedisError {
    match redis::parse_redis_value(reply) {
        Ok(value) => match value.extract_error() {
            Err(e) => e,
            Ok(v) => panic!("not an error reply: {v:?}"),
        },
        Err(e) => e,
    }
}

#[test]
fn error_is_one_pointer() {
    assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
}

#[test]
fn error_is_send_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Error>();
}

#[test]
fn io_errors_are_transient() {
    for (kind, expected, text) in [
        (
            io::ErrorKind::ConnectionReset,
            ErrorKind::Connection,
            "reset",
        ),
        (
            io::ErrorKind::ConnectionRefused,
            ErrorKind::Connection,
            "refused",
        ),
        (
            io::ErrorKind::BrokenPipe,
            ErrorKind::Connection,
            "broken pipe",
        ),
        (
            io::ErrorKind::UnexpectedEof,
            ErrorKind::Connection,
            "closed",
        ),
        (io::ErrorKind::TimedOut, ErrorKind::Timeout, "timed out"),
        (io::ErrorKind::WouldBlock, ErrorKind::Timeout, "timed out"),
    ] {
        let e = Error::from_redis(io::Error::from(kind).into());
        assert_eq!(e.kind(), expected, "{kind:?}");
        assert!(e.is_transient(), "{kind:?}");
        assert!(e.counts_against_breaker(), "{kind:?}");
        assert!(e.to_string().contains(text), "{kind:?}: {e}");
        assert!(e.source().is_some());
    }
    let e = Error::from_redis(io::Error::from(io::ErrorKind::TimedOut).into());
    assert!(e.is_timeout());
}

#[test]
fn transient_server_replies() {
    for reply in [
        &b"-LOADING Redis is loading the dataset in memory\r\n"[..],
        b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
        b"-BUSY Redis is busy running a script.\r\n",
        b"-MASTERDOWN Link with MASTER is down\r\n",
        b"-CLUSTERDOWN The cluster is down\r\n",
        b"-READONLY You can't write against a read only replica.\r\n",
    ] {
        let e = Error::from_redis(server_error(reply));
        assert_eq!(e.kind(), ErrorKind::Server, "{e}");
        assert_eq!(e.class(), ErrorClass::Transient, "{e}");
        assert!(e.counts_against_breaker(), "{e}");
    }
}

#[test]
fn permanent_server_replies_do_not_trip_the_breaker() {
    for reply in [
        &b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"[..],
        b"-ERR syntax error\r\n",
        b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
        b"-EXECABORT Transaction discarded because of previous errors.\r\n",
        b"-NOSCRIPT No matching script.\r\n",
        b"-ERR max request size exceeded. Limit: 1048576 bytes\r\n",
    ] {
        let e = Error::from_redis(server_error(reply));
        assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
        assert!(!e.counts_against_breaker(), "{e}");
        assert!(!e.is_rate_limited(), "{e}");
    }
}

#[test]
fn auth_failures_are_permanent_but_count() {
    for reply in [
        &b"-NOAUTH Authentication required.\r\n"[..],
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    ] {
        let e = Error::from_redis(server_error(reply));
        assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert!(e.counts_against_breaker());
    }
}

#[test]
fn rate_limit_replies_are_parsed() {
    let e = Error::from_redis(server_error(
        b"-ERR max requests limit exceeded. Limit: 10000, Usage: 10000. See https://upstash.com/docs/redis/troubleshooting/max_requests_limit for details\r\n",
    ));
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert!(e.is_rate_limited());
    assert!(!e.counts_against_breaker());
    let limit = e.rate_limit().cloned().unwrap_or_default();
    assert_eq!(limit.limit, Some(10000));
    assert_eq!(limit.usage, Some(10000));

    let e = Error::from_redis(server_error(
        b"-ERR max daily request limit exceeded. Limit: 500000, Usage: 500001\r\n",
    ));
    assert_eq!(e.rate_limit().and_then(|l| l.usage), Some(500001));

    let e = Error::from_redis(server_error(
        b"-ERR max concurrent connections exceeded\r\n",
    ));
    assert!(e.is_rate_limited());
    assert_eq!(e.rate_limit().and_then(|l| l.limit), None);
}

#[test]
fn rate_limit_reset_hint() {
    let limit = parse_rate_limit("ERR rate limit exceeded, retry after 42 seconds");
    assert_eq!(
        limit.and_then(|l| l.reset_after),
        Some(Duration::from_secs(42))
    );
    assert_eq!(parse_rate_limit("ERR unknown command"), None);
    // Numbers that overflow are ignored, not a panic.
    let limit = parse_rate_limit("ERR max requests limit exceeded. Limit: 99999999999999999999999");
    assert_eq!(limit.and_then(|l| l.limit), None);
    // A reset hint too long for a u64 still says "not soon": it saturates
    // (the router clamps it to its maximum cooldown).
    let limit =
        parse_rate_limit("ERR max requests limit exceeded, retry after 99999999999999999999");
    assert_eq!(
        limit.and_then(|l| l.reset_after),
        Some(Duration::from_secs(u64::MAX))
    );
}

#[test]
fn long_server_text_is_truncated_on_a_char_boundary() {
    let long = format!("-ERR {}\r\n", "é".repeat(500));
    let e = Error::from_redis(server_error(long.as_bytes()));
    assert!(e.to_string().len() < 300, "{}", e.to_string().len());
}

#[test]
fn parse_errors_and_type_mismatches() {
    let e = Error::from_redis(server_error(b"?garbage\r\n"));
    assert_eq!(e.kind(), ErrorKind::UnexpectedReply);
    assert_eq!(e.class(), ErrorClass::Permanent);

    let conv: Result<i64, _> = redis::from_redis_value(redis::Value::SimpleString("abc".into()));
    let e = Error::from_redis(conv.err().map(redis::RedisError::from).unwrap_or_else(|| {
        redis::RedisError::from(io::Error::other("conversion unexpectedly succeeded"))
    }));
    assert_eq!(e.kind(), ErrorKind::UnexpectedReply, "{e}");
}

#[test]
fn display_is_this_layer_and_debug_is_structured() {
    let e =
        Error::config("CACHE_MAX_CONNECTIONS: expected a whole number from 1 to 10000, got \"x\"");
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().starts_with("CACHE_MAX_CONNECTIONS"));
    let debug = format!("{e:?}");
    assert!(debug.contains("kind: Config"), "{debug}");
}

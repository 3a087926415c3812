//! `redis::Commands` on `Client` (`ConnectionLike` for `Client` and
//! `&Client`) against real servers: the commands work, the idempotency
//! table decides retries, the breaker and failover apply, the memory
//! fallback does not answer them, the key prefix is not applied, and keys
//! written during an outage are not read stale through them.

// Test code: a failed unwrap is a failed test, with the error printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use resilient_redis::redis::{self, Commands, ConnectionLike, RedisResult};
use resilient_redis::{Client, Config, ConfigBuilder, Error, ErrorKind, FallbackMode, ManualClock};
use support::{ms, FakeRedis, FaultProxy, Mode, RedisServer};

fn fast(url: &str) -> ConfigBuilder {
    Config::builder(url)
        .connect_timeout(ms(500))
        .socket_timeout(ms(500))
        .checkout_timeout(ms(500))
        .retry_base_delay(ms(5))
        .retry_max_delay(ms(20))
}

fn kind(e: &redis::RedisError) -> Option<ErrorKind> {
    Error::from_redis_error(e).map(Error::kind)
}

#[test]
fn the_commands_surface_works_on_a_client() {
    let server = RedisServer::new();
    let client = Client::new(fast(&server.url()).build().unwrap()).unwrap();
    let mut raw = server.connection();

    // On a temporary `&Client` ...
    (&client).hset::<_, _, _, ()>("h", "name", "alice").unwrap();
    let name: Option<String> = (&client).hget("h", "name").unwrap();
    assert_eq!(name.as_deref(), Some("alice"));
    // ... or a `mut` binding of one.
    let mut conn = &client;
    let n: usize = conn.lpush("l", &["a", "b", "c"]).unwrap();
    assert_eq!(n, 3);
    let list: Vec<String> = conn.lrange("l", 0, -1).unwrap();
    assert_eq!(list, ["c", "b", "a"]);
    let added: usize = conn.zadd("z", "alice", 42).unwrap();
    assert_eq!(added, 1);
    let score: f64 = conn.zscore("z", "alice").unwrap();
    assert_eq!(score, 42.0);
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let set: bool = conn.expire_at("z", at as i64).unwrap();
    assert!(set);
    let ttl: i64 = redis::cmd("TTL").arg("z").query(&mut raw).unwrap();
    assert!(ttl > 3000 && ttl <= 3600, "ttl {ttl}");

    // SCAN with its cursor, through the client on every batch.
    for i in 0..50 {
        Commands::set::<_, _, ()>(&mut conn, format!("scan:{i}"), i).unwrap();
    }
    let mut keys: Vec<String> = conn
        .scan_match("scan:*")
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    keys.sort();
    assert_eq!(keys.len(), 50);

    // Pipelines and transactions.
    let (a, b): (i64, i64) = redis::pipe()
        .incr("p", 1)
        .incr("p", 2)
        .query(&mut conn)
        .unwrap();
    assert_eq!((a, b), (1, 3));
    let (c,): (i64,) = redis::pipe()
        .atomic()
        .incr("p", 4)
        .query(&mut conn)
        .unwrap();
    assert_eq!(c, 7);

    // An error reply is redis-rs' own, and does not trip the breaker.
    let err = conn.lpush::<_, _, i64>("h", "x").unwrap_err();
    assert_eq!(err.code(), Some("WRONGTYPE"), "{err}");
    assert_eq!(kind(&err), None);
    assert!(conn.check_connection());

    let stats = client.stats();
    assert!(stats.requests >= 60, "{}", stats.requests);
    assert_eq!(stats.errors_permanent, 1);
    assert_eq!(stats.errors_transient, 0);
    assert_eq!(
        client.breaker_state(),
        Some(resilient_redis::BreakerState::Closed)
    );
}

#[test]
fn the_key_prefix_applies_to_cache_methods_only() {
    let server = RedisServer::new();
    let client = Client::new(fast(&server.url()).key_prefix("app:").build().unwrap()).unwrap();
    let mut raw = server.connection();
    let mut conn = &client;

    // `get`, `set`, `incr`, ... are also inherent cache methods, which win
    // in method syntax: name the trait for redis-rs' own.
    Commands::set::<_, _, ()>(&mut conn, "k", "raw").unwrap();
    client.set("k", "cache").unwrap();
    client
        .execute::<()>(redis::cmd("SET").arg("e").arg("1"))
        .unwrap();
    let mut pipe = redis::pipe();
    pipe.set("p", "1").ignore();
    client.pipeline::<()>(&pipe).unwrap();

    let get = |raw: &mut redis::Connection, k: &str| -> Option<String> {
        redis::cmd("GET").arg(k).query(raw).unwrap()
    };
    // Commands, execute and pipeline send keys as given ...
    assert_eq!(get(&mut raw, "k").as_deref(), Some("raw"));
    assert_eq!(get(&mut raw, "e").as_deref(), Some("1"));
    assert_eq!(get(&mut raw, "p").as_deref(), Some("1"));
    assert_eq!(get(&mut raw, "app:e"), None);
    // ... the cache methods prefix them.
    assert_eq!(get(&mut raw, "app:k").as_deref(), Some("cache"));
    assert_eq!(
        client.get::<_, String>("k").unwrap().as_deref(),
        Some("cache")
    );
    // `prefixed_key` names the cache methods' key in the raw namespace.
    let key = client.prefixed_key("k");
    assert_eq!(key, b"app:k");
    let v: Option<String> = Commands::get(&mut conn, &key).unwrap();
    assert_eq!(v.as_deref(), Some("cache"));
}

#[test]
fn retries_follow_the_idempotency_table() {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let client = Client::new(
        fast(&proxy.url())
            .fallback_mode(FallbackMode::Disabled)
            .build()
            .unwrap(),
    )
    .unwrap();
    let mut conn = &client;
    let mut raw = server.connection();

    // LPUSH is not idempotent: after a cut that may have reached Redis it
    // is not sent again, and the error says it may have run.
    proxy.cut_next_request();
    let err = conn.lpush::<_, _, i64>("l", "x").unwrap_err();
    let inner = Error::from_redis_error(&err).expect("the crate's error inside");
    assert!(inner.may_have_executed(), "{inner}");
    let len: i64 = redis::cmd("LLEN").arg("l").query(&mut raw).unwrap();
    assert_eq!(len, 1, "applied exactly once");
    assert_eq!(client.stats().retries, 0);

    // HSET is: retried through the same cut, transparently.
    proxy.cut_next_request();
    conn.hset::<_, _, _, ()>("h", "f", "v").unwrap();
    assert_eq!(client.stats().retries, 1);
    // So is a pipeline of idempotent commands; a transaction is not.
    proxy.cut_next_request();
    let (v,): (String,) = redis::pipe().hget("h", "f").query(&mut conn).unwrap();
    assert_eq!(v, "v");
    assert_eq!(client.stats().retries, 2);
    proxy.cut_next_request();
    let err = redis::pipe()
        .atomic()
        .hget("h", "f")
        .query::<(String,)>(&mut conn)
        .unwrap_err();
    assert!(Error::from_redis_error(&err).is_some(), "{err}");
    assert_eq!(client.stats().retries, 2);
}

#[test]
fn the_breaker_applies_and_memory_does_not_answer() {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let client = Client::new(fast(&proxy.url()).failure_threshold(2).build().unwrap()).unwrap();
    let mut conn = &client;
    conn.hset::<_, _, _, ()>("h", "f", "v").unwrap();
    client.set("cached", "v").unwrap();

    proxy.set_mode(Mode::Refuse);
    proxy.reset_all();
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let r: RedisResult<Option<String>> = conn.hget("h", "f");
        kinds.push(kind(&r.unwrap_err()));
    }
    // Refused, then rejected by the open breaker without a socket wait.
    assert_eq!(
        kinds.last(),
        Some(&Some(ErrorKind::CircuitOpen)),
        "{kinds:?}"
    );
    // The cache methods are answered from memory meanwhile; Commands are not.
    client.set("during", "outage").unwrap();
    let stats = client.stats();
    assert_eq!(stats.fallback_reads, 0);
    assert_eq!(stats.fallback_writes, 1);
    assert_eq!(stats.errors_transient, 4);
}

/// Redis holds V1; outage; `set(k, V2)` goes to memory; Redis answers
/// again: a read through `Commands` gets V2's invalidation first (a miss),
/// never V1.
#[test]
fn a_key_written_during_an_outage_is_not_read_stale_through_commands() {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let clock = ManualClock::new();
    let client = Client::builder(
        fast(&proxy.url())
            .failure_threshold(1)
            .open_timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    )
    .clock(clock.shared())
    .build()
    .unwrap();
    client.set("k", "V1").unwrap();
    proxy.set_mode(Mode::Refuse);
    proxy.reset_all();
    client.set("k", "V2").unwrap();
    assert_eq!(client.stats().journal_len, 1);
    proxy.set_mode(Mode::PassThrough);
    clock.advance(Duration::from_secs(6));
    let mut conn = &client;
    let got: Option<String> = Commands::get(&mut conn, "k").unwrap();
    assert_ne!(got.as_deref(), Some("V1"), "stale read through Commands");
    let got: Option<String> = redis::cmd("GET").arg("k").query(&mut conn).unwrap();
    assert_ne!(got.as_deref(), Some("V1"), "stale read through Cmd::query");
}

#[test]
fn commands_fail_over_and_are_never_sent_twice() {
    let fake = FakeRedis::new();
    let secondary = RedisServer::new();
    fake.rate_limit_after(0);
    let config = fast(&fake.url())
        .fallback_url(secondary.url())
        .build()
        .unwrap();
    let client = Client::builder(config)
        .clock(ManualClock::new().shared())
        .build()
        .unwrap();
    let mut conn = &client;
    // Refused by the quota (so certainly not run), re-sent once, to the
    // secondary.
    let n: i64 = Commands::incr(&mut conn, "counter", 5).unwrap();
    assert_eq!(n, 5);
    assert_eq!(fake.count_of("INCRBY"), 1);
    let mut raw = secondary.connection();
    let on_secondary: i64 = redis::cmd("GET").arg("counter").query(&mut raw).unwrap();
    assert_eq!(on_secondary, 5);
    conn.hset::<_, _, _, ()>("h", "f", "v").unwrap();
    let v: String = redis::cmd("HGET")
        .arg("h")
        .arg("f")
        .query(&mut raw)
        .unwrap();
    assert_eq!(v, "v");
    // A command whose keys the client cannot tell stays off the secondary.
    let err = redis::cmd("FLUSHDB").query::<()>(&mut conn).unwrap_err();
    assert_eq!(kind(&err), Some(ErrorKind::Unsupported), "{err}");
    let still: i64 = redis::cmd("DBSIZE").query(&mut raw).unwrap();
    assert_eq!(still, 2);
}

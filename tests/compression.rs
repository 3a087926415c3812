//! Value compression (`compression_threshold`) against a real
//! `redis-server`: what Redis stores, what callers read back, and that every
//! value path (set, set_ex, mset, get, mget, the memory fallback, replay
//! after an outage, write-through) sees the compressed form.
#![cfg(feature = "compression")]
// Test code: a failed unwrap is a failed test, with the error printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use resilient_redis::{redis, Client, Config, ConfigBuilder, ErrorKind, FallbackMode, Reconcile};
use support::{ms, RedisServer};

/// The header of a compressed value: `\xFF` `rr1`.
const MAGIC: &[u8] = b"\xFFrr1";

fn json(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 64);
    let mut i = 0u64;
    while v.len() < n {
        v.extend_from_slice(
            format!("{{\"id\":{i},\"name\":\"user {i}\",\"tags\":[\"a\",\"b\"]}},").as_bytes(),
        );
        i += 1;
    }
    v.truncate(n);
    v
}

fn fast(url: &str) -> ConfigBuilder {
    Config::builder(url)
        .connect_timeout(ms(500))
        .socket_timeout(ms(500))
        .checkout_timeout(ms(500))
        .max_retries(0)
}

fn raw_get(server: &RedisServer, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut server.connection())
        .unwrap()
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

#[test]
fn values_above_the_threshold_are_stored_compressed_and_read_back() {
    let server = RedisServer::new();
    let client = Client::new(
        fast(&server.url())
            .compression_threshold(Some(512))
            .build()
            .unwrap(),
    )
    .unwrap();
    let big = json(64 << 10);
    let small = json(100);

    client.set("big", &big[..]).unwrap();
    client
        .set_ex("big-ex", &big[..], Duration::from_secs(60))
        .unwrap();
    client.set("small", &small[..]).unwrap();
    client
        .mset(&[("m1", &big[..]), ("m2", &small[..])])
        .unwrap();

    for key in ["big", "big-ex", "m1"] {
        let stored = raw_get(&server, key).unwrap();
        assert!(stored.starts_with(MAGIC), "{key}");
        assert!(
            stored.len() < big.len() / 4,
            "{key}: {} bytes",
            stored.len()
        );
        // The original length follows the magic, little-endian.
        assert_eq!(stored[4..8], (big.len() as u32).to_le_bytes());
    }
    assert_eq!(raw_get(&server, "small").unwrap(), small);
    assert_eq!(raw_get(&server, "m2").unwrap(), small);

    let got: Option<Vec<u8>> = client.get("big").unwrap();
    assert_eq!(got.as_deref(), Some(&big[..]));
    let got: Option<Vec<u8>> = client.get("big-ex").unwrap();
    assert_eq!(got.as_deref(), Some(&big[..]));
    let many: Vec<Option<Vec<u8>>> = client.mget(&["m1", "m2", "small", "none"]).unwrap();
    assert_eq!(
        many,
        vec![Some(big.clone()), Some(small.clone()), Some(small), None]
    );

    let s = client.stats();
    assert_eq!(s.values_compressed, 3);
    assert_eq!(s.values_decompressed, 3);
    assert_eq!(s.compression_input_bytes, 3 * big.len() as u64);
    assert!(s.compression_output_bytes < s.compression_input_bytes / 4);
    let text = s.to_prometheus();
    assert!(
        text.contains("resilient_redis_values_compressed_total 3"),
        "{text}"
    );
}

#[test]
fn compression_is_off_by_default_and_reads_work_either_way() {
    let server = RedisServer::new();
    let plain = Client::new(fast(&server.url()).build().unwrap()).unwrap();
    let compressing = Client::new(
        fast(&server.url())
            .compression_threshold(Some(0))
            .build()
            .unwrap(),
    )
    .unwrap();
    let big = json(8 << 10);

    plain.set("plain", &big[..]).unwrap();
    assert_eq!(raw_get(&server, "plain").unwrap(), big);
    compressing.set("packed", &big[..]).unwrap();
    assert!(raw_get(&server, "packed").unwrap().starts_with(MAGIC));

    // Each reads what the other wrote.
    let got: Option<Vec<u8>> = plain.get("packed").unwrap();
    assert_eq!(got.as_deref(), Some(&big[..]));
    let got: Option<Vec<u8>> = compressing.get("plain").unwrap();
    assert_eq!(got.as_deref(), Some(&big[..]));
}

#[test]
fn values_that_look_compressed_but_are_not_read_as_stored() {
    let server = RedisServer::new();
    let client = Client::new(
        fast(&server.url())
            .compression_threshold(Some(512))
            .build()
            .unwrap(),
    )
    .unwrap();
    let mut raw = server.connection();
    let forged: Vec<Vec<u8>> = vec![
        MAGIC.to_vec(),
        [MAGIC, &[0xFF, 0xFF, 0xFF, 0x7F], b"tiny"].concat(),
        [MAGIC, &[100, 0, 0, 0], &[0xF0, 1, 2, 3]].concat(),
    ];
    for (i, v) in forged.iter().enumerate() {
        let _: () = redis::cmd("SET")
            .arg(format!("f{i}"))
            .arg(&v[..])
            .query(&mut raw)
            .unwrap();
        let got: Option<Vec<u8>> = client.get(format!("f{i}")).unwrap();
        assert_eq!(got.as_ref(), Some(v), "f{i}");
    }
    assert_eq!(client.stats().values_undecodable, 3);
    assert_eq!(client.stats().errors(), 0);
}

#[test]
fn the_memory_store_holds_the_compressed_form() {
    // 32 KiB of memory: a 64 KiB JSON value fits only compressed.
    let memory = |threshold| {
        Client::new(
            Config::memory_only()
                .fallback_max_entries(1)
                .fallback_max_bytes(32 << 10)
                .compression_threshold(threshold)
                .build()
                .unwrap(),
        )
        .unwrap()
    };
    let big = json(64 << 10);
    let client = memory(Some(512));
    client.set("big", &big[..]).unwrap();
    let got: Option<Vec<u8>> = client.get("big").unwrap();
    assert_eq!(got.as_deref(), Some(&big[..]));

    let err = memory(None).set("big", &big[..]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
}

#[test]
fn replay_after_an_outage_writes_the_compressed_form() {
    let mut server = RedisServer::new();
    let config = fast(&server.url())
        .compression_threshold(Some(512))
        .failure_threshold(1000)
        .build()
        .unwrap();
    let client = Client::builder(config)
        .reconcile(Reconcile::Replay)
        .build()
        .unwrap();
    let big = json(32 << 10);
    server.stop();
    client.set("k", &big[..]).unwrap();
    assert!(client.stats().fallback_writes >= 1);
    server.start();
    // Any call that reaches Redis releases the fallback; the background
    // thread replays the journal.
    wait_until("Redis to answer", || client.ping().is_ok());
    wait_until("the replay", || client.stats().reconciled_keys >= 1);
    let stored = raw_get(&server, "k").unwrap();
    assert!(stored.starts_with(MAGIC));
    let got: Option<Vec<u8>> = client.get("k").unwrap();
    assert_eq!(got.as_deref(), Some(&big[..]));
}

#[test]
fn write_through_keeps_the_compressed_copy() {
    let mut server = RedisServer::new();
    let config = fast(&server.url())
        .compression_threshold(Some(512))
        .fallback_mode(FallbackMode::WriteThrough)
        .fallback_max_entries(1)
        .fallback_max_bytes(32 << 10)
        .build()
        .unwrap();
    let client = Client::new(config).unwrap();
    let big = json(64 << 10);
    client.set("k", &big[..]).unwrap();
    server.stop();
    // Redis is gone: the write-through copy answers, and it fit in 32 KiB
    // only because it is the compressed form.
    let got: Option<Vec<u8>> = client.get("k").unwrap();
    assert_eq!(got.as_deref(), Some(&big[..]));
    assert!(client.stats().fallback_reads >= 1);
}

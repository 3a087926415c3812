//! Value compression: LZ4 (lz4_flex, the crate's codec) beside Snappy
//! (snap, the alternative considered) on JSON-like values of 1 KB, 64 KB
//! and 1 MB: ratio, compression and decompression MB/s; then `set` and
//! `get` of a 64 KB value through `Client` against a local `redis-server`,
//! with and without compression. Run with `cargo bench --bench codec`.

// Bench code: a failure is a broken environment, panicking says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use resilient_redis::{Client, Config};

/// JSON-like records: repeated field names, varied values, as an API
/// response or a cached document looks.
fn json(n: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima",
    ];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut v = Vec::with_capacity(n + 256);
    v.push(b'[');
    let mut id = 0u64;
    while v.len() < n {
        let r = next();
        let record = format!(
            "{{\"id\":{id},\"user\":\"{}-{}\",\"score\":{}.{},\"active\":{},\"tags\":[\"{}\",\"{}\"],\"created\":\"2024-{:02}-{:02}T{:02}:{:02}:00Z\"}},",
            WORDS[(r % 12) as usize],
            r % 10_000,
            r % 1000,
            (r >> 10) % 100,
            r % 3 == 0,
            WORDS[((r >> 20) % 12) as usize],
            WORDS[((r >> 24) % 12) as usize],
            1 + (r >> 28) % 12,
            1 + (r >> 32) % 28,
            (r >> 36) % 24,
            (r >> 40) % 60,
        );
        v.extend_from_slice(record.as_bytes());
        id += 1;
    }
    v.truncate(n);
    v
}

/// Runs `f` repeatedly for about `budget`; returns MB/s of `bytes` per run.
fn mb_per_s(bytes: usize, budget: Duration, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let start = Instant::now();
    let mut runs = 0u64;
    while start.elapsed() < budget {
        f();
        runs += 1;
    }
    (bytes as f64 * runs as f64) / start.elapsed().as_secs_f64() / 1e6
}

fn codecs() {
    println!("| value | codec | ratio | compress MB/s | decompress MB/s |");
    println!("|---|---|---:|---:|---:|");
    let budget = Duration::from_millis(800);
    for (label, size) in [("1 KB", 1 << 10), ("64 KB", 64 << 10), ("1 MB", 1 << 20)] {
        let value = json(size);

        let packed = lz4_flex::block::compress(&value);
        let c = mb_per_s(size, budget, || {
            black_box(lz4_flex::block::compress(black_box(&value)));
        });
        let d = mb_per_s(size, budget, || {
            black_box(lz4_flex::block::decompress(black_box(&packed), size).unwrap());
        });
        println!(
            "| {label} | lz4_flex (safe) | {:.2} | {c:.0} | {d:.0} |",
            size as f64 / packed.len() as f64
        );

        let packed = snap::raw::Encoder::new().compress_vec(&value).unwrap();
        let c = mb_per_s(size, budget, || {
            black_box(
                snap::raw::Encoder::new()
                    .compress_vec(black_box(&value))
                    .unwrap(),
            );
        });
        let d = mb_per_s(size, budget, || {
            black_box(
                snap::raw::Decoder::new()
                    .decompress_vec(black_box(&packed))
                    .unwrap(),
            );
        });
        println!(
            "| {label} | snap | {:.2} | {c:.0} | {d:.0} |",
            size as f64 / packed.len() as f64
        );
    }
}

fn client_round_trips() {
    let server = support::RedisServer::new();
    let value = json(64 << 10);
    let run = Duration::from_secs(2);
    println!();
    println!("| 64 KB value, 1 thread | set ops/s | get ops/s | bytes in Redis |");
    println!("|---|---:|---:|---:|");
    for (label, threshold) in [
        ("no compression", None),
        ("compression (threshold 512)", Some(512)),
    ] {
        let client = Client::new(
            Config::builder(server.url())
                .compression_threshold(threshold)
                .build()
                .unwrap(),
        )
        .unwrap();
        client.set("bench:v", &value[..]).unwrap();
        let set = ops_per_s(run, || client.set("bench:v", &value[..]).unwrap());
        let get = ops_per_s(run, || {
            let v: Option<Vec<u8>> = client.get("bench:v").unwrap();
            black_box(v);
        });
        let stored: usize = resilient_redis::redis::cmd("STRLEN")
            .arg("bench:v")
            .query(&mut server.connection())
            .unwrap();
        println!("| {label} | {set:.0} | {get:.0} | {stored} |");
    }
}

fn ops_per_s(run: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < run {
        f();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    codecs();
    client_round_trips();
}

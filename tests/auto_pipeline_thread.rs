//! Automatic pipelining's lane thread (`rr-pipeline`, which reads a shared
//! connection's replies while callers contend for it) starts only once
//! callers contend, and exits with the last `Client` clone. In its own
//! test binary: the check reads this process' threads (Linux:
//! `/proc/self/task/*/comm`), and no other test here starts a client.

// Test code: a failed unwrap is a failed test, with the error printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use resilient_redis::{Client, Config};
use support::RedisServer;

const PIPELINE: &str = "rr-pipeline";

/// This process' `rr-pipeline` threads, by task id.
fn pipeline_threads() -> Vec<u64> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|t| {
            let tid: u64 = t.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
            (name.trim_end() == PIPELINE).then_some(tid)
        })
        .collect()
}

/// Polls `f` until it holds, for at most 60 s.
fn poll(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn the_lane_thread_starts_when_callers_contend_and_exits_with_the_client() {
    if std::fs::metadata("/proc/self/task").is_err() {
        eprintln!("no /proc/self/task on this platform: skipped");
        return;
    }
    let server = RedisServer::new();
    let client = Client::new(
        Config::builder(server.url())
            .auto_pipeline(true)
            .build()
            .unwrap(),
    )
    .unwrap();
    // One caller at a time leads the shared connection itself: no thread.
    for i in 0..50 {
        client.set("k", i).unwrap();
    }
    assert_eq!(pipeline_threads(), Vec::<u64>::new());

    // Callers that contend: the lead goes to the lane's thread.
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..12)
        .map(|t| {
            let (client, stop) = (client.clone(), stop.clone());
            std::thread::spawn(move || {
                let key = format!("w{t}");
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    client.set(&key, n).unwrap();
                    let read: Option<u64> = client.get(&key).unwrap();
                    assert_eq!(read, Some(n), "worker {t}");
                }
            })
        })
        .collect();
    poll("the lane thread to start", || {
        !pipeline_threads().is_empty()
    });
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    // One lane per endpoint: one thread.
    let threads = pipeline_threads();
    assert_eq!(threads.len(), 1, "{threads:?}");

    drop(client);
    poll("the lane thread to exit", || pipeline_threads().is_empty());
}

//! The failover prober thread (`rr-prober`) exits when the last `Client`
//! clone is dropped. In its own test binary: the check scans this process'
//! threads by name, and no other test here starts a client.

// Test code: a failed unwrap is a failed test, with the error printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use resilient_redis::{Client, Config};

/// Threads of this process named `rr-prober` (Linux: `/proc/self/task`).
fn probers() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|name| name.trim_end() == "rr-prober")
        .count()
}

#[test]
fn the_prober_thread_exits_with_the_last_client() {
    if std::fs::metadata("/proc/self/task").is_err() {
        eprintln!("no /proc/self/task on this platform: skipped");
        return;
    }
    assert_eq!(probers(), 0);
    // Nothing listens on these ports: no connection is made at build time.
    let config = Config::builder("redis://127.0.0.1:1")
        .fallback_url("redis://127.0.0.1:2")
        .build()
        .unwrap();
    let client = Client::new(config).unwrap();
    let clone = client.clone();
    // The new thread names itself once it runs.
    wait_for_probers(1);
    assert_eq!(probers(), 1, "one prober per client, shared by clones");
    // Without a secondary there is nothing to restore: no prober.
    let alone = Client::new(Config::builder("redis://127.0.0.1:1").build().unwrap()).unwrap();
    assert_eq!(probers(), 1);
    drop(alone);

    drop(client);
    assert_eq!(probers(), 1, "a clone still holds the client");
    drop(clone);
    // Dropping the last clone joins the thread; the kernel may list the
    // task for a moment after it was joined.
    wait_for_probers(0);
}

fn wait_for_probers(n: usize) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while probers() != n {
        assert!(Instant::now() < deadline, "expected {n} rr-prober threads");
        std::thread::yield_now();
    }
}

//! The client's background thread (`rr-prober`: it probes the primary
//! during failover and reconciles keys written during an outage) runs
//! while a client with a Redis URL lives and exits when the last `Client`
//! clone is dropped; a memory-only client has none. In its own test
//! binary: the check reads this process' threads (Linux:
//! `/proc/self/task/*/comm`), and no other test here starts threads.

// Test code: a failed unwrap is a failed test, with the error printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use resilient_redis::{Client, Config};

const PROBER: &str = "rr-prober";

/// This process' threads: task id → name.
fn tasks() -> BTreeMap<u64, String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|t| {
            let tid = t.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
            Some((tid, name.trim_end().to_string()))
        })
        .collect()
}

/// Polls `f` until it returns `Some`, for at most 10 s.
fn poll<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// The threads started since `before`, once each has named itself. A
/// thread starts with its creator's name and takes its own when it first
/// runs; every thread this crate starts has a name. Threads are created
/// before `Client::new` returns, so none is missed.
fn started_since(before: &BTreeMap<u64, String>) -> BTreeMap<u64, String> {
    let me = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
    let me = me.trim_end();
    poll("the new threads to name themselves", || {
        let new: BTreeMap<u64, String> = tasks()
            .into_iter()
            .filter(|(tid, _)| !before.contains_key(tid))
            .collect();
        new.values().all(|name| name != me).then_some(new)
    })
}

fn probers(threads: &BTreeMap<u64, String>) -> Vec<u64> {
    threads
        .iter()
        .filter(|(_, name)| *name == PROBER)
        .map(|(tid, _)| *tid)
        .collect()
}

/// The one `rr-prober` among `started`, by task id.
fn the_prober(started: &BTreeMap<u64, String>) -> u64 {
    match probers(started)[..] {
        [tid] => tid,
        _ => panic!("expected one {PROBER} thread, started: {started:?}"),
    }
}

/// Polls until the task `tid` is gone: dropping the last clone joins the
/// thread, and the kernel may list the task for a moment after that.
fn wait_gone(tid: u64) {
    poll("the prober thread to exit", || {
        (!tasks().contains_key(&tid)).then_some(())
    });
}

#[test]
fn the_prober_thread_lives_with_the_client_and_exits_with_the_last_clone() {
    if std::fs::metadata("/proc/thread-self/comm").is_err() {
        eprintln!("no /proc/thread-self on this platform: skipped");
        return;
    }
    // Nothing listens on these ports: no connection is made at build time.
    let before = tasks();
    let config = Config::builder("redis://127.0.0.1:1")
        .fallback_url("redis://127.0.0.1:2")
        .build()
        .unwrap();
    let client = Client::new(config).unwrap();
    let clone = client.clone();
    let prober = the_prober(&started_since(&before));

    // A client without a secondary has its own (it reconciles outage
    // writes); it exits with that client and leaves the other one alone.
    let before = tasks();
    let alone = Client::new(Config::builder("redis://127.0.0.1:1").build().unwrap()).unwrap();
    let alone_prober = the_prober(&started_since(&before));
    drop(alone);
    wait_gone(alone_prober);

    // A memory-only client has no Redis to probe or reconcile: no thread.
    let before = tasks();
    let memory = Client::new(Config::memory_only().build().unwrap()).unwrap();
    let started = started_since(&before);
    assert_eq!(probers(&started), [], "started: {started:?}");
    drop(memory);

    drop(client);
    assert_eq!(
        tasks().get(&prober).map(String::as_str),
        Some(PROBER),
        "a clone still holds the client"
    );
    drop(clone);
    wait_gone(prober);
    assert_eq!(probers(&tasks()), []);
}

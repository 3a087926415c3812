//! Retries against a real `redis-server` behind the fault proxy: a command
//! cut after it reached the server is re-sent only if it is idempotent, and a
//! reset connection is hidden from the caller of an idempotent command.
//!
//! Each attempt opens a fresh connection through the proxy, sets its
//! timeouts and runs the command — what the client does with its pool. The
//! retrier runs on a manual clock, so backoff costs no wall-clock time.

// Test code: a failed unwrap is a failed test with a clear location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

use redis::{Commands, FromRedisValue};
use resilient_redis::{
    Error, ErrorKind, Idempotency, ManualClock, Retrier, RetryBudget, RetryObserver, RetryPolicy,
};
use support::{connect, ms, FaultProxy, RedisServer};

/// Counts what the retrier reports, as the client's stats will.
#[derive(Default)]
struct Counter {
    retries: Cell<u32>,
    errors: RefCell<Vec<ErrorKind>>,
}

impl RetryObserver for Counter {
    fn on_retry(&self, _retry: u32, _delay: Duration, error: &Error) {
        self.retries.set(self.retries.get() + 1);
        self.errors.borrow_mut().push(error.kind());
    }
}

struct Setup {
    server: RedisServer,
    proxy: FaultProxy,
    retrier: Retrier,
}

fn setup() -> Setup {
    let server = RedisServer::new();
    let proxy = FaultProxy::new(server.addr());
    let retrier = Retrier::new(RetryPolicy::default(), Arc::new(RetryBudget::default()))
        .with_clock(ManualClock::new().shared())
        .with_seed(1);
    Setup {
        server,
        proxy,
        retrier,
    }
}

impl Setup {
    /// Runs `cmd` through the proxy under the retrier, one fresh connection
    /// per attempt.
    fn run<T: FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        idempotency: Idempotency,
        observer: &Counter,
    ) -> Result<T, Error> {
        let url = self.proxy.url();
        self.retrier
            .run(idempotency.for_cmd(cmd), observer, |_attempt| {
                let mut conn = connect(&url, ms(2000))?;
                Ok(cmd.query(&mut conn)?)
            })
    }

    /// A direct connection to the server, bypassing the proxy.
    fn direct(&self) -> redis::Connection {
        self.server.connection()
    }
}

#[test]
fn incr_cut_after_request_is_not_resent() {
    let s = setup();
    let obs = Counter::default();
    let incr = redis::cmd("INCR").arg("counter").clone();

    s.proxy.cut_next_request();
    let err = s.run::<i64>(&incr, Idempotency::Auto, &obs).unwrap_err();

    assert!(err.is_transient(), "{err:?}");
    assert!(err.may_have_executed());
    assert_eq!(obs.retries.get(), 0);
    let counter: i64 = s.direct().get("counter").unwrap();
    assert_eq!(counter, 1, "INCR must be applied exactly once");
    assert_eq!(s.retrier.budget().retries_granted(), 0);
}

/// The control for the test above: with the rule overridden, the same fault
/// makes the retry apply INCR a second time. This is the bug the rule
/// prevents, and proves the fault really runs the command on the server.
#[test]
fn incr_forced_idempotent_is_applied_twice() {
    let s = setup();
    let obs = Counter::default();
    let incr = redis::cmd("INCR").arg("counter").clone();

    s.proxy.cut_next_request();
    let value: i64 = s.run(&incr, Idempotency::Idempotent, &obs).unwrap();

    assert_eq!(value, 2);
    assert_eq!(obs.retries.get(), 1);
    let counter: i64 = s.direct().get("counter").unwrap();
    assert_eq!(counter, 2);
}

#[test]
fn get_cut_after_request_is_retried_transparently() {
    let s = setup();
    let obs = Counter::default();
    let _: () = s.direct().set("k", "v").unwrap();

    s.proxy.cut_next_request();
    let value: String = s
        .run(redis::cmd("GET").arg("k"), Idempotency::Auto, &obs)
        .unwrap();

    assert_eq!(value, "v");
    assert_eq!(obs.retries.get(), 1);
    assert_eq!(*obs.errors.borrow(), [ErrorKind::Connection]);
}

#[test]
fn set_cut_after_request_is_retried_transparently() {
    let s = setup();
    let obs = Counter::default();

    s.proxy.cut_next_request();
    let reply: String = s
        .run(
            redis::cmd("SET").arg("k").arg("v2").arg("EX").arg(60),
            Idempotency::Auto,
            &obs,
        )
        .unwrap();

    assert_eq!(reply, "OK");
    assert_eq!(obs.retries.get(), 1);
    let stored: String = s.direct().get("k").unwrap();
    assert_eq!(stored, "v2");
}

#[test]
fn set_nx_cut_after_request_is_not_resent() {
    let s = setup();
    let obs = Counter::default();

    s.proxy.cut_next_request();
    let err = s
        .run::<Option<String>>(
            redis::cmd("SET").arg("lock").arg("me").arg("NX"),
            Idempotency::Auto,
            &obs,
        )
        .unwrap_err();

    // A retry would have answered "not set" for a lock this call holds.
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(obs.retries.get(), 0);
    let holder: String = s.direct().get("lock").unwrap();
    assert_eq!(holder, "me");
}

#[test]
fn reset_connection_is_retried_once_for_an_idempotent_command() {
    let s = setup();
    let obs = Counter::default();
    let _: () = s.direct().set("k", "v").unwrap();

    s.proxy.reset_next_connection();
    let value: String = s
        .run(redis::cmd("GET").arg("k"), Idempotency::Auto, &obs)
        .unwrap();

    assert_eq!(value, "v");
    assert_eq!(obs.retries.get(), 1);
    assert_eq!(*obs.errors.borrow(), [ErrorKind::Connection]);
    assert_eq!(s.retrier.budget().retries_granted(), 1);
    assert_eq!(s.proxy.connections_accepted(), 2);
}

#[test]
fn pipelines_follow_the_same_rule() {
    let s = setup();
    let url = s.proxy.url();
    let run = |pipe: &redis::Pipeline, obs: &Counter| -> Result<Vec<i64>, Error> {
        s.retrier
            .run(Idempotency::Auto.for_pipeline(pipe), obs, |_| {
                let mut conn = connect(&url, ms(2000))?;
                Ok(pipe.query(&mut conn)?)
            })
    };

    // Idempotent pipeline: retried, the caller gets the replies.
    let mut reads = redis::pipe();
    reads
        .cmd("SET")
        .arg("a")
        .arg(5)
        .ignore()
        .cmd("GET")
        .arg("a");
    let obs = Counter::default();
    s.proxy.cut_next_request();
    assert_eq!(run(&reads, &obs).unwrap(), [5]);
    assert_eq!(obs.retries.get(), 1);

    // A transaction: not re-sent, applied once.
    let mut tx = redis::pipe();
    tx.atomic().cmd("INCR").arg("n").cmd("INCR").arg("n");
    let obs = Counter::default();
    s.proxy.cut_next_request();
    assert!(run(&tx, &obs).is_err());
    assert_eq!(obs.retries.get(), 0);
    let n: i64 = s.direct().get("n").unwrap();
    assert_eq!(n, 2);
}

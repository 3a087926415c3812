//! Operation histories of a client used by many threads at once, and the
//! checker that holds a whole history against the crate's contract (issue
//! #11): no stale read, no wrong answer, counters exact unless the Redis
//! behind them changed, no error where the fallback promises none, every
//! call within its time bound.
//!
//! The shape is Jepsen/Elle's: the workload records each operation's
//! invocation and completion instants with its arguments and result, the
//! faults and the client's events are recorded on the same time line, and
//! [`check`] judges the history afterwards. Nothing here sleeps or waits.
//!
//! The model (per key, a register; per thread, its own counters):
//!
//! - A read (GET, each key of MGET, `execute(GET)`) that returns the value
//!   written by W is **stale** when an acknowledged write or delete W2 of the
//!   same key completed before the read was invoked and W completed before
//!   W2 was invoked. A miss is always allowed (it is a cache).
//! - A write that returned an error is indeterminate: its value may appear
//!   at any time after its invocation, it never makes a read stale by itself
//!   and is never a "value never written".
//! - A read never returns a value no write produced, another key's value, a
//!   value whose write was invoked after the read completed, or a value set
//!   with a TTL after `W.completion + ttl + ttl_slack`.
//! - Between two acknowledged `incr` results r1 then r2 of one thread on one
//!   key, `r2 - r1 - 1` lies in `[0, failed incr calls in between whose
//!   error said may_have_executed]`, unless a failover or restore happened
//!   between r1's invocation and r2's completion (then only `r2 >= 1`).
//!
//! Included with `#[path = "support/history.rs"] mod history;` (it needs
//! `resilient_redis`, which the rest of `tests/support` does not).

// Compiled into test binaries that use only part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::time::Duration;

use resilient_redis::{ErrorKind, Event};

/// An instant of the history: the time since the run started.
pub type Ts = Duration;

/// One operation's call and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `client.get(key)`.
    Get { key: String },
    /// `client.mget(keys)`.
    MGet { keys: Vec<String> },
    /// `client.execute(GET key)` (no prefix, never served from memory).
    ExecGet { key: String },
    /// `client.set(key, value)`.
    Set { key: String, value: String },
    /// `client.set_ex(key, value, ttl)`.
    SetEx {
        key: String,
        value: String,
        ttl: Duration,
    },
    /// `client.mset(pairs)`.
    MSet { pairs: Vec<(String, String)> },
    /// `client.execute(SET key value)`.
    ExecSet { key: String, value: String },
    /// `client.delete(key)`.
    Delete { key: String },
    /// `client.incr(key, 1)` on one of the thread's own counters.
    Incr { key: String },
}

impl Call {
    /// A short name, for summaries.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Get { .. } => "get",
            Call::MGet { .. } => "mget",
            Call::ExecGet { .. } => "execute_get",
            Call::Set { .. } => "set",
            Call::SetEx { .. } => "set_ex",
            Call::MSet { .. } => "mset",
            Call::ExecSet { .. } => "execute_set",
            Call::Delete { .. } => "delete",
            Call::Incr { .. } => "incr",
        }
    }

    /// The cache API, which the default fallback serves from memory when
    /// Redis cannot: it never returns an availability error.
    pub fn is_cache_op(&self) -> bool {
        !matches!(
            self,
            Call::ExecGet { .. } | Call::ExecSet { .. } | Call::Incr { .. }
        )
    }

    /// The keys a read returns values of, in reply order.
    fn read_keys(&self) -> Vec<&str> {
        match self {
            Call::Get { key } | Call::ExecGet { key } => vec![key],
            Call::MGet { keys } => keys.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// What a write stores: `(key, Some(value))`, or `(key, None)` for a
    /// delete; with the TTL when there is one.
    fn writes(&self) -> Vec<(&str, Option<&str>, Option<Duration>)> {
        match self {
            Call::Set { key, value } | Call::ExecSet { key, value } => {
                vec![(key, Some(value), None)]
            }
            Call::SetEx { key, value, ttl } => vec![(key, Some(value), Some(*ttl))],
            Call::MSet { pairs } => pairs
                .iter()
                .map(|(k, v)| (k.as_str(), Some(v.as_str()), None))
                .collect(),
            Call::Delete { key } => vec![(key, None, None)],
            _ => Vec::new(),
        }
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Get { key } | Call::ExecGet { key } | Call::Delete { key } => {
                write!(f, "{} {key}", self.name())
            }
            Call::Incr { key } => write!(f, "incr {key}"),
            Call::MGet { keys } => write!(f, "mget {}", keys.join(" ")),
            Call::Set { key, value } | Call::ExecSet { key, value } => {
                write!(f, "{} {key}={value}", self.name())
            }
            Call::SetEx { key, value, ttl } => write!(f, "set_ex {key}={value} ttl {ttl:?}"),
            Call::MSet { pairs } => {
                f.write_str("mset")?;
                for (k, v) in pairs {
                    write!(f, " {k}={v}")?;
                }
                Ok(())
            }
        }
    }
}

/// What a successful call returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A write's acknowledgement.
    Done,
    /// A read's values, one per key (`None`: a miss).
    Values(Vec<Option<String>>),
    /// `incr`'s new value.
    Int(i64),
}

/// What a failed call returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: ErrorKind,
    pub may_have_executed: bool,
    pub message: String,
}

impl From<&resilient_redis::Error> for Failure {
    fn from(e: &resilient_redis::Error) -> Self {
        Failure {
            kind: e.kind(),
            may_have_executed: e.may_have_executed(),
            message: e.to_string(),
        }
    }
}

/// One operation of the history.
#[derive(Debug, Clone)]
pub struct Op {
    pub thread: usize,
    pub call: Call,
    pub invoke: Ts,
    pub complete: Ts,
    pub result: Result<Reply, Failure>,
}

impl Op {
    fn acked(&self) -> bool {
        self.result.is_ok()
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "thread {} {} [{} → {}] ",
            self.thread,
            self.call,
            secs(self.invoke),
            secs(self.complete)
        )?;
        match &self.result {
            Ok(Reply::Done) => f.write_str("ok"),
            Ok(Reply::Int(n)) => write!(f, "= {n}"),
            Ok(Reply::Values(vs)) => {
                let vs: Vec<&str> = vs.iter().map(|v| v.as_deref().unwrap_or("nil")).collect();
                write!(f, "= {}", vs.join(" "))
            }
            Err(e) => write!(
                f,
                "ERR {} (may_have_executed: {}): {}",
                e.kind.as_str(),
                e.may_have_executed,
                e.message
            ),
        }
    }
}

/// A fault injected or an event the client reported, on the history's time
/// line.
#[derive(Debug, Clone)]
pub struct Note {
    pub at: Ts,
    /// What kind, for the summary counts (`"kill_restart"`,
    /// `"failover_activated"`, ...).
    pub label: String,
    pub text: String,
    /// A failover or a restore: the Redis behind the client changed.
    pub epoch_change: bool,
    /// The worker thread the event was reported on, when it was one: the
    /// switch then happened during that thread's operation in progress.
    pub thread: Option<usize>,
}

impl Note {
    pub fn new(at: Ts, label: &str, text: impl Into<String>) -> Note {
        Note {
            at,
            label: label.to_string(),
            text: text.into(),
            epoch_change: false,
            thread: None,
        }
    }

    pub fn epoch(at: Ts, label: &str, text: impl Into<String>) -> Note {
        Note {
            epoch_change: true,
            ..Note::new(at, label, text)
        }
    }

    /// The note every history test takes for the fallback and breaker
    /// events; `None` for the others (each test notes those its own way).
    pub fn of_event(at: Ts, event: &Event) -> Option<Note> {
        Some(match event {
            Event::FallbackEngaged { cause } => Note::new(
                at,
                "fallback_engaged",
                format!("fallback engaged ({})", cause.as_str()),
            ),
            Event::FallbackReleased { .. } => {
                Note::new(at, "fallback_released", "fallback released")
            }
            Event::BreakerTransition {
                endpoint,
                transition,
                ..
            } => Note::new(
                at,
                "breaker_transition",
                format!(
                    "{endpoint} breaker {:?} → {:?}",
                    transition.from, transition.to
                ),
            ),
            _ => return None,
        })
    }
}

/// A whole run: every operation, the faults, the client's events.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub ops: Vec<Op>,
    pub faults: Vec<Note>,
    pub events: Vec<Note>,
}

/// A counter's value read directly from the primary after the run, with
/// every worker stopped and the faults healed.
#[derive(Debug, Clone)]
pub struct FinalCounter {
    pub key: String,
    /// `None`: the key does not exist (0).
    pub value: Option<i64>,
    pub read_at: Ts,
}

/// The parameters of the contract.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The longest a call may take.
    pub call_bound: Duration,
    /// Redis and the memory store expire on their own clocks; a value set
    /// with `ttl` must not be read after `completion + ttl + ttl_slack`.
    pub ttl_slack: Duration,
    /// Failover and restore events are emitted after the switch (after the
    /// command re-sent to the secondary, or after the invalidation that
    /// follows a restore). A switch reported at `t` on a worker thread
    /// happened during that thread's operation in progress, in
    /// `[op.invoke, t]`; reported elsewhere (the prober), in
    /// `[t - epoch_slack, t]`.
    pub epoch_slack: Duration,
    /// The cache API never returns an error other than `InvalidInput`
    /// (true for `FallbackMode::OnFailure` and `WriteThrough`).
    pub cache_ops_never_fail: bool,
}

/// What was violated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ViolationKind {
    /// A read older than a newer acknowledged write or delete.
    StaleRead,
    /// A value no write of any key produced.
    ValueNeverWritten,
    /// Another key's value.
    WrongKey,
    /// A value whose write was invoked after the read completed.
    ReadFromFuture,
    /// A value set with a TTL, read after it expired.
    ExpiredRead,
    /// An `incr` result lower than or equal to the previous one, or below 1.
    CounterWentBack,
    /// An `incr` result more than the failed calls in between explain.
    CounterSkipped,
    /// An `incr` gap explained only by failed calls whose error said
    /// `may_have_executed() == false`: they did execute.
    CounterMayHaveExecutedLied,
    /// The primary's final counter value does not match the history.
    CounterFinal,
    /// A cache operation returned an error the fallback promises away.
    UnexpectedError,
    /// A call took longer than the bound.
    TooSlow,
}

impl ViolationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ViolationKind::StaleRead => "stale_read",
            ViolationKind::ValueNeverWritten => "value_never_written",
            ViolationKind::WrongKey => "wrong_key",
            ViolationKind::ReadFromFuture => "read_from_future",
            ViolationKind::ExpiredRead => "expired_read",
            ViolationKind::CounterWentBack => "counter_went_back",
            ViolationKind::CounterSkipped => "counter_skipped",
            ViolationKind::CounterMayHaveExecutedLied => "counter_may_have_executed_lied",
            ViolationKind::CounterFinal => "counter_final",
            ViolationKind::UnexpectedError => "unexpected_error",
            ViolationKind::TooSlow => "too_slow",
        }
    }
}

/// One violation, with what is needed to debug it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub kind: ViolationKind,
    pub at: Ts,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] at {}: {}",
            self.kind.as_str(),
            secs(self.at),
            self.detail
        )
    }
}

/// `12.345s`.
pub fn secs(t: Ts) -> String {
    format!("{:.3}s", t.as_secs_f64())
}

/// An acknowledged write of one key, for the stale-read index.
#[derive(Debug, Clone, Copy)]
struct Acked {
    op: usize,
    invoke: Ts,
    complete: Ts,
}

/// Per key, acknowledged writes sorted by completion, with the running
/// maximum of their invocations: "the latest-invoked acknowledged write
/// that completed before t" is one binary search.
struct KeyWrites {
    by_complete: Vec<Acked>,
    /// `max_invoke[i]`: the write with the latest invocation among
    /// `by_complete[..=i]`.
    max_invoke: Vec<Acked>,
}

impl KeyWrites {
    fn new(mut writes: Vec<Acked>) -> KeyWrites {
        writes.sort_by_key(|w| w.complete);
        let mut max_invoke: Vec<Acked> = Vec::with_capacity(writes.len());
        for w in &writes {
            let best = match max_invoke.last() {
                Some(m) if m.invoke >= w.invoke => *m,
                _ => *w,
            };
            max_invoke.push(best);
        }
        KeyWrites {
            by_complete: writes,
            max_invoke,
        }
    }

    /// The acknowledged write completed strictly before `t` that was
    /// invoked last.
    fn latest_invoked_before(&self, t: Ts) -> Option<Acked> {
        let n = self.by_complete.partition_point(|w| w.complete < t);
        n.checked_sub(1).map(|i| self.max_invoke[i])
    }
}

/// Checks a whole history (and the final counter values, when the run
/// ended on the primary) against the contract. Empty when it holds.
///
/// Panics when the history itself is malformed (two writes of the same
/// value): values must be unique for reads to be attributed.
pub fn check(history: &History, rules: &Rules, finals: &[FinalCounter]) -> Vec<Violation> {
    let mut out = Vec::new();
    let ops = &history.ops;
    let epochs = epoch_intervals(history, rules);
    // Every value written, with the write (op, key, TTL) that wrote it.
    let mut written: HashMap<&str, (usize, &str, Option<Duration>)> = HashMap::new();
    let mut acked_by_key: HashMap<&str, Vec<Acked>> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        for (key, value, ttl) in op.call.writes() {
            if let Some(v) = value {
                if let Some((other, _, _)) = written.insert(v, (i, key, ttl)) {
                    panic!(
                        "malformed history: value {v} written twice:\n  {}\n  {op}",
                        ops[other]
                    );
                }
            }
            if op.acked() {
                acked_by_key.entry(key).or_default().push(Acked {
                    op: i,
                    invoke: op.invoke,
                    complete: op.complete,
                });
            }
        }
    }
    let index: HashMap<&str, KeyWrites> = acked_by_key
        .into_iter()
        .map(|(k, w)| (k, KeyWrites::new(w)))
        .collect();

    for op in ops {
        check_errors_and_time(op, rules, &mut out);
        let Ok(Reply::Values(values)) = &op.result else {
            continue;
        };
        for (key, value) in op.call.read_keys().into_iter().zip(values) {
            let Some(value) = value else {
                continue; // a miss is always allowed
            };
            check_read(op, key, value, ops, &written, &index, rules, &mut out);
        }
    }
    check_counters(history, &epochs, finals, &mut out);
    out.sort_by_key(|v| (v.kind, v.at));
    out
}

fn check_errors_and_time(op: &Op, rules: &Rules, out: &mut Vec<Violation>) {
    if let Err(e) = &op.result {
        if rules.cache_ops_never_fail && op.call.is_cache_op() && e.kind != ErrorKind::InvalidInput
        {
            out.push(Violation {
                kind: ViolationKind::UnexpectedError,
                at: op.invoke,
                detail: format!("the fallback promises no error here: {op}"),
            });
        }
    }
    let took = op.complete.saturating_sub(op.invoke);
    if took > rules.call_bound {
        out.push(Violation {
            kind: ViolationKind::TooSlow,
            at: op.invoke,
            detail: format!(
                "took {} ms, bound {} ms: {op}",
                took.as_millis(),
                rules.call_bound.as_millis()
            ),
        });
    }
}

#[allow(clippy::too_many_arguments)]
fn check_read(
    read: &Op,
    key: &str,
    value: &str,
    ops: &[Op],
    written: &HashMap<&str, (usize, &str, Option<Duration>)>,
    index: &HashMap<&str, KeyWrites>,
    rules: &Rules,
    out: &mut Vec<Violation>,
) {
    let violation = |kind, detail: String| Violation {
        kind,
        at: read.invoke,
        detail,
    };
    let Some(&(w, w_key, ttl)) = written.get(value) else {
        out.push(violation(
            ViolationKind::ValueNeverWritten,
            format!("key {key} read {value:?}, which no write produced: {read}"),
        ));
        return;
    };
    let write = &ops[w];
    if w_key != key {
        out.push(violation(
            ViolationKind::WrongKey,
            format!(
                "key {key} read the value of key {w_key}:\n    read:  {read}\n    write: {write}"
            ),
        ));
        return;
    }
    if write.invoke > read.complete {
        out.push(violation(
            ViolationKind::ReadFromFuture,
            format!("key {key} read a value written after the read returned:\n    read:  {read}\n    write: {write}"),
        ));
        return;
    }
    if !write.acked() {
        return; // indeterminate: may appear at any time after its invocation
    }
    if let Some(ttl) = ttl {
        let expired_at = write.complete + ttl + rules.ttl_slack;
        if read.invoke > expired_at {
            out.push(violation(
                ViolationKind::ExpiredRead,
                format!(
                    "key {key} read a value expired since {}:\n    read:  {read}\n    write: {write}",
                    secs(write.complete + ttl)
                ),
            ));
        }
    }
    let newer = index
        .get(key)
        .and_then(|k| k.latest_invoked_before(read.invoke))
        .filter(|w2| w2.invoke > write.complete);
    if let Some(w2) = newer {
        out.push(violation(
            ViolationKind::StaleRead,
            format!(
                "key {key}: the read returned a value overwritten by an acknowledged write \
                 that completed {} ms before the read was invoked\n    read:  {read}\n    \
                 returned the value of:  {write}\n    newer acknowledged:     {}",
                (read.invoke - w2.complete).as_millis(),
                ops[w2.op]
            ),
        ));
    }
}

/// When each failover or restore happened, as `(earliest, reported)`,
/// sorted by the report.
fn epoch_intervals(history: &History, rules: &Rules) -> Vec<(Ts, Ts)> {
    let mut e: Vec<(Ts, Ts)> = history
        .events
        .iter()
        .chain(&history.faults)
        .filter(|n| n.epoch_change)
        .map(|n| {
            let during = n.thread.and_then(|t| {
                history
                    .ops
                    .iter()
                    .find(|op| op.thread == t && op.invoke <= n.at && n.at <= op.complete)
            });
            match during {
                Some(op) => (op.invoke, n.at),
                None => (n.at.saturating_sub(rules.epoch_slack), n.at),
            }
        })
        .collect();
    e.sort_by_key(|&(_, reported)| reported);
    e
}

/// `true` when a failover or restore may have happened in `[from, to]`.
fn epoch_in(epochs: &[(Ts, Ts)], from: Ts, to: Ts) -> bool {
    // Reports are sorted; the earliest instants are at most `reported`.
    let i = epochs.partition_point(|&(_, reported)| reported < from);
    epochs[i..].iter().any(|&(earliest, _)| earliest <= to)
}

fn check_counters(
    history: &History,
    epochs: &[(Ts, Ts)],
    finals: &[FinalCounter],
    out: &mut Vec<Violation>,
) {
    // Per counter key (each belongs to one thread): its calls in program
    // order (a thread invokes one call at a time).
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        if let Call::Incr { key } = &op.call {
            by_key.entry(key).or_default().push(op);
        }
    }
    for calls in by_key.values_mut() {
        calls.sort_by_key(|op| op.invoke);
    }
    for (key, calls) in &by_key {
        // A fresh key counts from 0, as of the start of the run.
        let mut prev: (i64, Ts, Option<&Op>) = (0, Ts::ZERO, None);
        let (mut failed_may, mut failed_all) = (0i64, 0i64);
        for op in calls {
            let r = match &op.result {
                Err(e) => {
                    failed_all += 1;
                    if e.may_have_executed {
                        failed_may += 1;
                    }
                    continue;
                }
                Ok(Reply::Int(r)) => *r,
                Ok(other) => panic!("malformed history: incr returned {other:?}"),
            };
            let changed = epoch_in(epochs, prev.1, op.complete);
            let gap = r - prev.0 - 1;
            let previous = match prev.2 {
                Some(p) => format!("{p}"),
                None => "(none: the key starts at 0)".to_string(),
            };
            let describe = |what: &str| {
                format!(
                    "counter {key}: {what}; {failed_all} failed incr in between \
                     ({failed_may} with may_have_executed){}\n    previous: {previous}\n    this:     {op}",
                    if changed { "; a failover/restore happened in between" } else { "" }
                )
            };
            let kind = if changed {
                (r < 1).then_some(ViolationKind::CounterWentBack)
            } else if gap < 0 {
                Some(ViolationKind::CounterWentBack)
            } else if gap > failed_all {
                Some(ViolationKind::CounterSkipped)
            } else if gap > failed_may {
                Some(ViolationKind::CounterMayHaveExecutedLied)
            } else {
                None
            };
            if let Some(kind) = kind {
                out.push(Violation {
                    kind,
                    at: op.invoke,
                    detail: describe(&format!("{} → {r}", prev.0)),
                });
            }
            prev = (r, op.invoke, Some(op));
            failed_may = 0;
            failed_all = 0;
        }
        let Some(fin) = finals.iter().find(|f| f.key == *key) else {
            continue;
        };
        if epoch_in(epochs, prev.1, fin.read_at) {
            continue; // the value may have been invalidated or moved
        }
        let v = fin.value.unwrap_or(0);
        if v < prev.0 || v > prev.0 + failed_may {
            let last = match prev.2 {
                Some(p) => format!("{p}"),
                None => "(none)".to_string(),
            };
            out.push(Violation {
                kind: ViolationKind::CounterFinal,
                at: fin.read_at,
                detail: format!(
                    "counter {key}: the primary holds {v} after the run, the history allows \
                     {}..={} ({failed_may} failed incr with may_have_executed after the last \
                     acknowledged one, no failover or restore since)\n    last acknowledged: {last}",
                    prev.0,
                    prev.0 + failed_may
                ),
            });
        }
    }
}

/// Counts by label, sorted, as `a 3, b 1`.
fn counts<'a>(labels: impl Iterator<Item = &'a str>) -> String {
    let mut m: BTreeMap<&str, usize> = BTreeMap::new();
    for l in labels {
        *m.entry(l).or_default() += 1;
    }
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The summary printed after a run: operations by kind (with errors by
/// kind), faults by kind, events by kind, violations by kind.
pub fn summary(history: &History, violations: &[Violation]) -> String {
    let mut s = String::new();
    let mut by_call: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for op in &history.ops {
        let e = by_call.entry(op.call.name()).or_default();
        e.0 += 1;
        if op.result.is_err() {
            e.1 += 1;
        }
    }
    let _ = writeln!(s, "operations: {}", history.ops.len());
    for (name, (n, errs)) in &by_call {
        let _ = writeln!(s, "  {name:<12} {n:>7}  ({errs} errors)");
    }
    let errors = history.ops.iter().filter_map(|op| match &op.result {
        Err(e) => Some(e.kind.as_str()),
        Ok(_) => None,
    });
    let _ = writeln!(s, "errors by kind: {}", counts(errors));
    let _ = writeln!(
        s,
        "faults injected: {}",
        counts(history.faults.iter().map(|n| n.label.as_str()))
    );
    let _ = writeln!(
        s,
        "client events: {}",
        counts(history.events.iter().map(|n| n.label.as_str()))
    );
    let _ = writeln!(
        s,
        "violations: {} ({})",
        violations.len(),
        counts(violations.iter().map(|v| v.kind.as_str()))
    );
    s
}

/// Up to `per_kind` violations of each kind, with the faults and events
/// just before each, for the report.
pub fn examples(history: &History, violations: &[Violation], per_kind: usize) -> String {
    let mut s = String::new();
    let mut shown: HashMap<ViolationKind, usize> = HashMap::new();
    for v in violations {
        let n = shown.entry(v.kind).or_default();
        *n += 1;
        if *n > per_kind {
            continue;
        }
        let _ = writeln!(s, "{v}");
        let recent = |notes: &[Note]| -> String {
            let before: Vec<String> = notes
                .iter()
                .filter(|n| n.at <= v.at)
                .rev()
                .take(3)
                .map(|n| format!("{} {}", secs(n.at), n.text))
                .collect();
            if before.is_empty() {
                "none".into()
            } else {
                before.join(" | ")
            }
        };
        let _ = writeln!(
            s,
            "    faults before (latest first): {}",
            recent(&history.faults)
        );
        let _ = writeln!(
            s,
            "    events before (latest first): {}",
            recent(&history.events)
        );
    }
    s
}

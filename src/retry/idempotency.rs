//! Which Redis commands may be sent twice.
//!
//! A retry after a read timeout or a connection dropped mid-reply re-sends a
//! command the server may already have applied. That is harmless for reads
//! and for writes whose second application leaves the same state (`SET k v`,
//! `DEL k`, `SADD s m`), and a bug for the rest (`INCR` counted twice,
//! `LPUSH` pushing a duplicate). The tables below sort commands by name;
//! anything not listed is treated as non-idempotent.

use redis::{Arg, Cmd, Pipeline};

/// The per-call answer to "may this command be sent again after it may have
/// reached the server?".
///
/// [`Idempotency::Auto`] (the default) looks the command up in the crate's
/// table (see [`is_idempotent`]); the other two let a caller who knows better
/// override it, e.g. a Lua script that only reads (`Idempotent`), or a `SET`
/// whose reply the caller must see exactly once (`NonIdempotent`).
///
/// Whatever the answer, a command is always retried after a *transient*
/// failure that certainly happened before any byte was written (pool
/// checkout, connect); see [`Retrier`](crate::Retrier).
///
/// # Examples
///
/// ```
/// use resilient_redis::{redis, Idempotency};
///
/// let incr = redis::cmd("INCR").arg("hits").clone();
/// assert!(!Idempotency::Auto.for_cmd(&incr));
/// assert!(Idempotency::Idempotent.for_cmd(&incr));
///
/// let get = redis::cmd("GET").arg("k").clone();
/// assert!(Idempotency::Auto.for_cmd(&get));
/// assert!(!Idempotency::NonIdempotent.for_cmd(&get));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Idempotency {
    /// Decide from the command table ([`is_idempotent`] /
    /// [`is_pipeline_idempotent`]).
    #[default]
    Auto,
    /// The caller asserts that sending the command twice is harmless.
    Idempotent,
    /// The caller asserts that the command must never be sent twice.
    NonIdempotent,
}

impl Idempotency {
    /// Whether `cmd` may be re-sent after a failure that may have happened
    /// once it reached the server.
    pub fn for_cmd(self, cmd: &Cmd) -> bool {
        match self {
            Idempotency::Auto => is_idempotent(cmd),
            Idempotency::Idempotent => true,
            Idempotency::NonIdempotent => false,
        }
    }

    /// Whether `pipeline` may be re-sent as a whole after a failure that may
    /// have happened once it reached the server.
    pub fn for_pipeline(self, pipeline: &Pipeline) -> bool {
        match self {
            Idempotency::Auto => is_pipeline_idempotent(pipeline),
            Idempotency::Idempotent => true,
            Idempotency::NonIdempotent => false,
        }
    }
}

/// Commands that only read (or only touch access metadata): always safe to
/// re-send. Sorted, for binary search; a unit test checks the order.
pub(crate) const READ_ONLY: &[&str] = &[
    "BITCOUNT",
    "BITFIELD_RO",
    "BITPOS",
    "DBSIZE",
    "DUMP",
    "ECHO",
    "EVALSHA_RO",
    "EVAL_RO",
    "EXISTS",
    "EXPIRETIME",
    "FCALL_RO",
    "GEODIST",
    "GEOHASH",
    "GEOPOS",
    "GEORADIUSBYMEMBER_RO",
    "GEORADIUS_RO",
    "GEOSEARCH",
    "GET",
    "GETBIT",
    "GETRANGE",
    "HEXISTS",
    "HGET",
    "HGETALL",
    "HKEYS",
    "HLEN",
    "HMGET",
    "HRANDFIELD",
    "HSCAN",
    "HSTRLEN",
    "HVALS",
    "INFO",
    "KEYS",
    "LCS",
    "LINDEX",
    "LLEN",
    "LPOS",
    "LRANGE",
    "MGET",
    "OBJECT",
    "PEXPIRETIME",
    "PFCOUNT",
    "PING",
    "PTTL",
    "RANDOMKEY",
    "SCAN",
    "SCARD",
    "SDIFF",
    "SINTER",
    "SINTERCARD",
    "SISMEMBER",
    "SMEMBERS",
    "SMISMEMBER",
    "SORT_RO",
    "SRANDMEMBER",
    "SSCAN",
    "STRLEN",
    "SUBSTR",
    "SUNION",
    "TIME",
    "TOUCH",
    "TTL",
    "TYPE",
    "XLEN",
    "XPENDING",
    "XRANGE",
    "XREAD",
    "XREVRANGE",
    "ZCARD",
    "ZCOUNT",
    "ZDIFF",
    "ZINTER",
    "ZINTERCARD",
    "ZLEXCOUNT",
    "ZMSCORE",
    "ZRANDMEMBER",
    "ZRANGE",
    "ZRANGEBYLEX",
    "ZRANGEBYSCORE",
    "ZRANK",
    "ZREVRANGE",
    "ZREVRANGEBYLEX",
    "ZREVRANGEBYSCORE",
    "ZREVRANK",
    "ZSCAN",
    "ZSCORE",
    "ZUNION",
];

/// Writes whose second application leaves the same state as the first. Their
/// reply may differ on a retry (`SADD` answers 0 instead of 1), which callers
/// of a cache API do not depend on. `SET` with `GET`, `NX` or `XX` and
/// `ZADD ... INCR` are excluded by argument (see [`is_idempotent`]).
pub(crate) const IDEMPOTENT_WRITES: &[&str] = &[
    "DEL",
    "EXPIRE",
    "EXPIREAT",
    "FLUSHALL",
    "FLUSHDB",
    "GEOADD",
    "GETEX",
    "HDEL",
    "HMSET",
    "HSET",
    "LSET",
    "MSET",
    "PERSIST",
    "PEXPIRE",
    "PEXPIREAT",
    "PFADD",
    "PFMERGE",
    "PSETEX",
    "SADD",
    "SET",
    "SETEX",
    "SETRANGE",
    "SREM",
    "UNLINK",
    "XACK",
    "XDEL",
    "ZADD",
    "ZREM",
    "ZREMRANGEBYLEX",
    "ZREMRANGEBYSCORE",
];

/// Commands that are known *not* to be idempotent. Listed for the tests
/// only: every command absent from the two tables above gets the same
/// treatment.
#[cfg(test)]
pub(crate) const NON_IDEMPOTENT: &[&str] = &[
    "APPEND",
    "BLMOVE",
    "BLMPOP",
    "BLPOP",
    "BRPOP",
    "BRPOPLPUSH",
    "BZPOPMAX",
    "BZPOPMIN",
    "COPY",
    "DECR",
    "DECRBY",
    "DISCARD",
    "EVAL",
    "EVALSHA",
    "EXEC",
    "FCALL",
    "GETDEL",
    "GETSET",
    "HINCRBY",
    "HINCRBYFLOAT",
    "HSETNX",
    "INCR",
    "INCRBY",
    "INCRBYFLOAT",
    "LINSERT",
    "LMOVE",
    "LMPOP",
    "LPOP",
    "LPUSH",
    "LPUSHX",
    "LREM",
    "LTRIM",
    "MSETNX",
    "MULTI",
    "PUBLISH",
    "RENAME",
    "RENAMENX",
    "RPOP",
    "RPOPLPUSH",
    "RPUSH",
    "RPUSHX",
    "SETBIT",
    "SETNX",
    "SMOVE",
    "SPOP",
    "WATCH",
    "XADD",
    "XCLAIM",
    "XREADGROUP",
    "ZINCRBY",
    "ZMPOP",
    "ZPOPMAX",
    "ZPOPMIN",
    "ZREMRANGEBYRANK",
];

/// Longest command name in the tables; longer names are unknown.
const MAX_NAME: usize = 24;

/// Whether `cmd` may be re-sent after a failure that may have happened once
/// it reached the server (a read timeout, a connection dropped mid-reply).
///
/// The command name is the first argument, compared case-insensitively.
///
/// - **Read-only** commands are idempotent: `GET`, `MGET`, `EXISTS`, `TTL`,
///   `PTTL`, `TYPE`, `STRLEN`, `HGET`, `HGETALL`, `LRANGE`, `SMEMBERS`,
///   `ZRANGE`, `ZSCORE`, `SCAN`, `PING`, `EVAL_RO`, ...
/// - **Idempotent writes**: `SET` (plain, `EX`/`PX`/`EXAT`/`PXAT`/`KEEPTTL`),
///   `SETEX`, `PSETEX`, `MSET`, `DEL`, `UNLINK`, `EXPIRE`, `PEXPIRE`,
///   `EXPIREAT`, `PEXPIREAT`, `PERSIST`, `GETEX`, `HSET`, `HMSET`, `HDEL`,
///   `SADD`, `SREM`, `ZADD` (without `INCR`), `ZREM`, `ZREMRANGEBYSCORE`,
///   `ZREMRANGEBYLEX`, `LSET`, `SETRANGE`, `GEOADD`, `PFADD`, `PFMERGE`,
///   `XACK`, `XDEL`, `FLUSHDB`, `FLUSHALL`.
/// - Everything else is **not** idempotent, in particular `INCR`, `INCRBY`,
///   `INCRBYFLOAT`, `DECR`, `DECRBY`, `APPEND`, `LPUSH`, `RPUSH`, `LPOP`,
///   `RPOP`, `SPOP`, `GETDEL`, `GETSET`, `SETNX`, `HSETNX`, `HINCRBY`,
///   `ZINCRBY`, `LTRIM`, `LREM`, `XADD`, `PUBLISH`, `RENAME`, `EVAL`,
///   `EVALSHA`, `FCALL`, `MULTI`/`EXEC`, blocking pops, and every command the
///   table does not know.
///
/// Decided by argument:
///
/// - `SET ... GET` returns the previous value: a retry after the first
///   attempt applied would return the value just written. Not idempotent.
/// - `SET ... NX` / `SET ... XX`: a retry after the first attempt applied
///   answers differently (`NX` says "not set" although this call set it — a
///   lock the caller holds but thinks it lost). Not idempotent.
/// - `ZADD ... INCR` increments. Not idempotent.
///
/// # Examples
///
/// ```
/// use resilient_redis::{is_idempotent, redis};
///
/// assert!(is_idempotent(redis::cmd("get").arg("k")));
/// assert!(is_idempotent(redis::cmd("SET").arg("k").arg("v").arg("EX").arg(60)));
/// assert!(!is_idempotent(redis::cmd("SET").arg("k").arg("v").arg("NX")));
/// assert!(!is_idempotent(redis::cmd("INCR").arg("k")));
/// assert!(!is_idempotent(&redis::cmd("NOT-A-COMMAND")));
/// ```
pub fn is_idempotent(cmd: &Cmd) -> bool {
    let mut args = cmd.args_iter();
    let Some(Arg::Simple(name)) = args.next() else {
        return false;
    };
    let mut buf = [0u8; MAX_NAME];
    let Some(name) = upper(name, &mut buf) else {
        return false;
    };
    if READ_ONLY.binary_search(&name).is_ok() {
        return true;
    }
    if IDEMPOTENT_WRITES.binary_search(&name).is_err() {
        return false;
    }
    match name {
        // SET key value [options]: options start at the fourth argument, so
        // a value that happens to be "GET" is not mistaken for the option.
        "SET" => !args.skip(2).any(|a| is_word(&a, &["GET", "NX", "XX"])),
        // ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member ...: the flags
        // come before the first score, so stop at the first non-flag.
        "ZADD" => !args
            .skip(1)
            .take_while(|a| is_word(a, &["NX", "XX", "GT", "LT", "CH", "INCR"]))
            .any(|a| is_word(&a, &["INCR"])),
        _ => true,
    }
}

/// Whether `pipeline` may be re-sent as a whole after a failure that may
/// have happened once it reached the server: only if it is not a
/// transaction (`MULTI`/`EXEC`, [`Pipeline::atomic`]) and every command in it
/// is idempotent ([`is_idempotent`]). An empty pipeline is idempotent.
///
/// # Examples
///
/// ```
/// use resilient_redis::{is_pipeline_idempotent, redis};
///
/// let mut p = redis::pipe();
/// p.cmd("SET").arg("a").arg(1).cmd("GET").arg("a");
/// assert!(is_pipeline_idempotent(&p));
/// p.atomic();
/// assert!(!is_pipeline_idempotent(&p));
/// ```
pub fn is_pipeline_idempotent(pipeline: &Pipeline) -> bool {
    !pipeline.is_transaction() && pipeline.cmd_iter().all(is_idempotent)
}

/// `name` upper-cased into `buf`, if it is a plausible command name.
fn upper<'a>(name: &[u8], buf: &'a mut [u8; MAX_NAME]) -> Option<&'a str> {
    let out = buf.get_mut(..name.len())?;
    for (o, &b) in out.iter_mut().zip(name) {
        *o = b.to_ascii_uppercase();
    }
    std::str::from_utf8(out).ok()
}

fn is_word(arg: &Arg<&[u8]>, words: &[&str]) -> bool {
    match arg {
        Arg::Simple(a) => words.iter().any(|w| a.eq_ignore_ascii_case(w.as_bytes())),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command with plausible arguments, so that option parsing sees what
    /// a real call sends.
    fn cmd(name: &str) -> Cmd {
        let mut c = redis::cmd(name);
        c.arg("key").arg("1").arg("member");
        c
    }

    #[test]
    fn tables_are_sorted_and_disjoint() {
        for table in [READ_ONLY, IDEMPOTENT_WRITES, NON_IDEMPOTENT] {
            assert!(table.windows(2).all(|w| w[0] < w[1]), "{table:?}");
            assert!(table.iter().all(|n| n.len() <= MAX_NAME), "{table:?}");
        }
        for name in NON_IDEMPOTENT {
            assert!(READ_ONLY.binary_search(name).is_err(), "{name}");
            assert!(IDEMPOTENT_WRITES.binary_search(name).is_err(), "{name}");
        }
        for name in READ_ONLY {
            assert!(IDEMPOTENT_WRITES.binary_search(name).is_err(), "{name}");
        }
    }

    #[test]
    fn every_listed_command() {
        for name in READ_ONLY.iter().chain(IDEMPOTENT_WRITES) {
            assert!(is_idempotent(&cmd(name)), "{name} should be idempotent");
            let lower = name.to_ascii_lowercase();
            assert!(is_idempotent(&cmd(&lower)), "{lower} should be idempotent");
        }
        for name in NON_IDEMPOTENT {
            assert!(!is_idempotent(&cmd(name)), "{name} must not be retried");
            let lower = name.to_ascii_lowercase();
            assert!(!is_idempotent(&cmd(&lower)), "{lower} must not be retried");
        }
    }

    #[test]
    fn the_commands_named_in_the_issue() {
        for name in [
            "GET", "MGET", "EXISTS", "TTL", "SET", "DEL", "EXPIRE", "HSET", "SADD",
        ] {
            assert!(is_idempotent(&cmd(name)), "{name}");
        }
        for name in [
            "INCR", "INCRBY", "DECR", "APPEND", "LPUSH", "RPUSH", "LPOP", "RPOP", "SPOP", "GETDEL",
            "EVAL", "EVALSHA", "FCALL", "MULTI", "EXEC",
        ] {
            assert!(!is_idempotent(&cmd(name)), "{name}");
        }
    }

    #[test]
    fn set_options() {
        let set = |opts: &[&str]| {
            let mut c = redis::cmd("SET");
            c.arg("k").arg("v");
            for o in opts {
                c.arg(*o);
            }
            is_idempotent(&c)
        };
        assert!(set(&[]));
        assert!(set(&["EX", "10"]));
        assert!(set(&["px", "10"]));
        assert!(set(&["KEEPTTL"]));
        assert!(!set(&["GET"]));
        assert!(!set(&["get"]));
        assert!(!set(&["NX"]));
        assert!(!set(&["XX", "EX", "5"]));
        assert!(!set(&["EX", "5", "nx"]));
        // The value (or the key) "GET" is not the option.
        assert!(is_idempotent(redis::cmd("SET").arg("k").arg("GET")));
        assert!(is_idempotent(redis::cmd("SET").arg("NX").arg("GET")));
    }

    #[test]
    fn zadd_options() {
        assert!(is_idempotent(redis::cmd("ZADD").arg("z").arg(1).arg("m")));
        assert!(is_idempotent(
            redis::cmd("ZADD")
                .arg("z")
                .arg("NX")
                .arg("CH")
                .arg(1)
                .arg("m")
        ));
        assert!(!is_idempotent(
            redis::cmd("ZADD").arg("z").arg("INCR").arg(1).arg("m")
        ));
        assert!(!is_idempotent(
            redis::cmd("ZADD")
                .arg("z")
                .arg("xx")
                .arg("incr")
                .arg(1)
                .arg("m")
        ));
        // A member called INCR is not the flag.
        assert!(is_idempotent(
            redis::cmd("ZADD").arg("z").arg(1).arg("INCR")
        ));
    }

    #[test]
    fn unknown_and_malformed_commands_are_not_idempotent() {
        assert!(!is_idempotent(&redis::Cmd::new()));
        assert!(!is_idempotent(&cmd("FROBNICATE")));
        assert!(!is_idempotent(&cmd(&"G".repeat(1000))));
        assert!(!is_idempotent(&cmd("GET\u{e9}")));
        let mut c = redis::Cmd::new();
        c.arg(&b"\xff\xfe"[..]);
        assert!(!is_idempotent(&c));
        let mut c = redis::Cmd::new();
        c.cursor_arg(0);
        assert!(!is_idempotent(&c));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 2_000,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x1DE),
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        })]

        /// Any bytes as a command never panic, and a name the tables do not
        /// know is never idempotent.
        #[test]
        fn arbitrary_commands_never_panic(
            args in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..40), 0..6),
        ) {
            let mut c = redis::Cmd::new();
            for a in &args {
                c.arg(a.as_slice());
            }
            let verdict = is_idempotent(&c);
            let known = args.first().is_some_and(|name| {
                let upper = name.to_ascii_uppercase();
                READ_ONLY.iter().chain(IDEMPOTENT_WRITES).any(|n| n.as_bytes() == upper)
            });
            proptest::prop_assert!(!verdict || known);
        }
    }

    #[test]
    fn pipelines() {
        let mut p = redis::pipe();
        assert!(is_pipeline_idempotent(&p));
        p.cmd("SET").arg("a").arg(1).cmd("MGET").arg("a").arg("b");
        assert!(is_pipeline_idempotent(&p));
        p.cmd("INCR").arg("a");
        assert!(!is_pipeline_idempotent(&p));

        let mut p = redis::pipe();
        p.atomic().cmd("GET").arg("a");
        assert!(!is_pipeline_idempotent(&p));

        let mut p = redis::pipe();
        p.cmd("MULTI").cmd("GET").arg("a").cmd("EXEC");
        assert!(!is_pipeline_idempotent(&p));
    }

    #[test]
    fn overrides() {
        let incr = cmd("INCR");
        let get = cmd("GET");
        assert!(!Idempotency::Auto.for_cmd(&incr));
        assert!(Idempotency::Auto.for_cmd(&get));
        assert!(Idempotency::Idempotent.for_cmd(&incr));
        assert!(!Idempotency::NonIdempotent.for_cmd(&get));
        let mut p = redis::pipe();
        p.atomic().cmd("GET").arg("a");
        assert!(!Idempotency::Auto.for_pipeline(&p));
        assert!(Idempotency::Idempotent.for_pipeline(&p));
        assert!(!Idempotency::NonIdempotent.for_pipeline(&redis::pipe()));
        assert_eq!(Idempotency::default(), Idempotency::Auto);
    }
}

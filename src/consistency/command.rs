//! Which keys a command sent through `execute` or `pipeline` reads or
//! writes, so that the consistency rules apply to it as to the cache
//! methods. The table follows the key positions of Redis' `COMMAND INFO`;
//! a command it does not list has keys the client cannot tell.

use redis::{Arg, Cmd, Pipeline};

/// The keys of a command or pipeline, as far as the client can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CommandKeys {
    /// The keys (possibly none) and whether the command only reads them.
    Known { keys: Vec<Vec<u8>>, read_only: bool },
    /// A command the table does not know (or a malformed one): it may
    /// read or write any key.
    Unknown,
}

/// Where a command's keys are.
#[derive(Debug, Clone, Copy)]
enum KeySpec {
    /// No key (`PING`, `INFO`, `SCAN`: they return names, not values).
    None,
    /// The argument at this position.
    At(usize),
    /// Every `step`-th argument from `first` to the end.
    From { first: usize, step: usize },
    /// `numkeys` at this position, then that many keys (`EVAL`, `FCALL`).
    NumKeys(usize),
}

use KeySpec::{At, From, NumKeys};

const ALL: KeySpec = From { first: 1, step: 1 };
const PAIRS: KeySpec = From { first: 1, step: 2 };

/// `(name, keys, read_only)`, sorted by name.
const TABLE: &[(&str, KeySpec, bool)] = &[
    ("APPEND", At(1), false),
    ("BITCOUNT", At(1), true),
    ("BITOP", From { first: 2, step: 1 }, false),
    ("BITPOS", At(1), true),
    ("COPY", From { first: 1, step: 1 }, false),
    ("DBSIZE", KeySpec::None, true),
    ("DECR", At(1), false),
    ("DECRBY", At(1), false),
    ("DEL", ALL, false),
    ("DUMP", At(1), true),
    ("ECHO", KeySpec::None, true),
    ("EVAL", NumKeys(2), false),
    ("EVALSHA", NumKeys(2), false),
    ("EVALSHA_RO", NumKeys(2), true),
    ("EVAL_RO", NumKeys(2), true),
    ("EXISTS", ALL, true),
    ("EXPIRE", At(1), false),
    ("EXPIREAT", At(1), false),
    ("EXPIRETIME", At(1), true),
    ("FCALL", NumKeys(2), false),
    ("FCALL_RO", NumKeys(2), true),
    ("GEOADD", At(1), false),
    ("GEODIST", At(1), true),
    ("GEOHASH", At(1), true),
    ("GEOPOS", At(1), true),
    ("GET", At(1), true),
    ("GETBIT", At(1), true),
    ("GETDEL", At(1), false),
    ("GETEX", At(1), false),
    ("GETRANGE", At(1), true),
    ("GETSET", At(1), false),
    ("HDEL", At(1), false),
    ("HEXISTS", At(1), true),
    ("HGET", At(1), true),
    ("HGETALL", At(1), true),
    ("HINCRBY", At(1), false),
    ("HINCRBYFLOAT", At(1), false),
    ("HKEYS", At(1), true),
    ("HLEN", At(1), true),
    ("HMGET", At(1), true),
    ("HMSET", At(1), false),
    ("HRANDFIELD", At(1), true),
    ("HSCAN", At(1), true),
    ("HSET", At(1), false),
    ("HSETNX", At(1), false),
    ("HSTRLEN", At(1), true),
    ("HVALS", At(1), true),
    ("INCR", At(1), false),
    ("INCRBY", At(1), false),
    ("INCRBYFLOAT", At(1), false),
    ("INFO", KeySpec::None, true),
    ("KEYS", KeySpec::None, true),
    ("LINDEX", At(1), true),
    ("LINSERT", At(1), false),
    ("LLEN", At(1), true),
    ("LMOVE", From { first: 1, step: 1 }, false),
    ("LPOP", At(1), false),
    ("LPOS", At(1), true),
    ("LPUSH", At(1), false),
    ("LPUSHX", At(1), false),
    ("LRANGE", At(1), true),
    ("LREM", At(1), false),
    ("LSET", At(1), false),
    ("LTRIM", At(1), false),
    ("MGET", ALL, true),
    ("MSET", PAIRS, false),
    ("MSETNX", PAIRS, false),
    ("PERSIST", At(1), false),
    ("PEXPIRE", At(1), false),
    ("PEXPIREAT", At(1), false),
    ("PEXPIRETIME", At(1), true),
    ("PFADD", At(1), false),
    ("PFCOUNT", ALL, true),
    ("PFMERGE", ALL, false),
    ("PING", KeySpec::None, true),
    ("PSETEX", At(1), false),
    ("PTTL", At(1), true),
    ("RANDOMKEY", KeySpec::None, true),
    ("RENAME", ALL, false),
    ("RENAMENX", ALL, false),
    ("RPOP", At(1), false),
    ("RPOPLPUSH", ALL, false),
    ("RPUSH", At(1), false),
    ("RPUSHX", At(1), false),
    ("SADD", At(1), false),
    ("SCAN", KeySpec::None, true),
    ("SCARD", At(1), true),
    ("SDIFF", ALL, true),
    ("SDIFFSTORE", ALL, false),
    ("SET", At(1), false),
    ("SETBIT", At(1), false),
    ("SETEX", At(1), false),
    ("SETNX", At(1), false),
    ("SETRANGE", At(1), false),
    ("SINTER", ALL, true),
    ("SINTERSTORE", ALL, false),
    ("SISMEMBER", At(1), true),
    ("SMEMBERS", At(1), true),
    ("SMISMEMBER", At(1), true),
    ("SMOVE", ALL, false),
    ("SPOP", At(1), false),
    ("SRANDMEMBER", At(1), true),
    ("SREM", At(1), false),
    ("SSCAN", At(1), true),
    ("STRLEN", At(1), true),
    ("SUBSTR", At(1), true),
    ("SUNION", ALL, true),
    ("SUNIONSTORE", ALL, false),
    ("TIME", KeySpec::None, true),
    ("TOUCH", ALL, true),
    ("TTL", At(1), true),
    ("TYPE", At(1), true),
    ("UNLINK", ALL, false),
    ("XADD", At(1), false),
    ("XDEL", At(1), false),
    ("XLEN", At(1), true),
    ("XRANGE", At(1), true),
    ("XREVRANGE", At(1), true),
    ("XTRIM", At(1), false),
    ("ZADD", At(1), false),
    ("ZCARD", At(1), true),
    ("ZCOUNT", At(1), true),
    ("ZINCRBY", At(1), false),
    ("ZLEXCOUNT", At(1), true),
    ("ZMSCORE", At(1), true),
    ("ZPOPMAX", At(1), false),
    ("ZPOPMIN", At(1), false),
    ("ZRANDMEMBER", At(1), true),
    ("ZRANGE", At(1), true),
    ("ZRANGEBYLEX", At(1), true),
    ("ZRANGEBYSCORE", At(1), true),
    ("ZRANK", At(1), true),
    ("ZREM", At(1), false),
    ("ZREMRANGEBYLEX", At(1), false),
    ("ZREMRANGEBYRANK", At(1), false),
    ("ZREMRANGEBYSCORE", At(1), false),
    ("ZREVRANGE", At(1), true),
    ("ZREVRANGEBYLEX", At(1), true),
    ("ZREVRANGEBYSCORE", At(1), true),
    ("ZREVRANK", At(1), true),
    ("ZSCAN", At(1), true),
    ("ZSCORE", At(1), true),
];

/// Longest command name in the table, for the upper-casing buffer.
const MAX_NAME: usize = 20;

/// The keys `cmd` names, as far as the table tells. Over-inclusion (an
/// option word taken for a key) only costs bookkeeping; a key left out
/// would break a guarantee, so anything unclear is
/// [`CommandKeys::Unknown`].
pub(crate) fn command_keys(cmd: &Cmd) -> CommandKeys {
    let mut args = Vec::new();
    for arg in cmd.args_iter() {
        match arg {
            Arg::Simple(a) => args.push(a),
            // A cursor argument only appears in SCAN-like iteration.
            _ => return CommandKeys::Unknown,
        }
    }
    let Some(name) = args.first() else {
        return CommandKeys::Unknown;
    };
    let mut buf = [0u8; MAX_NAME];
    let Some(upper) = buf.get_mut(..name.len()) else {
        return CommandKeys::Unknown;
    };
    for (o, b) in upper.iter_mut().zip(name.iter()) {
        *o = b.to_ascii_uppercase();
    }
    let Ok(index) = TABLE.binary_search_by(|(n, _, _)| n.as_bytes().cmp(upper)) else {
        return CommandKeys::Unknown;
    };
    let (_, spec, read_only) = TABLE[index];
    let keys = match spec {
        KeySpec::None => Vec::new(),
        At(i) => match args.get(i) {
            Some(k) => vec![k.to_vec()],
            None => return CommandKeys::Unknown,
        },
        From { first, step } => args
            .iter()
            .skip(first)
            .step_by(step.max(1))
            .map(|k| k.to_vec())
            .collect(),
        NumKeys(i) => {
            let Some(n) = args
                .get(i)
                .and_then(|n| std::str::from_utf8(n).ok())
                .and_then(|n| n.parse::<usize>().ok())
            else {
                return CommandKeys::Unknown;
            };
            let Some(keys) = args.get(i + 1..).and_then(|rest| rest.get(..n)) else {
                return CommandKeys::Unknown;
            };
            keys.iter().map(|k| k.to_vec()).collect()
        }
    };
    CommandKeys::Known { keys, read_only }
}

/// `true` when the key table lists the command named `upper` (upper-case).
pub(crate) fn is_listed_command(upper: &[u8]) -> bool {
    TABLE
        .binary_search_by(|(n, _, _)| n.as_bytes().cmp(upper))
        .is_ok()
}

/// The keys of every command in `pipeline` together; read-only only if
/// every command is.
pub(crate) fn pipeline_keys(pipeline: &Pipeline) -> CommandKeys {
    let mut all = Vec::new();
    let mut all_read = true;
    for cmd in pipeline.cmd_iter() {
        match command_keys(cmd) {
            CommandKeys::Known { keys, read_only } => {
                all.extend(keys);
                all_read &= read_only;
            }
            CommandKeys::Unknown => return CommandKeys::Unknown,
        }
    }
    CommandKeys::Known {
        keys: all,
        read_only: all_read,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(cmd: &Cmd) -> Option<(Vec<String>, bool)> {
        match command_keys(cmd) {
            CommandKeys::Known { keys, read_only } => Some((
                keys.into_iter()
                    .map(|k| String::from_utf8_lossy(&k).into_owned())
                    .collect(),
                read_only,
            )),
            CommandKeys::Unknown => None,
        }
    }

    #[test]
    fn table_is_sorted_and_names_fit() {
        for w in TABLE.windows(2) {
            assert!(w[0].0 < w[1].0, "{} before {}", w[0].0, w[1].0);
        }
        assert!(TABLE.iter().all(|(n, _, _)| n.len() <= MAX_NAME));
    }

    #[test]
    fn positions() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(keys(redis::cmd("get").arg("k")), Some((s(&["k"]), true)));
        assert_eq!(
            keys(redis::cmd("SET").arg("k").arg("v").arg("PX").arg(5)),
            Some((s(&["k"]), false))
        );
        assert_eq!(
            keys(redis::cmd("MSET").arg("a").arg(1).arg("b").arg(2)),
            Some((s(&["a", "b"]), false))
        );
        assert_eq!(
            keys(redis::cmd("DEL").arg("a").arg("b")),
            Some((s(&["a", "b"]), false))
        );
        assert_eq!(
            keys(
                redis::cmd("EVAL")
                    .arg("return 1")
                    .arg(2)
                    .arg("a")
                    .arg("b")
                    .arg("x")
            ),
            Some((s(&["a", "b"]), false))
        );
        assert_eq!(keys(&redis::cmd("PING")), Some((vec![], true)));
    }

    #[test]
    fn unclear_commands_are_unknown() {
        assert_eq!(command_keys(&redis::cmd("FLUSHALL")), CommandKeys::Unknown);
        assert_eq!(command_keys(&redis::cmd("GET")), CommandKeys::Unknown);
        assert_eq!(
            command_keys(redis::cmd("EVAL").arg("s").arg(3).arg("a")),
            CommandKeys::Unknown
        );
        assert_eq!(
            command_keys(redis::cmd("EVAL").arg("s").arg("-1")),
            CommandKeys::Unknown
        );
        assert_eq!(
            command_keys(&redis::cmd("A-VERY-LONG-COMMAND-NAME-INDEED")),
            CommandKeys::Unknown
        );
        assert_eq!(command_keys(&redis::Cmd::new()), CommandKeys::Unknown);
    }

    #[test]
    fn pipelines_combine() {
        let mut p = redis::pipe();
        p.cmd("GET").arg("a").cmd("GET").arg("b");
        assert_eq!(
            pipeline_keys(&p),
            CommandKeys::Known {
                keys: vec![b"a".to_vec(), b"b".to_vec()],
                read_only: true
            }
        );
        p.cmd("INCR").arg("c");
        assert!(matches!(
            pipeline_keys(&p),
            CommandKeys::Known {
                read_only: false,
                ..
            }
        ));
        p.cmd("FLUSHDB");
        assert_eq!(pipeline_keys(&p), CommandKeys::Unknown);
    }
}

//! Every `redis::Commands` method on [`Client`]: `redis::ConnectionLike`
//! for `&Client`.
//!
//! Not for `Client` itself: with that impl, a call on a `&mut Client`
//! (`c.get(k)`) would resolve to `Commands::get` before the cache method
//! `Client::get`, silently dropping the key prefix and the memory fallback
//! from code that compiled before.
//!
//! redis-rs hands a connection the *packed* request (RESP bytes). It is
//! parsed back into arguments only to learn what it is: the command name
//! decides retries (the idempotency table) and the key positions decide
//! the consistency tracking, exactly as for [`Client::execute`] and
//! [`Client::pipeline`]. The bytes sent are redis-rs' own.
//!
//! [`Client::execute`]: super::Client::execute
//! [`Client::pipeline`]: super::Client::pipeline

use std::io;

use redis::{ConnectionLike, RedisError, RedisResult, Value};

use super::Client;
use crate::consistency::{command_keys, pipeline_keys};
use crate::error::{Error, ErrorClass};
use crate::retry::Idempotency;

/// The arguments of one command of a packed request.
type Args = Vec<Vec<u8>>;

/// Parses a packed request (`*N\r\n$len\r\nbytes\r\n...`, one or more
/// commands) into each command's arguments. redis-rs builds these, so they
/// are well formed; anything else is an [`ErrorKind::InvalidInput`] error,
/// never a panic.
pub(crate) fn parse_packed(mut buf: &[u8]) -> Result<Vec<Args>, Error> {
    let mut commands = Vec::new();
    while !buf.is_empty() {
        let n = header(&mut buf, b'*')?;
        // Every argument takes at least 4 bytes (`$0\r\n`): a count larger
        // than that cannot be honest, and must not size an allocation.
        let mut args = Vec::with_capacity(n.min(buf.len() / 4));
        for _ in 0..n {
            let len = header(&mut buf, b'$')?;
            let end = len.checked_add(2).ok_or_else(|| malformed("length"))?;
            let (arg, rest) = match (buf.get(..len), buf.get(len..end), buf.get(end..)) {
                (Some(arg), Some(b"\r\n"), Some(rest)) => (arg, rest),
                _ => return Err(malformed("argument")),
            };
            args.push(arg.to_vec());
            buf = rest;
        }
        commands.push(args);
    }
    Ok(commands)
}

/// Reads `<tag><decimal>\r\n` off the front of `buf`.
fn header(buf: &mut &[u8], tag: u8) -> Result<usize, Error> {
    let line_end = buf
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or_else(|| malformed("header"))?;
    let (line, rest) = buf.split_at(line_end);
    let digits = match line.split_first() {
        Some((&t, digits)) if t == tag && !digits.is_empty() => digits,
        _ => return Err(malformed("header")),
    };
    let n = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<usize>().ok())
        .ok_or_else(|| malformed("count"))?;
    *buf = rest.get(2..).unwrap_or_default();
    Ok(n)
}

fn malformed(what: &str) -> Error {
    Error::invalid_input(format!(
        "a packed redis request has a malformed {what} (expected RESP arrays of bulk strings)"
    ))
}

fn to_cmd(args: &Args) -> redis::Cmd {
    let mut cmd = redis::Cmd::new();
    for a in args {
        cmd.arg(&a[..]);
    }
    cmd
}

/// The crate's error as the `RedisError` redis-rs' callers expect. An
/// error reply from Redis (`WRONGTYPE`, a quota reply, ...) is returned as
/// redis-rs' own; anything else (breaker open, pool timeout, connection
/// lost, ...) is an I/O error carrying the crate's [`Error`], which
/// [`Error::from_redis_error`] finds again.
fn to_redis_error(e: Error) -> RedisError {
    let reply = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<RedisError>())
        .filter(|r| r.code().is_some());
    if let Some(reply) = reply {
        return reply.clone();
    }
    let kind = if e.is_timeout() {
        io::ErrorKind::TimedOut
    } else {
        io::ErrorKind::Other
    };
    RedisError::from(io::Error::new(kind, e))
}

impl Error {
    /// The crate's error inside a `RedisError` returned by a
    /// `redis::Commands` method called on a [`Client`], for
    /// [`Error::kind`], [`Error::may_have_executed`] and friends. `None`
    /// for an error reply from Redis, which redis-rs' callers get as
    /// redis-rs' own server error (`err.code() == Some("WRONGTYPE")`).
    ///
    /// ```
    /// use resilient_redis::redis::Commands;
    /// use resilient_redis::{Client, Config, Error, ErrorKind};
    ///
    /// // A memory-only client has no Redis to send commands to.
    /// let client = Client::new(Config::memory_only().build()?)?;
    /// let err = (&client).hset::<_, _, _, i64>("h", "f", 1).unwrap_err();
    /// assert_eq!(Error::from_redis_error(&err).map(Error::kind), Some(ErrorKind::Connection));
    /// # Ok::<(), Error>(())
    /// ```
    pub fn from_redis_error(err: &RedisError) -> Option<&Error> {
        type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
        let source = std::error::Error::source(err)?;
        // redis-rs keeps the I/O error behind an `Arc` (and shows the
        // `Arc` as the source); accept the error itself too.
        let io = match source.downcast_ref::<Shared>() {
            Some(shared) => shared.downcast_ref::<io::Error>(),
            None => source.downcast_ref::<io::Error>(),
        }?;
        io.get_ref()?.downcast_ref::<Error>()
    }
}

/// A reply in a pipeline that the router must act on (a quota reply,
/// `LOADING`, `READONLY`, ...): the call fails with it as if the pipeline
/// had failed. Other error replies (`WRONGTYPE`) stay in their place for
/// redis-rs to report, as it would on a plain connection.
fn availability_reply(values: &[Value]) -> Option<RedisError> {
    values.iter().find_map(|v| match v {
        Value::ServerError(e) => {
            let err = RedisError::from(e.clone());
            (Error::from_redis(err.clone()).class() != ErrorClass::Permanent).then_some(err)
        }
        // A transaction's replies come inside EXEC's array.
        Value::Array(items) => availability_reply(items),
        _ => None,
    })
}

/// `redis::Commands` (and `Cmd::query`, `Pipeline::query`, `Cmd::iter`)
/// on `&Client`: every command goes through the same path as
/// [`Client::execute`], every pipeline as [`Client::pipeline`].
///
/// - **Retries** follow the idempotency table read from the command name
///   (`HSET` is retried, `LPUSH` only when it certainly never left).
/// - **Breaker, pool, failover** apply; with a secondary, a command whose
///   keys the client can tell is sent there during failover and tracked.
/// - **The in-memory fallback does not answer these commands**: while
///   Redis is unavailable they fail with the availability error
///   (breaker open, connection refused, ...), as `execute` does. A command
///   whose keys the client cannot tell drops the values written to memory
///   during an outage, as `execute` does.
/// - **The key prefix is not applied**: arguments are sent as given, as
///   for `execute` and `pipeline`. Use [`Client::prefixed_key`] to name a
///   key in the cache methods' namespace.
///
/// Where `Client` has a cache method of the same name (`get`, `set`,
/// `set_ex`, `exists`, `expire`, `incr`, `mget`, `mset`), method syntax
/// calls the cache method (prefix, memory fallback, typed values); name
/// the trait for redis-rs' own: `Commands::get(&mut &client, "k")`.
///
/// Errors are redis-rs' `RedisError`: an error reply from Redis is
/// redis-rs' own server error; every other failure carries the crate's
/// [`Error`] ([`Error::from_redis_error`]).
///
/// ```
/// use resilient_redis::redis::Commands;
/// use resilient_redis::{Client, Config};
///
/// # fn demo(client: &Client) -> redis::RedisResult<()> {
/// let mut conn = client; // `&Client` is the connection
/// conn.hset::<_, _, _, ()>("user:1", "name", "alice")?;
/// let name: Option<String> = conn.hget("user:1", "name")?;
/// let n: usize = conn.zadd("board", "alice", 42)?;
/// // Or on a temporary:
/// let len: usize = (&*client).llen("queue")?;
/// # Ok(()) }
/// ```
impl ConnectionLike for &Client {
    fn req_packed_command(&mut self, packed: &[u8]) -> RedisResult<Value> {
        let commands = parse_packed(packed).map_err(to_redis_error)?;
        let [args] = &commands[..] else {
            return Err(to_redis_error(Error::invalid_input(format!(
                "a packed command holds {} commands, expected one",
                commands.len()
            ))));
        };
        let cmd = to_cmd(args);
        self.inner
            .command(command_keys(&cmd), Idempotency::Auto.for_cmd(&cmd), |c| {
                c.req_packed_command(packed).and_then(Value::extract_error)
            })
            .map_err(to_redis_error)
    }

    fn req_packed_commands(
        &mut self,
        packed: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let commands = parse_packed(packed).map_err(to_redis_error)?;
        let is = |args: Option<&Args>, name: &[u8]| {
            args.and_then(|a| a.first())
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        };
        // redis-rs sends a transaction as MULTI, the commands, EXEC, and
        // asks for EXEC's reply only.
        let atomic = commands.len() >= 2
            && offset == commands.len() - 1
            && count == 1
            && is(commands.first(), b"MULTI")
            && is(commands.last(), b"EXEC");
        let mut pipe = redis::pipe();
        let body = if atomic {
            pipe.atomic();
            commands.get(1..commands.len() - 1).unwrap_or_default()
        } else {
            &commands[..]
        };
        for args in body {
            pipe.add_command(to_cmd(args));
        }
        // A Redis Cluster serves one slot per request: split by slot (a
        // transaction across slots is refused). Every reply is kept here:
        // redis-rs drops the ignored ones itself.
        if let Some(result) = self.inner.pipeline_across_slots::<Vec<Value>>(&pipe) {
            return result.map_err(to_redis_error);
        }
        self.inner
            .command(
                pipeline_keys(&pipe),
                Idempotency::Auto.for_pipeline(&pipe),
                |c| {
                    let values = c.req_packed_commands(packed, offset, count)?;
                    match availability_reply(&values) {
                        Some(err) => Err(err),
                        None => Ok(values),
                    }
                },
            )
            .map_err(to_redis_error)
    }

    /// The primary's database number from the URL.
    fn get_db(&self) -> i64 {
        self.inner
            .config
            .primary
            .as_ref()
            .map_or(0, |e| e.info.redis_settings().db())
    }

    /// `PING` through the client (retries, breaker, failover).
    fn check_connection(&mut self) -> bool {
        self.ping().is_ok()
    }

    /// Always `true`: the client replaces broken connections itself.
    fn is_open(&self) -> bool {
        true
    }
}

impl Client {
    /// `key` with the configured key prefix, as the cache methods (`get`,
    /// `set`, ...) send it. [`Client::execute`], [`Client::pipeline`] and
    /// the `redis::Commands` methods send keys as given; name a key of the
    /// cache methods' namespace there with this.
    ///
    /// ```
    /// use resilient_redis::{Client, Config};
    ///
    /// let client = Client::new(Config::memory_only().key_prefix("app:").build()?)?;
    /// assert_eq!(client.prefixed_key("user:1"), b"app:user:1");
    /// # Ok::<(), resilient_redis::Error>(())
    /// ```
    pub fn prefixed_key(&self, key: impl AsRef<[u8]>) -> Vec<u8> {
        self.inner.key(key.as_ref()).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use proptest::prelude::*;

    #[test]
    fn parses_what_redis_rs_packs() -> Result<(), Error> {
        let cmd = redis::cmd("HSET")
            .arg("h")
            .arg("f")
            .arg(b"\r\n\0".as_slice())
            .clone();
        let parsed = parse_packed(&cmd.get_packed_command())?;
        assert_eq!(
            parsed,
            vec![vec![
                b"HSET".to_vec(),
                b"h".to_vec(),
                b"f".to_vec(),
                b"\r\n\0".to_vec()
            ]]
        );
        let mut packed = Vec::new();
        for c in [redis::cmd("MULTI"), redis::cmd("INCR").arg("a").clone()] {
            c.write_packed_command(&mut packed);
        }
        assert_eq!(parse_packed(&packed)?.len(), 2);
        assert_eq!(parse_packed(b"")?.len(), 0);
        Ok(())
    }

    /// The packed path tracks exactly the keys `execute` would, and
    /// decides retries alike.
    #[test]
    fn packed_commands_get_the_keys_and_retries_of_execute() -> Result<(), Error> {
        let cmds = [
            redis::cmd("HSET").arg("h").arg("f").arg("v").clone(),
            redis::cmd("LPUSH").arg("l").arg("x").clone(),
            redis::cmd("MSET").arg("a").arg(1).arg("b").arg(2).clone(),
            redis::cmd("EVAL").arg("s").arg(1).arg("k").arg("x").clone(),
            redis::cmd("SCAN").arg(0).arg("MATCH").arg("p*").clone(),
            redis::cmd("FLUSHDB").clone(),
        ];
        for cmd in cmds {
            let parsed = parse_packed(&cmd.get_packed_command())?;
            let rebuilt = to_cmd(&parsed[0]);
            assert_eq!(command_keys(&rebuilt), command_keys(&cmd));
            assert_eq!(
                Idempotency::Auto.for_cmd(&rebuilt),
                Idempotency::Auto.for_cmd(&cmd)
            );
        }
        Ok(())
    }

    #[test]
    fn malformed_requests_are_errors() {
        for bad in [
            &b"*1\r\n$3\r\nGE"[..],
            b"*1\r\n$3\r\nGETX\r\n",
            b"*1\r\n$99999999999999999999\r\n",
            b"*18446744073709551615\r\n",
            b"*1\r\n:3\r\nGET\r\n",
            b"$3\r\nGET\r\n",
            b"*\r\n",
            b"*1",
            b"*-1\r\n",
        ] {
            assert_eq!(
                parse_packed(bad).err().map(|e| e.kind()),
                Some(ErrorKind::InvalidInput),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    proptest! {
        #[test]
        fn round_trips(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..8)) {
            let cmd = to_cmd(&args);
            let parsed = parse_packed(&cmd.get_packed_command());
            prop_assert_eq!(parsed.ok(), Some(vec![args]));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_packed(&bytes);
        }
    }
}

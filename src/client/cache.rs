//! The cache API of [`Client`]: keys get the prefix, `set` the default TTL;
//! while Redis is unavailable the in-memory store answers, and in
//! write-through mode it is kept warm while Redis is healthy.

use std::borrow::Cow;
use std::time::Duration;

use redis::{ConnectionLike, FromRedisValue, ToRedisArgs, Value};

use super::inner::Fallback;
use super::Client;
use crate::codec::{Codec, MAX_VALUE_BYTES};
use crate::consistency::{Access, Mirror};
use crate::error::{Error, ErrorClass, ErrorKind};
use crate::fallback::{JournalOp, MemoryStore, SetOutcome};

impl Client {
    /// The value of `key`, or `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Server`] for an error reply (e.g. `WRONGTYPE`),
    /// [`ErrorKind::UnexpectedReply`] when the value does not convert to
    /// `V`; availability errors only when the fallback is disabled.
    pub fn get<K: AsRef<[u8]>, V: FromRedisValue>(&self, key: K) -> Result<Option<V>, Error> {
        self.get_bytes(key.as_ref())?.map(convert).transpose()
    }

    /// The value of `key` as the caller stored it (decompressed).
    pub(super) fn get_bytes(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let i = &*self.inner;
        let key = i.key(key);
        let bytes = i.cache_op(
            &[&key],
            Access::Read,
            true,
            Mirror::Forget,
            |c| redis::cmd("GET").arg(&key).query::<Option<Vec<u8>>>(c),
            Fallback::Read(|m: &MemoryStore, now| Ok(m.get_vec_at(&key, now))),
        )?;
        self.count_read(bytes.is_some());
        Ok(bytes.map(|b| unpack(&i.codec, b)))
    }

    /// Sets `key` to `value`, with the configured default TTL if any.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] when `value` does not encode to exactly
    /// one Redis argument or is larger than 512 MiB; others as
    /// [`Client::get`].
    pub fn set<K: AsRef<[u8]>, V: ToRedisArgs>(&self, key: K, value: V) -> Result<(), Error> {
        self.store(key.as_ref(), &value, self.inner.config.default_ttl)
    }

    /// Sets `key` to `value`, expiring after `ttl` (millisecond precision).
    ///
    /// # Errors
    ///
    /// As [`Client::set`]; a zero `ttl` is [`ErrorKind::InvalidInput`].
    pub fn set_ex<K: AsRef<[u8]>, V: ToRedisArgs>(
        &self,
        key: K,
        value: V,
        ttl: Duration,
    ) -> Result<(), Error> {
        if ttl_millis(ttl) == 0 {
            return Err(self.inner.fail(Error::invalid_input(
                "set_ex: the TTL must be at least 1 ms",
            )));
        }
        self.store(key.as_ref(), &value, Some(ttl))
    }

    fn store<V: ToRedisArgs>(
        &self,
        key: &[u8],
        value: &V,
        ttl: Option<Duration>,
    ) -> Result<(), Error> {
        let i = &*self.inner;
        let value = encode(&i.codec, value).map_err(|e| i.fail(e))?;
        let key = i.key(key);
        let values: [&[u8]; 1] = [&value];
        i.cache_op(
            &[&key],
            Access::Overwrite,
            true,
            Mirror::Set {
                values: &values,
                ttl,
            },
            |c| {
                let mut cmd = redis::cmd("SET");
                cmd.arg(&key).arg(&value);
                if let Some(ttl) = ttl {
                    cmd.arg("PX").arg(ttl_millis(ttl));
                }
                cmd.query::<()>(c)
            },
            Fallback::Write(JournalOp::Set, |m: &MemoryStore, _| {
                memory_set(m, &key, &value, ttl)
            }),
        )
    }

    /// Deletes `key`; `true` when it existed.
    ///
    /// # Errors
    ///
    /// As [`Client::get`].
    pub fn delete<K: AsRef<[u8]>>(&self, key: K) -> Result<bool, Error> {
        let i = &*self.inner;
        let key = i.key(key.as_ref());
        i.cache_op(
            &[&key],
            Access::Modify,
            true,
            Mirror::Forget,
            |c| redis::cmd("DEL").arg(&key).query::<i64>(c).map(|n| n > 0),
            Fallback::Write(JournalOp::Delete, |m: &MemoryStore, _| Ok(m.delete(&key))),
        )
    }

    /// `true` when `key` exists.
    ///
    /// # Errors
    ///
    /// As [`Client::get`].
    pub fn exists<K: AsRef<[u8]>>(&self, key: K) -> Result<bool, Error> {
        let i = &*self.inner;
        let key = i.key(key.as_ref());
        i.cache_op(
            &[&key],
            Access::Read,
            true,
            Mirror::Forget,
            |c| {
                redis::cmd("EXISTS")
                    .arg(&key)
                    .query::<i64>(c)
                    .map(|n| n > 0)
            },
            Fallback::Read(|m: &MemoryStore, _| Ok(m.exists(&key))),
        )
    }

    /// Sets a TTL on `key` (millisecond precision); `true` when the key
    /// exists.
    ///
    /// # Errors
    ///
    /// As [`Client::get`]; a zero `ttl` is [`ErrorKind::InvalidInput`].
    pub fn expire<K: AsRef<[u8]>>(&self, key: K, ttl: Duration) -> Result<bool, Error> {
        let i = &*self.inner;
        if ttl_millis(ttl) == 0 {
            return Err(i.fail(Error::invalid_input(
                "expire: the TTL must be at least 1 ms",
            )));
        }
        let key = i.key(key.as_ref());
        i.cache_op(
            &[&key],
            Access::Modify,
            true,
            Mirror::Forget,
            |c| {
                redis::cmd("PEXPIRE")
                    .arg(&key)
                    .arg(ttl_millis(ttl))
                    .query::<i64>(c)
                    .map(|n| n > 0)
            },
            Fallback::Write(JournalOp::Set, |m: &MemoryStore, _| Ok(m.expire(&key, ttl))),
        )
    }

    /// Adds `delta` to the integer at `key` (a missing key counts as 0) and
    /// returns the new value.
    ///
    /// Not idempotent: after a failure that may have reached the server
    /// (a read timeout, a connection dropped mid-reply) it is **not** sent
    /// again, and the error says so ([`Error::may_have_executed`]).
    ///
    /// Never answered from memory while Redis is unavailable: a count
    /// computed elsewhere cannot be told from a right one, so the call fails
    /// with the availability error instead. (A memory-only client, with no
    /// Redis configured, counts in memory: there it is the only truth.)
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Server`] when the value is not an integer or would
    /// overflow; the availability error ([`ErrorKind::CircuitOpen`],
    /// [`ErrorKind::Connection`], [`ErrorKind::Timeout`], ...) while Redis
    /// cannot answer, even with the fallback on.
    pub fn incr<K: AsRef<[u8]>>(&self, key: K, delta: i64) -> Result<i64, Error> {
        let i = &*self.inner;
        let key = i.key(key.as_ref());
        i.cache_op(
            &[&key],
            Access::Modify,
            false,
            Mirror::Forget,
            |c| redis::cmd("INCRBY").arg(&key).arg(delta).query::<i64>(c),
            Fallback::MemoryOnly(|m: &MemoryStore, _| m.incr_by(&key, delta)),
        )
    }

    /// The values of `keys`, in order; `None` for each missing key.
    ///
    /// # Errors
    ///
    /// As [`Client::get`].
    pub fn mget<K: AsRef<[u8]>, V: FromRedisValue>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<V>>, Error> {
        let i = &*self.inner;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let prefixed: Vec<Cow<[u8]>> = keys.iter().map(|k| i.key(k.as_ref())).collect();
        let refs: Vec<&[u8]> = prefixed.iter().map(|k| &k[..]).collect();
        if let Some(groups) = i.slot_groups(&refs) {
            // A Redis Cluster: one MGET per hash slot.
            return self.mget_split(keys, groups);
        }
        let keys = &prefixed;
        let values = i.cache_op(
            &refs,
            Access::Read,
            true,
            Mirror::Forget,
            |c| {
                let mut cmd = redis::cmd("MGET");
                for k in keys {
                    cmd.arg(k);
                }
                cmd.query::<Vec<Option<Vec<u8>>>>(c)
            },
            Fallback::Read(|m: &MemoryStore, now| {
                Ok(keys.iter().map(|k| m.get_vec_at(k, now)).collect())
            }),
        )?;
        if values.len() != keys.len() {
            return Err(i.fail(Error::new(
                ErrorKind::UnexpectedReply,
                ErrorClass::Permanent,
                format!(
                    "MGET of {} keys returned {} values",
                    keys.len(),
                    values.len()
                ),
            )));
        }
        values
            .into_iter()
            .map(|v| {
                self.count_read(v.is_some());
                v.map(|b| convert(unpack(&i.codec, b))).transpose()
            })
            .collect()
    }

    /// Sets every `(key, value)` pair, with the default TTL if configured.
    ///
    /// # Errors
    ///
    /// As [`Client::set`].
    pub fn mset<K: AsRef<[u8]>, V: ToRedisArgs>(&self, pairs: &[(K, V)]) -> Result<(), Error> {
        let i = &*self.inner;
        if pairs.is_empty() {
            return Ok(());
        }
        let mut entries = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            entries.push((
                i.key(k.as_ref()),
                encode(&i.codec, v).map_err(|e| i.fail(e))?,
            ));
        }
        let refs: Vec<&[u8]> = entries.iter().map(|(k, _)| &k[..]).collect();
        if let Some(slots) = i.slot_groups(&refs) {
            // A Redis Cluster: one MSET per hash slot, not atomic.
            return self.mset_split(&entries, slots);
        }
        self.mset_groups(&entries, &[(0..entries.len()).collect()])
    }

    /// Writes `entries` (prefixed keys, encoded values) as one cache
    /// operation: one `MSET` per group of `groups` (indices into
    /// `entries`), or one `SET ... PX` per key when a default TTL is set.
    ///
    /// One group without a TTL is one command. Several are one pipeline,
    /// for the keys of several hash slots on one cluster master: if any of
    /// its replies is an error (a slot that moved or is moving, `MOVED`,
    /// `ASK`, `TRYAGAIN`), the operation fails with an error marked
    /// [`Error::resent_by_client`], having perhaps written some groups: the
    /// consistency rules then treat every key as possibly written (as
    /// after a timeout), and the caller sends each group again on its own.
    pub(super) fn mset_groups(
        &self,
        entries: &[(Cow<'_, [u8]>, Vec<u8>)],
        groups: &[Vec<usize>],
    ) -> Result<(), Error> {
        let i = &*self.inner;
        let part: Vec<&(Cow<'_, [u8]>, Vec<u8>)> = groups
            .iter()
            .flatten()
            .filter_map(|n| entries.get(*n))
            .collect();
        let refs: Vec<&[u8]> = part.iter().map(|(k, _)| &k[..]).collect();
        let values: Vec<&[u8]> = part.iter().map(|(_, v)| &v[..]).collect();
        let ttl = i.config.default_ttl;
        i.cache_op_checked(
            &refs,
            Access::Overwrite,
            true,
            Mirror::Set {
                values: &values,
                ttl,
            },
            |c| {
                let mut pipe = redis::pipe();
                match ttl {
                    None => {
                        for group in groups {
                            let mset = pipe.cmd("MSET");
                            for (k, v) in group.iter().filter_map(|n| entries.get(*n)) {
                                mset.arg(&k[..]).arg(v);
                            }
                        }
                    }
                    // MSET cannot set a TTL: one SET ... PX per key.
                    Some(ttl) => {
                        for (k, v) in &part {
                            pipe.cmd("SET")
                                .arg(&k[..])
                                .arg(v)
                                .arg("PX")
                                .arg(ttl_millis(ttl))
                                .ignore();
                        }
                    }
                }
                if groups.len() == 1 {
                    // One slot: one command, or one pipeline whose error
                    // (a redirect included) is redis-rs' own, for the
                    // cluster layer to act on.
                    return match (ttl, pipe.cmd_iter().next()) {
                        (None, Some(mset)) => mset.query::<()>(c),
                        _ => pipe.query::<()>(c),
                    }
                    .map_err(Error::from_redis);
                }
                let replies = c
                    .req_packed_commands(&pipe.get_packed_pipeline(), 0, pipe.len())
                    .map_err(Error::from_redis)?;
                let mut errors = replies.iter().filter_map(|r| match r {
                    Value::ServerError(e) => Some(e),
                    _ => None,
                });
                if replies.len() != pipe.len() {
                    return Err(super::cluster::slot_moved());
                }
                match errors.next() {
                    None => Ok(()),
                    Some(e) if super::cluster::is_cluster_reply(e.code()) => {
                        Err(super::cluster::slot_moved())
                    }
                    Some(e) => Err(Error::from_redis(redis::RedisError::from(e.clone()))),
                }
            },
            Fallback::Write(JournalOp::Set, |m: &MemoryStore, _| {
                part.iter().try_for_each(|(k, v)| memory_set(m, k, v, ttl))
            }),
        )
    }

    pub(super) fn count_read(&self, hit: bool) {
        let c = &self.inner.counters;
        if hit { &c.hits } else { &c.misses }.bump();
    }
}

/// `ttl` in whole milliseconds, at least the value's floor.
fn ttl_millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// A value as the single Redis argument it encodes to, then through the
/// codec: the one place a value is compressed, before it enters any path
/// (Redis, the write-through copy, the memory store, replay).
pub(super) fn encode<V: ToRedisArgs>(codec: &Codec, value: &V) -> Result<Vec<u8>, Error> {
    let bytes = argument(value)?;
    Ok(codec.encode(bytes))
}

/// A value as the single Redis argument it encodes to, at most 512 MiB.
pub(super) fn argument<V: ToRedisArgs>(value: &V) -> Result<Vec<u8>, Error> {
    let mut args = value.to_redis_args();
    if args.len() != 1 {
        return Err(Error::invalid_input(format!(
            "a value must encode to exactly one Redis argument, this one encodes to {}",
            args.len()
        )));
    }
    let bytes = args.pop().unwrap_or_default();
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(Error::invalid_input(format!(
            "value of {} bytes is larger than Redis' limit of {MAX_VALUE_BYTES} bytes",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// Stores a value in memory while Redis is unavailable; a value too large
/// for the store is an error rather than a write silently lost.
fn memory_set(
    m: &MemoryStore,
    key: &[u8],
    value: &[u8],
    ttl: Option<Duration>,
) -> Result<(), Error> {
    match m.set(key, value, ttl) {
        SetOutcome::Stored => Ok(()),
        SetOutcome::TooLarge => Err(Error::new(
            ErrorKind::InvalidInput,
            ErrorClass::Permanent,
            format!(
                "redis is unavailable and a value of {} bytes does not fit in the in-memory fallback (largest entry {} bytes)",
                value.len(),
                m.max_entry_size()
            ),
        )),
    }
}

/// Bytes from Redis or memory as the caller stored them: the one place a
/// value is decompressed, after it leaves any path.
pub(super) fn unpack(codec: &Codec, stored: Vec<u8>) -> Vec<u8> {
    codec.decode(stored)
}

/// A value's bytes, converted to the caller's type.
pub(super) fn convert<V: FromRedisValue>(bytes: Vec<u8>) -> Result<V, Error> {
    V::from_redis_value(Value::BulkString(bytes))
        .map_err(|e| Error::from_redis(redis::RedisError::from(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_must_be_one_argument() {
        assert!(argument(&"x").is_ok());
        assert!(argument(&42).is_ok());
        let err = argument(&vec!["a", "b"]).err().map(|e| e.kind());
        assert_eq!(err, Some(ErrorKind::InvalidInput));
    }
}

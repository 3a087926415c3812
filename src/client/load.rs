//! Cache-aside loading: [`Client::get_or_load`] and [`LoadError`].

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::{FromRedisValue, ToRedisArgs};

use super::cache::{argument, convert};
use super::single_flight::{Join, Waited};
use super::Client;
use crate::error::{Error, ErrorClass};
use crate::stats::Counters;

/// Why [`Client::get_or_load`] failed.
///
/// `#[non_exhaustive]`: match with a `_` arm.
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError<E> {
    /// The loader failed; it ran on this thread.
    Load(E),
    /// Redis or the memory store failed and the loader could not run (for
    /// example the value did not encode).
    Cache(Error),
}

impl<E> LoadError<E> {
    /// The loader's error, if that is what this is.
    pub fn into_load(self) -> Option<E> {
        match self {
            LoadError::Load(e) => Some(e),
            LoadError::Cache(_) => None,
        }
    }

    /// The cache's error, if that is what this is.
    pub fn cache_error(&self) -> Option<&Error> {
        match self {
            LoadError::Load(_) => None,
            LoadError::Cache(e) => Some(e),
        }
    }
}

impl<E: fmt::Display> fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Load(e) => write!(f, "the loader failed: {e}"),
            LoadError::Cache(e) => write!(f, "the cache failed: {e}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for LoadError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LoadError::Load(e) => Some(e),
            LoadError::Cache(e) => Some(e),
        }
    }
}

impl Client {
    /// The value of `key`, or the value `load` returns, stored with `ttl`
    /// (cache-aside).
    ///
    /// - A hit is returned; `load` is not called.
    /// - On a miss, or while Redis is unavailable (breaker open, timeout,
    ///   the fallback answering), `load` runs on this thread and its value
    ///   is stored with `ttl` through [`Client::set_ex`]: in Redis when it
    ///   answers, in memory when the fallback serves (and journaled like any
    ///   write during an outage), so while Redis is down the loader runs
    ///   once per key per TTL, not once per call.
    /// - **Single-flight** within this process (every clone of the client):
    ///   while one thread loads a key, other threads asking for it wait for
    ///   that load and get its value instead of running their own loader.
    ///   They wait at most [`Config::call_bound`](crate::Config::call_bound);
    ///   a waiter whose wait runs out runs its own loader. If the load fails
    ///   (or the loader panics), its thread gets the error (or the panic)
    ///   and one waiting thread runs its own loader; errors are never shared.
    /// - The caller's time first: when the value was loaded but could not be
    ///   stored, it is returned anyway and the failure is counted
    ///   ([`Stats::load_store_failures`](crate::Stats::load_store_failures)).
    ///
    /// Waiters receive the value as `V` encodes it, converted back with
    /// [`FromRedisValue`], exactly as a later [`Client::get`] would.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use resilient_redis::{Client, Config, LoadError};
    ///
    /// let client = Client::new(Config::memory_only().build()?)?;
    /// let ttl = Duration::from_secs(60);
    /// let load = || Ok::<_, std::io::Error>("rendered page".to_string());
    /// let page: String = client.get_or_load("page:/", ttl, load).map_err(|e| match e {
    ///     LoadError::Load(io) => panic!("{io}"),
    ///     LoadError::Cache(e) => e,
    ///     _ => unreachable!(),
    /// })?;
    /// assert_eq!(page, "rendered page");
    /// // A hit: this loader never runs.
    /// let again: Result<String, LoadError<std::io::Error>> =
    ///     client.get_or_load("page:/", ttl, || unreachable!());
    /// assert_eq!(again.ok().as_deref(), Some("rendered page"));
    /// # Ok::<(), resilient_redis::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`LoadError::Load`] with the loader's error (it ran on this thread);
    /// [`LoadError::Cache`] when the read failed for a reason other than
    /// availability (an error reply such as `WRONGTYPE`, a value that does
    /// not convert to `V`), when `ttl` is zero, or when the loaded value does
    /// not encode to one Redis argument.
    ///
    /// # Panics
    ///
    /// When `load` panics, the panic continues on this thread (after the
    /// waiting threads have been released).
    pub fn get_or_load<K, V, E, F>(&self, key: K, ttl: Duration, load: F) -> Result<V, LoadError<E>>
    where
        K: AsRef<[u8]>,
        V: FromRedisValue + ToRedisArgs,
        F: FnOnce() -> Result<V, E>,
    {
        let key = key.as_ref();
        let i = &*self.inner;
        if ttl.as_millis() == 0 {
            return Err(LoadError::Cache(i.fail(Error::invalid_input(
                "get_or_load: the TTL must be at least 1 ms",
            ))));
        }
        if let Some(bytes) = self.cached(key)? {
            return convert(bytes).map_err(LoadError::Cache);
        }
        let deadline = Instant::now().checked_add(i.config.call_bound());
        let mut waited = false;
        loop {
            match i.flights.join(key) {
                Join::Lead(lead) => {
                    // Someone may have loaded and stored it between our
                    // miss and our lead.
                    if let Some(bytes) = self.cached(key)? {
                        let value = convert(bytes.clone()).map_err(LoadError::Cache);
                        lead.publish(Arc::from(bytes));
                        return value;
                    }
                    let (value, bytes) = self.load_and_store(key, ttl, load)?;
                    lead.publish(Arc::from(bytes));
                    return Ok(value);
                }
                Join::Wait(wait) => {
                    if !waited {
                        waited = true;
                        Counters::bump(&i.counters.loads_coalesced);
                    }
                    let Some(deadline) = deadline else {
                        // A bound too large for an Instant: no wait.
                        return self.load_and_store(key, ttl, load).map(|(v, _)| v);
                    };
                    match wait.wait(deadline) {
                        Waited::Value(bytes) => {
                            return convert(bytes.to_vec()).map_err(LoadError::Cache)
                        }
                        // One of the waiters leads the next load.
                        Waited::Failed => continue,
                        // The leader is stuck: the caller's time first.
                        Waited::TimedOut => {
                            Counters::bump(&i.counters.load_wait_timeouts);
                            return self.load_and_store(key, ttl, load).map(|(v, _)| v);
                        }
                    }
                }
            }
        }
    }

    /// The cached value's bytes; `None` on a miss or when Redis is
    /// unavailable (the loader then runs).
    fn cached<E>(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LoadError<E>> {
        match self.get_bytes(key) {
            Ok(bytes) => Ok(bytes),
            Err(e) if matches!(e.class(), ErrorClass::Transient | ErrorClass::RateLimited) => {
                Ok(None)
            }
            Err(e) => Err(LoadError::Cache(e)),
        }
    }

    /// Runs `load` on this thread and stores its value; returns the value
    /// and its bytes (for the waiters).
    fn load_and_store<V, E, F>(
        &self,
        key: &[u8],
        ttl: Duration,
        load: F,
    ) -> Result<(V, Vec<u8>), LoadError<E>>
    where
        V: ToRedisArgs,
        F: FnOnce() -> Result<V, E>,
    {
        let c = &self.inner.counters;
        Counters::bump(&c.loads);
        let value = match panic::catch_unwind(AssertUnwindSafe(load)) {
            Ok(Ok(value)) => value,
            Ok(Err(e)) => {
                Counters::bump(&c.load_errors);
                return Err(LoadError::Load(e));
            }
            Err(panicked) => {
                Counters::bump(&c.load_errors);
                panic::resume_unwind(panicked)
            }
        };
        let bytes = argument(&value).map_err(|e| LoadError::Cache(self.inner.fail(e)))?;
        if let Err(e) = self.set_ex(key, &bytes[..], ttl) {
            // Counted as an error by `set_ex`; the value is still good.
            Counters::bump(&c.load_store_failures);
            log::debug!("get_or_load: the loaded value was not stored: {e}");
        }
        Ok((value, bytes))
    }
}

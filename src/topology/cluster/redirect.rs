//! Reading the cluster's answers to a command: a redirect (`MOVED`, `ASK`)
//! to follow, or a cluster state (`TRYAGAIN`, `CLUSTERDOWN`, ...) that
//! says the command did not run.

use redis::{RedisError, ServerErrorKind};

use super::shards::NodeAddr;
use crate::error::Error;

/// Where the cluster sent a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Redirect {
    /// The slot lives on `to` now: update the map and re-send there.
    Moved { slot: u16, to: NodeAddr },
    /// The slot is being migrated and this key is on `to` already: send
    /// `ASKING` then the command there, once.
    Ask { slot: u16, to: NodeAddr },
}

/// The `RedisError` inside one of the crate's errors, if it carries one.
pub(crate) fn redis_source(e: &Error) -> Option<&RedisError> {
    std::error::Error::source(e).and_then(|s| s.downcast_ref::<RedisError>())
}

/// The redirect `e` asks for, when every error reply in it is one (a
/// single command's, or each of a one-slot pipeline's: they are about
/// the slot, so none of the commands ran).
pub(crate) fn redirect_of(e: &Error) -> Option<Redirect> {
    let err = redis_source(e)?;
    let errors = err.clone().into_server_errors()?;
    let mut found: Option<Redirect> = None;
    for (_, server) in errors.iter() {
        let redirect = parse(server.kind()?, server.details()?)?;
        match &found {
            // Different targets in one pipeline: not one redirect.
            Some(f) if *f != redirect => return None,
            _ => found = Some(redirect),
        }
    }
    found
}

/// `"<slot> <host>:<port>"` after `MOVED` or `ASK`.
fn parse(kind: ServerErrorKind, details: &str) -> Option<Redirect> {
    let mut parts = details.split_ascii_whitespace();
    let slot = parts
        .next()?
        .parse::<u16>()
        .ok()
        .filter(|s| *s < super::slot::SLOTS)?;
    let to = NodeAddr::parse(parts.next()?)?;
    match kind {
        ServerErrorKind::Moved => Some(Redirect::Moved { slot, to }),
        ServerErrorKind::Ask => Some(Redirect::Ask { slot, to }),
        _ => None,
    }
}

/// `true` when `e` is one command's error reply, not a pipeline's (a
/// single reply carries its details; a pipeline's errors do not).
pub(crate) fn is_single_reply(e: &Error) -> bool {
    redis_source(e).is_some_and(|r| r.detail().is_some())
}

/// `true` when `e` is one command's error reply saying the cluster did
/// not run it (`TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`, `LOADING`,
/// `READONLY`): safe to re-send whatever the command. A pipeline's is
/// not (its other commands may have run).
pub(crate) fn not_executed(e: &Error) -> bool {
    let Some(err) = redis_source(e) else {
        return false;
    };
    // A single reply carries its details; a pipeline's errors do not.
    err.detail().is_some()
        && matches!(
            err.code(),
            Some("TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "LOADING" | "READONLY")
        )
}

/// `true` when `e` says the slot map may be out of date: a connection to
/// a master failed, its breaker is open, or it answered as a replica or
/// as a node that no longer serves the slot.
pub(crate) fn calls_for_refresh(e: &Error) -> bool {
    use crate::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::Connection | ErrorKind::Timeout | ErrorKind::CircuitOpen
    ) || e.counts_against_breaker()
    {
        return true;
    }
    matches!(
        redis_source(e).and_then(RedisError::code),
        Some("READONLY" | "CLUSTERDOWN" | "MASTERDOWN" | "MOVED")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply_error(reply: &[u8]) -> Error {
        Error::from_redis(crate::error::tests::server_error(reply))
    }

    #[test]
    fn redirects_are_read() {
        let moved = reply_error(b"-MOVED 3999 127.0.0.1:6381\r\n");
        assert_eq!(
            redirect_of(&moved),
            Some(Redirect::Moved {
                slot: 3999,
                to: NodeAddr {
                    host: "127.0.0.1".into(),
                    port: 6381
                }
            })
        );
        let ask = reply_error(b"-ASK 1 [::1]:7000\r\n");
        assert!(matches!(
            redirect_of(&ask),
            Some(Redirect::Ask { slot: 1, .. })
        ));
        for bad in [
            &b"-MOVED 99999 h:1\r\n"[..],
            b"-MOVED 1\r\n",
            b"-MOVED x h:1\r\n",
            b"-MOVED 1 h:0\r\n",
            b"-ERR 1 h:1\r\n",
        ] {
            assert_eq!(redirect_of(&reply_error(bad)), None);
        }
    }

    #[test]
    fn cluster_states_are_not_executed() {
        assert!(not_executed(&reply_error(
            b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"
        )));
        assert!(not_executed(&reply_error(
            b"-CLUSTERDOWN The cluster is down\r\n"
        )));
        assert!(!not_executed(&reply_error(
            b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
        )));
        assert!(!not_executed(&reply_error(b"-ERR x\r\n")));
        assert!(calls_for_refresh(&reply_error(
            b"-READONLY You can't write against a read only replica.\r\n"
        )));
        assert!(!calls_for_refresh(&reply_error(b"-CROSSSLOT Keys\r\n")));
    }
}

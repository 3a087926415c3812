//! Which packed requests may share a connection with other callers'.
//!
//! An allow-list: a command shares only if one of the crate's command
//! tables knows it (the idempotency tables of [`crate::retry`] and the key
//! table of [`crate::consistency`]). Every command there is a plain data
//! command that neither blocks nor changes connection state, with one
//! exception decided by argument: `XREAD ... BLOCK`. Everything else —
//! blocking pops, `WAIT`, `MULTI`/`EXEC`/`WATCH`, `SUBSCRIBE`, `SELECT`,
//! `CLIENT ...`, `AUTH`, `HELLO`, module commands, anything unknown — goes
//! to a connection of its own, as without automatic pipelining.

use crate::consistency::is_listed_command;
use crate::retry::{IDEMPOTENT_WRITES, READ_ONLY};

/// Longest command name looked up; longer names are unknown.
const MAX_NAME: usize = 24;

/// `true` when every command of the packed request `packed` (RESP arrays
/// of bulk strings, as redis-rs builds them) may share a connection.
/// Anything malformed is not shared (the dedicated path reports it).
pub(crate) fn is_shareable(packed: &[u8]) -> bool {
    let mut rest = packed;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let Some(n) = header(&mut rest, b'*') else {
            return false;
        };
        let mut name = [0u8; MAX_NAME];
        let mut name_len = None;
        let mut blocks = false;
        for i in 0..n {
            let Some(arg) = bulk(&mut rest) else {
                return false;
            };
            if i == 0 {
                let Some(out) = name.get_mut(..arg.len()) else {
                    return false;
                };
                for (o, b) in out.iter_mut().zip(arg) {
                    *o = b.to_ascii_uppercase();
                }
                name_len = Some(arg.len());
            } else if arg.eq_ignore_ascii_case(b"BLOCK") {
                blocks = true;
            }
        }
        let Some(upper) = name_len.and_then(|len| name.get(..len)) else {
            return false;
        };
        if !shares(upper, blocks) {
            return false;
        }
    }
    true
}

/// One command by its upper-case name; `blocking_arg` when an argument
/// after the name is the word `BLOCK`.
fn shares(upper: &[u8], blocking_arg: bool) -> bool {
    let Ok(name) = std::str::from_utf8(upper) else {
        return false;
    };
    let listed = READ_ONLY.binary_search(&name).is_ok()
        || IDEMPOTENT_WRITES.binary_search(&name).is_ok()
        || is_listed_command(upper);
    // XREAD is in the read-only table; with BLOCK it waits on the server.
    listed && !(name == "XREAD" && blocking_arg)
}

/// Reads `<tag><decimal>\r\n` off the front of `buf`.
fn header(buf: &mut &[u8], tag: u8) -> Option<usize> {
    let (&first, after) = buf.split_first()?;
    if first != tag {
        return None;
    }
    let end = after.iter().position(|&b| b == b'\r')?;
    let digits = after.get(..end)?;
    if digits.is_empty() || after.get(end + 1) != Some(&b'\n') {
        return None;
    }
    let mut n: usize = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(usize::from(d - b'0'))?;
    }
    *buf = after.get(end + 2..)?;
    Some(n)
}

/// Reads one bulk string (`$len\r\nbytes\r\n`) off the front of `buf`.
fn bulk<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = header(buf, b'$')?;
    let whole: &'a [u8] = buf;
    let arg = whole.get(..len)?;
    if whole.get(len..len.checked_add(2)?)? != b"\r\n" {
        return None;
    }
    *buf = whole.get(len + 2..)?;
    Some(arg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packed(args: &[&str]) -> Vec<u8> {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.get_packed_command()
    }

    #[test]
    fn data_commands_share() {
        for args in [
            &["GET", "k"][..],
            &["set", "k", "v", "EX", "10"],
            &["DEL", "a", "b"],
            &["INCR", "n"],
            &["MGET", "a", "b"],
            &["PING"],
            &["EVAL", "return 1", "0"],
            &["XREAD", "COUNT", "1", "STREAMS", "s", "0"],
            &["LPUSH", "l", "x"],
        ] {
            assert!(is_shareable(&packed(args)), "{args:?}");
        }
    }

    #[test]
    fn the_commands_the_issue_names_never_share() {
        for args in [
            &["BLPOP", "l", "0"][..],
            &["BRPOP", "l", "0"],
            &["BLMOVE", "a", "b", "LEFT", "RIGHT", "0"],
            &["BZPOPMIN", "z", "0"],
            &["BRPOPLPUSH", "a", "b", "0"],
            &["BLMPOP", "0", "1", "l", "LEFT"],
            &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"],
            &["xread", "COUNT", "1", "block", "10", "STREAMS", "s", "$"],
            &[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "BLOCK",
                "0",
                "STREAMS",
                "s",
                ">",
            ],
            &["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"],
            &["WAIT", "1", "0"],
            &["MULTI"],
            &["EXEC"],
            &["WATCH", "k"],
            &["UNWATCH"],
            &["DISCARD"],
            &["SUBSCRIBE", "c"],
            &["PSUBSCRIBE", "c*"],
            &["SSUBSCRIBE", "c"],
            &["SELECT", "1"],
            &["CLIENT", "SETNAME", "x"],
            &["CLIENT", "TRACKING", "on"],
            &["AUTH", "pw"],
            &["HELLO", "3"],
            &["MONITOR"],
            // Cluster: `ASKING` covers the next command on its connection
            // and `READONLY` lets the connection read a replica's slots;
            // shared, they would apply to another caller's command (a read
            // served by an importing node that lacks the key).
            &["ASKING"],
            &["READONLY"],
            &["READWRITE"],
            &["DEBUG", "SLEEP", "1"],
            &["NOT-A-COMMAND"],
            &["A-COMMAND-NAME-LONGER-THAN-ANY-IN-THE-TABLES"],
        ] {
            assert!(!is_shareable(&packed(args)), "{args:?}");
        }
    }

    #[test]
    fn a_pipeline_shares_only_if_every_command_does() {
        let mut p = redis::pipe();
        p.cmd("SET").arg("a").arg(1).cmd("GET").arg("a");
        assert!(is_shareable(&p.get_packed_pipeline()));
        p.cmd("SELECT").arg(2);
        assert!(!is_shareable(&p.get_packed_pipeline()));
        let mut t = redis::pipe();
        t.atomic().cmd("SET").arg("a").arg(1);
        assert!(!is_shareable(&t.get_packed_pipeline()));
    }

    #[test]
    fn malformed_requests_do_not_share() {
        for bad in [
            &b""[..],
            b"*1\r\n",
            b"*1\r\n$3\r\nGE",
            b"*1\r\n$3\r\nGETxx",
            b"*x\r\n",
            b"GET k\r\n",
            b"*1\r\n$99999999999999999999999\r\nGET\r\n",
            b"*18446744073709551615\r\n$3\r\nGET\r\n",
        ] {
            assert!(!is_shareable(bad), "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = is_shareable(&bytes);
        }
    }
}

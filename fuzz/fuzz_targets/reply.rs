//! Arbitrary bytes as a server reply: the RESP parser and the error
//! classification must never panic, and error messages stay bounded; every
//! quota reset hint parsed from them goes through the router's cooldown
//! arithmetic (from `now`s up to the end of `Instant`'s range), which must
//! not panic and must stay within its maximum.
#![no_main]

#[path = "../cases.rs"]
mod cases;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| cases::run_reply(bytes));

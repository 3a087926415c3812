//! Arbitrary bytes as a server reply: the RESP parser and the error
//! classification must never panic, and error messages stay bounded.
#![no_main]

#[path = "../cases.rs"]
mod cases;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| cases::run_reply(bytes));

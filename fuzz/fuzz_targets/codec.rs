//! Stored values through the value codec: decoding anything (as stored and
//! behind the compression header) never panics, never allocates beyond the
//! value's bound, and every value round-trips.
#![no_main]

#[path = "../../tests/support/fuzz_cases.rs"]
mod cases;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| cases::run_codec(bytes));

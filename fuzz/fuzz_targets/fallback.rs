//! Random operation sequences on the fallback store and the outage journal,
//! checked against `HashMap`/`Vec` models: no panic, no read of a value the
//! model does not hold, no key lost without an eviction, bounds kept.
#![no_main]

#[path = "../../tests/support/fuzz_cases.rs"]
mod cases;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: cases::FallbackCase| cases::run_fallback(&case));

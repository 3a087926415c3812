//! Random interleavings of simulated callers (each attempt cut into the
//! client's steps), the background reconciler, outages, failovers, restores
//! and evictions around the consistency state machine: no panic, and no read
//! older than a write acknowledged before it began.
#![no_main]

#[path = "../../tests/support/fuzz_cases.rs"]
mod cases;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: cases::ConsistencyCase| cases::run_consistency(&case));

//! Arbitrary URLs and environment maps fed to the config parser: it must
//! return `Ok` or a `Config` error, never panic, and never echo a password.
#![no_main]

#[path = "../../tests/support/fuzz_cases.rs"]
mod cases;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: cases::ConfigCase| cases::run_config(&case));

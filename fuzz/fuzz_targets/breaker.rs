//! Arbitrary operation sequences (acquire, verdicts, drops, clock steps,
//! reset, force-open) run against the breaker and a plain reference model,
//! compared after every step.
#![no_main]

#[path = "../../tests/support/fuzz_cases.rs"]
mod cases;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|case: cases::BreakerCase| cases::run_breaker(&case));

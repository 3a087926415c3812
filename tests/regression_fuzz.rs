//! Replays every input committed under `fuzz/regressions/<target>/` through
//! the same check the fuzz target runs, on stable Rust, so CI guards against
//! regressions without nightly or libFuzzer.

#[path = "../fuzz/cases.rs"]
mod cases;

use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};

/// Decodes each file in `fuzz/regressions/<target>` as libFuzzer would and
/// runs `check` on it. Returns how many inputs ran.
fn replay<T: for<'a> Arbitrary<'a>>(target: &str, check: impl Fn(&T)) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut ran = 0;
    for entry in entries.flatten() {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        if let Ok(case) = T::arbitrary_take_rest(Unstructured::new(&bytes)) {
            check(&case);
            ran += 1;
        }
    }
    ran
}

#[test]
fn config_regressions() {
    let ran = replay("config", cases::run_config);
    // The directory holds at least the seed inputs committed with the target.
    assert!(ran >= 1, "no config regression inputs found");
}

#[test]
fn fallback_regressions() {
    let ran = replay("fallback", cases::run_fallback);
    assert!(
        ran >= 3,
        "expected the committed fallback seed inputs, ran {ran}"
    );
}

#[test]
fn breaker_regressions() {
    let ran = replay("breaker", cases::run_breaker);
    assert!(ran >= 1, "no breaker regression inputs found");
}

#[test]
fn reply_regressions() {
    // Raw bytes: no Arbitrary decoding, the file is the reply.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/reply");
    let mut ran = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        cases::run_reply(&std::fs::read(entry.path()).unwrap_or_default());
        ran += 1;
    }
    assert!(
        ran >= 3,
        "expected the committed reply seed inputs, ran {ran}"
    );
}

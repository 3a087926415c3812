//! Replays every input committed under `tests/fuzz_regressions/<target>/` through
//! the same check the fuzz target runs, on stable Rust, so CI guards against
//! regressions without nightly or libFuzzer.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/fuzz_cases.rs"]
mod cases;

use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};

/// The committed inputs of `target`: file name and bytes, sorted by name.
/// A directory or file that cannot be read fails the test.
fn inputs(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut inputs: Vec<(String, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (
                format!(
                    "{target}/{}",
                    path.file_name().unwrap_or_default().to_string_lossy()
                ),
                bytes,
            )
        })
        .collect();
    inputs.sort();
    inputs
}

/// Decodes each file in `tests/fuzz_regressions/<target>` as libFuzzer would and
/// runs `check` on it. An input that does not decode is one libFuzzer would
/// skip, and one that decodes to an empty scenario (`exercises` is false:
/// the encoding of `arbitrary` changed under it) checks next to nothing:
/// either fails the test, naming the file. Returns how many inputs ran.
fn replay<T: for<'a> Arbitrary<'a> + std::fmt::Debug>(
    target: &str,
    exercises: impl Fn(&T) -> bool,
    check: impl Fn(&T),
) -> usize {
    let inputs = inputs(target);
    for (name, bytes) in &inputs {
        match T::arbitrary_take_rest(Unstructured::new(bytes)) {
            Ok(case) if exercises(&case) => check(&case),
            Ok(case) => panic!("{name} decodes to an empty case, regenerate it: {case:?}"),
            Err(e) => panic!("{name} no longer decodes ({e}): fix or regenerate it"),
        }
    }
    inputs.len()
}

#[test]
fn config_regressions() {
    // An empty URL and no variables is a case too (the `empty` input).
    let ran = replay("config", |_| true, cases::run_config);
    // The directory holds at least the seed inputs committed with the target.
    assert!(ran >= 1, "no config regression inputs found");
}

#[test]
fn fallback_regressions() {
    let ran = replay("fallback", |c| !c.ops.is_empty(), cases::run_fallback);
    assert!(
        ran >= 3,
        "expected the committed fallback seed inputs, ran {ran}"
    );
}

#[test]
fn breaker_regressions() {
    let ran = replay("breaker", |c| !c.ops.is_empty(), cases::run_breaker);
    assert!(ran >= 1, "no breaker regression inputs found");
}

#[test]
fn reply_regressions() {
    // Raw bytes: no Arbitrary decoding, the file is the reply.
    let inputs = inputs("reply");
    for (_, bytes) in &inputs {
        cases::run_reply(bytes);
    }
    let ran = inputs.len();
    assert!(
        ran >= 3,
        "expected the committed reply seed inputs, ran {ran}"
    );
}

#[test]
fn codec_regressions() {
    // Raw bytes: the file is the stored value.
    let inputs = inputs("codec");
    for (_, bytes) in &inputs {
        cases::run_codec(bytes);
    }
    let ran = inputs.len();
    assert!(
        ran >= 4,
        "expected the committed codec seed inputs, ran {ran}"
    );
}

#[test]
fn consistency_regressions() {
    let ran = replay(
        "consistency",
        |c: &cases::ConsistencyCase| !c.actions.is_empty(),
        cases::run_consistency,
    );
    assert!(
        ran >= 1,
        "expected the committed consistency seed inputs, ran {ran}"
    );
}

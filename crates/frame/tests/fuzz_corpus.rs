//! Replays the committed cargo-fuzz corpus (fuzz/corpus/decoder) through the
//! same checks as the fuzz target (`warpwire_frame::fuzzing::check_stream`),
//! on stable, in every test run: inputs the fuzzer once found interesting
//! stay regression tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn replay_fuzz_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decoder");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz corpus is committed") {
        let path = entry.unwrap().path();
        warpwire_frame::fuzzing::check_stream(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 16, "corpus has only {n} inputs");
}

//! Replays the committed cargo-fuzz corpus of the `session` target
//! (fuzz/corpus/session) through the same checks
//! (`warpwire_engine::testing::check_ops`), on stable, in every test run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn replay_session_fuzz_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/session");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz corpus is committed") {
        let path = entry.unwrap().path();
        warpwire_engine::testing::check_ops(&std::fs::read(&path).unwrap());
        n += 1;
    }
    assert!(n >= 16, "corpus has only {n} inputs");
}

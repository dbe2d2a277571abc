//! Sequences of peer operations against one engine worker serving warpwire
//! (connect, bytes in any chunks, whole frames, time passing, FIN, reset,
//! a peer that stops reading, shutdown): the checks live in
//! `warpwire_engine::testing::check_ops`, shared with the stable corpus
//! replay test (crates/engine/tests/fuzz_corpus.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| warpwire_engine::testing::check_ops(data));

//! Streaming decoder under arbitrary bytes and arbitrary chunking: the
//! checks live in `warpwire_frame::fuzzing::check_stream` (byte 0 picks the
//! payload limit, byte 1 seeds the chunk sizes, the rest is the stream),
//! shared with the stable corpus replay test.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| warpwire_frame::fuzzing::check_stream(data));

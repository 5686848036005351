//! Fuzz target: arbitrary bytes through `callgate::fuzzing::sdp::exercise`
//! (see its docs for what it drives and asserts). Nothing may panic.
//! `cargo +nightly fuzz run sdp fuzz/corpus/sdp`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callgate::fuzzing::sdp::exercise(data);
});

//! Fuzz target: arbitrary bytes through `callgate::fuzzing::srtp::exercise`
//! (see its docs for what it drives and asserts). Nothing may panic.
//! `cargo +nightly fuzz run srtp fuzz/corpus/srtp`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callgate::fuzzing::srtp::exercise(data);
});

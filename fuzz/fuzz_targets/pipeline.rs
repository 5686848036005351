//! Fuzz target: arbitrary bytes through `callgate::fuzzing::pipeline::exercise`
//! (see its docs for what it drives and asserts). Nothing may panic.
//! `cargo +nightly fuzz run pipeline fuzz/corpus/pipeline`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callgate::fuzzing::pipeline::exercise(data);
});

//! Fuzz target: arbitrary bytes through `callgate::fuzzing::ng::exercise`
//! (see its docs for what it drives and asserts). Nothing may panic.
//! `cargo +nightly fuzz run ng fuzz/corpus/ng`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callgate::fuzzing::ng::exercise(data);
});

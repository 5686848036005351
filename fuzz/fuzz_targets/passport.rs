//! Fuzz target: arbitrary bytes through `callgate::fuzzing::passport::exercise`
//! (see its docs for what it drives and asserts). Nothing may panic.
//! `cargo +nightly fuzz run passport fuzz/corpus/passport`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callgate::fuzzing::passport::exercise(data);
});

//! Fuzz target: arbitrary bytes through `callgate::fuzzing::http::exercise`
//! (see its docs for what it drives and asserts). Nothing may panic.
//! `cargo +nightly fuzz run http fuzz/corpus/http`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callgate::fuzzing::http::exercise(data);
});

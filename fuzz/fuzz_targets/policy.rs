//! Fuzz target: arbitrary bytes through `callgate::fuzzing::policy::exercise`
//! (see its docs for what it drives and asserts). Nothing may panic.
//! `cargo +nightly fuzz run policy fuzz/corpus/policy`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callgate::fuzzing::policy::exercise(data);
});

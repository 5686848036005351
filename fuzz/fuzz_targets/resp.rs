//! Fuzz target: arbitrary bytes through `callgate::fuzzing::resp::exercise`
//! (see its docs for what it drives and asserts). Nothing may panic.
//! `cargo +nightly fuzz run resp fuzz/corpus/resp`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callgate::fuzzing::resp::exercise(data);
});

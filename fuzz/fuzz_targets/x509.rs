//! Fuzz target: arbitrary bytes through `callgate::fuzzing::x509::exercise`
//! (see its docs for what it drives and asserts). Nothing may panic.
//! `cargo +nightly fuzz run x509 fuzz/corpus/x509`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callgate::fuzzing::x509::exercise(data);
});

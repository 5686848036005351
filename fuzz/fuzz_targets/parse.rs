//! Fuzz target: arbitrary bytes through every parser entry point and the
//! splicer. Nothing may panic. `cargo +nightly fuzz run parse`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callgate::sip::fuzzing::exercise(data);
});

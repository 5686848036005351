//! Fuzz target: arbitrary bytes through `callgate::fuzzing::pcap::exercise`
//! (see its docs for what it drives and asserts). Nothing may panic.
//! `cargo +nightly fuzz run pcap fuzz/corpus/pcap`
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    callgate::fuzzing::pcap::exercise(data);
});

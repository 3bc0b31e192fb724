//! `verify::basic` on fuzzed pairs and headers (harness::check_basic).
#![no_main]

#[path = "../../shared/tests/properties/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::check_basic(&harness::BasicCase::decode(data));
});

//! `provider::path_token` on fuzzed tokens and paths (harness::check_path_token).
#![no_main]

#[path = "../../shared/tests/properties/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::check_path_token(&harness::PathCase::decode(data));
});

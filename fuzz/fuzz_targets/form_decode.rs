//! `trifft::form_to_json` on fuzzed bytes (harness::check_form).
#![no_main]

#[path = "../../shared/tests/properties/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::check_form(data);
});

//! The envelope encoder on fuzzed fields and payloads (harness::check_envelope).
#![no_main]

#[path = "../../shared/tests/properties/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::check_envelope(&harness::EnvelopeCase::decode(data));
});

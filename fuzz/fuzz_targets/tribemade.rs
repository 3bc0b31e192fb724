//! tribemade's receiver on fuzzed requests: no panic, no 2xx without a valid credential, no echo in
//! error answers, only SQS-legal messages within the size limit (harness::check_provider).
#![no_main]

#[path = "../../shared/tests/properties/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::check_provider("tribemade", &harness::Case::decode(data));
});

//! standard-webhook's receiver (Standard Webhooks) on fuzzed requests: no panic, no 2xx without
//! a valid credential, no echo in error answers, only SQS-legal messages within the size limit
//! (harness::check_provider).
#![no_main]

#[path = "../../shared/tests/properties/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    harness::check_provider("standard", &harness::Case::decode(data));
});

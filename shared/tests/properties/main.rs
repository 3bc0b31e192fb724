//! Properties of the webhook intake on random and sample input, without a nightly toolchain.
//! The properties themselves live in `harness.rs`, which the cargo-fuzz targets in `fuzz/`
//! include too: this test runs them on the samples in `events/` and on proptest's requests, the
//! fuzzer on what libFuzzer makes up (`make fuzz`).

mod harness;

mod byte_exact;
mod codecs;
mod dedup;
mod receivers;
mod samples;
mod signatures;
mod tenants;

/// Cases per proptest: enough to reach every branch the strategies aim at, few enough that the
/// whole suite stays within seconds on a debug build.
pub fn config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases,
        max_shrink_iters: 2_000,
        ..proptest::test_runner::Config::default()
    }
}

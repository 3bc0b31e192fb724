//! Every sample in `events/` through every receiver, signed and unsigned, in every way its
//! provider sends a credential, with roomy and with tight limits: the properties hold for all,
//! and the signer's own samples are accepted while the unsigned ones are refused.

use crate::harness::{self, check_provider, Case, PROVIDERS};

fn case(body: &[u8]) -> Case {
    Case {
        body: body.to_vec(),
        ..Case::default()
    }
}

#[test]
fn every_sample_signed_by_its_provider_is_accepted_in_every_credential_variant() {
    for provider in PROVIDERS {
        let samples = harness::samples(provider);
        assert!(!samples.is_empty(), "events/{provider} has no samples");
        for (name, body) in &samples {
            for variant in 0..3 {
                let signed = Case {
                    sign: true,
                    variant,
                    ..case(body)
                };
                assert!(
                    harness::has_valid_credential(provider, &harness::build(provider, &signed)),
                    "the oracle sees {provider}'s own credential on {name} (variant {variant})"
                );
                let outcome = check_provider(provider, &signed);
                assert!(
                    (200..300).contains(&outcome.status),
                    "{provider}/{name} signed (variant {variant}): {outcome:?}"
                );
            }
        }
    }
}

#[test]
fn every_sample_without_a_credential_is_refused_401_by_every_receiver() {
    for provider in PROVIDERS {
        for sample_provider in PROVIDERS {
            for (name, body) in harness::samples(sample_provider) {
                let unsigned = case(&body);
                assert!(
                    !harness::has_valid_credential(provider, &harness::build(provider, &unsigned)),
                    "the oracle sees no credential on {sample_provider}/{name} for {provider}"
                );
                let outcome = check_provider(provider, &unsigned);
                assert_eq!(
                    outcome.status, 401,
                    "{provider} <- {sample_provider}/{name}"
                );
            }
        }
    }
}

#[test]
fn every_sample_keeps_the_properties_under_tight_limits_skew_and_another_providers_signature() {
    let mut statuses = std::collections::BTreeSet::new();
    for provider in PROVIDERS {
        for sample_provider in PROVIDERS {
            for (_, body) in harness::samples(sample_provider) {
                for (tight, skew_secs) in [(true, 0), (false, 899), (false, -901), (true, 1200)] {
                    let outcome = check_provider(
                        provider,
                        &Case {
                            sign: true,
                            tight,
                            skew_secs,
                            ..case(&body)
                        },
                    );
                    statuses.insert(outcome.status);
                }
            }
        }
    }
    // Samples signed for one provider and sent to another reach its inspection: refusals and
    // size limits, not only acceptance.
    for status in [200, 400, 401, 413] {
        assert!(
            statuses.contains(&status),
            "{status} never seen: {statuses:?}"
        );
    }
}

#[test]
fn every_sample_prefixed_as_a_fuzz_seed_decodes_to_the_signed_sample() {
    // fuzz/run.sh seeds each target's corpus with `01 00 00` + sample: that must be the sample,
    // signed, as its provider sends it.
    for provider in PROVIDERS {
        for (name, body) in harness::samples(provider) {
            let seed = [&[1u8, 0, 0][..], &body].concat();
            let case = Case::decode(&seed);
            assert!(case.sign && !case.tight && case.method.is_none() && case.skew_secs == 0);
            assert_eq!(case.body, body, "{provider}/{name}");
            let outcome = check_provider(provider, &case);
            assert_eq!(outcome.status, 200, "{provider}/{name}");
        }
    }
}

#[test]
fn every_saved_fuzz_artifact_replays_without_breaking_a_property() {
    // fuzz/artifacts/<target>/<input>: crashes found by `make fuzz`, kept as regressions.
    let Ok(targets) = std::fs::read_dir(harness::root().join("fuzz").join("artifacts")) else {
        return;
    };
    for target in targets.map(|t| t.unwrap().path()).filter(|t| t.is_dir()) {
        let name = target.file_name().unwrap().to_string_lossy().into_owned();
        for input in std::fs::read_dir(&target).unwrap() {
            let input = input.unwrap().path();
            harness::check_target(&name, &std::fs::read(&input).unwrap());
        }
    }
}

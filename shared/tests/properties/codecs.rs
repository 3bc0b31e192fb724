//! The parsers and encoders the receivers rely on: Basic authentication, URL tokens in paths,
//! form decoding and the SQS envelope, on random input (the same checks as the fuzz targets
//! `basic_auth`, `path_token`, `form_decode` and `envelope`).

use base64::Engine;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};

use shared::envelope::{Envelope, Payload};
use shared::secret::Secret;
use shared::verify::{self, BasicPair};

use crate::config;
use crate::harness::{
    self, check_basic, check_envelope, check_form, check_path_token, BasicCase, EnvelopeCase,
    PathCase,
};
use crate::receivers::{awkward_string, json};

fn small_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[ab:]{0,4}",
        1 => "[ -~]{0,12}",
        1 => awkward_string(8),
    ]
}

fn basic_case() -> impl Strategy<Value = BasicCase> {
    let pair = (option::of("[ab#]{1,3}"), small_text(), small_text());
    (
        vec(pair, 0..4),
        any::<prop::sample::Index>(),
        0usize..8,
        small_text(),
    )
        .prop_map(|(pairs, which, mode, extra)| {
            let header = match (mode, pairs.is_empty()) {
                (0, _) | (_, true) => Some(extra),
                (1, _) => None,
                (m, false) => {
                    let (_, user, password) = which.get(&pairs);
                    let scheme = ["Basic", "basic", "BASIC", "Bearer", "Basic ", "Basic\t"][m - 2];
                    let plain = if m % 2 == 0 {
                        format!("{user}:{password}")
                    } else {
                        format!("{user}:{password}{extra}")
                    };
                    let encoded = base64::engine::general_purpose::STANDARD.encode(plain);
                    Some(format!("{scheme} {encoded}"))
                }
            };
            BasicCase { pairs, header }
        })
}

fn path_case() -> impl Strategy<Value = PathCase> {
    let tokens = vec("[a-zA-Z0-9 /-]{0,10}", 0..4);
    (
        tokens,
        any::<bool>(),
        vec(
            (0u8..4, any::<prop::sample::Index>(), "[a-z0-9/ -]{0,6}"),
            0..5,
        ),
    )
        .prop_map(|(tokens, per_tenant, pieces)| {
            let mut path = String::new();
            for (kind, which, text) in pieces {
                let token = if tokens.is_empty() {
                    ""
                } else {
                    which.get(&tokens).as_str()
                };
                path.push_str(match kind {
                    0 => "/",
                    1 => token,
                    2 => &token[..token.len().saturating_sub(1)],
                    _ => &text,
                });
                if kind == 1 && text.len() % 3 == 0 {
                    path.push_str(&text);
                }
            }
            PathCase {
                tokens,
                per_tenant,
                path,
            }
        })
}

fn form_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => "[ab=&%+0-9A-Fa-f]{0,40}".prop_map(String::into_bytes),
        1 => vec(any::<u8>(), 0..40),
        1 => vec(select(vec![b'%', b'&', b'=', b'+', 0xC3, 0xA9, 0xFF, b'a']), 0..30),
    ]
}

fn payload() -> impl Strategy<Value = Payload> {
    let awkward_object = vec((awkward_string(10), awkward_string(10)), 0..4).prop_map(|fields| {
        Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect::<Map<String, Value>>(),
        )
    });
    prop_oneof![
        Just(Payload::Json(Value::Null.into())),
        json().prop_map(|v| Payload::Json(v.into())),
        awkward_object.prop_map(|v| Payload::Json(v.into())),
        awkward_string(40).prop_map(Payload::Raw),
        vec(any::<u8>(), 0..64).prop_map(Payload::Bytes),
    ]
}

fn envelope_case() -> impl Strategy<Value = EnvelopeCase> {
    (
        [
            awkward_string(12),
            awkward_string(12),
            awkward_string(12),
            awkward_string(12),
            awkward_string(12),
            awkward_string(12),
        ],
        [
            option::of(awkward_string(12)),
            option::of(awkward_string(12)),
            option::of(awkward_string(12)),
        ],
        payload(),
    )
        .prop_map(|(fields, optional, payload)| EnvelopeCase {
            fields,
            optional,
            payload,
        })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn basic_accepts_exactly_the_headers_that_spell_an_accepted_pair(case in basic_case()) {
        check_basic(&case);
    }

    #[test]
    fn basic_accepts_the_canonical_header_of_every_pair(
        user in "[!-9;-~]{1,16}",
        password in "[!-~]{1,16}",
        tenant in option::of("[a-z]{1,8}"),
    ) {
        let pair = BasicPair {
            tenant: tenant.clone(),
            user: Secret::new(&user).unwrap(),
            password: Secret::new(&password).unwrap(),
        };
        let header = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let proof = verify::basic(&[pair], Some(&header)).unwrap();
        prop_assert!(proof.permits(tenant.as_deref()));
    }

    #[test]
    fn a_path_matches_only_where_a_whole_segment_equals_a_token(case in path_case()) {
        check_path_token(&case);
    }

    #[test]
    fn form_decoding_gives_strings_and_string_lists_as_written(bytes in form_bytes()) {
        check_form(&bytes);
    }

    #[test]
    fn every_envelope_encodes_to_sqs_legal_text_that_reads_back_with_its_payload(
        case in envelope_case(),
    ) {
        check_envelope(&case);
    }

    #[test]
    fn raw_fuzz_inputs_keep_the_codec_properties(data in vec(any::<u8>(), 0..120)) {
        check_basic(&BasicCase::decode(&data));
        check_path_token(&PathCase::decode(&data));
        check_form(&data);
        check_envelope(&EnvelopeCase::decode(&data));
    }
}

#[test]
fn sqs_allows_agrees_with_the_documented_character_set_on_every_char() {
    (0..=0x10FFFFu32)
        .filter_map(char::from_u32)
        .for_each(harness::check_sqs_allows);
}

#[test]
fn the_echo_check_flags_a_value_and_spares_the_vocabulary() {
    use lambda_http::http::{HeaderMap, Method};
    let request = harness::Request {
        method: Method::POST,
        path: "/tribemade/secret-token-value".into(),
        query: None,
        headers: HeaderMap::new(),
        body: br#"{"event":"order.created","customer":{"email":"alex@example.com"}} (line 1, column 9)"#
            .to_vec(),
    };
    let answer = |why: &str| format!(r#"{{"status":"bad_request","error":"{why}"}}"#);
    let spared = answer(
        "customer.name is missing; order_id is missing; body is not valid JSON (line 1, column 9)",
    );
    assert_eq!(harness::echoed(spared.as_bytes(), &request), None);
    let leaked = answer("invalid email alex@example.com");
    assert!(harness::echoed(leaked.as_bytes(), &request).is_some());
    let leaked_path = answer("unknown token secret-token-value");
    assert!(harness::echoed(leaked_path.as_bytes(), &request).is_some());
}

#[test]
fn a_json_null_payload_survives_the_sqs_round_trip() {
    let case = EnvelopeCase {
        fields: Default::default(),
        optional: Default::default(),
        payload: Payload::Json(Value::Null.into()),
    };
    let envelope = case.envelope();
    let back: Envelope = serde_json::from_str(&envelope.to_sqs_body().unwrap()).unwrap();
    assert_eq!(back.content(), Some(Payload::Json(Value::Null.into())));
}

#[test]
fn a_json_number_survives_the_sqs_round_trip_bit_for_bit() {
    // From fuzz/artifacts/envelope/: written as 4.444444e+87, read back as 4.4444439999999995e+87.
    let written = Value::from(4.444444e87_f64);
    let case = EnvelopeCase {
        fields: Default::default(),
        optional: Default::default(),
        payload: Payload::Json(written.clone().into()),
    };
    let back: Envelope = serde_json::from_str(&case.envelope().to_sqs_body().unwrap()).unwrap();
    assert_eq!(back.payload, Some(written.into()));
}

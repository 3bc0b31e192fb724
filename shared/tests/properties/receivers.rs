//! Random requests to every receiver: signed or not, with samples mutated field by field, made-up
//! JSON, raw bytes, stray path segments, queries, methods and headers, and raw fuzz inputs
//! decoded as the fuzz targets decode them. Every receiver property holds for each
//! (harness::check_provider).

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};

use crate::config;
use crate::harness::{self, check_provider, Case, KNOWN_HEADERS, METHODS, PROVIDERS};

/// Text made of the characters that break things: separators, escapes, controls, the
/// non-characters SQS refuses, and ordinary letters.
pub fn awkward_string(max: usize) -> impl Strategy<Value = String> {
    let c = prop_oneof![
        6 => proptest::char::range('a', 'z'),
        1 => select(vec!['#', '%', ':', '/', '&', '=', '+', '"', '\\', ' ', '.', '-']),
        1 => select(harness::AWKWARD.to_vec()),
        1 => any::<char>(),
    ];
    vec(c, 0..max).prop_map(|chars| chars.into_iter().collect())
}

/// Field names the providers read, so that made-up bodies reach their inspection.
const KEYS: [&str; 24] = [
    "id",
    "event",
    "timestamp",
    "site_id",
    "type",
    "data",
    "networkId",
    "challenge",
    "name",
    "time",
    "order_id",
    "store_id",
    "created_at",
    "customer",
    "order_details",
    "entity_name",
    "entities",
    "environment_id",
    "notification_uuid",
    "uuid",
    "nRetry",
    "event_type",
    "status",
    "payload",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        select(vec![0.5, 2048.0, -1e-7, 1e300]).prop_map(Value::from),
        prop::num::f64::NORMAL.prop_map(Value::from),
        awkward_string(24).prop_map(Value::String),
        select(vec![
            "SUBSCRIPTION",
            "TEST",
            "SUBSCRIBED",
            "APP_INSTALLED",
            "CLOSED",
            "order.created",
            "770e8400-e29b-41d4-a716-446655440789",
            "2024-11-16T10:30:45.123456",
            "",
        ])
        .prop_map(Value::from),
    ]
}

/// JSON with the providers' field names at every level.
pub fn json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((select(KEYS.to_vec()), inner), 0..6).prop_map(|fields| {
                Value::Object(
                    fields
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<String, Value>>(),
                )
            }),
        ]
    })
}

/// A change to a JSON body: in the top-level object or its first object-valued field, remove
/// the n-th field, or set a provider field to a value.
#[derive(Debug, Clone)]
enum Edit {
    Remove {
        nested: bool,
        at: usize,
    },
    Set {
        nested: bool,
        key: &'static str,
        value: Value,
    },
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<bool>(), any::<usize>()).prop_map(|(nested, at)| Edit::Remove { nested, at }),
        (any::<bool>(), select(KEYS.to_vec()), json()).prop_map(|(nested, key, value)| Edit::Set {
            nested,
            key,
            value
        }),
    ]
}

fn apply(value: &mut Value, edit: &Edit) {
    let nested = matches!(
        edit,
        Edit::Remove { nested: true, .. } | Edit::Set { nested: true, .. }
    );
    let Value::Object(top) = value else { return };
    let target = if nested {
        match top.values_mut().find(|v| v.is_object()) {
            Some(Value::Object(inner)) => inner,
            _ => return,
        }
    } else {
        top
    };
    match edit {
        Edit::Remove { at, .. } => {
            if !target.is_empty() {
                let key = target.keys().nth(at % target.len()).unwrap().clone();
                target.remove(&key);
            }
        }
        Edit::Set { key, value, .. } => {
            target.insert((*key).to_owned(), value.clone());
        }
    }
}

/// A body: a sample of any provider edited field by field, a sample with a flipped byte or cut
/// short, made-up JSON, or bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let all: Vec<Vec<u8>> = PROVIDERS
        .iter()
        .flat_map(|p| harness::samples(p))
        .map(|(_, body)| body)
        .collect();
    prop_oneof![
        4 => (select(all.clone()), vec(edit(), 0..4)).prop_map(|(sample, edits)| {
            match serde_json::from_slice::<Value>(&sample) {
                Ok(mut value) => {
                    edits.iter().for_each(|e| apply(&mut value, e));
                    value.to_string().into_bytes()
                }
                Err(_) => sample,
            }
        }),
        1 => (select(all), any::<usize>(), any::<u8>(), any::<bool>()).prop_map(
            |(mut sample, at, byte, cut)| {
                let at = at % sample.len().max(1);
                if cut {
                    sample.truncate(at);
                } else if let Some(b) = sample.get_mut(at) {
                    *b ^= byte | 1;
                }
                sample
            }
        ),
        2 => json().prop_map(|v| v.to_string().into_bytes()),
        1 => vec(any::<u8>(), 0..64),
    ]
}

fn header() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let name = prop_oneof![
        4 => select(KNOWN_HEADERS.to_vec()).prop_map(|n| n.as_bytes().to_vec()),
        1 => "[a-zA-Z0-9-]{1,16}".prop_map(String::into_bytes),
    ];
    let value = prop_oneof![
        "[ -~]{0,40}".prop_map(String::into_bytes),
        "[0-9a-fA-F]{64}".prop_map(String::into_bytes),
        "1735689[0-9]{6}".prop_map(String::into_bytes),
        "(Basic|basic|Bearer) [A-Za-z0-9+/=]{0,40}".prop_map(String::into_bytes),
        select(vec![
            "application/json",
            "application/xml",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "trifft-dev-key-0001",
            "tilby-dev-token-0001",
        ])
        .prop_map(|v| v.as_bytes().to_vec()),
    ];
    (name, value)
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9._-]{0,12}",
        1 => select(vec![
            "tribemade-dev-token-0001",
            "tilby-dev-token-0001",
            "tilby-dev-token-000",
            "prod",
            "sales",
            "closed",
        ])
        .prop_map(str::to_owned),
        1 => awkward_string(12),
    ]
}

/// A request: signed three times in four, mostly with the receiver's time.
pub fn case() -> impl Strategy<Value = Case> {
    let method = select(METHODS.to_vec()).prop_map(|m| m.parse().unwrap());
    (
        prop::bool::weighted(0.75),
        0u8..3,
        prop::bool::weighted(0.2),
        option::weighted(0.15, method),
        prop_oneof![3 => Just(0), 1 => -1100i32..1100],
        vec(segment(), 0..3),
        vec(segment(), 0..3),
        option::weighted(0.3, "[a-z0-9=&%+._-]{0,30}"),
        vec(header(), 0..2),
        vec(header(), 0..4),
        body(),
    )
        .prop_map(
            |(sign, variant, tight, method, skew, prefix, suffix, query, set, headers, body)| {
                Case {
                    sign,
                    variant,
                    tight,
                    method,
                    skew_secs: skew,
                    prefix,
                    suffix,
                    query,
                    set_headers: set,
                    headers,
                    body,
                }
            },
        )
}

macro_rules! receiver_properties {
    ($($test:ident => $provider:literal),* $(,)?) => {
        proptest! {
            #![proptest_config(config(256))]
            $(
                #[test]
                fn $test(case in case()) {
                    check_provider($provider, &case);
                }
            )*
        }
    };
}

receiver_properties! {
    trybe_never_accepts_without_its_signature_nor_echoes_nor_queues_what_sqs_refuses => "trybe",
    tribe_never_accepts_without_a_fresh_signature_nor_echoes_nor_queues_what_sqs_refuses => "tribe",
    tribemade_never_accepts_without_its_url_token_nor_echoes_nor_queues_what_sqs_refuses => "tribemade",
    trifft_never_accepts_without_its_header_or_basic_pair_nor_echoes_nor_queues_what_sqs_refuses => "trifft",
    tilby_never_accepts_without_token_and_signature_nor_echoes_nor_queues_what_sqs_refuses => "tilby",
    standard_never_accepts_without_a_fresh_v1_signature_nor_echoes_nor_queues_what_sqs_refuses => "standard",
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn raw_fuzz_inputs_keep_every_receiver_property(
        provider in select(PROVIDERS.to_vec()),
        data in vec(any::<u8>(), 0..200),
    ) {
        check_provider(provider, &Case::decode(&data));
    }
}

#[test]
fn a_trifft_json_null_body_reaches_the_queue_with_its_payload() {
    let case = Case {
        sign: true,
        set_headers: vec![(b"content-type".to_vec(), b"application/json".to_vec())],
        body: b"null".to_vec(),
        ..Case::default()
    };
    let (answer, messages, _) = harness::send("trifft", &harness::build("trifft", &case), false);
    assert_eq!(answer.status(), 200, "{answer:?}");
    let envelope: shared::Envelope = serde_json::from_str(&messages[0].body).unwrap();
    assert_eq!(
        envelope.content(),
        Some(shared::Payload::Json(Value::Null.into())),
        "{}",
        messages[0].body
    );
}

#[test]
fn a_tilby_notification_naming_one_entity_twice_is_answered_200_once_it_is_queued() {
    let body = br#"{"type":"CREATED","entity_name":"customers","notification_uuid":"n-1","environment_id":"shop-1","entities":[{"uuid":"c-1"},{"uuid":"c-1"}]}"#;
    let case = Case {
        sign: true,
        body: body.to_vec(),
        ..Case::default()
    };
    let (answer, messages, _) = harness::send("tilby", &harness::build("tilby", &case), false);
    assert_eq!(messages.len(), 1, "the entity is queued once");
    assert_eq!(answer.status(), 200, "{answer:?}");
}

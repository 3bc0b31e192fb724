//! Payloads travel as the sender's bytes: from the request, through the receiver and the queue's
//! message, to the handler the processor runs. For every sample of every provider, and for JSON
//! written to trip a re-serializer (numbers a float or a 64-bit integer cannot hold, `1.10`,
//! escapes, key order, repeated keys, whitespace everywhere).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use proptest::prelude::*;
use shared::clock::FixedClock;
use shared::config::Settings;
use shared::consumer::{EventHandler, HandlerError, Processor, Router};
use shared::envelope::{Envelope, Payload};
use shared::queue::Message;
use shared::store::MemoryClaims;

use crate::harness::{self, Case, NOW_MS, PROVIDERS};

/// Keeps every envelope its handler is given.
#[derive(Default)]
struct Keep(Mutex<Vec<Envelope>>);

#[async_trait]
impl EventHandler for Keep {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

/// The envelopes the handlers see for `messages`, through the real processor.
fn processed(messages: &[Message]) -> Vec<Envelope> {
    let keep = Arc::new(Keep::default());
    let mut env = harness::receiver_env(false);
    env.set("PROCESSING_LEASE_SECONDS", "60");
    let processor = Processor::new(
        Arc::new(MemoryClaims::default()),
        Router::new(keep.clone()),
        Settings::from_env(&env).unwrap(),
        Arc::new(FixedClock::at_millis(NOW_MS)),
        shared::trust::Trust::local(Arc::new(shared::queue::MemoryDeadLetters::default())),
    );
    let records = messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut r = SqsMessage::default();
            r.message_id = Some(format!("m-{i}"));
            r.body = Some(m.body.clone());
            r.attributes.insert(
                shared::trust::SENDER_ID.into(),
                shared::trust::LOCAL_SENDER_ID.into(),
            );
            r
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut event = SqsEvent::default();
    event.records = records;
    let response = runtime.block_on(processor.process(event));
    assert!(response.batch_item_failures.is_empty(), "all processed");
    let seen = keep.0.lock().unwrap().clone();
    assert_eq!(seen.len(), messages.len());
    seen
}

fn accepted(provider: &str, body: &[u8]) -> Vec<Message> {
    let case = Case {
        sign: true,
        body: body.to_vec(),
        ..Case::default()
    };
    let (answer, messages, _) = harness::send(provider, &harness::build(provider, &case), false);
    assert_eq!(answer.status(), 200, "{provider}: {answer:?}");
    messages
}

/// A single event's payload is the body itself (JSON whitespace around the value is not part of
/// it), or the body's text or bytes for what is not JSON.
fn assert_exact(provider: &str, name: &str, body: &[u8], seen: &Envelope) {
    match seen.content() {
        Some(Payload::Json(json)) => assert!(
            json.get().as_bytes() == body.trim_ascii(),
            "{provider}/{name}: the JSON payload differs from the body"
        ),
        Some(Payload::Raw(text)) => assert_eq!(text.as_bytes(), body, "{provider}/{name}"),
        Some(Payload::Bytes(bytes)) => assert_eq!(bytes, body, "{provider}/{name}"),
        None => panic!("{provider}/{name}: no content"),
    }
}

#[test]
fn every_sample_reaches_its_handler_byte_for_byte() {
    let mut checked = 0;
    for provider in PROVIDERS {
        for (name, body) in harness::samples(provider) {
            let messages = accepted(provider, &body);
            if messages.is_empty() {
                continue; // a handshake: answered, nothing queued
            }
            let seen = processed(&messages);
            if provider == "tilby" {
                assert_tilby_members_as_sent(&name, &body, &seen);
            } else {
                assert_eq!(seen.len(), 1);
                assert_exact(provider, &name, &body, &seen[0]);
            }
            checked += 1;
        }
    }
    // Every sample but the two handshakes (Tribe's TEST, Tilby's SUBSCRIBED).
    assert!(checked >= 17, "{checked} samples");
}

/// A Tilby event is the notification's members and one entity: each as Tilby wrote it.
fn assert_tilby_members_as_sent(name: &str, body: &[u8], seen: &[Envelope]) {
    let text = std::str::from_utf8(body).unwrap();
    let entities: Vec<&serde_json::value::RawValue> =
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
            .ok()
            .and_then(|_| {
                let raw: std::collections::HashMap<&str, &serde_json::value::RawValue> =
                    serde_json::from_str(text).ok()?;
                serde_json::from_str(raw.get("entities")?.get()).ok()
            })
            .unwrap_or_default();
    for (i, event) in seen.iter().enumerate() {
        let payload = event.payload.as_ref().expect("JSON").get();
        let members: std::collections::HashMap<&str, &serde_json::value::RawValue> =
            serde_json::from_str(payload).unwrap();
        let sent: std::collections::HashMap<&str, &serde_json::value::RawValue> =
            serde_json::from_str(text).unwrap();
        for (key, value) in &members {
            match *key {
                "entity" if !entities.is_empty() => {
                    assert!(
                        entities.iter().any(|e| e.get() == value.get()),
                        "tilby/{name} event {i}: the entity as sent"
                    );
                }
                _ => assert_eq!(
                    sent[key].get(),
                    value.get(),
                    "tilby/{name} event {i}: {key} as sent"
                ),
            }
        }
        assert!(!members.contains_key("nRetry") && !members.contains_key("entities"));
    }
}

/// JSON text that a parse-and-write round trip would change.
fn awkward_json(depth: u32) -> BoxedStrategy<String> {
    let ws = prop::sample::select(vec!["", " ", "\n", "\t", "\r\n  ", "   "]);
    let leaf = prop::sample::select(vec![
        "1.10",
        "-0",
        "0.0",
        "1e400",
        "1E-7",
        "2.50e+3",
        "123456789012345678901234567890",
        "-9223372036854775809",
        "18446744073709551616",
        "3.141592653589793238462643383279",
        "\"\\u00e9\"",
        "\"é\"",
        "\"\\/\"",
        "\"a\\nb\\u0000\"",
        "\"\\ud83d\\ude00\"",
        "true",
        "null",
    ])
    .prop_map(str::to_owned)
    .boxed();
    if depth == 0 {
        return leaf;
    }
    let inner = awkward_json(depth - 1);
    prop_oneof![
        2 => leaf,
        1 => (prop::collection::vec((inner.clone(), ws.clone()), 0..4), ws.clone()).prop_map(|(items, w)| {
            let items: Vec<String> = items.into_iter().map(|(v, w2)| format!("{w2}{v}{w2}")).collect();
            format!("[{w}{}{w}]", items.join(","))
        }),
        1 => (
            prop::collection::vec((prop::sample::select(vec!["b", "a", "z", "a", "\\u0061"]), inner, ws.clone()), 0..4),
            ws,
        )
            .prop_map(|(members, w)| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(k, v, w2)| format!("{w2}\"{k}\"{w2}:{w2}{v}"))
                    .collect();
                format!("{{{w}{}{w}}}", members.join(","))
            }),
    ]
    .boxed()
}

proptest! {
    #![proptest_config(crate::config(64))]

    #[test]
    fn json_a_reserializer_would_change_reaches_the_handler_byte_for_byte(
        data in awkward_json(3),
        lead in prop::sample::select(vec!["", " ", "\n"]),
        trail in prop::sample::select(vec!["", "\n", " \r\n"]),
        n in 0u32..1_000_000,
    ) {
        for provider in ["trybe", "standard", "trifft"] {
            let body = format!(
                "{lead}{{\"id\" : \"e-{n}\",\n \"type\":\"t\", \"event\": \"t\", \"data\" :{data} , \"z\":{data}}}{trail}"
            );
            let messages = accepted(provider, body.as_bytes());
            let seen = processed(&messages);
            assert_exact(provider, "generated", body.as_bytes(), &seen[0]);
        }
    }
}

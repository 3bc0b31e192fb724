//! Every message is one SQS would take. moto accepts characters SQS refuses (U+FFFE, U+FFFF, C0
//! controls), so these tests check what moto received against SQS's documented set
//! (`#x9 | #xA | #xD | #x20–#xD7FF | #xE000–#xFFFD | #x10000–#x10FFFF`) instead of trusting its
//! answer, and check that each payload still decodes to exactly what the provider sent.

use aws_lambda_events::event::sqs::SqsMessage;
use serde_json::{json, Value};
use shared::apigw::Sent;
use shared::envelope::sqs_allows;
use shared::providers::{tilby, trifft, trybe};
use shared::secret::Secret;

use crate::helpers::*;

/// What AWS would refuse in a message moto took.
fn refused_by_sqs(message: &SqsMessage) -> Vec<(String, char)> {
    let mut bad = Vec::new();
    let body = message.body.as_deref().unwrap_or("");
    bad.extend(
        body.chars()
            .filter(|c| !sqs_allows(*c))
            .map(|c| ("body".into(), c)),
    );
    for (name, attr) in &message.message_attributes {
        let value = attr.string_value.as_deref().unwrap_or("");
        assert!(
            !value.is_empty(),
            "attribute {name} is empty (SQS refuses that)"
        );
        bad.extend(
            value
                .chars()
                .filter(|c| !sqs_allows(*c))
                .map(|c| (name.clone(), c)),
        );
    }
    bad
}

/// Text that serde_json writes raw (U+FFFE, U+FFFF) or escapes (controls), and neighbours SQS
/// accepts (U+FFFD, U+E000, U+10FFFF, a tab, an emoji).
const AWKWARD: &str = "note\u{FFFE}\u{FFFF}\u{1}\u{1F}\u{7}\u{FFFD}\u{E000}\u{10FFFF}\t😀";

#[tokio::test]
async fn messages_are_sqs_legal_and_payloads_round_trip_whatever_characters_they_carry() {
    let stack = Stack::new().await;
    const SECRET: &str = "trybe-sqs-legal-secret";
    let r = stack
        .receiver(&[(trybe::SECRET_VAR, SECRET)], trybe::Trybe::from_env)
        .await;
    let payload = json!({
        "id": "evt-awkward-1",
        "event": format!("customer_note.{AWKWARD}"),
        "site_id": "site-1",
        "data": {"note": AWKWARD, AWKWARD: [AWKWARD]},
    });
    let body = payload.to_string();
    assert!(body.contains('\u{FFFE}'), "serde_json writes U+FFFE raw");
    let sent = Sent::post("/trybe", body.clone())
        .header("content-type", "application/json")
        .header(
            "Signature",
            trybe::sign(&Secret::new(SECRET).unwrap(), body.as_bytes()),
        );
    assert_eq!(send(&r, &sent).await.status(), 200);

    let messages = stack.drain().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(refused_by_sqs(&messages[0]), vec![]);
    let e = envelope(&messages[0]);
    // SQS would take the payload only with escapes where the sender wrote U+FFFE and U+FFFF:
    // it travels through the payload bucket, which keeps bytes, and the message is a reference.
    assert!(
        e.get("payload").is_none() && e["payload_ref"].is_object(),
        "{e}"
    );
    let whole = stack.whole(&messages[0]).await;
    let whole: shared::Envelope = serde_json::from_slice(&whole).unwrap();
    assert_eq!(
        whole.payload.as_ref().unwrap().get(),
        body,
        "the payload is the body, byte for byte"
    );
    assert_eq!(e["event_type"], format!("customer_note.{AWKWARD}"));
    let attribute = messages[0].message_attributes["event_type"]
        .string_value
        .clone()
        .unwrap();
    assert!(
        attribute.starts_with("customer_note.note\u{FFFD}\u{FFFD}"),
        "{attribute:?}"
    );
}

#[tokio::test]
async fn raw_text_forms_and_batches_are_sqs_legal_too() {
    let stack = Stack::new().await;
    let trifft_r = stack
        .receiver(
            &[
                (trifft::AUTH_HEADER_VAR, "X-Trifft-Key"),
                (trifft::AUTH_VALUE_VAR, "trifft-sqs-legal-key-01"),
            ],
            trifft::Trifft::from_env,
        )
        .await;
    let text = format!("plain {AWKWARD}");
    let form = format!(
        "event={}&note={}",
        "x%EF%BF%BE",
        form_urlencoded::byte_serialize(AWKWARD.as_bytes()).collect::<String>()
    );
    for (media, body) in [
        ("text/plain", text.clone()),
        ("application/x-www-form-urlencoded", form.clone()),
    ] {
        let sent = Sent::post("/trifft", body)
            .header("content-type", media)
            .header("X-Trifft-Key", "trifft-sqs-legal-key-01");
        assert_eq!(send(&trifft_r, &sent).await.status(), 200, "{media}");
    }
    let tilby_r = stack
        .receiver(
            &[(tilby::URL_TOKEN_VAR, "tilby-sqs-legal-token-01")],
            tilby::Tilby::from_env,
        )
        .await;
    let entities: Vec<Value> = (0..12)
        .map(|i| json!({"uuid": format!("e-{i}"), "name": AWKWARD}))
        .collect();
    let notification = json!({"type": "UPDATED", "entity_name": "items", "notification_uuid": "n-awk",
        "environment_id": "shop-1", "entities": entities, "nRetry": 0});
    let sent = Sent::post("/tilby/tilby-sqs-legal-token-01", notification.to_string())
        .header("content-type", "application/json");
    assert_eq!(send(&tilby_r, &sent).await.status(), 200);

    let messages = stack.drain().await;
    assert_eq!(messages.len(), 2 + 12);
    for m in &messages {
        assert_eq!(refused_by_sqs(m), vec![]);
        let e: Value = serde_json::from_slice(&stack.whole(m).await).unwrap();
        match e["provider"].as_str().unwrap() {
            "tilby" => assert_eq!(e["payload"]["entity"]["name"], AWKWARD),
            // Text travels as a JSON string: SQS takes it escaped, and it reads back the same.
            _ => assert!(
                e["payload_raw"] == text.as_str() || e["payload_raw"] == form.as_str(),
                "{e}"
            ),
        }
    }
}

#[tokio::test]
async fn messages_up_to_the_queues_1_mib_are_queued_and_without_a_payload_bucket_larger_ones_refused(
) {
    let stack = Stack::new().await;
    const SECRET: &str = "trybe-sqs-size-secret";
    // No claim check (claim_check.rs has the receiver with one).
    let r = stack
        .receiver(
            &[(trybe::SECRET_VAR, SECRET), ("PAYLOAD_BUCKET", "")],
            trybe::Trybe::from_env,
        )
        .await;
    let signed = |id: &str, filler: usize| {
        let body =
            json!({"id": id, "event": "big.one", "data": {"blob": "x".repeat(filler)}}).to_string();
        Sent::post("/trybe", body.clone()).header(
            "Signature",
            trybe::sign(&Secret::new(SECRET).unwrap(), body.as_bytes()),
        )
    };
    // 900 KB: over the old 256 KiB limit, within SQS's 1 MiB.
    assert_eq!(send(&r, &signed("big-1", 900_000)).await.status(), 200);
    let messages = stack.drain().await;
    assert_eq!(messages.len(), 1);
    assert!(messages[0].body.as_ref().unwrap().len() > 900_000);
    // A body under MAX_BODY_BYTES whose message (body and attributes) exceeds the queue's limit.
    let just_under = signed("big-2", 1_048_576 - 70);
    assert!(
        just_under.body.len() <= 1_048_576,
        "the body is within MAX_BODY_BYTES"
    );
    assert_eq!(send(&r, &just_under).await.status(), 413);
    assert!(stack.drain().await.is_empty());
    assert_eq!(stack.item_count().await, 1, "only big-1's claim");
}

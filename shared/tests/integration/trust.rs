//! The trust boundaries against moto: what the processor does with a message its sender may not
//! send (read from the `SenderId` moto stored), and S3 puts that never overwrite.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use shared::consumer::Router;
use shared::objects::{ObjectError, ObjectStore, S3Objects};
use shared::trust::{LOCAL_SENDER_ID, REFUSED, REFUSED_SENDER};

use crate::helpers::*;
use crate::processor::{queue_events, Counting};

/// A processor from the stack's environment with `TRUSTED_SENDERS` and `OPERATOR_SENDERS` as
/// given.
fn processor(
    stack: &Stack,
    trusted: &str,
    operators: &str,
    router: Router,
) -> shared::consumer::Processor {
    let mut env = stack.env(&[]);
    env.set("TRUSTED_SENDERS", trusted);
    env.set("OPERATOR_SENDERS", operators);
    shared::runtime::processor_from_env(&env, &stack.sdk, router).expect("processor config")
}

/// Feeds the queue to `p` until it has taken `n` records.
async fn feed_until(stack: &Stack, p: &shared::consumer::Processor, n: usize) {
    let mut fed = 0;
    for _ in 0..50 {
        fed += stack.feed(p).await;
        if fed >= n {
            return;
        }
    }
    panic!("only {fed} of {n} records came");
}

fn attribute(record: &aws_lambda_events::event::sqs::SqsMessage, name: &str) -> Option<String> {
    record.message_attributes.get(name)?.string_value.clone()
}

/// Sends `body` to the stack's queue as anyone may (moto's one identity), with the routing
/// attributes a receiver sets.
async fn send_raw(stack: &Stack, body: &str, provider: &str) {
    let attr = aws_sdk_sqs::types::MessageAttributeValue::builder()
        .data_type("String")
        .string_value(provider)
        .build()
        .unwrap();
    stack
        .sqs
        .send_message()
        .queue_url(&stack.queue_url)
        .message_body(body)
        .message_attributes("provider", attr)
        .send()
        .await
        .expect("send");
}

#[tokio::test]
async fn a_message_its_sender_may_not_send_goes_to_the_dlq_with_its_reason_and_claims_nothing() {
    let stack = Stack::new().await;
    let ids = queue_events(&stack, 1).await;
    let genuine = stack.drain().await.remove(0);
    assert_eq!(
        genuine.attributes.get("SenderId").map(String::as_str),
        Some(LOCAL_SENDER_ID),
        "moto stored its one SenderId"
    );
    // Put it back, and beside it the finding: a Tilby envelope carrying that Trybe event's
    // dedup key.
    let body = genuine.body.clone().unwrap();
    send_raw(&stack, &body, "trybe").await;
    let mut forged: Value = serde_json::from_str(&body).unwrap();
    forged["provider"] = "tilby".into();
    send_raw(&stack, &forged.to_string(), "tilby").await;

    // Trybe trusted to another role than the one that sent (moto's): both refused.
    let counting = Arc::new(Counting::default());
    let others = "trybe=AROATRYBEROLE,tilby=AROATILBYROLE";
    let p = processor(&stack, others, "", Router::new(counting.clone()));
    feed_until(&stack, &p, 2).await;
    assert_eq!(counting.calls.load(Ordering::SeqCst), 0, "no handler ran");
    assert_eq!(stack.item_count().await, 1, "only the receiver's claim");
    assert!(
        stack.drain().await.is_empty(),
        "acknowledged: off the queue"
    );
    let mut parked = stack.drain_dlq().await;
    parked.sort_by_key(|r| attribute(r, "provider"));
    assert_eq!(parked.len(), 2);
    let [tilby, trybe] = [&parked[0], &parked[1]];
    assert_eq!(
        trybe.body.as_deref(),
        Some(body.as_str()),
        "the body as it came"
    );
    assert_eq!(
        attribute(trybe, REFUSED).as_deref(),
        Some(format!("sender {LOCAL_SENDER_ID} may not act for provider trybe").as_str())
    );
    assert_eq!(
        attribute(trybe, REFUSED_SENDER).as_deref(),
        Some(LOCAL_SENDER_ID)
    );
    assert_eq!(
        attribute(tilby, REFUSED).as_deref(),
        Some("dedup key does not belong to provider tilby")
    );
    assert_eq!(attribute(tilby, "provider").as_deref(), Some("tilby"));

    // The genuine event, from the sender trusted for Trybe, still runs once.
    send_raw(&stack, &body, "trybe").await;
    let p = processor(&stack, &local_senders(), "", Router::new(counting.clone()));
    feed_until(&stack, &p, 1).await;
    assert_eq!(counting.calls.load(Ordering::SeqCst), 1);
    let item = stack
        .item(&format!("processed#{}", key("trybe", Some("s1"), &ids[0])))
        .await
        .expect("processed");
    assert_eq!(item["status"].as_s().unwrap(), "PROCESSED");
}

#[tokio::test]
async fn a_replay_mark_from_a_principal_not_allowed_to_replay_is_refused() {
    let stack = Stack::new().await;
    queue_events(&stack, 1).await;
    let genuine = stack.drain().await.remove(0);
    let mut replayed: Value = serde_json::from_str(genuine.body.as_deref().unwrap()).unwrap();
    replayed["replay"] = serde_json::json!({
        "id": "r1", "requested_at": "2026-12-06T10:00:00Z", "archive_key": "trybe/k.json"
    });
    send_raw(&stack, &replayed.to_string(), "trybe").await;
    let counting = Arc::new(Counting::default());
    // moto's identity sends for every provider, but is no operator.
    let p = processor(
        &stack,
        &local_senders(),
        "AROAOPERATOR",
        Router::new(counting.clone()),
    );
    feed_until(&stack, &p, 1).await;
    assert_eq!(counting.calls.load(Ordering::SeqCst), 0);
    let parked = stack.drain_dlq().await;
    assert_eq!(parked.len(), 1);
    assert_eq!(
        attribute(&parked[0], REFUSED).as_deref(),
        Some(format!("replay mark from sender {LOCAL_SENDER_ID}, which may not replay").as_str())
    );
    // The same message from an operator runs.
    send_raw(&stack, &replayed.to_string(), "trybe").await;
    let p = processor(
        &stack,
        &local_senders(),
        LOCAL_SENDER_ID,
        Router::new(counting.clone()),
    );
    feed_until(&stack, &p, 1).await;
    assert_eq!(counting.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_put_never_overwrites_an_object() {
    let stack = Stack::new().await;
    let bucket = S3Objects::new(stack.s3.clone(), &stack.payload_bucket);
    let key = "trybe/k/object.json";
    bucket
        .put(key, Bytes::from_static(b"first"), "application/json")
        .await
        .expect("created");
    assert_eq!(
        bucket
            .put(key, Bytes::from_static(b"second"), "application/json")
            .await,
        Err(ObjectError::Exists)
    );
    assert_eq!(stack.object(&stack.payload_bucket, key).await, b"first");
}

/// Puts `key` through `bucket` and returns its encryption and KMS key as S3 reports them.
async fn put_and_head(
    stack: &Stack,
    bucket: &S3Objects,
    key: &str,
) -> (Option<String>, Option<String>) {
    bucket
        .put(key, Bytes::from_static(b"{}"), "application/json")
        .await
        .expect("created");
    let head = stack
        .s3
        .head_object()
        .bucket(bucket.bucket())
        .key(key)
        .send()
        .await
        .expect("head");
    (
        head.server_side_encryption().map(|s| s.as_str().to_owned()),
        head.ssekms_key_id().map(str::to_owned),
    )
}

#[tokio::test]
async fn with_a_kms_key_every_put_asks_for_sse_kms_under_it() {
    let stack = Stack::new().await;
    let key_arn = "arn:aws:kms:us-east-1:123456789012:key/0b1c2d3e-4f5a-6b7c-8d9e-0f1a2b3c4d5e";
    let bucket =
        S3Objects::new(stack.s3.clone(), &stack.payload_bucket).with_kms_key(Some(key_arn));
    let (sse, kms) = put_and_head(&stack, &bucket, "trybe/k/kms.json").await;
    assert_eq!(sse.as_deref(), Some("aws:kms"));
    assert_eq!(kms.as_deref(), Some(key_arn));
    // Without a key (or with an empty one): SSE-S3, as before.
    let plain = S3Objects::new(stack.s3.clone(), &stack.payload_bucket).with_kms_key(Some(""));
    let (sse, _) = put_and_head(&stack, &plain, "trybe/k/s3.json").await;
    assert_eq!(sse.as_deref(), Some("AES256"));
}

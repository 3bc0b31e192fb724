//! The claim check against moto, end to end: an event whose envelope exceeds the queue's limit
//! is written to the payload bucket (S3) before its message, the message carries a reference,
//! and the processor hands the whole event to its handler. A failed write is a 503 that leaves
//! nothing behind.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::{json, Value};
use shared::apigw::Sent;
use shared::consumer::{EventHandler, HandlerError, Router};
use shared::providers::trybe::{self, Trybe};
use shared::Envelope;

use crate::helpers::*;

const SECRET: &str = "trybe-claim-check-secret";

/// Keeps every envelope its handler is given.
#[derive(Default)]
struct Keeping(Mutex<Vec<Envelope>>);

#[async_trait]
impl EventHandler for Keeping {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

fn signed(id: &str, filler: usize) -> Sent {
    let body = json!({"id": id, "event": "customer.created", "site_id": "s1",
                      "data": {"blob": "x".repeat(filler)}});
    signed_trybe(SECRET, &body)
}

#[tokio::test]
async fn a_body_over_the_queue_limit_waits_in_s3_and_the_handler_gets_the_whole_event() {
    let stack = Stack::new().await;
    let r = stack
        .receiver(&[(trybe::SECRET_VAR, SECRET)], Trybe::from_env)
        .await;
    // 3 MB: over SQS's 1 MiB, within API Gateway's 10 MB (the default MAX_BODY_BYTES).
    let big = signed("big-1", 3_000_000);
    assert_eq!(send(&r, &big).await.status(), 200);

    // What moto received: one encrypted object under the provider's prefix...
    let objects = stack.objects(&stack.payload_bucket).await;
    assert_eq!(objects.len(), 1, "{objects:?}");
    let (key, sse) = &objects[0];
    assert!(key.starts_with("trybe/"), "{key}");
    assert_eq!(
        sse.as_deref(),
        Some("AES256"),
        "written with SSE-S3 requested"
    );
    // ... and one small message that names it and carries no content.
    let got = stack
        .sqs
        .receive_message()
        .queue_url(&stack.queue_url)
        .visibility_timeout(0)
        .send()
        .await
        .unwrap();
    let body = got.messages()[0].body().unwrap();
    assert!(body.len() < 2_000, "a reference, {} bytes", body.len());
    let message: Value = serde_json::from_str(body).unwrap();
    assert_eq!(message["payload_ref"]["key"], key.as_str());
    assert!(message.get("payload").is_none());
    assert_eq!(message["event_id"], "big-1");

    // The processor reads the object back before the handler sees the envelope.
    let keeping = Arc::new(Keeping::default());
    let processor = stack.processor(Router::new(keeping.clone()));
    assert_eq!(stack.feed(&processor).await, 1);
    let seen = keeping.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].payload_ref.is_none(),
        "handlers never see the reference"
    );
    let payload = seen[0].payload.as_ref().unwrap();
    assert_eq!(
        payload.parse::<Value>().unwrap()["data"]["blob"]
            .as_str()
            .unwrap()
            .len(),
        3_000_000
    );
    // Through the bucket and back, the handler has the sender's bytes.
    assert!(
        payload.get().as_bytes() == big.body.trim_ascii(),
        "the payload is the body byte for byte"
    );
    assert!(stack.drain().await.is_empty(), "taken off the queue");

    // The provider's retry is a duplicate: no second object, no second message.
    assert_eq!(send(&r, &big).await.status(), 200);
    assert_eq!(stack.objects(&stack.payload_bucket).await.len(), 1);
    assert!(stack.drain().await.is_empty());
}

#[tokio::test]
async fn a_failed_payload_write_is_a_503_that_leaves_nothing_and_the_retry_is_queued() {
    let stack = Stack::new().await;
    // A bucket that does not exist: S3 refuses the write (NoSuchBucket).
    let broken = stack
        .receiver(
            &[
                (trybe::SECRET_VAR, SECRET),
                ("PAYLOAD_BUCKET", "no-such-bucket-for-payloads"),
            ],
            Trybe::from_env,
        )
        .await;
    let big = signed("big-2", 1_200_000);
    let answer = send(&broken, &big).await;
    assert_eq!(answer.status(), 503);
    assert!(answer.headers().contains_key("retry-after"));
    stack.assert_no_trace().await;

    let working = stack
        .receiver(&[(trybe::SECRET_VAR, SECRET)], Trybe::from_env)
        .await;
    assert_eq!(send(&working, &big).await.status(), 200);
    assert_eq!(stack.drain().await.len(), 1);
    assert_eq!(stack.objects(&stack.payload_bucket).await.len(), 1);
}

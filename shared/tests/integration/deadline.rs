//! One request, one deadline: whatever DynamoDB or SQS do, the receiver answers 503 within
//! `REQUEST_DEADLINE_MS`, gives back what it claimed where it can, and the provider's retry then
//! queues the event exactly once. Latency is real: a proxy holds the SDK's requests on the wire.

use std::time::Duration;

use serde_json::json;
use shared::apigw::Sent;
use shared::providers::trybe::{self, Trybe};
use shared::secret::Secret;

use crate::faults::{Fault, Proxy};
use crate::helpers::*;

const SECRET: &str = "trybe-deadline-secret-01";
const SITE: &str = "site-deadline";
/// A short deadline keeps the test quick; the lease is twice it.
const DEADLINE_MS: &str = "1500";

fn signed(id: &str) -> Sent {
    let body =
        json!({"id": id, "event": "basket.submitted", "site_id": SITE, "data": {}}).to_string();
    Sent::post("/trybe", body.clone())
        .header("content-type", "application/json")
        .header(
            "Signature",
            trybe::sign(&Secret::new(SECRET).unwrap(), body.as_bytes()),
        )
}

/// A receiver whose AWS traffic goes through a fault-injecting proxy to moto.
async fn behind_proxy(stack: &Stack) -> (std::sync::Arc<shared::Receiver<Trybe>>, Proxy) {
    let (proxy, endpoint) = Proxy::start(moto_endpoint()).await;
    let sdk = sdk_at(&endpoint).await;
    let env = stack.env(&[
        (trybe::SECRET_VAR, SECRET),
        ("REQUEST_DEADLINE_MS", DEADLINE_MS),
    ]);
    let receiver = shared::runtime::receiver_from_env(env, &sdk, Trybe::from_env).await;
    (std::sync::Arc::new(receiver), proxy)
}

/// Sends `sent`, failing the test if no answer comes long after the deadline (a hang).
async fn answer_within(
    receiver: &shared::Receiver<Trybe>,
    sent: &Sent,
) -> lambda_http::Response<lambda_http::Body> {
    tokio::time::timeout(Duration::from_secs(30), send(receiver, sent))
        .await
        .expect("the receiver answered (it would hang without its deadline)")
}

#[tokio::test]
async fn a_hung_send_message_gets_503_the_claim_is_released_and_the_retry_queues_once() {
    let stack = Stack::new().await;
    let (receiver, proxy) = behind_proxy(&stack).await;
    proxy.inject("SendMessage", Fault::Hang);
    let id = uuid::Uuid::new_v4().to_string();
    let response = answer_within(&receiver, &signed(&id)).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        stack.item(&key("trybe", Some(SITE), &id)).await.is_none(),
        "claim given back within the deadline"
    );
    assert!(proxy
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|op| op.ends_with("DeleteItem")));

    proxy.clear();
    let retry = answer_within(&receiver, &signed(&id)).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(body_json(&retry)["status"], "accepted");
    assert_eq!(stack.drain().await.len(), 1, "queued exactly once");
}

#[tokio::test]
async fn a_hung_claim_gets_503_and_nothing_is_sent() {
    let stack = Stack::new().await;
    let (receiver, proxy) = behind_proxy(&stack).await;
    proxy.inject("PutItem", Fault::Hang);
    let id = uuid::Uuid::new_v4().to_string();
    let response = answer_within(&receiver, &signed(&id)).await;
    assert_eq!(response.status(), 503);
    assert!(stack.drain().await.is_empty());
    assert!(!proxy
        .seen
        .lock()
        .unwrap()
        .iter()
        .any(|op| op.contains("SendMessage")));

    proxy.clear();
    let retry = answer_within(&receiver, &signed(&id)).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(stack.drain().await.len(), 1);
}

#[tokio::test]
async fn a_slow_store_within_the_deadline_is_still_accepted() {
    let stack = Stack::new().await;
    let (receiver, proxy) = behind_proxy(&stack).await;
    proxy.inject("PutItem", Fault::Delay(Duration::from_millis(300)));
    let id = uuid::Uuid::new_v4().to_string();
    let response = answer_within(&receiver, &signed(&id)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(stack.drain().await.len(), 1);
    let claim = stack.item(&key("trybe", Some(SITE), &id)).await.unwrap();
    assert_eq!(s(&claim, "status"), "RECEIVED");
}

#[tokio::test]
async fn a_hung_finish_does_not_hold_the_answer_of_a_queued_event() {
    let stack = Stack::new().await;
    let (receiver, proxy) = behind_proxy(&stack).await;
    proxy.inject("UpdateItem", Fault::Hang);
    let id = uuid::Uuid::new_v4().to_string();
    let response = answer_within(&receiver, &signed(&id)).await;
    // The message is durable on the queue: 200 within the deadline, and the claim stays
    // RECEIVED under its lease (a retry in that time gets 503; after it, a second copy that
    // the processor's own claim absorbs).
    assert_eq!(response.status(), 200);
    assert_eq!(stack.drain().await.len(), 1);
    let claim = stack.item(&key("trybe", Some(SITE), &id)).await.unwrap();
    assert_eq!(s(&claim, "status"), "RECEIVED");
    proxy.clear();
    let retry = answer_within(&receiver, &signed(&id)).await;
    assert_eq!(retry.status(), 503, "the lease still lives");
    assert!(stack.drain().await.is_empty());
}

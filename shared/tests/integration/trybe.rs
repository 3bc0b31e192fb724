//! Trybe receiver against moto, through lambda_http's event conversion (issue 2, item 6).

use std::sync::Arc;

use futures::future::join_all;
use lambda_http::http::Method;
use serde_json::json;
use shared::apigw::Sent;
use shared::clock::SystemClock;
use shared::config::Settings;
use shared::providers::trybe::{self, Trybe};
use shared::queue::SqsQueue;
use shared::secret::Secret;
use shared::store::DynamoClaims;
use shared::Receiver;

use crate::helpers::*;

const SECRET: &str = "trybe-dev-secret-0001";
const SECOND: &str = "trybe-dev-secret-0002";

fn event_body(id: &str) -> String {
    json!({
        "id": id,
        "event": "basket.submitted",
        "timestamp": "2024-08-19T16:05:34+00:00",
        "webhook_config_id": "66ba3d8f13e43589da030ad8",
        "site_id": "00000000-0000-0000-0000-111111111111",
        "data": {"id": "ord-1", "status": "submitted", "total": 12000}
    })
    .to_string()
}

fn signed(body: &str, secret: &str) -> Sent {
    Sent::post("/trybe", body)
        .header("content-type", "application/json")
        .header(
            "Signature",
            trybe::sign(&Secret::new(secret).unwrap(), body.as_bytes()),
        )
}

async fn receiver(stack: &Stack) -> Arc<Receiver<Trybe>> {
    stack
        .receiver(
            &[(trybe::SECRET_VAR, &format!("{SECRET},{SECOND}"))],
            Trybe::from_env,
        )
        .await
}

fn id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[tokio::test]
async fn signed_event_is_claimed_and_queued_once_with_its_envelope() {
    let stack = Stack::new().await;
    let r = receiver(&stack).await;
    let event_id = id();
    let body = event_body(&event_id);
    let response = send(&r, &signed(&body, SECRET)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        body_json(&response),
        json!({"status": "accepted", "event_id": event_id})
    );

    let (message, env) = only_envelope(&stack, "trybe", &event_id, "basket.submitted").await;
    assert_eq!(env["tenant"], "00000000-0000-0000-0000-111111111111");
    assert_eq!(env["occurred_at"], "2024-08-19T16:05:34+00:00");
    assert_eq!(env["content_type"], "application/json");
    assert_eq!(
        env["body_sha256"],
        shared::verify::sha256_hex(body.as_bytes())
    );
    assert_eq!(
        env["payload"],
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    );

    let claim = stack
        .item(&key(
            "trybe",
            Some("00000000-0000-0000-0000-111111111111"),
            &event_id,
        ))
        .await
        .expect("claim stored");
    // Answered after one write and one send: the claim is not marked (README "Two round
    // trips"); the message is on the queue.
    assert_eq!(s(&claim, "status"), "RECEIVED");
    assert!(!claim.contains_key("message_id"));
    assert!(message.message_id.is_some());
    assert_eq!(s(&claim, "event_type"), "basket.submitted");
    let expires: i64 = claim["expires_at"].as_n().unwrap().parse().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now + 604_700..=now + 604_900).contains(&expires),
        "7-day logical expiry, got {}",
        expires - now
    );
}

#[tokio::test]
async fn redelivery_is_acknowledged_without_a_second_message() {
    let stack = Stack::new().await;
    let r = receiver(&stack).await;
    let event_id = id();
    let sent = signed(&event_body(&event_id), SECRET);
    assert_eq!(send(&r, &sent).await.status(), 200);
    assert_eq!(stack.processor_has_taken_the_queue().await, 1);
    let again = send(&r, &sent).await;
    assert_eq!(again.status(), 200);
    assert_eq!(body_json(&again)["status"], "duplicate");
    assert_eq!(stack.drain().await.len(), 1);
}

#[tokio::test]
async fn a_second_configured_secret_is_accepted() {
    let stack = Stack::new().await;
    let r = receiver(&stack).await;
    assert_eq!(
        send(&r, &signed(&event_body(&id()), SECOND)).await.status(),
        200
    );
    assert_eq!(stack.drain().await.len(), 1);
}

#[tokio::test]
async fn forged_or_broken_signatures_get_401_and_leave_no_trace() {
    let stack = Stack::new().await;
    let r = receiver(&stack).await;
    let body = event_body(&id());
    let good = trybe::sign(&Secret::new(SECRET).unwrap(), body.as_bytes());
    let cases: Vec<(&str, Sent)> = vec![
        (
            "tampered body",
            Sent::post("/trybe", body.replace("12000", "1")).header("Signature", good.clone()),
        ),
        ("missing", Sent::post("/trybe", body.clone())),
        (
            "empty",
            Sent::post("/trybe", body.clone()).header("Signature", ""),
        ),
        (
            "truncated",
            Sent::post("/trybe", body.clone()).header("Signature", &good[..40]),
        ),
        (
            "over-long",
            Sent::post("/trybe", body.clone()).header("Signature", format!("{good}ab")),
        ),
        ("wrong key", signed(&body, "not-the-trybe-secret")),
        (
            "prefixed",
            Sent::post("/trybe", body.clone()).header("Signature", format!("sha256={good}")),
        ),
    ];
    for (name, sent) in cases {
        let response = send(&r, &sent).await;
        assert_unauthorized(&response, name);
    }
    stack.assert_no_trace().await;
}

#[tokio::test]
async fn malformed_json_wrong_method_wrong_type_and_oversize_are_refused() {
    let stack = Stack::new().await;
    let r = stack
        .receiver(
            &[(trybe::SECRET_VAR, SECRET), ("MAX_BODY_BYTES", "2048")],
            Trybe::from_env,
        )
        .await;
    let malformed = send(&r, &signed("{\"id\": \"x\",", SECRET)).await;
    assert_eq!(malformed.status(), 400);
    assert!(body_json(&malformed)["error"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    assert_eq!(send(&r, &signed("[1,2]", SECRET)).await.status(), 400);

    let get = send(&r, &signed(&event_body(&id()), SECRET).method(Method::GET)).await;
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");

    let body = event_body(&id());
    let mut text = Sent::post("/trybe", body.clone()).header("content-type", "text/plain");
    text = text.header(
        "Signature",
        trybe::sign(&Secret::new(SECRET).unwrap(), body.as_bytes()),
    );
    assert_eq!(send(&r, &text).await.status(), 415);

    let big = event_body(&"x".repeat(3000));
    assert_eq!(send(&r, &signed(&big, SECRET)).await.status(), 413);
    stack.assert_no_trace().await;
}

#[tokio::test]
async fn base64_encoded_bodies_verify_against_the_decoded_bytes() {
    let stack = Stack::new().await;
    let r = receiver(&stack).await;
    let sent = Sent {
        base64: true,
        ..signed(&event_body(&id()), SECRET)
    };
    assert_eq!(send(&r, &sent).await.status(), 200);
    assert_eq!(stack.drain().await.len(), 1);
}

#[tokio::test]
async fn queue_outage_after_the_claim_answers_503_and_releases_the_claim() {
    let stack = Stack::new().await;
    let settings = Settings::from_env(&stack.env(&[])).unwrap();
    let dead_sqs = aws_sdk_sqs::Client::new(&sdk_at(DEAD_ENDPOINT).await);
    let broken = Receiver::new(
        Trybe::from_env(&stack.env(&[(trybe::SECRET_VAR, SECRET)])).unwrap(),
        Arc::new(DynamoClaims::new(stack.ddb.clone(), &stack.table)),
        Arc::new(SqsQueue::new(dead_sqs, &stack.queue_url)),
        settings,
        Arc::new(SystemClock),
    );
    let event_id = id();
    let sent = signed(&event_body(&event_id), SECRET);
    let response = send(&broken, &sent).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert!(
        stack
            .item(&key(
                "trybe",
                Some("00000000-0000-0000-0000-111111111111"),
                &event_id
            ))
            .await
            .is_none(),
        "claim released"
    );

    // The provider's retry, with the queue back, goes through.
    let r = receiver(&stack).await;
    assert_eq!(send(&r, &sent).await.status(), 200);
    assert_eq!(stack.drain().await.len(), 1);
}

#[tokio::test]
async fn store_outage_answers_503_and_queues_nothing() {
    let stack = Stack::new().await;
    let settings = Settings::from_env(&stack.env(&[])).unwrap();
    let dead_ddb = aws_sdk_dynamodb::Client::new(&sdk_at(DEAD_ENDPOINT).await);
    let broken = Receiver::new(
        Trybe::from_env(&stack.env(&[(trybe::SECRET_VAR, SECRET)])).unwrap(),
        Arc::new(DynamoClaims::new(dead_ddb, &stack.table)),
        Arc::new(SqsQueue::new(stack.sqs.clone(), &stack.queue_url)),
        settings,
        Arc::new(SystemClock),
    );
    assert_eq!(
        send(&broken, &signed(&event_body(&id()), SECRET))
            .await
            .status(),
        503
    );
    assert!(stack.drain().await.is_empty());
}

#[tokio::test]
async fn eight_concurrent_copies_of_a_new_event_queue_exactly_one_message() {
    let stack = Stack::new().await;
    let r = receiver(&stack).await;
    let sent = signed(&event_body(&id()), SECRET);
    let answers = join_all((0..8).map(|_| {
        let (r, sent) = (r.clone(), sent.clone());
        tokio::spawn(async move { send(&r, &sent).await.status().as_u16() })
    }))
    .await;
    let codes: Vec<u16> = answers.into_iter().map(Result::unwrap).collect();
    assert!(codes.iter().all(|c| *c == 200 || *c == 503), "{codes:?}");
    assert!(codes.contains(&200), "{codes:?}");
    assert_eq!(stack.drain().await.len(), 1, "{codes:?}");
}

#[tokio::test]
async fn missing_or_empty_secret_fails_closed_with_500() {
    let stack = Stack::new().await;
    for secret in [None, Some(""), Some(" , ")] {
        let extra: Vec<(&str, &str)> = secret
            .map(|s| vec![(trybe::SECRET_VAR, s)])
            .unwrap_or_default();
        let r = stack.receiver(&extra, Trybe::from_env).await;
        let response = send(&r, &signed(&event_body(&id()), SECRET)).await;
        assert_eq!(response.status(), 500, "{secret:?}");
    }
    assert!(stack.drain().await.is_empty());
}

#[tokio::test]
async fn secret_arn_is_read_from_secrets_manager_at_cold_start() {
    let stack = Stack::new().await;
    let sm = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    let arn = sm
        .create_secret()
        .name(format!("trybe-{}", id()))
        .secret_string(format!("{{\"{}\":\"{SECRET}\"}}", trybe::SECRET_VAR))
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    let r = stack
        .receiver(
            &[("TRYBE_SIGNING_SECRET_SECRET_ARN", &arn)],
            Trybe::from_env,
        )
        .await;
    assert_eq!(
        send(&r, &signed(&event_body(&id()), SECRET)).await.status(),
        200
    );
    let missing = stack
        .receiver(
            &[(
                "TRYBE_SIGNING_SECRET_SECRET_ARN",
                "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope",
            )],
            Trybe::from_env,
        )
        .await;
    assert_eq!(
        send(&missing, &signed(&event_body(&id()), SECRET))
            .await
            .status(),
        500
    );
}

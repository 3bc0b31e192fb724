//! Tribe (Bettermode) receiver against moto, through lambda_http's event conversion. Every rule
//! of docs/providers.md "Tribe": signed handshake, subscriptions, other types, both header
//! families, the two-sided replay window.

use std::sync::Arc;

use serde_json::{json, Value};
use shared::apigw::Sent;
use shared::clock::epoch_millis;
use shared::config::Env;
use shared::consumer::Router;
use shared::providers::tribe::{self, HeaderFamily, Tribe, BETTERMODE, LEGACY};
use shared::secret::Secret;
use shared::verify::sha256_hex;
use shared::Receiver;
use time::OffsetDateTime;

use crate::helpers::*;

const SECRET: &str = "tribe-dev-secret-0001";
const SECOND: &str = "tribe-dev-secret-0002";
const NETWORK: &str = "CAxOmI7I7t";
const MINUTE_MS: i64 = 60_000;

fn now_ms() -> i64 {
    epoch_millis(OffsetDateTime::now_utc())
}

fn id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn subscription(event_id: &str) -> String {
    json!({
        "networkId": NETWORK,
        "context": "NETWORK",
        "entityId": NETWORK,
        "currentSettings": [],
        "type": "SUBSCRIPTION",
        "data": {
            "time": "2025-03-04T09:15:27.482Z",
            "verb": "PUBLISHED",
            "actor": {"id": "olQ88vTqYp", "roleId": "Kni0OF7HtE", "roleType": "member"},
            "object": {"id": "ky4X0Ci6q4M5", "spaceId": "dWBZxO8g6uJl", "title": "Hello"},
            "target": {"networkId": NETWORK, "spaceId": "dWBZxO8g6uJl", "memberId": "olQ88vTqYp"},
            "id": event_id,
            "name": "post.published",
            "noun": "POST",
            "shortDescription": "Publish Post"
        }
    })
    .to_string()
}

fn test_request(challenge: &str) -> String {
    json!({"networkId": NETWORK, "context": "NETWORK", "currentSettings": [], "type": "TEST",
        "data": {"challenge": challenge}})
    .to_string()
}

/// The request as Tribe sends it: `ts` in the timestamp header of `family`, signed over it.
fn signed_at(body: &str, secret: &str, ts: &str, family: HeaderFamily) -> Sent {
    Sent::post("/tribe", body)
        .header("content-type", "application/json")
        .header(family.timestamp, ts)
        .header(
            family.signature,
            tribe::sign(&Secret::new(secret).unwrap(), ts, body.as_bytes()),
        )
}

fn signed(body: &str, secret: &str) -> Sent {
    signed_at(body, secret, &now_ms().to_string(), BETTERMODE)
}

async fn receiver(stack: &Stack) -> Arc<Receiver<Tribe>> {
    stack
        .receiver(
            &[(tribe::SECRET_VAR, &format!("{SECRET},{SECOND}"))],
            Tribe::from_env,
        )
        .await
}

fn text(response: &lambda_http::Response<lambda_http::Body>) -> String {
    String::from_utf8(response.body().to_vec()).unwrap()
}

#[tokio::test]
async fn test_challenge_is_answered_exactly_and_nothing_is_stored_or_queued() {
    let stack = Stack::new().await;
    let r = receiver(&stack).await;
    let challenge = "d77dae12ea612cf647d6e2e78dd2b7470e4e4358";
    let response = send(&r, &signed(&test_request(challenge), SECRET)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        text(&response),
        format!(r#"{{"type":"TEST","status":"SUCCEEDED","data":{{"challenge":"{challenge}"}}}}"#)
    );
    // The handshake is signed like any request: a forged one is not answered.
    let forged = send(
        &r,
        &signed(&test_request(challenge), "not-the-tribe-secret"),
    )
    .await;
    assert_eq!(forged.status(), 401);
    assert!(!text(&forged).contains(challenge));
    stack.assert_no_trace().await;
}

#[tokio::test]
async fn subscription_is_claimed_and_queued_once_with_its_envelope() {
    let stack = Stack::new().await;
    let r = receiver(&stack).await;
    let event_id = id();
    let body = subscription(&event_id);
    let response = send(&r, &signed(&body, SECRET)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        body_json(&response),
        json!({"status": "accepted", "event_id": event_id})
    );

    let (message, env) = only_envelope(&stack, "tribe", &event_id, "post.published").await;
    assert_eq!(env["tenant"], NETWORK);
    assert_eq!(env["occurred_at"], "2025-03-04T09:15:27.482Z");
    assert_eq!(env["body_sha256"], sha256_hex(body.as_bytes()));
    assert_eq!(
        env["payload"],
        serde_json::from_str::<Value>(&body).unwrap()
    );
    let claim = stack
        .item(&key("tribe", Some(NETWORK), &event_id))
        .await
        .expect("claim stored");
    assert_eq!(s(&claim, "status"), "RECEIVED");
    assert_eq!(s(&claim, "event_type"), "post.published");

    // The processor's Tribe handler reads it.
    let processor = stack.processor(Router::default().provider(
        tribe::NAME,
        Arc::new(event_processor::handlers::tribe::TribeHandler),
    ));
    let processed = processor.process(sqs_event(vec![message])).await;
    assert!(processed.batch_item_failures.is_empty());
}

#[tokio::test]
async fn redelivery_is_acknowledged_without_a_second_message() {
    let stack = Stack::new().await;
    let r = receiver(&stack).await;
    let body = subscription(&id());
    let sent = signed(&body, SECRET);
    assert_eq!(send(&r, &sent).await.status(), 200);
    assert_eq!(stack.processor_has_taken_the_queue().await, 1);
    let again = send(&r, &sent).await;
    assert_eq!(again.status(), 200);
    assert_eq!(body_json(&again)["status"], "duplicate");
    // A retry signed later (new timestamp), same data.id: still a duplicate.
    let later = signed_at(&body, SECOND, &(now_ms() + 1_000).to_string(), BETTERMODE);
    assert_eq!(body_json(&send(&r, &later).await)["status"], "duplicate");
    assert_eq!(stack.drain().await.len(), 1);
}

#[tokio::test]
async fn legacy_tribe_headers_are_accepted() {
    let stack = Stack::new().await;
    let r = receiver(&stack).await;
    let event_id = id();
    let sent = signed_at(
        &subscription(&event_id),
        SECRET,
        &now_ms().to_string(),
        LEGACY,
    );
    assert_eq!(send(&r, &sent).await.status(), 200);
    let messages = stack.drain().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        envelope(&messages[0])["dedup_key"],
        key("tribe", Some(NETWORK), &event_id)
    );
}

#[tokio::test]
async fn wrong_secret_tampering_and_bad_headers_get_401_and_leave_no_trace() {
    let stack = Stack::new().await;
    let r = receiver(&stack).await;
    let body = subscription(&id());
    let ts = now_ms().to_string();
    let good = tribe::sign(&Secret::new(SECRET).unwrap(), &ts, body.as_bytes());
    let cases: Vec<(&str, Sent)> = vec![
        ("wrong secret", signed(&body, "not-the-tribe-secret")),
        (
            "tampered body",
            Sent::post("/tribe", body.replace("Hello", "Hellp"))
                .header(BETTERMODE.timestamp, ts.clone())
                .header(BETTERMODE.signature, good.clone()),
        ),
        (
            "other timestamp",
            Sent::post("/tribe", body.clone())
                .header(BETTERMODE.timestamp, (now_ms() + 1).to_string())
                .header(BETTERMODE.signature, good.clone()),
        ),
        ("no headers", Sent::post("/tribe", body.clone())),
        (
            "signature without timestamp",
            Sent::post("/tribe", body.clone()).header(BETTERMODE.signature, good.clone()),
        ),
        (
            "mixed families",
            Sent::post("/tribe", body.clone())
                .header(BETTERMODE.signature, good.clone())
                .header(LEGACY.timestamp, ts.clone()),
        ),
        ("non-numeric timestamp", {
            let bad = "2025-03-04T09:15:27Z";
            signed_at(&body, SECRET, bad, BETTERMODE)
        }),
    ];
    for (name, sent) in cases {
        let response = send(&r, &sent).await;
        assert_unauthorized(&response, name);
    }
    stack.assert_no_trace().await;
}

#[tokio::test]
async fn stale_and_future_timestamps_get_401() {
    let stack = Stack::new().await;
    let r = receiver(&stack).await;
    let now = now_ms();
    for (name, ts) in [
        ("16 minutes old", now - 16 * MINUTE_MS),
        ("16 minutes ahead", now + 16 * MINUTE_MS),
        ("a day old", now - 24 * 60 * MINUTE_MS),
    ] {
        let sent = signed_at(&subscription(&id()), SECRET, &ts.to_string(), BETTERMODE);
        assert_eq!(send(&r, &sent).await.status(), 401, "{name}");
    }
    stack.assert_no_trace().await;

    // Within the window both ways, and 10 digits read as seconds (docs/providers.md "Tribe:
    // Timestamp and replay", default).
    for ts in [
        (now - 14 * MINUTE_MS).to_string(),
        (now + 14 * MINUTE_MS).to_string(),
        (now / 1000).to_string(),
    ] {
        let sent = signed_at(&subscription(&id()), SECRET, &ts, BETTERMODE);
        assert_eq!(send(&r, &sent).await.status(), 200, "{ts}");
    }
    assert_eq!(stack.drain().await.len(), 3);

    // TRIBE_TOLERANCE_SECONDS narrows the window.
    let strict = stack
        .receiver(
            &[(tribe::SECRET_VAR, SECRET), (tribe::TOLERANCE_VAR, "60")],
            Tribe::from_env,
        )
        .await;
    let two_minutes_old = signed_at(
        &subscription(&id()),
        SECRET,
        &(now_ms() - 2 * MINUTE_MS).to_string(),
        BETTERMODE,
    );
    assert_eq!(send(&strict, &two_minutes_old).await.status(), 401);
}

#[tokio::test]
async fn other_types_are_queued_under_their_type_and_acknowledged_succeeded() {
    let stack = Stack::new().await;
    let r = receiver(&stack).await;
    let body = json!({"networkId": NETWORK, "context": "NETWORK", "currentSettings": [],
        "type": "APP_INSTALLED", "data": {"id": id(), "appId": "aP7vK3mQzN", "status": "ENABLED"}})
    .to_string();
    let sent = signed(&body, SECRET);
    let response = send(&r, &sent).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        text(&response),
        r#"{"type":"APP_INSTALLED","status":"SUCCEEDED"}"#
    );
    let messages = stack.drain().await;
    assert_eq!(messages.len(), 1);
    let env = envelope(&messages[0]);
    assert_eq!(env["event_type"], "app_installed");
    assert_eq!(env["tenant"], NETWORK);
    assert_eq!(
        env["dedup_key"],
        key_hash("tribe", Some(NETWORK), body.as_bytes())
    );
    let processor = stack.processor(Router::default().provider(
        tribe::NAME,
        Arc::new(event_processor::handlers::tribe::TribeHandler),
    ));
    assert!(processor
        .process(sqs_event(messages))
        .await
        .batch_item_failures
        .is_empty());
    // A redelivery, once the processor has it, gets the same answer and no second message.
    let again = send(&r, &sent).await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        text(&again),
        r#"{"type":"APP_INSTALLED","status":"SUCCEEDED"}"#
    );
    assert!(stack.drain().await.is_empty());
}

#[tokio::test]
async fn malformed_envelopes_get_400_naming_the_field() {
    let stack = Stack::new().await;
    let r = receiver(&stack).await;
    for (body, error) in [
        (
            r#"{"type":"SUBSCRIPTION"}"#,
            "data is missing or not an object",
        ),
        (r#"{"data":{"id":"x"}}"#, "type is missing"),
        (
            r#"{"type":"TEST","data":{}}"#,
            "data.challenge is missing or not a string",
        ),
    ] {
        let response = send(&r, &signed(body, SECRET)).await;
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(body_json(&response)["error"], error);
    }
    stack.assert_no_trace().await;
}

#[tokio::test]
async fn samples_in_events_are_accepted_as_simulated() {
    let stack = Stack::new().await;
    let r = receiver(&stack).await;
    let env = Env::from_pairs([(tribe::SECRET_VAR, SECRET)]);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/tribe");
    let mut queued = Vec::new();
    for name in [
        "test.json",
        "post.published.json",
        "member.verified.json",
        "app_installed.json",
    ] {
        let body = std::fs::read(dir.join(name)).unwrap();
        let sent = shared::providers::simulate(tribe::NAME, &body, &env, OffsetDateTime::now_utc())
            .unwrap();
        let response = send(&r, &sent).await;
        assert_eq!(response.status(), 200, "{name}");
        let answer = body_json(&response);
        if name == "test.json" {
            assert_eq!(answer["status"], "SUCCEEDED");
        } else {
            queued.push(name);
        }
    }
    let types: Vec<String> = stack
        .drain()
        .await
        .iter()
        .map(|m| envelope(m)["event_type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types.len(), queued.len());
    for t in ["post.published", "member.verified", "app_installed"] {
        assert!(types.iter().any(|x| x == t), "{types:?}");
    }
}

#[tokio::test]
async fn missing_secret_fails_closed_with_500() {
    let stack = Stack::new().await;
    let r = stack.receiver(&[], Tribe::from_env).await;
    let response = send(&r, &signed(&subscription(&id()), SECRET)).await;
    assert_eq!(response.status(), 500);
    stack.assert_no_trace().await;
}

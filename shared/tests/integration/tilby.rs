//! Tilby receiver against moto, through lambda_http's event conversion (docs/providers.md
//! "Tilby").

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use shared::apigw::Sent;
use shared::clock::SystemClock;
use shared::config::Settings;
use shared::consumer::Router;
use shared::providers::tilby::{self, Tilby};
use shared::queue::{EventQueue, Message, QueueError, SqsQueue};
use shared::secret::Secret;
use shared::store::DynamoClaims;
use shared::Receiver;

use crate::helpers::*;
use shared::provider::EventKey;

// local.env's dev values.
const URL_TOKEN: &str = "tilby-dev-token-0001";
const STATIC_TOKEN: &str = "tilby-dev-static-token-0001";

const SUBSCRIBED: &str = include_str!("../../../events/tilby/subscribed.json");
const SALES_CLOSED: &str = include_str!("../../../events/tilby/sales.closed.json");
const ITEMS_UPDATED: &str = include_str!("../../../events/tilby/items.updated.json");
const IMPORT: &str = include_str!("../../../events/tilby/customers.import-80.json");

fn post(path: &str, body: &str) -> Sent {
    Sent::post(path, body).header("content-type", "application/json")
}

/// Tilby's request to the dev URL, unsigned.
fn unsigned(body: &str) -> Sent {
    post(&format!("/tilby/{URL_TOKEN}"), body)
}

/// Signed with `token` in `header` (Tilby's real header name is unknown).
fn signed(body: &str, header: &str, token: &str) -> Sent {
    unsigned(body).header(
        header,
        tilby::sign(&Secret::new(token).unwrap(), body.as_bytes()),
    )
}

async fn receiver(stack: &Stack, extra: &[(&str, &str)]) -> Arc<Receiver<Tilby>> {
    let mut all = vec![(tilby::URL_TOKEN_VAR, URL_TOKEN)];
    all.extend_from_slice(extra);
    stack.receiver(&all, Tilby::from_env).await
}

/// A sales notification with `n` entities and retry count `n_retry`.
fn notification(uuid: &str, n: usize, n_retry: u64) -> String {
    let entities: Vec<Value> = (0..n)
        .map(|i| {
            json!({"id": 9000 + i, "uuid": format!("00000000-0000-4000-8000-{i:012}"),
                "status": "closed", "final_amount": 10 + i, "name": format!("Tavolo {i}")})
        })
        .collect();
    json!({"type": "CLOSED", "entity_name": "sales", "time": "2025-05-12T13:58:45.102Z",
        "notification_uuid": uuid, "environment_id": "s3_bistrot_milano",
        "client_id": "IntegrationWebhooks", "from_user": "giulia.bianchi@example.com",
        "entities": entities, "nRetry": n_retry})
    .to_string()
}

fn with_n_retry(body: &str, n_retry: u64) -> String {
    let mut v: Value = serde_json::from_str(body).unwrap();
    v["nRetry"] = json!(n_retry);
    v.to_string()
}

fn dedup_keys(envelopes: &[Value]) -> HashSet<String> {
    envelopes
        .iter()
        .map(|e| e["dedup_key"].as_str().unwrap().to_owned())
        .collect()
}

async fn drained(stack: &Stack) -> Vec<Value> {
    stack.drain().await.iter().map(envelope).collect()
}

#[tokio::test]
async fn the_handshake_is_answered_200_and_nothing_is_stored_or_queued() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &[]).await;
    let response = send(&r, &unsigned(SUBSCRIBED)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body_json(&response), json!({"status": "subscribed"}));
    // Signed like every request when a static token is configured.
    let signing = receiver(&stack, &[(tilby::SIGNING_TOKEN_VAR, STATIC_TOKEN)]).await;
    let signed_handshake = signed(SUBSCRIBED, "x-tilby-signature", STATIC_TOKEN);
    assert_eq!(send(&signing, &signed_handshake).await.status(), 200);
    assert_eq!(send(&signing, &unsigned(SUBSCRIBED)).await.status(), 401);
    stack.assert_no_trace().await;
}

#[tokio::test]
async fn a_notification_becomes_one_message_per_entity_answered_exactly_200() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &[]).await;
    let uuid = "d7c9a1e4-2b3f-4c8d-9e0a-000000000003";
    let response = send(&r, &unsigned(&notification(uuid, 3, 0))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        body_json(&response),
        json!({"status": "accepted", "events": 3, "queued": 3, "duplicates": 0})
    );
    let sample = send(&r, &unsigned(SALES_CLOSED)).await;
    assert_eq!(sample.status(), 200);
    assert_eq!(
        body_json(&sample)["event_id"],
        "d7c9a1e4-2b3f-4c8d-9e0a-1f2b3c4d5e6f:8f3b2c1a-6d4e-4f5a-9b8c-7d6e5f4a3b2c"
    );

    let messages = stack.drain().await;
    assert_eq!(messages.len(), 4);
    let envelopes: Vec<Value> = messages.iter().map(envelope).collect();
    for i in 0..3 {
        let entity_uuid = format!("00000000-0000-4000-8000-{i:012}");
        let key = format!("{uuid}:{entity_uuid}");
        let e = envelopes
            .iter()
            .find(|e| e["event_id"] == key.as_str())
            .unwrap_or_else(|| panic!("{key} queued"));
        assert_eq!(e["provider"], "tilby");
        let dedup = shared::pipeline::dedup_key(
            "tilby",
            Some("s3_bistrot_milano"),
            &EventKey::parts([uuid, entity_uuid.as_str()]),
        );
        assert_eq!(e["dedup_key"], dedup.as_str());
        assert_eq!(e["event_type"], "sales.closed");
        assert_eq!(e["tenant"], "s3_bistrot_milano");
        assert_eq!(e["occurred_at"], "2025-05-12T13:58:45.102Z");
        let payload = &e["payload"];
        assert_eq!(payload["entity"]["uuid"], entity_uuid.as_str());
        assert_eq!(payload["from_user"], "giulia.bianchi@example.com");
        assert_eq!(payload["notification_uuid"], uuid);
        assert!(payload.get("entities").is_none() && payload.get("nRetry").is_none());
        let claim = stack.item(&dedup).await.expect("claim");
        assert_eq!(s(&claim, "status"), "RECEIVED");
        assert_eq!(s(&claim, "event_type"), "sales.closed");
    }
    assert!(messages.iter().all(
        |m| m.message_attributes["event_type"].string_value.as_deref() == Some("sales.closed")
    ));
}

#[tokio::test]
async fn an_80_entity_import_queues_80_messages_and_its_retry_none() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &[]).await;
    let first = send(&r, &unsigned(IMPORT)).await;
    assert_eq!(first.status(), 200);
    assert_eq!(
        body_json(&first),
        json!({"status": "accepted", "events": 80, "queued": 80, "duplicates": 0})
    );
    assert_eq!(stack.processor_has_taken_the_queue().await, 80);
    let envelopes = drained(&stack).await;
    assert_eq!(envelopes.len(), 80);
    assert_eq!(dedup_keys(&envelopes).len(), 80);
    assert!(envelopes
        .iter()
        .all(|e| e["event_type"] == "customers.created"));

    // Tilby's retry: same notification, nRetry incremented, so the body (and its hash) differ.
    let retry = with_n_retry(IMPORT, 1);
    assert_ne!(retry, IMPORT);
    let again = send(&r, &unsigned(&retry)).await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        body_json(&again),
        json!({"status": "duplicate", "events": 80, "queued": 0, "duplicates": 80})
    );
    assert!(stack.drain().await.is_empty());
    assert_eq!(
        stack.item_count().await,
        160,
        "80 claims, 80 processor records"
    );
}

#[tokio::test]
async fn a_wrong_or_missing_url_token_gets_401() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &[]).await;
    let cases = [
        (
            "wrong token",
            post("/tilby/tilby-dev-token-0002", SALES_CLOSED),
        ),
        (
            "truncated",
            post("/tilby/tilby-dev-token-000", SALES_CLOSED),
        ),
        ("no token", post("/tilby", SALES_CLOSED)),
        ("root", post("/", SALES_CLOSED)),
        (
            "token in the query",
            Sent {
                query: Some(format!("token={URL_TOKEN}")),
                ..post("/tilby", SALES_CLOSED)
            },
        ),
        (
            "token in a header",
            post("/tilby", SALES_CLOSED).header("authorization", URL_TOKEN),
        ),
    ];
    for (name, sent) in cases {
        let response = send(&r, &sent).await;
        assert_unauthorized(&response, name);
    }
    stack.assert_no_trace().await;
}

#[tokio::test]
async fn the_hmac_is_required_when_a_static_token_is_configured() {
    let stack = Stack::new().await;
    let discovering = receiver(&stack, &[(tilby::SIGNING_TOKEN_VAR, STATIC_TOKEN)]).await;
    let body = notification("n-hmac-1", 1, 0);
    let refused = [
        ("missing", unsigned(&body)),
        (
            "wrong key",
            signed(&body, "x-tilby-signature", "another-shop-token"),
        ),
        (
            "tampered body",
            post(
                &format!("/tilby/{URL_TOKEN}"),
                &body.replace("Tavolo", "Tavola"),
            )
            .header(
                "x-tilby-signature",
                tilby::sign(&Secret::new(STATIC_TOKEN).unwrap(), body.as_bytes()),
            ),
        ),
        (
            "right signature, wrong URL token",
            post("/tilby/nope", &body).header(
                "x-tilby-signature",
                tilby::sign(&Secret::new(STATIC_TOKEN).unwrap(), body.as_bytes()),
            ),
        ),
    ];
    for (name, sent) in refused {
        assert_eq!(send(&discovering, &sent).await.status(), 401, "{name}");
    }
    assert_eq!(stack.item_count().await, 0);
    // Unpinned, any header carrying a valid signature passes.
    let discovered = signed(&body, "X-Webhook-Hmac", STATIC_TOKEN);
    assert_eq!(send(&discovering, &discovered).await.status(), 200);

    let pinned = receiver(
        &stack,
        &[
            (tilby::SIGNING_TOKEN_VAR, STATIC_TOKEN),
            (tilby::SIGNATURE_HEADER_VAR, "X-Tilby-Signature"),
        ],
    )
    .await;
    let body2 = notification("n-hmac-2", 1, 0);
    assert_eq!(
        send(&pinned, &signed(&body2, "X-Webhook-Hmac", STATIC_TOKEN))
            .await
            .status(),
        401
    );
    assert_eq!(
        send(&pinned, &signed(&body2, "x-tilby-signature", STATIC_TOKEN))
            .await
            .status(),
        200
    );
    // The simulator signs the way the receiver expects, pinned or not.
    let local = stack.env(&[
        (tilby::URL_TOKEN_VAR, URL_TOKEN),
        (tilby::SIGNING_TOKEN_VAR, STATIC_TOKEN),
    ]);
    let simulated = shared::providers::simulate(
        "tilby",
        ITEMS_UPDATED.as_bytes(),
        &local,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert_eq!(send(&discovering, &simulated).await.status(), 200);
    assert_eq!(stack.drain().await.len(), 3);
}

#[tokio::test]
async fn a_shop_outside_the_allowed_environments_gets_401() {
    let stack = Stack::new().await;
    let r = receiver(
        &stack,
        &[(
            tilby::ENVIRONMENT_IDS_VAR,
            "s3_bistrot_milano,s3_trattoria_roma",
        )],
    )
    .await;
    let other = SALES_CLOSED.replace("s3_bistrot_milano", "s3_someone_else");
    assert_eq!(send(&r, &unsigned(&other)).await.status(), 401);
    let other_handshake = SUBSCRIBED.replace("s3_bistrot_milano", "s3_someone_else");
    assert_eq!(send(&r, &unsigned(&other_handshake)).await.status(), 401);
    let unnamed = r#"{"type":"UPDATED","entity_name":"items","notification_uuid":"n-x","entities":[{"id":1}]}"#;
    assert_eq!(send(&r, &unsigned(unnamed)).await.status(), 401);
    assert_eq!(stack.item_count().await, 0);
    assert_eq!(send(&r, &unsigned(SALES_CLOSED)).await.status(), 200);
    assert_eq!(send(&r, &unsigned(SUBSCRIBED)).await.status(), 200);
    assert_eq!(stack.drain().await.len(), 1);
}

#[tokio::test]
async fn names_missing_from_the_body_come_from_the_path_and_type_case_is_ignored() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &[]).await;
    let bare = r#"{"notification_uuid":"n-path","environment_id":"s3_bistrot_milano","time":"2025-05-12T10:00:00Z","entities":[{"id":311}],"nRetry":0}"#;
    let via_path = post(&format!("/tilby/{URL_TOKEN}/items/UPDATED"), bare);
    assert_eq!(send(&r, &via_path).await.status(), 200);
    let lower = ITEMS_UPDATED.replace("\"UPDATED\"", "\"updated\"");
    assert_eq!(send(&r, &unsigned(&lower)).await.status(), 200);
    let envelopes = drained(&stack).await;
    assert_eq!(envelopes.len(), 2);
    assert!(envelopes.iter().all(|e| e["event_type"] == "items.updated"));
    let path_key = shared::pipeline::dedup_key(
        "tilby",
        Some("s3_bistrot_milano"),
        &EventKey::parts(["n-path", "311"]),
    );
    assert!(envelopes
        .iter()
        .any(|e| e["dedup_key"] == path_key.as_str()));
}

/// The real queue, except that the messages at `failing` positions of each send fail.
struct FailingAt {
    queue: SqsQueue,
    failing: HashSet<usize>,
}

#[async_trait]
impl EventQueue for FailingAt {
    async fn send(&self, messages: &[Message]) -> Vec<Result<String, QueueError>> {
        let passing: Vec<Message> = messages
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.failing.contains(i))
            .map(|(_, m)| m.clone())
            .collect();
        let mut sent = self.queue.send(&passing).await.into_iter();
        (0..messages.len())
            .map(|i| {
                if self.failing.contains(&i) {
                    Err(QueueError("injected entry failure".into()))
                } else {
                    sent.next()
                        .unwrap_or_else(|| Err(QueueError("no result".into())))
                }
            })
            .collect()
    }
}

#[tokio::test]
async fn a_partially_failed_batch_answers_503_and_its_retry_queues_only_the_rest() {
    let stack = Stack::new().await;
    let settings = Settings::from_env(&stack.env(&[])).unwrap();
    let failing: HashSet<usize> = [0, 9, 10, 24].into_iter().collect();
    let flaky = Receiver::new(
        Tilby::from_env(&stack.env(&[(tilby::URL_TOKEN_VAR, URL_TOKEN)])).unwrap(),
        Arc::new(DynamoClaims::new(stack.ddb.clone(), &stack.table)),
        Arc::new(FailingAt {
            queue: SqsQueue::new(stack.sqs.clone(), &stack.queue_url),
            failing: failing.clone(),
        }),
        settings,
        Arc::new(SystemClock),
    );
    let uuid = "0e1f2a3b-0000-4e6f-8a7b-partialbatch";
    let body = notification(uuid, 25, 0);
    let response = send(&flaky, &unsigned(&body)).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let first = drained(&stack).await;
    assert_eq!(first.len(), 21);
    for i in 0..25 {
        let entity = format!("00000000-0000-4000-8000-{i:012}");
        let key = shared::pipeline::dedup_key(
            "tilby",
            Some("s3_bistrot_milano"),
            &EventKey::parts([uuid, entity.as_str()]),
        );
        let claim = stack.item(&key).await;
        if failing.contains(&i) {
            assert!(claim.is_none(), "claim {i} released");
        } else {
            // Queued: its claim stays RECEIVED, and a retry asks the processor's record.
            assert_eq!(s(&claim.expect("claim kept"), "status"), "RECEIVED");
        }
    }

    // Tilby retries (nRetry 1, 15 minutes later) and the queue works again; by then the
    // processor has taken the 21 queued entities, so only the other 4 are queued.
    assert_eq!(stack.processor_has_taken_the_queue().await, 21);
    let r = receiver(&stack, &[]).await;
    let retry = send(&r, &unsigned(&with_n_retry(&body, 1))).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(
        body_json(&retry),
        json!({"status": "accepted", "events": 25, "queued": 4, "duplicates": 21})
    );
    let second = drained(&stack).await;
    assert_eq!(second.len(), 4);
    let mut all = first.clone();
    all.extend(second);
    assert_eq!(all.len(), 25);
    assert_eq!(dedup_keys(&all).len(), 25, "no entity queued twice");
    let mut per_entity: HashMap<String, usize> = HashMap::new();
    for e in &all {
        *per_entity
            .entry(e["payload"]["entity"]["uuid"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(per_entity.values().all(|n| *n == 1) && per_entity.len() == 25);
}

#[tokio::test]
async fn tilby_messages_reach_the_tilby_handler() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &[]).await;
    for sample in [SALES_CLOSED, ITEMS_UPDATED, IMPORT] {
        assert_eq!(send(&r, &unsigned(sample)).await.status(), 200);
    }
    let messages = stack.drain().await;
    assert_eq!(messages.len(), 82);
    let processor = stack.processor(Router::default().provider(
        tilby::NAME,
        Arc::new(event_processor::handlers::tilby::TilbyHandler),
    ));
    for chunk in messages.chunks(10) {
        let response = processor.process(sqs_event(chunk.to_vec())).await;
        assert!(
            response.batch_item_failures.is_empty(),
            "{:?}",
            response.batch_item_failures
        );
    }
    // 82 receiver claims, 82 processed claims.
    assert_eq!(stack.item_count().await, 164);
}

//! A fault at every AWS call of the receiver — claim (PutItem), send (SendMessage, and each
//! entry of SendMessageBatch), finish (UpdateItem), release (DeleteItem), Secrets Manager at cold
//! start — each as an error, a throttle and a hang, injected between the real SDK and moto. Each
//! test states the answer, the claim's state, the messages on the queue, and what the provider's
//! retry then does. Time is a fixed clock the tests move past leases; the deadline is real.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use shared::apigw::Sent;
use shared::clock::FixedClock;
use shared::providers::{tilby, trybe};
use shared::secret::Secret;
use shared::Receiver;

use crate::faults::{Fault, Proxy};
use crate::helpers::*;

const SECRET: &str = "trybe-faults-secret-01";
const SITE: &str = "site-faults";
const DEADLINE_MS: i64 = 1500;
/// Past the receiver's lease (twice the deadline).
const PAST_LEASE_MS: i64 = 2 * DEADLINE_MS + 1;

struct Rig {
    stack: Stack,
    proxy: Proxy,
    clock: Arc<FixedClock>,
    trybe: Receiver<trybe::Trybe>,
}

async fn rig() -> Rig {
    rig_with_deadline(DEADLINE_MS).await
}

async fn rig_with_deadline(deadline_ms: i64) -> Rig {
    let stack = Stack::new().await;
    let (proxy, endpoint) = Proxy::start(moto_endpoint()).await;
    let clock = Arc::new(FixedClock::at_millis(
        (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64,
    ));
    let env = stack.env(&[
        (trybe::SECRET_VAR, SECRET),
        ("REQUEST_DEADLINE_MS", &deadline_ms.to_string()),
    ]);
    let trybe =
        shared::runtime::receiver_from_env(env, &sdk_at(&endpoint).await, trybe::Trybe::from_env)
            .await
            .with_clock(clock.clone());
    Rig {
        stack,
        proxy,
        clock,
        trybe,
    }
}

fn event(id: &str) -> Sent {
    let body =
        json!({"id": id, "event": "booking.created", "site_id": SITE, "data": {}}).to_string();
    Sent::post("/trybe", body.clone()).header(
        "Signature",
        trybe::sign(&Secret::new(SECRET).unwrap(), body.as_bytes()),
    )
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Rig {
    async fn post(&self, id: &str) -> (u16, Value) {
        let response = tokio::time::timeout(Duration::from_secs(30), send(&self.trybe, &event(id)))
            .await
            .expect("answered within the deadline, not hung");
        (response.status().as_u16(), body_json(&response))
    }

    async fn claim_status(&self, id: &str) -> Option<String> {
        self.stack
            .item(&key("trybe", Some(SITE), id))
            .await
            .map(|item| s(&item, "status"))
    }

    async fn queued(&self) -> usize {
        self.stack.drain().await.len()
    }
}

/// What the receiver asked of AWS, in order, by operation name.
fn calls(proxy: &Proxy) -> Vec<String> {
    proxy
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|op| op.rsplit('.').next().unwrap_or(op).to_owned())
        .collect()
}

#[tokio::test]
async fn an_accepted_event_costs_two_round_trips_a_claim_and_a_send() {
    let rig = rig().await;
    let id = new_id();
    assert_eq!(rig.post(&id).await.0, 200);
    assert_eq!(calls(&rig.proxy), ["PutItem", "SendMessage"]);
    assert_eq!(rig.claim_status(&id).await.as_deref(), Some("RECEIVED"));

    // A retry while the lease lives and the processor has no record yet: the claim (refused)
    // and one read of the processor's record; 503, nothing sent.
    rig.proxy.seen.lock().unwrap().clear();
    assert_eq!(rig.post(&id).await.0, 503);
    assert_eq!(calls(&rig.proxy), ["PutItem", "GetItem"]);
    assert_eq!(rig.queued().await, 1, "the first delivery's message only");
}

#[tokio::test]
async fn a_tilby_import_sends_in_batches_and_marks_nothing() {
    let stack = Stack::new().await;
    let (proxy, endpoint) = Proxy::start(moto_endpoint()).await;
    let env = stack.env(&[(tilby::URL_TOKEN_VAR, "tilby-faults-token-01")]);
    let receiver =
        shared::runtime::receiver_from_env(env, &sdk_at(&endpoint).await, tilby::Tilby::from_env)
            .await;
    let entities: Vec<Value> = (0..80)
        .map(|i| json!({"uuid": format!("00000000-0000-4000-8000-{i:012}")}))
        .collect();
    let body = json!({"type": "CREATED", "entity_name": "customers", "notification_uuid": "n-80",
        "environment_id": "shop-1", "entities": entities, "nRetry": 0})
    .to_string();
    let sent = Sent::post("/tilby/tilby-faults-token-01", body);
    let response = send(&receiver, &sent).await;
    assert_eq!(response.status(), 200, "{:?}", body_json(&response));
    let calls = calls(&proxy);
    let count = |op: &str| calls.iter().filter(|c| c.as_str() == op).count();
    assert_eq!(
        (count("PutItem"), count("SendMessageBatch"), calls.len()),
        (80, 8, 88),
        "{calls:?}"
    );
    assert_eq!(stack.drain().await.len(), 80);
}

/// The three ways a call can fail.
fn faults(dynamodb: bool) -> [(&'static str, Fault); 3] {
    [
        ("error", Fault::INTERNAL),
        (
            "throttle",
            if dynamodb {
                Fault::DYNAMO_THROTTLE
            } else {
                Fault::THROTTLE
            },
        ),
        ("hang", Fault::Hang),
    ]
}

#[tokio::test]
async fn a_failed_claim_answers_503_stores_and_queues_nothing_and_the_retry_queues_once() {
    for (kind, fault) in faults(true) {
        let rig = rig().await;
        rig.proxy.inject("PutItem", fault);
        let id = new_id();
        assert_eq!(rig.post(&id).await.0, 503, "{kind}");
        assert_eq!(rig.claim_status(&id).await, None, "{kind}");
        assert_eq!(rig.queued().await, 0, "{kind}");
        assert_eq!(rig.proxy.count("SendMessage"), 0, "{kind}: nothing sent");
        rig.proxy.clear();
        assert_eq!(
            rig.post(&id).await,
            (200, json!({"status": "accepted", "event_id": id}))
        );
        assert_eq!(rig.queued().await, 1, "{kind}");
    }
}

#[tokio::test]
async fn a_failed_send_answers_503_releases_the_claim_and_the_retry_queues_once() {
    for (kind, fault) in faults(false) {
        let rig = rig().await;
        rig.proxy.inject("SendMessage", fault);
        let id = new_id();
        assert_eq!(rig.post(&id).await.0, 503, "{kind}");
        assert_eq!(rig.claim_status(&id).await, None, "{kind}: released");
        assert_eq!(rig.queued().await, 0, "{kind}");
        rig.proxy.clear();
        assert_eq!(rig.post(&id).await.1["status"], "accepted", "{kind}");
        assert_eq!(rig.queued().await, 1, "{kind}");
        assert_eq!(rig.claim_status(&id).await.as_deref(), Some("RECEIVED"));
    }
}

#[tokio::test]
async fn a_single_throttle_is_absorbed_by_the_sdks_retry() {
    // The production deadline: room for the SDK's backoff after a throttle.
    let rig = rig_with_deadline(5_000).await;
    rig.proxy.inject_times("PutItem", Fault::DYNAMO_THROTTLE, 1);
    rig.proxy.inject_times("SendMessage", Fault::THROTTLE, 1);
    let id = new_id();
    assert_eq!(rig.post(&id).await.0, 200);
    assert_eq!(rig.queued().await, 1);
    assert_eq!(
        rig.proxy.count("PutItem"),
        2,
        "one throttled attempt, one retry"
    );
}

#[tokio::test]
async fn a_failed_finish_still_answers_200_and_a_retry_after_the_lease_is_absorbed_downstream() {
    for (kind, fault) in faults(true) {
        let rig = rig().await;
        rig.proxy.inject("UpdateItem", fault);
        let id = new_id();
        // The message is durable: 200, the claim stays RECEIVED under its lease.
        assert_eq!(rig.post(&id).await.0, 200, "{kind}");
        assert_eq!(
            rig.claim_status(&id).await.as_deref(),
            Some("RECEIVED"),
            "{kind}"
        );
        let first = rig.stack.drain().await;
        assert_eq!(first.len(), 1, "{kind}");
        // A retry while the lease lives: 503 with the time left, nothing sent.
        rig.proxy.clear();
        let (status, _) = rig.post(&id).await;
        assert_eq!(status, 503, "{kind}");
        assert_eq!(rig.queued().await, 0, "{kind}");
        // After the lease: taken over and queued again; the processor's claim runs the
        // handler once for both copies.
        rig.clock.advance_millis(PAST_LEASE_MS);
        assert_eq!(rig.post(&id).await.1["status"], "accepted", "{kind}");
        let second = rig.stack.drain().await;
        assert_eq!(second.len(), 1, "{kind}");
        let counting = Arc::new(crate::processor::Counting::default());
        let processor = rig
            .stack
            .processor(shared::consumer::Router::new(counting.clone()));
        for copy in [first, second] {
            let response = processor.process(sqs_event(copy)).await;
            assert!(response.batch_item_failures.is_empty(), "{kind}");
        }
        assert_eq!(counting.runs(), 1, "{kind}: one handler run for two copies");
    }
}

#[tokio::test]
async fn a_failed_release_leaves_the_claim_to_its_lease_and_the_retry_after_it_queues_once() {
    for (kind, fault) in faults(true) {
        let rig = rig().await;
        rig.proxy.inject("SendMessage", Fault::INTERNAL);
        rig.proxy.inject("DeleteItem", fault);
        let id = new_id();
        assert_eq!(rig.post(&id).await.0, 503, "{kind}");
        assert_eq!(
            rig.claim_status(&id).await.as_deref(),
            Some("RECEIVED"),
            "{kind}"
        );
        rig.proxy.clear();
        assert_eq!(
            rig.post(&id).await.0,
            503,
            "{kind}: in flight until the lease ends"
        );
        rig.clock.advance_millis(PAST_LEASE_MS);
        assert_eq!(rig.post(&id).await.1["status"], "accepted", "{kind}");
        assert_eq!(rig.queued().await, 1, "{kind}: queued once in all");
    }
}

#[tokio::test]
async fn failed_batch_entries_answer_503_and_the_retry_queues_exactly_the_missing_ones() {
    let stack = Stack::new().await;
    let (proxy, endpoint) = Proxy::start(moto_endpoint()).await;
    let env = stack.env(&[(tilby::URL_TOKEN_VAR, "tilby-faults-token-01")]);
    let tilby =
        shared::runtime::receiver_from_env(env, &sdk_at(&endpoint).await, tilby::Tilby::from_env)
            .await;
    let notification = |n_retry: u64| {
        let entities: Vec<Value> = (0..25)
            .map(|i| json!({"uuid": format!("entity-{i}"), "note": if i % 9 == 4 { "fail-me" } else { "ok" }}))
            .collect();
        Sent::post(
            "/tilby/tilby-faults-token-01",
            json!({"type": "UPDATED", "entity_name": "items", "notification_uuid": "n-batch",
                "environment_id": "shop-1", "entities": entities, "nRetry": n_retry})
            .to_string(),
        )
    };
    // SQS reports three entries failed (4, 13, 22) in a call that otherwise succeeds.
    proxy.inject("SendMessageBatch", Fault::FailEntries("fail-me"));
    assert_eq!(send(&tilby, &notification(0)).await.status(), 503);
    let first: Vec<Value> = stack.drain().await.iter().map(envelope).collect();
    assert_eq!(first.len(), 22);
    let failed_key = |i: usize| {
        shared::pipeline::dedup_key(
            "tilby",
            Some("shop-1"),
            &shared::provider::EventKey::parts(["n-batch".to_owned(), format!("entity-{i}")]),
        )
    };
    for i in [4, 13, 22] {
        assert!(
            stack.item(&failed_key(i)).await.is_none(),
            "entity {i} released"
        );
    }
    // The queued entries keep their RECEIVED claims: a retry asks the processor's record.
    assert_eq!(
        s(&stack.item(&failed_key(0)).await.unwrap(), "status"),
        "RECEIVED"
    );
    // Tilby retries with nRetry + 1 (15 minutes later); the processor has taken the 22 queued
    // entities by then, so only the three missing ones are queued.
    proxy.clear();
    assert_eq!(stack.processor_has_taken_the_queue().await, 22);
    let retry = send(&tilby, &notification(1)).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(body_json(&retry)["queued"], 3);
    let second: Vec<Value> = stack.drain().await.iter().map(envelope).collect();
    let mut ids: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 25, "every entity queued exactly once");

    // A whole batch call failing: every claim of the request is given back.
    proxy.inject("SendMessageBatch", Fault::INTERNAL);
    let other = Sent::post(
        "/tilby/tilby-faults-token-01",
        json!({"type": "UPDATED", "entity_name": "items", "notification_uuid": "n-other",
            "environment_id": "shop-1", "entities": [{"uuid": "a"}, {"uuid": "b"}]})
        .to_string(),
    );
    assert_eq!(send(&tilby, &other).await.status(), 503);
    assert!(stack.drain().await.is_empty());
    assert_eq!(
        stack.item_count().await,
        25 + 22,
        "only the first notification's claims, and the processor's records of what it took"
    );
}

#[tokio::test]
async fn an_unreadable_secret_fails_the_cold_start_and_the_next_init_recovers() {
    let stack = Stack::new().await;
    let sm = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    let arn = sm
        .create_secret()
        .name(format!("trybe-{}", new_id()))
        .secret_string(SECRET)
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    let (proxy, endpoint) = Proxy::start(moto_endpoint()).await;
    let sdk = sdk_at(&endpoint).await;
    let env = || stack.env(&[("TRYBE_SIGNING_SECRET_SECRET_ARN", arn.as_str())]);
    for (kind, fault) in faults(false) {
        proxy.clear();
        proxy.inject("GetSecretValue", fault);
        let init = tokio::time::timeout(
            Duration::from_secs(30),
            shared::runtime::try_receiver_from_env(env(), &sdk, trybe::Trybe::from_env),
        )
        .await
        .expect("init gives up (the SDK's operation timeout), it does not hang");
        assert!(
            matches!(init, Err(shared::ConfigError::SecretUnreadable { .. })),
            "{kind}: the init fails, so Lambda runs it again"
        );
    }
    proxy.clear();
    let receiver = shared::runtime::try_receiver_from_env(env(), &sdk, trybe::Trybe::from_env)
        .await
        .expect("the next init reads the secret");
    assert_eq!(send(&receiver, &event(&new_id())).await.status(), 200);
}

#[tokio::test]
async fn when_one_claim_of_a_batch_fails_the_others_are_given_back_and_nothing_is_sent() {
    let stack = Stack::new().await;
    let (proxy, endpoint) = Proxy::start(moto_endpoint()).await;
    let env = stack.env(&[(tilby::URL_TOKEN_VAR, "tilby-faults-token-01")]);
    let tilby =
        shared::runtime::receiver_from_env(env, &sdk_at(&endpoint).await, tilby::Tilby::from_env)
            .await;
    proxy.inject_matching("PutItem", "entity-failing", Fault::INTERNAL);
    let entities: Vec<Value> = ["entity-a", "entity-b", "entity-failing", "entity-c"]
        .iter()
        .map(|u| json!({ "uuid": u }))
        .collect();
    let sent = Sent::post(
        "/tilby/tilby-faults-token-01",
        json!({"type": "UPDATED", "entity_name": "items", "notification_uuid": "n-claims",
            "environment_id": "shop-1", "entities": entities, "nRetry": 0})
        .to_string(),
    );
    assert_eq!(send(&tilby, &sent).await.status(), 503);
    assert_eq!(
        proxy.count("SendMessageBatch") + proxy.count("SendMessage"),
        0
    );
    assert_eq!(
        stack.item_count().await,
        0,
        "the three claims taken were given back"
    );
    proxy.clear();
    assert_eq!(send(&tilby, &sent).await.status(), 200);
    assert_eq!(stack.drain().await.len(), 4);
}

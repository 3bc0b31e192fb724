//! The metrics the functions emit (CloudWatch embedded metric format), captured.
//!
//! Real function binaries run under the emulated Runtime API (`lambda_host`) against moto, their
//! AWS calls through the fault proxy; their stdout is read line by line. Each invocation leaves
//! its EMF documents on stdout before its answer (tagged with the invocation's `RequestId`), and
//! the tests check them as CloudWatch would read them: namespace, dimension sets, metric names,
//! units and values, and that no secret, tenant, event id or payload text is in any of them.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsMessage;
use serde_json::{json, Value};
use shared::apigw::Sent;
use shared::providers::trybe;
use shared::secret::Secret;
use shared::store::{Claim, ClaimStore, DynamoClaims, Status};

use crate::faults::{Fault, Proxy};
use crate::helpers::*;
use crate::lambda_host::{Function, RuntimeApi};

const ANSWER: Duration = Duration::from_secs(30);

/// A receiver's Lambda event and the text that must never reach a metric document.
const TRYBE_SECRET: &str = "trybe-metrics-secret-0042";
const TRYBE_SITE: &str = "site-metrics-tenant-7f3a";
const PAYLOAD_EMAIL: &str = "metrics.person@example.com";

/// Every complete line the function wrote to stdout.
fn lines(f: &Function) -> Vec<String> {
    let logs = f.logs.lock().unwrap().clone();
    let mut lines: Vec<String> = logs.split('\n').map(str::to_owned).collect();
    lines.pop(); // the part after the last newline: empty, or a line still being written
    lines
}

/// The EMF documents written for invocation `request_id`, once `expected` of them are there (and
/// a moment later, so that one too many is seen too).
async fn documents(f: &Function, request_id: &str, expected: usize) -> Vec<Value> {
    let of_this = || -> Vec<Value> {
        lines(f)
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("_aws").is_some() && v["RequestId"] == request_id)
            .collect()
    };
    for _ in 0..200 {
        if of_this().len() >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    of_this()
}

/// One document, in the terms the dashboard uses.
#[derive(Debug)]
struct Doc {
    namespace: String,
    dimensions: Vec<Vec<String>>,
    /// name → unit
    units: BTreeMap<String, String>,
    raw: Value,
}

impl Doc {
    fn read(raw: &Value) -> Doc {
        let aws = &raw["_aws"];
        let stamp = aws["Timestamp"].as_i64().expect("Timestamp in epoch ms");
        let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        assert!((now - stamp).abs() < 120_000, "a current timestamp: {raw}");
        let sets = aws["CloudWatchMetrics"]
            .as_array()
            .expect("CloudWatchMetrics");
        assert_eq!(sets.len(), 1, "one metric directive: {raw}");
        let set = &sets[0];
        let dimensions: Vec<Vec<String>> =
            serde_json::from_value(set["Dimensions"].clone()).expect("Dimensions");
        let units = set["Metrics"]
            .as_array()
            .expect("Metrics")
            .iter()
            .map(|m| {
                (
                    m["Name"].as_str().unwrap().to_owned(),
                    m["Unit"]
                        .as_str()
                        .expect("every metric has a unit")
                        .to_owned(),
                )
            })
            .collect();
        let doc = Doc {
            namespace: set["Namespace"].as_str().unwrap().to_owned(),
            dimensions,
            units,
            raw: raw.clone(),
        };
        // Nothing at the top level but the directive, the dimensions' values, the metrics'
        // values and the request id: no tenant, event id or payload field can hide here.
        for key in raw.as_object().unwrap().keys() {
            let expected = key == "_aws"
                || key == "RequestId"
                || doc.dimensions.iter().flatten().any(|d| d == key)
                || doc.units.contains_key(key);
            assert!(expected, "unexpected member {key}: {raw}");
        }
        doc
    }

    fn count(&self, name: &str) -> u64 {
        assert_eq!(self.units[name], "Count", "{name}");
        self.raw[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} is a count: {}", self.raw))
    }

    /// A duration's values, each a number of milliseconds.
    fn millis(&self, name: &str) -> Vec<f64> {
        assert_eq!(self.units[name], "Milliseconds", "{name}");
        let values: Vec<f64> = self.raw[name]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is a list of values: {}", self.raw))
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert!(values.iter().all(|v| *v >= 0.0), "{name}: {values:?}");
        values
    }

    fn names(&self) -> Vec<&str> {
        self.units.keys().map(String::as_str).collect()
    }
}

/// The invocation's documents: the one under `[["Provider"]]` and, if any, the one under
/// `[["Provider","Reason"]]`; checks the namespace and the provider of both.
async fn invocation(
    f: &Function,
    id: &str,
    namespace: &str,
    provider: &str,
    expected: usize,
) -> (Option<Doc>, Option<Doc>) {
    let docs: Vec<Doc> = documents(f, id, expected)
        .await
        .iter()
        .map(Doc::read)
        .collect();
    assert_eq!(docs.len(), expected, "documents of {id}: {docs:#?}");
    let (mut plain, mut by_reason) = (None, None);
    for doc in docs {
        assert_eq!(doc.namespace, namespace);
        assert_eq!(doc.raw["Provider"], provider, "{:?}", doc.raw);
        if doc.dimensions == [vec!["Provider".to_owned()]] {
            assert!(plain.is_none(), "one document per dimension set");
            plain = Some(doc);
        } else {
            assert_eq!(
                doc.dimensions,
                [vec!["Provider".to_owned(), "Reason".to_owned()]],
                "{:?}",
                doc.raw
            );
            assert!(by_reason.is_none(), "one document per dimension set");
            by_reason = Some(doc);
        }
    }
    (plain, by_reason)
}

/// Delivers `event`; returns the request id and the HTTP status.
async fn deliver(api: &RuntimeApi, event: Value) -> (String, u64) {
    let id = api.invoke(event);
    let answer = api
        .answer(&id, ANSWER)
        .await
        .expect("the function answered");
    (id, answer["statusCode"].as_u64().expect("an HTTP answer"))
}

fn trybe_body(id: &str) -> String {
    json!({"id": id, "event": "customer.created", "site_id": TRYBE_SITE,
        "data": {"id": "c-1", "email": PAYLOAD_EMAIL}})
    .to_string()
}

fn trybe_event(body: &str, secret: &str, content_type: &str) -> Value {
    Sent::post("/trybe", body.to_owned())
        .header("content-type", content_type)
        .header(
            "Signature",
            trybe::sign(&Secret::new(secret).unwrap(), body.as_bytes()),
        )
        .to_event_json()
}

/// Every stdout line is one whole JSON object: a log line or an EMF document, never a mix.
fn assert_whole_lines(f: &Function) {
    let lines = lines(f);
    assert!(!lines.is_empty());
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(
            v.get("_aws").is_some() || v.get("level").is_some(),
            "neither a log line nor a metric document: {line}"
        );
    }
}

/// No document of `f` holds any of `forbidden`.
fn assert_nothing_leaks(f: &Function, forbidden: &[&str]) {
    let emf: Vec<String> = lines(f)
        .into_iter()
        .filter(|l| l.contains("\"_aws\""))
        .collect();
    assert!(!emf.is_empty());
    for text in forbidden {
        assert!(
            !emf.iter().any(|l| l.contains(text)),
            "{text} in a metric document"
        );
    }
}

#[tokio::test]
async fn a_receiver_emits_one_document_per_dimension_set_for_each_outcome() {
    let stack = Stack::new().await;
    let (proxy, endpoint) = Proxy::start(moto_endpoint()).await;
    let namespace = "WebhookIntakeTest/metrics";
    let secret_map = format!(r#"{{"{TRYBE_SITE}":"{TRYBE_SECRET}"}}"#);
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("EVENTS_TABLE", stack.table.as_str()),
        ("EVENTS_QUEUE_URL", stack.queue_url.as_str()),
        ("TRYBE_SIGNING_SECRET", secret_map.as_str()),
        ("REQUEST_DEADLINE_MS", "2000"),
        ("METRICS_NAMESPACE", namespace),
    ];
    let api = RuntimeApi::start().await;
    let f = Function::start("trybe-webhook", &api, &env);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let event_id = |n: &str| format!("evt-{n}-{run}");
    let json = "application/json";

    // Accepted: one event claimed and queued; the claim's and the send's latencies.
    let accepted = event_id("accepted");
    let (id, status) = deliver(
        &api,
        trybe_event(&trybe_body(&accepted), TRYBE_SECRET, json),
    )
    .await;
    assert_eq!(status, 200);
    let (doc, by_reason) = invocation(&f, &id, namespace, "trybe", 1).await;
    let doc = doc.expect("a document under Provider");
    assert!(by_reason.is_none());
    assert_eq!(doc.names(), ["Accepted", "ClaimLatency", "SendLatency"]);
    assert_eq!(doc.count("Accepted"), 1);
    assert_eq!(doc.millis("ClaimLatency").len(), 1);
    assert_eq!(doc.millis("SendLatency").len(), 1);

    // The same event again, once the processor has it: a duplicate, claimed (refused) but not
    // sent.
    stack.processor_has_taken_the_queue().await;
    let (id, status) = deliver(
        &api,
        trybe_event(&trybe_body(&accepted), TRYBE_SECRET, json),
    )
    .await;
    assert_eq!(status, 200);
    let doc = invocation(&f, &id, namespace, "trybe", 1).await.0.unwrap();
    assert_eq!(doc.names(), ["ClaimLatency", "Duplicate"]);
    assert_eq!(doc.count("Duplicate"), 1);

    // The same id with other content: acknowledged as a duplicate, and a conflict.
    let reused = json!({"id": accepted, "event": "customer.created", "site_id": TRYBE_SITE,
        "data": {"id": "c-2"}})
    .to_string();
    let (id, status) = deliver(&api, trybe_event(&reused, TRYBE_SECRET, json)).await;
    assert_eq!(status, 200);
    let doc = invocation(&f, &id, namespace, "trybe", 1).await.0.unwrap();
    assert_eq!(doc.names(), ["ClaimLatency", "Conflict", "Duplicate"]);
    assert_eq!(doc.count("Duplicate"), 1);
    assert_eq!(doc.count("Conflict"), 1);

    // Forged: 401.
    let forged = trybe_event(&trybe_body(&event_id("forged")), "not-the-secret-00", json);
    let (id, status) = deliver(&api, forged).await;
    assert_eq!(status, 401);
    let doc = invocation(&f, &id, namespace, "trybe", 1).await.0.unwrap();
    assert_eq!(doc.names(), ["Unauthorized"]);
    assert_eq!(doc.count("Unauthorized"), 1);

    // Malformed (400) and the wrong media type (415): both BadRequest.
    for (body, content_type, code) in [
        ("{not json", json, 400),
        (trybe_body(&event_id("text")).as_str(), "text/plain", 415),
    ] {
        let (id, status) = deliver(&api, trybe_event(body, TRYBE_SECRET, content_type)).await;
        assert_eq!(status, code);
        let doc = invocation(&f, &id, namespace, "trybe", 1).await.0.unwrap();
        assert_eq!(doc.names(), ["BadRequest"], "{code}");
        assert_eq!(doc.count("BadRequest"), 1, "{code}");
    }

    // Another delivery holds the event's claim: a conflict, answered 503 (in flight).
    let held = event_id("held");
    DynamoClaims::new(stack.ddb.clone(), &stack.table)
        .claim(&Claim {
            pk: key("trybe", Some(TRYBE_SITE), &held),
            pending: Status::Received,
            event_type: "customer.created".into(),
            fingerprint: "another-delivery".into(),
            now: time::OffsetDateTime::now_utc(),
            lease: Duration::from_secs(60),
            ttl: Duration::from_secs(3600),
            token: "another-delivery".into(),
        })
        .await
        .unwrap();
    let (id, status) = deliver(&api, trybe_event(&trybe_body(&held), TRYBE_SECRET, json)).await;
    assert_eq!(status, 503);
    let (doc, by_reason) = invocation(&f, &id, namespace, "trybe", 2).await;
    let (doc, by_reason) = (doc.unwrap(), by_reason.unwrap());
    assert_eq!(doc.names(), ["ClaimLatency", "Conflict"]);
    assert_eq!(doc.count("Conflict"), 1);
    assert_eq!(by_reason.names(), ["Unavailable"]);
    assert_eq!(by_reason.count("Unavailable"), 1);
    assert_eq!(by_reason.raw["Reason"], "in_flight");

    // SQS refuses the message (an error the SDK does not retry, so the deadline stays far):
    // 503 for the send; the claim's and the failed send's latencies are kept.
    proxy.inject(
        "SendMessage",
        Fault::Error {
            status: 400,
            kind: "InvalidMessageContents",
        },
    );
    let (id, status) = deliver(
        &api,
        trybe_event(&trybe_body(&event_id("unsent")), TRYBE_SECRET, json),
    )
    .await;
    proxy.clear();
    assert_eq!(status, 503);
    let (doc, by_reason) = invocation(&f, &id, namespace, "trybe", 2).await;
    let (doc, by_reason) = (doc.unwrap(), by_reason.unwrap());
    assert_eq!(doc.names(), ["ClaimLatency", "SendLatency"]);
    assert_eq!(by_reason.names(), ["Unavailable"]);
    assert_eq!(by_reason.count("Unavailable"), 1);
    assert_eq!(by_reason.raw["Reason"], "send");

    // DynamoDB hangs: 503 at the deadline, and no latency for a write that never answered.
    proxy.inject("PutItem", Fault::Hang);
    let (id, status) = deliver(
        &api,
        trybe_event(&trybe_body(&event_id("hung")), TRYBE_SECRET, json),
    )
    .await;
    proxy.clear();
    assert_eq!(status, 503);
    let (doc, by_reason) = invocation(&f, &id, namespace, "trybe", 1).await;
    assert!(doc.is_none(), "{doc:?}");
    let by_reason = by_reason.unwrap();
    assert_eq!(by_reason.names(), ["Unavailable"]);
    assert_eq!(by_reason.raw["Reason"], "deadline");

    assert_whole_lines(&f);
    assert_nothing_leaks(
        &f,
        &[
            TRYBE_SECRET,
            TRYBE_SITE,
            PAYLOAD_EMAIL,
            &run,
            "customer.created",
        ],
    );
}

#[tokio::test]
async fn a_tilby_import_counts_each_entity_and_a_handshake_counts_once() {
    const TOKEN: &str = "tilby-dev-token-0001";
    const SUBSCRIBED: &str = include_str!("../../../events/tilby/subscribed.json");
    const IMPORT: &str = include_str!("../../../events/tilby/customers.import-80.json");
    let stack = Stack::new().await;
    let env = [
        ("AWS_ENDPOINT_URL", moto_endpoint()),
        ("EVENTS_TABLE", stack.table.as_str()),
        ("EVENTS_QUEUE_URL", stack.queue_url.as_str()),
        ("TILBY_URL_TOKEN", TOKEN),
    ];
    let api = RuntimeApi::start().await;
    let f = Function::start("tilby-webhook", &api, &env);
    let tilby = |body: &str| {
        Sent::post(&format!("/tilby/{TOKEN}"), body.to_owned())
            .header("content-type", "application/json")
            .to_event_json()
    };
    // Without METRICS_NAMESPACE: the default.
    let namespace = "WebhookIntake";

    let (id, status) = deliver(&api, tilby(SUBSCRIBED)).await;
    assert_eq!(status, 200);
    let doc = invocation(&f, &id, namespace, "tilby", 1).await.0.unwrap();
    assert_eq!(doc.names(), ["Handshake"]);
    assert_eq!(doc.count("Handshake"), 1);

    let (id, status) = deliver(&api, tilby(IMPORT)).await;
    assert_eq!(status, 200);
    let doc = invocation(&f, &id, namespace, "tilby", 1).await.0.unwrap();
    assert_eq!(doc.names(), ["Accepted", "ClaimLatency", "SendLatency"]);
    assert_eq!(doc.count("Accepted"), 80);
    assert_eq!(
        doc.millis("ClaimLatency").len(),
        80,
        "one per conditional write"
    );
    assert_eq!(doc.millis("SendLatency").len(), 1, "one per request");

    // Tilby's retry (nRetry changed), once the processor has them: 80 duplicates.
    assert_eq!(stack.processor_has_taken_the_queue().await, 80);
    let mut retry: Value = serde_json::from_str(IMPORT).unwrap();
    retry["nRetry"] = json!(1);
    let (id, status) = deliver(&api, tilby(&retry.to_string())).await;
    assert_eq!(status, 200);
    let doc = invocation(&f, &id, namespace, "tilby", 1).await.0.unwrap();
    assert_eq!(doc.names(), ["ClaimLatency", "Duplicate"]);
    assert_eq!(doc.count("Duplicate"), 80);

    assert_whole_lines(&f);
    assert_nothing_leaks(
        &f,
        &[
            TOKEN,
            "s3_bistrot_milano",
            "0e1f2a3b-4c5d-4e6f-8a7b-9c0d1e2f3a4b",
            "88fb12a3-7e71-4416-82d7-3aa12399c5d7",
            "marco.verdi@example.com",
            "Valentina",
            "customers.created",
        ],
    );
}

/// An envelope as a receiver queues it, SQS having sent it `sent_ms_ago` ago.
fn record(id: &str, data: Value, sent_ms_ago: i64) -> SqsMessage {
    let body = json!({
        "provider": "trybe", "event_id": id, "event_type": "customer.created",
        "dedup_key": key("trybe", Some(TRYBE_SITE), id),
        "received_at": "2025-05-12T08:00:00Z", "tenant": TRYBE_SITE,
        "content_type": "application/json", "body_sha256": "0".repeat(64),
        "payload": {"id": id, "event": "customer.created", "site_id": TRYBE_SITE, "data": data},
    });
    let mut m = SqsMessage::default();
    m.message_id = Some(format!("m-{id}"));
    m.receipt_handle = Some(format!("r-{id}"));
    m.body = Some(body.to_string());
    let now = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
    m.attributes
        .insert("SentTimestamp".into(), (now - sent_ms_ago).to_string());
    m.attributes.insert(
        shared::trust::SENDER_ID.into(),
        shared::trust::LOCAL_SENDER_ID.into(),
    );
    m
}

#[tokio::test]
async fn the_processor_counts_each_record_under_its_provider() {
    let stack = Stack::new().await;
    let (proxy, endpoint) = Proxy::start(moto_endpoint()).await;
    let senders = crate::helpers::local_senders();
    let env = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("EVENTS_TABLE", stack.table.as_str()),
        ("EVENTS_QUEUE_URL", stack.queue_url.as_str()),
        ("DEAD_LETTER_QUEUE_URL", stack.dlq_url.as_str()),
        ("TRUSTED_SENDERS", senders.as_str()),
    ];
    let api = RuntimeApi::start().await;
    let f = Function::start("event-processor", &api, &env);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let customer = json!({"id": "c-1", "email": PAYLOAD_EMAIL});

    // An empty batch records nothing: no document.
    let empty = api.invoke(serde_json::to_value(sqs_event(Vec::new())).unwrap());
    let answer = api.answer(&empty, ANSWER).await.expect("answered");
    assert_eq!(answer["batchItemFailures"], json!([]));

    // Two processed; one whose claim write fails (retried by SQS: Failed); one whose payload the
    // Trybe handler refuses (Rejected); one unreadable (Rejected, provider unknown).
    let failing: &'static str = Box::leak(format!("evt-failing-{run}").into_boxed_str());
    proxy.inject_matching("PutItem", failing, Fault::INTERNAL);
    let mut poison = SqsMessage::default();
    poison.message_id = Some("m-poison".into());
    poison.body = Some(format!("{{not an envelope {PAYLOAD_EMAIL}"));
    poison.attributes.insert(
        "SentTimestamp".into(),
        ((time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64 - 9_000)
            .to_string(),
    );
    let batch = sqs_event(vec![
        record(&format!("evt-a-{run}"), customer.clone(), 5_000),
        record(&format!("evt-b-{run}"), customer.clone(), 5_000),
        record(failing, customer.clone(), 5_000),
        record(&format!("evt-refused-{run}"), json!("not an object"), 5_000),
        poison,
    ]);
    let id = api.invoke(serde_json::to_value(batch).unwrap());
    let answer = api.answer(&id, ANSWER).await.expect("answered");
    proxy.clear();
    let mut failed: Vec<&str> = answer["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap())
        .collect();
    failed.sort();
    // The rejected ones (refused by the handler, unreadable) went to the dead-letter queue.
    let mut expected = vec![format!("m-{failing}")];
    expected.sort();
    assert_eq!(failed, expected);

    let all: Vec<Doc> = documents(&f, &id, 3).await.iter().map(Doc::read).collect();
    assert_eq!(
        all.len(),
        3,
        "one document per provider, and one without a dimension: {all:#?}"
    );
    // The age of the record that failed, without a dimension (RetryHorizonAlarm's metric).
    let (plain, docs): (Vec<&Doc>, Vec<&Doc>) = all
        .iter()
        .partition(|d| d.dimensions == [Vec::<String>::new()]);
    assert_eq!(plain.len(), 1, "{all:#?}");
    assert_eq!(plain[0].namespace, "WebhookIntake");
    assert_eq!(plain[0].names(), ["FailingMessageAge"]);
    let failing_age = plain[0].millis("FailingMessageAge");
    assert_eq!(failing_age.len(), 1, "only the failed record's");
    assert!(
        (5_000.0..65_000.0).contains(&failing_age[0]),
        "{failing_age:?}"
    );
    let by_provider = |p: &str| {
        *docs
            .iter()
            .find(|d| d.raw["Provider"] == p)
            .unwrap_or_else(|| panic!("a document for {p}: {docs:#?}"))
    };
    for doc in &docs {
        assert_eq!(doc.namespace, "WebhookIntake");
        assert_eq!(doc.dimensions, [vec!["Provider".to_owned()]]);
    }
    let trybe = by_provider("trybe");
    assert_eq!(
        trybe.names(),
        [
            "Failed",
            "HandlerLatency",
            "MessageAge",
            "Processed",
            "Rejected"
        ]
    );
    assert_eq!(trybe.count("Processed"), 2);
    assert_eq!(trybe.count("Failed"), 1);
    assert_eq!(trybe.count("Rejected"), 1);
    assert_eq!(
        trybe.millis("HandlerLatency").len(),
        3,
        "the handler ran for a, b and the refused one"
    );
    let ages = trybe.millis("MessageAge");
    assert_eq!(ages.len(), 4);
    assert!(
        ages.iter().all(|a| (5_000.0..65_000.0).contains(a)),
        "{ages:?}"
    );
    let unknown = by_provider("unknown");
    assert_eq!(unknown.names(), ["MessageAge", "Rejected"]);
    assert_eq!(unknown.count("Rejected"), 1);
    assert!(unknown.millis("MessageAge")[0] >= 9_000.0);

    assert!(
        documents(&f, &empty, 0).await.is_empty(),
        "an invocation that recorded nothing writes no document"
    );
    assert_whole_lines(&f);
    assert_nothing_leaks(&f, &[TRYBE_SITE, PAYLOAD_EMAIL, &run, "customer.created"]);
}

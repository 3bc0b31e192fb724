//! `webhook-ops` against moto: the operator CLI (tools/webhook-ops).
//!
//! The real binary (built by `cargo build -p webhook-ops`) runs against the test's own table,
//! queue and dead-letter queue, configured the way an operator would (environment, flags, queue
//! names), with `yes`, `no` or nothing on its stdin. DLQ messages come from the real pipeline
//! (a receiver queues, a failing processor dead-letters them) or are sent straight to the DLQ;
//! claims from the real receiver and processor or from the claim store. Keys are built with
//! `shared::pipeline::dedup_key` only.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{Message, MessageAttributeValue};
use serde_json::{json, Value};
use shared::apigw::Sent;
use shared::consumer::Router;
use shared::pipeline::dedup_key;
use shared::provider::EventKey;
use shared::providers::trybe::{self, Trybe};
use shared::secret::Secret;
use shared::store::{Claim, ClaimOutcome, ClaimStore, DynamoClaims, Finish, Status};
use shared::{Envelope, Payload};
use time::OffsetDateTime;

use crate::helpers::*;
use crate::processor::Counting;

const SECRET: &str = "trybe-dev-secret-0001";

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("JSON on stdout ({e}): {self:?}"))
    }
}

/// The binary with only what an operator's shell would give it: AWS through the usual chain
/// (here: moto's endpoint and dummy credentials) and the stack in `EVENTS_*` variables.
fn command(stack: &Stack, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new(crate::lambda_host::binary("webhook-ops"));
    cmd.env_clear()
        .env("AWS_ENDPOINT_URL", moto_endpoint())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("EVENTS_TABLE", &stack.table)
        .env("EVENTS_QUEUE_URL", &stack.queue_url)
        .env("EVENTS_DLQ_URL", &stack.dlq_url)
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `webhook-ops args…` with `stdin` (None: stdin closed at once, nobody answers).
fn ops_env(stack: &Stack, env: &[(&str, &str)], args: &[&str], stdin: Option<&str>) -> Run {
    let mut child = command(stack, env, args)
        .spawn()
        .expect("start webhook-ops");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        // The tool may exit before reading (a refusal): a broken pipe is fine.
        let _ = input.write_all(text.as_bytes());
    }
    drop(input);
    let out = child.wait_with_output().expect("webhook-ops output");
    Run {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn ops(stack: &Stack, args: &[&str], stdin: Option<&str>) -> Run {
    ops_env(stack, &[], args, stdin)
}

fn queue_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// Every message visible on `url`, left there (received with visibility 0), attributes and all.
async fn peek(stack: &Stack, url: &str) -> Vec<Message> {
    let got = stack
        .sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .message_attribute_names("All")
        .send()
        .await
        .expect("receive");
    got.messages.unwrap_or_default()
}

fn ids(messages: &[Message]) -> HashSet<String> {
    messages
        .iter()
        .map(|m| m.message_id.clone().unwrap())
        .collect()
}

/// A message's attributes as (name → data type, string, binary): what a copy must keep.
type Attributes = BTreeMap<String, (String, Option<String>, Option<Vec<u8>>)>;

fn attributes(m: &Message) -> Attributes {
    m.message_attributes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                (
                    v.data_type,
                    v.string_value,
                    v.binary_value.map(|b| b.into_inner()),
                ),
            )
        })
        .collect()
}

/// Trybe events accepted by the real receiver; each payload carries `marker` (which no listing
/// may show without --show-payload). Returns the event ids.
async fn accept_trybe(stack: &Stack, n: usize, marker: &str) -> Vec<String> {
    let r = stack
        .receiver(&[(trybe::SECRET_VAR, SECRET)], Trybe::from_env)
        .await;
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("evt-{i}-{}", uuid::Uuid::new_v4().simple());
        let body = json!({"id": id, "event": "customer.created", "site_id": "s1",
                          "data": {"email": format!("{marker}@example.com")}})
        .to_string();
        let sent = Sent::post("/trybe", body.clone()).header(
            "Signature",
            trybe::sign(&Secret::new(SECRET).unwrap(), body.as_bytes()),
        );
        assert_eq!(send(&r, &sent).await.status(), 200);
        ids.push(id);
    }
    ids
}

/// What the event source mapping does with a processor whose handler fails `ids`: receive,
/// process, delete what did not fail, until the queue is empty (the stack's maxReceiveCount
/// sends the failures to the DLQ; the processor's waits are 0 s here, so that it takes no
/// hours).
async fn feed_processor(stack: &Stack, handler: Arc<Counting>) {
    let processor = stack.processor_without_waits(Router::new(handler));
    for _ in 0..20 {
        if stack.feed(&processor).await == 0 {
            return;
        }
    }
    panic!("the queue did not empty");
}

/// `n` Trybe events through the real receiver and a processor that fails them all: they end in
/// the DLQ after the stack's maxReceiveCount. Returns the event ids.
async fn dead_letter_trybe(stack: &Stack, n: usize, marker: &str) -> Vec<String> {
    let ids = accept_trybe(stack, n, marker).await;
    let failing = Arc::new(Counting::default());
    failing.fail.lock().unwrap().extend(ids.iter().cloned());
    feed_processor(stack, failing).await;
    assert_eq!(peek(stack, &stack.dlq_url).await.len(), n, "dead-lettered");
    ids
}

/// An envelope sent straight to the DLQ with the receivers' attributes and two more (a Number
/// and a Binary one, so that a copy must keep data types and bytes). Returns its message id.
async fn envelope_to_dlq(stack: &Stack, id: &str, marker: &str) -> String {
    let mut envelope = Envelope {
        provider: "trybe".into(),
        event_id: id.into(),
        event_type: "membership.charged".into(),
        dedup_key: dedup_key("trybe", Some("site-9"), &EventKey::id(id)),
        received_at: "2024-05-01T10:00:00Z".into(),
        occurred_at: None,
        tenant: Some("site-9".into()),
        content_type: Some("application/json".into()),
        body_sha256: "00".repeat(32),
        payload: None,
        payload_raw: None,
        payload_base64: None,
        payload_ref: None,
        replay: None,
    };
    envelope.set_payload(Payload::Json(json!({"card": marker}).into()));
    let mut send = stack
        .sqs
        .send_message()
        .queue_url(&stack.dlq_url)
        .message_body(envelope.to_sqs_body().unwrap())
        .message_attributes(
            "attempt",
            MessageAttributeValue::builder()
                .data_type("Number")
                .string_value("7")
                .build()
                .unwrap(),
        )
        .message_attributes(
            "trace",
            MessageAttributeValue::builder()
                .data_type("Binary")
                .binary_value(aws_sdk_sqs::primitives::Blob::new(vec![0, 159, 255, 1]))
                .build()
                .unwrap(),
        );
    for (name, value) in envelope.attributes() {
        send = send.message_attributes(
            name,
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .unwrap(),
        );
    }
    send.send().await.unwrap().message_id.unwrap()
}

fn marker() -> String {
    format!("payload-marker-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn dlq_list_names_each_message_without_its_payload_and_leaves_it_there() {
    let stack = Stack::with_max_receives(1).await;
    let secret = marker();
    let events = dead_letter_trybe(&stack, 2, &secret).await;
    let poison = stack
        .sqs
        .send_message()
        .queue_url(&stack.dlq_url)
        .message_body(format!("{{not an envelope {secret}"))
        .send()
        .await
        .unwrap()
        .message_id
        .unwrap();

    let human = ops(&stack, &["dlq", "list"], None);
    assert_eq!(human.code, 0, "{human:?}");
    for id in &events {
        for shown in [
            id.clone(),
            key("trybe", Some("s1"), id),
            "customer.created".into(),
            "trybe".into(),
            "tenant       s1".into(),
        ] {
            assert!(human.stdout.contains(&shown), "{shown} in {}", human.stdout);
        }
    }
    assert!(human.stdout.contains(&poison), "{}", human.stdout);
    assert!(
        human.stdout.contains("not an envelope (")
            && human.stdout.contains("receives")
            && human.stdout.contains("age"),
        "{}",
        human.stdout
    );
    assert!(
        !human.stdout.contains(&secret),
        "no payload: {}",
        human.stdout
    );

    let listed = ops(&stack, &["--json", "dlq", "list"], None);
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(
        !listed.stdout.contains(&secret),
        "no payload: {}",
        listed.stdout
    );
    let first = listed.json();
    let messages = first["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    for id in &events {
        let m = messages
            .iter()
            .find(|m| m["event_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} listed: {first:#}"));
        assert_eq!(m["provider"], "trybe");
        assert_eq!(m["event_type"], "customer.created");
        assert_eq!(m["tenant"], "s1");
        assert_eq!(m["dedup_key"], key("trybe", Some("s1"), id).as_str());
        assert!(m["receive_count"].as_u64().unwrap() >= 1, "{m}");
        assert!(m["age_seconds"].as_i64().unwrap() < 600, "{m}");
        assert!(human.stdout.contains(m["message_id"].as_str().unwrap()));
    }
    let p = messages
        .iter()
        .find(|m| m["message_id"] == poison.as_str())
        .unwrap();
    assert_eq!(p["envelope"], false);
    assert_eq!(p["receive_count"], 2, "received by the two listings: {p}");

    // The count is SQS's own: each listing is one more receive.
    let second = ops(&stack, &["--json", "dlq", "list"], None).json();
    for m in messages {
        let again = second["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["message_id"] == m["message_id"])
            .unwrap();
        assert_eq!(
            again["receive_count"].as_u64().unwrap(),
            m["receive_count"].as_u64().unwrap() + 1
        );
    }

    let shown = ops(&stack, &["dlq", "list", "--show-payload"], None);
    assert_eq!(shown.code, 0, "{shown:?}");
    assert_eq!(
        shown.stdout.matches(&secret).count(),
        3,
        "every payload: {}",
        shown.stdout
    );
    let one = ops(&stack, &["--json", "dlq", "list", "--max", "1"], None).json();
    assert_eq!(one["messages"].as_array().unwrap().len(), 1);
    assert_eq!(one["truncated"], true);

    // Nothing consumed, and visible again at once (not after the 30 s hold).
    let listed_ids: HashSet<String> = messages
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(listed_ids.contains(&poison));
    assert_eq!(ids(&peek(&stack, &stack.dlq_url).await), listed_ids);
    assert!(
        stack.drain().await.is_empty(),
        "nothing went to the main queue"
    );
}

#[tokio::test]
async fn dlq_redrive_by_id_moves_exactly_that_message_after_a_yes() {
    let stack = Stack::new().await;
    let secret = marker();
    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(envelope_to_dlq(&stack, &format!("charge-{i}"), &secret).await);
    }
    let originals = peek(&stack, &stack.dlq_url).await;
    assert_eq!(ids(&originals), sent.iter().cloned().collect());
    // Queue names, resolved with GetQueueUrl, as `make dev`'s local.env gives them.
    let by_name = [
        ("EVENTS_QUEUE_URL", ""),
        ("EVENTS_DLQ_URL", ""),
        ("EVENTS_QUEUE_NAME", queue_name(&stack.queue_url)),
        ("EVENTS_DLQ_NAME", queue_name(&stack.dlq_url)),
    ];
    let target = sent[1].as_str();

    for answer in [None, Some("no\n"), Some("y\n")] {
        let declined = ops_env(
            &stack,
            &by_name,
            &["dlq", "redrive", "--id", target],
            answer,
        );
        assert_eq!(declined.code, 1, "{answer:?}: {declined:?}");
        assert!(declined.stderr.contains("nothing moved"), "{declined:?}");
        assert!(
            declined.stdout.contains(target) && declined.stdout.contains("charge-1"),
            "shows what it would move: {declined:?}"
        );
        assert!(!declined.stdout.contains(&secret), "{declined:?}");
        assert!(
            peek(&stack, &stack.queue_url).await.is_empty(),
            "{answer:?}"
        );
        assert_eq!(ids(&peek(&stack, &stack.dlq_url).await), ids(&originals));
    }

    let unknown = ops_env(
        &stack,
        &by_name,
        &["dlq", "redrive", "--id", "no-such-message", "--yes"],
        None,
    );
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("not in the dead-letter queue"));
    assert!(peek(&stack, &stack.queue_url).await.is_empty());

    let moved = ops_env(
        &stack,
        &by_name,
        &["dlq", "redrive", "--id", target],
        Some("yes\n"),
    );
    assert_eq!(moved.code, 0, "{moved:?}");
    assert!(moved.stdout.contains("moved 1 of 1"), "{moved:?}");
    let on_queue = peek(&stack, &stack.queue_url).await;
    assert_eq!(on_queue.len(), 1, "exactly that one");
    let original = originals
        .iter()
        .find(|m| m.message_id.as_deref() == Some(target))
        .unwrap();
    assert_eq!(on_queue[0].body, original.body, "identical body");
    assert_eq!(
        attributes(&on_queue[0]),
        attributes(original),
        "identical attributes"
    );
    assert_eq!(attributes(original).len(), 4);
    let left = ids(&peek(&stack, &stack.dlq_url).await);
    assert_eq!(
        left,
        [sent[0].clone(), sent[2].clone()].into_iter().collect(),
        "gone from the DLQ, the others stay"
    );
}

#[tokio::test]
async fn dlq_redrive_all_moves_every_message_and_the_processor_takes_them() {
    // Three receives before the DLQ: peeking at the main queue below is one of them.
    let stack = Stack::new().await;
    let events = dead_letter_trybe(&stack, 3, &marker()).await;
    let dead = peek(&stack, &stack.dlq_url).await;
    assert_eq!(dead.len(), 3);

    let unconfirmed = ops(&stack, &["dlq", "redrive", "--all"], None);
    assert_eq!(unconfirmed.code, 1, "{unconfirmed:?}");
    assert!(unconfirmed.stdout.contains("will move 3 message(s)"));
    assert!(
        peek(&stack, &stack.queue_url).await.is_empty(),
        "nothing moved"
    );
    assert_eq!(ids(&peek(&stack, &stack.dlq_url).await), ids(&dead));

    let all = ops(
        &stack,
        &["--json", "dlq", "redrive", "--all", "--yes"],
        None,
    );
    assert_eq!(all.code, 0, "{all:?}");
    assert_eq!(all.json()["moved"].as_array().unwrap().len(), 3);
    assert!(peek(&stack, &stack.dlq_url).await.is_empty(), "DLQ empty");
    let mut bodies: Vec<_> = peek(&stack, &stack.queue_url)
        .await
        .into_iter()
        .map(|m| m.body)
        .collect();
    let mut expected: Vec<_> = dead.iter().map(|m| m.body.clone()).collect();
    bodies.sort();
    expected.sort();
    assert_eq!(bodies, expected, "the same bodies on the main queue");

    // The copies are ordinary deliveries: a healthy processor handles each once.
    let healthy = Arc::new(Counting::default());
    feed_processor(&stack, healthy.clone()).await;
    assert_eq!(healthy.runs(), 3);
    for id in &events {
        let item = stack
            .item(&format!("processed#{}", key("trybe", Some("s1"), id)))
            .await
            .expect("processed record");
        assert_eq!(s(&item, "status"), "PROCESSED");
    }
}

#[tokio::test]
async fn dlq_redrive_never_loses_a_message_the_queue_refuses() {
    let stack = Stack::new().await;
    // A main queue that takes 1 KiB at most: the big message's send fails.
    let small = stack
        .sqs
        .create_queue()
        .queue_name(format!("small-{}", uuid::Uuid::new_v4().simple()))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize,
            "1024",
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let big = envelope_to_dlq(&stack, "big-1", &"x".repeat(2048)).await;
    let little = envelope_to_dlq(&stack, "little-1", "y").await;

    let run = ops(
        &stack,
        &["dlq", "redrive", "--all", "--yes", "--queue-url", &small],
        None,
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("SendMessage"), "{run:?}");
    // Visible again at once: the refused one was not deleted, the one not yet moved is back.
    let in_dlq = ids(&peek(&stack, &stack.dlq_url).await);
    let on_queue: Vec<Message> = peek(&stack, &small).await;
    assert!(
        in_dlq.contains(&big),
        "the refused message stays in the DLQ"
    );
    assert!(on_queue.len() <= 1);
    let little_moved = on_queue.len() == 1;
    assert_eq!(
        in_dlq.contains(&little),
        !little_moved,
        "the other one is in exactly one of the queues"
    );
    if little_moved {
        assert!(on_queue[0].body.as_deref().unwrap().contains("little-1"));
    }
}

fn claim(pk: &str, pending: Status, now: OffsetDateTime, lease: Duration) -> Claim {
    Claim {
        pk: pk.into(),
        pending,
        event_type: "order.created".into(),
        fingerprint: "ab".repeat(32),
        now,
        lease,
        ttl: Duration::from_secs(86_400),
        token: uuid::Uuid::new_v4().to_string(),
    }
}

/// A RECEIVED claim whose receiver died a minute ago: its 10 s lease has lapsed.
async fn stuck(store: &DynamoClaims, pk: &str) -> Claim {
    let c = claim(
        pk,
        Status::Received,
        OffsetDateTime::now_utc() - Duration::from_secs(60),
        Duration::from_secs(10),
    );
    assert_eq!(store.claim(&c).await.unwrap(), ClaimOutcome::New);
    c
}

/// `webhook-ops [--json] claim show trybe <id> --tenant s1`: the events `accept_trybe` accepts.
fn show_trybe(stack: &Stack, id: &str, json: bool) -> Run {
    let show = ["claim", "show", "trybe", id, "--tenant", "s1"];
    let args: Vec<&str> = json.then_some("--json").into_iter().chain(show).collect();
    ops(stack, &args, None)
}

#[tokio::test]
async fn claim_show_prints_when_a_failing_events_message_comes_back() {
    let stack = Stack::new().await;
    let id = accept_trybe(&stack, 1, &marker()).await.remove(0);
    let pk = key("trybe", Some("s1"), &id);
    let mut record = stack.drain().await.pop().expect("the event's message");
    record
        .attributes
        .insert(shared::queue::RECEIVE_COUNT.into(), "3".into());
    let failing = Arc::new(Counting::default());
    failing.fail.lock().unwrap().push(id.clone());
    // The deployed processor: it hides the record for its wait and notes it.
    let response = stack
        .processor(Router::new(failing))
        .process(sqs_event(vec![record.clone()]))
        .await;
    assert_eq!(response.batch_item_failures.len(), 1);
    // What moto stored: the note under the processor's key with its suffix, the kind of
    // failure only.
    let note = stack
        .item(&shared::store::retry_key(&format!("processed#{pk}")))
        .await
        .expect("the retry note");
    assert_eq!(note["receive_count"].as_n().unwrap(), "3");
    assert_eq!(s(&note, "reason"), "handler retry");
    assert_eq!(&s(&note, "message_id"), record.message_id.as_ref().unwrap());
    let next = OffsetDateTime::parse(
        &s(&note, "next_receive_after"),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let wait = next
        - OffsetDateTime::parse(
            &s(&note, "failed_at"),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
    // The third receive's wait: 4 minutes, plus up to 10 %.
    assert!(
        wait >= time::Duration::minutes(4) && wait <= time::Duration::seconds(264),
        "{wait}"
    );

    let shown = show_trybe(&stack, &id, false);
    assert_eq!(shown.code, 0, "{shown:?}");
    for expected in [
        "retry note",
        "3 times",
        "handler retry",
        s(&note, "next_receive_after").as_str(),
    ] {
        assert!(shown.stdout.contains(expected), "{expected}: {shown:?}");
    }
    let json = show_trybe(&stack, &id, true).json();
    assert_eq!(json["retry"]["receive_count"], 3);
    assert_eq!(
        json["retry"]["next_receive_after"],
        s(&note, "next_receive_after").as_str()
    );
}

#[tokio::test]
async fn claim_show_prints_the_claim_and_the_processor_record_for_receiver_keys() {
    let stack = Stack::new().await;
    let secret = marker();
    let id = accept_trybe(&stack, 1, &secret).await.remove(0);
    let pk = key("trybe", Some("s1"), &id);
    let item = stack.item(&pk).await.unwrap();

    let shown = show_trybe(&stack, &id, false);
    assert_eq!(shown.code, 0, "{shown:?}");
    // Accepted: the receiver answered after its send and did not mark the claim.
    for expected in [
        pk.as_str(),
        "RECEIVED",
        "not recorded by the receiver",
        s(&item, "received_at").as_str(),
        "customer.created",
        "lease until",
        "expires at",
        "none (not processed",
    ] {
        assert!(shown.stdout.contains(expected), "{expected}: {shown:?}");
    }
    assert!(!shown.stdout.contains(&secret) && !shown.stdout.contains("claim_token"));

    feed_processor(&stack, Arc::new(Counting::default())).await;
    let processed = stack.item(&format!("processed#{pk}")).await.unwrap();
    let shown = show_trybe(&stack, &id, false);
    assert_eq!(shown.code, 0, "{shown:?}");
    assert!(
        shown.stdout.contains("PROCESSED")
            && shown.stdout.contains(&s(&processed, "processed_at"))
            && shown.stdout.contains(&format!("processed#{pk}")),
        "{shown:?}"
    );
    let json = show_trybe(&stack, &id, true).json();
    assert_eq!(json["key"], pk.as_str());
    assert_eq!(json["claim"]["status"], "RECEIVED");
    assert!(json["claim"]["message_id"].is_null());
    assert_eq!(json["processor"]["status"], "PROCESSED");
    assert_eq!(
        json["processor"]["processed_at"],
        s(&processed, "processed_at").as_str()
    );

    // Tilby's composite ids, and events keyed by a content hash, as the receivers key them.
    let store = DynamoClaims::new(stack.ddb.clone(), &stack.table);
    let tilby = dedup_key("tilby", Some("env-1"), &EventKey::parts(["n-1", "item#7"]));
    let hashed = EventKey::hash_of(b"<points>12</points>");
    let trifft = dedup_key("trifft", Some("label"), &hashed);
    for pk in [&tilby, &trifft] {
        stuck(&store, pk).await;
    }
    let hex = hashed.to_event_id();
    for (args, pk) in [
        (
            vec!["claim", "show", "tilby", "n-1:item#7", "--tenant", "env-1"],
            &tilby,
        ),
        (
            vec![
                "claim", "show", "trifft", &hex, "--hash", "--tenant", "label",
            ],
            &trifft,
        ),
        (vec!["claim", "show", "--key", &trifft], &trifft),
    ] {
        let run = ops(&stack, &args, None);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        assert!(
            run.stdout.contains(pk.as_str()) && run.stdout.contains("RECEIVED"),
            "{run:?}"
        );
        assert!(run.stdout.contains("lapsed"), "{run:?}");
    }

    let missing = ops(&stack, &["claim", "show", "trifft", &hex], None);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(
        missing.stderr.contains("no record") && missing.stderr.contains("--hash"),
        "{missing:?}"
    );
    let usage = ops(&stack, &["claim", "show", "nosuch", "x"], None);
    assert_eq!(usage.code, 2, "{usage:?}");
}

#[tokio::test]
async fn claim_release_deletes_a_stuck_claim_only_on_yes_and_refuses_a_queued_one() {
    let stack = Stack::new().await;
    let store = DynamoClaims::new(stack.ddb.clone(), &stack.table);
    let pk = dedup_key("tribemade", Some("store-1"), &EventKey::id("order-1"));
    stuck(&store, &pk).await;
    let args = [
        "claim",
        "release",
        "tribemade",
        "order-1",
        "--tenant",
        "store-1",
    ];
    for answer in [Some("no\n"), None, Some("YES please\n")] {
        let kept = ops(&stack, &args, answer);
        assert_eq!(kept.code, 1, "{answer:?}: {kept:?}");
        assert!(kept.stdout.contains("RECEIVED") && kept.stdout.contains(&pk));
        assert!(kept.stderr.contains("Type yes"), "asked: {kept:?}");
        assert!(kept.stderr.contains("nothing deleted"), "{kept:?}");
        assert!(stack.item(&pk).await.is_some(), "kept after {answer:?}");
    }
    let released = ops(&stack, &args, Some("yes\n"));
    assert_eq!(released.code, 0, "{released:?}");
    assert!(released.stdout.contains(&format!("released {pk}")));
    assert!(stack.item(&pk).await.is_none(), "deleted");
    let again = ops(&stack, &args, Some("yes\n"));
    assert_eq!(again.code, 1, "nothing left to release: {again:?}");

    // ENQUEUED (a retry found the processor's record, or an older version marked it): the event
    // is on the queue; releasing would let a retry queue it twice.
    let id = format!("queued-{}", uuid::Uuid::new_v4().simple());
    let queued = key("trybe", Some("s1"), &id);
    let c = stuck(&store, &queued).await;
    let mark = Finish::Enqueued {
        message_id: Some("3b0c5a52".into()),
        first: None,
    };
    store
        .finish(&queued, &c.token, &mark, OffsetDateTime::now_utc())
        .await
        .unwrap();
    let args = ["claim", "release", "trybe", &id, "--tenant", "s1"];
    let refused = ops(&stack, &args, Some("yes\n"));
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("refused") && refused.stderr.contains("second time"),
        "{refused:?}"
    );
    assert_eq!(s(&stack.item(&queued).await.unwrap(), "status"), "ENQUEUED");
    let mut forced_args = args.to_vec();
    forced_args.push("--force");
    let declined = ops(&stack, &forced_args, Some("no\n"));
    assert_eq!(declined.code, 1, "{declined:?}");
    assert!(declined.stderr.contains("FORCED"), "{declined:?}");
    assert!(stack.item(&queued).await.is_some());
    let forced = ops(&stack, &forced_args, Some("yes\n"));
    assert_eq!(forced.code, 0, "{forced:?}");
    assert!(stack.item(&queued).await.is_none());

    // A receiver still working on it (live lease), or the processor already holding the event.
    let live = dedup_key("tilby", Some("env"), &EventKey::parts(["n-2", "e-2"]));
    let c = claim(
        &live,
        Status::Received,
        OffsetDateTime::now_utc(),
        Duration::from_secs(300),
    );
    assert_eq!(store.claim(&c).await.unwrap(), ClaimOutcome::New);
    let refused = ops(&stack, &["claim", "release", "--key", &live, "--yes"], None);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("lease"), "{refused:?}");
    assert!(stack.item(&live).await.is_some());

    let taken = dedup_key("trybe", Some("s1"), &EventKey::id("taken-1"));
    stuck(&store, &taken).await;
    let p = claim(
        &format!("processed#{taken}"),
        Status::Processing,
        OffsetDateTime::now_utc(),
        Duration::from_secs(300),
    );
    assert_eq!(store.claim(&p).await.unwrap(), ClaimOutcome::New);
    store
        .finish(
            &p.pk,
            &p.token,
            &Finish::Processed,
            OffsetDateTime::now_utc(),
        )
        .await
        .unwrap();
    let refused = ops(
        &stack,
        &["claim", "release", "--key", &taken, "--yes"],
        None,
    );
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("processor has this event"),
        "{refused:?}"
    );
    assert!(stack.item(&taken).await.is_some());
}

#[tokio::test]
async fn claim_release_never_deletes_a_claim_taken_over_after_it_was_shown() {
    let stack = Stack::new().await;
    let store = DynamoClaims::new(stack.ddb.clone(), &stack.table);
    let pk = dedup_key("trybe", Some("s1"), &EventKey::id("retried-1"));
    let shown = stuck(&store, &pk).await;

    let mut child = command(
        &stack,
        &[],
        &["claim", "release", "trybe", "retried-1", "--tenant", "s1"],
    )
    .spawn()
    .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut pipe = child.stderr.take().unwrap();
    let collected = stderr.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            collected
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let start = Instant::now();
    while !stderr.lock().unwrap().contains("Type yes") {
        assert!(start.elapsed() < Duration::from_secs(60), "no prompt");
        std::thread::sleep(Duration::from_millis(50));
    }

    // While the operator reads, the provider's retry takes the lapsed claim over.
    let retry = claim(
        &pk,
        Status::Received,
        OffsetDateTime::now_utc(),
        Duration::from_secs(10),
    );
    assert!(matches!(
        store.claim(&retry).await.unwrap(),
        ClaimOutcome::TakenOver { previous } if previous.token == shown.token
    ));
    assert_ne!(retry.token, shown.token);

    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"yes\n").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    reader.join().unwrap();
    assert_eq!(out.status.code(), Some(1), "{:?}", stderr.lock().unwrap());
    assert!(stderr
        .lock()
        .unwrap()
        .contains("changed since it was shown"));
    let item = stack.item(&pk).await.expect("the retry's claim is kept");
    assert_eq!(s(&item, "claim_token"), retry.token);
}

/// A signed Trybe request carrying `marker` in its payload.
fn trybe_request(id: &str, marker: &str) -> Sent {
    let body = json!({"id": id, "event": "customer.created", "site_id": "s1",
                      "data": {"email": format!("{marker}@example.com")}});
    signed_trybe(SECRET, &body)
}

#[tokio::test]
async fn accepted_requests_are_archived_without_credentials_and_replay_runs_them_again() {
    let stack = Stack::new().await;
    let archive = stack.archive_bucket.clone();
    let r = stack
        .receiver(
            &[(trybe::SECRET_VAR, SECRET), ("ARCHIVE_BUCKET", &archive)],
            Trybe::from_env,
        )
        .await;
    let marker = marker();
    let from = shared::clock::rfc3339(OffsetDateTime::now_utc() - Duration::from_secs(1));
    let (a, b) = (
        format!("evt-a-{}", uuid::Uuid::new_v4().simple()),
        format!("evt-b-{}", uuid::Uuid::new_v4().simple()),
    );
    let sent = [trybe_request(&a, &marker), trybe_request(&b, &marker)];
    for request in &sent {
        assert_eq!(send(&r, request).await.status(), 200);
    }
    let counting = Arc::new(Counting::default());
    feed_processor(&stack, counting.clone()).await;
    assert_eq!(counting.runs(), 2, "each event once");
    // The provider retries a: accepted again (a duplicate), archived again.
    assert_eq!(send(&r, &sent[0]).await.status(), 200);
    // A forged request is refused and not archived.
    let forged = Sent::post("/trybe", sent[1].body.clone()).header("Signature", "0".repeat(64));
    assert_eq!(send(&r, &forged).await.status(), 401);
    let to = shared::clock::rfc3339(OffsetDateTime::now_utc() + Duration::from_secs(1));

    // What moto received: three encrypted records under trybe/<today>/, each the body as sent,
    // none holding the secret or the signature.
    let archived = stack.objects(&archive).await;
    assert_eq!(archived.len(), 3, "{archived:?}");
    let today = shared::objects::archive_day_prefix("trybe", OffsetDateTime::now_utc().date());
    let mut key_of_b = None;
    for (key, sse) in &archived {
        assert!(key.starts_with(&today), "{key}");
        assert_eq!(sse.as_deref(), Some("AES256"), "{key}");
        let object = stack.object(&archive, key).await;
        let text = String::from_utf8(object.clone()).unwrap();
        let signature = sent[1]
            .headers
            .iter()
            .find(|(n, _)| n == "Signature")
            .unwrap();
        assert!(
            !text.contains(SECRET) && !text.contains(&signature.1),
            "{text}"
        );
        let record: shared::objects::ArchiveRecord = serde_json::from_slice(&object).unwrap();
        let body = record.body().unwrap();
        assert!(
            sent.iter().any(|s| s.body == body),
            "the body byte for byte"
        );
        if record.events[0].event_id == b {
            key_of_b = Some(key.clone());
        }
    }
    let key_of_b = key_of_b.expect("b archived");
    assert!(
        peek(&stack, &stack.queue_url).await.is_empty(),
        "the retry was a duplicate"
    );

    // One archived request: a preview without payloads, then nothing without a yes.
    let env = [("ARCHIVE_BUCKET", archive.as_str())];
    let declined = ops_env(&stack, &env, &["replay", "--key", &key_of_b], Some("no\n"));
    assert_eq!(declined.code, 1, "{declined:?}");
    assert!(
        declined.stderr.contains(&format!("event {b}")),
        "{declined:?}"
    );
    assert!(!declined.stderr.contains(&marker) && !declined.stdout.contains(&marker));
    assert!(
        peek(&stack, &stack.queue_url).await.is_empty(),
        "nothing queued"
    );

    let replayed = ops_env(&stack, &env, &["replay", "--key", &key_of_b], Some("yes\n"));
    assert_eq!(replayed.code, 0, "{replayed:?}");
    assert!(replayed.stdout.contains("queued 1 of 1"), "{replayed:?}");
    let queued = peek(&stack, &stack.queue_url).await;
    assert_eq!(queued.len(), 1);
    let message: Value = serde_json::from_str(queued[0].body().unwrap()).unwrap();
    assert_eq!(message["replay"]["archive_key"], key_of_b.as_str());
    assert_eq!(message["event_id"], b.as_str());
    feed_processor(&stack, counting.clone()).await;
    assert_eq!(counting.runs(), 3, "the replay ran b again");
    assert_eq!(
        counting
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|id| **id == b)
            .count(),
        2
    );

    // A provider's range: each event once, though a was archived twice.
    let range = [
        "--json",
        "replay",
        "--provider",
        "trybe",
        "--from",
        &from,
        "--to",
        &to,
        "--yes",
    ];
    let run = ops_env(&stack, &env, &range, None);
    assert_eq!(run.code, 0, "{run:?}");
    let out = run.json();
    let mut ids: Vec<&str> = out["queued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["event_id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut expected = vec![a.as_str(), b.as_str()];
    expected.sort();
    assert_eq!(ids, expected);
    feed_processor(&stack, counting.clone()).await;
    assert_eq!(counting.runs(), 5);

    // A range with nothing archived in it queues nothing.
    let empty = [
        "replay",
        "--provider",
        "trybe",
        "--from",
        "2020-01-01T00:00:00Z",
        "--to",
        "2020-01-02T00:00:00Z",
        "--yes",
    ];
    let run = ops_env(&stack, &env, &empty, None);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("nothing to replay"), "{run:?}");
    assert!(peek(&stack, &stack.queue_url).await.is_empty());
}

#[tokio::test]
async fn an_archived_event_too_large_for_the_queue_is_replayed_through_the_payload_bucket() {
    let stack = Stack::new().await;
    let archive = stack.archive_bucket.clone();
    let r = stack
        .receiver(
            &[(trybe::SECRET_VAR, SECRET), ("ARCHIVE_BUCKET", &archive)],
            Trybe::from_env,
        )
        .await;
    let id = format!("evt-big-{}", uuid::Uuid::new_v4().simple());
    let body = json!({"id": id, "event": "customer.created", "site_id": "s1",
                      "data": {"blob": "x".repeat(1_500_000)}});
    let big = signed_trybe(SECRET, &body);
    assert_eq!(send(&r, &big).await.status(), 200);
    let counting = Arc::new(Counting::default());
    feed_processor(&stack, counting.clone()).await;
    assert_eq!(counting.runs(), 1);
    let archived = stack.objects(&archive).await;
    assert_eq!(archived.len(), 1);

    let env = [
        ("ARCHIVE_BUCKET", archive.as_str()),
        ("PAYLOAD_BUCKET", stack.payload_bucket.as_str()),
    ];
    let run = ops_env(
        &stack,
        &env,
        &["replay", "--key", &archived[0].0, "--yes"],
        None,
    );
    assert_eq!(run.code, 0, "{run:?}");
    let queued = peek(&stack, &stack.queue_url).await;
    assert_eq!(queued.len(), 1);
    let message: Value = serde_json::from_str(queued[0].body().unwrap()).unwrap();
    assert!(message["payload_ref"]["key"].is_string(), "a reference");
    assert!(message["replay"]["id"].is_string(), "marked as a replay");
    feed_processor(&stack, counting.clone()).await;
    assert_eq!(counting.runs(), 2, "resolved and run again");
    assert!(peek(&stack, &stack.dlq_url).await.is_empty());

    // Without the payload bucket the replay refuses, before queuing anything.
    let env = [("ARCHIVE_BUCKET", archive.as_str())];
    let run = ops_env(
        &stack,
        &env,
        &["replay", "--key", &archived[0].0, "--yes"],
        None,
    );
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("nothing queued"), "{run:?}");
    assert!(peek(&stack, &stack.queue_url).await.is_empty());
}

/// A Trybe envelope for site s1 whose payload holds `blob` bytes of filler.
fn trybe_envelope(id: &str, received: OffsetDateTime, blob: usize) -> (Envelope, String) {
    let body = json!({"id": id, "event": "customer.created", "site_id": "s1",
                      "data": {"blob": "x".repeat(blob)}})
    .to_string();
    let mut envelope = Envelope {
        provider: "trybe".into(),
        event_id: id.into(),
        event_type: "customer.created".into(),
        dedup_key: key("trybe", Some("s1"), id),
        received_at: shared::clock::rfc3339(received),
        occurred_at: None,
        tenant: Some("s1".into()),
        content_type: Some("application/json".into()),
        body_sha256: shared::verify::sha256_hex(body.as_bytes()),
        payload: None,
        payload_raw: None,
        payload_base64: None,
        payload_ref: None,
        replay: None,
    };
    envelope.set_payload(Payload::Json(
        serde_json::from_str::<Value>(&body).unwrap().into(),
    ));
    (envelope, body)
}

/// One accepted Trybe request in the archive, written as a receiver writes it. Returns its
/// archive key and its event.
async fn archived(
    stack: &Stack,
    id: &str,
    received: OffsetDateTime,
    blob: usize,
) -> (String, Envelope) {
    let (envelope, body) = trybe_envelope(id, received, blob);
    let record = shared::objects::archive_record(
        "POST",
        Some("application/json"),
        body.as_bytes(),
        vec![&envelope],
    )
    .unwrap();
    let key = shared::objects::archive_key(
        "trybe",
        received,
        &envelope.body_sha256,
        &shared::objects::archive_request_id(),
    );
    stack
        .s3
        .put_object()
        .bucket(&stack.archive_bucket)
        .key(&key)
        .body(serde_json::to_vec(&record).unwrap().into())
        .send()
        .await
        .unwrap();
    (key, envelope)
}

/// The processor's replay claim for `dedup_key` under replay `replay_id`, put as the processor
/// puts it (PROCESSING, then PROCESSED when `processed`).
async fn replay_claim(stack: &Stack, dedup_key: &str, replay_id: &str, processed: bool) {
    let store = DynamoClaims::new(stack.ddb.clone(), &stack.table);
    let mark = shared::envelope::Replay {
        id: replay_id.into(),
        requested_at: shared::clock::rfc3339(OffsetDateTime::now_utc()),
        archive_key: String::new(),
    };
    let c = claim(
        &mark.processed_key(dedup_key),
        Status::Processing,
        OffsetDateTime::now_utc(),
        Duration::from_secs(300),
    );
    assert_eq!(store.claim(&c).await.unwrap(), ClaimOutcome::New);
    if processed {
        store
            .finish(
                &c.pk,
                &c.token,
                &Finish::Processed,
                OffsetDateTime::now_utc(),
            )
            .await
            .unwrap();
    }
}

/// Every message on `url`, consumed (received and deleted), as envelopes.
async fn take_all(stack: &Stack, url: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let got = stack
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .send()
            .await
            .unwrap()
            .messages
            .unwrap_or_default();
        if got.is_empty() {
            return out;
        }
        for m in got {
            out.push(serde_json::from_str(m.body().unwrap()).unwrap());
            stack
                .sqs
                .delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn event_ids(list: &Value) -> Vec<String> {
    sorted(
        list.as_array()
            .unwrap_or_else(|| panic!("a list: {list}"))
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect(),
    )
}

#[tokio::test]
async fn a_replay_resumed_with_its_id_queues_only_the_events_the_processor_does_not_have() {
    let stack = Stack::new().await;
    let now = OffsetDateTime::now_utc();
    let mut events = Vec::new();
    for i in 0..5 {
        let id = format!("evt-r{i}-{}", uuid::Uuid::new_v4().simple());
        let at = now - Duration::from_secs(30) + Duration::from_millis(10 * i);
        events.push(archived(&stack, &id, at, 10).await.1);
    }
    let from = shared::clock::rfc3339(now - Duration::from_secs(60));
    let to = shared::clock::rfc3339(now + Duration::from_secs(60));
    let env = [("ARCHIVE_BUCKET", stack.archive_bucket.as_str())];
    let range = [
        "replay",
        "--provider",
        "trybe",
        "--from",
        &from,
        "--to",
        &to,
    ];
    let all: Vec<String> = sorted(events.iter().map(|e| e.event_id.clone()).collect());

    let mut args = vec!["--json"];
    args.extend(range);
    args.push("--yes");
    let first = ops_env(&stack, &env, &args, None);
    assert_eq!(first.code, 0, "{first:?}");
    let first = first.json();
    let replay_id = first["replay_id"].as_str().unwrap().to_owned();
    assert_eq!(event_ids(&first["queued"]), all);
    assert_eq!(take_all(&stack, &stack.queue_url).await.len(), 5);

    // The run was interrupted, as it were: the processor has three of the five (one still
    // running, two done); the other two never reached it.
    for (e, processed) in events.iter().take(3).zip([false, true, true]) {
        replay_claim(&stack, &e.dedup_key, &replay_id, processed).await;
    }
    // Another replay's claim for a fourth event is not this replay's.
    replay_claim(&stack, &events[3].dedup_key, &"0".repeat(32), true).await;

    let mut args = vec!["--json"];
    args.extend(range);
    args.extend(["--replay-id", &replay_id, "--yes"]);
    let resumed = ops_env(&stack, &env, &args, None);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    let out = resumed.json();
    assert_eq!(out["replay_id"], replay_id.as_str());
    let gone: Vec<String> = sorted(events[..3].iter().map(|e| e.event_id.clone()).collect());
    let missing: Vec<String> = sorted(events[3..].iter().map(|e| e.event_id.clone()).collect());
    assert_eq!(event_ids(&out["already_gone"]), gone, "{out:#}");
    assert_eq!(event_ids(&out["queued"]), missing, "{out:#}");
    assert_eq!(out["not_queued"], json!([]));
    assert_eq!(out["resume"], Value::Null);

    // What moto holds: exactly the two missing events, under the same replay id.
    let queued = take_all(&stack, &stack.queue_url).await;
    assert_eq!(queued.len(), 2, "{queued:#?}");
    for m in &queued {
        assert_eq!(m["replay"]["id"], replay_id.as_str(), "{m}");
        assert!(m["replay"]["archive_key"]
            .as_str()
            .unwrap()
            .starts_with("trybe/"));
    }
    assert_eq!(
        sorted(
            queued
                .iter()
                .map(|m| m["event_id"].as_str().unwrap().to_owned())
                .collect()
        ),
        missing
    );

    // Text output says the same; a replay id not shaped like one is a usage error.
    let mut args = range.to_vec();
    args.extend(["--replay-id", &replay_id, "--yes"]);
    let text = ops_env(&stack, &env, &args, None);
    assert_eq!(text.code, 0, "{text:?}");
    for e in &events[..3] {
        assert!(
            text.stdout
                .contains(&format!("already gone {}", e.event_id)),
            "{text:?}"
        );
    }
    assert!(
        text.stdout
            .contains("queued 2 of 2; already gone 3; not queued 0"),
        "{text:?}"
    );
    take_all(&stack, &stack.queue_url).await;
    let mut args = range.to_vec();
    args.extend(["--replay-id", "not-a-replay-id", "--yes"]);
    let bad = ops_env(&stack, &env, &args, None);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(peek(&stack, &stack.queue_url).await.is_empty());
}

#[tokio::test]
async fn a_replay_that_cannot_queue_everything_lists_each_event_not_queued_and_how_to_resume() {
    let stack = Stack::new().await;
    let now = OffsetDateTime::now_utc();
    let at = |ms: u64| now - Duration::from_secs(30) + Duration::from_millis(ms);
    let small_id = format!("evt-small-{}", uuid::Uuid::new_v4().simple());
    let big_id = format!("evt-big-{}", uuid::Uuid::new_v4().simple());
    let (small_key, small) = archived(&stack, &small_id, at(0), 10).await;
    let (big_key, big) = archived(&stack, &big_id, at(10), 20_000).await;
    // An archive object that is not an archive record (damaged, or written by something else).
    let bad_key = shared::objects::archive_key(
        "trybe",
        at(20),
        &"ee".repeat(32),
        &shared::objects::archive_request_id(),
    );
    stack
        .s3
        .put_object()
        .bucket(&stack.archive_bucket)
        .key(&bad_key)
        .body(b"{not an archive record".to_vec().into())
        .send()
        .await
        .unwrap();
    let from = shared::clock::rfc3339(now - Duration::from_secs(60));
    let to = shared::clock::rfc3339(now + Duration::from_secs(60));
    // A queue limit the big event exceeds, and a payload bucket that does not exist: its
    // payload object cannot be written.
    let broken = [
        ("ARCHIVE_BUCKET", stack.archive_bucket.as_str()),
        ("MAX_MESSAGE_BYTES", "8192"),
        ("PAYLOAD_BUCKET", "no-such-payload-bucket"),
    ];
    let range = [
        "replay",
        "--provider",
        "trybe",
        "--from",
        &from,
        "--to",
        &to,
    ];
    let mut args = range.to_vec();
    args.push("--yes");
    let run = ops_env(&stack, &broken, &args, None);
    assert_eq!(run.code, 1, "{run:?}");
    let replay_id = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("replay ")?.split(':').next())
        .unwrap_or_else(|| panic!("a replay id: {run:?}"))
        .to_owned();
    assert!(
        run.stdout
            .contains(&format!("queued {small_id} as message")),
        "{run:?}"
    );
    let big_line = format!(
        "NOT queued: event {big_id}  dedup key {}  from {big_key}: payload object",
        big.dedup_key
    );
    assert!(run.stdout.contains(&big_line), "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "NOT queued: every event of archive object {bad_key}: not an archive record"
        )),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("queued 1 of 2; already gone 0; not queued 2"),
        "{run:?}"
    );
    let resume = format!(
        "webhook-ops replay --replay-id {replay_id} --provider trybe --from {from} --to {to}"
    );
    assert!(
        run.stdout.contains(&format!("resume with: {resume}\n")),
        "{run:?}"
    );
    assert!(run.stderr.contains(&resume), "{run:?}");
    // What moto holds: the small event only, marked with this replay; no payload object.
    let queued = take_all(&stack, &stack.queue_url).await;
    assert_eq!(queued.len(), 1, "{queued:#?}");
    assert_eq!(queued[0]["event_id"], small_id.as_str());
    assert_eq!(queued[0]["replay"]["id"], replay_id.as_str());
    assert_eq!(queued[0]["replay"]["archive_key"], small_key.as_str());
    assert!(stack.objects(&stack.payload_bucket).await.is_empty());

    // The processor takes the small one; the resume, still broken, says the same in JSON and
    // queues nothing again.
    replay_claim(&stack, &small.dedup_key, &replay_id, true).await;
    let words: Vec<&str> = resume.split(' ').skip(1).collect();
    let mut args = vec!["--json"];
    args.extend(&words);
    args.push("--yes");
    let again = ops_env(&stack, &broken, &args, None);
    assert_eq!(again.code, 1, "{again:?}");
    let out = again.json();
    assert_eq!(out["replay_id"], replay_id.as_str());
    assert_eq!(out["resume"], resume.as_str());
    assert_eq!(out["queued"], json!([]));
    assert_eq!(event_ids(&out["already_gone"]), vec![small_id.clone()]);
    let not_queued = out["not_queued"].as_array().unwrap();
    assert_eq!(not_queued.len(), 2, "{out:#}");
    let b = not_queued
        .iter()
        .find(|n| n["event_id"] == big_id.as_str())
        .unwrap();
    assert_eq!(b["dedup_key"], big.dedup_key.as_str());
    assert_eq!(b["archive_key"], big_key.as_str());
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("no-such-payload-bucket"),
        "{b}"
    );
    let g = not_queued
        .iter()
        .find(|n| n["archive_key"] == bad_key.as_str())
        .unwrap();
    assert_eq!(g["event_id"], Value::Null);
    assert_eq!(g["error"], "not an archive record");
    assert!(peek(&stack, &stack.queue_url).await.is_empty());

    // Fixed (the right payload bucket, the damaged object removed): the resume queues the big
    // event, through a payload object moto now holds, and nothing else.
    stack
        .s3
        .delete_object()
        .bucket(&stack.archive_bucket)
        .key(&bad_key)
        .send()
        .await
        .unwrap();
    let fixed = [
        ("ARCHIVE_BUCKET", stack.archive_bucket.as_str()),
        ("MAX_MESSAGE_BYTES", "8192"),
        ("PAYLOAD_BUCKET", stack.payload_bucket.as_str()),
    ];
    let done = ops_env(&stack, &fixed, &args, None);
    assert_eq!(done.code, 0, "{done:?}");
    let out = done.json();
    assert_eq!(event_ids(&out["queued"]), vec![big_id.clone()]);
    assert_eq!(out["not_queued"], json!([]));
    let queued = take_all(&stack, &stack.queue_url).await;
    assert_eq!(queued.len(), 1, "{queued:#?}");
    assert_eq!(queued[0]["event_id"], big_id.as_str());
    assert_eq!(queued[0]["replay"]["id"], replay_id.as_str());
    let object_key = queued[0]["payload_ref"]["key"].as_str().unwrap();
    let object: Envelope =
        serde_json::from_slice(&stack.object(&stack.payload_bucket, object_key).await).unwrap();
    assert_eq!(object.event_id, big_id);
    assert_eq!(object.payload, big.payload);
}

/// Sends `envelope` straight to the DLQ with the receivers' attributes and `extra` String ones.
async fn to_dlq(stack: &Stack, body: &str, envelope: &Envelope, extra: &[(&str, &str)]) -> String {
    let mut send = stack
        .sqs
        .send_message()
        .queue_url(&stack.dlq_url)
        .message_body(body);
    let attrs = envelope.attributes();
    let names = attrs
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .chain(extra.iter().copied());
    for (name, value) in names {
        send = send.message_attributes(
            name,
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .unwrap(),
        );
    }
    send.send().await.unwrap().message_id.unwrap()
}

#[tokio::test]
async fn dlq_redrive_moves_neither_refused_messages_nor_ones_whose_payload_object_is_gone() {
    let stack = Stack::new().await;
    let secret = marker();
    let normal = envelope_to_dlq(
        &stack,
        &format!("charge-{}", uuid::Uuid::new_v4().simple()),
        &secret,
    )
    .await;

    // A message the processor refused: a replay mark from a sender it does not trust.
    let received = time::macros::datetime!(2026-03-01 10:00:00.500 UTC);
    let (mut forged, _) = trybe_envelope("forged-1", received, 10);
    forged.replay = Some(shared::envelope::Replay {
        id: "1".repeat(32),
        requested_at: "2026-03-02T00:00:00Z".into(),
        archive_key: "trybe/2026-03-01/100000.500Z-00.json".into(),
    });
    let reason = "sender AROAFORGED:x may not act for provider trybe";
    let refused = to_dlq(
        &stack,
        &forged.to_sqs_body().unwrap(),
        &forged,
        &[("refused", reason), ("refused_sender", "AROAFORGED:x")],
    )
    .await;

    // Two claim-checked messages: one whose object is still there, one whose object expired.
    let limit = 4096;
    let mut checked = Vec::new();
    for id in ["kept-1", "expired-1"] {
        let (e, _) = trybe_envelope(id, received, 20_000);
        let out =
            shared::objects::message_for(&e, limit, shared::objects::Oversize::ClaimCheck).unwrap();
        let object = out.object.unwrap();
        stack
            .s3
            .put_object()
            .bucket(&stack.payload_bucket)
            .key(&object.key)
            .body(object.bytes.to_vec().into())
            .send()
            .await
            .unwrap();
        let id = to_dlq(&stack, &out.message.body, &e, &[]).await;
        checked.push((id, object.key, out.message.body));
    }
    let (kept, _, kept_body) = checked[0].clone();
    let (expired, expired_key, _) = checked[1].clone();
    stack
        .s3
        .delete_object()
        .bucket(&stack.payload_bucket)
        .key(&expired_key)
        .send()
        .await
        .unwrap();
    let originals = peek(&stack, &stack.dlq_url).await;
    assert_eq!(originals.len(), 4);

    // The listing shows the refusal and the sender.
    let listed = ops(&stack, &["dlq", "list"], None);
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(
        listed
            .stdout
            .contains(&format!("by the processor: {reason}")),
        "{listed:?}"
    );
    assert!(listed.stdout.contains("AROAFORGED:x"), "{listed:?}");
    let listed = ops(&stack, &["--json", "dlq", "list"], None).json();
    let r = listed["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["message_id"] == refused.as_str())
        .unwrap();
    assert_eq!(r["refused"], reason);
    assert_eq!(r["refused_sender"], "AROAFORGED:x");

    // Named by id, the refused one is refused; a claim-checked one without a payload bucket to
    // check it in is not moved either.
    let by_id = ops(
        &stack,
        &["dlq", "redrive", "--id", &refused, "--id", &kept, "--yes"],
        None,
    );
    assert_eq!(by_id.code, 1, "{by_id:?}");
    assert!(by_id.stdout.contains("--payload-bucket"), "{by_id:?}");
    assert!(
        by_id.stdout.contains("NOT MOVED: the processor refused it"),
        "{by_id:?}"
    );
    assert!(peek(&stack, &stack.queue_url).await.is_empty());
    assert_eq!(ids(&peek(&stack, &stack.dlq_url).await), ids(&originals));

    let env = [("PAYLOAD_BUCKET", stack.payload_bucket.as_str())];
    let run = ops_env(&stack, &env, &["dlq", "redrive", "--all", "--yes"], None);
    assert_eq!(run.code, 1, "refusals exit 1: {run:?}");
    assert!(run.stdout.contains("moved 2 of 2"), "{run:?}");
    assert!(run.stdout.contains("will NOT move 2 message(s)"), "{run:?}");
    let suggestion = "webhook-ops replay --provider trybe --from 2026-03-01T09:59:59.5Z --to 2026-03-01T10:00:01.5Z";
    assert_eq!(run.stdout.matches(suggestion).count(), 2, "both: {run:?}");
    assert!(
        run.stdout.contains(reason) && run.stdout.contains("OperatorPrincipalIds"),
        "{run:?}"
    );
    assert!(
        run.stdout.contains(&format!(
            "its payload object {expired_key} is no longer in the payload bucket"
        )) && run.stdout.contains("PayloadRetentionDays")
            && run.stdout.contains("the event's content is gone"),
        "{run:?}"
    );
    assert!(!run.stdout.contains(&secret), "{run:?}");

    // What moto holds: the normal message and the claim-checked one whose object exists are on
    // the queue; the refused one and the one without its object stay in the DLQ.
    let on_queue = peek(&stack, &stack.queue_url).await;
    let bodies: HashSet<String> = on_queue.iter().map(|m| m.body.clone().unwrap()).collect();
    let original_body = |id: &str| {
        originals
            .iter()
            .find(|m| m.message_id.as_deref() == Some(id))
            .unwrap()
            .body
            .clone()
            .unwrap()
    };
    assert_eq!(
        bodies,
        HashSet::from([original_body(&normal), kept_body]),
        "{on_queue:#?}"
    );
    assert_eq!(
        ids(&peek(&stack, &stack.dlq_url).await),
        HashSet::from([refused.clone(), expired.clone()])
    );

    // JSON: the same refusals, machine-readable; nothing more moves.
    let run = ops_env(
        &stack,
        &env,
        &["--json", "dlq", "redrive", "--all", "--yes"],
        None,
    );
    assert_eq!(run.code, 1, "{run:?}");
    let out = run.json();
    assert_eq!(out["moved"], json!([]));
    let refusals: HashSet<String> = out["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(refusals, HashSet::from([refused.clone(), expired.clone()]));
    assert_eq!(peek(&stack, &stack.queue_url).await.len(), 2);

    // The operator checked the refused one and vouches for it: moved, without the refusal.
    let run = ops_env(
        &stack,
        &env,
        &[
            "dlq",
            "redrive",
            "--id",
            &refused,
            "--accept-refused",
            &refused,
            "--yes",
        ],
        None,
    );
    assert_eq!(run.code, 0, "{run:?}");
    let on_queue = peek(&stack, &stack.queue_url).await;
    assert_eq!(on_queue.len(), 3);
    let copy = on_queue
        .iter()
        .find(|m| m.body.as_deref() == Some(original_body(&refused).as_str()))
        .expect("the refused message's copy");
    let attributes = copy.message_attributes.clone().unwrap_or_default();
    assert!(
        !attributes.contains_key("refused") && !attributes.contains_key("refused_sender"),
        "{attributes:?}"
    );
    assert!(attributes.contains_key("provider"), "{attributes:?}");
    assert_eq!(
        ids(&peek(&stack, &stack.dlq_url).await),
        HashSet::from([expired])
    );
}

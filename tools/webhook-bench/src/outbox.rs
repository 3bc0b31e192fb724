//! The ack path's AWS work under two designs, measured in this process with the functions' own
//! SDK configuration (`shared::runtime::sdk_config`, keep-alive through bench/aws_proxy.py):
//!
//! - **claim + send** (what the receivers do): a conditional PutItem of the claim, then a
//!   SendMessage of the envelope;
//! - **outbox**: one conditional PutItem of the claim *with the envelope in it*; DynamoDB
//!   Streams and a forwarder would then move it to SQS, off the ack path (not measured here:
//!   moto runs no stream triggers).
//!
//! Per event: CPU of this thread (the runtime is single-threaded, so hyper's and the SDK's work
//! is on it) and wall time. Build it optimised
//! (`cargo run --profile bench -p webhook-bench -- outbox`): a debug build's SDK is not the
//! functions'.

use std::time::Instant;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};
use shared::envelope::Envelope;
use shared::queue::{EventQueue, Message, SqsQueue};
use shared::store::{Claim, ClaimStore, DynamoClaims, Status};

use crate::procstat::{summarize, Summary};

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the pointer it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn envelope(body: &[u8], i: usize) -> Envelope {
    let payload: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let id = format!("evt-outbox-{i}-{}", uuid::Uuid::new_v4().simple());
    let mut envelope = Envelope {
        provider: "trybe".into(),
        event_id: id.clone(),
        event_type: "basket.submitted".into(),
        dedup_key: format!("trybe#site#id#{id}"),
        received_at: shared::clock::rfc3339(time::OffsetDateTime::now_utc()),
        occurred_at: None,
        tenant: Some("site".into()),
        content_type: Some("application/json".into()),
        body_sha256: shared::verify::sha256_hex(body),
        payload: None,
        payload_raw: None,
        payload_base64: None,
        payload_ref: None,
        replay: None,
    };
    envelope.set_payload(shared::envelope::Payload::Json(payload.into()));
    envelope
}

fn claim_of(envelope: &Envelope) -> Claim {
    Claim {
        pk: envelope.dedup_key.clone(),
        pending: Status::Received,
        event_type: envelope.event_type.clone(),
        fingerprint: envelope.body_sha256.clone(),
        now: time::OffsetDateTime::now_utc(),
        lease: std::time::Duration::from_secs(10),
        ttl: std::time::Duration::from_secs(7 * 86_400),
        token: shared::pipeline::new_token(),
    }
}

/// One conditional PutItem of the claim with the envelope in it (the outbox's only call).
async fn put_outbox(
    ddb: &aws_sdk_dynamodb::Client,
    table: &str,
    claim: &Claim,
    message: &Message,
) -> Result<(), String> {
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: i64| AttributeValue::N(v.to_string());
    let now = claim.now.unix_timestamp();
    ddb.put_item()
        .table_name(table)
        .item("pk", s(&claim.pk))
        .item("status", s("RECEIVED"))
        .item("lease_until_ms", n(now * 1000 + 10_000))
        .item("expires_at", n(now + claim.ttl.as_secs() as i64))
        .item("received_at", s(&shared::clock::rfc3339(claim.now)))
        .item("event_type", s(&claim.event_type))
        .item("body_sha256", s(&claim.fingerprint))
        .item("claim_token", s(&claim.token))
        .item("envelope", s(&message.body))
        .condition_expression(shared::store::condition_expression())
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":now", n(now))
        .expression_attribute_values(":now_ms", n(now * 1000))
        .expression_attribute_values(":pending", s("RECEIVED"))
        .expression_attribute_values(":token", s(&claim.token))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            format!(
                "PutItem: {}",
                aws_sdk_dynamodb::error::DisplayErrorContext(e)
            )
        })
}

pub struct Figures {
    pub cpu_us: Option<Summary>,
    pub wall_ms: Option<Summary>,
    pub calls: usize,
}

/// Runs `events` iterations of one design on its own fresh table and queue.
pub async fn measure(
    outbox: bool,
    events: usize,
    moto: &str,
    body: &[u8],
) -> Result<Figures, String> {
    let tag = format!(
        "{}-{}",
        if outbox { "outbox" } else { "claim-send" },
        uuid::Uuid::new_v4().simple()
    );
    let stack = crate::setup::fresh_stack(moto, &tag)?;
    let table = stack[0].1.clone();
    let queue_url = stack[1].1.clone();
    let sdk = shared::runtime::sdk_config().await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let claims = DynamoClaims::new(ddb.clone(), &table);
    let queue = SqsQueue::new(aws_sdk_sqs::Client::new(&sdk), &queue_url);
    let prepared: Vec<(Claim, Message)> = (0..events + 20)
        .map(|i| {
            let e = envelope(body, i);
            (
                claim_of(&e),
                Message::from_envelope(&e).expect("serializable"),
            )
        })
        .collect();
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    for (i, (claim, message)) in prepared.iter().enumerate() {
        let (cpu0, wall0) = (thread_cpu_ns(), Instant::now());
        if outbox {
            put_outbox(&ddb, &table, claim, message).await?;
        } else {
            claims.claim(claim).await.map_err(|e| e.to_string())?;
            queue.send(std::slice::from_ref(message)).await[0]
                .as_ref()
                .map_err(|e| e.to_string())?;
        }
        // The first 20 open the connections: not counted.
        if i >= 20 {
            cpu.push((thread_cpu_ns() - cpu0) as f64 / 1000.0);
            wall.push(wall0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(Figures {
        cpu_us: summarize(&cpu),
        wall_ms: summarize(&wall),
        calls: if outbox { 1 } else { 2 },
    })
}

fn summary_json(s: &Option<Summary>) -> Value {
    s.map_or(Value::Null, |s| {
        json!({"n": s.n, "min": s.min, "median": s.median, "p99": s.p99, "max": s.max, "mean": s.mean})
    })
}

/// The report's JSON for one design.
pub fn to_json(name: &str, f: &Figures) -> Value {
    json!({
        "design": name,
        "calls_on_the_ack_path": f.calls,
        "cpu_us": summary_json(&f.cpu_us),
        "wall_ms": summary_json(&f.wall_ms),
    })
}

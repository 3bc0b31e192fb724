//! The dead-letter queue: list what is in it without consuming it, and move messages back to
//! the main queue without ever losing one (a message leaves the DLQ only after the main queue
//! accepted its copy).

use std::collections::{HashMap, HashSet};

use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, Message, MessageAttributeValue,
    MessageSystemAttributeName, QueueAttributeName,
};
use aws_sdk_sqs::Client;
use clap::Subcommand;
use serde_json::{json, Map, Value};

use crate::text::{duration_ms, now_ms, or_dash, time_ms};
use crate::{confirm, Ctx, Fail, Outcome};

/// How long a listing holds the messages it received before it makes them visible again (it
/// does so at once; this bounds how long they stay hidden if the tool dies in between).
const HOLD_SECONDS: i32 = 30;

const LIST_ABOUT: &str = "List the messages in the dead-letter queue: message id, provider, event type, tenant, event id, \
dedup key, age (from SentTimestamp) and receive count (ApproximateReceiveCount). Payloads are not \
printed unless --show-payload.\n\n\
Listing does not consume the messages: it receives them with a short visibility timeout (30 s) and \
makes each visible again at once (ChangeMessageVisibility to 0), so nothing is deleted. While it \
runs they are briefly invisible to other consumers, and each listing counts as one more receive \
in ApproximateReceiveCount.";

const REDRIVE_ABOUT: &str = "Move messages from the dead-letter queue back to the main queue, with the same body and message \
attributes. Each message is deleted from the DLQ only after the main queue accepted its copy, so \
none is lost; if that delete fails the message is in both queues, which the processor's \
processed# claim absorbs. Prints what it will move and asks for `yes` unless --yes.\n\n\
It moves exactly the messages it showed: --all means those in the DLQ when it looked, not ones \
that arrive while it asks. The redriven copies get new message ids. An event redriven after \
DEDUP_TTL_SECONDS (7 days) is new again to the processor and runs its handler again.\n\n\
Some messages are never moved, with --id or --all; each is shown with why and what to do \
instead, stays in the DLQ, and the command exits 1:\n\
- a message the processor refused (message attribute `refused`, with the sender in \
`refused_sender`): redrive sends as an operator, whom the processor trusts for any provider, so \
moving it would launder a forged message. A genuine event can be replayed from the archive; the \
plan prints the command. Where it cannot (the archive is off) and you have checked that the \
message is genuine (a receiver role replaced while its messages waited on the queue: \
refused_sender is the old role's id), --accept-refused MESSAGE_ID moves that one message; its \
copy, sent by you, no longer carries the refusal.\n\
- a claim-checked message whose payload object is no longer in the payload bucket (expired after \
the stack's PayloadRetentionDays): the processor would fail on it forever. Checked with \
HeadObject in --payload-bucket (or $PAYLOAD_BUCKET); without a payload bucket such a message is \
not moved.";

#[derive(Subcommand)]
pub enum DlqCommand {
    /// List the DLQ's messages without consuming them (no payloads unless --show-payload).
    #[command(long_about = LIST_ABOUT)]
    List {
        /// Also print each message's payload (the envelope's payload, or the whole body of a
        /// message that is not an envelope). It may hold personal data.
        #[arg(long)]
        show_payload: bool,
        /// List at most this many messages.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        max: u32,
    },
    /// Move DLQ messages back to the main queue (asks first unless --yes).
    #[command(long_about = REDRIVE_ABOUT)]
    Redrive {
        /// A DLQ message id, as `dlq list` shows it (repeatable).
        #[arg(
            long = "id",
            value_name = "MESSAGE_ID",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        ids: Vec<String>,
        /// Every message in the DLQ (except those it refuses, see above).
        #[arg(long)]
        all: bool,
        /// Move this message although the processor refused it, once you have checked it is
        /// genuine (repeatable; it must also be selected by --id or --all).
        #[arg(long = "accept-refused", value_name = "MESSAGE_ID")]
        accept_refused: Vec<String>,
        /// The payload bucket, to check that a claim-checked message's object still exists
        /// [default: $PAYLOAD_BUCKET].
        #[arg(long, value_name = "NAME")]
        payload_bucket: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

pub async fn run(ctx: &Ctx, command: DlqCommand) -> Outcome {
    match command {
        DlqCommand::List { show_payload, max } => list(ctx, show_payload, max as usize).await,
        DlqCommand::Redrive {
            ids,
            all,
            accept_refused,
            payload_bucket,
            yes,
        } => redrive(ctx, ids, all, &accept_refused, payload_bucket, yes).await,
    }
}

/// What the operator sees of a message: never its payload.
#[derive(Debug, Clone, PartialEq)]
struct Summary {
    message_id: String,
    provider: Option<String>,
    event_type: Option<String>,
    tenant: Option<String>,
    event_id: Option<String>,
    dedup_key: Option<String>,
    received_at: Option<String>,
    sent_at_ms: Option<i64>,
    receive_count: Option<u64>,
    /// The body parsed as an envelope (else the fields come from the message attributes).
    envelope: bool,
    body_bytes: usize,
    /// Why the processor refused the message and moved it here itself (message attribute
    /// `refused`), and the SenderId it refused (`refused_sender`).
    refused: Option<String>,
    refused_sender: Option<String>,
    /// Why the processor rejected it at its first receive and moved it here itself (message
    /// attribute `rejected`: unreadable, refused by its handler, payload object unusable).
    rejected: Option<String>,
    /// A claim-checked envelope's payload object key (`payload_ref.key`).
    payload_ref: Option<String>,
}

fn id_of(m: &Message) -> String {
    m.message_id.clone().unwrap_or_default()
}

fn summarize(m: &Message) -> Summary {
    let body = m.body.as_deref().unwrap_or("");
    let parsed: Option<Map<String, Value>> =
        serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| match v {
                Value::Object(o) if o.contains_key("dedup_key") && o.contains_key("provider") => {
                    Some(o)
                }
                _ => None,
            });
    let field = |name: &str| {
        parsed
            .as_ref()
            .and_then(|o| o.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let attribute = |name: &str| {
        m.message_attributes
            .as_ref()
            .and_then(|a| a.get(name))
            .and_then(|v| v.string_value.clone())
    };
    let system = |name: MessageSystemAttributeName| {
        m.attributes
            .as_ref()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse::<i64>().ok())
    };
    Summary {
        message_id: id_of(m),
        provider: field("provider").or_else(|| attribute("provider")),
        event_type: field("event_type").or_else(|| attribute("event_type")),
        tenant: field("tenant"),
        event_id: field("event_id"),
        dedup_key: field("dedup_key"),
        received_at: field("received_at"),
        sent_at_ms: system(MessageSystemAttributeName::SentTimestamp),
        receive_count: system(MessageSystemAttributeName::ApproximateReceiveCount)
            .map(|n| n.max(0) as u64),
        envelope: parsed.is_some(),
        body_bytes: body.len(),
        refused: attribute(REFUSED),
        refused_sender: attribute(REFUSED_SENDER),
        rejected: attribute(REJECTED),
        payload_ref: parsed
            .as_ref()
            .and_then(|o| o.get("payload_ref"))
            .and_then(|r| r.get("key"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

/// The message attributes the processor sets on a message it moves to the DLQ itself: refused
/// for trust reasons (the reason, and the SenderId it refused), or rejected (the reason).
use shared::queue::REJECTED;
use shared::trust::{REFUSED, REFUSED_SENDER};

/// The content, for --show-payload: the envelope's payload field, or the whole body.
fn payload(m: &Message) -> (&'static str, Value) {
    let body = m.body.as_deref().unwrap_or("");
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(body) {
        if o.contains_key("dedup_key") {
            for name in ["payload", "payload_raw", "payload_base64"] {
                if let Some(v) = o.get(name) {
                    return (name, v.clone());
                }
            }
            return ("payload", Value::Null);
        }
    }
    ("body", Value::String(body.to_owned()))
}

fn summary_json(s: &Summary, now: i64) -> Value {
    json!({
        "message_id": s.message_id,
        "provider": s.provider,
        "event_type": s.event_type,
        "tenant": s.tenant,
        "event_id": s.event_id,
        "dedup_key": s.dedup_key,
        "received_at": s.received_at,
        "sent_at": s.sent_at_ms.map(time_ms),
        "age_seconds": s.sent_at_ms.map(|t| (now - t).max(0) / 1000),
        "receive_count": s.receive_count,
        "envelope": s.envelope,
        "body_bytes": s.body_bytes,
        "payload_ref": s.payload_ref,
        "refused": s.refused,
        "refused_sender": s.refused_sender,
        "rejected": s.rejected,
    })
}

fn summary_text(s: &Summary, now: i64) -> String {
    let mut out = format!("message {}\n", s.message_id);
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("  {label:<12} {value}\n"));
    };
    line("provider", or_dash(&s.provider));
    line("event type", or_dash(&s.event_type));
    if s.envelope {
        line(
            "tenant",
            s.tenant.clone().unwrap_or_else(|| "(none)".into()),
        );
        line("event id", or_dash(&s.event_id));
        line("dedup key", or_dash(&s.dedup_key));
        line("received at", or_dash(&s.received_at));
    } else {
        line(
            "body",
            format!(
                "not an envelope ({} bytes; provider and type from the message attributes)",
                s.body_bytes
            ),
        );
    }
    line(
        "age",
        match s.sent_at_ms {
            Some(t) => format!("{} (sent {})", duration_ms((now - t).max(0)), time_ms(t)),
            None => "-".into(),
        },
    );
    line(
        "receives",
        s.receive_count
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into()),
    );
    if let Some(key) = &s.payload_ref {
        line("payload ref", key.clone());
    }
    if let Some(reason) = &s.refused {
        line("REFUSED", format!("by the processor: {reason}"));
        line("sender", or_dash(&s.refused_sender));
    } else if let Some(sender) = &s.refused_sender {
        line("sender", sender.clone());
    }
    if let Some(reason) = &s.rejected {
        line("rejected", format!("by the processor: {reason}"));
    }
    out
}

/// Receives up to `max` messages, each held invisible for `hold` seconds; a pass ends at an
/// empty receive. A message received twice (its hold ran out) keeps its newest receipt handle.
async fn receive_pass(
    sqs: &Client,
    url: &str,
    max: usize,
    hold: i32,
    wait: i32,
) -> Result<Vec<Message>, Fail> {
    let mut held: Vec<Message> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut idle = 0;
    while held.len() < max && idle < 3 {
        let n = (max - held.len()).min(10) as i32;
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(n)
            .visibility_timeout(hold)
            .wait_time_seconds(wait)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await;
        let batch = match got {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                let _ = restore(sqs, url, &held).await;
                return Err(Fail::aws("ReceiveMessage", e));
            }
        };
        if batch.is_empty() {
            break;
        }
        let before = held.len();
        for m in batch {
            match index.get(&id_of(&m)) {
                Some(&i) => held[i] = m,
                None => {
                    index.insert(id_of(&m), held.len());
                    held.push(m);
                }
            }
        }
        idle = if held.len() == before { idle + 1 } else { 0 };
    }
    Ok(held)
}

/// Makes `messages` visible again (ChangeMessageVisibility 0); returns how many could not be.
async fn restore(sqs: &Client, url: &str, messages: &[Message]) -> usize {
    let mut failed = 0;
    for chunk in messages.chunks(10) {
        let entries: Vec<_> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .set_receipt_handle(m.receipt_handle.clone())
                    .visibility_timeout(0)
                    .build()
                    .ok()
            })
            .collect();
        failed += chunk.len() - entries.len();
        if entries.is_empty() {
            continue;
        }
        match sqs
            .change_message_visibility_batch()
            .queue_url(url)
            .set_entries(Some(entries.clone()))
            .send()
            .await
        {
            Ok(out) => failed += out.failed.len(),
            Err(_) => failed += entries.len(),
        }
    }
    if failed > 0 {
        eprintln!(
            "webhook-ops: warning: {failed} message(s) could not be made visible again; they stay hidden until their {HOLD_SECONDS} s visibility timeout ends"
        );
    }
    failed
}

/// (visible, in flight), approximately, as SQS counts them.
async fn counts(sqs: &Client, url: &str) -> Result<(u64, u64), Fail> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| Fail::aws("GetQueueAttributes", e))?;
    let attrs = out.attributes.unwrap_or_default();
    let n = |k: QueueAttributeName| {
        attrs
            .get(&k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    };
    Ok((
        n(QueueAttributeName::ApproximateNumberOfMessages),
        n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    ))
}

async fn list(ctx: &Ctx, show_payload: bool, max: usize) -> Outcome {
    let sqs = Client::new(&ctx.sdk);
    let dlq = ctx.dlq_url(&sqs).await?;
    let (visible, in_flight) = counts(&sqs, &dlq).await?;
    let held = receive_pass(&sqs, &dlq, max, HOLD_SECONDS, ctx.wait_seconds).await?;
    let not_restored = restore(&sqs, &dlq, &held).await;
    let now = now_ms();
    if ctx.json {
        let messages: Vec<Value> = held
            .iter()
            .map(|m| {
                let mut v = summary_json(&summarize(m), now);
                if show_payload {
                    let (name, content) = payload(m);
                    v[name] = content;
                }
                v
            })
            .collect();
        let out = json!({
            "dlq_url": dlq,
            "approximate_visible": visible,
            "approximate_in_flight": in_flight,
            "listed": messages.len(),
            "truncated": held.len() >= max,
            "messages": messages,
        });
        println!("{out:#}");
    } else {
        println!(
            "dead-letter queue {dlq}: about {visible} visible, {in_flight} in flight; listing {} (left in place, visible again)",
            held.len()
        );
        if held.len() >= max {
            println!("showing the first {max}; --max N lists more");
        }
        for m in &held {
            println!();
            print!("{}", summary_text(&summarize(m), now));
            if show_payload {
                let (name, content) = payload(m);
                let content = match content {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                println!("  {name:<12} {content}");
            }
        }
    }
    if not_restored > 0 {
        return Err(Fail::Error(format!(
            "{not_restored} message(s) stay invisible for up to {HOLD_SECONDS} s (not lost)"
        )));
    }
    Ok(())
}

/// Copies `m` to `queue` (same body and message attributes); the new message id.
async fn send_copy(sqs: &Client, queue: &str, m: &Message) -> Result<String, Fail> {
    let body = m
        .body
        .as_deref()
        .ok_or_else(|| Fail::Error(format!("message {} has no body", id_of(m))))?;
    let mut attributes = HashMap::new();
    for (name, v) in m.message_attributes.clone().unwrap_or_default() {
        // A refusal the operator overrode does not travel with the copy.
        if name == REFUSED || name == REFUSED_SENDER {
            continue;
        }
        let value = MessageAttributeValue::builder()
            .data_type(v.data_type)
            .set_string_value(v.string_value)
            .set_binary_value(v.binary_value)
            .build()
            .map_err(|e| Fail::Error(format!("attribute {name} of {}: {e}", id_of(m))))?;
        attributes.insert(name, value);
    }
    let out = sqs
        .send_message()
        .queue_url(queue)
        .message_body(body)
        .set_message_attributes((!attributes.is_empty()).then_some(attributes))
        .send()
        .await
        .map_err(|e| Fail::aws(&format!("SendMessage of {}", id_of(m)), e))?;
    Ok(out.message_id.unwrap_or_default())
}

/// What to do instead of redriving the event `s` names: replay it from the archive.
fn replay_instead(s: &Summary) -> String {
    let command = match (&s.provider, &s.received_at) {
        (Some(provider), Some(at)) if s.envelope => crate::replay::suggestion(provider, at),
        _ => None,
    };
    match command {
        Some(command) => format!(
            "replay it from the archive, which holds only requests whose signature a receiver \
             verified (the command shows what it would queue and asks first):\n    {command}"
        ),
        None => "its body is not an envelope with a provider and a received time, so there is \
                 no archived request to replay it from"
            .into(),
    }
}

/// The payload bucket, for the HeadObject checks of claim-checked messages.
struct PayloadBucket {
    s3: aws_sdk_s3::Client,
    name: String,
}

/// Why `s` must not go back to the queue, if it must not: what the operator reads in the plan.
/// `accepted`: the operator vouched for this refused message (`--accept-refused`).
async fn refusal(payloads: Option<&PayloadBucket>, s: &Summary, accepted: bool) -> Option<String> {
    if let Some(reason) = s.refused.as_ref().filter(|_| !accepted) {
        return Some(format!(
            "the processor refused it ({reason}; sender {}). Redrive sends as an operator, whom \
             the processor trusts for any provider: moving it would let a possibly forged \
             message run. If the event is genuine, {}\n  If the sender is an operator who may \
             replay, list the part of its id before ':' in the stack's OperatorPrincipalIds \
             first. Checked and genuine, with no archive to replay from: --accept-refused {}.",
            s.refused_sender.as_deref().unwrap_or("-"),
            replay_instead(s),
            s.message_id
        ));
    }
    let key = s.payload_ref.as_ref()?;
    let Some(bucket) = payloads else {
        return Some(format!(
            "its content waits in the payload bucket (payload_ref {key}): pass --payload-bucket \
             or set PAYLOAD_BUCKET, so that redrive can check the object still exists"
        ));
    };
    let head = bucket
        .s3
        .head_object()
        .bucket(&bucket.name)
        .key(key)
        .send()
        .await;
    match head {
        Ok(_) => None,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Some(format!(
            "its payload object {key} is no longer in the payload bucket {} (expired after the \
             stack's PayloadRetentionDays): the processor would fail on it forever. To run the \
             event again, {}\n  If the archive is off (ArchiveEnabled false), the event's \
             content is gone: it cannot be run again.",
            bucket.name,
            replay_instead(s)
        )),
        Err(e) => Some(format!(
            "its payload object {key} could not be checked in bucket {} ({}): not moved; try \
             again",
            bucket.name,
            aws_sdk_s3::error::DisplayErrorContext(e)
        )),
    }
}

fn refused_text(s: &Summary, reason: &str, now: i64) -> String {
    format!("{}  NOT MOVED: {reason}\n", summary_text(s, now))
}

fn refused_json(s: &Summary, reason: &str, now: i64) -> Value {
    let mut v = summary_json(s, now);
    v["not_moved_because"] = json!(reason);
    v
}

async fn redrive(
    ctx: &Ctx,
    ids: Vec<String>,
    all: bool,
    accept_refused: &[String],
    payload_bucket: Option<String>,
    yes: bool,
) -> Outcome {
    let sqs = Client::new(&ctx.sdk);
    let dlq = ctx.dlq_url(&sqs).await?;
    let queue = ctx.queue_url(&sqs).await?;
    if dlq == queue {
        return Err(Fail::Usage(
            "the queue and the dead-letter queue are the same queue".into(),
        ));
    }

    // First pass: what is there, to show. Everything is made visible again before asking, so
    // nothing stays hidden while the operator reads.
    let seen = receive_pass(&sqs, &dlq, usize::MAX, HOLD_SECONDS, ctx.wait_seconds).await?;
    if restore(&sqs, &dlq, &seen).await > 0 {
        return Err(Fail::Error(
            "could not make the DLQ's messages visible again; nothing moved, try again in 30 s"
                .into(),
        ));
    }
    let selected: Vec<&Message> = if all {
        seen.iter().collect()
    } else {
        seen.iter().filter(|m| ids.contains(&id_of(m))).collect()
    };
    let found: HashSet<String> = selected.iter().map(|m| id_of(m)).collect();
    let mut missing: Vec<&String> = ids.iter().filter(|id| !found.contains(*id)).collect();
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        return Err(Fail::Error(format!(
            "not in the dead-letter queue: {}; nothing moved",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let now = now_ms();
    if selected.is_empty() {
        if ctx.json {
            println!(
                "{:#}",
                json!({"dlq_url": dlq, "queue_url": queue, "planned": [], "moved": [], "refused": []})
            );
        } else {
            println!("the dead-letter queue {dlq} is empty: nothing to move");
        }
        return Ok(());
    }
    let payloads =
        crate::from_flag_or_env(payload_bucket.as_deref(), &["PAYLOAD_BUCKET"]).map(|name| {
            PayloadBucket {
                s3: shared::objects::S3Objects::client(&ctx.sdk),
                name,
            }
        });
    let mut planned: Vec<Summary> = Vec::new();
    let mut refused: Vec<(Summary, String)> = Vec::new();
    for m in &selected {
        let s = summarize(m);
        let accepted = accept_refused.contains(&s.message_id);
        match refusal(payloads.as_ref(), &s, accepted).await {
            Some(reason) => refused.push((s, reason)),
            None => planned.push(s),
        }
    }
    let refused_out = || -> Vec<Value> {
        refused
            .iter()
            .map(|(s, r)| refused_json(s, r, now))
            .collect()
    };
    if !ctx.json {
        if !planned.is_empty() {
            println!(
                "will move {} message(s) from the dead-letter queue {dlq}\n  to the queue {queue}\n  (same body and attributes; each deleted from the DLQ only after the queue accepted its copy)",
                planned.len()
            );
            for s in &planned {
                println!();
                print!("{}", summary_text(s, now));
            }
        }
        if !refused.is_empty() {
            println!(
                "\nwill NOT move {} message(s) (they stay in the dead-letter queue):",
                refused.len()
            );
            for (s, reason) in &refused {
                println!();
                print!("{}", refused_text(s, reason, now));
            }
        }
    } else {
        eprintln!(
            "will move {} message(s) from {dlq} to {queue}; {} refused",
            planned.len(),
            refused.len()
        );
    }
    let refused_error = || {
        Fail::Error(format!(
            "{} message(s) not moved: refused, left in the dead-letter queue (see why above)",
            refused.len()
        ))
    };
    if planned.is_empty() {
        if ctx.json {
            println!(
                "{:#}",
                json!({"dlq_url": dlq, "queue_url": queue, "planned": [], "moved": [], "refused": refused_out()})
            );
        }
        return Err(refused_error());
    }
    if !yes
        && !confirm(&format!(
            "Move these {} message(s) back to the queue?",
            planned.len()
        ))
    {
        return Err(Fail::Error("not confirmed: nothing moved".into()));
    }

    // Second pass: take the planned messages again, copy each, delete it once copied.
    let plan: HashSet<String> = planned.iter().map(|s| s.message_id.clone()).collect();
    let mut moved: Vec<(String, String)> = Vec::new();
    let mut others: HashMap<String, Message> = HashMap::new();
    let mut failure: Option<String> = None;
    let mut idle = 0;
    'passes: while moved.len() < plan.len() && idle < 3 {
        let got = sqs
            .receive_message()
            .queue_url(&dlq)
            .max_number_of_messages(10)
            .visibility_timeout(HOLD_SECONDS)
            .wait_time_seconds(ctx.wait_seconds)
            .message_attribute_names("All")
            .send()
            .await;
        let batch = match got {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                failure = Some(Fail::aws("ReceiveMessage", e).to_string());
                break;
            }
        };
        if batch.is_empty() {
            break;
        }
        let before = moved.len() + others.len();
        let mut batch = batch.into_iter();
        while let Some(m) = batch.next() {
            let id = id_of(&m);
            if !plan.contains(&id) || moved.iter().any(|(done, _)| *done == id) {
                others.insert(id, m);
                continue;
            }
            let copy = match send_copy(&sqs, &queue, &m).await {
                Ok(copy) => copy,
                Err(e) => {
                    // Not copied: it stays in the DLQ, visible again below.
                    failure = Some(e.to_string());
                    others.insert(id, m);
                    others.extend(batch.map(|m| (id_of(&m), m)));
                    break 'passes;
                }
            };
            if !ctx.json {
                println!("moved {id} -> queue message {copy}");
            }
            let deleted = sqs
                .delete_message()
                .queue_url(&dlq)
                .set_receipt_handle(m.receipt_handle.clone())
                .send()
                .await;
            moved.push((id.clone(), copy.clone()));
            if let Err(e) = deleted {
                failure = Some(format!(
                    "{}: message {id} is now on the queue as {copy} but still in the DLQ (it reappears there within {HOLD_SECONDS} s); do not redrive it again, the processor's processed# claim absorbs the extra copy",
                    Fail::aws("DeleteMessage", e)
                ));
                others.extend(batch.map(|m| (id_of(&m), m)));
                break 'passes;
            }
        }
        idle = if moved.len() + others.len() == before {
            idle + 1
        } else {
            0
        };
    }
    let others: Vec<Message> = others.into_values().collect();
    restore(&sqs, &dlq, &others).await;

    let moved_ids: HashSet<&String> = moved.iter().map(|(id, _)| id).collect();
    let mut not_moved: Vec<&String> = plan.iter().filter(|id| !moved_ids.contains(id)).collect();
    not_moved.sort();
    if ctx.json {
        let out = json!({
            "dlq_url": dlq,
            "queue_url": queue,
            "planned": planned.iter().map(|s| summary_json(s, now)).collect::<Vec<_>>(),
            "moved": moved.iter().map(|(from, to)| json!({"dlq_message_id": from, "queue_message_id": to})).collect::<Vec<_>>(),
            "not_moved": not_moved,
            "refused": refused_out(),
        });
        println!("{out:#}");
    } else {
        println!("moved {} of {} message(s)", moved.len(), plan.len());
        if !refused.is_empty() {
            println!(
                "{} refused message(s) left in the dead-letter queue",
                refused.len()
            );
        }
    }
    if let Some(f) = failure {
        return Err(Fail::Error(f));
    }
    if !not_moved.is_empty() {
        return Err(Fail::Error(format!(
            "not found in the DLQ on the second look (moved or deleted meanwhile?): {}",
            not_moved
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if !refused.is_empty() {
        return Err(refused_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str) -> Message {
        Message::builder()
            .message_id("m-1")
            .body(body)
            .attributes(MessageSystemAttributeName::SentTimestamp, "1700000000000")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "6")
            .message_attributes(
                "provider",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("trybe")
                    .build()
                    .unwrap(),
            )
            .message_attributes(
                "event_type",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("customer.created")
                    .build()
                    .unwrap(),
            )
            .build()
    }

    const ENVELOPE: &str = r#"{"provider":"trybe","event_id":"e-1","event_type":"customer.created","dedup_key":"trybe#s1#id#e-1","received_at":"2024-01-01T00:00:00Z","tenant":"s1","body_sha256":"00","payload":{"email":"alex@example.com"}}"#;

    #[test]
    fn a_summary_names_the_event_and_never_its_payload() {
        let m = message(ENVELOPE);
        let s = summarize(&m);
        assert_eq!(s.provider.as_deref(), Some("trybe"));
        assert_eq!(s.tenant.as_deref(), Some("s1"));
        assert_eq!(s.dedup_key.as_deref(), Some("trybe#s1#id#e-1"));
        assert_eq!(s.receive_count, Some(6));
        let now = 1_700_000_300_000;
        let text = summary_text(&s, now);
        let json = summary_json(&s, now).to_string();
        for out in [&text, &json] {
            assert!(!out.contains("alex"), "{out}");
            assert!(
                out.contains("e-1") && out.contains("customer.created"),
                "{out}"
            );
        }
        assert!(text.contains("5m 0s"), "{text}");
        assert_eq!(summary_json(&s, now)["age_seconds"], 300);
        assert_eq!(
            payload(&m),
            ("payload", json!({"email": "alex@example.com"}))
        );
    }

    #[test]
    fn a_body_that_is_not_an_envelope_is_summarized_from_its_attributes() {
        let m = message("{not an envelope, alex@example.com");
        let s = summarize(&m);
        assert!(!s.envelope);
        assert_eq!(s.provider.as_deref(), Some("trybe"));
        assert_eq!(s.event_type.as_deref(), Some("customer.created"));
        let text = summary_text(&s, 1_700_000_000_000);
        assert!(
            text.contains("not an envelope") && !text.contains("alex"),
            "{text}"
        );
        assert_eq!(payload(&m).0, "body");
    }

    #[tokio::test]
    async fn a_refused_message_is_shown_as_refused_and_never_moved() {
        let mut m = message(ENVELOPE);
        for (name, value) in [
            (
                REFUSED,
                "sender AROAEXAMPLE:x may not act for provider trybe",
            ),
            (REFUSED_SENDER, "AROAEXAMPLE:x"),
        ] {
            m.message_attributes
                .get_or_insert_with(HashMap::new)
                .insert(
                    name.into(),
                    MessageAttributeValue::builder()
                        .data_type("String")
                        .string_value(value)
                        .build()
                        .unwrap(),
                );
        }
        let s = summarize(&m);
        assert_eq!(s.refused_sender.as_deref(), Some("AROAEXAMPLE:x"));
        let text = summary_text(&s, 1_700_000_000_000);
        assert!(
            text.contains("REFUSED") && text.contains("may not act for provider trybe"),
            "{text}"
        );
        let json = summary_json(&s, 1_700_000_000_000);
        assert_eq!(json["refused_sender"], "AROAEXAMPLE:x");
        let why = refusal(None, &s, false).await.expect("refused");
        assert!(
            why.contains("webhook-ops replay --provider trybe --from 2023-12-31T23:59:59Z --to 2024-01-01T00:00:01Z"),
            "{why}"
        );
        assert!(refusal(None, &summarize(&message(ENVELOPE)), false)
            .await
            .is_none());
        assert!(
            refusal(None, &s, true).await.is_none(),
            "moved when the operator vouched for it"
        );
    }

    #[tokio::test]
    async fn a_rejected_message_shows_why_and_is_moved() {
        let mut m = message(ENVELOPE);
        m.message_attributes
            .get_or_insert_with(HashMap::new)
            .insert(
                REJECTED.into(),
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("rejected: customer.created without a customer id")
                    .build()
                    .unwrap(),
            );
        let s = summarize(&m);
        let text = summary_text(&s, 1_700_000_000_000);
        assert!(
            text.contains("rejected") && text.contains("without a customer id"),
            "{text}"
        );
        assert_eq!(
            summary_json(&s, 1_700_000_000_000)["rejected"],
            "rejected: customer.created without a customer id"
        );
        assert!(
            refusal(None, &s, false).await.is_none(),
            "redriven once fixed"
        );
    }

    #[tokio::test]
    async fn a_claim_checked_message_is_not_moved_without_a_payload_bucket_to_check() {
        let body = ENVELOPE.replace(
            r#""payload":{"email":"alex@example.com"}"#,
            r#""payload_ref":{"key":"trybe/ab/cd.json","bytes":10,"sha256":"00"}"#,
        );
        let s = summarize(&message(&body));
        assert_eq!(s.payload_ref.as_deref(), Some("trybe/ab/cd.json"));
        let why = refusal(None, &s, false).await.expect("refused");
        assert!(why.contains("--payload-bucket"), "{why}");
    }
}

//! Replay: put archived events on the queue again, on purpose. Each message says it is a replay
//! (the envelope's `replay` field); the processor then runs the event under a claim of its own,
//! `processed#<dedup key>#replay#<replay id>`, so the event runs again however often it ran
//! before, and once per replay however often SQS delivers it.

use std::collections::HashSet;

use clap::Args;
use serde_json::{json, Value};
use shared::envelope::{Envelope, Replay};
use shared::objects::{self, ArchiveRecord, ObjectStore, S3Objects};
use shared::queue::{EventQueue, Message, SqsQueue};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::{confirm, from_flag_or_env, Ctx, Fail, Outcome};

pub const ABOUT: &str =
    "Queue archived events again (the archive is on when the stack's ArchiveEnabled is true). \
Either one archived request (--key, as the archive names it; --event-id narrows it to one of its \
events) or every request of one provider received in [--from, --to).\n\n\
Each message is marked as a replay: the processor runs the event again, even though it ran \
before, under a claim of its own (processed#<dedup key>#replay#<replay id>), so a redelivered \
replay message still runs once. An event archived more than once in the range (a provider's \
retries) is queued once. Prints what it will queue, without payloads, and asks for `yes` unless \
--yes. Events too large for the queue go through the payload bucket, as the receivers do.";

#[derive(Args)]
pub struct ReplayArgs {
    /// The archive bucket [default: $ARCHIVE_BUCKET].
    #[arg(long, value_name = "NAME")]
    archive_bucket: Option<String>,
    /// The payload bucket, for events too large for the queue [default: $PAYLOAD_BUCKET].
    #[arg(long, value_name = "NAME")]
    payload_bucket: Option<String>,
    /// One archived request, by its archive key (`<provider>/<date>/<time>Z-<hash>.json`).
    #[arg(long, value_name = "ARCHIVE_KEY", conflicts_with_all = ["provider", "from", "to"], required_unless_present = "provider")]
    key: Option<String>,
    /// Only this event of the archived request (its event id).
    #[arg(long, value_name = "EVENT_ID", requires = "key")]
    event_id: Option<String>,
    /// Every archived request of this provider in the time range.
    #[arg(long, value_parser = crate::claim::provider_names(), requires_all = ["from", "to"])]
    provider: Option<String>,
    /// Start of the range, inclusive (RFC 3339, e.g. 2026-12-01T10:00:00Z).
    #[arg(long, value_parser = timestamp, value_name = "TIME")]
    from: Option<OffsetDateTime>,
    /// End of the range, exclusive (RFC 3339).
    #[arg(long, value_parser = timestamp, value_name = "TIME")]
    to: Option<OffsetDateTime>,
    /// Do not ask.
    #[arg(long)]
    yes: bool,
}

fn timestamp(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("not an RFC 3339 time ({e})"))
}

/// The archive keys a replay covers: the one given, or those of the provider's days in the range
/// whose time (read from the key) lies in `[from, to)`.
async fn keys(archive: &S3Objects, args: &ReplayArgs) -> Result<Vec<String>, Fail> {
    if let Some(key) = &args.key {
        return Ok(vec![key.clone()]);
    }
    let (Some(provider), Some(from), Some(to)) = (&args.provider, args.from, args.to) else {
        return Err(Fail::Usage("--provider needs --from and --to".into()));
    };
    if to <= from {
        return Err(Fail::Usage("--to must be after --from".into()));
    }
    let utc = |t: OffsetDateTime| t.to_offset(time::UtcOffset::UTC);
    let (from, to) = (utc(from), utc(to));
    let mut keys = Vec::new();
    let mut day = from.date();
    while day <= to.date() {
        let prefix = objects::archive_day_prefix(provider, day);
        let listed = archive
            .list(&prefix)
            .await
            .map_err(|e| Fail::Error(format!("listing {prefix} failed: {e}")))?;
        keys.extend(
            listed
                .into_iter()
                .filter(|k| objects::archive_key_time(k).is_some_and(|at| from <= at && at < to)),
        );
        day = match day.next_day() {
            Some(next) => next,
            None => break,
        };
    }
    Ok(keys)
}

/// One event to queue again, and the archive object it came from.
struct Planned {
    envelope: Envelope,
    archive_key: String,
}

/// The events of the archived requests, in archive order, each dedup key once.
fn plan(records: Vec<(String, ArchiveRecord)>, event_id: Option<&str>) -> Vec<Planned> {
    let mut seen = HashSet::new();
    records
        .into_iter()
        .flat_map(|(key, record)| {
            record.events.into_iter().map(move |envelope| Planned {
                envelope,
                archive_key: key.clone(),
            })
        })
        .filter(|p| event_id.is_none_or(|id| p.envelope.event_id == id))
        .filter(|p| seen.insert(p.envelope.dedup_key.clone()))
        .collect()
}

pub async fn run(ctx: &Ctx, args: ReplayArgs) -> Outcome {
    let bucket = from_flag_or_env(args.archive_bucket.as_deref(), &["ARCHIVE_BUCKET"])
        .ok_or_else(|| {
            Fail::Usage(
                "no archive bucket: pass --archive-bucket or set ARCHIVE_BUCKET (the stack's ArchiveBucketName output)".into(),
            )
        })?;
    let s3 = S3Objects::client(&ctx.sdk);
    let archive = S3Objects::new(s3.clone(), &bucket);
    let payloads = from_flag_or_env(args.payload_bucket.as_deref(), &["PAYLOAD_BUCKET"])
        .map(|b| S3Objects::new(s3, &b));
    let sqs = aws_sdk_sqs::Client::new(&ctx.sdk);
    let queue_url = ctx.queue_url(&sqs).await?;

    // A record holds a body of at most 10 MiB (base64: 13.4) and the envelopes made of it.
    const ARCHIVE_OBJECT_MAX_BYTES: u64 = 256 * 1024 * 1024;
    let mut records = Vec::new();
    for key in keys(&archive, &args).await? {
        let object = archive
            .get(&key, ARCHIVE_OBJECT_MAX_BYTES)
            .await
            .map_err(|e| Fail::Error(format!("reading archive object {key} failed: {e}")))?;
        let record: ArchiveRecord = serde_json::from_slice(&object)
            .map_err(|_| Fail::Error(format!("archive object {key} is not an archive record")))?;
        records.push((key, record));
    }
    let requests = records.len();
    let planned = plan(records, args.event_id.as_deref());
    let replay_id = shared::pipeline::new_token();
    let requested_at = shared::clock::rfc3339(OffsetDateTime::now_utc());

    if ctx.json && planned.is_empty() {
        println!(
            "{:#}",
            json!({"replay_id": null, "planned": [], "queued": 0})
        );
        return Ok(());
    }
    if planned.is_empty() {
        println!("nothing to replay: {requests} archived request(s) matched, no event in them");
        return Ok(());
    }
    eprintln!(
        "replay {replay_id}: {} event(s) from {requests} archived request(s) to {queue_url}",
        planned.len()
    );
    for p in &planned {
        let e = &p.envelope;
        eprintln!(
            "  {}  {}  {}  event {}  tenant {}  from {}",
            e.received_at,
            e.provider,
            e.event_type,
            e.event_id,
            e.tenant.as_deref().unwrap_or("-"),
            p.archive_key
        );
    }
    if !args.yes
        && !confirm(&format!(
            "Queue these {} event(s) again? The processor runs each one again, even if it ran before.",
            planned.len()
        ))
    {
        return Err(Fail::Error("not confirmed; nothing queued".into()));
    }

    let limit = std::env::var("MAX_MESSAGE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(shared::config::DEFAULT_MAX_MESSAGE_BYTES);
    let mut messages: Vec<Message> = Vec::with_capacity(planned.len());
    for p in &planned {
        let mut envelope = p.envelope.clone();
        envelope.replay = Some(Replay {
            id: replay_id.clone(),
            requested_at: requested_at.clone(),
            archive_key: p.archive_key.clone(),
        });
        let oversize = match payloads {
            Some(_) => objects::Oversize::ClaimCheck,
            None => objects::Oversize::Refuse,
        };
        let objects::Outbound { message, object } =
            objects::message_for(&envelope, limit, oversize).map_err(|e| {
                Fail::Error(format!(
                    "event {} cannot be queued: {e}; nothing queued",
                    envelope.event_id
                ))
            })?;
        if let (Some(object), Some(store)) = (object, &payloads) {
            store
                .put(&object.key, object.bytes, "application/json")
                .await
                .map_err(|e| Fail::Error(format!("payload object not written: {e}")))?;
        }
        messages.push(message);
    }
    let results = SqsQueue::new(sqs, &queue_url).send(&messages).await;
    let mut queued = Vec::new();
    let mut failed = Vec::new();
    for (p, result) in planned.iter().zip(results) {
        match result {
            Ok(message_id) => queued.push((p, message_id)),
            Err(e) => failed.push((p, e.to_string())),
        }
    }
    if ctx.json {
        let item = |p: &Planned| -> Value {
            json!({"event_id": p.envelope.event_id, "dedup_key": p.envelope.dedup_key,
                   "event_type": p.envelope.event_type, "archive_key": p.archive_key})
        };
        let out = json!({
            "replay_id": replay_id,
            "queued": queued.iter().map(|(p, id)| { let mut v = item(p); v["message_id"] = json!(id); v }).collect::<Vec<_>>(),
            "failed": failed.iter().map(|(p, e)| { let mut v = item(p); v["error"] = json!(e); v }).collect::<Vec<_>>(),
        });
        println!("{out:#}");
    } else {
        for (p, id) in &queued {
            println!("queued {} as message {id}", p.envelope.event_id);
        }
        for (p, e) in &failed {
            println!("NOT queued {}: {e}", p.envelope.event_id);
        }
        println!(
            "replay {replay_id}: queued {} of {} event(s)",
            queued.len(),
            planned.len()
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Fail::Error(format!(
            "{} event(s) not queued; run the replay again for them (a new replay id)",
            failed.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key_ids: &[&str]) -> ArchiveRecord {
        let events: Vec<Envelope> = key_ids
            .iter()
            .map(|id| {
                serde_json::from_value(json!({
                    "provider": "trybe", "event_id": id, "event_type": "t",
                    "dedup_key": format!("trybe##id#{id}"), "received_at": "2026-12-01T10:00:00Z",
                    "body_sha256": "00", "payload": {"id": id}
                }))
                .unwrap()
            })
            .collect();
        // As the receiver writes it and replay reads it back.
        let written = objects::archive_record("POST", None, b"{}", events.iter().collect());
        serde_json::from_value(serde_json::to_value(written.unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn a_plan_queues_each_event_once_and_can_be_narrowed_to_one() {
        let records = || {
            vec![
                ("k1".to_owned(), record(&["a", "b"])),
                ("k2".to_owned(), record(&["b", "c"])),
            ]
        };
        let ids = |plan: Vec<Planned>| {
            plan.iter()
                .map(|p| (p.envelope.event_id.clone(), p.archive_key.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(plan(records(), None)),
            [("a", "k1"), ("b", "k1"), ("c", "k2")].map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert_eq!(
            ids(plan(records(), Some("c"))),
            [("c".to_owned(), "k2".to_owned())]
        );
        assert!(plan(records(), Some("zz")).is_empty());
    }
}

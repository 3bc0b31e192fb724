//! Replay: put archived events on the queue again, on purpose. Each message says it is a replay
//! (the envelope's `replay` field); the processor then runs the event under a claim of its own,
//! `processed#<dedup key>#replay#<replay id>`, so the event runs again however often it ran
//! before, and once per replay however often SQS delivers it.

use std::collections::HashSet;

use clap::Args;
use serde_json::{json, Value};
use shared::envelope::{Envelope, Replay};
use shared::objects::{self, ArchiveRecord, ObjectError, ObjectStore, S3Objects};
use shared::queue::{EventQueue, Message, SqsQueue};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::{confirm, from_flag_or_env, shell_word, Ctx, Fail, Outcome};

pub const ABOUT: &str =
    "Queue archived events again (the archive is on when the stack's ArchiveEnabled is true). \
Either one archived request (--key, as the archive names it; --event-id narrows it to one of its \
events) or every request of one provider received in [--from, --to).\n\n\
Each message is marked as a replay: the processor runs the event again, even though it ran \
before, under a claim of its own (processed#<dedup key>#replay#<replay id>), so a redelivered \
replay message still runs once. An event archived more than once in the range (a provider's \
retries) is queued once. Prints what it will queue, without payloads, and asks for `yes` unless \
--yes. Events too large for the queue go through the payload bucket, as the receivers do.\n\n\
A replay that did not queue everything (an archive object it could not read, a payload object it \
could not write, a send that failed) lists each event it did not queue and prints the command \
that resumes it: the same selection with --replay-id <id>. Resuming skips every event whose \
replay claim (processed#<dedup key>#replay#<id>) is in the claim table (--table or \
EVENTS_TABLE): the processor has it. The others are queued again under the same id; one that was \
queued but not yet processed is absorbed by the processor's claim, so nothing runs twice.\n\n\
The processor honours the replay mark only from the principals in the stack's \
OperatorPrincipalIds; a replay from anyone else goes to the dead-letter queue, refused.";

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
    /// Resume the replay with this id (as a replay prints it), with the same selection: events
    /// whose replay claim is in the claim table are skipped, the others queued again.
    #[arg(long, value_parser = replay_id, value_name = "ID")]
    replay_id: Option<String>,
    /// Do not ask.
    #[arg(long)]
    yes: bool,
}

fn timestamp(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("not an RFC 3339 time ({e})"))
}

/// A replay id as `shared::pipeline::new_token` makes them: 32 lowercase hex digits.
fn replay_id(s: &str) -> Result<String, String> {
    if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(s.to_owned())
    } else {
        Err("not a replay id (32 lowercase hex digits, as a replay prints it)".into())
    }
}

/// The command that replays one event again from the archive, for an event received at
/// `received_at` (RFC 3339): the provider's range from one second before to one second after.
/// `None` when `received_at` is not a time.
pub(crate) fn suggestion(provider: &str, received_at: &str) -> Option<String> {
    let at = OffsetDateTime::parse(received_at, &Rfc3339).ok()?;
    let second = time::Duration::seconds(1);
    let (from, to) = (
        (at - second).format(&Rfc3339).ok()?,
        (at + second).format(&Rfc3339).ok()?,
    );
    Some(
        [
            "webhook-ops",
            "replay",
            "--provider",
            provider,
            "--from",
            &from,
            "--to",
            &to,
        ]
        .map(shell_word)
        .join(" "),
    )
}

/// The command line that resumes replay `id`: the same selection (and the buckets, table and
/// queue given as flags) with `--replay-id`.
fn resume_command(ctx: &Ctx, args: &ReplayArgs, id: &str) -> String {
    let mut words: Vec<String> = vec!["webhook-ops".into(), "replay".into()];
    let mut flag = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            words.push(name.into());
            words.push(value);
        }
    };
    let time = |t: Option<OffsetDateTime>| t.and_then(|t| t.format(&Rfc3339).ok());
    flag("--replay-id", Some(id.to_owned()));
    flag("--key", args.key.clone());
    flag("--event-id", args.event_id.clone());
    flag("--provider", args.provider.clone());
    flag("--from", time(args.from));
    flag("--to", time(args.to));
    flag("--archive-bucket", args.archive_bucket.clone());
    flag("--payload-bucket", args.payload_bucket.clone());
    flag("--table", ctx.table.clone());
    flag("--queue-url", ctx.queue.clone());
    words
        .iter()
        .map(|w| shell_word(w))
        .collect::<Vec<_>>()
        .join(" ")
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

/// What was not queued: an event (or, for an archive object that could not be read, every event
/// in it: `event` is `None`), and why.
struct NotQueued {
    event: Option<(String, String)>,
    archive_key: String,
    error: String,
}

impl NotQueued {
    fn event(p: &Planned, error: String) -> NotQueued {
        NotQueued {
            event: Some((p.envelope.event_id.clone(), p.envelope.dedup_key.clone())),
            archive_key: p.archive_key.clone(),
            error,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "event_id": self.event.as_ref().map(|(id, _)| id),
            "dedup_key": self.event.as_ref().map(|(_, key)| key),
            "archive_key": self.archive_key,
            "error": self.error,
        })
    }

    fn to_text(&self) -> String {
        match &self.event {
            Some((id, key)) => format!(
                "NOT queued: event {id}  dedup key {key}  from {}: {}",
                self.archive_key, self.error
            ),
            None => format!(
                "NOT queued: every event of archive object {}: {}",
                self.archive_key, self.error
            ),
        }
    }
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

/// A payload object's write, as replay counts it.
///
/// A payload object's put, as replay counts it: `Exists` is written. Payload keys are
/// content-addressed (`<provider>/<sha256(dedup key)>/<sha256(object)>.json`) and puts never
/// overwrite, so an object already under the key holds these very bytes (a resumed replay that
/// wrote it before).
fn payload_written(result: Result<(), ObjectError>) -> Result<(), ObjectError> {
    match result {
        Err(ObjectError::Exists) => Ok(()),
        other => other,
    }
}

pub async fn run(ctx: &Ctx, args: ReplayArgs) -> Outcome {
    let bucket = from_flag_or_env(args.archive_bucket.as_deref(), &["ARCHIVE_BUCKET"])
        .ok_or_else(|| {
            Fail::Usage(
                "no archive bucket: pass --archive-bucket or set ARCHIVE_BUCKET (the stack's ArchiveBucketName output)".into(),
            )
        })?;
    // Resuming reads the claim table; find out it is missing before anything else.
    let table = match &args.replay_id {
        Some(_) => Some(ctx.table()?),
        None => None,
    };
    let s3 = S3Objects::client(&ctx.sdk);
    let archive = S3Objects::new(s3.clone(), &bucket);
    let payloads = from_flag_or_env(args.payload_bucket.as_deref(), &["PAYLOAD_BUCKET"])
        // Encrypted as the receivers encrypt (the bucket policy refuses other puts).
        .map(|b| {
            S3Objects::new(s3, &b)
                .with_kms_key(std::env::var("OBJECTS_KMS_KEY_ARN").ok().as_deref())
        });
    let sqs = aws_sdk_sqs::Client::new(&ctx.sdk);
    let queue_url = ctx.queue_url(&sqs).await?;
    let replay_id = args
        .replay_id
        .clone()
        .unwrap_or_else(shared::pipeline::new_token);
    let requested_at = shared::clock::rfc3339(OffsetDateTime::now_utc());

    // What could not be read is reported, and the rest replayed: a resume reads it again.
    // A record holds a body of at most 10 MiB (base64: 13.4) and the envelopes made of it.
    const ARCHIVE_OBJECT_MAX_BYTES: u64 = 256 * 1024 * 1024;
    let mut records = Vec::new();
    let mut not_queued = Vec::new();
    for key in keys(&archive, &args).await? {
        let read = match archive.get(&key, ARCHIVE_OBJECT_MAX_BYTES).await {
            Ok(object) => serde_json::from_slice::<ArchiveRecord>(&object)
                .map_err(|_| "not an archive record".to_owned()),
            Err(e) => Err(format!("archive object not read: {e}")),
        };
        match read {
            Ok(record) => records.push((key, record)),
            Err(error) => not_queued.push(NotQueued {
                event: None,
                archive_key: key,
                error,
            }),
        }
    }
    let requests = records.len() + not_queued.len();
    let planned = plan(records, args.event_id.as_deref());

    // Resuming: an event whose replay claim is in the table has reached the processor.
    let mut gone: Vec<(Planned, String)> = Vec::new();
    let mut pending: Vec<Planned> = Vec::new();
    if let Some(table) = &table {
        let ddb = aws_sdk_dynamodb::Client::new(&ctx.sdk);
        let mark = Replay {
            id: replay_id.clone(),
            requested_at: requested_at.clone(),
            archive_key: String::new(),
        };
        for p in planned {
            let pk = mark.processed_key(&p.envelope.dedup_key);
            match crate::claim::record_status(&ddb, table, &pk).await {
                Ok(Some(status)) => gone.push((p, status)),
                Ok(None) => pending.push(p),
                Err(e) => {
                    return Err(Fail::Error(format!(
                        "reading replay claim {pk} in table {table} failed: {e}; nothing queued"
                    )))
                }
            }
        }
    } else {
        pending = planned;
    }

    // Each message made before asking: what cannot travel is shown with the plan.
    let limit = std::env::var("MAX_MESSAGE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(shared::config::DEFAULT_MAX_MESSAGE_BYTES);
    let oversize = match payloads {
        Some(_) => objects::Oversize::ClaimCheck,
        None => objects::Oversize::Refuse,
    };
    let mut outbound: Vec<(Planned, objects::Outbound)> = Vec::new();
    for p in pending {
        let mut envelope = p.envelope.clone();
        envelope.replay = Some(Replay {
            id: replay_id.clone(),
            requested_at: requested_at.clone(),
            archive_key: p.archive_key.clone(),
        });
        match objects::message_for(&envelope, limit, oversize) {
            Ok(out) => outbound.push((p, out)),
            Err(e) => {
                let hint = match (&e, oversize) {
                    (objects::Unsendable::TooLarge { .. }, objects::Oversize::Refuse) => {
                        " (pass --payload-bucket or set PAYLOAD_BUCKET: events too large for the queue go through it)"
                    }
                    _ => "",
                };
                not_queued.push(NotQueued::event(&p, format!("cannot be queued: {e}{hint}")));
            }
        }
    }

    if outbound.is_empty() && gone.is_empty() && not_queued.is_empty() {
        if ctx.json {
            println!(
                "{:#}",
                json!({"replay_id": null, "planned": [], "queued": [], "already_gone": [], "not_queued": [], "resume": null})
            );
        } else {
            println!("nothing to replay: {requests} archived request(s) matched, no event in them");
        }
        return Ok(());
    }
    eprintln!(
        "replay {replay_id}{}: {} event(s) to queue from {requests} archived request(s) to {queue_url}",
        if table.is_some() { " (resumed)" } else { "" },
        outbound.len()
    );
    for (p, _) in &outbound {
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
    if !gone.is_empty() {
        eprintln!(
            "{} event(s) already gone (the processor has their replay claim): skipped",
            gone.len()
        );
        for (p, status) in &gone {
            eprintln!(
                "  event {}  dedup key {}  replay claim {status}",
                p.envelope.event_id, p.envelope.dedup_key
            );
        }
    }
    if !not_queued.is_empty() {
        eprintln!("{} cannot be queued:", not_queued.len());
        for n in &not_queued {
            eprintln!("  {}", n.to_text());
        }
    }
    if !outbound.is_empty()
        && !args.yes
        && !confirm(&format!(
            "Queue these {} event(s) again? The processor runs each one again, even if it ran before.",
            outbound.len()
        ))
    {
        return Err(Fail::Error("not confirmed; nothing queued".into()));
    }

    // Claim-checked events: their object first; an event whose object is not written is not
    // sent (its message would point at nothing).
    let to_queue = outbound.len();
    let mut sending: Vec<Planned> = Vec::with_capacity(outbound.len());
    let mut messages: Vec<Message> = Vec::with_capacity(outbound.len());
    for (p, objects::Outbound { message, object }) in outbound {
        if let (Some(object), Some(store)) = (object, &payloads) {
            let written = payload_written(
                store
                    .put(&object.key, object.bytes, "application/json")
                    .await,
            );
            if let Err(e) = written {
                not_queued.push(NotQueued::event(
                    &p,
                    format!(
                        "payload object {} not written to bucket {}: {e}",
                        object.key,
                        store.bucket()
                    ),
                ));
                continue;
            }
        }
        sending.push(p);
        messages.push(message);
    }
    let results = if messages.is_empty() {
        Vec::new()
    } else {
        SqsQueue::new(sqs, &queue_url).send(&messages).await
    };
    let mut queued = Vec::new();
    for (p, result) in sending.iter().zip(results) {
        match result {
            Ok(message_id) => queued.push((p, message_id)),
            Err(e) => not_queued.push(NotQueued::event(p, e.to_string())),
        }
    }
    let resume = (!not_queued.is_empty()).then(|| resume_command(ctx, &args, &replay_id));
    if ctx.json {
        let item = |p: &Planned| -> Value {
            json!({"event_id": p.envelope.event_id, "dedup_key": p.envelope.dedup_key,
                   "event_type": p.envelope.event_type, "archive_key": p.archive_key})
        };
        let out = json!({
            "replay_id": replay_id,
            "queued": queued.iter().map(|(p, id)| { let mut v = item(p); v["message_id"] = json!(id); v }).collect::<Vec<_>>(),
            "already_gone": gone.iter().map(|(p, status)| { let mut v = item(p); v["replay_claim_status"] = json!(status); v }).collect::<Vec<_>>(),
            "not_queued": not_queued.iter().map(NotQueued::to_json).collect::<Vec<_>>(),
            "resume": resume,
        });
        println!("{out:#}");
    } else {
        for (p, id) in &queued {
            println!("queued {} as message {id}", p.envelope.event_id);
        }
        for (p, status) in &gone {
            println!(
                "already gone {} (replay claim {status}): not queued again",
                p.envelope.event_id
            );
        }
        for n in &not_queued {
            println!("{}", n.to_text());
        }
        println!(
            "replay {replay_id}: queued {} of {to_queue}; already gone {}; not queued {}",
            queued.len(),
            gone.len(),
            not_queued.len()
        );
        if let Some(command) = &resume {
            println!("resume with: {command}");
        }
    }
    match resume {
        None => Ok(()),
        Some(command) => Err(Fail::Error(format!(
            "{} not queued{}; resume this replay (the same id: nothing runs twice) with:\n  {command}",
            match not_queued.len() {
                1 => "1 event or archive object".to_owned(),
                n => format!("{n} events or archive objects"),
            },
            if queued.is_empty() { " (nothing queued)" } else { "" },
        ))),
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

    #[test]
    fn replay_ids_are_the_tokens_replays_make() {
        let id = shared::pipeline::new_token();
        assert_eq!(replay_id(&id), Ok(id));
        for bad in [
            "",
            "xyz",
            &"A".repeat(32),
            &"a".repeat(31),
            &"a".repeat(33),
            "../../etc",
        ] {
            assert!(replay_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_suggestion_replays_the_second_around_the_event() {
        assert_eq!(
            suggestion("trybe", "2026-12-01T10:00:00.250Z").as_deref(),
            Some("webhook-ops replay --provider trybe --from 2026-12-01T09:59:59.25Z --to 2026-12-01T10:00:01.25Z")
        );
        assert_eq!(suggestion("trybe", "yesterday"), None);
    }

    #[test]
    fn payload_writes_pass_through_until_puts_refuse_to_overwrite() {
        assert!(payload_written(Ok(())).is_ok());
        assert!(payload_written(Err(ObjectError::Exists)).is_ok());
        assert!(payload_written(Err(ObjectError::Failed("denied".into()))).is_err());
    }
}

//! Claim records: the receiver's (`<dedup key>`, RECEIVED → ENQUEUED) and the processor's
//! (`processed#<dedup key>`, PROCESSING → PROCESSED). Keys are built by
//! [`shared::pipeline::dedup_key`] only. Records hold no payload; nothing here prints one.

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use clap::builder::PossibleValuesParser;
use clap::Subcommand;
use serde_json::{json, Value};
use shared::provider::EventKey;
use shared::providers;
use shared::store::{processed_key, Status, PROCESSED_PREFIX};

use crate::text::{now_ms, or_dash, relative_ms, time_ms};
use crate::{confirm, Ctx, Fail, Outcome};

const SHOW_ABOUT: &str =
    "Show an event's claim: status, lease, expiry, received time, queue message id, and the \
processor's processed#<dedup key> record (claimed and processed times) if any. Never the payload \
(the records hold none).\n\n\
The dedup key is built from <PROVIDER> <EVENT_ID> and --tenant exactly as the receivers build it. \
EVENT_ID is the envelope's event_id (as `dlq list` and the receivers' logs show it); for Tilby \
`<notification_uuid>:<entity uuid or id>`. Events keyed by a hash of their content (TRIFFT without \
a configured id, Trybe or Tribe bodies without id) need --hash with the hex SHA-256 (the \
event_id of such an event), or --key with the raw key.";

const RELEASE_ABOUT: &str =
    "Delete a stuck claim so that the provider's next delivery of the event is accepted and \
queued as new: typically a RECEIVED claim whose receiver died (its lease has lapsed). Shows the \
claim first and asks for `yes` unless --yes.\n\n\
Refused without --force when releasing could queue the event twice: the claim is ENQUEUED (the \
event is already on the queue), the processor has it (processed# record), or a receiver still \
holds a live lease. Releasing those lets a provider retry queue the same event a second time; the \
processor's claim usually absorbs the copy, but only while its record lasts.\n\n\
The delete is conditional: it removes the record only if its status and claim token are still \
those shown, never a claim some delivery took in the meantime. With --key processed#<dedup key> \
it releases the processor's record instead (a PROCESSED one only with --force: a redelivery would \
run the handler again).";

#[derive(Subcommand)]
pub enum ClaimCommand {
    /// Show an event's claim and the processor's record (never the payload).
    #[command(long_about = SHOW_ABOUT)]
    Show {
        #[command(flatten)]
        target: Target,
    },
    /// Delete a stuck claim, after showing it and asking (refuses ENQUEUED/processed ones).
    #[command(long_about = RELEASE_ABOUT)]
    Release {
        #[command(flatten)]
        target: Target,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Release even a claim whose event is queued or processed, or whose lease is live:
        /// a provider retry may then queue the event a second time.
        #[arg(long)]
        force: bool,
    },
}

pub fn provider_names() -> PossibleValuesParser {
    PossibleValuesParser::new(providers::ALL.iter().map(|(name, _)| *name))
}

/// Which record: (provider, event id, tenant) or a raw key.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// The provider.
    #[arg(required_unless_present = "key", value_parser = provider_names())]
    provider: Option<String>,
    /// The provider's event id (the envelope's `event_id`; Tilby: `<notification>:<entity>`).
    #[arg(required_unless_present = "key")]
    event_id: Option<String>,
    /// The tenant the event names (Trybe site_id, Tribe networkId, TribeMade store_id, Tilby
    /// environment_id, TRIFFT credential label); omit it for events that name none.
    #[arg(long)]
    tenant: Option<String>,
    /// EVENT_ID is a hex SHA-256 of the content (events keyed by a hash, not an id).
    #[arg(long)]
    hash: bool,
    /// The raw record key (a dedup key, or `processed#<dedup key>`), instead of the above.
    #[arg(long, value_name = "KEY", conflicts_with_all = ["provider", "event_id", "tenant", "hash"])]
    key: Option<String>,
}

/// How a provider's event id reads as an [`EventKey`]: Tilby's ids are its key's parts joined by
/// `:` ([`EventKey::to_event_id`]); every other provider's is one part.
fn event_key(provider: &str, event_id: &str, hash: bool) -> EventKey {
    if hash {
        EventKey::Hash(event_id.to_ascii_lowercase())
    } else if provider == providers::tilby::NAME {
        EventKey::parts(event_id.split(':'))
    } else {
        EventKey::id(event_id)
    }
}

impl Target {
    fn pk(&self) -> String {
        if let Some(key) = &self.key {
            return key.clone();
        }
        let provider = self.provider.as_deref().unwrap_or_default();
        let event_id = self.event_id.as_deref().unwrap_or_default();
        shared::pipeline::dedup_key(
            provider,
            self.tenant.as_deref(),
            &event_key(provider, event_id, self.hash),
        )
    }

    /// Why a lookup may have missed, for the "no claim" message.
    fn hints(&self) -> Vec<&'static str> {
        let mut hints = Vec::new();
        if self.key.is_some() {
            return hints;
        }
        if self.tenant.is_none() {
            hints.push("claims are keyed by tenant: add --tenant <tenant> if the event names one");
        }
        let id = self.event_id.as_deref().unwrap_or_default();
        if !self.hash && id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            hints.push("this id looks like a content hash: add --hash");
        }
        hints
    }
}

pub async fn run(ctx: &Ctx, command: ClaimCommand) -> Outcome {
    let ddb = Client::new(&ctx.sdk);
    let table = ctx.table()?;
    match command {
        ClaimCommand::Show { target } => show(ctx, &ddb, &table, &target).await,
        ClaimCommand::Release { target, yes, force } => {
            release(ctx, &ddb, &table, &target, yes, force).await
        }
    }
}

/// A stored record, as the operator reads it.
#[derive(Debug, Clone)]
struct Item {
    pk: String,
    status: Option<String>,
    event_type: Option<String>,
    received_at: Option<String>,
    lease_until_ms: Option<i64>,
    expires_at: Option<i64>,
    message_id: Option<String>,
    body_sha256: Option<String>,
    claim_token: Option<String>,
    processed_at: Option<String>,
}

/// A String attribute of `item`.
fn text_attr(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

/// A Number attribute of `item`, as an integer.
fn num_attr(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

/// One `  label         value` line of a record's text.
fn push_field(out: &mut String, label: &str, value: String) {
    out.push_str(&format!("  {label:<13} {value}\n"));
}

impl Item {
    fn from(pk: &str, item: &HashMap<String, AttributeValue>) -> Item {
        let text = |k: &str| text_attr(item, k);
        let num = |k: &str| num_attr(item, k);
        Item {
            pk: pk.to_owned(),
            status: text("status"),
            event_type: text("event_type"),
            received_at: text("received_at"),
            lease_until_ms: num("lease_until_ms"),
            expires_at: num("expires_at"),
            message_id: text("message_id"),
            body_sha256: text("body_sha256"),
            claim_token: text("claim_token"),
            processed_at: text("processed_at"),
        }
    }

    fn status(&self) -> Option<Status> {
        self.status.as_deref().and_then(Status::parse)
    }

    fn is_processor_record(&self) -> bool {
        self.pk.starts_with(PROCESSED_PREFIX)
    }

    fn lease_live(&self, now: i64) -> bool {
        self.status().is_some_and(Status::is_pending) && self.lease_until_ms.unwrap_or(0) >= now
    }

    fn to_json(&self) -> Value {
        json!({
            "key": self.pk,
            "status": self.status,
            "event_type": self.event_type,
            "received_at": self.received_at,
            "lease_until": self.lease_until_ms.map(time_ms),
            "lease_until_ms": self.lease_until_ms,
            "expires_at": self.expires_at.map(|s| time_ms(s.saturating_mul(1000))),
            "expires_at_epoch": self.expires_at,
            "message_id": self.message_id,
            "processed_at": self.processed_at,
            "body_sha256": self.body_sha256,
            "claim_token": self.claim_token,
        })
    }

    fn to_text(&self, now: i64) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: String| push_field(&mut out, label, value);
        line("status", or_dash(&self.status));
        line("event type", or_dash(&self.event_type));
        let processor = self.is_processor_record();
        line(
            if processor {
                "claimed at"
            } else {
                "received at"
            },
            or_dash(&self.received_at),
        );
        if let Some(lease) = self.lease_until_ms {
            let state = match self.status() {
                Some(s) if s.is_pending() && lease >= now => "live",
                Some(s) if s.is_pending() => "lapsed: the next delivery may take it over",
                _ => "ended with the status above",
            };
            line(
                "lease until",
                format!("{} ({}; {state})", time_ms(lease), relative_ms(lease, now)),
            );
        }
        if let Some(expires) = self.expires_at {
            let at = expires.saturating_mul(1000);
            line(
                "expires at",
                format!(
                    "{} ({}; blocks duplicates until then)",
                    time_ms(at),
                    relative_ms(at, now)
                ),
            );
        }
        if processor {
            line("processed at", or_dash(&self.processed_at));
        } else {
            line(
                "enqueued",
                match (&self.message_id, self.status()) {
                    (Some(id), _) => format!("message id {id} (the claim keeps no enqueue time)"),
                    (None, Some(Status::Enqueued)) => "yes (no message id recorded)".into(),
                    (None, Some(Status::Received)) => "not recorded by the receiver (it answers \
                        after its send without marking the claim); the processor record says \
                        whether the event reached the queue"
                        .into(),
                    (None, _) => "no".into(),
                },
            );
        }
        line("body sha256", or_dash(&self.body_sha256));
        out
    }
}

/// The status of the record under `pk` (a consistent read, as `claim show` reads it), `-` for a
/// record without one; `None` when there is no record. `replay --replay-id` asks it for each
/// event's replay claim.
pub(crate) async fn record_status(
    ddb: &Client,
    table: &str,
    pk: &str,
) -> Result<Option<String>, Fail> {
    Ok(get(ddb, table, pk)
        .await?
        .map(|item| item.status.unwrap_or_else(|| "-".into())))
}

async fn get(ddb: &Client, table: &str, pk: &str) -> Result<Option<Item>, Fail> {
    Ok(get_item(ddb, table, pk)
        .await?
        .map(|item| Item::from(pk, &item)))
}

/// The item under `pk`, a consistent read (every record `claim` shows is read so).
async fn get_item(
    ddb: &Client,
    table: &str,
    pk: &str,
) -> Result<Option<HashMap<String, AttributeValue>>, Fail> {
    let out = ddb
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(pk.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| Fail::aws("GetItem", e))?;
    Ok(out.item)
}

/// The record under `pk` and, for a receiver's claim, the processor's record of the same event.
async fn records(
    ddb: &Client,
    table: &str,
    pk: &str,
) -> Result<(Option<Item>, Option<Item>), Fail> {
    let claim = get(ddb, table, pk).await?;
    let processor = if pk.starts_with(PROCESSED_PREFIX) {
        None
    } else {
        get(ddb, table, &processed_key(pk)).await?
    };
    Ok((claim, processor))
}

fn records_text(pk: &str, claim: Option<&Item>, processor: Option<&Item>, now: i64) -> String {
    let mut out = String::new();
    let label = if pk.starts_with(PROCESSED_PREFIX) {
        "processor record"
    } else {
        "claim"
    };
    match claim {
        Some(item) => {
            out.push_str(&format!("{label} {pk}\n"));
            out.push_str(&item.to_text(now));
        }
        None => out.push_str(&format!("{label} {pk}: none\n")),
    }
    if !pk.starts_with(PROCESSED_PREFIX) {
        let processed = processed_key(pk);
        match processor {
            Some(item) => {
                out.push_str(&format!("processor record {processed}\n"));
                out.push_str(&item.to_text(now));
            }
            None => out.push_str(&format!(
                "processor record {processed}: none (not processed, or its record expired)\n"
            )),
        }
    }
    out
}

fn records_json(pk: &str, claim: Option<&Item>, processor: Option<&Item>) -> Value {
    json!({
        "key": pk,
        "claim": claim.map(Item::to_json),
        "processor": processor.map(Item::to_json),
    })
}

async fn show(ctx: &Ctx, ddb: &Client, table: &str, target: &Target) -> Outcome {
    let pk = target.pk();
    let (claim, processor) = records(ddb, table, &pk).await?;
    let processed_pk = if pk.starts_with(PROCESSED_PREFIX) {
        pk.clone()
    } else {
        processed_key(&pk)
    };
    let retry = retry_note(ddb, table, &processed_pk).await?;
    let now = now_ms();
    if ctx.json {
        let mut out = records_json(&pk, claim.as_ref(), processor.as_ref());
        out["retry"] = retry.as_ref().map_or(Value::Null, RetryItem::to_json);
        println!("{out:#}");
    } else {
        print!(
            "{}",
            records_text(&pk, claim.as_ref(), processor.as_ref(), now)
        );
        if let Some(retry) = &retry {
            print!("{}", retry.to_text(now));
        }
    }
    if claim.is_none() && processor.is_none() {
        let mut message = format!("no record under {pk} in table {table}");
        for hint in target.hints() {
            message.push_str(&format!("\n  hint: {hint}"));
        }
        return Err(Fail::Error(message));
    }
    Ok(())
}

/// The processor's note of the event's last failed record: its receive count and when its
/// message comes back (SQS shows no one an in-flight message).
struct RetryItem {
    pk: String,
    message_id: Option<String>,
    receive_count: Option<i64>,
    failed_at: Option<String>,
    next_receive_after: Option<String>,
    reason: Option<String>,
}

impl RetryItem {
    fn to_json(&self) -> Value {
        json!({
            "key": self.pk,
            "message_id": self.message_id,
            "receive_count": self.receive_count,
            "failed_at": self.failed_at,
            "next_receive_after": self.next_receive_after,
            "reason": self.reason,
        })
    }

    fn to_text(&self, now: i64) -> String {
        let next = self.next_receive_after.as_deref().map_or("-".into(), |at| {
            match time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339) {
                Ok(t) => format!(
                    "{at} ({})",
                    relative_ms(shared::clock::epoch_millis(t), now)
                ),
                Err(_) => at.to_owned(),
            }
        });
        let mut out = format!("retry note {}\n", self.pk);
        let mut line = |label: &str, value: String| push_field(&mut out, label, value);
        line(
            "received",
            self.receive_count.map_or("-".into(), |n| {
                format!("{n} times (SQS ApproximateReceiveCount)")
            }),
        );
        line(
            "last failure",
            format!("{} ({})", or_dash(&self.failed_at), or_dash(&self.reason)),
        );
        line("next receive", format!("after {next}"));
        line("message id", or_dash(&self.message_id));
        out
    }
}

async fn retry_note(
    ddb: &Client,
    table: &str,
    processed_pk: &str,
) -> Result<Option<RetryItem>, Fail> {
    let pk = shared::store::retry_key(processed_pk);
    Ok(get_item(ddb, table, &pk).await?.map(|item| RetryItem {
        message_id: text_attr(&item, "message_id"),
        receive_count: num_attr(&item, "receive_count"),
        failed_at: text_attr(&item, "failed_at"),
        next_receive_after: text_attr(&item, "next_receive_after"),
        reason: text_attr(&item, "reason"),
        pk,
    }))
}

/// Why releasing `item` could queue (or process) its event twice, if it could.
fn risk(item: &Item, processor: Option<&Item>, now: i64) -> Option<String> {
    let holder = if item.is_processor_record() {
        "the processor"
    } else {
        "a receiver"
    };
    match item.status() {
        None => Some(format!(
            "its status {:?} is not one this tool knows",
            item.status.as_deref().unwrap_or("")
        )),
        Some(Status::Enqueued) => Some(format!(
            "the claim is ENQUEUED: the event is already on the queue (message id {}); releasing it lets the provider's next retry queue the event a second time",
            item.message_id.as_deref().unwrap_or("-")
        )),
        Some(Status::Processed) => Some(
            "the handler already ran (PROCESSED): releasing lets a redelivery of the message run the handler a second time"
                .into(),
        ),
        Some(_) if item.lease_live(now) => Some(format!(
            "{holder} still holds it: its lease runs until {} ({}); releasing now lets another delivery start while the first is still being handled, so the event may be queued twice. Wait for the lease to lapse",
            time_ms(item.lease_until_ms.unwrap_or(0)),
            relative_ms(item.lease_until_ms.unwrap_or(0), now)
        )),
        Some(_) => processor.map(|p| {
            format!(
                "the processor has this event ({} is {}): it was queued, and releasing the claim lets a provider retry queue it a second time",
                p.pk,
                p.status.as_deref().unwrap_or("-")
            )
        }),
    }
}

/// Deletes `item` only if it is still the record shown: same status, claim token and lease.
async fn delete_shown(ddb: &Client, table: &str, item: &Item) -> Result<bool, Fail> {
    let mut conditions = Vec::new();
    let mut request = ddb
        .delete_item()
        .table_name(table)
        .key("pk", AttributeValue::S(item.pk.clone()))
        .expression_attribute_names("#status", "status");
    match &item.status {
        Some(status) => {
            conditions.push("#status = :status");
            request =
                request.expression_attribute_values(":status", AttributeValue::S(status.clone()));
        }
        None => conditions.push("attribute_not_exists(#status)"),
    }
    match &item.claim_token {
        Some(token) => {
            conditions.push("claim_token = :token");
            request =
                request.expression_attribute_values(":token", AttributeValue::S(token.clone()));
        }
        None => conditions.push("attribute_not_exists(claim_token)"),
    }
    match item.lease_until_ms {
        Some(lease) => {
            conditions.push("lease_until_ms = :lease");
            request =
                request.expression_attribute_values(":lease", AttributeValue::N(lease.to_string()));
        }
        None => conditions.push("attribute_not_exists(lease_until_ms)"),
    }
    let result = request
        .condition_expression(conditions.join(" AND "))
        .send()
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
            Ok(false)
        }
        Err(e) => Err(Fail::aws("DeleteItem", e)),
    }
}

async fn release(
    ctx: &Ctx,
    ddb: &Client,
    table: &str,
    target: &Target,
    yes: bool,
    force: bool,
) -> Outcome {
    let pk = target.pk();
    let (claim, processor) = records(ddb, table, &pk).await?;
    let now = now_ms();
    let Some(item) = claim else {
        if !ctx.json {
            print!("{}", records_text(&pk, None, processor.as_ref(), now));
        }
        let mut message = format!("no record under {pk} in table {table}: nothing to release");
        for hint in target.hints() {
            message.push_str(&format!("\n  hint: {hint}"));
        }
        return Err(Fail::Error(message));
    };
    let finish = |released: bool, note: &str| {
        if ctx.json {
            let mut out = records_json(&pk, Some(&item), processor.as_ref());
            out["released"] = json!(released);
            out["note"] = json!(note);
            println!("{out:#}");
        }
    };
    if !ctx.json {
        print!(
            "{}",
            records_text(&pk, Some(&item), processor.as_ref(), now)
        );
    }
    let risk = risk(&item, processor.as_ref(), now);
    if let (Some(why), false) = (&risk, force) {
        let message = format!("refused: {why}.\n  --force releases it anyway; nothing deleted");
        finish(false, &message);
        return Err(Fail::Error(message));
    }
    let what = if item.is_processor_record() {
        "the processor's record; a redelivery of the message will run the handler"
    } else {
        "the claim; the provider's next delivery of this event will be accepted and queued as new"
    };
    let question = match &risk {
        Some(why) => format!("FORCED: {why}.\nDelete {pk} anyway ({what})?"),
        None => format!("Delete {pk} ({what})?"),
    };
    if !yes && !confirm(&question) {
        let message = "not confirmed: nothing deleted";
        finish(false, message);
        return Err(Fail::Error(message.into()));
    }
    if delete_shown(ddb, table, &item).await? {
        if !ctx.json {
            println!("released {pk}");
        }
        finish(true, "released");
        Ok(())
    } else {
        let message = format!(
            "the record under {pk} changed since it was shown (a delivery took it over, or it was finished or deleted): nothing deleted; run the command again to see it"
        );
        finish(false, &message);
        Err(Fail::Error(message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::pipeline::dedup_key;

    fn target(provider: &str, id: &str, tenant: Option<&str>, hash: bool) -> Target {
        Target {
            provider: Some(provider.into()),
            event_id: Some(id.into()),
            tenant: tenant.map(str::to_owned),
            hash,
            key: None,
        }
    }

    #[test]
    fn keys_are_the_receivers_keys() {
        assert_eq!(
            target("trybe", "evt:1#x", Some("site-1"), false).pk(),
            dedup_key("trybe", Some("site-1"), &EventKey::id("evt:1#x"))
        );
        assert_eq!(
            target("tilby", "n-1:e-2", Some("env"), false).pk(),
            dedup_key("tilby", Some("env"), &EventKey::parts(["n-1", "e-2"]))
        );
        let hex = "ab".repeat(32);
        assert_eq!(
            target("tilby", &format!("n-1:sha256:{hex}"), Some("env"), false).pk(),
            dedup_key(
                "tilby",
                Some("env"),
                &EventKey::parts(["n-1", "sha256", hex.as_str()])
            )
        );
        assert_eq!(
            target("trifft", &hex.to_uppercase(), Some("label"), true).pk(),
            dedup_key("trifft", Some("label"), &EventKey::Hash(hex.clone()))
        );
        assert_eq!(
            target("tribe", "x", None, false).pk(),
            dedup_key("tribe", None, &EventKey::id("x"))
        );
        assert_eq!(
            target("tribe", "x", Some(""), false).pk(),
            dedup_key("tribe", Some(""), &EventKey::id("x"))
        );
        let raw = Target {
            provider: None,
            event_id: None,
            tenant: None,
            hash: false,
            key: Some("processed#trybe#s#id#1".into()),
        };
        assert_eq!(raw.pk(), "processed#trybe#s#id#1");
        assert_eq!(
            target("trifft", &hex, None, false).hints().len(),
            2,
            "tenant and hash hints"
        );
    }

    fn item(pk: &str, status: &str, lease_until_ms: i64) -> Item {
        Item {
            pk: pk.into(),
            status: Some(status.into()),
            event_type: Some("t".into()),
            received_at: None,
            lease_until_ms: Some(lease_until_ms),
            expires_at: Some(i64::MAX / 2000),
            message_id: None,
            body_sha256: None,
            claim_token: Some("tok".into()),
            processed_at: None,
        }
    }

    #[test]
    fn releasing_is_risky_unless_the_claim_is_stuck() {
        let now = 1_000_000;
        assert!(risk(&item("k", "RECEIVED", now - 1), None, now).is_none());
        assert!(risk(&item("k", "RECEIVED", now + 5_000), None, now)
            .unwrap()
            .contains("lease"));
        assert!(risk(&item("k", "ENQUEUED", now - 1), None, now)
            .unwrap()
            .contains("second time"));
        let processed = item("processed#k", "PROCESSED", now - 1);
        assert!(risk(&item("k", "RECEIVED", now - 1), Some(&processed), now)
            .unwrap()
            .contains("processor"));
        assert!(risk(&processed, None, now).unwrap().contains("handler"));
        assert!(risk(&item("processed#k", "PROCESSING", now - 1), None, now).is_none());
        assert!(risk(&item("k", "WHATEVER", now - 1), None, now).is_some());
    }
}

//! What the processor notes about an event whose record failed: how often its message was
//! received and when it comes back. SQS shows no one an in-flight message; this note is what
//! `webhook-ops claim show` prints beside the event's records.
//!
//! The note is its own item, `processed#<dedup key>#%retry` (or a replay's processor key with
//! the suffix): under the processor's key prefix (its only one), and never another event's
//! key, since `%` inside a key part is always escaped (`%25`, [`crate::keys::dedup_key`]). It
//! is written only when the record's wait was set, and expires a day after that wait.

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use time::OffsetDateTime;

use super::dynamodb::{n, s, store_error};
use super::StoreError;
use crate::clock::rfc3339;

/// Appended to the processor's key of the event.
pub const RETRY_SUFFIX: &str = "#%retry";

/// How long a note outlives the wait it names.
const KEEP_AFTER_WAIT_SECS: i64 = 24 * 3600;

/// The note's key for the processor key `processed_pk`.
pub fn retry_key(processed_pk: &str) -> String {
    format!("{processed_pk}{RETRY_SUFFIX}")
}

/// One failed record, as noted.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryNote {
    /// The processor's key of the event (`processed#<dedup key>`, or a replay's).
    pub processed_pk: String,
    pub message_id: String,
    /// SQS's `ApproximateReceiveCount` of the receive that failed.
    pub receive_count: u32,
    pub failed_at: OffsetDateTime,
    /// When the message becomes visible again, at the earliest.
    pub next_receive_after: OffsetDateTime,
    /// What failed, by kind only (a handler's message may hold personal data: it is in the
    /// processor's log, not here).
    pub reason: &'static str,
}

#[async_trait]
pub trait RetryNotes: Send + Sync {
    /// Writes (or replaces) the event's note.
    async fn note(&self, note: &RetryNote) -> Result<(), StoreError>;
}

/// Notes in the claim table.
#[derive(Debug, Clone)]
pub struct DynamoRetryNotes {
    client: Client,
    table: String,
}

impl DynamoRetryNotes {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoRetryNotes {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl RetryNotes for DynamoRetryNotes {
    async fn note(&self, note: &RetryNote) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(retry_key(&note.processed_pk)))
            .item("message_id", s(&note.message_id))
            .item("receive_count", n(i64::from(note.receive_count)))
            .item("failed_at", s(rfc3339(note.failed_at)))
            .item("next_receive_after", s(rfc3339(note.next_receive_after)))
            .item("reason", s(note.reason))
            .item(
                "expires_at",
                n(note.next_receive_after.unix_timestamp() + KEEP_AFTER_WAIT_SECS),
            )
            .send()
            .await
            .map(|_| ())
            .map_err(|e| store_error("PutItem (retry note)", e))
    }
}

/// Notes kept in memory, for unit tests.
#[derive(Default)]
pub struct MemoryRetryNotes {
    notes: std::sync::Mutex<Vec<RetryNote>>,
}

impl MemoryRetryNotes {
    pub fn notes(&self) -> Vec<RetryNote> {
        self.notes.lock().unwrap().clone()
    }
}

#[async_trait]
impl RetryNotes for MemoryRetryNotes {
    async fn note(&self, note: &RetryNote) -> Result<(), StoreError> {
        self.notes.lock().unwrap().push(note.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{dedup_key, processed_key};
    use crate::provider::EventKey;

    #[test]
    fn a_note_never_has_another_events_key() {
        // A composite id whose last part spells the suffix is escaped: its key cannot end in it.
        let tricky = dedup_key("tilby", Some("t"), &EventKey::parts(["a", "%retry"]));
        let note = retry_key(&processed_key(&dedup_key(
            "tilby",
            Some("t"),
            &EventKey::id("a"),
        )));
        assert_ne!(processed_key(&tricky), note);
        assert!(!processed_key(&tricky).ends_with(RETRY_SUFFIX));
        assert!(note.ends_with(RETRY_SUFFIX));
    }
}

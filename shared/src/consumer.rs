//! The processor: SQS batch in, partial batch failures out (docs/design.md "Flow").
//! Each record is claimed as `processed#<dedup_key>` before its handler runs, so a redelivered
//! message is processed once; a failing record never fails the batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::future::join_all;
use tracing::{error, info, warn};

use crate::clock::{epoch_millis, Clock};
use crate::config::Settings;
use crate::envelope::{describe_json_error, Envelope};
use crate::keys::new_token;
use crate::metrics::{self, RecordMetric, RecordTally, UNKNOWN_PROVIDER};
use crate::objects::ObjectStore;
use crate::store::{Claim, ClaimOutcome, ClaimStore, Finish, Status};
use crate::verify::sha256_hex;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A passing failure (a downstream outage): the message comes back after its visibility timeout.
    #[error("retryable: {0}")]
    Retry(String),
    /// The event can never be processed: the message goes to the dead-letter queue at once,
    /// marked `rejected` with this reason (name what is wrong, never a payload value).
    #[error("rejected: {0}")]
    Reject(String),
}

impl HandlerError {
    /// A payload that does not fit the typed model: rejected, described by position only.
    pub fn unreadable(what: &str, e: &serde_json::Error) -> Self {
        HandlerError::Reject(format!("{what}: {}", describe_json_error(e)))
    }
}

/// Business processing of one event. Implementations must tolerate running again for the same
/// event after a crash (the claim makes that rare, not impossible).
#[async_trait]
pub trait EventHandler: Send + Sync {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError>;
}

/// The event's JSON payload as a provider's typed model. Errors name the position, never a value
/// (serde's messages can quote the payload).
pub fn typed_payload<T: serde::de::DeserializeOwned>(
    event: &Envelope,
    what: &str,
) -> Result<T, HandlerError> {
    let payload = event
        .payload
        .as_ref()
        .ok_or_else(|| HandlerError::Reject(format!("{what}: no JSON payload")))?;
    payload
        .parse()
        .map_err(|e| HandlerError::unreadable(what, &e))
}

/// Members of the event's JSON payload (an object), read in place: the requested ones as raw
/// text, the rest skipped without allocating ([`crate::json::fields`]). What a handler that needs
/// a few fields should use: memory stays a few words whatever the payload's size, where a typed
/// model with open-ended parts (`serde_json::Value`, `#[serde(flatten)]`) holds a tree of the
/// payload, 5 to 30 times its size.
pub fn payload_fields<'e>(
    event: &'e Envelope,
    names: &[&str],
    what: &str,
) -> Result<crate::json::Fields<'e>, HandlerError> {
    let payload = event
        .payload
        .as_ref()
        .ok_or_else(|| HandlerError::Reject(format!("{what}: no JSON payload")))?;
    crate::json::fields(payload.get().as_bytes(), names)
        .map_err(|e| HandlerError::Reject(format!("{what}: {e}")))
}

/// The default handler: logs the event (ids and type only). The processor itself records it as
/// PROCESSED in the table.
#[derive(Debug, Default)]
pub struct RecordingHandler;

#[async_trait]
impl EventHandler for RecordingHandler {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        info!(provider = %event.provider, event_id = %event.event_id, event_type = %event.event_type,
            tenant = event.tenant.as_deref(), "event processed");
        Ok(())
    }
}

/// Routes by (provider, event type), then provider, then the fallback.
pub struct Router {
    by_type: HashMap<(String, String), Arc<dyn EventHandler>>,
    by_provider: HashMap<String, Arc<dyn EventHandler>>,
    fallback: Arc<dyn EventHandler>,
}

impl Default for Router {
    fn default() -> Self {
        Router::new(Arc::new(RecordingHandler))
    }
}

impl Router {
    pub fn new(fallback: Arc<dyn EventHandler>) -> Self {
        Router {
            by_type: HashMap::new(),
            by_provider: HashMap::new(),
            fallback,
        }
    }

    pub fn provider(mut self, provider: &str, handler: Arc<dyn EventHandler>) -> Self {
        self.by_provider.insert(provider.to_owned(), handler);
        self
    }

    pub fn event(
        mut self,
        provider: &str,
        event_type: &str,
        handler: Arc<dyn EventHandler>,
    ) -> Self {
        self.by_type
            .insert((provider.to_owned(), event_type.to_owned()), handler);
        self
    }

    /// The same routes, each handler replaced by `wrap(handler)`: an observer around every
    /// handler (the delivery simulation records each run this way) without changing which
    /// handler runs for which event.
    pub fn wrap(self, wrap: impl Fn(Arc<dyn EventHandler>) -> Arc<dyn EventHandler>) -> Router {
        Router {
            by_type: self
                .by_type
                .into_iter()
                .map(|(k, h)| (k, wrap(h)))
                .collect(),
            by_provider: self
                .by_provider
                .into_iter()
                .map(|(k, h)| (k, wrap(h)))
                .collect(),
            fallback: wrap(self.fallback),
        }
    }

    pub fn route(&self, event: &Envelope) -> &dyn EventHandler {
        self.by_type
            .get(&(event.provider.clone(), event.event_type.clone()))
            .or_else(|| self.by_provider.get(&event.provider))
            .unwrap_or(&self.fallback)
            .as_ref()
    }
}

/// What happened to one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    Processed,
    /// Processed earlier (a redelivery): acknowledged without running the handler.
    AlreadyProcessed,
    /// Refused by the trust check and moved to the dead-letter queue with its reason
    /// ([`crate::trust`]): never processed, never claimed.
    Refused(crate::trust::Refusal),
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("unparseable envelope: {0}")]
    Unparseable(String),
    #[error("another delivery is processing this event")]
    InFlight,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Handler(#[from] HandlerError),
    #[error(transparent)]
    Payload(crate::objects::ResolveError),
    /// Refused by the trust check, and the dead-letter queue could not take it: it stays on the
    /// queue and is refused again at its next receive.
    #[error("refused ({0}), and not moved to the dead-letter queue: {1}")]
    Unparked(crate::trust::Refusal, crate::queue::QueueError),
}

impl RecordError {
    /// What failed, by kind only (never a message: a handler's may hold personal data).
    pub fn kind(&self) -> &'static str {
        match self {
            RecordError::Unparseable(_) => "unparseable",
            RecordError::InFlight => "in flight elsewhere",
            RecordError::Store(_) => "claim store",
            RecordError::Handler(HandlerError::Retry(_)) => "handler retry",
            RecordError::Handler(_) => "handler reject",
            RecordError::Payload(_) => "payload object",
            RecordError::Unparked(..) => "dead-letter queue",
        }
    }

    /// Unreadable, refused by its handler, or its payload object unusable: it can never succeed
    /// (moved to the dead-letter queue at once). Anything else may succeed on a redelivery.
    pub fn is_poison(&self) -> bool {
        match self {
            RecordError::Unparseable(_) | RecordError::Handler(HandlerError::Reject(_)) => true,
            RecordError::Payload(e) => e.is_poison(),
            _ => false,
        }
    }
}

/// How a record ended, as the processor's metrics count it.
pub fn record_metric(result: &Result<RecordOutcome, RecordError>) -> RecordMetric {
    match result {
        Ok(RecordOutcome::Processed) => RecordMetric::Processed,
        Ok(RecordOutcome::AlreadyProcessed) => RecordMetric::Skipped,
        Ok(RecordOutcome::Refused(_)) | Err(RecordError::Unparked(..)) => RecordMetric::Refused,
        Err(e) if e.is_poison() => RecordMetric::Rejected,
        Err(_) => RecordMetric::Failed,
    }
}

/// The `Provider` of a record: the envelope's provider when it is one of ours, else `unknown`.
fn provider_label(provider: &str) -> &'static str {
    static KNOWN: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let known = KNOWN.get_or_init(|| crate::providers::ALL.iter().map(|(p, _)| *p).collect());
    metrics::provider_label(provider, known)
}

/// Milliseconds from the record's SQS `SentTimestamp` attribute (epoch milliseconds) to `now_ms`.
fn message_age_ms(record: &SqsMessage, now_ms: i64) -> Option<f64> {
    let sent: i64 = record.attributes.get("SentTimestamp")?.parse().ok()?;
    Some(now_ms.saturating_sub(sent).max(0) as f64)
}

/// The batch's byte budget: a record runs when its bytes fit beside those already running.
/// Permits are KiB; tokio's semaphore is fair (first come, first served), so a large record
/// waiting for the whole budget is not overtaken forever by small ones.
struct Budget {
    kib: tokio::sync::Semaphore,
    total: u32,
}

impl Budget {
    fn new(bytes: usize) -> Budget {
        let total = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS as u32);
        Budget {
            kib: tokio::sync::Semaphore::new(total as usize),
            total,
        }
    }

    /// A share of `bytes` (all of the budget at most: a record larger than it runs alone).
    async fn take(&self, bytes: u64) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total);
        // The semaphore is never closed.
        self.kib.acquire_many(kib).await.ok()
    }
}

/// A record's size for the budget: its body, or, for a claim-checked one, the object its
/// reference names (read from the small reference without parsing the content).
fn record_bytes(record: &SqsMessage) -> u64 {
    #[derive(serde::Deserialize)]
    struct Reference {
        payload_ref: Option<crate::envelope::PayloadRef>,
    }
    let body = record.body.as_deref().unwrap_or("");
    // Only a body that spells the name can hold a reference: the others are not parsed twice.
    let referenced = if body.contains("\"payload_ref\"") {
        serde_json::from_str::<Reference>(body)
            .ok()
            .and_then(|r| r.payload_ref)
            .map_or(0, |r| r.bytes)
    } else {
        0
    };
    (body.len() as u64).max(referenced)
}

/// What one record came to.
struct RecordRun {
    result: Result<RecordOutcome, RecordError>,
    /// Its `Provider` metric dimension.
    provider: &'static str,
    /// How long its handler ran, if it ran.
    handler_ms: Option<f64>,
    /// A poison record moved to the dead-letter queue: acknowledged, not reported.
    parked: bool,
    /// The processor's claim key of its event ([`Envelope::processed_key`]), once its envelope
    /// was read.
    processed_pk: Option<String>,
}

impl RecordRun {
    /// A record that failed before its handler.
    fn unrun(
        result: Result<RecordOutcome, RecordError>,
        provider: &'static str,
        processed_pk: Option<String>,
    ) -> Self {
        RecordRun {
            result,
            provider,
            handler_ms: None,
            parked: false,
            processed_pk,
        }
    }
}

fn read_envelope(record: &SqsMessage) -> Result<Envelope, RecordError> {
    let body = record
        .body
        .as_deref()
        .ok_or_else(|| RecordError::Unparseable("no body".into()))?;
    serde_json::from_str(body).map_err(|e| RecordError::Unparseable(describe_json_error(&e)))
}

/// SHA-256 of the event's own content (not of the request it came in: one Tilby entity arrives
/// in bodies that differ by `nRetry`), for the conflict check of the processing claim.
/// Read in place: the content is never copied, and JSON is canonicalized without a tree.
fn content_fingerprint(envelope: &Envelope) -> String {
    match (
        &envelope.payload,
        &envelope.payload_raw,
        &envelope.payload_base64,
    ) {
        (Some(json), _, _) => crate::json::canonical_sha256(json.raw()),
        (None, Some(raw), _) => sha256_hex(raw.as_bytes()),
        (None, None, Some(b64)) => match crate::envelope::decoded_sha256(b64) {
            Some(hash) => hash,
            None => envelope.body_sha256.clone(),
        },
        (None, None, None) => envelope.body_sha256.clone(),
    }
}

pub struct Processor {
    claims: Arc<dyn ClaimStore>,
    router: Router,
    settings: Settings,
    clock: Arc<dyn Clock>,
    /// The claim check's bucket, where oversized envelopes wait.
    payloads: Option<Arc<dyn ObjectStore>>,
    /// Who may send what, and where refused messages go.
    trust: crate::trust::Trust,
    /// How long a failed record stays hidden, and who hides it (none: the queue's own
    /// visibility timeout).
    backoff: Option<(Arc<dyn crate::queue::Visibility>, crate::queue::Backoff)>,
    /// Where a failed record's receive count and next receive are noted, for operators.
    retry_notes: Option<Arc<dyn crate::store::RetryNotes>>,
}

impl Processor {
    pub fn new(
        claims: Arc<dyn ClaimStore>,
        router: Router,
        settings: Settings,
        clock: Arc<dyn Clock>,
        trust: crate::trust::Trust,
    ) -> Self {
        Processor {
            claims,
            router,
            settings,
            clock,
            payloads: None,
            trust,
            backoff: None,
            retry_notes: None,
        }
    }

    /// The same processor noting each hidden record's receive count and next receive
    /// ([`crate::store::RetryNotes`]).
    pub fn with_retry_notes(mut self, notes: Arc<dyn crate::store::RetryNotes>) -> Self {
        self.retry_notes = Some(notes);
        self
    }

    /// The same processor hiding each failed record for a wait that grows with its receive
    /// count ([`crate::queue::Backoff`]).
    pub fn with_backoff(
        mut self,
        visibility: Arc<dyn crate::queue::Visibility>,
        backoff: crate::queue::Backoff,
    ) -> Self {
        self.backoff = Some((visibility, backoff));
        self
    }

    /// The same processor reading claim-checked envelopes from `payloads`.
    pub fn with_payloads(mut self, payloads: Option<Arc<dyn ObjectStore>>) -> Self {
        self.payloads = payloads;
        self
    }

    /// Processes a batch; the response lists only the records that failed. Records the batch's
    /// metrics (flushed by the runtime, once per invocation).
    pub async fn process(&self, event: SqsEvent) -> SqsBatchResponse {
        let now_ms = epoch_millis(self.clock.now());
        let budget = Budget::new(self.settings.processor_bytes_in_flight);
        let results = join_all(event.records.iter().map(|r| self.process_one(r, &budget))).await;
        let mut response = SqsBatchResponse::default();
        let mut tallies = Vec::with_capacity(results.len());
        let mut failed = Vec::new();
        for (record, run) in event.records.iter().zip(results) {
            let RecordRun {
                result,
                provider,
                handler_ms,
                parked,
                processed_pk,
            } = run;
            tallies.push(RecordTally {
                provider,
                outcome: record_metric(&result),
                handler_ms,
                age_ms: message_age_ms(record, now_ms),
            });
            let message_id = record.message_id.clone().unwrap_or_default();
            if parked {
                continue;
            }
            if let Err(e) = result {
                failed.push((record, e, processed_pk));
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = message_id;
                response.batch_item_failures.push(failure);
            }
        }
        self.back_off(&failed).await;
        metrics::record_batch(&tallies);
        response
    }

    /// Hides each failed record for its wait, and logs it: its receive count, and when it
    /// comes back. A record whose visibility is not changed comes back after the queue's own
    /// visibility timeout (and spends a receive sooner).
    async fn back_off(&self, failed: &[(&SqsMessage, RecordError, Option<String>)]) {
        let now = self.clock.now();
        let receives = |record: &SqsMessage| -> u32 {
            record
                .attributes
                .get(crate::queue::RECEIVE_COUNT)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1)
        };
        let Some((visibility, backoff)) = &self.backoff else {
            for (record, e, _) in failed {
                let message_id = record.message_id.as_deref().unwrap_or("");
                error!(message_id, receive_count = receives(record), error = %e,
                    "record failed; reported in batchItemFailures");
            }
            return;
        };
        let waits: Vec<Duration> = failed
            .iter()
            .map(|(record, ..)| {
                let message_id = record.message_id.as_deref().unwrap_or("");
                backoff.delay_for(message_id, receives(record))
            })
            .collect();
        let (hideable, entries): (Vec<usize>, Vec<(String, Duration)>) = failed
            .iter()
            .zip(&waits)
            .enumerate()
            .filter_map(|(i, ((record, ..), wait))| {
                Some((i, (record.receipt_handle.clone()?, *wait)))
            })
            .unzip();
        let mut hidden: Vec<Option<Result<(), crate::queue::QueueError>>> =
            failed.iter().map(|_| None).collect();
        for (i, result) in hideable.into_iter().zip(visibility.hide(&entries).await) {
            hidden[i] = Some(result);
        }
        let mut notes = Vec::new();
        for (((record, e, processed_pk), wait), hidden) in failed.iter().zip(&waits).zip(hidden) {
            let message_id = record.message_id.as_deref().unwrap_or("");
            let receive_count = receives(record);
            match hidden {
                Some(Ok(())) => {
                    let next = crate::clock::rfc3339(now + *wait);
                    error!(message_id, receive_count, retry_in_seconds = wait.as_secs(),
                        next_receive_after = %next, error = %e,
                        "record failed; reported in batchItemFailures, hidden until its next try");
                    if let Some(processed_pk) = processed_pk {
                        notes.push(crate::store::RetryNote {
                            processed_pk: processed_pk.clone(),
                            message_id: message_id.to_owned(),
                            receive_count,
                            failed_at: now,
                            next_receive_after: now + *wait,
                            reason: e.kind(),
                        });
                    }
                }
                Some(Err(change)) => {
                    error!(message_id, receive_count, error = %e, visibility = %change,
                        "record failed; reported in batchItemFailures, back after the queue's visibility timeout (its wait was not set)");
                }
                None => {
                    error!(message_id, receive_count, error = %e,
                        "record failed; reported in batchItemFailures, back after the queue's visibility timeout (no receipt handle)");
                }
            }
        }
        if let Some(store) = &self.retry_notes {
            for (note, result) in notes
                .iter()
                .zip(join_all(notes.iter().map(|n| store.note(n))).await)
            {
                if let Err(e) = result {
                    warn!(message_id = %note.message_id, error = %e, "retry note not written");
                }
            }
        }
    }

    pub async fn process_record(&self, record: &SqsMessage) -> Result<RecordOutcome, RecordError> {
        let budget = Budget::new(self.settings.processor_bytes_in_flight);
        self.process_one(record, &budget).await.result
    }

    /// One record: its result, its `Provider` and how long its handler ran (if it ran). A
    /// poison record (it can never succeed) is moved to the dead-letter queue at once with its
    /// reason, not left to spend `maxReceiveCount` receives.
    async fn process_one(&self, record: &SqsMessage, budget: &Budget) -> RecordRun {
        let mut run = self.run_one(record, budget).await;
        if let Err(e) = &run.result {
            if e.is_poison() {
                run.parked = self.reject(record, e).await;
            }
        }
        run
    }

    /// Moves a poison record to the dead-letter queue, marked [`crate::queue::REJECTED`] with
    /// why (never the payload: the reasons name positions, not values). `false` when the DLQ did
    /// not take it: it is then reported failed and comes back (and, after `maxReceiveCount`
    /// receives, reaches the DLQ through the queue's redrive policy).
    async fn reject(&self, record: &SqsMessage, e: &RecordError) -> bool {
        let message_id = record.message_id.as_deref().unwrap_or("");
        let marks = vec![(crate::queue::REJECTED.to_owned(), e.to_string())];
        match self.trust.dead_letters.park(record, marks).await {
            Ok(()) => {
                error!(message_id, error = %e, "record rejected: moved to the dead-letter queue");
                true
            }
            Err(dlq) => {
                error!(message_id, error = %e, dlq = %dlq,
                    "record rejected, and the dead-letter queue did not take it: reported in batchItemFailures");
                false
            }
        }
    }

    /// [`Self::process_one`] before a poison record is parked. It waits for its share of the
    /// batch's byte budget before its content is read or copied.
    async fn run_one(&self, record: &SqsMessage, budget: &Budget) -> RecordRun {
        let _share = budget.take(record_bytes(record)).await;
        let envelope = match read_envelope(record) {
            Ok(envelope) => envelope,
            Err(e) => return RecordRun::unrun(Err(e), UNKNOWN_PROVIDER, None),
        };
        let provider = provider_label(&envelope.provider);
        let processed_pk = envelope.processed_key();
        // Before anything is read, claimed or run: may this message act for its provider?
        if let Err(refusal) = self.trust.senders.check(record, &envelope) {
            let result = self.refuse(record, refusal).await;
            return RecordRun::unrun(result, provider, Some(processed_pk));
        }
        // The most a receiver writes for one event: a reference to more came from elsewhere,
        // and is refused before anything is read.
        if let Some(reference) = &envelope.payload_ref {
            if reference.bytes > self.settings.max_record_bytes() {
                let e = crate::objects::ResolveError::Unusable("larger than any receiver writes");
                let payload = Err(RecordError::Payload(e));
                return RecordRun::unrun(payload, provider, Some(processed_pk));
            }
        }
        // A claim-checked envelope is made whole before anything else sees it.
        let envelope = match crate::objects::resolve(self.payloads.as_deref(), envelope).await {
            Ok(envelope) => envelope,
            Err(e) => {
                let payload = Err(RecordError::Payload(e));
                return RecordRun::unrun(payload, provider, Some(processed_pk));
            }
        };
        let mut handler_ms = None;
        let result = self
            .process_envelope(&envelope, &processed_pk, &mut handler_ms)
            .await;
        RecordRun {
            result,
            provider,
            handler_ms,
            parked: false,
            processed_pk: Some(processed_pk),
        }
    }

    /// Moves a refused record to the dead-letter queue with its reason; acknowledged once the
    /// DLQ has it, else left on the queue (refused again at its next receive).
    async fn refuse(
        &self,
        record: &SqsMessage,
        refusal: crate::trust::Refusal,
    ) -> Result<RecordOutcome, RecordError> {
        let message_id = record.message_id.as_deref().unwrap_or("");
        warn!(message_id, sender = crate::trust::sender_id(record), reason = %refusal,
            "message refused: moved to the dead-letter queue, not processed");
        match self
            .trust
            .dead_letters
            .park(
                record,
                crate::trust::refusal_marks(record, &refusal.to_string()),
            )
            .await
        {
            Ok(()) => Ok(RecordOutcome::Refused(refusal)),
            Err(e) => Err(RecordError::Unparked(refusal, e)),
        }
    }

    /// Claims `pk` ([`Envelope::processed_key`]: a replay runs again under a claim of its own,
    /// once per replay however often SQS delivers it; every other message under the event's),
    /// runs the handler, marks PROCESSED.
    async fn process_envelope(
        &self,
        envelope: &Envelope,
        pk: &str,
        handler_ms: &mut Option<f64>,
    ) -> Result<RecordOutcome, RecordError> {
        let now = self.clock.now();
        let claim = Claim {
            pk: pk.to_owned(),
            pending: Status::Processing,
            event_type: envelope.event_type.clone(),
            fingerprint: content_fingerprint(envelope),
            now,
            lease: self.settings.processing_lease,
            ttl: self.settings.dedup_ttl,
            token: new_token(),
        };
        match self.claims.claim(&claim).await? {
            ClaimOutcome::New | ClaimOutcome::TakenOver { .. } => {}
            ClaimOutcome::Duplicate { .. } => {
                info!(event_id = %envelope.event_id, dedup_key = %envelope.dedup_key, "already processed; skipped");
                return Ok(RecordOutcome::AlreadyProcessed);
            }
            ClaimOutcome::InFlight { .. } => return Err(RecordError::InFlight),
        }
        let started = std::time::Instant::now();
        let handled = self.router.route(envelope).handle(envelope).await;
        *handler_ms = Some(metrics::millis(started.elapsed()));
        if let Err(e) = handled {
            if let Err(release) = self.claims.release(&claim.pk, &claim.token).await {
                warn!(dedup_key = %envelope.dedup_key, error = %release, "claim not released; it frees itself when its lease ends");
            }
            return Err(e.into());
        }
        if let Err(e) = self
            .claims
            .finish(
                &claim.pk,
                &claim.token,
                &Finish::Processed,
                self.clock.now(),
            )
            .await
        {
            // The handler's work is done; reporting a failure would run it again. The claim
            // stays PROCESSING until its lease ends.
            warn!(dedup_key = %envelope.dedup_key, error = %e, "processed but not marked PROCESSED");
        }
        info!(provider = %envelope.provider, event_id = %envelope.event_id, dedup_key = %envelope.dedup_key, replay = envelope.replay.as_ref().map(|r| r.id.as_str()),
            "handler ran");
        Ok(RecordOutcome::Processed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FixedClock;
    use crate::metrics::testing::Seen;
    use crate::metrics::{
        FAILED, HANDLER_LATENCY, MESSAGE_AGE, PROCESSED, PROVIDER, REFUSED, REJECTED,
        UNKNOWN_PROVIDER,
    };
    use crate::store::MemoryClaims;

    const NOW_MS: i64 = 1_700_000_000_000;

    /// Fails events whose id starts with `retry`, rejects those starting with `reject`.
    struct Picky;

    #[async_trait]
    impl EventHandler for Picky {
        async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
            match event.event_id.as_str() {
                id if id.starts_with("retry") => Err(HandlerError::Retry("down".into())),
                id if id.starts_with("reject") => Err(HandlerError::Reject("never".into())),
                _ => Ok(()),
            }
        }
    }

    fn processor() -> Processor {
        let env =
            crate::config::Env::from_pairs([("EVENTS_TABLE", "t"), ("EVENTS_QUEUE_URL", "q")]);
        let settings = Settings::from_env(&env).unwrap();
        Processor::new(
            Arc::new(MemoryClaims::default()),
            Router::new(Arc::new(Picky)),
            settings,
            Arc::new(FixedClock::at_millis(NOW_MS)),
            crate::trust::Trust::local(Arc::new(crate::queue::MemoryDeadLetters::default())),
        )
    }

    fn record(provider: &str, id: &str, sent_ms_ago: Option<i64>) -> SqsMessage {
        let body = serde_json::json!({
            "provider": provider, "event_id": id, "event_type": "t",
            "dedup_key": format!("{provider}#site-secret-tenant#id#{id}"),
            "received_at": "2023-11-14T22:13:20Z", "tenant": "site-secret-tenant",
            "body_sha256": "00", "payload": {"email": "someone@example.com"}
        });
        let mut r = SqsMessage::default();
        r.message_id = Some(format!("m-{id}"));
        r.body = Some(body.to_string());
        r.attributes.insert(
            crate::trust::SENDER_ID.into(),
            crate::trust::LOCAL_SENDER_ID.into(),
        );
        if let Some(ago) = sent_ms_ago {
            r.attributes
                .insert("SentTimestamp".into(), (NOW_MS - ago).to_string());
        }
        r
    }

    /// Counts how many of its runs overlap; each run yields a few times, so that records
    /// allowed to run together do.
    #[derive(Default)]
    struct Overlap {
        running: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl EventHandler for Overlap {
        async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.running.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            for _ in 0..5 {
                tokio::task::yield_now().await;
            }
            self.running.fetch_sub(1, SeqCst);
            Ok(())
        }
    }

    /// `r` with its body (an envelope) changed by `edit`.
    fn edited(r: &SqsMessage, edit: impl FnOnce(&mut serde_json::Value)) -> SqsMessage {
        let mut body: serde_json::Value = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
        edit(&mut body);
        let mut out = r.clone();
        out.body = Some(body.to_string());
        out
    }

    /// `r` marked as a message of the replay `id`.
    fn replayed(r: &SqsMessage, id: &str) -> SqsMessage {
        edited(r, |body| {
            body["replay"] = serde_json::json!({
                "id": id, "requested_at": "2026-12-01T10:00:00Z", "archive_key": "trybe/k.json"
            });
        })
    }

    /// A record whose body is about `kib` KiB.
    fn sized(id: &str, kib: usize) -> SqsMessage {
        edited(&record("trybe", id, None), |body| {
            body["payload"] = serde_json::json!({ "pad": "x".repeat(kib * 1024) });
        })
    }

    #[tokio::test]
    async fn a_batch_runs_under_its_byte_budget_and_a_record_larger_than_it_runs_alone() {
        let most = |budget: &str, records: Vec<SqsMessage>| {
            let env = crate::config::Env::from_pairs([
                ("EVENTS_TABLE", "t"),
                ("EVENTS_QUEUE_URL", "q"),
                ("PROCESSOR_BYTES_IN_FLIGHT", budget),
            ]);
            let overlap = Arc::new(Overlap::default());
            let p = Processor::new(
                Arc::new(MemoryClaims::default()),
                Router::new(overlap.clone()),
                Settings::from_env(&env).unwrap(),
                Arc::new(FixedClock::at_millis(NOW_MS)),
                crate::trust::Trust::local(Arc::new(crate::queue::MemoryDeadLetters::default())),
            );
            async move {
                let response = p.process(batch(records)).await;
                assert!(response.batch_item_failures.is_empty());
                overlap.most.load(std::sync::atomic::Ordering::SeqCst)
            }
        };
        let ten = |kib| {
            (0..10)
                .map(|i| sized(&format!("e{i}"), kib))
                .collect::<Vec<_>>()
        };
        // Ten small records fit the default budget together.
        assert_eq!(most("2097152", ten(1)).await, 10);
        // Records of 64 KiB under a budget of 200 KiB: three at a time.
        assert_eq!(most("204800", ten(64)).await, 3);
        // Each larger than the budget: one at a time, and every one still runs.
        assert_eq!(most("16384", ten(64)).await, 1);
    }

    /// `record` as the event source mapping hands it out: with a receipt handle and its
    /// receive count.
    fn received(provider: &str, id: &str, receives: u32) -> SqsMessage {
        let mut r = record(provider, id, Some(1_000));
        r.receipt_handle = Some(format!("rh-{id}"));
        r.attributes
            .insert(crate::queue::RECEIVE_COUNT.into(), receives.to_string());
        r
    }

    #[tokio::test]
    async fn a_failed_record_is_hidden_for_a_wait_that_grows_with_its_receive_count() {
        let visibility = Arc::new(crate::queue::MemoryVisibility::default());
        let backoff = crate::queue::Backoff::default();
        let notes = Arc::new(crate::store::MemoryRetryNotes::default());
        let p = processor()
            .with_backoff(visibility.clone(), backoff)
            .with_retry_notes(notes.clone());
        let response = p
            .process(batch(vec![
                received("trybe", "retry-1", 1),
                received("trybe", "retry-2", 5),
                received("trybe", "fine", 2),
                received("trybe", "reject-1", 1),
            ]))
            .await;
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["m-retry-1", "m-retry-2"]);
        // The two failures only: not the processed record, not the one parked in the DLQ.
        assert_eq!(
            visibility.hidden(),
            vec![
                ("rh-retry-1".to_owned(), backoff.delay_for("m-retry-1", 1)),
                ("rh-retry-2".to_owned(), backoff.delay_for("m-retry-2", 5)),
            ]
        );
        let [(_, first), (_, fifth)] = <[_; 2]>::try_from(visibility.hidden()).unwrap();
        assert!(first >= Duration::from_secs(60) && first < Duration::from_secs(67));
        assert!(fifth >= Duration::from_secs(960) && fifth < Duration::from_secs(1057));
        // Each noted for operators: receive count, next receive, and the kind of failure only.
        let now = FixedClock::at_millis(NOW_MS).now();
        let noted = notes.notes();
        assert_eq!(noted.len(), 2);
        assert_eq!(
            noted[1],
            crate::store::RetryNote {
                processed_pk: "processed#trybe#site-secret-tenant#id#retry-2".into(),
                message_id: "m-retry-2".into(),
                receive_count: 5,
                failed_at: now,
                next_receive_after: now + fifth,
                reason: "handler retry",
            }
        );
    }

    #[tokio::test]
    async fn a_record_whose_wait_cannot_be_set_is_still_reported_failed() {
        let visibility = Arc::new(crate::queue::MemoryVisibility::default());
        visibility.fail(true);
        let p = processor().with_backoff(visibility.clone(), crate::queue::Backoff::default());
        let mut no_handle = received("trybe", "retry-b", 1);
        no_handle.receipt_handle = None;
        let response = p
            .process(batch(vec![received("trybe", "retry-a", 3), no_handle]))
            .await;
        assert_eq!(response.batch_item_failures.len(), 2);
        assert!(visibility.hidden().is_empty());
    }

    #[tokio::test]
    async fn a_replays_note_is_under_the_replays_own_key() {
        let notes = Arc::new(crate::store::MemoryRetryNotes::default());
        let p = processor()
            .with_backoff(
                Arc::new(crate::queue::MemoryVisibility::default()),
                crate::queue::Backoff::default(),
            )
            .with_retry_notes(notes.clone());
        let r = replayed(&received("trybe", "retry-r", 2), "rp-1");
        p.process(batch(vec![r])).await;
        assert_eq!(notes.notes().len(), 1);
        assert_eq!(
            notes.notes()[0].processed_pk,
            "processed#trybe#site-secret-tenant#id#retry-r#replay#rp-1"
        );
    }

    #[test]
    fn a_record_counts_its_body_or_the_object_its_reference_names() {
        let inline = sized("in", 3);
        assert_eq!(
            record_bytes(&inline),
            inline.body.as_ref().unwrap().len() as u64
        );
        let checked = edited(&record("trybe", "big", None), |body| {
            body["payload_ref"] =
                serde_json::json!({"key": "trybe/x/y.json", "bytes": 10_000_000, "sha256": "00"});
        });
        assert_eq!(record_bytes(&checked), 10_000_000);
        // The name inside a payload is not a reference.
        let mut spelled = record("trybe", "s", None);
        spelled.body = Some(spelled.body.unwrap().replace("email", "payload_ref"));
        assert_eq!(
            record_bytes(&spelled),
            spelled.body.as_ref().unwrap().len() as u64
        );
    }

    #[tokio::test]
    async fn a_reference_larger_than_any_receiver_writes_is_refused_unread() {
        let p = processor();
        let r = edited(&record("trybe", "big", None), |body| {
            body.as_object_mut().unwrap().remove("payload");
            body["payload_ref"] = serde_json::json!({
                "key": "trybe/x/y.json", "bytes": p.settings.max_record_bytes() + 1, "sha256": "00"
            });
        });
        // No bucket is configured: had it tried to read the object, the error would be NoBucket.
        let e = p.process_record(&r).await.unwrap_err();
        assert!(e.is_poison(), "{e}");
        assert!(
            e.to_string().contains("larger than any receiver writes"),
            "{e}"
        );
    }

    fn batch(records: Vec<SqsMessage>) -> SqsEvent {
        let mut event = SqsEvent::default();
        event.records = records;
        event
    }

    #[test]
    fn each_record_is_counted_under_its_envelopes_provider() {
        let p = processor();
        let mut unreadable = SqsMessage::default();
        unreadable.message_id = Some("m-bad".into());
        unreadable.body = Some("{not json".into());
        unreadable
            .attributes
            .insert("SentTimestamp".into(), (NOW_MS - 7).to_string());
        let seen = Seen::default();
        let response = seen.during_async(p.process(batch(vec![
            record("trybe", "ok-1", Some(1500)),
            record("tilby", "ok-2", Some(20)),
            record("trybe", "retry-1", None),
            record("tilby", "reject-1", None),
            record("someone-else", "ok-3", None),
            unreadable,
        ])));
        // The retryable one; the rejected and the unreadable one went to the dead-letter queue.
        assert_eq!(response.batch_item_failures.len(), 1);
        let count = |name, provider| seen.count(name, &[(PROVIDER, provider)]);
        assert_eq!(count(PROCESSED, "trybe"), 1.0);
        assert_eq!(count(PROCESSED, "tilby"), 1.0);
        assert_eq!(count(FAILED, "trybe"), 1.0);
        assert_eq!(count(REJECTED, "tilby"), 1.0, "refused by its handler");
        assert_eq!(
            seen.count(REFUSED, &[]),
            1.0,
            "not one of ours: refused, without a Provider"
        );
        assert_eq!(count(PROCESSED, UNKNOWN_PROVIDER), 0.0);
        assert_eq!(count(REJECTED, UNKNOWN_PROVIDER), 1.0, "unreadable");
        assert_eq!(
            seen.values(MESSAGE_AGE, &[(PROVIDER, "trybe")]),
            vec![1500.0]
        );
        assert_eq!(seen.values(MESSAGE_AGE, &[(PROVIDER, "tilby")]), vec![20.0]);
        assert_eq!(
            seen.values(MESSAGE_AGE, &[(PROVIDER, UNKNOWN_PROVIDER)]),
            vec![7.0]
        );
        assert_eq!(
            seen.values(HANDLER_LATENCY, &[(PROVIDER, "trybe")]).len(),
            2
        );
        // Nothing but provider names in the labels (Refused has none).
        for sample in seen.samples() {
            let expected = usize::from(sample.name != REFUSED);
            assert_eq!(sample.labels.len(), expected, "{sample:?}");
        }

        // A redelivery of a processed record is acknowledged and counted in none.
        let seen = Seen::default();
        let response = seen.during_async(p.process(batch(vec![record("trybe", "ok-1", None)])));
        assert!(response.batch_item_failures.is_empty());
        assert!(seen.samples().is_empty(), "{:?}", seen.samples());
    }

    #[tokio::test]
    async fn a_replay_runs_a_processed_event_again_once_per_replay() {
        let p = processor();
        let plain = record("trybe", "ok-r", None);
        assert_eq!(
            p.process_record(&plain).await.unwrap(),
            RecordOutcome::Processed
        );
        assert_eq!(
            p.process_record(&plain).await.unwrap(),
            RecordOutcome::AlreadyProcessed
        );
        assert_eq!(
            p.process_record(&replayed(&plain, "r1")).await.unwrap(),
            RecordOutcome::Processed,
            "the replay bypasses the event's own claim"
        );
        assert_eq!(
            p.process_record(&replayed(&plain, "r1")).await.unwrap(),
            RecordOutcome::AlreadyProcessed,
            "a redelivered replay runs once"
        );
        assert_eq!(
            p.process_record(&replayed(&plain, "r2")).await.unwrap(),
            RecordOutcome::Processed,
            "another replay runs again"
        );
        assert_eq!(
            p.process_record(&plain).await.unwrap(),
            RecordOutcome::AlreadyProcessed,
            "and the event's own claim is untouched"
        );
    }

    #[tokio::test]
    async fn a_claim_checked_record_is_resolved_before_its_handler_and_a_missing_object_is_poison()
    {
        let payloads = Arc::new(crate::objects::MemoryObjects::default());
        let p = processor().with_payloads(Some(payloads.clone() as Arc<dyn ObjectStore>));
        let mut whole: Envelope =
            serde_json::from_str(record("trybe", "reject-big", None).body.as_deref().unwrap())
                .unwrap();
        whole.event_id = "ok-big".into();
        let checked = crate::objects::check(&whole).unwrap();
        let mut r = record("trybe", "m-big", None);
        r.body = Some(serde_json::to_string(&checked.reference).unwrap());
        let missing = p.process_record(&r).await.unwrap_err();
        assert!(missing.is_poison(), "{missing}");
        payloads.fail(true);
        let down = p.process_record(&r).await.unwrap_err();
        assert!(!down.is_poison(), "{down}");
        payloads.fail(false);
        payloads.insert(&checked.object.key, checked.object.bytes.to_vec());
        assert_eq!(
            p.process_record(&r).await.unwrap(),
            RecordOutcome::Processed
        );
    }

    #[test]
    fn an_in_flight_record_is_failed_not_rejected() {
        let e = RecordError::InFlight;
        assert_eq!(record_metric(&Err(e)), RecordMetric::Failed);
        let e = RecordError::Store(crate::store::StoreError("x".into()));
        assert_eq!(record_metric(&Err(e)), RecordMetric::Failed);
        assert_eq!(
            record_metric(&Ok(RecordOutcome::AlreadyProcessed)),
            RecordMetric::Skipped
        );
    }

    /// A processor trusting `trybe` to `AROATRYBE`, `tilby` to `AROATILBY` and the operator
    /// `AROAOPS`, refusing into `dead`, over `claims`.
    fn guarded(
        dead: &Arc<crate::queue::MemoryDeadLetters>,
        claims: &Arc<MemoryClaims>,
    ) -> Processor {
        let env =
            crate::config::Env::from_pairs([("EVENTS_TABLE", "t"), ("EVENTS_QUEUE_URL", "q")]);
        let senders = crate::trust::Senders::parse(
            "trybe=AROATRYBE,tilby=AROATILBY",
            "AROAOPS",
            &["trybe", "tilby"],
        )
        .unwrap();
        Processor::new(
            claims.clone(),
            Router::new(Arc::new(Picky)),
            Settings::from_env(&env).unwrap(),
            Arc::new(FixedClock::at_millis(NOW_MS)),
            crate::trust::Trust {
                senders,
                dead_letters: dead.clone(),
            },
        )
    }

    fn sent_by(mut r: SqsMessage, sender: &str) -> SqsMessage {
        r.attributes
            .insert(crate::trust::SENDER_ID.into(), sender.into());
        r
    }

    #[tokio::test]
    async fn a_message_for_another_provider_is_moved_to_the_dlq_and_never_suppresses_the_genuine_event(
    ) {
        let dead = Arc::new(crate::queue::MemoryDeadLetters::default());
        let claims = Arc::new(MemoryClaims::default());
        let p = guarded(&dead, &claims);
        // The finding: a Tilby envelope carrying a Trybe event's dedup key, sent by Tilby's
        // receiver; and the same envelope relabelled as Trybe's, still sent by Tilby's role.
        let genuine = record("trybe", "ok-1", None);
        let foreign_key = edited(&genuine, |body| body["provider"] = "tilby".into());
        for forged in [
            sent_by(foreign_key, "AROATILBY:tilby-webhook"),
            sent_by(genuine.clone(), "AROATILBY:tilby-webhook"),
        ] {
            let outcome = p.process_record(&forged).await.unwrap();
            assert!(matches!(outcome, RecordOutcome::Refused(_)), "{outcome:?}");
        }
        assert!(claims.is_empty(), "a refused message claims nothing");
        let parked = dead.parked();
        assert_eq!(parked.len(), 2);
        assert_eq!(
            parked[1].0,
            genuine.body.clone().unwrap(),
            "the body as it came"
        );
        assert_eq!(
            parked[1].1[..2],
            [
                (
                    crate::trust::REFUSED.to_owned(),
                    "sender AROATILBY:tilby-webhook may not act for provider trybe".to_owned()
                ),
                (
                    crate::trust::REFUSED_SENDER.to_owned(),
                    "AROATILBY:tilby-webhook".to_owned()
                ),
            ]
        );
        // The genuine event, from Trybe's receiver, still runs.
        assert_eq!(
            p.process_record(&sent_by(genuine, "AROATRYBE:trybe-webhook"))
                .await
                .unwrap(),
            RecordOutcome::Processed
        );
    }

    #[test]
    fn a_refused_message_the_dlq_cannot_take_stays_on_the_queue() {
        let dead = Arc::new(crate::queue::MemoryDeadLetters::default());
        let claims = Arc::new(MemoryClaims::default());
        let p = guarded(&dead, &claims);
        dead.fail(true);
        let forged = sent_by(record("trybe", "ok-2", None), "AIDASOMEONE");
        let seen = Seen::default();
        let response = seen.during_async(p.process(batch(vec![forged.clone()])));
        assert_eq!(
            response.batch_item_failures.len(),
            1,
            "reported, so retried"
        );
        assert_eq!(seen.count(REFUSED, &[]), 1.0);
        assert!(claims.is_empty());
        dead.fail(false);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let response = runtime.block_on(p.process(batch(vec![forged])));
        assert!(
            response.batch_item_failures.is_empty(),
            "parked, so acknowledged"
        );
        assert_eq!(dead.parked().len(), 1);
    }

    #[tokio::test]
    async fn a_replay_mark_runs_only_from_an_operator() {
        let dead = Arc::new(crate::queue::MemoryDeadLetters::default());
        let claims = Arc::new(MemoryClaims::default());
        let p = guarded(&dead, &claims);
        let plain = record("trybe", "ok-3", None);
        let replayed = replayed(&plain, "r1");
        let from_receiver = sent_by(replayed.clone(), "AROATRYBE:trybe-webhook");
        assert!(matches!(
            p.process_record(&from_receiver).await.unwrap(),
            RecordOutcome::Refused(crate::trust::Refusal::Replay(_))
        ));
        assert!(claims.is_empty());
        let from_operator = sent_by(replayed, "AROAOPS:alice");
        assert_eq!(
            p.process_record(&from_operator).await.unwrap(),
            RecordOutcome::Processed
        );
    }

    #[tokio::test]
    async fn a_poison_record_goes_to_the_dlq_at_its_first_receive_and_a_passing_failure_is_retried()
    {
        let dead = Arc::new(crate::queue::MemoryDeadLetters::default());
        let claims = Arc::new(MemoryClaims::default());
        let p = guarded(&dead, &claims);
        let mut unreadable = sent_by(SqsMessage::default(), "AROATRYBE:trybe-webhook");
        unreadable.message_id = Some("m-bad".into());
        unreadable.body = Some("{not json".into());
        let batch_of = || {
            batch(vec![
                sent_by(record("trybe", "retry-2", None), "AROATRYBE:t"),
                sent_by(record("trybe", "reject-2", None), "AROATRYBE:t"),
                unreadable.clone(),
            ])
        };
        let response = p.process(batch_of()).await;
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["m-retry-2"], "only the passing failure comes back");
        let mut parked = dead.parked();
        parked.sort();
        let marks: Vec<&(String, String)> = parked.iter().map(|(_, a)| &a[0]).collect();
        assert_eq!(
            marks,
            [
                &(
                    crate::queue::REJECTED.to_owned(),
                    "rejected: never".to_owned()
                ),
                &(
                    crate::queue::REJECTED.to_owned(),
                    "unparseable envelope: syntax error at line 1, column 2".to_owned()
                ),
            ]
        );
        assert_eq!(parked[1].0, "{not json", "the body as it came");
        // The handler's claim was given back: a fixed handler runs the event after a redrive.
        assert!(claims
            .get("processed#trybe#site-secret-tenant#id#reject-2")
            .is_none());
        // A dead-letter queue that does not take them: reported, so they come back (and reach
        // the DLQ through the queue's redrive policy at worst).
        dead.fail(true);
        let response = p.process(batch_of()).await;
        assert_eq!(response.batch_item_failures.len(), 3);
    }
}

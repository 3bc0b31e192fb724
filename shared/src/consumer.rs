//! The processor: SQS batch in, partial batch failures out (DESIGN.md "Consumer").
//! Each record is claimed as `processed#<dedup_key>` before its handler runs, so a redelivered
//! message is processed once; a failing record never fails the batch.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::future::join_all;
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::config::Settings;
use crate::envelope::{describe_json_error, Envelope, Payload};
use crate::pipeline::new_token;
use crate::provider::canonical_json;
use crate::store::{Claim, ClaimOutcome, ClaimStore, Finish, Status};
use crate::verify::sha256_hex;

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A passing failure (a downstream outage): the message comes back after its visibility timeout.
    #[error("retryable: {0}")]
    Retry(String),
    /// The event cannot be processed: after maxReceiveCount it lands in the dead-letter queue.
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
        .clone()
        .ok_or_else(|| HandlerError::Reject(format!("{what}: no JSON payload")))?;
    serde_json::from_value(payload).map_err(|e| HandlerError::unreadable(what, &e))
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
}

/// SHA-256 of the event's own content (not of the request it came in: one Tilby entity arrives
/// in bodies that differ by `nRetry`), for the conflict check of the processing claim.
fn content_fingerprint(envelope: &Envelope) -> String {
    match envelope.content() {
        Some(Payload::Json(payload)) => sha256_hex(canonical_json(&payload).as_bytes()),
        Some(Payload::Raw(raw)) => sha256_hex(raw.as_bytes()),
        Some(Payload::Bytes(bytes)) => sha256_hex(&bytes),
        None => envelope.body_sha256.clone(),
    }
}

pub struct Processor {
    claims: Arc<dyn ClaimStore>,
    router: Router,
    settings: Settings,
    clock: Arc<dyn Clock>,
}

impl Processor {
    pub fn new(
        claims: Arc<dyn ClaimStore>,
        router: Router,
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Processor {
            claims,
            router,
            settings,
            clock,
        }
    }

    /// Processes a batch; the response lists only the records that failed.
    pub async fn process(&self, event: SqsEvent) -> SqsBatchResponse {
        let results = join_all(event.records.iter().map(|r| self.process_record(r))).await;
        let mut response = SqsBatchResponse::default();
        for (record, result) in event.records.iter().zip(results) {
            let message_id = record.message_id.clone().unwrap_or_default();
            if let Err(e) = result {
                error!(message_id = %message_id, error = %e, "record failed; reported in batchItemFailures");
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = message_id;
                response.batch_item_failures.push(failure);
            }
        }
        response
    }

    pub async fn process_record(&self, record: &SqsMessage) -> Result<RecordOutcome, RecordError> {
        let body = record
            .body
            .as_deref()
            .ok_or_else(|| RecordError::Unparseable("no body".into()))?;
        let envelope: Envelope = serde_json::from_str(body)
            .map_err(|e| RecordError::Unparseable(describe_json_error(&e)))?;
        let now = self.clock.now();
        let claim = Claim {
            pk: format!("processed#{}", envelope.dedup_key),
            pending: Status::Processing,
            event_type: envelope.event_type.clone(),
            fingerprint: content_fingerprint(&envelope),
            now,
            lease: self.settings.processing_lease,
            ttl: self.settings.dedup_ttl,
            token: new_token(),
        };
        match self.claims.claim(&claim).await? {
            ClaimOutcome::New => {}
            ClaimOutcome::Duplicate { .. } => {
                info!(event_id = %envelope.event_id, dedup_key = %envelope.dedup_key, "already processed; skipped");
                return Ok(RecordOutcome::AlreadyProcessed);
            }
            ClaimOutcome::InFlight { .. } => return Err(RecordError::InFlight),
        }
        if let Err(e) = self.router.route(&envelope).handle(&envelope).await {
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
        info!(provider = %envelope.provider, event_id = %envelope.event_id, dedup_key = %envelope.dedup_key,
            "handler ran");
        Ok(RecordOutcome::Processed)
    }
}

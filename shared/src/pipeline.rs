//! The receiver pipeline, the same for every provider (docs/design.md "Flow"):
//! method → size → authenticate → media type → inspect (handshake | events) → claim → queue →
//! finish → answer. A provider only supplies its rules ([`Provider`]).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::future::join;
use futures::stream::{self, StreamExt};
use lambda_http::http::{HeaderMap, Method};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::Value;
use time::OffsetDateTime;
use tracing::{error, info, warn};

use crate::answer::Answer;
use crate::clock::{rfc3339, Clock};
use crate::config::Settings;
use crate::envelope::{describe_json_error, Envelope};
use crate::metrics::{self, Cause, RequestTally};
use crate::objects::{self, ObjectError, ObjectStore};
use crate::provider::{
    EventKey, Inbound, InboundEvent, Inspection, Provider, Refusal, VerifiedRequest,
};
use crate::queue::{EventQueue, Message};
use crate::store::{Claim, ClaimOutcome, ClaimStore, Finish, Record, Status, StoreError};
use crate::verify::{sha256_hex, AuthFailure};

/// A receiver: the pipeline wired to one provider, its store and its queue. Built once per cold
/// start; `handle` does only per-request work.
pub struct Receiver<P> {
    ready: Result<Ready<P>, String>,
    clock: Arc<dyn Clock>,
    /// The provider's name, in the log line and as the metrics' `Provider` dimension (known even
    /// when the provider could not be configured: see [`Receiver::named`]).
    name: &'static str,
}

struct Ready<P> {
    provider: P,
    claims: Arc<dyn ClaimStore>,
    queue: Arc<dyn EventQueue>,
    settings: Settings,
    allow: String,
    /// The claim check's bucket: envelopes too large for the queue wait there.
    payloads: Option<Arc<dyn ObjectStore>>,
    /// The archive's bucket, when the archive is on.
    archive: Option<Arc<dyn ObjectStore>>,
}

/// What one request did, for the single log line and the metrics it leaves.
#[derive(Debug, Default)]
struct Trace {
    event_id: Option<String>,
    event_type: Option<String>,
    tenant: Option<String>,
    reason: Option<String>,
    metrics: RequestTally,
}

impl<P: Provider> Receiver<P> {
    pub fn new(
        provider: P,
        claims: Arc<dyn ClaimStore>,
        queue: Arc<dyn EventQueue>,
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let allow = provider
            .methods()
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        Receiver {
            name: provider.name(),
            ready: Ok(Ready {
                provider,
                claims,
                queue,
                settings,
                allow,
                payloads: None,
                archive: None,
            }),
            clock,
        }
    }

    /// The same receiver with the claim check's bucket (envelopes over the queue's limit are
    /// written there, the message carries a reference) and the archive's, each when given.
    pub fn with_objects(
        mut self,
        payloads: Option<Arc<dyn ObjectStore>>,
        archive: Option<Arc<dyn ObjectStore>>,
    ) -> Self {
        if let Ok(ready) = &mut self.ready {
            ready.payloads = payloads;
            ready.archive = archive;
        }
        self
    }

    /// The same receiver reading time from `clock` (tests with signed, time-stamped samples).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A receiver that refuses everything with 500: its configuration is incomplete (fail closed).
    /// The reason is logged once, here, at cold start.
    pub fn misconfigured(reason: impl std::fmt::Display) -> Self {
        let reason = reason.to_string();
        error!(reason = %reason, "receiver misconfigured: refusing every request with 500");
        Receiver {
            ready: Err(reason),
            clock: Arc::new(crate::clock::SystemClock),
            name: "unconfigured",
        }
    }

    /// The same receiver under the provider's name, which a misconfigured one cannot ask its
    /// provider for (the function knows which provider it serves).
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// The Lambda entry point: one request in, one response out, one log line.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let request_id = request.lambda_context_ref().map(|c| c.request_id.clone());
        let body: &[u8] = request.body().as_ref();
        let mut trace = Trace::default();
        let answer = self
            .answer(
                request.method(),
                request.headers(),
                request.uri().path(),
                request.uri().query(),
                body,
                &mut trace,
            )
            .await;
        info!(
            provider = self.name,
            request_id = request_id.as_deref(),
            method = %request.method(),
            status = answer.status().as_u16(),
            outcome = answer.outcome(),
            event_id = trace.event_id.as_deref(),
            event_type = trace.event_type.as_deref(),
            tenant = trace.tenant.as_deref(),
            reason = trace.reason.as_deref(),
            bytes = body.len(),
            "webhook answered"
        );
        answer.into_response()
    }

    /// The pipeline without the Lambda types: usable from tests and benchmarks. Records the
    /// request's metrics, as [`Receiver::handle`] does.
    pub async fn answer_parts(
        &self,
        method: &Method,
        headers: &HeaderMap,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> Answer {
        self.answer(method, headers, path, query, body, &mut Trace::default())
            .await
    }

    /// The answer, with the request's metrics recorded (flushed by the runtime, once per
    /// invocation).
    async fn answer(
        &self,
        method: &Method,
        headers: &HeaderMap,
        path: &str,
        query: Option<&str>,
        body: &[u8],
        trace: &mut Trace,
    ) -> Answer {
        let answer = self.decide(method, headers, path, query, body, trace).await;
        metrics::record_request(self.name, &answer, &trace.metrics);
        answer
    }

    async fn decide(
        &self,
        method: &Method,
        headers: &HeaderMap,
        path: &str,
        query: Option<&str>,
        body: &[u8],
        trace: &mut Trace,
    ) -> Answer {
        let ready = match &self.ready {
            Ok(ready) => ready,
            Err(_) => return Answer::Misconfigured,
        };
        if !ready.provider.methods().contains(method) {
            return Answer::MethodNotAllowed {
                allow: ready.allow.clone(),
            };
        }
        if body.len() > ready.settings.max_body_bytes {
            return Answer::PayloadTooLarge;
        }
        let inbound = Inbound {
            method,
            headers,
            path,
            query,
            body,
            now: self.clock.now(),
        };
        let proof = match ready.provider.authenticate(&inbound) {
            Ok(proof) => proof,
            Err(why) => {
                trace.reason = Some(why.to_string());
                return Answer::Unauthorized;
            }
        };
        if !ready
            .provider
            .accepts_media_type(inbound.media_type().as_deref())
        {
            return Answer::Refused(Refusal::UnsupportedMediaType);
        }
        let verified =
            VerifiedRequest::new(&inbound, proof).with_max_events(ready.settings.max_events);
        match ready.provider.inspect(&verified) {
            Ok(Inspection::Reply {
                status,
                body,
                tenant,
            }) => {
                if !verified.proof().permits(tenant.as_deref()) {
                    trace.reason = Some(AuthFailure::TenantRefused.to_string());
                    return Answer::Refused(Refusal::Unauthorized(AuthFailure::TenantRefused));
                }
                Answer::Reply { status, body }
            }
            Ok(Inspection::Events { events, ack }) => {
                // With a tenant map, the credential must belong to the tenant each event names.
                if let Some(e) = events
                    .iter()
                    .find(|e| !verified.proof().permits(e.tenant.as_deref()))
                {
                    trace.tenant = e.tenant.clone();
                    trace.reason = Some(format!(
                        "{}: the credential does not belong to the tenant the body names",
                        AuthFailure::TenantRefused
                    ));
                    return Answer::Refused(Refusal::Unauthorized(AuthFailure::TenantRefused));
                }
                if events.len() > ready.settings.max_events {
                    let refusal = Refusal::TooManyEvents(ready.settings.max_events);
                    trace.reason = Some(refusal.to_string());
                    return Answer::Refused(refusal);
                }
                ready.deliver(&inbound, events, ack, trace).await
            }
            Err(refusal) => {
                trace.reason = Some(refusal.to_string());
                Answer::Refused(refusal)
            }
        }
    }
}

/// Where one event of a request stands, so that a request cut off by its deadline knows what
/// to give back.
mod progress {
    pub const WAITING: u8 = 0;
    /// The conditional write is out: it may have landed.
    pub const CLAIMING: u8 = 1;
    pub const OURS: u8 = 2;
    pub const NOT_OURS: u8 = 3;
    /// On the queue (sent now, or found to be already): not ours to give back.
    pub const SENT: u8 = 4;
    /// Finished or released: nothing left to do.
    pub const DONE: u8 = 5;
    /// Not ours: another delivery holds a live lease on it.
    pub const IN_FLIGHT: u8 = 6;
    /// Not ours: done before, with other content under the same key.
    pub const CONFLICTING: u8 = 7;
}

/// A request refused before any claim: its answer and the reason to log.
type Refused = Box<(Answer, String)>;

/// One event ready to go: its envelope, the message it becomes and the claim that guards it.
struct Prepared {
    envelope: Envelope,
    message: Message,
    /// For an envelope too large for the queue: the object to write before the message, which
    /// then carries only a reference to it.
    offload: Option<objects::PayloadObject>,
    claim: Claim,
    state: AtomicU8,
    /// How long its claim write took, once it answered (milliseconds).
    claim_ms: OnceLock<f64>,
}

impl Prepared {
    fn set(&self, state: u8) {
        self.state.store(state, Ordering::SeqCst);
    }
    fn is(&self, states: &[u8]) -> bool {
        states.contains(&self.state.load(Ordering::SeqCst))
    }
}

impl<P: Provider> Ready<P> {
    /// Claims every event, queues the new ones, finishes their claims, all within the request's
    /// deadline. 200 only when every event is on the queue, now or from an earlier delivery.
    async fn deliver(
        &self,
        inbound: &Inbound<'_>,
        events: Vec<InboundEvent>,
        ack: Option<Value>,
        trace: &mut Trace,
    ) -> Answer {
        // One log line per request: for a batch, its size, and type and tenant when all share them.
        if let Some(first) = events.first() {
            trace.event_id = Some(match events.len() {
                1 => first.event_id.clone(),
                n => format!("{n} events"),
            });
            trace.event_type = events
                .iter()
                .all(|e| e.event_type == first.event_type)
                .then(|| first.event_type.clone());
            trace.tenant = first
                .tenant
                .clone()
                .filter(|t| events.iter().all(|e| e.tenant.as_ref() == Some(t)));
        }
        if events.is_empty() {
            return Answer::Refused(Refusal::BadRequest("no events in the request".into()));
        }
        // Events of one request that share a dedup key (a notification naming an entity twice)
        // are one event: claimed and queued once, the others counted as duplicates. Claimed
        // together they would meet each other's lease and turn a fully queued request into 503.
        let before = events.len();
        let mut seen_keys = std::collections::HashSet::new();
        let events: Vec<InboundEvent> = events
            .into_iter()
            .filter(|e| seen_keys.insert((e.tenant.clone(), e.key.clone())))
            .collect();
        let repeated = before - events.len();
        let prepared = match self.prepare(inbound, events) {
            Ok(prepared) => prepared,
            Err(refused) => {
                let (answer, reason) = *refused;
                trace.reason = Some(reason);
                return answer;
            }
        };
        let started = tokio::time::Instant::now();
        let work_until = started
            + self
                .settings
                .deadline
                .saturating_sub(self.settings.cleanup_budget());
        // The archive (when on) is written beside the claims and the send, not after them.
        let attempt = tokio::time::timeout_at(
            work_until,
            join(
                self.claim_and_send(&prepared, ack),
                self.archive(inbound, &prepared),
            ),
        )
        .await
        .map(|(attempt, archived)| match (attempt, archived) {
            // Every accepted request is archived: without its archive object it is not
            // accepted. What it queued is marked so, and the retry finds it done.
            (
                Attempt {
                    answer: Answer::Accepted { .. },
                    queued,
                    send_ms,
                    settle,
                    ..
                },
                Err(_),
            ) => Attempt::unavailable(1, Cause::Archive, "archive write failed", queued, send_ms)
                .settling(settle),
            (attempt, _) => attempt,
        });
        // The claims that answered, whatever happened next.
        trace.metrics.claim_ms = prepared
            .iter()
            .filter_map(|p| p.claim_ms.get().copied())
            .collect();
        trace.metrics.conflicts = prepared
            .iter()
            .filter(|p| p.is(&[progress::IN_FLIGHT, progress::CONFLICTING]))
            .count();
        let Attempt {
            answer,
            reason,
            cause,
            queued,
            send_ms,
            settle,
        } = match attempt {
            Ok(done) => done,
            Err(_) => {
                // Out of time: give back every claim that may be ours and is not on the
                // queue, within what is left of the deadline. What is on the queue keeps its
                // RECEIVED claim: a retry reads the processor's record. (Marking it ENQUEUED
                // here, without the first delivery's horizon, let the claim outlive the
                // processor's record and answer "duplicate" for an event nothing would run:
                // found by the delivery simulation, seed 4263.)
                trace.metrics.queued = prepared.iter().filter(|p| p.is(&[progress::SENT])).count();
                trace.metrics.cause = Some(Cause::Deadline);
                let cleanup = self.release(maybe_ours(&prepared));
                if tokio::time::timeout(self.settings.cleanup_budget(), cleanup)
                    .await
                    .is_err()
                {
                    warn!(provider = self.provider.name(),
                            "deadline cleanup cut short; remaining claims free themselves when their lease ends");
                }
                error!(
                    provider = self.provider.name(),
                    deadline_ms = self.settings.deadline.as_millis() as u64,
                    "claim store or queue did not answer within the request deadline"
                );
                trace.reason = Some("request deadline passed".into());
                return Answer::Unavailable {
                    retry_after_secs: 1,
                };
            }
        };
        // The answer is decided. Claims stay RECEIVED, whatever the answer: the processor's
        // record is what says an event reached the queue, and a retry reads it. Only claims
        // taken over from a delivery the processor already has are marked ENQUEUED (off the ack
        // path, within what is left of the deadline), with the first delivery's horizon capped
        // at the processor record's. The events a 503 did queue are not marked: their
        // processor record may be an older one (the processor deduplicates against it), and an
        // ENQUEUED claim with this request's fresh horizon would then outlive it and answer
        // "duplicate" for an event nothing runs (found by the delivery simulation, seed 2007).
        let marks: Vec<(&Prepared, Finish)> = settle
            .into_iter()
            .map(|(p, first)| {
                (
                    p,
                    Finish::Enqueued {
                        message_id: None,
                        first: Some(first),
                    },
                )
            })
            .collect();
        let queued_count = queued.len();
        if !marks.is_empty() {
            let marking = self.mark(marks, inbound.now);
            if tokio::time::timeout_at(started + self.settings.deadline, marking)
                .await
                .is_err()
            {
                warn!(
                    provider = self.provider.name(),
                    "claims not marked ENQUEUED within the deadline; they free themselves when their lease ends"
                );
            }
        }
        trace.reason = reason;
        trace.metrics.cause = cause;
        trace.metrics.queued = queued_count;
        trace.metrics.send_ms = send_ms;
        match answer {
            Answer::Accepted {
                event_id,
                queued,
                duplicates,
                events,
                ack,
            } => Answer::Accepted {
                event_id,
                queued,
                duplicates: duplicates + repeated,
                events: events + repeated,
                ack,
            },
            other => other,
        }
    }

    /// Builds every message before claiming anything: an event too large for the queue is
    /// refused whole, without leaving claims behind.
    fn prepare(
        &self,
        inbound: &Inbound<'_>,
        events: Vec<InboundEvent>,
    ) -> Result<Vec<Prepared>, Refused> {
        let provider = self.provider.name();
        let body_sha256 = sha256_hex(inbound.body);
        let received_at = rfc3339(inbound.now);
        let content_type = inbound.header("content-type").map(str::to_owned);
        let mut prepared = Vec::with_capacity(events.len());
        for event in events {
            let dedup_key = dedup_key(provider, event.tenant.as_deref(), &event.key);
            let mut envelope = Envelope {
                provider: provider.to_owned(),
                event_id: event.event_id,
                event_type: event.event_type,
                dedup_key,
                received_at: received_at.clone(),
                occurred_at: event.occurred_at,
                tenant: event.tenant,
                content_type: content_type.clone(),
                body_sha256: body_sha256.clone(),
                payload: None,
                payload_raw: None,
                payload_base64: None,
                payload_ref: None,
                replay: None,
            };
            envelope.set_payload(event.payload);
            let (message, offload) = self.message(&envelope)?;
            let claim = Claim {
                pk: envelope.dedup_key.clone(),
                pending: Status::Received,
                event_type: envelope.event_type.clone(),
                fingerprint: event.fingerprint.unwrap_or_else(|| body_sha256.clone()),
                now: inbound.now,
                lease: self.settings.lease,
                ttl: self.settings.dedup_ttl,
                token: new_token(),
            };
            prepared.push(Prepared {
                envelope,
                message,
                offload,
                claim,
                state: AtomicU8::new(progress::WAITING),
                claim_ms: OnceLock::new(),
            });
        }
        Ok(prepared)
    }

    /// The message an envelope travels as ([`objects::message_for`]): a refusal when it cannot.
    fn message(
        &self,
        envelope: &Envelope,
    ) -> Result<(Message, Option<objects::PayloadObject>), Refused> {
        objects::message_for(
            envelope,
            self.settings.max_message_bytes,
            self.payloads.is_some(),
        )
        .map_err(|e| {
            let answer = match e {
                objects::Unsendable::TooLarge { .. } => Answer::PayloadTooLarge,
                objects::Unsendable::Json(_) => {
                    Answer::Refused(Refusal::BadRequest("payload cannot be forwarded".into()))
                }
            };
            Box::new((answer, e.to_string()))
        })
    }

    /// Writes the objects of the claim-checked events among `fresh`, a bounded number at a time.
    /// `false` when any write failed (nothing of theirs may then be sent).
    async fn check_in(&self, fresh: &[&Prepared]) -> bool {
        let Some(store) = &self.payloads else {
            return true;
        };
        let puts: Vec<_> = fresh
            .iter()
            .filter_map(|p| p.offload.as_ref().map(|o| (*p, o)))
            .map(|(p, object)| async move {
                // A `Bytes` clone: the object is not copied.
                let put = store
                    .put(&object.key, object.bytes.clone(), "application/json")
                    .await;
                if let Err(e) = &put {
                    error!(provider = self.provider.name(), event_id = %p.envelope.event_id, error = %e,
                        "payload object not written");
                }
                put.is_ok()
            })
            .collect();
        stream::iter(puts)
            .buffer_unordered(self.settings.max_concurrent_calls)
            .collect::<Vec<bool>>()
            .await
            .into_iter()
            .all(|ok| ok)
    }

    /// Writes the request to the archive when it is on: its body and the envelopes built from
    /// it, never its headers, path or query.
    async fn archive(
        &self,
        inbound: &Inbound<'_>,
        prepared: &[Prepared],
    ) -> Result<(), ObjectError> {
        let Some(store) = &self.archive else {
            return Ok(());
        };
        let envelopes = prepared.iter().map(|p| &p.envelope).collect();
        let Some(record) = objects::archive_record(
            inbound.method.as_str(),
            inbound.header("content-type"),
            inbound.body,
            envelopes,
        ) else {
            return Ok(());
        };
        let key = objects::archive_key(self.provider.name(), inbound.now, &record.body_sha256);
        let object = serde_json::to_vec(&record)
            .map_err(|e| ObjectError::Failed(describe_json_error(&e)))?;
        store
            .put(&key, object.into(), "application/json")
            .await
            .inspect_err(|e| {
                error!(provider = self.provider.name(), error = %e, "request not archived");
            })
    }

    /// Claim → send, a bounded number of calls at a time: one conditional write and one send
    /// per new event, nothing else before the answer.
    async fn claim_and_send<'p>(
        &self,
        prepared: &'p [Prepared],
        ack: Option<Value>,
    ) -> Attempt<'p> {
        let provider = self.provider.name();
        let claims: Vec<_> = prepared.iter().map(|p| self.take(p)).collect();
        let outcomes: Vec<Result<ClaimOutcome, StoreError>> = stream::iter(claims)
            .buffered(self.settings.max_concurrent_calls)
            .collect()
            .await;
        let mut fresh = Vec::new();
        // Claims held by an earlier delivery that may have queued the event already.
        let mut unsure = Vec::new();
        let (mut duplicates, mut failed) = (0usize, false);
        for (p, outcome) in prepared.iter().zip(outcomes) {
            match outcome {
                Ok(ClaimOutcome::New) => fresh.push(p),
                Ok(ClaimOutcome::Duplicate { status, conflict }) => {
                    duplicates += 1;
                    if conflict {
                        warn!(provider, event_id = %p.envelope.event_id, dedup_key = %p.envelope.dedup_key, status = status.as_str(),
                            conflict = 1, "same event key with different content: treated as a duplicate");
                    }
                }
                Ok(ClaimOutcome::InFlight {
                    retry_after,
                    conflict,
                }) => unsure.push((p, Unsure::InFlight(retry_after), conflict)),
                Ok(ClaimOutcome::TakenOver { previous }) => {
                    let conflict = previous.fingerprint != p.claim.fingerprint;
                    unsure.push((p, Unsure::TakenOver(previous), conflict))
                }
                Err(e) => {
                    error!(provider, event_id = %p.envelope.event_id, error = %e, "claim failed");
                    failed = true;
                }
            }
        }
        if failed {
            // Nothing is sent when the store is failing: give back what we took (and what a
            // failed write may have taken), let the provider retry.
            self.release(maybe_ours(prepared)).await;
            return Attempt::unavailable(1, Cause::Claim, "claim store failed", Vec::new(), None);
        }

        // A RECEIVED claim does not say whether its message was sent; the processor's record
        // does. Found: the event is on the queue (a duplicate). Not found: within the lease,
        // the first delivery may still be sending (503); past it, send again (the processor
        // absorbs a second copy).
        let (mut retry_after, mut settle) = (None::<Duration>, Vec::new());
        let lookups: Vec<_> = unsure
            .iter()
            .map(|(p, ..)| self.reached_processor(p))
            .collect();
        let found: Vec<Option<Record>> = stream::iter(lookups)
            .buffered(self.settings.max_concurrent_calls)
            .collect()
            .await;
        for ((p, unsure, conflict), processed) in unsure.into_iter().zip(found) {
            let reached = processed.is_some();
            if reached && conflict {
                p.set(progress::CONFLICTING);
                warn!(provider, event_id = %p.envelope.event_id, dedup_key = %p.envelope.dedup_key,
                    conflict = 1, "same event key with different content: treated as a duplicate");
            }
            match (unsure, reached) {
                (Unsure::InFlight(_), true) => {
                    if !conflict {
                        p.set(progress::NOT_OURS);
                    }
                    duplicates += 1;
                }
                (Unsure::InFlight(wait), false) => {
                    retry_after = Some(retry_after.map_or(wait, |w| w.max(wait)));
                }
                (Unsure::TakenOver(mut previous), true) => {
                    // Ours now, but its event is on the queue: not to be given back. Marked
                    // ENQUEUED with the first delivery's content and horizon, never past the
                    // processor's record: a claim that blocked duplicates longer than that
                    // record would answer "duplicate" for an event the processor would run
                    // again, and nothing would run it.
                    if !conflict {
                        p.set(progress::SENT);
                    }
                    duplicates += 1;
                    if let Some(processed) = processed {
                        previous.expires_at = previous.expires_at.min(processed.expires_at);
                    }
                    settle.push((p, previous));
                }
                (Unsure::TakenOver(_), false) => fresh.push(p),
            }
        }

        // Claim check: the objects of oversized events are written before their messages are
        // sent; if any fails, nothing is sent and every claim this request took is given back.
        if !self.check_in(&fresh).await {
            self.release(fresh).await;
            return Attempt::unavailable(
                1,
                Cause::Payload,
                "payload store failed",
                Vec::new(),
                None,
            )
            .settling(settle);
        }
        let messages: Vec<Message> = fresh.iter().map(|p| p.message.clone()).collect();
        let (sent, send_ms) = if messages.is_empty() {
            (Vec::new(), None)
        } else {
            let started = Instant::now();
            let sent = self.queue.send(&messages).await;
            (sent, Some(metrics::millis(started.elapsed())))
        };
        let mut unsent = Vec::new();
        let mut queued = Vec::new();
        for (p, result) in fresh.iter().zip(sent) {
            match result {
                Ok(message_id) => {
                    p.set(progress::SENT);
                    queued.push((*p, message_id));
                }
                Err(e) => {
                    error!(provider, event_id = %p.envelope.event_id, error = %e, "queue send failed; claim released");
                    unsent.push(*p);
                }
            }
        }
        if !unsent.is_empty() {
            self.release(unsent).await;
            return Attempt::unavailable(1, Cause::Send, "queue send failed", queued, send_ms)
                .settling(settle);
        }
        if let Some(wait) = retry_after {
            return Attempt::unavailable(
                wait.as_secs_f64().ceil() as u64,
                Cause::InFlight,
                "first delivery still in flight",
                queued,
                send_ms,
            )
            .settling(settle);
        }
        let event_id = (prepared.len() == 1).then(|| prepared[0].envelope.event_id.clone());
        Attempt {
            answer: Answer::Accepted {
                event_id,
                queued: queued.len(),
                duplicates,
                events: prepared.len(),
                ack,
            },
            reason: None,
            cause: None,
            queued,
            send_ms,
            settle,
        }
    }

    /// Whether the processor has a live record of the event (it reached the queue within the
    /// horizon). An expired record, which DynamoDB's TTL deletes late, says nothing about this
    /// delivery: it counts as absent. A failed read counts as not found: the caller then
    /// answers 503 or sends again, both safe.
    async fn reached_processor(&self, p: &Prepared) -> Option<Record> {
        match self
            .claims
            .record(&crate::store::processed_key(&p.claim.pk))
            .await
        {
            Ok(found) => found.filter(|r| r.expires_at >= p.claim.now.unix_timestamp()),
            Err(e) => {
                warn!(provider = self.provider.name(), dedup_key = %p.claim.pk, error = %e,
                    "processor's record not read; treated as absent");
                None
            }
        }
    }

    /// One claim attempt, recording how far it got and how long the write took.
    async fn take(&self, p: &Prepared) -> Result<ClaimOutcome, StoreError> {
        p.set(progress::CLAIMING);
        let started = Instant::now();
        let outcome = self.claims.claim(&p.claim).await;
        let _ = p.claim_ms.set(metrics::millis(started.elapsed()));
        match &outcome {
            Ok(ClaimOutcome::New | ClaimOutcome::TakenOver { .. }) => p.set(progress::OURS),
            // A failed write may have landed: CLAIMING keeps it among what to give back.
            Err(_) => {}
            Ok(ClaimOutcome::InFlight { .. }) => p.set(progress::IN_FLIGHT),
            Ok(ClaimOutcome::Duplicate { conflict: true, .. }) => p.set(progress::CONFLICTING),
            Ok(ClaimOutcome::Duplicate { .. }) => p.set(progress::NOT_OURS),
        }
        outcome
    }

    /// Marks claims ENQUEUED, a bounded number at a time (never on an accepted request's ack
    /// path). A failure is only logged: the claim stays RECEIVED, and a retry resolves it from
    /// the processor's record.
    async fn mark(&self, marks: Vec<(&Prepared, Finish)>, now: OffsetDateTime) {
        let finishes: Vec<_> = marks
            .into_iter()
            .map(|(p, finish)| async move {
                if let Err(e) = self
                    .claims
                    .finish(&p.claim.pk, &p.claim.token, &finish, now)
                    .await
                {
                    warn!(provider = self.provider.name(), dedup_key = %p.claim.pk, error = %e,
                        "claim not marked ENQUEUED");
                }
                p.set(progress::DONE);
            })
            .collect();
        stream::iter(finishes)
            .buffer_unordered(self.settings.max_concurrent_calls)
            .collect::<Vec<()>>()
            .await;
    }

    async fn release_one(&self, p: &Prepared) {
        match self.claims.release(&p.claim.pk, &p.claim.token).await {
            Ok(()) => p.set(progress::DONE),
            // The lease expires on its own; the provider's retry then takes the claim over.
            Err(e) => {
                warn!(dedup_key = %p.claim.pk, error = %e, "claim not released; it frees itself when its lease ends")
            }
        }
    }

    /// Deletes each claim if it is still ours, a bounded number at a time.
    async fn release(&self, claims: Vec<&Prepared>) {
        let releases: Vec<_> = claims.into_iter().map(|p| self.release_one(p)).collect();
        stream::iter(releases)
            .buffer_unordered(self.settings.max_concurrent_calls)
            .collect::<Vec<()>>()
            .await;
    }
}

/// What claiming and sending a request's events came to.
struct Attempt<'p> {
    answer: Answer,
    /// For a refusal, the reason to log.
    reason: Option<String>,
    /// For a 503, why (the metrics' `Reason`).
    cause: Option<Cause>,
    /// The events this request put on the queue, with their message ids.
    queued: Vec<(&'p Prepared, String)>,
    /// How long the send to the queue took, if there was one.
    send_ms: Option<f64>,
    /// Claims taken over from a delivery whose event the processor already has, with the
    /// record each replaced (to put its horizon back).
    settle: Vec<(&'p Prepared, Record)>,
}

/// A claim held by an earlier delivery that may have queued the event already.
enum Unsure {
    /// Its lease is live: the earlier delivery may still be sending.
    InFlight(Duration),
    /// Its lease lapsed and we took it over: the earlier delivery sent, or died before.
    TakenOver(Record),
}

impl<'p> Attempt<'p> {
    fn unavailable(
        retry_after_secs: u64,
        cause: Cause,
        reason: &str,
        queued: Vec<(&'p Prepared, String)>,
        send_ms: Option<f64>,
    ) -> Self {
        Attempt {
            answer: Answer::Unavailable { retry_after_secs },
            reason: Some(reason.to_owned()),
            cause: Some(cause),
            queued,
            send_ms,
            settle: Vec::new(),
        }
    }

    fn settling(mut self, settle: Vec<(&'p Prepared, Record)>) -> Self {
        self.settle = settle;
        self
    }
}

/// Claims that may be ours: taken, or written without an answer.
fn maybe_ours(prepared: &[Prepared]) -> Vec<&Prepared> {
    prepared
        .iter()
        .filter(|p| p.is(&[progress::CLAIMING, progress::OURS]))
        .collect()
}

/// A random claim token (release and finish only touch a claim that is still ours).
pub fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Longest dedup key kept readable; longer ones are hashed (DynamoDB allows 2048 bytes).
const MAX_KEY_BYTES: usize = 1024;

/// The claim's partition key: `<provider>#<tenant>#id#<part>[#<part>…]` for a provider's id,
/// `<provider>#<tenant>#sha256#<hex>` for a content hash; `<tenant>` is empty when the request
/// names none. `%` and `#` inside a tenant or an id part are percent-encoded, so the parts can be
/// read back unambiguously: two different (tenant, key) pairs never share a dedup key, and an id
/// never equals a hash key. A key over [`MAX_KEY_BYTES`] becomes `<provider>#sha256-of-key:<hex>`
/// (two segments: no readable key has fewer than four).
pub fn dedup_key(provider: &str, tenant: Option<&str>, key: &EventKey) -> String {
    fn push_escaped(out: &mut String, part: &str) {
        for c in part.chars() {
            match c {
                '%' => out.push_str("%25"),
                '#' => out.push_str("%23"),
                c => out.push(c),
            }
        }
    }
    let mut out = String::with_capacity(64);
    out.push_str(provider);
    out.push('#');
    match tenant {
        None => {}
        // A lone `%` never comes out of `push_escaped`: an empty tenant is not no tenant.
        Some("") => out.push('%'),
        Some(t) => push_escaped(&mut out, t),
    }
    match key {
        EventKey::Id(parts) => {
            out.push_str("#id");
            for part in parts {
                out.push('#');
                push_escaped(&mut out, part);
            }
        }
        EventKey::Hash(hex) => {
            out.push_str("#sha256#");
            push_escaped(&mut out, hex);
        }
    }
    if out.len() > MAX_KEY_BYTES {
        return format!("{provider}#sha256-of-key:{}", sha256_hex(out.as_bytes()));
    }
    out
}
#[cfg(test)]
mod tests {
    //! The pipeline's decisions with in-memory fakes: a test provider whose body is a JSON list of
    //! event keys (`"key"`, or `"tenant/key"` for an event naming a tenant) or `"handshake"`
    //! (`"handshake/tenant"`), authenticated by an `x-token` header.
    use super::*;
    use crate::clock::FixedClock;
    use crate::envelope::Payload;
    use crate::objects::MemoryObjects;
    use crate::queue::MemoryQueue;
    use crate::secret::SecretList;
    use crate::store::MemoryClaims;
    use crate::verify::{self, AuthFailure, Verified};
    use lambda_http::http::{HeaderValue, StatusCode};
    use std::sync::atomic::Ordering;

    struct Batchy(SecretList);

    impl Provider for Batchy {
        fn name(&self) -> &'static str {
            "batchy"
        }
        fn authenticate(&self, r: &Inbound<'_>) -> Result<Verified, AuthFailure> {
            verify::token(&self.0, r.header("x-token").unwrap_or("").as_bytes())
        }
        fn inspect(&self, r: &VerifiedRequest<'_, '_>) -> Result<Inspection, Refusal> {
            let split = |s: &str| match s.split_once('/') {
                Some((a, b)) => (Some(a.to_owned()), b.to_owned()),
                None => (None, s.to_owned()),
            };
            match serde_json::from_slice::<Value>(r.body) {
                Ok(Value::String(s)) if s.starts_with("handshake") => Ok(Inspection::Reply {
                    status: StatusCode::OK,
                    body: serde_json::json!({"hello": 1}),
                    tenant: s.split_once('/').map(|(_, t)| t.to_owned()),
                }),
                Ok(Value::Array(keys)) => Ok(Inspection::Events {
                    events: keys
                        .iter()
                        .map(|k| {
                            // `{"key": …, …}`: an event whose content is more than its key.
                            let name = k.get("key").unwrap_or(k).as_str();
                            let (tenant, key) = split(name.unwrap_or_default());
                            InboundEvent {
                                key: EventKey::id(key.clone()),
                                event_id: key,
                                event_type: "thing.happened".into(),
                                occurred_at: None,
                                tenant,
                                payload: Payload::Json(k.clone()),
                                fingerprint: Some(verify::sha256_hex(k.to_string().as_bytes())),
                            }
                        })
                        .collect(),
                    ack: None,
                }),
                _ => Err(Refusal::BadRequest("bad".into())),
            }
        }
    }

    struct Fixture {
        receiver: Receiver<Batchy>,
        claims: Arc<MemoryClaims>,
        queue: Arc<MemoryQueue>,
        clock: Arc<FixedClock>,
    }

    fn settings() -> Settings {
        Settings {
            table: "t".into(),
            queue_url: "q".into(),
            dedup_ttl: Duration::from_secs(3600),
            deadline: Duration::from_secs(5),
            lease: Duration::from_secs(30),
            processing_lease: Duration::from_secs(60),
            max_body_bytes: 4096,
            max_message_bytes: 1024,
            max_events: 20,
            max_concurrent_calls: 4,
            payload_bucket: None,
            archive_bucket: None,
        }
    }

    fn fixture() -> Fixture {
        fixture_with(SecretList::parse("tok").unwrap(), settings())
    }

    impl Fixture {
        /// A claim on `pk` taken now by another delivery (`token`), leased for 30 s.
        fn other_claim(&self, pk: &str, fingerprint: &str, token: &str) -> Claim {
            Claim {
                pk: pk.into(),
                pending: Status::Received,
                event_type: "t".into(),
                fingerprint: fingerprint.into(),
                now: self.clock.now(),
                lease: Duration::from_secs(30),
                ttl: Duration::from_secs(3600),
                token: token.into(),
            }
        }

        /// What the processor leaves when it claims `pk`'s event: its `processed#` record.
        async fn processed(&self, pk: &str) {
            let claim = Claim {
                pk: crate::store::processed_key(pk),
                pending: Status::Processing,
                ..self.other_claim(pk, "x", "processor")
            };
            assert_eq!(self.claims.claim(&claim).await.unwrap(), ClaimOutcome::New);
        }
    }

    fn fixture_with(tokens: SecretList, settings: Settings) -> Fixture {
        let claims = Arc::new(MemoryClaims::default());
        let queue = Arc::new(MemoryQueue::default());
        let clock = Arc::new(FixedClock::at_millis(1_700_000_000_000));
        let receiver = Receiver::new(
            Batchy(tokens),
            claims.clone(),
            queue.clone(),
            settings,
            clock.clone(),
        );
        Fixture {
            receiver,
            claims,
            queue,
            clock,
        }
    }

    async fn post(f: &Fixture, body: &str) -> Answer {
        post_as(f, "tok", body).await
    }

    async fn post_as(f: &Fixture, token: &str, body: &str) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert("x-token", HeaderValue::from_str(token).unwrap());
        f.receiver
            .answer_parts(&Method::POST, &headers, "/", None, body.as_bytes())
            .await
    }

    #[tokio::test]
    async fn a_partially_failed_batch_answers_503_and_the_retry_queues_only_the_rest() {
        let f = fixture();
        f.queue.fail_position.store(2, Ordering::SeqCst);
        let answer = post(&f, r#"["a","b","c"]"#).await;
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(f.queue.messages().len(), 2);
        assert!(
            f.claims.get("batchy##id#b").is_none(),
            "the failed entry's claim is released"
        );
        // What was queued keeps its RECEIVED claim: the retry asks the processor's record.
        assert_eq!(
            f.claims.get("batchy##id#a").unwrap().status,
            Status::Received
        );

        f.queue.fail_position.store(0, Ordering::SeqCst);
        f.processed("batchy##id#a").await;
        f.processed("batchy##id#c").await;
        let retry = post(&f, r#"["a","b","c"]"#).await;
        assert_eq!(
            retry,
            Answer::Accepted {
                event_id: None,
                queued: 1,
                duplicates: 2,
                events: 3,
                ack: None
            }
        );
        let keys: Vec<String> = f
            .queue
            .messages()
            .iter()
            .map(|m| serde_json::from_str::<Envelope>(&m.body).unwrap().dedup_key)
            .collect();
        assert_eq!(keys, vec!["batchy##id#a", "batchy##id#c", "batchy##id#b"]);
    }

    #[tokio::test]
    async fn a_live_lease_answers_503_with_the_time_left_and_a_lapsed_one_is_taken_over() {
        let f = fixture();
        f.claims
            .claim(&f.other_claim("batchy##id#a", "x", "crashed-lambda"))
            .await
            .unwrap();
        f.clock.advance_millis(12_500);
        assert_eq!(
            post(&f, r#"["a"]"#).await,
            Answer::Unavailable {
                retry_after_secs: 18
            }
        );
        assert!(f.queue.messages().is_empty());
        f.clock.advance_millis(18_000);
        assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "accepted");
        assert_eq!(f.queue.messages().len(), 1);
    }

    #[tokio::test]
    async fn an_accepted_event_costs_one_claim_and_one_send_and_no_mark() {
        let f = fixture();
        assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "accepted");
        assert_eq!(f.claims.calls(), vec!["claim"]);
        assert_eq!(f.queue.messages().len(), 1);
        let claim = f.claims.get("batchy##id#a").unwrap();
        assert_eq!(claim.status, Status::Received);
    }

    #[tokio::test]
    async fn a_retry_within_the_lease_is_a_duplicate_once_the_processor_has_the_event() {
        let f = fixture();
        assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "accepted");
        f.clock.advance_millis(1_000);
        // The first delivery may still be sending: 503 until the processor has a record.
        assert_eq!(
            post(&f, r#"["a"]"#).await,
            Answer::Unavailable {
                retry_after_secs: 29
            }
        );
        f.processed("batchy##id#a").await;
        assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "duplicate");
        assert_eq!(f.queue.messages().len(), 1, "sent once");
        let claim = f.claims.get("batchy##id#a").unwrap();
        assert_eq!(claim.status, Status::Received, "nothing written");
    }

    #[tokio::test]
    async fn past_the_lease_a_retry_sends_again_unless_the_processor_has_the_event() {
        let f = fixture();
        assert_eq!(post(&f, r#"["a", "b"]"#).await.outcome(), "accepted");
        let first = f.claims.get("batchy##id#a").unwrap();
        f.processed("batchy##id#a").await;
        f.clock.advance_millis(31_000);
        assert_eq!(
            post(&f, r#"["a", "b"]"#).await,
            Answer::Accepted {
                event_id: None,
                queued: 1,
                duplicates: 1,
                events: 2,
                ack: None
            }
        );
        // a: the processor has it; b: it may be on the queue or not, so it is sent again (the
        // processor's claim absorbs a second copy).
        let keys: Vec<String> = f
            .queue
            .messages()
            .iter()
            .map(|m| serde_json::from_str::<Envelope>(&m.body).unwrap().dedup_key)
            .collect();
        assert_eq!(keys, vec!["batchy##id#a", "batchy##id#b", "batchy##id#b"]);
        // a's claim, taken over, is marked ENQUEUED with its first horizon and content back.
        let a = f.claims.get("batchy##id#a").unwrap();
        assert_eq!(a.status, Status::Enqueued);
        assert_eq!(
            (a.expires_at, &a.fingerprint),
            (first.expires_at, &first.fingerprint)
        );
        assert_ne!(a.token, first.token);
        let b = f.claims.get("batchy##id#b").unwrap();
        assert_eq!(b.status, Status::Received);
        // ENQUEUED now: the next retry is a duplicate with one write and no read.
        let calls = f.claims.calls().len();
        f.clock.advance_millis(31_000);
        assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "duplicate");
        assert_eq!(f.claims.calls()[calls..], ["claim"]);
    }

    /// The horizon has passed for both records (DynamoDB's TTL deletes them late); a delivery
    /// took the claim again and crashed before its send. The retry after its lease must send:
    /// the processor's expired record is from the event's previous horizon (delivery
    /// simulation, seed 89).
    #[tokio::test]
    async fn an_expired_processor_record_is_not_taken_as_reached() {
        let f = fixture();
        f.processed("batchy##id#a").await;
        f.clock.advance_millis(3_601_000);
        // The crashed delivery's claim: fresh horizon, lease lapsing.
        f.claims
            .claim(&f.other_claim("batchy##id#a", "x", "crashed-lambda"))
            .await
            .unwrap();
        f.clock.advance_millis(31_000);
        assert!(
            f.claims.get("processed#batchy##id#a").is_some(),
            "still stored"
        );
        assert_eq!(
            post(&f, r#"["a"]"#).await,
            Answer::Accepted {
                event_id: Some("a".into()),
                queued: 1,
                duplicates: 0,
                events: 1,
                ack: None
            }
        );
        assert_eq!(f.queue.messages().len(), 1);
    }

    /// A takeover that finds the processor's record marks the claim ENQUEUED for no longer than
    /// that record lives: when the claim it replaced was younger than the processor's record
    /// (taken after an earlier claim was given back or expired), its horizon would outlive the
    /// record and answer "duplicate" for an event the processor would run again.
    #[tokio::test]
    async fn a_takeover_marks_the_claim_no_longer_than_the_processors_record() {
        let f = fixture();
        f.processed("batchy##id#a").await;
        let processed = f.claims.get("processed#batchy##id#a").unwrap();
        f.clock.advance_millis(3_000_000);
        f.claims
            .claim(&f.other_claim("batchy##id#a", "x", "younger-delivery"))
            .await
            .unwrap();
        let younger = f.claims.get("batchy##id#a").unwrap();
        assert!(younger.expires_at > processed.expires_at);
        f.clock.advance_millis(31_000);
        assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "duplicate");
        let marked = f.claims.get("batchy##id#a").unwrap();
        assert_eq!(marked.status, Status::Enqueued);
        assert_eq!(marked.expires_at, processed.expires_at);
        // Past the processor's record: a new event, sent.
        f.clock.advance_millis(600_000);
        assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "accepted");
        assert_eq!(f.queue.messages().len(), 1);
    }

    /// Out of time after a takeover found its event on the queue: the claim is not marked
    /// ENQUEUED with the takeover's fresh horizon (delivery simulation, seed 4263); it stays
    /// RECEIVED, and a retry asks the processor's record again.
    #[tokio::test(start_paused = true)]
    async fn the_deadline_path_marks_nothing_it_did_not_see_the_horizon_of() {
        let f = fixture();
        f.claims
            .claim(&f.other_claim("batchy##id#a", "x", "first-delivery"))
            .await
            .unwrap();
        f.processed("batchy##id#a").await;
        f.clock.advance_millis(31_000);
        f.queue.hang.store(true, Ordering::SeqCst);
        assert_eq!(
            post(&f, r#"["a", "b"]"#).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let a = f.claims.get("batchy##id#a").unwrap();
        assert_eq!(a.status, Status::Received);
        assert!(f.claims.get("batchy##id#b").is_none(), "b given back");
    }

    #[tokio::test]
    async fn a_failed_read_of_the_processors_record_never_answers_200_without_a_send() {
        let f = fixture();
        assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "accepted");
        f.processed("batchy##id#a").await;
        f.claims.fail_reads.store(true, Ordering::SeqCst);
        // Within the lease: the first delivery may still be sending; 503.
        assert_eq!(
            post(&f, r#"["a"]"#).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(f.queue.messages().len(), 1);
        // Past it: sent again (the processor absorbs the copy), never a 200 on a guess.
        f.clock.advance_millis(31_000);
        assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "accepted");
        assert_eq!(f.queue.messages().len(), 2);
    }

    #[tokio::test]
    async fn a_store_failure_sends_nothing() {
        let f = fixture();
        f.claims.fail.store(true, Ordering::SeqCst);
        assert_eq!(
            post(&f, r#"["a","b"]"#).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(f.queue.messages().is_empty());
    }

    #[tokio::test]
    async fn handshakes_store_nothing_and_auth_comes_first() {
        let f = fixture();
        assert_eq!(
            post(&f, r#""handshake""#).await,
            Answer::Reply {
                status: StatusCode::OK,
                body: serde_json::json!({"hello": 1})
            }
        );
        assert!(f.claims.is_empty() && f.queue.messages().is_empty());
        let unauthenticated = f
            .receiver
            .answer_parts(
                &Method::POST,
                &HeaderMap::new(),
                "/",
                None,
                b"not even json",
            )
            .await;
        assert_eq!(unauthenticated, Answer::Unauthorized);
    }

    #[tokio::test]
    async fn an_envelope_over_the_queue_limit_is_refused_before_any_claim() {
        let f = fixture();
        let big = format!(r#"["a","{}"]"#, "x".repeat(1500));
        assert_eq!(post(&f, &big).await, Answer::PayloadTooLarge);
        assert!(f.claims.is_empty() && f.queue.messages().is_empty());
    }

    /// A fixture whose receiver claim-checks through `payloads` and archives to `archive`.
    fn with_objects(
        payloads: &Arc<MemoryObjects>,
        archive: Option<&Arc<MemoryObjects>>,
    ) -> Fixture {
        let mut f = fixture();
        f.receiver = f.receiver.with_objects(
            Some(payloads.clone() as Arc<dyn ObjectStore>),
            archive.map(|a| a.clone() as Arc<dyn ObjectStore>),
        );
        f
    }

    #[tokio::test]
    async fn an_envelope_over_the_queue_limit_waits_in_the_payload_bucket_and_travels_as_a_reference(
    ) {
        let payloads = Arc::new(MemoryObjects::default());
        let f = with_objects(&payloads, None);
        let big = format!(r#"["a",{{"key":"b","data":"{}"}}]"#, "x".repeat(1500));
        assert!(matches!(
            post(&f, &big).await,
            Answer::Accepted { queued: 2, .. }
        ));
        let messages = f.queue.messages();
        assert_eq!(messages.len(), 2);
        assert!(messages.iter().all(|m| m.sqs_size() <= 1024));
        // The small event travels whole; the large one as a reference to its object.
        let sent: Vec<Envelope> = messages
            .iter()
            .map(|m| serde_json::from_str(&m.body).unwrap())
            .collect();
        assert!(sent[0].payload_ref.is_none() && sent[0].payload.is_some());
        let reference = sent[1].payload_ref.clone().expect("a reference");
        assert!(sent[1].payload.is_none());
        let stored = payloads.objects();
        assert_eq!(stored.keys().collect::<Vec<_>>(), vec![&reference.key]);
        assert!(reference.key.starts_with("batchy/"));
        let whole = objects::resolve(Some(payloads.as_ref()), sent[1].clone())
            .await
            .unwrap();
        assert_eq!(
            whole.payload,
            Some(serde_json::json!({"key": "b", "data": "x".repeat(1500)}))
        );
        assert_eq!(whole.dedup_key, sent[1].dedup_key);

        // A retry is a duplicate: no second object, no second message.
        f.processed("batchy##id#a").await;
        f.processed(&sent[1].dedup_key).await;
        assert!(matches!(
            post(&f, &big).await,
            Answer::Accepted {
                queued: 0,
                duplicates: 2,
                ..
            }
        ));
        assert_eq!(payloads.puts(), 1);
        assert_eq!(f.queue.messages().len(), 2);
    }

    #[tokio::test]
    async fn a_failed_payload_write_answers_503_sends_nothing_and_gives_the_claims_back() {
        let payloads = Arc::new(MemoryObjects::default());
        let f = with_objects(&payloads, None);
        let big = format!(r#"["a",{{"key":"b","data":"{}"}}]"#, "x".repeat(1500));
        payloads.fail(true);
        assert_eq!(
            post(&f, &big).await,
            Answer::Unavailable {
                retry_after_secs: 1
            }
        );
        assert!(
            f.queue.messages().is_empty(),
            "nothing sent, not even the small event"
        );
        assert!(f.claims.is_empty(), "both claims given back");
        payloads.fail(false);
        assert!(matches!(
            post(&f, &big).await,
            Answer::Accepted { queued: 2, .. }
        ));
        assert_eq!(payloads.objects().len(), 1);
    }

    #[tokio::test]
    async fn a_reference_too_large_for_the_queue_is_still_refused() {
        let payloads = Arc::new(MemoryObjects::default());
        let f = with_objects(&payloads, None);
        // The event id itself (which the reference carries) is over the limit.
        let huge_id = format!(r#"["{}"]"#, "k".repeat(1100));
        assert_eq!(post(&f, &huge_id).await, Answer::PayloadTooLarge);
        assert!(f.claims.is_empty() && payloads.puts() == 0);
    }

    #[tokio::test]
    async fn every_accepted_request_is_archived_with_its_body_and_never_its_credentials() {
        let payloads = Arc::new(MemoryObjects::default());
        let archive = Arc::new(MemoryObjects::default());
        let f = with_objects(&payloads, Some(&archive));
        assert!(matches!(
            post(&f, r#"["a","t1/b"]"#).await,
            Answer::Accepted { queued: 2, .. }
        ));
        // Refused requests and handshakes are not archived.
        assert_eq!(post_as(&f, "wrong", r#"["c"]"#).await, Answer::Unauthorized);
        assert!(matches!(
            post(&f, r#""handshake""#).await,
            Answer::Reply { .. }
        ));
        let stored = archive.objects();
        assert_eq!(stored.len(), 1, "{:?}", stored.keys());
        let (key, object) = stored.into_iter().next().unwrap();
        assert!(key.starts_with("batchy/2023-11-14/"), "{key}");
        assert_eq!(
            objects::archive_key_time(&key),
            Some(f.clock.now()),
            "the key says when"
        );
        let text = String::from_utf8(object.clone()).unwrap();
        assert!(
            !text.contains("tok"),
            "no credential in the archive: {text}"
        );
        let record: objects::ArchiveRecord = serde_json::from_slice(&object).unwrap();
        assert_eq!(record.body().unwrap(), br#"["a","t1/b"]"#);
        assert_eq!(record.events.len(), 2);
        assert_eq!(record.events[1].tenant.as_deref(), Some("t1"));
        assert_eq!(record.events[1].payload, Some(Value::String("t1/b".into())));
    }

    #[tokio::test]
    async fn a_request_the_archive_did_not_take_is_answered_503_and_its_retry_archives_it() {
        let payloads = Arc::new(MemoryObjects::default());
        let archive = Arc::new(MemoryObjects::default());
        let f = with_objects(&payloads, Some(&archive));
        archive.fail(true);
        assert_eq!(
            post(&f, r#"["a"]"#).await,
            Answer::Unavailable {
                retry_after_secs: 1
            }
        );
        // The event did reach the queue. Its claim stays RECEIVED: a retry asks the processor's
        // record, in flight (503) until the processor has the event, a duplicate after.
        assert_eq!(f.queue.messages().len(), 1);
        assert_eq!(
            f.claims.get("batchy##id#a").map(|r| r.status),
            Some(Status::Received)
        );
        archive.fail(false);
        assert_eq!(
            post(&f, r#"["a"]"#).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        f.processed("batchy##id#a").await;
        assert!(matches!(
            post(&f, r#"["a"]"#).await,
            Answer::Accepted {
                queued: 0,
                duplicates: 1,
                ..
            }
        ));
        assert_eq!(f.queue.messages().len(), 1);
        assert_eq!(archive.objects().len(), 1, "archived by the retry");
    }

    #[tokio::test]
    async fn misconfigured_receivers_refuse_everything() {
        let r: Receiver<Batchy> = Receiver::misconfigured("TOKEN is not set");
        assert_eq!(
            r.answer_parts(&Method::POST, &HeaderMap::new(), "/", None, b"[]")
                .await,
            Answer::Misconfigured
        );
    }

    #[test]
    fn dedup_keys_separate_tenants_ids_hashes_and_composite_parts() {
        let id = |s: &str| EventKey::id(s);
        assert_eq!(dedup_key("p", None, &id("abc")), "p##id#abc");
        assert_eq!(
            dedup_key("p", Some("site-1"), &id("abc")),
            "p#site-1#id#abc"
        );
        let hash = EventKey::hash_of(b"x");
        assert_eq!(
            dedup_key("p", None, &hash),
            format!("p##sha256#{}", verify::sha256_hex(b"x"))
        );
        // An id that spells a hash key is still an id.
        let spelled = id(&format!("sha256#{}", verify::sha256_hex(b"x")));
        assert_ne!(dedup_key("p", None, &spelled), dedup_key("p", None, &hash));
        // A tenant or id holding the separator cannot impersonate another split.
        assert_ne!(
            dedup_key("p", Some("a#id#b"), &id("c")),
            dedup_key("p", Some("a"), &EventKey::parts(["b#id", "c"]))
        );
        assert_ne!(
            dedup_key("p", None, &EventKey::parts(["n", "e:1"])),
            dedup_key("p", None, &EventKey::parts(["n:e", "1"]))
        );
        assert_ne!(
            dedup_key("p", None, &EventKey::parts(["a", "b"])),
            dedup_key("p", None, &id("a#b"))
        );
        assert_eq!(dedup_key("p", Some("%#"), &id("x")), "p#%25%23#id#x");
    }

    #[test]
    fn long_keys_are_hashed_into_the_dedup_key() {
        let long = dedup_key("p", None, &EventKey::id("k".repeat(1100)));
        assert!(
            long.starts_with("p#sha256-of-key:") && long.len() == "p#sha256-of-key:".len() + 64
        );
        let other = dedup_key("p", Some("t"), &EventKey::id("k".repeat(1100)));
        assert_ne!(long, other, "the tenant is inside the hash");
    }

    #[tokio::test]
    async fn with_a_tenant_map_a_credential_only_opens_its_own_tenant() {
        let map = SecretList::from_config(r#"{"site-a":"tok-a","site-b":["tok-b-old","tok-b"]}"#)
            .unwrap()
            .unwrap();
        let f = fixture_with(map, settings());
        // Another tenant's event, an event naming none, a batch with one foreign event: 401,
        // nothing claimed or queued.
        for body in [
            r#"["site-b/e1"]"#,
            r#"["e1"]"#,
            r#"["site-a/e1","site-b/e2"]"#,
        ] {
            assert_eq!(
                post_as(&f, "tok-a", body).await,
                Answer::Refused(Refusal::Unauthorized(AuthFailure::TenantRefused)),
                "{body}"
            );
        }
        assert_eq!(
            post_as(&f, "tok-a", r#""handshake/site-b""#).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            post_as(&f, "tok-a", r#""handshake""#).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert!(f.claims.is_empty() && f.queue.messages().is_empty());
        assert_eq!(
            post_as(&f, "tok-a", r#""handshake/site-a""#).await.status(),
            StatusCode::OK
        );
        // Each tenant's own event, with the same id, is two events, each queued once.
        assert_eq!(
            post_as(&f, "tok-a", r#"["site-a/e1"]"#).await.outcome(),
            "accepted"
        );
        assert_eq!(
            post_as(&f, "tok-b", r#"["site-b/e1"]"#).await.outcome(),
            "accepted"
        );
        f.processed("batchy#site-b#id#e1").await;
        assert_eq!(
            post_as(&f, "tok-b-old", r#"["site-b/e1"]"#).await.outcome(),
            "duplicate"
        );
        assert_eq!(f.queue.messages().len(), 2);
        assert!(f.claims.get("batchy#site-a#id#e1").is_some());
        assert!(f.claims.get("batchy#site-b#id#e1").is_some());
    }

    #[tokio::test]
    async fn a_plain_list_is_one_trust_domain_but_keys_are_still_scoped_by_tenant() {
        let f = fixture();
        assert_eq!(post(&f, r#"["site-a/e1"]"#).await.outcome(), "accepted");
        // Site B's event with the same id is not answered "duplicate".
        assert_eq!(post(&f, r#"["site-b/e1"]"#).await.outcome(), "accepted");
        assert_eq!(f.queue.messages().len(), 2);
    }

    #[tokio::test]
    async fn more_events_than_the_cap_are_refused_with_413_before_any_claim() {
        let f = fixture();
        let keys: Vec<String> = (0..21).map(|i| format!("k{i}")).collect();
        let body = serde_json::to_string(&keys).unwrap();
        assert_eq!(
            post(&f, &body).await,
            Answer::Refused(Refusal::TooManyEvents(20))
        );
        assert_eq!(
            post(&f, &body).await.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert!(f.claims.is_empty() && f.queue.messages().is_empty());
        let twenty = serde_json::to_string(&keys[..20]).unwrap();
        assert_eq!(post(&f, &twenty).await.outcome(), "accepted");
    }

    #[tokio::test(start_paused = true)]
    async fn claims_run_a_bounded_number_at_a_time() {
        let f = fixture();
        f.claims.claim_delay_ms.store(10, Ordering::SeqCst);
        let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
        let answer = post(&f, &serde_json::to_string(&keys).unwrap()).await;
        assert_eq!(answer.outcome(), "accepted");
        assert_eq!(f.claims.max_in_flight.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_queue_gets_503_within_the_deadline_and_the_claims_are_given_back() {
        let f = fixture();
        f.queue.hang.store(true, Ordering::SeqCst);
        let started = tokio::time::Instant::now();
        let answer = post(&f, r#"["a","b"]"#).await;
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            started.elapsed() <= settings().deadline,
            "{:?}",
            started.elapsed()
        );
        assert!(f.claims.is_empty(), "claims released for the retry");
        f.queue.hang.store(false, Ordering::SeqCst);
        assert_eq!(post(&f, r#"["a","b"]"#).await.outcome(), "accepted");
        assert_eq!(f.queue.messages().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_store_gets_503_within_the_deadline() {
        let f = fixture();
        f.claims.claim_delay_ms.store(60_000, Ordering::SeqCst);
        let started = tokio::time::Instant::now();
        let answer = post(&f, r#"["a"]"#).await;
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(started.elapsed() <= settings().deadline);
        assert!(f.queue.messages().is_empty());
    }

    mod metrics {
        //! What each request leaves in the metrics: counted per event or per request, under the
        //! provider's name, each 503 with its reason.
        use super::*;
        use crate::metrics::testing::Seen;
        use crate::metrics::*;

        const P: [(&str, &str); 1] = [(PROVIDER, "batchy")];

        fn count_unavailable(seen: &Seen, reason: &str) -> f64 {
            seen.count(UNAVAILABLE, &[(PROVIDER, "batchy"), (REASON, reason)])
        }

        #[test]
        fn accepted_and_duplicates_are_counted_per_event_with_each_claims_latency() {
            let f = fixture();
            let seen = Seen::default();
            seen.during_async(async {
                assert_eq!(post(&f, r#"["a","b"]"#).await.outcome(), "accepted");
                f.processed("batchy##id#a").await;
                // One new, one queued before, one repeated within the request.
                assert_eq!(post(&f, r#"["a","c","c"]"#).await.outcome(), "accepted");
            });
            assert_eq!(seen.count(ACCEPTED, &P), 3.0);
            assert_eq!(seen.count(DUPLICATE, &P), 2.0);
            assert_eq!(
                seen.values(CLAIM_LATENCY, &P).len(),
                4,
                "one per claim write"
            );
            assert_eq!(seen.values(SEND_LATENCY, &P).len(), 2, "one per request");
            assert_eq!(
                seen.names(),
                vec![ACCEPTED, CLAIM_LATENCY, DUPLICATE, SEND_LATENCY]
            );
        }

        #[test]
        fn refusals_and_handshakes_are_counted_per_request() {
            let f = fixture();
            let seen = Seen::default();
            seen.during_async(async {
                post(&f, r#""handshake""#).await;
                post_as(&f, "wrong", r#"["a"]"#).await;
                post(&f, "not json").await;
                post(&f, &serde_json::to_string(&vec!["k"; 21]).unwrap()).await;
                f.receiver
                    .answer_parts(&Method::GET, &HeaderMap::new(), "/", None, b"")
                    .await;
            });
            assert_eq!(seen.count(HANDSHAKE, &P), 1.0);
            assert_eq!(seen.count(UNAUTHORIZED, &P), 1.0);
            assert_eq!(seen.count(BAD_REQUEST, &P), 3.0);
            assert_eq!(
                seen.names(),
                vec![BAD_REQUEST, HANDSHAKE, UNAUTHORIZED],
                "nothing claimed"
            );
        }

        #[test]
        fn a_failing_store_is_unavailable_for_claim() {
            let f = fixture();
            f.claims.fail.store(true, Ordering::SeqCst);
            let seen = Seen::default();
            seen.during_async(post(&f, r#"["a","b"]"#));
            assert_eq!(count_unavailable(&seen, "claim"), 1.0);
            assert_eq!(seen.count(ACCEPTED, &P), 0.0);
        }

        #[test]
        fn a_partly_failed_send_is_unavailable_for_send_and_counts_what_it_queued() {
            let f = fixture();
            f.queue.fail_position.store(2, Ordering::SeqCst);
            let seen = Seen::default();
            seen.during_async(post(&f, r#"["a","b","c"]"#));
            assert_eq!(count_unavailable(&seen, "send"), 1.0);
            assert_eq!(seen.count(ACCEPTED, &P), 2.0, "a and c are on the queue");
            assert_eq!(seen.count(DUPLICATE, &P), 0.0);
        }

        #[test]
        fn a_live_lease_is_a_conflict_and_unavailable_in_flight() {
            let f = fixture();
            f.claims.claim_delay_ms.store(0, Ordering::SeqCst);
            let seen = Seen::default();
            seen.during_async(async {
                f.claims
                    .claim(&f.other_claim("batchy##id#a", "x", "other-lambda"))
                    .await
                    .unwrap();
                post(&f, r#"["a","b"]"#).await
            });
            assert_eq!(count_unavailable(&seen, "in_flight"), 1.0);
            assert_eq!(seen.count(CONFLICT, &P), 1.0);
            assert_eq!(seen.count(ACCEPTED, &P), 1.0, "b is queued");
        }

        #[test]
        fn other_content_under_a_queued_key_is_a_duplicate_and_a_conflict() {
            let f = fixture();
            let seen = Seen::default();
            let answer = seen.during_async(async {
                let claim = f.other_claim("batchy##id#a", "other content", "earlier");
                f.claims.claim(&claim).await.unwrap();
                let queued = Finish::Enqueued {
                    message_id: Some("m".into()),
                    first: None,
                };
                f.claims
                    .finish(&claim.pk, "earlier", &queued, f.clock.now())
                    .await
                    .unwrap();
                post(&f, r#"["a"]"#).await
            });
            assert_eq!(answer.outcome(), "duplicate");
            assert_eq!(seen.count(DUPLICATE, &P), 1.0);
            assert_eq!(seen.count(CONFLICT, &P), 1.0);
        }

        #[test]
        fn a_hung_queue_is_unavailable_for_the_deadline() {
            let f = fixture();
            f.queue.hang.store(true, Ordering::SeqCst);
            let seen = Seen::default();
            let answer = seen.during_async(post(&f, r#"["a"]"#));
            assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(count_unavailable(&seen, "deadline"), 1.0);
            assert_eq!(seen.values(CLAIM_LATENCY, &P).len(), 1);
            assert!(
                seen.values(SEND_LATENCY, &P).is_empty(),
                "the send never answered"
            );
        }

        #[test]
        fn failed_payload_and_archive_writes_are_unavailable_for_their_own_reasons() {
            let (payloads, archive) = (
                Arc::new(MemoryObjects::default()),
                Arc::new(MemoryObjects::default()),
            );
            let f = with_objects(&payloads, Some(&archive));
            let big = format!(r#"[{{"key":"b","data":"{}"}}]"#, "x".repeat(1500));
            payloads.fail(true);
            let seen = Seen::default();
            seen.during_async(post(&f, &big));
            assert_eq!(count_unavailable(&seen, "payload"), 1.0);
            assert_eq!(seen.count(ACCEPTED, &P), 0.0, "nothing sent");
            payloads.fail(false);
            archive.fail(true);
            let seen = Seen::default();
            seen.during_async(post(&f, r#"["a"]"#));
            assert_eq!(count_unavailable(&seen, "archive"), 1.0);
            assert_eq!(seen.count(ACCEPTED, &P), 1.0, "a is on the queue");
        }

        #[test]
        fn a_misconfigured_receiver_is_unavailable_for_config_under_its_name() {
            let r: Receiver<Batchy> = Receiver::misconfigured("TOKEN is not set").named("batchy");
            let seen = Seen::default();
            seen.during_async(r.answer_parts(&Method::POST, &HeaderMap::new(), "/", None, b"[]"));
            assert_eq!(count_unavailable(&seen, "config"), 1.0);
        }
    }

    #[tokio::test]
    async fn the_size_check_counts_the_attributes_too() {
        // A message whose body alone fits but whose body and attributes do not: 413.
        let f = fixture();
        let probe = post(&f, r#"["x"]"#).await;
        assert_eq!(probe.outcome(), "accepted");
        let m = &f.queue.messages()[0];
        let overhead = m.sqs_size() - m.body.len();
        let body_len_for_key = |k: usize| m.body.len() + 2 * (k - 1); // the key appears twice
        let k = (1..600)
            .find(|&k| body_len_for_key(k) + overhead > 1024)
            .unwrap();
        assert!(body_len_for_key(k) <= 1024, "the body alone still fits");
        let key = "y".repeat(k);
        assert_eq!(
            post(&f, &format!(r#"["{key}"]"#)).await,
            Answer::PayloadTooLarge
        );
        assert_eq!(f.queue.messages().len(), 1);
    }
}

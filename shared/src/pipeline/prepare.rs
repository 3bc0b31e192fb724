//! Prepare: every event of a request becomes an envelope, the message it travels as and the
//! claim that guards it, before anything is claimed, so that an event that cannot travel
//! refuses the request whole, without leaving claims behind.

use std::collections::HashSet;
use std::sync::OnceLock;

use super::state::{ClaimCell, ClaimState};
use super::Ready;
use crate::answer::Answer;
use crate::clock::rfc3339;
use crate::envelope::Envelope;
use crate::keys::{dedup_key, new_token};
use crate::objects::{self, Outbound, Oversize, PayloadObject};
use crate::provider::{Inbound, InboundEvent, Provider, Refusal};
use crate::queue::Message;
use crate::store::{Claim, Status};
use crate::verify::sha256_hex;

/// One event ready to go: its envelope, the message it becomes and the claim that guards it.
/// The envelope keeps its content only while the archive, which records it, is on.
pub(super) struct Prepared {
    pub(super) envelope: Envelope,
    /// Taken by the send, which is its only reader: a large request's messages are not held
    /// twice (Mutex: the send sees `&Prepared`).
    pub(super) message: std::sync::Mutex<Option<Message>>,
    /// For an envelope too large for the queue: the object to write before the message, which
    /// then carries only a reference to it.
    pub(super) offload: Option<PayloadObject>,
    pub(super) claim: Claim,
    pub(super) state: ClaimCell,
    /// How long its claim write took, once it answered (milliseconds).
    pub(super) claim_ms: OnceLock<f64>,
}

impl Prepared {
    pub(super) fn is(&self, state: ClaimState) -> bool {
        self.state.get() == state
    }
}

/// A request refused before any claim: its answer and the reason to log.
pub(super) struct Refused {
    pub(super) answer: Answer,
    pub(super) reason: String,
}

/// Events of one request that share a dedup key (a notification naming an entity twice) are
/// one event: claimed and queued once, the others counted as duplicates. Claimed together they
/// would meet each other's lease and turn a fully queued request into 503. Returns the distinct
/// events and how many repeated one of them.
pub(super) fn distinct(events: Vec<InboundEvent>) -> (Vec<InboundEvent>, usize) {
    let before = events.len();
    let mut seen_keys = HashSet::new();
    let events: Vec<InboundEvent> = events
        .into_iter()
        .filter(|e| seen_keys.insert((e.tenant.clone(), e.key.clone())))
        .collect();
    let repeated = before - events.len();
    (events, repeated)
}

impl<P: Provider> Ready<P> {
    /// Builds every message before claiming anything: an event too large for the queue is
    /// refused whole, without leaving claims behind.
    pub(super) fn prepare(
        &self,
        inbound: &Inbound<'_>,
        events: Vec<InboundEvent>,
    ) -> Result<Vec<Prepared>, Box<Refused>> {
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
            let Outbound { message, object } = self.outbound(&envelope)?;
            if self.archive.is_none() {
                // The message (or its object) holds the content now; only the archive's record
                // needs it again. A 10 MiB body is held once less.
                (
                    envelope.payload,
                    envelope.payload_raw,
                    envelope.payload_base64,
                ) = (None, None, None);
            }
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
                message: std::sync::Mutex::new(Some(message)),
                offload: object,
                claim,
                state: ClaimCell::default(),
                claim_ms: OnceLock::new(),
            });
        }
        Ok(prepared)
    }

    /// How an envelope travels ([`objects::message_for`]): a refusal when it cannot.
    fn outbound(&self, envelope: &Envelope) -> Result<Outbound, Box<Refused>> {
        let oversize = match self.payloads {
            Some(_) => Oversize::ClaimCheck,
            None => Oversize::Refuse,
        };
        objects::message_for(envelope, self.settings.max_message_bytes, oversize).map_err(|e| {
            let answer = match e {
                objects::Unsendable::TooLarge { .. } => Answer::PayloadTooLarge,
                objects::Unsendable::Json(_) => {
                    Answer::Refused(Refusal::BadRequest("payload cannot be forwarded".into()))
                }
            };
            Box::new(Refused {
                answer,
                reason: e.to_string(),
            })
        })
    }
}

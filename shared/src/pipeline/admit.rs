//! Admit and inspect: everything a request must pass before any of its events is claimed
//! (method, size, authentication, media type, the provider's own rules, the tenant check, the
//! entity cap). Nothing here touches AWS.

use serde_json::Value;

use super::{Outcome, Ready, Trace};
use crate::answer::Answer;
use crate::provider::{Inbound, InboundEvent, Inspection, Provider, Refusal, VerifiedRequest};
use crate::verify::{AuthFailure, Verified};

/// What inspecting a request came to.
pub(super) enum Inspected {
    /// Answered without delivering anything: a handshake, or a refusal.
    Answered(Outcome),
    /// Events to deliver, and the provider's acknowledgement body if it expects one.
    Events {
        events: Vec<InboundEvent>,
        ack: Option<Value>,
    },
}

impl<P: Provider> Ready<P> {
    /// Method (405), size (413), authentication (401), media type (415): the proof of who sent
    /// the request.
    pub(super) fn admit(&self, inbound: &Inbound<'_>) -> Result<Verified, Box<Outcome>> {
        if !self.provider.methods().contains(inbound.method) {
            return Err(Box::new(Outcome::from(Answer::MethodNotAllowed {
                allow: self.allow.clone(),
            })));
        }
        if inbound.body.len() > self.settings.max_body_bytes {
            return Err(Box::new(Outcome::from(Answer::PayloadTooLarge)));
        }
        let proof = self
            .provider
            .authenticate(inbound)
            .map_err(|why| Box::new(Outcome::refused(Answer::Unauthorized, why.to_string())))?;
        if !self
            .provider
            .accepts_media_type(inbound.media_type().as_deref())
        {
            return Err(Box::new(Outcome::from(Answer::Refused(
                Refusal::UnsupportedMediaType,
            ))));
        }
        Ok(proof)
    }

    /// The provider's rules on the verified request: a handshake's reply, or its events, which
    /// must each name the credential's tenant (with a tenant map) and be no more than the cap.
    pub(super) fn inspect(&self, inbound: &Inbound<'_>, proof: Verified) -> Inspected {
        let verified = VerifiedRequest::new(inbound, proof)
            .with_max_events(self.settings.max_events)
            .with_max_payload_bytes(self.settings.max_request_payload_bytes);
        let tenant_refused = || Answer::Refused(Refusal::Unauthorized(AuthFailure::TenantRefused));
        match self.provider.inspect(&verified) {
            Ok(Inspection::Reply {
                status,
                body,
                tenant,
            }) => Inspected::Answered(if verified.proof().permits(tenant.as_deref()) {
                Outcome::from(Answer::Reply { status, body })
            } else {
                Outcome::refused(tenant_refused(), AuthFailure::TenantRefused.to_string())
            }),
            Ok(Inspection::Events { events, ack }) => {
                // With a tenant map, the credential must belong to the tenant each event names.
                if let Some(e) = events
                    .iter()
                    .find(|e| !verified.proof().permits(e.tenant.as_deref()))
                {
                    return Inspected::Answered(Outcome {
                        answer: tenant_refused(),
                        trace: Trace {
                            tenant: e.tenant.clone(),
                            reason: Some(format!(
                                "{}: the credential does not belong to the tenant the body names",
                                AuthFailure::TenantRefused
                            )),
                            ..Trace::default()
                        },
                    });
                }
                let refusal = if events.len() > self.settings.max_events {
                    Some(Refusal::TooManyEvents(self.settings.max_events))
                } else if payload_bytes(&events) > self.settings.max_request_payload_bytes {
                    Some(Refusal::TooLarge(self.settings.max_request_payload_bytes))
                } else {
                    None
                };
                if let Some(refusal) = refusal {
                    let reason = refusal.to_string();
                    return Inspected::Answered(Outcome::refused(Answer::Refused(refusal), reason));
                }
                Inspected::Events { events, ack }
            }
            Err(refusal) => {
                let reason = refusal.to_string();
                Inspected::Answered(Outcome::refused(Answer::Refused(refusal), reason))
            }
        }
    }
}

/// The bytes the events' payloads hold in all.
fn payload_bytes(events: &[crate::provider::InboundEvent]) -> usize {
    events.iter().map(|e| e.payload.len()).sum()
}

//! TRIFFT events: the business processing. The typed model of the payload (`Webhook`,
//! …) stays in `shared::providers::trifft`, beside the receiver's rules; this file is yours.

use async_trait::async_trait;
use shared::consumer::{EventHandler, HandlerError};
use shared::envelope::{Envelope, Payload};
use shared::providers::trifft::*;
use tracing::info;

/// Processor handler for TRIFFT events. Payloads are user-designed and carry personal data
/// (emails), so it logs the envelope's ids only, never a payload field. Replace the body of
/// `handle` with the business processing.
#[derive(Debug, Default)]
pub struct TrifftHandler;

#[async_trait]
impl EventHandler for TrifftHandler {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let (kind, bytes) = match event.content() {
            // The JSON as TRIFFT sent it, byte for byte; `parse` reads it into a model.
            Some(Payload::Json(json)) => ("json", json.len()),
            // Text: XML, plain text, or a form body (`form_urlencoded::parse` reads its fields).
            Some(Payload::Raw(raw)) => ("raw", raw.len()),
            // Not UTF-8 (XML in Latin-1), or text JSON would inflate (control characters): the
            // bytes as sent, to decode with their charset.
            Some(Payload::Bytes(bytes)) => ("bytes", bytes.len()),
            None => return Err(HandlerError::Reject("TRIFFT event without payload".into())),
        };
        // Whether it looks like TRIFFT's own member event (`MemberEvent`), read in place: memory
        // does not follow the payload's size.
        let member_event = event.payload.as_ref().is_some_and(|p| {
            shared::json::fields(p.get().as_bytes(), &["event_type", "customer_ids"])
                .is_ok_and(|f| f.kind("customer_ids") == Some(shared::json::Kind::Object))
        });
        info!(provider = NAME, event_id = %event.event_id, event_type = %event.event_type,
            payload = kind, bytes, member_event, "trifft event processed");
        Ok(())
    }
}

//! Standard Webhooks events: the business processing. The typed model of the payload (`Webhook`,
//! …) stays in `shared::providers::standard_webhook`, beside the receiver's rules; this file is yours.

use async_trait::async_trait;
use shared::consumer::{payload_fields, EventHandler, HandlerError};
use shared::envelope::Envelope;
use shared::providers::standard_webhook::*;
use tracing::info;

/// Processor handler: parses the typed payload and logs ids and type only (the data may be
/// personal). Replace the body of `handle` with the business processing.
#[derive(Debug, Default)]
pub struct StandardWebhookHandler;

#[async_trait]
impl EventHandler for StandardWebhookHandler {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        // The type, read in place (`payload_fields`): memory does not follow the event's size.
        // The typed model (`Webhook`) holds a tree of the payload.
        let what = "Standard Webhooks payload";
        let webhook = payload_fields(event, &["type"], what)?;
        let kind = webhook
            .str("type")
            .ok_or_else(|| HandlerError::Reject(format!("{what}: type missing")))?;
        info!(provider = NAME, event_id = %event.event_id, event_type = %kind,
            tenant = event.tenant.as_deref(), "standard webhook processed");
        Ok(())
    }
}

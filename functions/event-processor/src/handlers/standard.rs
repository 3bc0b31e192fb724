//! Standard Webhooks events: the business processing. The typed model of the payload (`Webhook`,
//! …) stays in `shared::providers::standard_webhook`, beside the receiver's rules; this file is yours.

use async_trait::async_trait;
use shared::consumer::{typed_payload, EventHandler, HandlerError};
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
        let webhook: Webhook = typed_payload(event, "Standard Webhooks payload")?;
        info!(provider = NAME, event_id = %event.event_id, event_type = %webhook.kind,
            tenant = event.tenant.as_deref(), "standard webhook processed");
        Ok(())
    }
}

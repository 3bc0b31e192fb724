//! Tilby events: the business processing. The typed model of the payload (`Webhook`,
//! …) stays in `shared::providers::tilby`, beside the receiver's rules; this file is yours.

use async_trait::async_trait;
use shared::consumer::{typed_payload, EventHandler, HandlerError};
use shared::envelope::Envelope;
use shared::providers::tilby::*;
use tracing::info;

/// Processor handler for Tilby events: parses the typed model and logs ids only (`from_user`
/// and customer entities are personal data). Replace the body of `handle`
/// with the business processing.
#[derive(Debug, Default)]
pub struct TilbyHandler;

#[async_trait]
impl EventHandler for TilbyHandler {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let tilby: EntityEvent = typed_payload(event, "Tilby event")?;
        info!(provider = NAME, event_id = %event.event_id, event_type = %event.event_type,
            environment_id = tilby.environment_id.as_deref(),
            notification_uuid = tilby.notification_uuid.as_deref(),
            entity_id = tilby.entity_ref().as_deref(), "tilby event processed");
        Ok(())
    }
}

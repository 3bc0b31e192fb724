//! Tilby events: the business processing. The typed model of the payload (`Webhook`,
//! …) stays in `shared::providers::tilby`, beside the receiver's rules; this file is yours.

use async_trait::async_trait;
use shared::consumer::{payload_fields, EventHandler, HandlerError};
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
        // The fields it logs, read in place (`payload_fields`): memory does not follow the
        // entity's size. The typed model (`EntityEvent`) holds a tree of the payload.
        let what = "Tilby event";
        let tilby = payload_fields(
            event,
            &["environment_id", "notification_uuid", "entity"],
            what,
        )?;
        let entity = tilby
            .object("entity", &["uuid", "id"])
            .map_err(|_| HandlerError::Reject(format!("{what}: entity is not an object")))?;
        let entity_id = entity.and_then(|e| e.scalar("uuid").or_else(|| e.scalar("id")));
        info!(provider = NAME, event_id = %event.event_id, event_type = %event.event_type,
            environment_id = tilby.str("environment_id").as_deref(),
            notification_uuid = tilby.str("notification_uuid").as_deref(),
            entity_id = entity_id.as_deref(), "tilby event processed");
        Ok(())
    }
}

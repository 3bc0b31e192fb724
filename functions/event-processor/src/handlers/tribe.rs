//! Tribe (Bettermode) events: the business processing. The typed model of the payload (`Webhook`,
//! …) stays in `shared::providers::tribe`, beside the receiver's rules; this file is yours.

use async_trait::async_trait;
use shared::consumer::{payload_fields, EventHandler, HandlerError};
use shared::envelope::Envelope;
use shared::providers::tribe::*;
use tracing::info;

/// Processor handler for Tribe events: parses the typed model and logs what happened, ids only
/// (`entities` carries members' emails). Replace the body of `handle`
/// with the business processing.
#[derive(Debug, Default)]
pub struct TribeHandler;

#[async_trait]
impl EventHandler for TribeHandler {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        // The fields it logs, read in place (`payload_fields`): memory does not follow the
        // event's size. The typed model (`Webhook`, `Data`) holds a tree of the payload.
        let what = "Tribe webhook";
        let webhook = payload_fields(event, &["type", "networkId", "data"], what)?;
        let kind = webhook
            .str("type")
            .ok_or_else(|| HandlerError::Reject(format!("{what}: type missing")))?;
        let network_id = webhook.str("networkId");
        let network_id = network_id.as_deref();
        let data = webhook
            .object("data", &["id", "name", "actor", "object", "target"])
            .map_err(|_| HandlerError::Reject(format!("{what}: data is not an object")))?;
        match (kind.as_ref(), data) {
            ("SUBSCRIPTION", Some(e)) => {
                let id_of = |name: &str, field: &str| {
                    e.object(name, &[field])
                        .ok()
                        .flatten()
                        .and_then(|o| o.str(field))
                };
                info!(
                    provider = NAME,
                    event_id = e.str("id").as_deref(),
                    event_name = e.str("name").as_deref(),
                    network_id,
                    actor_id = id_of("actor", "id").as_deref(),
                    object_id = id_of("object", "id").as_deref(),
                    space_id = id_of("target", "spaceId").as_deref(),
                    "tribe event processed"
                );
            }
            ("SUBSCRIPTION", None) => {
                return Err(HandlerError::Reject(format!(
                    "{what}: SUBSCRIPTION without data"
                )))
            }
            // Handshakes are answered by the receiver and never queued; one here is harmless.
            ("TEST", _) => info!(provider = NAME, network_id, "tribe TEST request ignored"),
            (kind, _) => {
                info!(provider = NAME, webhook_type = %kind, network_id, event_id = %event.event_id,
                    "tribe webhook processed");
            }
        }
        Ok(())
    }
}

//! Tribe (Bettermode) events: the business processing. The typed model of the payload (`Webhook`,
//! …) stays in `shared::providers::tribe`, beside the receiver's rules; this file is yours.

use async_trait::async_trait;
use shared::consumer::{typed_payload, EventHandler, HandlerError};
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
        let webhook: Webhook = typed_payload(event, "Tribe webhook")?;
        let data = webhook
            .data()
            .map_err(|e| HandlerError::unreadable(&format!("{} data", webhook.kind), &e))?;
        let network_id = webhook.network_id.as_deref();
        match &data {
            Data::Subscription(e) => {
                info!(
                    provider = NAME,
                    event_id = e.id.as_deref(),
                    event_name = e.name.as_deref(),
                    network_id,
                    actor_id = e.actor.as_ref().and_then(|a| a.id.as_deref()),
                    object_id = e.object.as_ref().and_then(|o| o.id.as_deref()),
                    space_id = e.target.as_ref().and_then(|t| t.space_id.as_deref()),
                    "tribe event processed"
                );
            }
            // Handshakes are answered by the receiver and never queued; one here is harmless.
            Data::Test(_) => {
                info!(provider = NAME, network_id, "tribe TEST request ignored")
            }
            Data::Other(_) => {
                info!(provider = NAME, webhook_type = %webhook.kind, network_id, event_id = %event.event_id,
                    "tribe webhook processed");
            }
        }
        Ok(())
    }
}

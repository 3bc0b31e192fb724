//! TribeMade events: the business processing. The typed model of the payload (`Webhook`,
//! …) stays in `shared::providers::tribemade`, beside the receiver's rules; this file is yours.

use async_trait::async_trait;
use shared::consumer::{typed_payload, EventHandler, HandlerError};
use shared::envelope::Envelope;
use shared::providers::tribemade::*;
use tracing::info;

/// Processor handler for TribeMade orders: parses the typed model and logs ids and quantities
/// only, never the customer. Replace the body of `handle` with the business processing.
#[derive(Debug, Default)]
pub struct TribeMadeHandler;

#[async_trait]
impl EventHandler for TribeMadeHandler {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let order: Order = typed_payload(event, "TribeMade order")?;
        info!(provider = NAME, order_id = %order.order_id, store_id = %order.store_id,
            product_id = %order.product_id, status = %order.status,
            quantity = %order.order_details.quantity, "tribemade order processed");
        Ok(())
    }
}

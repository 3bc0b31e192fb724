//! TribeMade events: the business processing. The typed model of the payload (`Webhook`,
//! …) stays in `shared::providers::tribemade`, beside the receiver's rules; this file is yours.

use async_trait::async_trait;
use shared::consumer::{payload_fields, EventHandler, HandlerError};
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
        // The fields it logs, read in place (`payload_fields`): memory does not follow the
        // order's size. The typed model (`Order`) holds a tree of the payload.
        let what = "TribeMade order";
        let order = payload_fields(
            event,
            &[
                "order_id",
                "store_id",
                "product_id",
                "status",
                "order_details",
            ],
            what,
        )?;
        let text = |name: &str| {
            order
                .scalar(name)
                .ok_or_else(|| HandlerError::Reject(format!("{what}: {name} missing")))
        };
        let (order_id, store_id, product_id, status) = (
            text("order_id")?,
            text("store_id")?,
            text("product_id")?,
            text("status")?,
        );
        let quantity = order
            .object("order_details", &["quantity"])
            .ok()
            .flatten()
            .and_then(|d| d.scalar("quantity"))
            .ok_or_else(|| {
                HandlerError::Reject(format!("{what}: order_details.quantity missing"))
            })?;
        info!(provider = NAME, order_id = %order_id, store_id = %store_id,
            product_id = %product_id, status = %status,
            quantity = %quantity, "tribemade order processed");
        Ok(())
    }
}

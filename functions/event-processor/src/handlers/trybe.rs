//! Trybe events: the business processing. The typed model of the payload (`Webhook`,
//! …) stays in `shared::providers::trybe`, beside the receiver's rules; this file is yours.

use async_trait::async_trait;
use shared::consumer::{typed_payload, EventHandler, HandlerError};
use shared::envelope::Envelope;
use shared::providers::trybe::*;
use tracing::info;

/// Processor handler for Trybe events: parses the typed model and logs what happened (ids only;
/// customer data is personal). Replace the body of `handle` with the business processing.
#[derive(Debug, Default)]
pub struct TrybeHandler;

#[async_trait]
impl EventHandler for TrybeHandler {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let webhook: Webhook = typed_payload(event, "Trybe webhook")?;
        let data = webhook
            .data()
            .map_err(|e| HandlerError::unreadable(&format!("{} data", webhook.event), &e))?;
        let object_id = match &data {
            Data::CustomerLabels(l) => Some(l.customer_id.as_str()),
            Data::Other(_) => None,
            Data::Order(o)
            | Data::OrderItem(o)
            | Data::Customer(o)
            | Data::CustomerAddress(o)
            | Data::CustomerNote(o)
            | Data::MarketingPreferenceOptIn(o)
            | Data::Membership(o)
            | Data::Payment(o)
            | Data::Refund(o) => o.id.as_deref(),
        };
        info!(provider = NAME, event_id = %webhook.id, event_type = %webhook.event, site_id = webhook.site_id.as_deref(),
            object_id, "trybe event processed");
        Ok(())
    }
}

/// `customer.created` only: the example of a handler for one event type (README "Writing a
/// handler"), routed in [`crate::router`] with `.event(trybe::NAME, "customer.created", …)`.
/// It needs the customer's id and rejects an event without one (after `maxReceiveCount`
/// deliveries it ends in the dead-letter queue).
#[derive(Debug, Default)]
pub struct CustomerCreated;

#[async_trait]
impl EventHandler for CustomerCreated {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let webhook: Webhook = typed_payload(event, "Trybe webhook")?;
        let customer_id = match webhook.data() {
            Ok(Data::Customer(customer)) => customer.id,
            _ => None,
        }
        .ok_or_else(|| HandlerError::Reject("customer.created without a customer id".into()))?;
        // The business processing goes here, idempotent by `event.dedup_key` (README "Writing a
        // handler"): e.g. an upsert of the customer keyed by `customer_id`.
        info!(provider = NAME, event_id = %event.event_id, customer_id = %customer_id,
            "trybe customer created");
        Ok(())
    }
}

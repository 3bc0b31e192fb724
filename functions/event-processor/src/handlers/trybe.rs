//! Trybe events: the business processing. The typed model of the payload (`Webhook`,
//! …) stays in `shared::providers::trybe`, beside the receiver's rules; this file is yours.

use async_trait::async_trait;
use shared::consumer::{payload_fields, typed_payload, EventHandler, HandlerError};
use shared::envelope::Envelope;
use shared::providers::trybe::*;
use tracing::info;

/// Processor handler for Trybe events: logs what happened (ids only; customer data is personal).
/// It reads the few fields it logs in place (`payload_fields`), so its memory does not follow the
/// event's size; [`CustomerCreated`] shows the typed model, for handlers that need the data.
/// Replace the body of `handle` with the business processing.
#[derive(Debug, Default)]
pub struct TrybeHandler;

#[async_trait]
impl EventHandler for TrybeHandler {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let what = "Trybe webhook";
        let webhook = payload_fields(event, &["id", "event", "site_id", "data"], what)?;
        let (Some(id), Some(kind)) = (webhook.str("id"), webhook.str("event")) else {
            return Err(HandlerError::Reject(format!("{what}: id or event missing")));
        };
        // The object's id: `customer_id` for label events, else its own `id`.
        let data = webhook
            .object("data", &["id", "customer_id"])
            .map_err(|_| HandlerError::Reject(format!("{what}: data is not an object")))?;
        let object_id = data.as_ref().and_then(|d| {
            if kind.starts_with("customer_labels.") {
                d.str("customer_id")
            } else {
                d.str("id")
            }
        });
        info!(provider = NAME, event_id = %id, event_type = %kind, site_id = webhook.str("site_id").as_deref(),
            object_id = object_id.as_deref(), "trybe event processed");
        Ok(())
    }
}

/// `customer.created` only: the example of a handler for one event type (README "Writing a
/// handler"), routed in [`crate::router`] with `.event(trybe::NAME, "customer.created", …)`.
/// It needs the customer's id and rejects an event without one (the message goes to the
/// dead-letter queue at once, marked `rejected`).
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

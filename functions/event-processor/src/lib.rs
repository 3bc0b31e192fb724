//! The business processing of every event: **this crate is where you write it**.
//!
//! One module per provider under `handlers/`, each with its handler (`EventHandler`); they are
//! wired to the providers in [`router`], the one place that says which code runs for which
//! events. The typed payload models stay in `shared::providers::<provider>`, beside the
//! receivers' rules. The processor around the handlers (claims, retries, partial batch
//! failures, metrics) is `shared::consumer` and needs no change: the handler contract is in the
//! README ("Writing a handler").

pub mod handlers;

use std::sync::Arc;

use shared::consumer::Router;
use shared::providers::{standard_webhook, tilby, tribe, tribemade, trifft, trybe};

/// Each provider's events to its handler. Route one event type to its own handler with
/// `.event(provider, event_type, handler)` (README "Writing a handler").
pub fn router() -> Router {
    Router::default()
        .provider(trybe::NAME, Arc::new(handlers::trybe::TrybeHandler))
        // One event type with its own handler (the README's example).
        .event(
            trybe::NAME,
            "customer.created",
            Arc::new(handlers::trybe::CustomerCreated),
        )
        .provider(tribe::NAME, Arc::new(handlers::tribe::TribeHandler))
        .provider(
            tribemade::NAME,
            Arc::new(handlers::tribemade::TribeMadeHandler),
        )
        .provider(trifft::NAME, Arc::new(handlers::trifft::TrifftHandler))
        .provider(tilby::NAME, Arc::new(handlers::tilby::TilbyHandler))
        .provider(
            standard_webhook::NAME,
            Arc::new(handlers::standard::StandardWebhookHandler),
        )
}

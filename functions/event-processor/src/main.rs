//! Processor: SQS batches from every receiver, routed to each provider's handler.

use std::sync::Arc;

use shared::consumer::Router;
use shared::providers::{tribe, tribemade, trybe};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let router = Router::default()
        .provider(trybe::NAME, Arc::new(trybe::TrybeHandler))
        .provider(tribe::NAME, Arc::new(tribe::TribeHandler))
        .provider(tribemade::NAME, Arc::new(tribemade::TribeMadeHandler));
    shared::run_processor(router).await
}

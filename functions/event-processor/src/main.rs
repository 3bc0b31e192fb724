//! Processor: SQS batches from every receiver, routed to each provider's handler.

use std::sync::Arc;

use shared::consumer::Router;
use shared::providers::{tilby, tribe, tribemade, trifft, trybe};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let router = Router::default()
        .provider(trybe::NAME, Arc::new(trybe::TrybeHandler))
        .provider(tribe::NAME, Arc::new(tribe::TribeHandler))
        .provider(tribemade::NAME, Arc::new(tribemade::TribeMadeHandler))
        .provider(trifft::NAME, Arc::new(trifft::TrifftHandler))
        .provider(tilby::NAME, Arc::new(tilby::TilbyHandler));
    shared::run_processor(router).await
}

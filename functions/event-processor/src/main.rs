//! Processor: SQS batches from every receiver, routed to each provider's handler.

use std::sync::Arc;

use shared::consumer::Router;
use shared::providers::{trifft, trybe};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let router = Router::default()
        .provider(trybe::NAME, Arc::new(trybe::TrybeHandler))
        .provider(trifft::NAME, Arc::new(trifft::TrifftHandler));
    shared::run_processor(router).await
}

//! Processor: SQS batches from every receiver, routed to each provider's handler.

use std::sync::Arc;

use shared::consumer::Router;
use shared::providers::trybe;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let router = Router::default().provider(trybe::NAME, Arc::new(trybe::TrybeHandler));
    shared::run_processor(router).await
}

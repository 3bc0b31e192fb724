//! Processor: SQS batches from every receiver, routed to each provider's handler.

use std::sync::Arc;

use shared::consumer::Router;
use shared::providers::{tilby, trifft, trybe};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let router = Router::default()
        .provider(trybe::NAME, Arc::new(trybe::TrybeHandler))
        .provider(trifft::NAME, Arc::new(trifft::TrifftHandler))
        .provider(tilby::NAME, Arc::new(tilby::TilbyHandler));
    shared::run_processor(router).await
}

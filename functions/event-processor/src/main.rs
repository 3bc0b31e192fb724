//! Processor: SQS batches from every receiver, routed to each provider's handler.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::run_processor(shared::providers::router()).await
}

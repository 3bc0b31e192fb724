//! Processor: SQS batches from every receiver, routed to each provider's handler
//! (`event_processor::router`).

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::run_processor(event_processor::router()).await
}

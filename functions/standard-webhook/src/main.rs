//! Standard Webhooks receiver (and Svix-built senders): the shared pipeline with the
//! specification's rules.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    use shared::providers::standard_webhook;
    shared::run_receiver(
        standard_webhook::NAME,
        standard_webhook::StandardWebhook::from_env,
    )
    .await
}

//! Tilby webhook receiver: the shared pipeline with Tilby's rules.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    shared::run_receiver(shared::providers::tilby::Tilby::from_env).await
}

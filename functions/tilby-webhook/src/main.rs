//! Tilby webhook receiver: the shared pipeline with Tilby's rules.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    use shared::providers::tilby;
    shared::run_receiver(tilby::NAME, tilby::Tilby::from_env).await
}

//! TribeMade webhook receiver: the shared pipeline with TribeMade's rules.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    shared::run_receiver(shared::providers::tribemade::TribeMade::from_env).await
}

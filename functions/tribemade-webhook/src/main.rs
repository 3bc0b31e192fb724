//! TribeMade webhook receiver: the shared pipeline with TribeMade's rules.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    use shared::providers::tribemade;
    shared::run_receiver(tribemade::NAME, tribemade::TribeMade::from_env).await
}

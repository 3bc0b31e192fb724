//! TRIFFT webhook receiver: the shared pipeline with TRIFFT's rules.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    shared::run_receiver(shared::providers::trifft::Trifft::from_env).await
}

//! TRIFFT webhook receiver: the shared pipeline with TRIFFT's rules.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    use shared::providers::trifft;
    shared::run_receiver(trifft::NAME, trifft::Trifft::from_env).await
}

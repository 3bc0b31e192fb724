//! Tribe (Bettermode) webhook receiver: the shared pipeline with Tribe's rules.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    shared::run_receiver(shared::providers::tribe::Tribe::from_env).await
}

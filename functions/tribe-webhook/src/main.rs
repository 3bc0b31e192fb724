//! Tribe (Bettermode) webhook receiver: the shared pipeline with Tribe's rules.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    use shared::providers::tribe;
    shared::run_receiver(tribe::NAME, tribe::Tribe::from_env).await
}

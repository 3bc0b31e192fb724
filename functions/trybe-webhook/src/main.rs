//! Trybe webhook receiver: the shared pipeline with Trybe's rules.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    use shared::providers::trybe;
    shared::run_receiver(trybe::NAME, trybe::Trybe::from_env).await
}

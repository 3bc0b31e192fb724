//! Trybe webhook receiver: the shared pipeline with Trybe's rules.

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    shared::run_receiver(shared::providers::trybe::Trybe::from_env).await
}

//! Cold-start wiring: configuration, secrets and AWS clients are built once here, never per
//! request. Function binaries call [`run_receiver`] or [`run_processor`] and nothing else.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_http::RequestExt;
use lambda_runtime::LambdaEvent;

use crate::clock::SystemClock;
use crate::config::{ConfigError, Env, Settings};
use crate::consumer::{Processor, Router};
use crate::pipeline::Receiver;
use crate::provider::Provider;
use crate::queue::SqsQueue;
use crate::store::DynamoClaims;

/// The SDK configuration: region, credentials and `AWS_ENDPOINT_URL` from the environment,
/// with timeouts short enough that an outage becomes a prompt 503 (providers count slow answers
/// as failures) rather than a hung request.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts())
        .load()
        .await
}

/// Connect 1 s, attempt 2 s, whole operation (retries included) 5 s.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(2))
        .operation_timeout(Duration::from_secs(5))
        .build()
}

/// Builds a receiver from the environment. An incomplete or weakening configuration gives a
/// receiver that answers 500 to everything (fail closed) and says why once, in the log. A secret
/// that could not be read from Secrets Manager (an outage, a throttle, a wrong ARN) is an error:
/// the function's init then fails and Lambda runs it again at the next invocation, instead of
/// keeping an instance that refuses everything for hours.
pub async fn try_receiver_from_env<P: Provider>(
    mut env: Env,
    sdk: &SdkConfig,
    build: impl FnOnce(&Env) -> Result<P, ConfigError>,
) -> Result<Receiver<P>, ConfigError> {
    if !env.secret_arns().is_empty() {
        env.resolve_secrets(&aws_sdk_secretsmanager::Client::new(sdk))
            .await?;
    }
    let ready = Settings::from_env(&env).and_then(|settings| Ok((settings, build(&env)?)));
    Ok(match ready {
        Ok((settings, provider)) => {
            let claims = Arc::new(DynamoClaims::new(
                aws_sdk_dynamodb::Client::new(sdk),
                &settings.table,
            ));
            let queue = Arc::new(
                SqsQueue::new(aws_sdk_sqs::Client::new(sdk), &settings.queue_url)
                    .with_limits(settings.max_message_bytes, settings.max_concurrent_calls),
            );
            Receiver::new(provider, claims, queue, settings, Arc::new(SystemClock))
        }
        Err(e) => Receiver::misconfigured(e),
    })
}

/// [`try_receiver_from_env`], with an unreadable secret also answered 500 (tests and tools that
/// want a receiver whatever happens).
pub async fn receiver_from_env<P: Provider>(
    env: Env,
    sdk: &SdkConfig,
    build: impl FnOnce(&Env) -> Result<P, ConfigError>,
) -> Receiver<P> {
    try_receiver_from_env(env, sdk, build)
        .await
        .unwrap_or_else(Receiver::misconfigured)
}

/// `main` of the receiver function of provider `name` (its metrics' `Provider`, also when its
/// configuration is refused). Each invocation's metrics are flushed to stdout once its answer is
/// decided, before it is returned (after that, Lambda may freeze the process).
pub async fn run_receiver<P: Provider>(
    name: &'static str,
    build: fn(&Env) -> Result<P, ConfigError>,
) -> Result<(), lambda_http::Error> {
    crate::telemetry::init();
    let env = Env::from_process();
    crate::metrics::init(&env);
    let sdk = sdk_config().await;
    let receiver = match try_receiver_from_env(env, &sdk, build).await {
        Ok(receiver) => receiver.named(name),
        Err(e) => {
            tracing::error!(error = %e, "cold start failed: a secret could not be read; Lambda retries the init");
            return Err(e.into());
        }
    };
    let receiver: &'static Receiver<P> = Box::leak(Box::new(receiver));
    lambda_http::run(lambda_http::service_fn(
        move |request: lambda_http::Request| async move {
            let request_id = request.lambda_context_ref().map(|c| c.request_id.clone());
            let response = receiver.handle(request).await;
            crate::metrics::flush(request_id.as_deref());
            Ok::<_, Infallible>(response)
        },
    ))
    .await
}

/// Builds the processor from the environment. Here a configuration error stops the cold start:
/// the messages wait in the queue until the function is fixed.
pub fn processor_from_env(
    env: &Env,
    sdk: &SdkConfig,
    router: Router,
) -> Result<Processor, ConfigError> {
    let settings = Settings::from_env(env)?;
    let claims = Arc::new(DynamoClaims::new(
        aws_sdk_dynamodb::Client::new(sdk),
        &settings.table,
    ));
    Ok(Processor::new(
        claims,
        router,
        settings,
        Arc::new(SystemClock),
    ))
}

/// `main` of the processor function. Each batch's metrics are flushed to stdout once its
/// response is decided.
pub async fn run_processor(router: Router) -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init();
    let env = Env::from_process();
    crate::metrics::init(&env);
    let sdk = sdk_config().await;
    let processor: &'static Processor =
        Box::leak(Box::new(processor_from_env(&env, &sdk, router)?));
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<SqsEvent>| async move {
            let response = processor.process(event.payload).await;
            crate::metrics::flush(Some(&event.context.request_id));
            Ok::<SqsBatchResponse, Infallible>(response)
        },
    ))
    .await
}

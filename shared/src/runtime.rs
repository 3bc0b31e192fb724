//! Cold-start wiring: configuration, secrets and AWS clients are built once here, never per
//! request. Function binaries call [`run_receiver`] or [`run_processor`] and nothing else.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_lambda_events::event::apigw::ApiGatewayV2httpRequest;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::LambdaEvent;

use crate::clock::SystemClock;
use crate::config::{ConfigError, Env, Settings};
use crate::consumer::{Processor, Router};
use crate::objects::{ObjectStore, S3Objects};
use crate::pipeline::Receiver;
use crate::provider::Provider;
use crate::queue::SqsQueue;
use crate::store::DynamoClaims;

/// The SDK configuration: region, credentials and `AWS_ENDPOINT_URL` from the environment,
/// with timeouts short enough that an outage becomes a prompt 503 (providers count slow answers
/// as failures) rather than a hung request.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .timeout_config(timeouts())
        .load()
        .await
}

/// The HTTPS client of every AWS client here: hyper with rustls on *ring*, trusting the system's
/// roots (as the SDK's default client does). Not the default's aws-lc-rs: ring makes every
/// binary about 0.3 MB smaller, has no CPU-jitter entropy source to pay for at init, and
/// offers the classic X25519 key exchange instead of aws-lc's post-quantum hybrid, whose
/// handshake costs more CPU at Lambda's small shares (BENCHMARKS.md).
pub fn http_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
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
    env: Env,
    sdk: &SdkConfig,
    build: impl FnOnce(&Env) -> Result<P, ConfigError>,
) -> Result<Receiver<P>, ConfigError> {
    Ok(build_receiver(env, sdk, build).await?.0)
}

/// The clients a function's requests use, to open their connections during init.
struct Connections {
    ddb: aws_sdk_dynamodb::Client,
    table: String,
    queue: Option<(aws_sdk_sqs::Client, String)>,
}

impl Connections {
    /// Clones of the function's own clients (each has its own connection pool), unless
    /// `WARM_UP=0`.
    fn unless_disabled(
        env: &Env,
        ddb: &aws_sdk_dynamodb::Client,
        table: &str,
        queue: Option<(&aws_sdk_sqs::Client, &str)>,
    ) -> Option<Connections> {
        (env.get("WARM_UP") != Some("0")).then(|| Connections {
            ddb: ddb.clone(),
            table: table.to_owned(),
            queue: queue.map(|(sqs, url)| (sqs.clone(), url.to_owned())),
        })
    }
}

async fn build_receiver<P: Provider>(
    mut env: Env,
    sdk: &SdkConfig,
    build: impl FnOnce(&Env) -> Result<P, ConfigError>,
) -> Result<(Receiver<P>, Option<Connections>), ConfigError> {
    if !env.secret_arns().is_empty() {
        env.resolve_secrets(&aws_sdk_secretsmanager::Client::new(sdk))
            .await?;
    }
    let ready = Settings::from_env(&env).and_then(|settings| Ok((settings, build(&env)?)));
    Ok(match ready {
        Ok((settings, provider)) => {
            let ddb = aws_sdk_dynamodb::Client::new(sdk);
            let sqs = aws_sdk_sqs::Client::new(sdk);
            let connections = Connections::unless_disabled(
                &env,
                &ddb,
                &settings.table,
                Some((&sqs, &settings.queue_url)),
            );
            let claims = Arc::new(DynamoClaims::new(ddb, &settings.table));
            let queue = Arc::new(
                SqsQueue::new(sqs, &settings.queue_url)
                    .with_limits(settings.max_message_bytes, settings.max_concurrent_calls),
            );
            let (payloads, archive) = buckets(sdk, &settings);
            (
                Receiver::new(provider, claims, queue, settings, Arc::new(SystemClock))
                    .with_objects(payloads, archive),
                connections,
            )
        }
        Err(e) => (Receiver::misconfigured(e), None),
    })
}

type Objects = Arc<dyn ObjectStore>;

/// The claim check's bucket and the archive's, each when configured, sharing one S3 client.
/// (No warm-up call: the claim check is for rare large bodies, and the archive's first put runs
/// beside the claim, not after it.)
fn buckets(sdk: &SdkConfig, settings: &Settings) -> (Option<Objects>, Option<Objects>) {
    if settings.payload_bucket.is_none() && settings.archive_bucket.is_none() {
        return (None, None);
    }
    let s3 = S3Objects::client(sdk);
    let store = |bucket: &Option<String>| {
        bucket.as_deref().map(|b| {
            Arc::new(
                S3Objects::new(s3.clone(), b).with_kms_key(settings.objects_kms_key.as_deref()),
            ) as Arc<dyn ObjectStore>
        })
    };
    (
        store(&settings.payload_bucket),
        store(&settings.archive_bucket),
    )
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
    let receiver = match build_receiver(env, &sdk, build).await {
        Ok((receiver, connections)) => {
            if let Some(connections) = connections {
                warm_up(connections, &format!("{name}#warm-up")).await;
            }
            receiver.named(name)
        }
        Err(e) => {
            tracing::error!(error = %e, "cold start failed: a secret could not be read; Lambda retries the init");
            return Err(e.into());
        }
    };
    let receiver: &'static Receiver<P> = Box::leak(Box::new(receiver));
    // lambda_runtime straight into the HTTP API event type (the stacks' API), then lambda_http's
    // own request conversion with the body moved, not copied (apigw::request_from_event).
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
            let request_id = event.context.request_id.clone();
            let request = crate::apigw::request_from_event(event.payload, event.context);
            let response = receiver.handle(request).await;
            crate::metrics::flush(Some(&request_id));
            Ok::<_, Infallible>(crate::apigw::event_response(response))
        },
    ))
    .await
}

/// Opens the connections to DynamoDB (and SQS) during init, where Lambda gives the function more
/// CPU than at a small memory size, so that the first webhook does not pay their TLS handshakes:
/// with the very clients the requests use (each client has its own connection pool), a GetItem
/// of `key` (under the function's own key prefix, which its IAM policy allows) and, for a
/// receiver, a GetQueueAttributes of its queue. Best effort within a second: a failure costs
/// only the handshake later. `WARM_UP=0` turns it off (to measure it: `make bench-cold`).
async fn warm_up(connections: Connections, key: &str) {
    let get = connections
        .ddb
        .get_item()
        .table_name(&connections.table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(key.to_owned()),
        )
        .send();
    let attributes = async {
        match &connections.queue {
            Some((sqs, url)) => sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                .send()
                .await
                .map(|_| ()),
            None => Ok(()),
        }
    };
    let both = futures::future::join(get, attributes);
    match tokio::time::timeout(Duration::from_secs(1), both).await {
        Ok((Ok(_), Ok(()))) => tracing::debug!("connections opened during init"),
        Ok((get, attributes)) => tracing::warn!(
            dynamodb_ok = get.is_ok(),
            sqs_ok = attributes.is_ok(),
            "warm-up call failed; the first request opens its connection itself"
        ),
        Err(_) => tracing::warn!("warm-up calls took over 1 s; the first request may pay them"),
    }
}

/// Builds the processor from the environment. Here a configuration error stops the cold start:
/// the messages wait in the queue until the function is fixed.
pub fn processor_from_env(
    env: &Env,
    sdk: &SdkConfig,
    router: Router,
) -> Result<Processor, ConfigError> {
    Ok(build_processor(env, sdk, router)?.0)
}

fn build_processor(
    env: &Env,
    sdk: &SdkConfig,
    router: Router,
) -> Result<(Processor, Option<Connections>), ConfigError> {
    let settings = Settings::from_env(env)?;
    // Fails closed: without the senders it trusts and the queue for those it refuses, the
    // processor does not start.
    let senders = crate::trust::Senders::from_env(env)?;
    let dead_letter_queue = env.require("DEAD_LETTER_QUEUE_URL")?.to_owned();
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let connections = Connections::unless_disabled(env, &ddb, &settings.table, None);
    let (ddb_for_notes, table) = (ddb.clone(), settings.table.clone());
    let claims = Arc::new(DynamoClaims::new(ddb, &settings.table));
    let (payloads, _) = buckets(sdk, &settings);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let trust = crate::trust::Trust {
        senders,
        dead_letters: Arc::new(crate::queue::SqsDeadLetters::new(
            sqs.clone(),
            dead_letter_queue,
        )),
    };
    // Failed records are hidden on the queue they came from (the events queue).
    let visibility = Arc::new(crate::queue::SqsVisibility::new(sqs, &settings.queue_url));
    let backoff = settings.retry_backoff;
    let processor = Processor::new(claims, router, settings, Arc::new(SystemClock), trust)
        .with_payloads(payloads)
        .with_backoff(visibility, backoff)
        .with_retry_notes(Arc::new(crate::store::DynamoRetryNotes::new(
            ddb_for_notes,
            &table,
        )));
    Ok((processor, connections))
}

/// `main` of the processor function. Each batch's metrics are flushed to stdout once its
/// response is decided.
pub async fn run_processor(router: Router) -> Result<(), lambda_runtime::Error> {
    crate::telemetry::init();
    let env = Env::from_process();
    crate::metrics::init(&env);
    let sdk = sdk_config().await;
    let (processor, connections) = build_processor(&env, &sdk, router)?;
    if let Some(connections) = connections {
        let key = format!("{}warm-up", crate::store::PROCESSED_PREFIX);
        warm_up(connections, &key).await;
    }
    let processor: &'static Processor = Box::leak(Box::new(processor));
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: LambdaEvent<SqsEvent>| async move {
            let response = processor.process(event.payload).await;
            crate::metrics::flush(Some(&event.context.request_id));
            Ok::<SqsBatchResponse, Infallible>(response)
        },
    ))
    .await
}

//! Test fixture: a real moto server (started once per test binary on a free loopback port, by
//! `tools/moto_server.py` from the project's virtualenv), and a fresh table and queues per test.
//! Without moto the tests fail, loudly, with the command that installs it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use lambda_http::Response;
use serde_json::Value;
use shared::apigw::Sent;
use shared::config::{ConfigError, Env};
use shared::consumer::{Processor, Router};
use shared::{Provider, Receiver};

struct Moto {
    endpoint: String,
    _child: Mutex<Child>,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let root = workspace_root();
        let python = std::env::var_os("MOTO_PYTHON").map(PathBuf::from).unwrap_or_else(|| root.join(".venv/bin/python"));
        assert!(
            python.exists(),
            "moto is not installed: {} is missing. Run `make venv` (or `make test`, which does it) to create the \
             project virtualenv with moto[server]; integration tests never skip.",
            python.display()
        );
        let mut child = Command::new(&python)
            .arg(root.join("tools/moto_server.py"))
            .args(["--port", "0", "--parent-pid", &std::process::id().to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto with {}: {e}", python.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first).expect("read moto's port");
        let port: u16 = first
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("moto did not start (said {first:?}); is moto[server] installed in {}?", python.display()));
        Moto { endpoint: format!("http://127.0.0.1:{port}"), _child: Mutex::new(child) }
    })
}

/// The shared moto server's endpoint (started on first use).
pub fn moto_endpoint() -> &'static str {
    &moto().endpoint
}

pub async fn sdk_at(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(shared::runtime::http_client())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "moto"))
        .timeout_config(shared::runtime::timeouts())
        .load()
        .await
}

/// One test's AWS: its own table, queue and dead-letter queue on the shared moto server.
#[derive(Clone)]
pub struct Stack {
    pub sdk: SdkConfig,
    pub ddb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub table: String,
    pub queue_url: String,
    pub dlq_url: String,
    pub s3: aws_sdk_s3::Client,
    /// The claim check's bucket: in every function's environment, as the template deploys it.
    pub payload_bucket: String,
    /// The archive's bucket: in no function's environment unless a test passes
    /// `ARCHIVE_BUCKET` (the archive is off by default).
    pub archive_bucket: String,
}

impl Stack {
    pub async fn new() -> Stack {
        Stack::with_max_receives(3).await
    }

    /// A stack whose queue moves a message to the DLQ after `max_receives` receives.
    pub async fn with_max_receives(max_receives: u32) -> Stack {
        let sdk = sdk_at(&moto().endpoint).await;
        let ddb = aws_sdk_dynamodb::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let table = format!("events-{id}");
        ddb.create_table()
            .table_name(&table)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await
            .expect("create table");
        ddb.update_time_to_live()
            .table_name(&table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name("expires_at")
                    .enabled(true)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("enable TTL");
        let dlq_url = sqs
            .create_queue()
            .queue_name(format!("dlq-{id}"))
            .send()
            .await
            .expect("create DLQ")
            .queue_url
            .unwrap();
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
            .clone();
        let redrive =
            serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives})
                .to_string();
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("events-{id}"))
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
                redrive,
            )
            // As the template: the receivers' default MAX_MESSAGE_BYTES.
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize,
                shared::config::DEFAULT_MAX_MESSAGE_BYTES.to_string(),
            )
            .send()
            .await
            .expect("create queue")
            .queue_url
            .unwrap();
        let s3 = shared::objects::S3Objects::client(&sdk);
        let (payload_bucket, archive_bucket) = (format!("payloads-{id}"), format!("archive-{id}"));
        for bucket in [&payload_bucket, &archive_bucket] {
            s3.create_bucket()
                .bucket(bucket)
                .send()
                .await
                .expect("create bucket");
        }
        Stack {
            sdk,
            ddb,
            sqs,
            table,
            queue_url,
            dlq_url,
            s3,
            payload_bucket,
            archive_bucket,
        }
    }

    pub fn env(&self, extra: &[(&str, &str)]) -> Env {
        let senders = local_senders();
        let mut env = Env::from_pairs([
            ("EVENTS_TABLE", self.table.as_str()),
            ("EVENTS_QUEUE_URL", self.queue_url.as_str()),
            ("PAYLOAD_BUCKET", self.payload_bucket.as_str()),
            ("DEAD_LETTER_QUEUE_URL", self.dlq_url.as_str()),
            ("TRUSTED_SENDERS", senders.as_str()),
            ("OPERATOR_SENDERS", shared::trust::LOCAL_SENDER_ID),
        ]);
        for (k, v) in extra {
            env.set(k, v);
        }
        env
    }

    /// A receiver built exactly as in Lambda, from the environment.
    pub async fn receiver<P: Provider>(
        &self,
        extra: &[(&str, &str)],
        build: impl FnOnce(&Env) -> Result<P, ConfigError>,
    ) -> Arc<Receiver<P>> {
        Arc::new(shared::runtime::receiver_from_env(self.env(extra), &self.sdk, build).await)
    }

    pub fn processor(&self, router: Router) -> Processor {
        shared::runtime::processor_from_env(&self.env(&[]), &self.sdk, router)
            .expect("processor config")
    }

    /// The deployed processor, but a failed record is visible again at once (waits of 0 s):
    /// for tests that take a record through every receive to the DLQ.
    pub fn processor_without_waits(&self, router: Router) -> Processor {
        let env = self.env(&[
            ("RETRY_BASE_DELAY_SECONDS", "0"),
            ("RETRY_MAX_DELAY_SECONDS", "0"),
        ]);
        shared::runtime::processor_from_env(&env, &self.sdk, router).expect("processor config")
    }

    /// Every message now on the queue, taken off it (kept invisible), as SQS records.
    pub async fn drain(&self) -> Vec<SqsMessage> {
        drain_queue(&self.sqs, &self.queue_url).await
    }

    pub async fn drain_dlq(&self) -> Vec<SqsMessage> {
        drain_queue(&self.sqs, &self.dlq_url).await
    }

    /// What the processor leaves once it has taken every event the receivers claimed: its
    /// `processed#<dedup key>` record (PROCESSING, as while its handler runs), written with the
    /// processor's own claim, for every receiver claim that has none. The queue is not touched
    /// (receiving would count towards the DLQ's maxReceiveCount). Returns how many it wrote.
    /// (A receiver's answer to a retry depends on that record: README "Two round trips".)
    pub async fn processor_has_taken_the_queue(&self) -> usize {
        use shared::store::{
            processed_key, Claim, ClaimOutcome, ClaimStore, DynamoClaims, Status, PROCESSED_PREFIX,
        };
        let claims = DynamoClaims::new(self.ddb.clone(), &self.table);
        let items = self
            .ddb
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .send()
            .await
            .expect("scan");
        let mut written = 0;
        for item in items.items() {
            let pk = item["pk"].as_s().unwrap();
            if pk.starts_with(PROCESSED_PREFIX) {
                continue;
            }
            let claim = Claim {
                pk: processed_key(pk),
                pending: Status::Processing,
                event_type: "test".into(),
                fingerprint: "test".into(),
                now: time::OffsetDateTime::now_utc(),
                lease: std::time::Duration::from_secs(300),
                ttl: std::time::Duration::from_secs(3600),
                token: uuid::Uuid::new_v4().simple().to_string(),
            };
            if claims.claim(&claim).await.expect("processor's claim") == ClaimOutcome::New {
                written += 1;
            }
        }
        written
    }

    /// One pass of what the event source mapping does: receive a batch (visible again at once
    /// if not deleted), hand it to `processor`, delete the records it did not report as
    /// failures. Returns the number of records received.
    pub async fn feed(&self, processor: &Processor) -> usize {
        let got = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .message_attribute_names("All")
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        let records: Vec<SqsMessage> = got.messages().iter().map(sqs_record).collect();
        let response = processor.process(sqs_event(records.clone())).await;
        for r in &records {
            let id = r.message_id.as_deref().unwrap();
            if !response
                .batch_item_failures
                .iter()
                .any(|f| f.item_identifier == id)
            {
                self.sqs
                    .delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(r.receipt_handle.clone().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        records.len()
    }

    pub async fn item(&self, pk: &str) -> Option<HashMap<String, AttributeValue>> {
        self.ddb
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.into()))
            .consistent_read(true)
            .send()
            .await
            .expect("get item")
            .item
    }

    /// A refused request left nothing behind: no message queued, no claim stored.
    pub async fn assert_no_trace(&self) {
        assert!(self.drain().await.is_empty(), "nothing queued");
        assert_eq!(self.item_count().await, 0, "nothing stored");
    }

    /// Every key in `bucket`, with its server-side encryption as S3 reports it.
    pub async fn objects(&self, bucket: &str) -> Vec<(String, Option<String>)> {
        let listed = self
            .s3
            .list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .expect("list objects");
        let mut out = Vec::new();
        for o in listed.contents() {
            let key = o.key().unwrap().to_owned();
            let head = self
                .s3
                .head_object()
                .bucket(bucket)
                .key(&key)
                .send()
                .await
                .expect("head object");
            let sse = head.server_side_encryption().map(|s| s.as_str().to_owned());
            out.push((key, sse));
        }
        out
    }

    /// The envelope a message stands for: itself, or, for a claim-checked one, the object its
    /// reference names, read from the bucket (what moto stored, byte for byte).
    pub async fn whole(&self, record: &SqsMessage) -> Vec<u8> {
        let e = envelope(record);
        match e["payload_ref"]["key"].as_str() {
            Some(key) => self.object(&self.payload_bucket, key).await,
            None => record.body.clone().unwrap_or_default().into_bytes(),
        }
    }

    pub async fn object(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .expect("get object")
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
            .to_vec()
    }

    pub async fn item_count(&self) -> usize {
        self.ddb
            .scan()
            .table_name(&self.table)
            .send()
            .await
            .expect("scan")
            .count as usize
    }
}

async fn drain_queue(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<SqsMessage> {
    let mut out = Vec::new();
    loop {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(600)
            .message_attribute_names("All")
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive");
        let batch = got.messages.unwrap_or_default();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch.iter().map(sqs_record));
    }
}

/// A received SQS message as the event source mapping hands it to the processor: id, receipt
/// handle, body and the message attributes that were asked for.
pub fn sqs_record(m: &aws_sdk_sqs::types::Message) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = m.message_id.clone();
    record.receipt_handle = m.receipt_handle.clone();
    record.body = m.body.clone();
    for (k, v) in m.attributes.iter().flatten() {
        record.attributes.insert(k.as_str().to_owned(), v.clone());
    }
    for (k, v) in m.message_attributes.iter().flatten() {
        let mut attr = aws_lambda_events::event::sqs::SqsMessageAttribute::default();
        attr.string_value = v.string_value.clone();
        attr.data_type = Some(v.data_type.clone());
        record.message_attributes.insert(k.clone(), attr);
    }
    record
}

/// Drains the queue, asserts it held exactly one message for this event, and checks what every
/// envelope must say: provider, event id, type, `<provider>#<id>` dedup key, and the routing
/// attributes. Returns the message and its envelope for the provider-specific checks.
pub async fn only_envelope(
    stack: &Stack,
    provider: &str,
    event_id: &str,
    event_type: &str,
) -> (SqsMessage, Value) {
    let mut messages = stack.drain().await;
    assert_eq!(messages.len(), 1, "exactly one message");
    let message = messages.remove(0);
    let env = envelope(&message);
    assert_eq!(env["provider"], provider);
    assert_eq!(env["event_id"], event_id);
    assert_eq!(env["event_type"], event_type);
    assert_eq!(
        env["dedup_key"].as_str(),
        Some(key(provider, env["tenant"].as_str(), event_id).as_str())
    );
    let attribute = |name: &str| message.message_attributes[name].string_value.clone();
    assert_eq!(attribute("provider").as_deref(), Some(provider));
    assert_eq!(attribute("event_type").as_deref(), Some(event_type));
    (message, env)
}

/// The dedup key of the provider's event `id` for `tenant`.
pub fn key(provider: &str, tenant: Option<&str>, id: &str) -> String {
    shared::pipeline::dedup_key(provider, tenant, &shared::provider::EventKey::id(id))
}

/// The dedup key of an event keyed by the SHA-256 of `content`.
pub fn key_hash(provider: &str, tenant: Option<&str>, content: &[u8]) -> String {
    shared::pipeline::dedup_key(
        provider,
        tenant,
        &shared::provider::EventKey::hash_of(content),
    )
}

/// `TRUSTED_SENDERS` naming moto's one `SenderId` for every provider (moto has no identities).
pub fn local_senders() -> String {
    shared::providers::ALL
        .iter()
        .map(|(p, _)| format!("{p}={}", shared::trust::LOCAL_SENDER_ID))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn sqs_event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

/// A 401 with the plain `unauthorized` body (never a hint of why).
pub fn assert_unauthorized(response: &Response<lambda_http::Body>, case: &str) {
    assert_eq!(response.status(), 401, "{case}");
    assert_eq!(
        body_json(response),
        serde_json::json!({"status": "unauthorized"}),
        "{case}"
    );
}

pub fn body_json(response: &Response<lambda_http::Body>) -> Value {
    serde_json::from_slice(response.body().as_ref()).expect("JSON answer")
}

pub fn envelope(record: &SqsMessage) -> Value {
    serde_json::from_str(record.body.as_deref().expect("body")).expect("envelope JSON")
}

pub fn s(item: &HashMap<String, AttributeValue>, key: &str) -> String {
    item.get(key)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_else(|| panic!("{key} missing"))
}

/// `body` as Trybe sends it, signed with `secret`.
pub fn signed_trybe(secret: &str, body: &Value) -> Sent {
    let body = body.to_string();
    let signature = shared::providers::trybe::sign(
        &shared::secret::Secret::new(secret).unwrap(),
        body.as_bytes(),
    );
    Sent::post("/trybe", body).header("Signature", signature)
}

/// Sends a request through the receiver's Lambda entry point.
pub async fn send<P: Provider>(receiver: &Receiver<P>, sent: &Sent) -> Response<lambda_http::Body> {
    receiver.handle(sent.to_request()).await
}

/// An endpoint where nothing listens: an outage.
pub const DEAD_ENDPOINT: &str = "http://127.0.0.1:9";

//! The receiver pipeline, the same for every provider (DESIGN.md "Flow"):
//! method → size → authenticate → media type → inspect (handshake | events) → claim → queue →
//! finish → answer. A provider only supplies its rules ([`Provider`]).

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use lambda_http::http::{HeaderMap, Method};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::Value;
use tracing::{error, info, warn};

use crate::answer::Answer;
use crate::clock::{rfc3339, Clock};
use crate::config::Settings;
use crate::envelope::Envelope;
use crate::provider::{Inbound, InboundEvent, Inspection, Provider, Refusal, VerifiedRequest};
use crate::queue::{EventQueue, Message};
use crate::store::{Claim, ClaimOutcome, ClaimStore, Finish, Status};
use crate::verify::sha256_hex;

/// Keys longer than this are hashed, so that a hostile or odd id cannot exceed DynamoDB's key size.
const MAX_KEY_LEN: usize = 256;

/// A receiver: the pipeline wired to one provider, its store and its queue. Built once per cold
/// start; `handle` does only per-request work.
pub struct Receiver<P> {
    ready: Result<Ready<P>, String>,
    clock: Arc<dyn Clock>,
}

struct Ready<P> {
    provider: P,
    claims: Arc<dyn ClaimStore>,
    queue: Arc<dyn EventQueue>,
    settings: Settings,
    allow: String,
}

/// What one request did, for the single log line it leaves.
#[derive(Debug, Default)]
struct Trace {
    event_id: Option<String>,
    event_type: Option<String>,
    tenant: Option<String>,
    reason: Option<String>,
}

impl<P: Provider> Receiver<P> {
    pub fn new(
        provider: P,
        claims: Arc<dyn ClaimStore>,
        queue: Arc<dyn EventQueue>,
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let allow = provider
            .methods()
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        Receiver {
            ready: Ok(Ready {
                provider,
                claims,
                queue,
                settings,
                allow,
            }),
            clock,
        }
    }

    /// The same receiver reading time from `clock` (tests with signed, time-stamped samples).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A receiver that refuses everything with 500: its configuration is incomplete (fail closed).
    /// The reason is logged once, here, at cold start.
    pub fn misconfigured(reason: impl std::fmt::Display) -> Self {
        let reason = reason.to_string();
        error!(reason = %reason, "receiver misconfigured: refusing every request with 500");
        Receiver {
            ready: Err(reason),
            clock: Arc::new(crate::clock::SystemClock),
        }
    }

    /// The Lambda entry point: one request in, one response out, one log line.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let request_id = request.lambda_context_ref().map(|c| c.request_id.clone());
        let body: &[u8] = request.body().as_ref();
        let mut trace = Trace::default();
        let answer = self
            .answer(
                request.method(),
                request.headers(),
                request.uri().path(),
                request.uri().query(),
                body,
                &mut trace,
            )
            .await;
        let provider = self
            .ready
            .as_ref()
            .map(|r| r.provider.name())
            .unwrap_or("unconfigured");
        info!(
            provider,
            request_id = request_id.as_deref(),
            method = %request.method(),
            status = answer.status().as_u16(),
            outcome = answer.outcome(),
            event_id = trace.event_id.as_deref(),
            event_type = trace.event_type.as_deref(),
            tenant = trace.tenant.as_deref(),
            reason = trace.reason.as_deref(),
            bytes = body.len(),
            "webhook answered"
        );
        answer.into_response()
    }

    /// The pipeline without the Lambda types: usable from tests and benchmarks.
    pub async fn answer_parts(
        &self,
        method: &Method,
        headers: &HeaderMap,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> Answer {
        self.answer(method, headers, path, query, body, &mut Trace::default())
            .await
    }

    async fn answer(
        &self,
        method: &Method,
        headers: &HeaderMap,
        path: &str,
        query: Option<&str>,
        body: &[u8],
        trace: &mut Trace,
    ) -> Answer {
        let ready = match &self.ready {
            Ok(ready) => ready,
            Err(_) => return Answer::Misconfigured,
        };
        if !ready.provider.methods().contains(method) {
            return Answer::MethodNotAllowed {
                allow: ready.allow.clone(),
            };
        }
        if body.len() > ready.settings.max_body_bytes {
            return Answer::PayloadTooLarge;
        }
        let inbound = Inbound {
            method,
            headers,
            path,
            query,
            body,
            now: self.clock.now(),
        };
        let proof = match ready.provider.authenticate(&inbound) {
            Ok(proof) => proof,
            Err(why) => {
                trace.reason = Some(why.to_string());
                return Answer::Unauthorized;
            }
        };
        if !ready
            .provider
            .accepts_media_type(inbound.media_type().as_deref())
        {
            return Answer::Refused(Refusal::UnsupportedMediaType);
        }
        let verified = VerifiedRequest::new(&inbound, proof);
        match ready.provider.inspect(&verified) {
            Ok(Inspection::Reply { status, body }) => Answer::Reply { status, body },
            Ok(Inspection::Events { events, ack }) => {
                ready.deliver(&inbound, events, ack, trace).await
            }
            Err(refusal) => {
                trace.reason = Some(refusal.to_string());
                Answer::Refused(refusal)
            }
        }
    }
}

impl<P: Provider> Ready<P> {
    /// Claims every event, queues the new ones, finishes their claims. 200 only when every event
    /// is on the queue, now or from an earlier delivery.
    async fn deliver(
        &self,
        inbound: &Inbound<'_>,
        events: Vec<InboundEvent>,
        ack: Option<Value>,
        trace: &mut Trace,
    ) -> Answer {
        // One log line per request: for a batch, its size, and type and tenant when all share them.
        if let Some(first) = events.first() {
            trace.event_id = Some(match events.len() {
                1 => first.event_id.clone(),
                n => format!("{n} events"),
            });
            trace.event_type = events
                .iter()
                .all(|e| e.event_type == first.event_type)
                .then(|| first.event_type.clone());
            trace.tenant = first
                .tenant
                .clone()
                .filter(|t| events.iter().all(|e| e.tenant.as_ref() == Some(t)));
        }
        if events.is_empty() {
            return Answer::Refused(Refusal::BadRequest("no events in the request".into()));
        }
        let provider = self.provider.name();
        let body_sha256 = sha256_hex(inbound.body);
        let received_at = rfc3339(inbound.now);
        let content_type = inbound.header("content-type").map(str::to_owned);

        // Build every message before claiming anything: an event too large for the queue is
        // refused whole, without leaving claims behind.
        let mut prepared = Vec::with_capacity(events.len());
        for event in events {
            let dedup_key = dedup_key(provider, &event.key);
            let mut envelope = Envelope {
                provider: provider.to_owned(),
                event_id: event.event_id,
                event_type: event.event_type,
                dedup_key,
                received_at: received_at.clone(),
                occurred_at: event.occurred_at,
                tenant: event.tenant,
                content_type: content_type.clone(),
                body_sha256: body_sha256.clone(),
                payload: None,
                payload_raw: None,
            };
            envelope.set_payload(event.payload);
            let message = match Message::from_envelope(&envelope) {
                Ok(m) if m.body.len() <= self.settings.max_message_bytes => m,
                Ok(m) => {
                    trace.reason = Some(format!(
                        "envelope of {} bytes exceeds the queue limit",
                        m.body.len()
                    ));
                    return Answer::PayloadTooLarge;
                }
                Err(e) => {
                    trace.reason = Some(format!("envelope not serializable: {e}"));
                    return Answer::Refused(Refusal::BadRequest(
                        "payload cannot be forwarded".into(),
                    ));
                }
            };
            let claim = Claim {
                pk: envelope.dedup_key.clone(),
                pending: Status::Received,
                event_type: envelope.event_type.clone(),
                fingerprint: event.fingerprint.unwrap_or_else(|| body_sha256.clone()),
                now: inbound.now,
                lease: self.settings.lease,
                ttl: self.settings.dedup_ttl,
                token: new_token(),
            };
            prepared.push((envelope, message, claim));
        }

        // All claims at once: one round trip of latency however many events.
        let outcomes = join_all(prepared.iter().map(|(_, _, c)| self.claims.claim(c))).await;
        let mut fresh = Vec::new();
        let (mut duplicates, mut retry_after, mut failed) = (0usize, None::<Duration>, false);
        for ((envelope, message, claim), outcome) in prepared.iter().zip(outcomes) {
            match outcome {
                Ok(ClaimOutcome::New) => fresh.push((envelope, message, claim)),
                Ok(ClaimOutcome::Duplicate { status, conflict }) => {
                    duplicates += 1;
                    if conflict {
                        warn!(provider, event_id = %envelope.event_id, dedup_key = %envelope.dedup_key, status = status.as_str(),
                            conflict = 1, "same event key with different content: treated as a duplicate");
                    }
                }
                Ok(ClaimOutcome::InFlight { retry_after: wait }) => {
                    retry_after = Some(retry_after.map_or(wait, |w| w.max(wait)));
                }
                Err(e) => {
                    error!(provider, event_id = %envelope.event_id, error = %e, "claim failed");
                    failed = true;
                }
            }
        }
        if failed {
            // Nothing is sent when the store is failing: give back what we took, let the provider retry.
            self.release(fresh.iter().map(|(_, _, c)| *c)).await;
            trace.reason = Some("claim store failed".into());
            return Answer::Unavailable {
                retry_after_secs: 1,
            };
        }

        let messages: Vec<Message> = fresh.iter().map(|(_, m, _)| (*m).clone()).collect();
        let sent = if messages.is_empty() {
            Vec::new()
        } else {
            self.queue.send(&messages).await
        };
        let mut unsent = Vec::new();
        let mut finishes = Vec::new();
        for ((envelope, _, claim), result) in fresh.iter().zip(sent) {
            match result {
                Ok(message_id) => finishes.push((claim, Finish::Enqueued { message_id })),
                Err(e) => {
                    error!(provider, event_id = %envelope.event_id, error = %e, "queue send failed; claim released");
                    unsent.push(*claim);
                }
            }
        }
        let queued = finishes.len();
        let finished = join_all(
            finishes
                .iter()
                .map(|(c, f)| self.claims.finish(&c.pk, &c.token, f, inbound.now)),
        )
        .await;
        for ((claim, _), result) in finishes.iter().zip(finished) {
            if let Err(e) = result {
                // The message is queued (durable); the claim stays RECEIVED until its lease ends.
                // A later retry could queue it again, which the processor's own claim absorbs.
                warn!(provider, dedup_key = %claim.pk, error = %e, "message queued but claim not marked ENQUEUED");
            }
        }
        if !unsent.is_empty() {
            self.release(unsent.into_iter()).await;
            trace.reason = Some("queue send failed".into());
            return Answer::Unavailable {
                retry_after_secs: 1,
            };
        }
        if let Some(wait) = retry_after {
            trace.reason = Some("first delivery still in flight".into());
            return Answer::Unavailable {
                retry_after_secs: wait.as_secs_f64().ceil() as u64,
            };
        }
        let event_id = (prepared.len() == 1).then(|| prepared[0].0.event_id.clone());
        Answer::Accepted {
            event_id,
            queued,
            duplicates,
            events: prepared.len(),
            ack,
        }
    }

    async fn release<'c>(&self, claims: impl Iterator<Item = &'c Claim>) {
        let results = join_all(
            claims.map(|c| async move { (c, self.claims.release(&c.pk, &c.token).await) }),
        )
        .await;
        for (claim, result) in results {
            if let Err(e) = result {
                // The lease expires on its own; the provider's retry then takes the claim over.
                warn!(dedup_key = %claim.pk, error = %e, "claim not released; it frees itself when its lease ends");
            }
        }
    }
}

/// `<provider>#<event key>`; an over-long key is replaced by its hash.
pub fn dedup_key(provider: &str, key: &str) -> String {
    if key.len() > MAX_KEY_LEN {
        format!("{provider}#sha256:{}", sha256_hex(key.as_bytes()))
    } else {
        format!("{provider}#{key}")
    }
}

/// A random claim token (release and finish only touch a claim that is still ours).
pub fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    //! The pipeline's decisions with in-memory fakes: a test provider whose body is a JSON list of
    //! event keys (or `"handshake"`), authenticated by an `x-token` header.
    use super::*;
    use crate::clock::FixedClock;
    use crate::envelope::Payload;
    use crate::queue::MemoryQueue;
    use crate::secret::SecretList;
    use crate::store::MemoryClaims;
    use crate::verify::{self, AuthFailure, Verified};
    use lambda_http::http::{HeaderValue, StatusCode};
    use std::sync::atomic::Ordering;

    struct Batchy(SecretList);

    impl Provider for Batchy {
        fn name(&self) -> &'static str {
            "batchy"
        }
        fn authenticate(&self, r: &Inbound<'_>) -> Result<Verified, AuthFailure> {
            verify::token(&self.0, r.header("x-token").unwrap_or("").as_bytes())
        }
        fn inspect(&self, r: &VerifiedRequest<'_, '_>) -> Result<Inspection, Refusal> {
            match serde_json::from_slice::<Value>(r.body) {
                Ok(Value::String(s)) if s == "handshake" => Ok(Inspection::Reply {
                    status: StatusCode::OK,
                    body: serde_json::json!({"hello": 1}),
                }),
                Ok(Value::Array(keys)) => Ok(Inspection::Events {
                    events: keys
                        .iter()
                        .map(|k| InboundEvent {
                            key: k.as_str().unwrap_or_default().to_owned(),
                            event_id: k.as_str().unwrap_or_default().to_owned(),
                            event_type: "thing.happened".into(),
                            occurred_at: None,
                            tenant: None,
                            payload: Payload::Json(k.clone()),
                            fingerprint: Some(verify::sha256_hex(k.to_string().as_bytes())),
                        })
                        .collect(),
                    ack: None,
                }),
                _ => Err(Refusal::BadRequest("bad".into())),
            }
        }
    }

    struct Fixture {
        receiver: Receiver<Batchy>,
        claims: Arc<MemoryClaims>,
        queue: Arc<MemoryQueue>,
        clock: Arc<FixedClock>,
    }

    fn fixture() -> Fixture {
        let claims = Arc::new(MemoryClaims::default());
        let queue = Arc::new(MemoryQueue::default());
        let clock = Arc::new(FixedClock::at_millis(1_700_000_000_000));
        let settings = Settings {
            table: "t".into(),
            queue_url: "q".into(),
            dedup_ttl: Duration::from_secs(3600),
            lease: Duration::from_secs(30),
            processing_lease: Duration::from_secs(60),
            max_body_bytes: 4096,
            max_message_bytes: 1024,
        };
        let receiver = Receiver::new(
            Batchy(SecretList::parse("tok").unwrap()),
            claims.clone(),
            queue.clone(),
            settings,
            clock.clone(),
        );
        Fixture {
            receiver,
            claims,
            queue,
            clock,
        }
    }

    async fn post(f: &Fixture, body: &str) -> Answer {
        let mut headers = HeaderMap::new();
        headers.insert("x-token", HeaderValue::from_static("tok"));
        f.receiver
            .answer_parts(&Method::POST, &headers, "/", None, body.as_bytes())
            .await
    }

    #[tokio::test]
    async fn a_partially_failed_batch_answers_503_and_the_retry_queues_only_the_rest() {
        let f = fixture();
        f.queue.fail_position.store(2, Ordering::SeqCst);
        let answer = post(&f, r#"["a","b","c"]"#).await;
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(f.queue.messages().len(), 2);
        assert!(
            f.claims.get("batchy#b").is_none(),
            "the failed entry's claim is released"
        );
        assert_eq!(f.claims.get("batchy#a").unwrap().status, Status::Enqueued);

        f.queue.fail_position.store(0, Ordering::SeqCst);
        let retry = post(&f, r#"["a","b","c"]"#).await;
        assert_eq!(
            retry,
            Answer::Accepted {
                event_id: None,
                queued: 1,
                duplicates: 2,
                events: 3,
                ack: None
            }
        );
        let keys: Vec<String> = f
            .queue
            .messages()
            .iter()
            .map(|m| serde_json::from_str::<Envelope>(&m.body).unwrap().dedup_key)
            .collect();
        assert_eq!(keys, vec!["batchy#a", "batchy#c", "batchy#b"]);
    }

    #[tokio::test]
    async fn a_live_lease_answers_503_with_the_time_left_and_a_lapsed_one_is_taken_over() {
        let f = fixture();
        f.claims
            .claim(&Claim {
                pk: "batchy#a".into(),
                pending: Status::Received,
                event_type: "t".into(),
                fingerprint: "x".into(),
                now: f.clock.now(),
                lease: Duration::from_secs(30),
                ttl: Duration::from_secs(3600),
                token: "crashed-lambda".into(),
            })
            .await
            .unwrap();
        f.clock.advance_millis(12_500);
        assert_eq!(
            post(&f, r#"["a"]"#).await,
            Answer::Unavailable {
                retry_after_secs: 18
            }
        );
        assert!(f.queue.messages().is_empty());
        f.clock.advance_millis(18_000);
        assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "accepted");
        assert_eq!(f.queue.messages().len(), 1);
    }

    #[tokio::test]
    async fn a_store_failure_sends_nothing() {
        let f = fixture();
        f.claims.fail.store(true, Ordering::SeqCst);
        assert_eq!(
            post(&f, r#"["a","b"]"#).await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(f.queue.messages().is_empty());
    }

    #[tokio::test]
    async fn handshakes_store_nothing_and_auth_comes_first() {
        let f = fixture();
        assert_eq!(
            post(&f, r#""handshake""#).await,
            Answer::Reply {
                status: StatusCode::OK,
                body: serde_json::json!({"hello": 1})
            }
        );
        assert!(f.claims.is_empty() && f.queue.messages().is_empty());
        let unauthenticated = f
            .receiver
            .answer_parts(
                &Method::POST,
                &HeaderMap::new(),
                "/",
                None,
                b"not even json",
            )
            .await;
        assert_eq!(unauthenticated, Answer::Unauthorized);
    }

    #[tokio::test]
    async fn an_envelope_over_the_queue_limit_is_refused_before_any_claim() {
        let f = fixture();
        let big = format!(r#"["a","{}"]"#, "x".repeat(1500));
        assert_eq!(post(&f, &big).await, Answer::PayloadTooLarge);
        assert!(f.claims.is_empty() && f.queue.messages().is_empty());
    }

    #[tokio::test]
    async fn misconfigured_receivers_refuse_everything() {
        let r: Receiver<Batchy> = Receiver::misconfigured("TOKEN is not set");
        assert_eq!(
            r.answer_parts(&Method::POST, &HeaderMap::new(), "/", None, b"[]")
                .await,
            Answer::Misconfigured
        );
    }

    #[test]
    fn long_keys_are_hashed_into_the_dedup_key() {
        assert_eq!(dedup_key("p", "abc"), "p#abc");
        let long = dedup_key("p", &"k".repeat(300));
        assert!(long.starts_with("p#sha256:") && long.len() == "p#sha256:".len() + 64);
    }
}

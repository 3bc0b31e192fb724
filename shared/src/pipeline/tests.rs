//! The pipeline's decisions with in-memory fakes: a test provider whose body is a JSON list of
//! event keys (`"key"`, or `"tenant/key"` for an event naming a tenant) or `"handshake"`
//! (`"handshake/tenant"`), authenticated by an `x-token` header.
use super::*;
// What the tests name beside the pipeline's own items (they were one module with it).
use crate::clock::FixedClock;
use crate::envelope::Envelope;
use crate::envelope::Payload;
use crate::objects;
use crate::objects::MemoryObjects;
use crate::provider::{EventKey, InboundEvent, Inspection, Refusal, VerifiedRequest};
use crate::queue::MemoryQueue;
use crate::secret::SecretList;
use crate::store::MemoryClaims;
use crate::store::{Claim, ClaimOutcome, Finish, Status};
use crate::verify::{self, AuthFailure, Verified};
use lambda_http::http::{HeaderValue, StatusCode};
use serde_json::Value;
use std::sync::atomic::Ordering;
use std::time::Duration;

struct Batchy(SecretList);

impl Provider for Batchy {
    fn name(&self) -> &'static str {
        "batchy"
    }
    fn authenticate(&self, r: &Inbound<'_>) -> Result<Verified, AuthFailure> {
        verify::token(&self.0, r.header("x-token").unwrap_or("").as_bytes())
    }
    fn inspect(&self, r: &VerifiedRequest<'_, '_>) -> Result<Inspection, Refusal> {
        let split = |s: &str| match s.split_once('/') {
            Some((a, b)) => (Some(a.to_owned()), b.to_owned()),
            None => (None, s.to_owned()),
        };
        match serde_json::from_slice::<Value>(r.body) {
            Ok(Value::String(s)) if s.starts_with("handshake") => Ok(Inspection::Reply {
                status: StatusCode::OK,
                body: serde_json::json!({"hello": 1}),
                tenant: s.split_once('/').map(|(_, t)| t.to_owned()),
            }),
            Ok(Value::Array(keys)) => Ok(Inspection::Events {
                events: keys
                    .iter()
                    .map(|k| {
                        // `{"key": …, …}`: an event whose content is more than its key.
                        let name = k.get("key").unwrap_or(k).as_str();
                        let (tenant, key) = split(name.unwrap_or_default());
                        InboundEvent {
                            key: EventKey::id(key.clone()),
                            event_id: key,
                            event_type: "thing.happened".into(),
                            occurred_at: None,
                            tenant,
                            payload: Payload::Json(k.clone().into()),
                            fingerprint: Some(verify::sha256_hex(k.to_string().as_bytes())),
                        }
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

fn settings() -> Settings {
    Settings {
        table: "t".into(),
        queue_url: "q".into(),
        dedup_ttl: Duration::from_secs(3600),
        deadline: Duration::from_secs(5),
        lease: Duration::from_secs(30),
        processing_lease: Duration::from_secs(60),
        max_body_bytes: 4096,
        max_message_bytes: 1024,
        max_events: 20,
        max_request_payload_bytes: 8192,
        processor_bytes_in_flight: 4096,
        max_concurrent_calls: 4,
        payload_bucket: None,
        archive_bucket: None,
        objects_kms_key: None,
        retry_backoff: crate::queue::Backoff::default(),
    }
}

fn fixture() -> Fixture {
    fixture_with(SecretList::parse("tok").unwrap(), settings())
}

impl Fixture {
    /// A claim on `pk` taken now by another delivery (`token`), leased for 30 s.
    fn other_claim(&self, pk: &str, fingerprint: &str, token: &str) -> Claim {
        Claim {
            pk: pk.into(),
            pending: Status::Received,
            event_type: "t".into(),
            fingerprint: fingerprint.into(),
            now: self.clock.now(),
            lease: Duration::from_secs(30),
            ttl: Duration::from_secs(3600),
            token: token.into(),
        }
    }

    /// What the processor leaves when it claims `pk`'s event: its `processed#` record.
    async fn processed(&self, pk: &str) {
        let claim = Claim {
            pk: crate::store::processed_key(pk),
            pending: Status::Processing,
            ..self.other_claim(pk, "x", "processor")
        };
        assert_eq!(self.claims.claim(&claim).await.unwrap(), ClaimOutcome::New);
    }
}

fn fixture_with(tokens: SecretList, settings: Settings) -> Fixture {
    let claims = Arc::new(MemoryClaims::default());
    let queue = Arc::new(MemoryQueue::default());
    let clock = Arc::new(FixedClock::at_millis(1_700_000_000_000));
    let receiver = Receiver::new(
        Batchy(tokens),
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
    post_as(f, "tok", body).await
}

async fn post_as(f: &Fixture, token: &str, body: &str) -> Answer {
    let mut headers = HeaderMap::new();
    headers.insert("x-token", HeaderValue::from_str(token).unwrap());
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
        f.claims.get("batchy##id#b").is_none(),
        "the failed entry's claim is released"
    );
    // What was queued keeps its RECEIVED claim: the retry asks the processor's record.
    assert_eq!(
        f.claims.get("batchy##id#a").unwrap().status,
        Status::Received
    );

    f.queue.fail_position.store(0, Ordering::SeqCst);
    f.processed("batchy##id#a").await;
    f.processed("batchy##id#c").await;
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
    assert_eq!(keys, vec!["batchy##id#a", "batchy##id#c", "batchy##id#b"]);
}

#[tokio::test]
async fn a_live_lease_answers_503_with_the_time_left_and_a_lapsed_one_is_taken_over() {
    let f = fixture();
    f.claims
        .claim(&f.other_claim("batchy##id#a", "x", "crashed-lambda"))
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
async fn an_accepted_event_costs_one_claim_and_one_send_and_no_mark() {
    let f = fixture();
    assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "accepted");
    assert_eq!(f.claims.calls(), vec!["claim"]);
    assert_eq!(f.queue.messages().len(), 1);
    let claim = f.claims.get("batchy##id#a").unwrap();
    assert_eq!(claim.status, Status::Received);
}

#[tokio::test]
async fn a_retry_within_the_lease_is_a_duplicate_once_the_processor_has_the_event() {
    let f = fixture();
    assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "accepted");
    f.clock.advance_millis(1_000);
    // The first delivery may still be sending: 503 until the processor has a record.
    assert_eq!(
        post(&f, r#"["a"]"#).await,
        Answer::Unavailable {
            retry_after_secs: 29
        }
    );
    f.processed("batchy##id#a").await;
    assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "duplicate");
    assert_eq!(f.queue.messages().len(), 1, "sent once");
    let claim = f.claims.get("batchy##id#a").unwrap();
    assert_eq!(claim.status, Status::Received, "nothing written");
}

#[tokio::test]
async fn past_the_lease_a_retry_sends_again_unless_the_processor_has_the_event() {
    let f = fixture();
    assert_eq!(post(&f, r#"["a", "b"]"#).await.outcome(), "accepted");
    let first = f.claims.get("batchy##id#a").unwrap();
    f.processed("batchy##id#a").await;
    f.clock.advance_millis(31_000);
    assert_eq!(
        post(&f, r#"["a", "b"]"#).await,
        Answer::Accepted {
            event_id: None,
            queued: 1,
            duplicates: 1,
            events: 2,
            ack: None
        }
    );
    // a: the processor has it; b: it may be on the queue or not, so it is sent again (the
    // processor's claim absorbs a second copy).
    let keys: Vec<String> = f
        .queue
        .messages()
        .iter()
        .map(|m| serde_json::from_str::<Envelope>(&m.body).unwrap().dedup_key)
        .collect();
    assert_eq!(keys, vec!["batchy##id#a", "batchy##id#b", "batchy##id#b"]);
    // a's claim, taken over, is marked ENQUEUED with its first horizon and content back.
    let a = f.claims.get("batchy##id#a").unwrap();
    assert_eq!(a.status, Status::Enqueued);
    assert_eq!(
        (a.expires_at, &a.fingerprint),
        (first.expires_at, &first.fingerprint)
    );
    assert_ne!(a.token, first.token);
    let b = f.claims.get("batchy##id#b").unwrap();
    assert_eq!(b.status, Status::Received);
    // ENQUEUED now: the next retry is a duplicate with one write and no read.
    let calls = f.claims.calls().len();
    f.clock.advance_millis(31_000);
    assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "duplicate");
    assert_eq!(f.claims.calls()[calls..], ["claim"]);
}

/// The horizon has passed for both records (DynamoDB's TTL deletes them late); a delivery
/// took the claim again and crashed before its send. The retry after its lease must send:
/// the processor's expired record is from the event's previous horizon (delivery
/// simulation, seed 89).
#[tokio::test]
async fn an_expired_processor_record_is_not_taken_as_reached() {
    let f = fixture();
    f.processed("batchy##id#a").await;
    f.clock.advance_millis(3_601_000);
    // The crashed delivery's claim: fresh horizon, lease lapsing.
    f.claims
        .claim(&f.other_claim("batchy##id#a", "x", "crashed-lambda"))
        .await
        .unwrap();
    f.clock.advance_millis(31_000);
    assert!(
        f.claims.get("processed#batchy##id#a").is_some(),
        "still stored"
    );
    assert_eq!(
        post(&f, r#"["a"]"#).await,
        Answer::Accepted {
            event_id: Some("a".into()),
            queued: 1,
            duplicates: 0,
            events: 1,
            ack: None
        }
    );
    assert_eq!(f.queue.messages().len(), 1);
}

/// A takeover that finds the processor's record marks the claim ENQUEUED for no longer than
/// that record lives: when the claim it replaced was younger than the processor's record
/// (taken after an earlier claim was given back or expired), its horizon would outlive the
/// record and answer "duplicate" for an event the processor would run again.
#[tokio::test]
async fn a_takeover_marks_the_claim_no_longer_than_the_processors_record() {
    let f = fixture();
    f.processed("batchy##id#a").await;
    let processed = f.claims.get("processed#batchy##id#a").unwrap();
    f.clock.advance_millis(3_000_000);
    f.claims
        .claim(&f.other_claim("batchy##id#a", "x", "younger-delivery"))
        .await
        .unwrap();
    let younger = f.claims.get("batchy##id#a").unwrap();
    assert!(younger.expires_at > processed.expires_at);
    f.clock.advance_millis(31_000);
    assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "duplicate");
    let marked = f.claims.get("batchy##id#a").unwrap();
    assert_eq!(marked.status, Status::Enqueued);
    assert_eq!(marked.expires_at, processed.expires_at);
    // Past the processor's record: a new event, sent.
    f.clock.advance_millis(600_000);
    assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "accepted");
    assert_eq!(f.queue.messages().len(), 1);
}

/// Out of time after a takeover found its event on the queue: the claim is not marked
/// ENQUEUED with the takeover's fresh horizon (delivery simulation, seed 4263); it stays
/// RECEIVED, and a retry asks the processor's record again.
#[tokio::test(start_paused = true)]
async fn the_deadline_path_marks_nothing_it_did_not_see_the_horizon_of() {
    let f = fixture();
    f.claims
        .claim(&f.other_claim("batchy##id#a", "x", "first-delivery"))
        .await
        .unwrap();
    f.processed("batchy##id#a").await;
    f.clock.advance_millis(31_000);
    f.queue.hang.store(true, Ordering::SeqCst);
    assert_eq!(
        post(&f, r#"["a", "b"]"#).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let a = f.claims.get("batchy##id#a").unwrap();
    assert_eq!(a.status, Status::Received);
    assert!(f.claims.get("batchy##id#b").is_none(), "b given back");
}

#[tokio::test]
async fn a_failed_read_of_the_processors_record_never_answers_200_without_a_send() {
    let f = fixture();
    assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "accepted");
    f.processed("batchy##id#a").await;
    f.claims.fail_reads.store(true, Ordering::SeqCst);
    // Within the lease: the first delivery may still be sending; 503.
    assert_eq!(
        post(&f, r#"["a"]"#).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(f.queue.messages().len(), 1);
    // Past it: sent again (the processor absorbs the copy), never a 200 on a guess.
    f.clock.advance_millis(31_000);
    assert_eq!(post(&f, r#"["a"]"#).await.outcome(), "accepted");
    assert_eq!(f.queue.messages().len(), 2);
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

/// A fixture whose receiver claim-checks through `payloads` and archives to `archive`.
fn with_objects(payloads: &Arc<MemoryObjects>, archive: Option<&Arc<MemoryObjects>>) -> Fixture {
    let mut f = fixture();
    f.receiver = f.receiver.with_objects(
        Some(payloads.clone() as Arc<dyn ObjectStore>),
        archive.map(|a| a.clone() as Arc<dyn ObjectStore>),
    );
    f
}

#[tokio::test]
async fn an_envelope_over_the_queue_limit_waits_in_the_payload_bucket_and_travels_as_a_reference() {
    let payloads = Arc::new(MemoryObjects::default());
    let f = with_objects(&payloads, None);
    let big = format!(r#"["a",{{"key":"b","data":"{}"}}]"#, "x".repeat(1500));
    assert!(matches!(
        post(&f, &big).await,
        Answer::Accepted { queued: 2, .. }
    ));
    let messages = f.queue.messages();
    assert_eq!(messages.len(), 2);
    assert!(messages.iter().all(|m| m.sqs_size() <= 1024));
    // The small event travels whole; the large one as a reference to its object.
    let sent: Vec<Envelope> = messages
        .iter()
        .map(|m| serde_json::from_str(&m.body).unwrap())
        .collect();
    assert!(sent[0].payload_ref.is_none() && sent[0].payload.is_some());
    let reference = sent[1].payload_ref.clone().expect("a reference");
    assert!(sent[1].payload.is_none());
    let stored = payloads.objects();
    assert_eq!(stored.keys().collect::<Vec<_>>(), vec![&reference.key]);
    assert!(reference.key.starts_with("batchy/"));
    let whole = objects::resolve(Some(payloads.as_ref()), sent[1].clone())
        .await
        .unwrap();
    assert_eq!(
        whole.payload,
        Some(serde_json::json!({"key": "b", "data": "x".repeat(1500)}).into())
    );
    assert_eq!(whole.dedup_key, sent[1].dedup_key);

    // A retry is a duplicate: no second object, no second message.
    f.processed("batchy##id#a").await;
    f.processed(&sent[1].dedup_key).await;
    assert!(matches!(
        post(&f, &big).await,
        Answer::Accepted {
            queued: 0,
            duplicates: 2,
            ..
        }
    ));
    assert_eq!(payloads.puts(), 1);
    assert_eq!(f.queue.messages().len(), 2);
}

#[tokio::test]
async fn a_failed_payload_write_answers_503_sends_nothing_and_gives_the_claims_back() {
    let payloads = Arc::new(MemoryObjects::default());
    let f = with_objects(&payloads, None);
    let big = format!(r#"["a",{{"key":"b","data":"{}"}}]"#, "x".repeat(1500));
    payloads.fail(true);
    assert_eq!(
        post(&f, &big).await,
        Answer::Unavailable {
            retry_after_secs: 1
        }
    );
    assert!(
        f.queue.messages().is_empty(),
        "nothing sent, not even the small event"
    );
    assert!(f.claims.is_empty(), "both claims given back");
    payloads.fail(false);
    assert!(matches!(
        post(&f, &big).await,
        Answer::Accepted { queued: 2, .. }
    ));
    assert_eq!(payloads.objects().len(), 1);
}

#[tokio::test]
async fn a_reference_too_large_for_the_queue_is_still_refused() {
    let payloads = Arc::new(MemoryObjects::default());
    let f = with_objects(&payloads, None);
    // The event id itself (which the reference carries) is over the limit.
    let huge_id = format!(r#"["{}"]"#, "k".repeat(1100));
    assert_eq!(post(&f, &huge_id).await, Answer::PayloadTooLarge);
    assert!(f.claims.is_empty() && payloads.puts() == 0);
}

#[tokio::test]
async fn every_accepted_request_is_archived_with_its_body_and_never_its_credentials() {
    let payloads = Arc::new(MemoryObjects::default());
    let archive = Arc::new(MemoryObjects::default());
    let f = with_objects(&payloads, Some(&archive));
    assert!(matches!(
        post(&f, r#"["a","t1/b"]"#).await,
        Answer::Accepted { queued: 2, .. }
    ));
    // Refused requests and handshakes are not archived.
    assert_eq!(post_as(&f, "wrong", r#"["c"]"#).await, Answer::Unauthorized);
    assert!(matches!(
        post(&f, r#""handshake""#).await,
        Answer::Reply { .. }
    ));
    let stored = archive.objects();
    assert_eq!(stored.len(), 1, "{:?}", stored.keys());
    let (key, object) = stored.into_iter().next().unwrap();
    assert!(key.starts_with("batchy/2023-11-14/"), "{key}");
    assert_eq!(
        objects::archive_key_time(&key),
        Some(f.clock.now()),
        "the key says when"
    );
    let text = String::from_utf8(object.clone()).unwrap();
    assert!(
        !text.contains("tok"),
        "no credential in the archive: {text}"
    );
    let record: objects::ArchiveRecord = serde_json::from_slice(&object).unwrap();
    assert_eq!(record.body().unwrap(), br#"["a","t1/b"]"#);
    assert_eq!(record.events.len(), 2);
    assert_eq!(record.events[1].tenant.as_deref(), Some("t1"));
    assert_eq!(
        record.events[1].payload,
        Some(Value::String("t1/b".into()).into())
    );
}

#[tokio::test]
async fn a_request_the_archive_did_not_take_is_answered_503_and_its_retry_archives_it() {
    let payloads = Arc::new(MemoryObjects::default());
    let archive = Arc::new(MemoryObjects::default());
    let f = with_objects(&payloads, Some(&archive));
    archive.fail(true);
    assert_eq!(
        post(&f, r#"["a"]"#).await,
        Answer::Unavailable {
            retry_after_secs: 1
        }
    );
    // The event did reach the queue. Its claim stays RECEIVED: a retry asks the processor's
    // record, in flight (503) until the processor has the event, a duplicate after.
    assert_eq!(f.queue.messages().len(), 1);
    assert_eq!(
        f.claims.get("batchy##id#a").map(|r| r.status),
        Some(Status::Received)
    );
    archive.fail(false);
    assert_eq!(
        post(&f, r#"["a"]"#).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    f.processed("batchy##id#a").await;
    assert!(matches!(
        post(&f, r#"["a"]"#).await,
        Answer::Accepted {
            queued: 0,
            duplicates: 1,
            ..
        }
    ));
    assert_eq!(f.queue.messages().len(), 1);
    // Each request under a key of its own (the retries were in the same millisecond, with the
    // same body): the 503'd one and the duplicate. Replay queues the event once.
    assert_eq!(archive.objects().len(), 2, "archived by the retries");
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

#[tokio::test]
async fn with_a_tenant_map_a_credential_only_opens_its_own_tenant() {
    let map = SecretList::from_config(r#"{"site-a":"tok-a","site-b":["tok-b-old","tok-b"]}"#)
        .unwrap()
        .unwrap();
    let f = fixture_with(map, settings());
    // Another tenant's event, an event naming none, a batch with one foreign event: 401,
    // nothing claimed or queued.
    for body in [
        r#"["site-b/e1"]"#,
        r#"["e1"]"#,
        r#"["site-a/e1","site-b/e2"]"#,
    ] {
        assert_eq!(
            post_as(&f, "tok-a", body).await,
            Answer::Refused(Refusal::Unauthorized(AuthFailure::TenantRefused)),
            "{body}"
        );
    }
    assert_eq!(
        post_as(&f, "tok-a", r#""handshake/site-b""#).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_as(&f, "tok-a", r#""handshake""#).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(f.claims.is_empty() && f.queue.messages().is_empty());
    assert_eq!(
        post_as(&f, "tok-a", r#""handshake/site-a""#).await.status(),
        StatusCode::OK
    );
    // Each tenant's own event, with the same id, is two events, each queued once.
    assert_eq!(
        post_as(&f, "tok-a", r#"["site-a/e1"]"#).await.outcome(),
        "accepted"
    );
    assert_eq!(
        post_as(&f, "tok-b", r#"["site-b/e1"]"#).await.outcome(),
        "accepted"
    );
    f.processed("batchy#site-b#id#e1").await;
    assert_eq!(
        post_as(&f, "tok-b-old", r#"["site-b/e1"]"#).await.outcome(),
        "duplicate"
    );
    assert_eq!(f.queue.messages().len(), 2);
    assert!(f.claims.get("batchy#site-a#id#e1").is_some());
    assert!(f.claims.get("batchy#site-b#id#e1").is_some());
}

#[tokio::test]
async fn a_plain_list_is_one_trust_domain_but_keys_are_still_scoped_by_tenant() {
    let f = fixture();
    assert_eq!(post(&f, r#"["site-a/e1"]"#).await.outcome(), "accepted");
    // Site B's event with the same id is not answered "duplicate".
    assert_eq!(post(&f, r#"["site-b/e1"]"#).await.outcome(), "accepted");
    assert_eq!(f.queue.messages().len(), 2);
}

#[tokio::test]
async fn more_events_than_the_cap_are_refused_with_413_before_any_claim() {
    let f = fixture();
    let keys: Vec<String> = (0..21).map(|i| format!("k{i}")).collect();
    let body = serde_json::to_string(&keys).unwrap();
    assert_eq!(
        post(&f, &body).await,
        Answer::Refused(Refusal::TooManyEvents(20))
    );
    assert_eq!(
        post(&f, &body).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert!(f.claims.is_empty() && f.queue.messages().is_empty());
    let twenty = serde_json::to_string(&keys[..20]).unwrap();
    assert_eq!(post(&f, &twenty).await.outcome(), "accepted");
}

#[tokio::test]
async fn events_whose_payloads_add_up_past_the_cap_are_refused_with_413_before_any_claim() {
    let f = fixture_with(
        SecretList::parse("tok").unwrap(),
        Settings {
            max_request_payload_bytes: 1000,
            ..settings()
        },
    );
    let event = |i: usize| format!(r#"{{"key":"k{i}","pad":"{}"}}"#, "x".repeat(300));
    let four = format!("[{}]", (0..4).map(event).collect::<Vec<_>>().join(","));
    let answer = post(&f, &four).await;
    assert_eq!(answer, Answer::Refused(Refusal::TooLarge(1000)));
    assert_eq!(answer.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(f.claims.is_empty() && f.queue.messages().is_empty());
    let two = format!("[{}]", (0..2).map(event).collect::<Vec<_>>().join(","));
    assert_eq!(post(&f, &two).await.outcome(), "accepted");
}

#[tokio::test(start_paused = true)]
async fn claims_run_a_bounded_number_at_a_time() {
    let f = fixture();
    f.claims.claim_delay_ms.store(10, Ordering::SeqCst);
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let answer = post(&f, &serde_json::to_string(&keys).unwrap()).await;
    assert_eq!(answer.outcome(), "accepted");
    assert_eq!(f.claims.max_in_flight.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn a_hung_queue_gets_503_within_the_deadline_and_the_claims_are_given_back() {
    let f = fixture();
    f.queue.hang.store(true, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let answer = post(&f, r#"["a","b"]"#).await;
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() <= settings().deadline,
        "{:?}",
        started.elapsed()
    );
    assert!(f.claims.is_empty(), "claims released for the retry");
    f.queue.hang.store(false, Ordering::SeqCst);
    assert_eq!(post(&f, r#"["a","b"]"#).await.outcome(), "accepted");
    assert_eq!(f.queue.messages().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_hung_store_gets_503_within_the_deadline() {
    let f = fixture();
    f.claims.claim_delay_ms.store(60_000, Ordering::SeqCst);
    let started = tokio::time::Instant::now();
    let answer = post(&f, r#"["a"]"#).await;
    assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(started.elapsed() <= settings().deadline);
    assert!(f.queue.messages().is_empty());
}

mod metrics {
    //! What each request leaves in the metrics: counted per event or per request, under the
    //! provider's name, each 503 with its reason.
    use super::*;
    use crate::metrics::testing::Seen;
    use crate::metrics::*;

    const P: [(&str, &str); 1] = [(PROVIDER, "batchy")];

    fn count_unavailable(seen: &Seen, reason: &str) -> f64 {
        seen.count(UNAVAILABLE, &[(PROVIDER, "batchy"), (REASON, reason)])
    }

    #[test]
    fn accepted_and_duplicates_are_counted_per_event_with_each_claims_latency() {
        let f = fixture();
        let seen = Seen::default();
        seen.during_async(async {
            assert_eq!(post(&f, r#"["a","b"]"#).await.outcome(), "accepted");
            f.processed("batchy##id#a").await;
            // One new, one queued before, one repeated within the request.
            assert_eq!(post(&f, r#"["a","c","c"]"#).await.outcome(), "accepted");
        });
        assert_eq!(seen.count(ACCEPTED, &P), 3.0);
        assert_eq!(seen.count(DUPLICATE, &P), 2.0);
        assert_eq!(
            seen.values(CLAIM_LATENCY, &P).len(),
            4,
            "one per claim write"
        );
        assert_eq!(seen.values(SEND_LATENCY, &P).len(), 2, "one per request");
        assert_eq!(
            seen.names(),
            vec![ACCEPTED, CLAIM_LATENCY, DUPLICATE, SEND_LATENCY]
        );
    }

    #[test]
    fn refusals_and_handshakes_are_counted_per_request() {
        let f = fixture();
        let seen = Seen::default();
        seen.during_async(async {
            post(&f, r#""handshake""#).await;
            post_as(&f, "wrong", r#"["a"]"#).await;
            post(&f, "not json").await;
            post(&f, &serde_json::to_string(&vec!["k"; 21]).unwrap()).await;
            f.receiver
                .answer_parts(&Method::GET, &HeaderMap::new(), "/", None, b"")
                .await;
        });
        assert_eq!(seen.count(HANDSHAKE, &P), 1.0);
        assert_eq!(seen.count(UNAUTHORIZED, &P), 1.0);
        assert_eq!(seen.count(BAD_REQUEST, &P), 3.0);
        assert_eq!(
            seen.names(),
            vec![BAD_REQUEST, HANDSHAKE, UNAUTHORIZED],
            "nothing claimed"
        );
    }

    #[test]
    fn a_failing_store_is_unavailable_for_claim() {
        let f = fixture();
        f.claims.fail.store(true, Ordering::SeqCst);
        let seen = Seen::default();
        seen.during_async(post(&f, r#"["a","b"]"#));
        assert_eq!(count_unavailable(&seen, "claim"), 1.0);
        assert_eq!(seen.count(ACCEPTED, &P), 0.0);
    }

    #[test]
    fn a_partly_failed_send_is_unavailable_for_send_and_counts_what_it_queued() {
        let f = fixture();
        f.queue.fail_position.store(2, Ordering::SeqCst);
        let seen = Seen::default();
        seen.during_async(post(&f, r#"["a","b","c"]"#));
        assert_eq!(count_unavailable(&seen, "send"), 1.0);
        assert_eq!(seen.count(ACCEPTED, &P), 2.0, "a and c are on the queue");
        assert_eq!(seen.count(DUPLICATE, &P), 0.0);
    }

    #[test]
    fn a_live_lease_is_a_conflict_and_unavailable_in_flight() {
        let f = fixture();
        f.claims.claim_delay_ms.store(0, Ordering::SeqCst);
        let seen = Seen::default();
        seen.during_async(async {
            f.claims
                .claim(&f.other_claim("batchy##id#a", "x", "other-lambda"))
                .await
                .unwrap();
            post(&f, r#"["a","b"]"#).await
        });
        assert_eq!(count_unavailable(&seen, "in_flight"), 1.0);
        assert_eq!(seen.count(CONFLICT, &P), 1.0);
        assert_eq!(seen.count(ACCEPTED, &P), 1.0, "b is queued");
    }

    #[test]
    fn other_content_under_a_queued_key_is_a_duplicate_and_a_conflict() {
        let f = fixture();
        let seen = Seen::default();
        let answer = seen.during_async(async {
            let claim = f.other_claim("batchy##id#a", "other content", "earlier");
            f.claims.claim(&claim).await.unwrap();
            let queued = Finish::Enqueued {
                message_id: Some("m".into()),
                first: None,
            };
            f.claims
                .finish(&claim.pk, "earlier", &queued, f.clock.now())
                .await
                .unwrap();
            post(&f, r#"["a"]"#).await
        });
        assert_eq!(answer.outcome(), "duplicate");
        assert_eq!(seen.count(DUPLICATE, &P), 1.0);
        assert_eq!(seen.count(CONFLICT, &P), 1.0);
    }

    #[test]
    fn a_hung_queue_is_unavailable_for_the_deadline() {
        let f = fixture();
        f.queue.hang.store(true, Ordering::SeqCst);
        let seen = Seen::default();
        let answer = seen.during_async(post(&f, r#"["a"]"#));
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(count_unavailable(&seen, "deadline"), 1.0);
        assert_eq!(seen.values(CLAIM_LATENCY, &P).len(), 1);
        assert!(
            seen.values(SEND_LATENCY, &P).is_empty(),
            "the send never answered"
        );
    }

    #[test]
    fn failed_payload_and_archive_writes_are_unavailable_for_their_own_reasons() {
        let (payloads, archive) = (
            Arc::new(MemoryObjects::default()),
            Arc::new(MemoryObjects::default()),
        );
        let f = with_objects(&payloads, Some(&archive));
        let big = format!(r#"[{{"key":"b","data":"{}"}}]"#, "x".repeat(1500));
        payloads.fail(true);
        let seen = Seen::default();
        seen.during_async(post(&f, &big));
        assert_eq!(count_unavailable(&seen, "payload"), 1.0);
        assert_eq!(seen.count(ACCEPTED, &P), 0.0, "nothing sent");
        payloads.fail(false);
        archive.fail(true);
        let seen = Seen::default();
        seen.during_async(post(&f, r#"["a"]"#));
        assert_eq!(count_unavailable(&seen, "archive"), 1.0);
        assert_eq!(seen.count(ACCEPTED, &P), 1.0, "a is on the queue");
    }

    #[test]
    fn a_misconfigured_receiver_is_unavailable_for_config_under_its_name() {
        let r: Receiver<Batchy> = Receiver::misconfigured("TOKEN is not set").named("batchy");
        let seen = Seen::default();
        seen.during_async(r.answer_parts(&Method::POST, &HeaderMap::new(), "/", None, b"[]"));
        assert_eq!(count_unavailable(&seen, "config"), 1.0);
    }
}

#[tokio::test]
async fn the_size_check_counts_the_attributes_too() {
    // A message whose body alone fits but whose body and attributes do not: 413.
    let f = fixture();
    let probe = post(&f, r#"["x"]"#).await;
    assert_eq!(probe.outcome(), "accepted");
    let m = &f.queue.messages()[0];
    let overhead = m.sqs_size() - m.body.len();
    let body_len_for_key = |k: usize| m.body.len() + 2 * (k - 1); // the key appears twice
    let k = (1..600)
        .find(|&k| body_len_for_key(k) + overhead > 1024)
        .unwrap();
    assert!(body_len_for_key(k) <= 1024, "the body alone still fits");
    let key = "y".repeat(k);
    assert_eq!(
        post(&f, &format!(r#"["{key}"]"#)).await,
        Answer::PayloadTooLarge
    );
    assert_eq!(f.queue.messages().len(), 1);
}

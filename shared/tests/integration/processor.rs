//! The processor against moto: batches from the real receiver, redelivery, poison records, DLQ.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_lambda_events::event::sqs::SqsMessage;
use serde_json::json;
use shared::apigw::Sent;
use shared::consumer::{EventHandler, HandlerError, Router};
use shared::providers::trybe::{self, Trybe};
use shared::secret::Secret;
use shared::Envelope;

use crate::helpers::*;

const SECRET: &str = "trybe-dev-secret-0001";

/// A handler that counts its runs and fails the event ids listed in `fail`.
#[derive(Default)]
pub struct Counting {
    pub calls: AtomicUsize,
    pub seen: Mutex<Vec<String>>,
    pub fail: Mutex<Vec<String>>,
}

impl Counting {
    pub fn runs(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl EventHandler for Counting {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push(event.event_id.clone());
        if self.fail.lock().unwrap().contains(&event.event_id) {
            return Err(HandlerError::Retry("downstream unavailable".into()));
        }
        Ok(())
    }
}

pub async fn queue_events(stack: &Stack, n: usize) -> Vec<String> {
    let r = stack
        .receiver(&[(trybe::SECRET_VAR, SECRET)], Trybe::from_env)
        .await;
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("evt-{i}-{}", uuid::Uuid::new_v4().simple());
        let body =
            json!({"id": id, "event": "customer.created", "site_id": "s1", "data": {"id": "c1"}})
                .to_string();
        let sent = Sent::post("/trybe", body.clone()).header(
            "Signature",
            trybe::sign(&Secret::new(SECRET).unwrap(), body.as_bytes()),
        );
        assert_eq!(send(&r, &sent).await.status(), 200);
        ids.push(id);
    }
    ids
}

fn poison() -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some("poison-1".into());
    m.body = Some("{not an envelope".into());
    m
}

#[tokio::test]
async fn batch_is_processed_and_recorded_once() {
    let stack = Stack::new().await;
    let ids = queue_events(&stack, 3).await;
    let records = stack.drain().await;
    assert_eq!(records.len(), 3);
    let counting = Arc::new(Counting::default());
    let processor = stack.processor(Router::new(counting.clone()));

    let response = processor.process(sqs_event(records.clone())).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(counting.calls.load(Ordering::SeqCst), 3);
    let mut first_times = Vec::new();
    for id in &ids {
        let item = stack
            .item(&format!("processed#{}", key("trybe", Some("s1"), id)))
            .await
            .expect("processed record");
        assert_eq!(s(&item, "status"), "PROCESSED");
        first_times.push(s(&item, "processed_at"));
    }

    // SQS delivers at least once: the same batch again runs no handler and keeps processed_at.
    let again = processor.process(sqs_event(records)).await;
    assert!(again.batch_item_failures.is_empty());
    assert_eq!(counting.calls.load(Ordering::SeqCst), 3);
    for (id, first) in ids.iter().zip(first_times) {
        assert_eq!(
            s(
                &stack
                    .item(&format!("processed#{}", key("trybe", Some("s1"), id)))
                    .await
                    .unwrap(),
                "processed_at"
            ),
            first
        );
    }
}

#[tokio::test]
async fn a_poison_record_goes_to_the_dlq_alone_and_the_batch_is_acknowledged() {
    let stack = Stack::new().await;
    queue_events(&stack, 2).await;
    let mut records = stack.drain().await;
    records.insert(1, poison());
    let processor = stack.processor(Router::default().provider(
        trybe::NAME,
        Arc::new(event_processor::handlers::trybe::TrybeHandler),
    ));
    let response = processor.process(sqs_event(records)).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    let dead = stack.drain_dlq().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body.as_deref(), Some("{not an envelope"));
}

#[tokio::test]
async fn a_failed_handler_is_reported_and_runs_again_on_redelivery() {
    let stack = Stack::new().await;
    let ids = queue_events(&stack, 2).await;
    let records = stack.drain().await;
    let counting = Arc::new(Counting::default());
    counting.fail.lock().unwrap().push(ids[1].clone());
    let processor = stack.processor(Router::new(counting.clone()));
    let response = processor.process(sqs_event(records.clone())).await;
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    let failed_record = records
        .iter()
        .find(|r| envelope(r)["event_id"] == ids[1].as_str())
        .unwrap();
    assert_eq!(failed, vec![failed_record.message_id.clone().unwrap()]);
    assert!(
        stack
            .item(&format!("processed#{}", key("trybe", Some("s1"), &ids[1])))
            .await
            .is_none(),
        "claim released for the retry"
    );

    counting.fail.lock().unwrap().clear();
    let retry = processor
        .process(sqs_event(vec![failed_record.clone()]))
        .await;
    assert!(retry.batch_item_failures.is_empty());
    assert_eq!(
        counting
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|id| **id == ids[1])
            .count(),
        2
    );
    assert_eq!(
        counting
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|id| **id == ids[0])
            .count(),
        1
    );
}

#[tokio::test]
async fn a_poison_message_ends_in_the_dead_letter_queue_at_its_first_receive() {
    let stack = Stack::new().await;
    let ids = queue_events(&stack, 1).await;
    stack
        .sqs
        .send_message()
        .queue_url(&stack.queue_url)
        .message_body("{not an envelope")
        .send()
        .await
        .unwrap();
    let processor = stack.processor(Router::default());
    // What the event source mapping does: receive, invoke, delete what did not fail; each
    // message received once (the queue's redrive policy would need 5 receives).
    let mut taken = 0;
    for _ in 0..20 {
        taken += stack.feed(&processor).await;
        if taken >= 2 {
            break;
        }
    }
    assert_eq!(taken, 2, "each message received once");
    assert!(stack.drain().await.is_empty(), "main queue empty");
    let dead = stack.drain_dlq().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body.as_deref(), Some("{not an envelope"));
    // What moto stored: the body and the reason.
    assert_eq!(
        dead[0].message_attributes[shared::queue::REJECTED]
            .string_value
            .as_deref(),
        Some("unparseable envelope: syntax error at line 1, column 2")
    );
    let item = stack
        .item(&format!("processed#{}", key("trybe", Some("s1"), &ids[0])))
        .await
        .expect("the good event was processed beside it");
    assert_eq!(s(&item, "status"), "PROCESSED");
}

/// One receive as the event source mapping makes it, each message received hidden for
/// `visibility` seconds.
async fn receive(stack: &Stack, visibility: i32) -> Vec<SqsMessage> {
    let got = stack
        .sqs
        .receive_message()
        .queue_url(&stack.queue_url)
        .max_number_of_messages(10)
        .visibility_timeout(visibility)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .send()
        .await
        .expect("receive");
    got.messages
        .unwrap_or_default()
        .iter()
        .map(sqs_record)
        .collect()
}

/// The message `id`, received (hidden 2 s) once it is visible, polling until `deadline`.
async fn receive_by_id(
    stack: &Stack,
    id: &str,
    deadline: std::time::Instant,
) -> Option<SqsMessage> {
    loop {
        if let Some(m) = receive(stack, 2)
            .await
            .into_iter()
            .find(|m| m.message_id.as_deref() == Some(id))
        {
            return Some(m);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

fn receive_count(record: &SqsMessage) -> u32 {
    record.attributes[shared::queue::RECEIVE_COUNT]
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_failed_record_is_hidden_on_the_queue_for_its_wait_and_then_comes_back() {
    use shared::queue::{Backoff, SqsVisibility, RECEIVE_COUNT};
    use std::time::{Duration, Instant};
    let stack = Stack::new().await;
    let ids = queue_events(&stack, 1).await;
    let counting = Arc::new(Counting::default());
    counting.fail.lock().unwrap().push(ids[0].clone());
    // In flight for 2 s, as the event source mapping would hold it for the queue's 360.
    let received_at = Instant::now();
    let failing = receive(&stack, 2).await.pop().expect("the event's message");
    let id = failing.message_id.clone().unwrap();
    assert_eq!(receive_count(&failing), 1);

    // The deployed processor (processor_from_env), as at the record's tenth receive: its wait
    // is an hour, and SQS keeps it hidden past the 2 s it was received for.
    let mut tenth = failing.clone();
    tenth.attributes.insert(RECEIVE_COUNT.into(), "10".into());
    let processor = stack.processor(Router::new(counting.clone()));
    let response = processor.process(sqs_event(vec![tenth])).await;
    assert_eq!(response.batch_item_failures.len(), 1);
    let hidden_until = received_at + Duration::from_secs(5);
    assert!(
        receive_by_id(&stack, &id, hidden_until).await.is_none(),
        "visible again after the 2 s it was received for: its wait was not set"
    );

    // A wait of a second, set with the same receipt handle: it replaces the hour, and the
    // message comes back, received a second time.
    let short = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(1),
        jitter: 0.0,
    };
    let processor = stack.processor(Router::new(counting.clone())).with_backoff(
        Arc::new(SqsVisibility::new(stack.sqs.clone(), &stack.queue_url)),
        short,
    );
    let response = processor.process(sqs_event(vec![failing.clone()])).await;
    assert_eq!(response.batch_item_failures.len(), 1);
    let back = receive_by_id(&stack, &id, Instant::now() + Duration::from_secs(30))
        .await
        .expect("the failed record is visible again after its wait");
    assert_eq!(receive_count(&back), 2);
    assert_eq!(counting.runs(), 2);
}

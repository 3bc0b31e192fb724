//! A fault at every call of the processor — its claim (PutItem on `processed#…`), the handler,
//! its finish (UpdateItem to PROCESSED) and its release (DeleteItem after a failed handler) — as
//! an error, a throttle and a hang between the real SDK and moto. Each test states what the batch
//! response reports, the processing claim, how often the handler ran, and what SQS's redelivery
//! then does. These are the windows the README's handler contract names.

use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsMessage;
use shared::clock::FixedClock;
use shared::config::Settings;
use shared::consumer::{Processor, Router};
use shared::store::DynamoClaims;

use crate::faults::{Fault, Proxy};
use crate::helpers::*;
use crate::processor::{queue_events, Counting};

/// Past the processing lease (300 s by default).
const PAST_PROCESSING_LEASE_MS: i64 = 301_000;

struct Rig {
    stack: Stack,
    proxy: Proxy,
    clock: Arc<FixedClock>,
    counting: Arc<Counting>,
    processor: Processor,
    record: SqsMessage,
}

async fn rig() -> Rig {
    let stack = Stack::new().await;
    queue_events(&stack, 1).await;
    let mut records = stack.drain().await;
    assert_eq!(records.len(), 1);
    let (proxy, endpoint) = Proxy::start(moto_endpoint()).await;
    let sdk = sdk_at(&endpoint).await;
    let clock = Arc::new(FixedClock::at_millis(
        (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64,
    ));
    let counting = Arc::new(Counting::default());
    let processor = Processor::new(
        Arc::new(DynamoClaims::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            &stack.table,
        )),
        Router::new(counting.clone()),
        Settings::from_env(&stack.env(&[])).unwrap(),
        clock.clone(),
        shared::trust::Trust::local(Arc::new(shared::queue::MemoryDeadLetters::default())),
    );
    Rig {
        stack,
        proxy,
        clock,
        counting,
        processor,
        record: records.remove(0),
    }
}

impl Rig {
    /// One delivery of the record: whether the batch response reported it failed.
    async fn deliver(&self) -> bool {
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            self.processor.process(sqs_event(vec![self.record.clone()])),
        )
        .await
        .expect("the processor answers (the SDK's timeouts end a hang)");
        !response.batch_item_failures.is_empty()
    }

    async fn claim_status(&self) -> Option<String> {
        let dedup = envelope(&self.record)["dedup_key"]
            .as_str()
            .unwrap()
            .to_owned();
        self.stack
            .item(&format!("processed#{dedup}"))
            .await
            .map(|item| s(&item, "status"))
    }
}

fn faults() -> [(&'static str, Fault); 3] {
    [
        ("error", Fault::INTERNAL),
        ("throttle", Fault::DYNAMO_THROTTLE),
        ("hang", Fault::Hang),
    ]
}

#[tokio::test]
async fn a_failed_processing_claim_is_reported_without_running_the_handler() {
    for (kind, fault) in faults() {
        let rig = rig().await;
        rig.proxy.inject("PutItem", fault);
        assert!(
            rig.deliver().await,
            "{kind}: reported, SQS delivers it again"
        );
        assert_eq!(rig.counting.runs(), 0, "{kind}");
        assert_eq!(rig.claim_status().await, None, "{kind}");
        rig.proxy.clear();
        assert!(!rig.deliver().await, "{kind}");
        assert_eq!(rig.counting.runs(), 1, "{kind}");
        assert_eq!(rig.claim_status().await.as_deref(), Some("PROCESSED"));
    }
}

#[tokio::test]
async fn a_failed_handler_is_reported_its_claim_released_and_the_redelivery_runs_it_again() {
    let rig = rig().await;
    let id = envelope(&rig.record)["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    rig.counting.fail.lock().unwrap().push(id);
    assert!(rig.deliver().await);
    assert_eq!(
        rig.claim_status().await,
        None,
        "released for the redelivery"
    );
    rig.counting.fail.lock().unwrap().clear();
    assert!(!rig.deliver().await);
    assert_eq!(rig.counting.runs(), 2);
    assert_eq!(rig.claim_status().await.as_deref(), Some("PROCESSED"));
    assert!(!rig.deliver().await, "a later copy is acknowledged");
    assert_eq!(rig.counting.runs(), 2);
}

#[tokio::test]
async fn a_failed_finish_is_acknowledged_and_only_a_redelivery_after_the_lease_runs_it_twice() {
    for (kind, fault) in faults() {
        let rig = rig().await;
        rig.proxy.inject("UpdateItem", fault);
        assert!(
            !rig.deliver().await,
            "{kind}: the handler's work is done, not reported"
        );
        assert_eq!(rig.counting.runs(), 1, "{kind}");
        assert_eq!(
            rig.claim_status().await.as_deref(),
            Some("PROCESSING"),
            "{kind}"
        );
        rig.proxy.clear();
        // A copy within the processing lease: reported (in flight), the handler does not run.
        assert!(rig.deliver().await, "{kind}");
        assert_eq!(rig.counting.runs(), 1, "{kind}");
        // A copy after the lease: the claim is taken over and the handler runs a second time
        // (the at-most-twice window of the handler contract).
        rig.clock.advance_millis(PAST_PROCESSING_LEASE_MS);
        assert!(!rig.deliver().await, "{kind}");
        assert_eq!(rig.counting.runs(), 2, "{kind}");
        assert_eq!(rig.claim_status().await.as_deref(), Some("PROCESSED"));
    }
}

#[tokio::test]
async fn a_failed_release_keeps_the_event_until_the_lease_ends_then_it_runs_again() {
    for (kind, fault) in faults() {
        let rig = rig().await;
        let id = envelope(&rig.record)["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
        rig.counting.fail.lock().unwrap().push(id);
        rig.proxy.inject("DeleteItem", fault);
        assert!(rig.deliver().await, "{kind}");
        assert_eq!(
            rig.claim_status().await.as_deref(),
            Some("PROCESSING"),
            "{kind}"
        );
        rig.proxy.clear();
        rig.counting.fail.lock().unwrap().clear();
        assert!(
            rig.deliver().await,
            "{kind}: in flight until the lease ends"
        );
        assert_eq!(rig.counting.runs(), 1, "{kind}");
        rig.clock.advance_millis(PAST_PROCESSING_LEASE_MS);
        assert!(!rig.deliver().await, "{kind}");
        assert_eq!(rig.counting.runs(), 2, "{kind}");
    }
}

//! Races between independent processes, each with its own AWS clients, against moto: the function
//! binaries run under the emulated Runtime API (`lambda_host`), every process polling it, so the
//! same delivery reaches several at once. Whatever the interleaving: one message per event, one
//! handler run per event.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};
use shared::apigw::Sent;
use shared::providers::{tilby, trybe};
use shared::secret::Secret;

use crate::helpers::*;
use crate::lambda_host::{Function, RuntimeApi};

const PROCESSES: usize = 4;
const ANSWER: Duration = Duration::from_secs(60);

fn base_env(stack: &Stack) -> Vec<(&str, &str)> {
    vec![
        ("AWS_ENDPOINT_URL", moto_endpoint()),
        ("EVENTS_TABLE", stack.table.as_str()),
        ("EVENTS_QUEUE_URL", stack.queue_url.as_str()),
    ]
}

async fn answers(api: &RuntimeApi, ids: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for id in ids {
        out.push(api.answer(id, ANSWER).await.expect("answered"));
    }
    out
}

/// The HTTP statuses of the receivers' answers to `ids`: each 200 (accepted or duplicate) or 503
/// (the first delivery was in flight), nothing else.
async fn statuses(api: &RuntimeApi, ids: &[String]) -> Vec<u64> {
    let statuses: Vec<u64> = answers(api, ids)
        .await
        .iter()
        .map(|a| a["statusCode"].as_u64().unwrap())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    statuses
}

#[tokio::test]
async fn one_event_delivered_to_four_receiver_processes_at_once_is_queued_once() {
    let stack = Stack::new().await;
    let mut env = base_env(&stack);
    env.push(("TRYBE_SIGNING_SECRET", "trybe-race-secret-01"));
    let api = RuntimeApi::start().await;
    let _processes: Vec<Function> = (0..PROCESSES)
        .map(|_| Function::start("trybe-webhook", &api, &env))
        .collect();
    for round in 0..5 {
        let body = json!({"id": format!("race-{round}-{}", uuid::Uuid::new_v4().simple()),
            "event": "booking.created", "site_id": "s"})
        .to_string();
        let event = Sent::post("/trybe", body.clone())
            .header(
                "Signature",
                trybe::sign(
                    &Secret::new("trybe-race-secret-01").unwrap(),
                    body.as_bytes(),
                ),
            )
            .to_event_json();
        let ids: Vec<String> = (0..PROCESSES).map(|_| api.invoke(event.clone())).collect();
        let statuses = statuses(&api, &ids).await;
        assert!(statuses.contains(&200), "{statuses:?}");
        assert_eq!(stack.drain().await.len(), 1, "round {round}: {statuses:?}");
    }
}

#[tokio::test]
async fn overlapping_tilby_imports_queue_each_entity_once() {
    let stack = Stack::new().await;
    let mut env = base_env(&stack);
    env.push((tilby::URL_TOKEN_VAR, "tilby-race-token-0001"));
    let api = RuntimeApi::start().await;
    let _processes: Vec<Function> = (0..PROCESSES)
        .map(|_| Function::start("tilby-webhook", &api, &env))
        .collect();
    // Four imports of one notification, each retry carrying an overlapping window of entities.
    let events: Vec<Value> = (0..PROCESSES)
        .map(|i| {
            let entities: Vec<Value> = (i * 20..i * 20 + 40)
                .map(|e| json!({"uuid": format!("customer-{e}")}))
                .collect();
            Sent::post(
                "/tilby/tilby-race-token-0001",
                json!({"type": "CREATED", "entity_name": "customers", "notification_uuid": "n-race",
                    "environment_id": "shop", "entities": entities, "nRetry": i})
                .to_string(),
            )
            .to_event_json()
        })
        .collect();
    let ids: Vec<String> = events.iter().map(|e| api.invoke(e.clone())).collect();
    let statuses = statuses(&api, &ids).await;
    let queued: Vec<String> = stack
        .drain()
        .await
        .iter()
        .map(|m| envelope(m)["event_id"].as_str().unwrap().to_owned())
        .collect();
    let unique: HashSet<&String> = queued.iter().collect();
    assert_eq!(unique.len(), queued.len(), "no entity queued twice");
    // Every entity of every request that got 200 is on the queue.
    for (i, status) in statuses.iter().enumerate() {
        if *status == 200 {
            for e in i * 20..i * 20 + 40 {
                assert!(
                    unique.contains(&format!("n-race:customer-{e}")),
                    "entity {e}"
                );
            }
        }
    }
}

#[tokio::test]
async fn one_sqs_message_delivered_to_two_processor_processes_at_once_runs_the_handler_once() {
    let stack = Stack::new().await;
    crate::processor::queue_events(&stack, 3).await;
    let batch = serde_json::to_value(sqs_event(stack.drain().await)).unwrap();
    let api = RuntimeApi::start().await;
    let senders = local_senders();
    let mut env = base_env(&stack);
    env.extend([
        ("DEAD_LETTER_QUEUE_URL", stack.dlq_url.as_str()),
        ("TRUSTED_SENDERS", senders.as_str()),
    ]);
    let processes: Vec<Function> = (0..2)
        .map(|_| Function::start("event-processor", &api, &env))
        .collect();
    let ids: Vec<String> = (0..2).map(|_| api.invoke(batch.clone())).collect();
    let reported: usize = answers(&api, &ids)
        .await
        .iter()
        .map(|a| a["batchItemFailures"].as_array().unwrap().len())
        .sum();
    let runs = crate::lambda_host::logged(&processes, "trybe customer created", 3).await;
    // Each record ran once; a copy that met the other's claim in flight was reported (SQS
    // redelivers it later, when it is a duplicate), one that came after was acknowledged.
    assert_eq!(runs, 3, "reported {reported}");
    assert!(reported <= 3);
}

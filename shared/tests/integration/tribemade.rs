//! TribeMade receiver against moto, through lambda_http's event conversion. Every rule of
//! docs/providers.md "TribeMade": URL token, store list, strict validation that never echoes
//! personal data, dedup on order_id.

use std::sync::Arc;

use serde_json::{json, Value};
use shared::apigw::Sent;
use shared::config::Env;
use shared::consumer::Router;
use shared::providers::tribemade::{self, TribeMade};
use shared::Receiver;
use time::OffsetDateTime;

use crate::helpers::*;

const TOKEN: &str = "tribemade-dev-token-0001";
const SECOND: &str = "tribemade-dev-token-0002";
const STORE: &str = "550e8400-e29b-41d4-a716-446655440000";

/// The customer's personal data: must never come back in an answer.
const PERSONAL: [&str; 5] = [
    "Rahul Sharma",
    "rahul@example.com",
    "9876543210",
    "MG Road",
    "400001",
];

fn order(order_id: &str) -> Value {
    json!({
        "event": "order.created",
        "order_id": order_id,
        "store_id": STORE,
        "product_id": "660e8400-e29b-41d4-a716-446655440123",
        "customer": {
            "name": "Rahul Sharma",
            "email": "rahul@example.com",
            "number": "9876543210",
            "full_address": "123, MG Road, Apartment 4B, Mumbai, Maharashtra, India",
            "pincode": "400001"
        },
        "order_details": {"quantity": 2, "amount": 2048.0, "size": "L", "custom_questions": []},
        "status": "started",
        "created_at": "2024-11-16T10:30:45.123456"
    })
}

fn order_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn to(path: &str, body: &Value) -> Sent {
    Sent::post(path, body.to_string()).header("content-type", "application/json")
}

fn sent(body: &Value) -> Sent {
    to(&format!("/tribemade/{TOKEN}"), body)
}

async fn receiver(stack: &Stack, extra: &[(&str, &str)]) -> Arc<Receiver<TribeMade>> {
    let tokens = format!("{TOKEN},{SECOND}");
    let mut vars = vec![(tribemade::TOKEN_VAR, tokens.as_str())];
    vars.extend_from_slice(extra);
    stack.receiver(&vars, TribeMade::from_env).await
}

fn text(response: &lambda_http::Response<lambda_http::Body>) -> String {
    String::from_utf8(response.body().to_vec()).unwrap()
}

#[tokio::test]
async fn valid_order_is_claimed_and_queued_once_with_its_envelope() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &[]).await;
    let id = order_id();
    let body = order(&id);
    let response = send(&r, &sent(&body)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        body_json(&response),
        json!({"status": "accepted", "event_id": id})
    );

    let (message, env) = only_envelope(&stack, "tribemade", &id, "order.created").await;
    assert_eq!(env["tenant"], STORE);
    assert_eq!(env["occurred_at"], "2024-11-16T10:30:45.123456");
    assert_eq!(env["payload"], body);
    let claim = stack
        .item(&key("tribemade", Some(STORE), &id))
        .await
        .expect("claim stored");
    assert_eq!(s(&claim, "status"), "RECEIVED");

    let processor = stack.processor(Router::default().provider(
        tribemade::NAME,
        Arc::new(event_processor::handlers::tribemade::TribeMadeHandler),
    ));
    assert!(processor
        .process(sqs_event(vec![message]))
        .await
        .batch_item_failures
        .is_empty());
}

#[tokio::test]
async fn the_same_order_sent_again_gives_no_second_message() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &[]).await;
    let body = order(&order_id());
    assert_eq!(send(&r, &sent(&body)).await.status(), 200);
    stack.processor_has_taken_the_queue().await;
    // TribeMade sends to each configured URL: the same order through the second token.
    let again = send(&r, &to(&format!("/tribemade/{SECOND}"), &body)).await;
    assert_eq!(again.status(), 200);
    assert_eq!(body_json(&again)["status"], "duplicate");
    assert_eq!(stack.drain().await.len(), 1);
}

#[tokio::test]
async fn wrong_or_missing_token_gets_401_and_leaves_no_trace() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &[]).await;
    let body = order(&order_id());
    let mut in_query = to("/tribemade", &body);
    in_query.query = Some(format!("token={TOKEN}"));
    let cases = [
        ("no token", to("/tribemade", &body)),
        ("root", to("/", &body)),
        (
            "wrong token",
            to("/tribemade/tribemade-dev-token-9999", &body),
        ),
        ("longer", to(&format!("/tribemade/{TOKEN}0"), &body)),
        (
            "shorter",
            to(&format!("/tribemade/{}", &TOKEN[..TOKEN.len() - 1]), &body),
        ),
        ("glued", to(&format!("/tribemade{TOKEN}"), &body)),
        ("in the query", in_query),
    ];
    for (name, sent) in cases {
        let response = send(&r, &sent).await;
        assert_unauthorized(&response, name);
    }
    stack.assert_no_trace().await;
}

#[tokio::test]
async fn each_missing_field_gets_400_naming_it_and_never_echoing_the_customer() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &[]).await;
    let fields = [
        "event",
        "order_id",
        "store_id",
        "product_id",
        "status",
        "created_at",
        "customer",
        "customer.name",
        "customer.email",
        "customer.number",
        "customer.pincode",
        "customer.full_address",
        "order_details",
        "order_details.quantity",
        "order_details.amount",
    ];
    for field in fields {
        let mut body = order(&order_id());
        match field.split_once('.') {
            Some((outer, inner)) => body[outer].as_object_mut().unwrap().remove(inner),
            None => body.as_object_mut().unwrap().remove(field),
        };
        let response = send(&r, &sent(&body)).await;
        assert_eq!(response.status(), 400, "{field}");
        assert_eq!(
            body_json(&response),
            json!({"status": "bad_request", "error": format!("{field} is missing")})
        );
        let answer = text(&response);
        for personal in PERSONAL {
            assert!(!answer.contains(personal), "{field}: {answer}");
        }
    }
    stack.assert_no_trace().await;
}

#[tokio::test]
async fn wrong_event_and_malformed_values_get_400_without_values() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &[]).await;
    let cases = [
        (
            "event",
            json!("order.updated"),
            "event is not order.created",
        ),
        (
            "order_id",
            json!("ORD-9876543210"),
            "order_id is not a UUID",
        ),
        (
            "created_at",
            json!("16/11/2024 10:30"),
            "created_at is not an ISO 8601 date and time",
        ),
        (
            "customer",
            json!("rahul@example.com"),
            "customer must be an object",
        ),
    ];
    for (field, value, error) in cases {
        let mut body = order(&order_id());
        body[field] = value;
        let response = send(&r, &sent(&body)).await;
        assert_eq!(response.status(), 400, "{field}");
        assert_eq!(body_json(&response)["error"], error);
        let answer = text(&response);
        for personal in PERSONAL.iter().chain(&["ORD-", "16/11"]) {
            assert!(!answer.contains(personal), "{field}: {answer}");
        }
    }
    let not_json = send(&r, &to(&format!("/tribemade/{TOKEN}"), &json!("x"))).await;
    assert_eq!(not_json.status(), 400);
    stack.assert_no_trace().await;
}

#[tokio::test]
async fn a_store_not_in_the_list_gets_401() {
    let stack = Stack::new().await;
    let other = "11111111-2222-4333-8444-555555555555";
    let r = receiver(&stack, &[(tribemade::STORE_IDS_VAR, other)]).await;
    let response = send(&r, &sent(&order(&order_id()))).await;
    assert_eq!(response.status(), 401);
    stack.assert_no_trace().await;

    let allowed = receiver(
        &stack,
        &[(tribemade::STORE_IDS_VAR, &format!("{other}, {STORE}"))],
    )
    .await;
    assert_eq!(
        send(&allowed, &sent(&order(&order_id()))).await.status(),
        200
    );
    assert_eq!(stack.drain().await.len(), 1);
}

#[tokio::test]
async fn sample_in_events_is_accepted_as_simulated() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &[]).await;
    let env = Env::from_pairs([(tribemade::TOKEN_VAR, TOKEN)]);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events/tribemade/order.created.json");
    let body = std::fs::read(path).unwrap();
    let sent = shared::providers::simulate(tribemade::NAME, &body, &env, OffsetDateTime::now_utc())
        .unwrap();
    assert_eq!(send(&r, &sent).await.status(), 200);
    let messages = stack.drain().await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        envelope(&messages[0])["dedup_key"],
        key(
            "tribemade",
            Some("550e8400-e29b-41d4-a716-446655440000"),
            "770e8400-e29b-41d4-a716-446655440789"
        )
    );
}

#[tokio::test]
async fn missing_token_configuration_fails_closed_with_500() {
    let stack = Stack::new().await;
    let r = stack.receiver(&[], TribeMade::from_env).await;
    assert_eq!(send(&r, &sent(&order(&order_id()))).await.status(), 500);
    stack.assert_no_trace().await;
}

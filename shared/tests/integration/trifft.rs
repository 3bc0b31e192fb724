//! TRIFFT receiver against moto, through lambda_http's event conversion (docs/providers.md
//! "TRIFFT").

use std::sync::Arc;

use base64::Engine;
use lambda_http::http::Method;
use serde_json::{json, Value};
use shared::apigw::Sent;
use shared::config::Env;
use shared::consumer::Router;
use shared::providers::trifft::{self, Trifft};
use shared::verify::sha256_hex;
use shared::Receiver;

use crate::helpers::*;

// local.env's dev values.
const HEADER: &str = "X-Trifft-Key";
const KEY: &str = "trifft-dev-key-0001";
const KEY2: &str = "trifft-dev-key-0002";
const USER: &str = "trifft-dev";
const PASSWORD: &str = "trifft-dev-password-0001";

const HEADER_AUTH: [(&str, &str); 2] = [
    (trifft::AUTH_HEADER_VAR, HEADER),
    (
        trifft::AUTH_VALUE_VAR,
        "trifft-dev-key-0001,trifft-dev-key-0002",
    ),
];
const BASIC_AUTH: [(&str, &str); 2] = [
    (trifft::BASIC_USER_VAR, USER),
    (trifft::BASIC_PASSWORD_VAR, PASSWORD),
];

const PERK_REDEEMED: &str = include_str!("../../../events/trifft/perk_redeemed.json");
const POINTS_EARNED_XML: &str = include_str!("../../../events/trifft/points_earned.xml");
const NOTE: &str = include_str!("../../../events/trifft/note.txt");
const SIGNUP_FORM: &str = include_str!("../../../events/trifft/signup.form");

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn env(pairs: &[(&str, &str)]) -> Env {
    Env::from_pairs(pairs.iter().copied())
}

/// A POST as TRIFFT sends it with header authentication (content type sniffed).
fn with_key(body: &str) -> Sent {
    trifft::simulate(body.as_bytes(), &env(&HEADER_AUTH), now()).unwrap()
}

fn with_basic(body: &str, user: &str, password: &str) -> Sent {
    trifft::simulate_basic(
        body.as_bytes(),
        &env(&[
            (trifft::BASIC_USER_VAR, user),
            (trifft::BASIC_PASSWORD_VAR, password),
        ]),
        now(),
    )
    .unwrap()
}

fn unauthenticated(body: &str) -> Sent {
    Sent::post("/", body).header("content-type", trifft::sniff_media_type(body.as_bytes()))
}

async fn receiver(stack: &Stack, extra: &[(&str, &str)]) -> Arc<Receiver<Trifft>> {
    stack.receiver(extra, Trifft::from_env).await
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn header_authentication_alone_accepts_each_configured_value_and_nothing_else() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &HEADER_AUTH).await;
    let first = send(&r, &with_key(PERK_REDEEMED)).await;
    assert_eq!(first.status(), 200);
    let hash = sha256_hex(PERK_REDEEMED.as_bytes());
    assert_eq!(
        body_json(&first),
        json!({"status": "accepted", "event_id": hash})
    );
    let rotated = unauthenticated(r#"{"event":"rotated"}"#).header(HEADER, KEY2);
    assert_eq!(send(&r, &rotated).await.status(), 200);

    let refused = [
        (
            "wrong value",
            unauthenticated("{}").header(HEADER, "trifft-dev-key-0003"),
        ),
        (
            "prefix of a value",
            unauthenticated("{}").header(HEADER, &KEY[..10]),
        ),
        (
            "other header",
            unauthenticated("{}").header("X-Api-Key", KEY),
        ),
        ("missing", unauthenticated("{}")),
        ("basic instead", with_basic("{}", USER, PASSWORD)),
    ];
    for (name, sent) in refused {
        let response = send(&r, &sent).await;
        assert_unauthorized(&response, name);
    }
    assert_eq!(stack.drain().await.len(), 2);
    assert_eq!(stack.item_count().await, 2);
}

#[tokio::test]
async fn basic_authentication_alone_accepts_the_configured_pair_only() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &BASIC_AUTH).await;
    assert_eq!(
        send(&r, &with_basic(PERK_REDEEMED, USER, PASSWORD))
            .await
            .status(),
        200
    );
    let refused = [
        (
            "wrong password",
            with_basic("{}", USER, "trifft-dev-password-0002"),
        ),
        ("wrong user", with_basic("{}", "trifft-other", PASSWORD)),
        ("header instead", with_key("{}")),
        (
            "not base64",
            unauthenticated("{}").header("authorization", "Basic %%%"),
        ),
        (
            "bearer",
            unauthenticated("{}").header("authorization", format!("Bearer {PASSWORD}")),
        ),
        ("missing", unauthenticated("{}")),
    ];
    for (name, sent) in refused {
        assert_eq!(send(&r, &sent).await.status(), 401, "{name}");
    }
    assert_eq!(stack.drain().await.len(), 1);
    assert_eq!(stack.item_count().await, 1);
}

#[tokio::test]
async fn with_both_kinds_configured_either_one_passes() {
    let stack = Stack::new().await;
    let both = [HEADER_AUTH[0], HEADER_AUTH[1], BASIC_AUTH[0], BASIC_AUTH[1]];
    let r = receiver(&stack, &both).await;
    assert_eq!(send(&r, &with_key(r#"{"event":"a"}"#)).await.status(), 200);
    assert_eq!(
        send(&r, &with_basic(r#"{"event":"b"}"#, USER, PASSWORD))
            .await
            .status(),
        200
    );
    // A wrong header value does not spoil a right Basic pair.
    let mixed = with_basic(r#"{"event":"c"}"#, USER, PASSWORD).header(HEADER, "wrong");
    assert_eq!(send(&r, &mixed).await.status(), 200);
    let neither = with_basic(r#"{"event":"d"}"#, USER, "wrong").header(HEADER, "wrong");
    assert_eq!(send(&r, &neither).await.status(), 401);
    assert_eq!(stack.drain().await.len(), 3);
}

#[tokio::test]
async fn without_any_authorization_configured_the_receiver_fails_closed() {
    let stack = Stack::new().await;
    for extra in [
        vec![],
        vec![(trifft::AUTH_HEADER_VAR, HEADER)],
        vec![(trifft::AUTH_VALUE_VAR, " , ")],
        vec![(trifft::BASIC_USER_VAR, USER)],
    ] {
        let r = receiver(&stack, &extra).await;
        assert_eq!(
            send(&r, &with_key(PERK_REDEEMED)).await.status(),
            500,
            "{extra:?}"
        );
    }
    assert!(stack.drain().await.is_empty());
}

#[tokio::test]
async fn every_trifft_method_is_accepted_and_others_get_405() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &HEADER_AUTH).await;
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        let body = json!({"event": "member.updated", "method": method.as_str()}).to_string();
        let response = send(&r, &with_key(&body).method(method.clone())).await;
        assert_eq!(response.status(), 200, "{method}");
    }
    let get = trifft::simulate_get("event=member.viewed", &env(&HEADER_AUTH), now()).unwrap();
    assert_eq!(send(&r, &get).await.status(), 200);
    let messages = stack.drain().await;
    assert_eq!(messages.len(), 5);
    assert!(messages.iter().all(|m| envelope(m)["event_type"]
        .as_str()
        .unwrap()
        .starts_with("member.")));

    for method in [Method::HEAD, Method::OPTIONS] {
        let response = send(&r, &with_key("{}").method(method.clone())).await;
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(response.headers()["allow"], "POST, PUT, PATCH, DELETE, GET");
    }
}

#[tokio::test]
async fn xml_travels_byte_for_byte_in_payload_raw() {
    let stack = Stack::new().await;
    let r = receiver(
        &stack,
        &[
            HEADER_AUTH[0],
            HEADER_AUTH[1],
            (trifft::EVENT_TYPE_HEADER_VAR, "X-Trifft-Event"),
        ],
    )
    .await;
    let sample = with_key(POINTS_EARNED_XML).header("X-Trifft-Event", "trft_points_earned");
    assert_eq!(send(&r, &sample).await.status(), 200);
    // CRLF line ends, a byte order mark, non-ASCII text and trailing spaces, sent base64-encoded
    // as API Gateway does for binary media types, under text/xml with a charset.
    let awkward =
        "\u{feff}<?xml version=\"1.0\"?>\r\n<note lang=\"fr\">Crème brûlée — 2 × 🍮</note>  \r\n";
    let sent = Sent {
        base64: true,
        ..Sent::post("/", awkward)
            .header(HEADER, KEY)
            .header("content-type", "text/xml; charset=utf-8")
    };
    assert_eq!(send(&r, &sent).await.status(), 200);

    let messages = stack.drain().await;
    assert_eq!(messages.len(), 2);
    let by_raw = |raw: &str| {
        messages
            .iter()
            .map(envelope)
            .find(|e| e["payload_raw"] == raw)
            .unwrap_or_else(|| panic!("no message carries {raw:?} verbatim"))
    };
    let points = by_raw(POINTS_EARNED_XML);
    assert!(points.get("payload").is_none());
    assert_eq!(points["event_type"], "trft_points_earned");
    assert_eq!(points["content_type"], "application/xml");
    assert_eq!(
        points["body_sha256"],
        sha256_hex(POINTS_EARNED_XML.as_bytes())
    );
    assert_eq!(
        points["dedup_key"],
        key_hash("trifft", None, POINTS_EARNED_XML.as_bytes())
    );
    let note = by_raw(awkward);
    assert_eq!(note["event_type"], trifft::DEFAULT_EVENT_TYPE);
    assert_eq!(note["content_type"], "text/xml; charset=utf-8");
}

#[tokio::test]
async fn plain_text_and_forms_travel_verbatim_and_form_fields_are_read_in_place() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &HEADER_AUTH).await;
    assert_eq!(send(&r, &with_key(NOTE)).await.status(), 200);
    assert_eq!(send(&r, &with_key(SIGNUP_FORM)).await.status(), 200);
    let envelopes: Vec<Value> = stack.drain().await.iter().map(envelope).collect();
    assert_eq!(envelopes.len(), 2);
    let note = envelopes
        .iter()
        .find(|e| e["content_type"] == "text/plain")
        .expect("note");
    assert_eq!(note["payload_raw"], NOTE);
    assert_eq!(note["event_type"], trifft::DEFAULT_EVENT_TYPE);
    let form = envelopes
        .iter()
        .find(|e| e["content_type"] == "application/x-www-form-urlencoded")
        .expect("form");
    // The sender's text, byte for byte: a handler reads its fields with form_urlencoded.
    assert!(form.get("payload").is_none());
    assert_eq!(form["payload_raw"], SIGNUP_FORM);
    assert_eq!(form["event_type"], "trft_member_signup");
    assert_eq!(form["occurred_at"], "1747060000");
    assert_eq!(
        form["dedup_key"],
        key_hash("trifft", None, SIGNUP_FORM.as_bytes())
    );
}

#[tokio::test]
async fn a_get_query_is_the_payload_and_its_repeat_a_duplicate() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &HEADER_AUTH).await;
    let query =
        "event=trft_points_earned&points=120&email_address=member%40example.com&tag=a&tag=b";
    let get = trifft::simulate_get(query, &env(&HEADER_AUTH), now()).unwrap();
    assert_eq!(send(&r, &get).await.status(), 200);
    stack.processor_has_taken_the_queue().await;
    let again = send(&r, &get).await;
    assert_eq!(again.status(), 200);
    assert_eq!(body_json(&again)["status"], "duplicate");
    let messages = stack.drain().await;
    assert_eq!(messages.len(), 1);
    let e = envelope(&messages[0]);
    assert_eq!(
        e["payload"],
        json!({"event": "trft_points_earned", "points": "120", "email_address": "member@example.com", "tag": ["a", "b"]})
    );
    assert_eq!(e["event_type"], "trft_points_earned");
    assert_eq!(e["dedup_key"], key_hash("trifft", None, query.as_bytes()));
}

#[tokio::test]
async fn a_configured_pointer_or_header_id_dedups_events_whose_bytes_differ() {
    let stack = Stack::new().await;
    let r = receiver(
        &stack,
        &[
            HEADER_AUTH[0],
            HEADER_AUTH[1],
            (trifft::EVENT_ID_POINTER_VAR, "/event_id"),
            (trifft::EVENT_ID_HEADER_VAR, "X-Trifft-Event-Id"),
        ],
    )
    .await;
    let first = r#"{"event_id":"evt-1001","event":"points","points":10}"#;
    let reformatted =
        "{\n  \"event_id\": \"evt-1001\",\n  \"event\": \"points\",\n  \"points\": 10\n}";
    assert_eq!(
        body_json(&send(&r, &with_key(first)).await),
        json!({"status": "accepted", "event_id": "evt-1001"})
    );
    stack.processor_has_taken_the_queue().await;
    assert_eq!(
        body_json(&send(&r, &with_key(reformatted)).await),
        json!({"status": "duplicate", "event_id": "evt-1001"})
    );
    assert_eq!(
        body_json(&send(&r, &with_key(&first.replace("1001", "1002"))).await)["status"],
        "accepted"
    );
    // XML has no pointer: the id comes from the configured header, added in TRIFFT's custom
    // headers.
    let xml = with_key(POINTS_EARNED_XML).header("X-Trifft-Event-Id", "evt-2001");
    assert_eq!(send(&r, &xml).await.status(), 200);
    stack.processor_has_taken_the_queue().await;
    let edited =
        with_key(&POINTS_EARNED_XML.replace("120", "121")).header("X-Trifft-Event-Id", "evt-2001");
    assert_eq!(body_json(&send(&r, &edited).await)["status"], "duplicate");

    let keys: Vec<String> = stack
        .drain()
        .await
        .iter()
        .map(|m| envelope(m)["dedup_key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 3);
    for id in ["evt-1001", "evt-1002", "evt-2001"] {
        let expected = key("trifft", None, id);
        assert!(keys.contains(&expected), "{expected} in {keys:?}");
    }
}

#[tokio::test]
async fn a_repeated_body_is_deduplicated_by_its_hash() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &HEADER_AUTH).await;
    let hash = sha256_hex(PERK_REDEEMED.as_bytes());
    let dedup = key_hash("trifft", None, PERK_REDEEMED.as_bytes());
    assert_eq!(send(&r, &with_key(PERK_REDEEMED)).await.status(), 200);
    stack.processor_has_taken_the_queue().await;
    let again = send(&r, &with_key(PERK_REDEEMED)).await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        body_json(&again),
        json!({"status": "duplicate", "event_id": hash})
    );
    let messages = stack.drain().await;
    assert_eq!(messages.len(), 1);
    let e = envelope(&messages[0]);
    assert_eq!(e["provider"], "trifft");
    assert_eq!(e["event_id"], hash.as_str());
    assert_eq!(e["dedup_key"], dedup.as_str());
    assert_eq!(e["event_type"], "trft_perk_redeemed");
    assert_eq!(e["occurred_at"], "1747053296");
    assert_eq!(e["content_type"], "application/json");
    assert!(e.get("tenant").is_none());
    assert_eq!(e["payload"], json_of(PERK_REDEEMED));
    let attrs = &messages[0].message_attributes;
    assert_eq!(
        attrs["event_type"].string_value.as_deref(),
        Some("trft_perk_redeemed")
    );
    let claim = stack.item(&dedup).await.expect("claim");
    assert_eq!(s(&claim, "status"), "RECEIVED");
}

#[tokio::test]
async fn malformed_json_and_unsupported_media_types_are_refused() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &HEADER_AUTH).await;
    let malformed = send(&r, &with_key("{\"event\": ")).await;
    assert_eq!(malformed.status(), 400);
    assert!(body_json(&malformed)["error"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    let png = Sent {
        base64: true,
        ..Sent::post("/", b"\x89PNG\r\n".to_vec())
            .header(HEADER, KEY)
            .header("content-type", "image/png")
    };
    assert_eq!(send(&r, &png).await.status(), 415);
    let multipart = Sent::post("/", "--x\r\n")
        .header(HEADER, KEY)
        .header("content-type", "multipart/form-data; boundary=x");
    assert_eq!(send(&r, &multipart).await.status(), 415);
    stack.assert_no_trace().await;
}

#[tokio::test]
async fn a_body_that_is_not_utf8_is_queued_byte_for_byte_in_base64() {
    let stack = Stack::new().await;
    let r = receiver(&stack, &HEADER_AUTH).await;
    let latin1 =
        b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><note>cr\xe8me br\xfbl\xe9e</note>"
            .to_vec();
    let sent = Sent {
        base64: true,
        ..Sent::post("/", latin1.clone())
            .header(HEADER, KEY)
            .header("content-type", "application/xml; charset=ISO-8859-1")
    };
    assert_eq!(send(&r, &sent).await.status(), 200);
    let messages = stack.drain().await;
    assert_eq!(messages.len(), 1);
    let e = envelope(&messages[0]);
    assert!(e.get("payload").is_none() && e.get("payload_raw").is_none());
    let carried: shared::Envelope = serde_json::from_value(e.clone()).unwrap();
    assert_eq!(
        carried.content(),
        Some(shared::Payload::Bytes(latin1.clone()))
    );
    assert_eq!(e["body_sha256"], sha256_hex(&latin1));
    assert_eq!(e["dedup_key"], key_hash("trifft", None, &latin1));
    let processor = stack.processor(Router::default().provider(
        "trifft",
        Arc::new(event_processor::handlers::trifft::TrifftHandler),
    ));
    let response = processor.process(sqs_event(messages)).await;
    assert!(response.batch_item_failures.is_empty());
}

#[tokio::test]
async fn every_sample_is_accepted_and_handled_by_the_trifft_handler() {
    let stack = Stack::new().await;
    let both = [HEADER_AUTH[0], HEADER_AUTH[1], BASIC_AUTH[0], BASIC_AUTH[1]];
    let r = receiver(&stack, &both).await;
    let local = env(&both);
    for sample in [PERK_REDEEMED, POINTS_EARNED_XML, NOTE, SIGNUP_FORM] {
        let sent = shared::providers::simulate("trifft", sample.as_bytes(), &local, now()).unwrap();
        assert_eq!(send(&r, &sent).await.status(), 200);
    }
    let basic = trifft::simulate_basic(b"{\"event\":\"basic\"}", &local, now()).unwrap();
    let auth = basic
        .headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .map(|(_, v)| v.clone())
        .unwrap();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim_start_matches("Basic "))
        .unwrap();
    assert_eq!(decoded, format!("{USER}:{PASSWORD}").as_bytes());
    assert_eq!(send(&r, &basic).await.status(), 200);

    let messages = stack.drain().await;
    assert_eq!(messages.len(), 5);
    let processor = stack.processor(Router::default().provider(
        trifft::NAME,
        Arc::new(event_processor::handlers::trifft::TrifftHandler),
    ));
    let response = processor.process(sqs_event(messages)).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    // 5 receiver claims and 5 processed claims.
    assert_eq!(stack.item_count().await, 10);
}

//! Credentials bound to tenants, against moto, for every provider: with a tenant map, a request is
//! accepted only when the credential that verified it belongs to the tenant its body names;
//! another tenant, or none, is a 401 that claims and queues nothing. Dedup keys are scoped by
//! tenant, so two tenants' events with the same id are two events, each queued once.

use serde_json::{json, Value};
use shared::apigw::Sent;
use shared::config::Env;
use shared::providers::{self, tilby, tribe, tribemade, trifft, trybe};
use shared::secret::Secret;

use crate::helpers::*;

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// The request `provider` sends for `body` when configured with `config` (its variables).
fn simulated(provider: &str, config: &[(&str, &str)], body: &Value) -> Sent {
    let env = Env::from_pairs(config.iter().copied());
    providers::simulate(provider, body.to_string().as_bytes(), &env, now()).unwrap()
}

/// Accepted once per (tenant, id); a credential of another tenant, or a body naming none: 401
/// with no trace.
async fn check_binding(
    provider: &str,
    map: &[(&str, &str)],
    own: Sent,
    own_other_tenant_same_id: Sent,
    forged: &[(&str, Sent)],
) {
    let stack = Stack::new().await;
    let receiver = stack
        .receiver(map, |env| providers::from_env(provider, env))
        .await;
    for (case, sent) in forged {
        assert_unauthorized(&send(&receiver, sent).await, &format!("{provider}: {case}"));
    }
    stack.assert_no_trace().await;
    for sent in [&own, &own_other_tenant_same_id] {
        let response = send(&receiver, sent).await;
        assert_eq!(response.status(), 200, "{provider}: {:?}", response.body());
        assert_eq!(body_json(&response)["status"], "accepted");
    }
    stack.processor_has_taken_the_queue().await;
    let again = send(&receiver, &own).await;
    assert_eq!(body_json(&again)["status"], "duplicate", "{provider}");
    let messages = stack.drain().await;
    assert_eq!(messages.len(), 2, "{provider}: one message per tenant");
    let tenants: Vec<Value> = messages
        .iter()
        .map(|m| envelope(m)["tenant"].clone())
        .collect();
    assert_ne!(tenants[0], tenants[1], "{provider}");
}

const TRYBE_MAP: &str =
    r#"{"site-a":"trybe-secret-site-a","site-b":["trybe-old-b","trybe-secret-site-b"]}"#;

#[tokio::test]
async fn trybe_a_sites_secret_opens_that_site_only() {
    let map = [(trybe::SECRET_VAR, TRYBE_MAP)];
    let event = |site: Option<&str>| {
        let mut body = json!({"id": "evt-shared-1", "event": "booking.created", "data": {}});
        if let Some(site) = site {
            body["site_id"] = json!(site);
        }
        body
    };
    let signed_by = |secret: &str, body: &Value| {
        let body = body.to_string();
        Sent::post("/trybe", body.clone())
            .header("content-type", "application/json")
            .header(
                "Signature",
                trybe::sign(&Secret::new(secret).unwrap(), body.as_bytes()),
            )
    };
    check_binding(
        "trybe",
        &map,
        simulated("trybe", &map, &event(Some("site-a"))),
        signed_by("trybe-old-b", &event(Some("site-b"))),
        &[
            (
                "A's secret, B's site",
                signed_by("trybe-secret-site-a", &event(Some("site-b"))),
            ),
            (
                "A's secret, no site",
                signed_by("trybe-secret-site-a", &event(None)),
            ),
            (
                "B's secret, A's site",
                signed_by("trybe-secret-site-b", &event(Some("site-a"))),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn tribe_a_networks_secret_opens_that_network_only_handshake_included() {
    let map = [(
        tribe::SECRET_VAR,
        r#"{"net-a":"tribe-secret-net-a","net-b":"tribe-secret-net-b"}"#,
    )];
    let event = |network: &str| {
        json!({"networkId": network, "type": "SUBSCRIPTION",
            "data": {"id": "same-event-id", "name": "post.published"}})
    };
    let signed_by = |secret: &str, body: &Value| {
        let body = body.to_string();
        let ts = (now().unix_timestamp() * 1000).to_string();
        Sent::post("/tribe", body.clone())
            .header("content-type", "application/json")
            .header(tribe::BETTERMODE.timestamp, ts.clone())
            .header(
                tribe::BETTERMODE.signature,
                tribe::sign(&Secret::new(secret).unwrap(), &ts, body.as_bytes()),
            )
    };
    let handshake = json!({"networkId": "net-b", "type": "TEST", "data": {"challenge": "c-1"}});
    check_binding(
        "tribe",
        &map,
        simulated("tribe", &map, &event("net-a")),
        simulated("tribe", &map, &event("net-b")),
        &[
            (
                "A's secret, B's event",
                signed_by("tribe-secret-net-a", &event("net-b")),
            ),
            (
                "A's secret, B's handshake",
                signed_by("tribe-secret-net-a", &handshake),
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn tribemade_a_stores_url_opens_that_store_only() {
    let map = [(
        tribemade::TOKEN_VAR,
        r#"{"store-a":"tribemade-url-token-store-a","store-b":"tribemade-url-token-store-b"}"#,
    )];
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../events/tribemade/order.created.json");
    let order = |store: &str| {
        let mut body: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        body["store_id"] = json!(store);
        body
    };
    let at = |token: &str, body: &Value| {
        Sent::post(&format!("/tribemade/{token}"), body.to_string())
            .header("content-type", "application/json")
    };
    check_binding(
        "tribemade",
        &map,
        simulated("tribemade", &map, &order("store-a")),
        simulated("tribemade", &map, &order("store-b")),
        &[(
            "A's URL, B's order",
            at("tribemade-url-token-store-a", &order("store-b")),
        )],
    )
    .await;
}

#[tokio::test]
async fn tilby_url_token_and_signature_must_both_belong_to_the_shop() {
    let map = [
        (
            tilby::URL_TOKEN_VAR,
            r#"{"shop-a":"tilby-url-token-shop-a","shop-b":"tilby-url-token-shop-b"}"#,
        ),
        (
            tilby::SIGNING_TOKEN_VAR,
            r#"{"shop-a":"tilby-static-shop-a","shop-b":"tilby-static-shop-b"}"#,
        ),
    ];
    let sale = |shop: &str| {
        json!({"type": "CLOSED", "entity_name": "sales", "notification_uuid": "n-same",
            "environment_id": shop, "entities": [{"uuid": "sale-1"}], "nRetry": 0})
    };
    let sent = |url: &str, key: &str, body: &Value| {
        let body = body.to_string();
        Sent::post(&format!("/tilby/{url}"), body.clone())
            .header("content-type", "application/json")
            .header(
                tilby::SIMULATED_SIGNATURE_HEADER,
                tilby::sign(&Secret::new(key).unwrap(), body.as_bytes()),
            )
    };
    check_binding(
        "tilby",
        &map,
        simulated("tilby", &map, &sale("shop-a")),
        simulated("tilby", &map, &sale("shop-b")),
        &[
            (
                "A's URL and key, B's sale",
                sent(
                    "tilby-url-token-shop-a",
                    "tilby-static-shop-a",
                    &sale("shop-b"),
                ),
            ),
            (
                "A's URL, B's key, B's sale",
                sent(
                    "tilby-url-token-shop-a",
                    "tilby-static-shop-b",
                    &sale("shop-b"),
                ),
            ),
            (
                "B's URL, A's key, A's sale",
                sent(
                    "tilby-url-token-shop-b",
                    "tilby-static-shop-a",
                    &sale("shop-a"),
                ),
            ),
            (
                "A's URL and key, B's handshake",
                sent(
                    "tilby-url-token-shop-a",
                    "tilby-static-shop-a",
                    &json!({"type": "SUBSCRIBED", "environment_id": "shop-b"}),
                ),
            ),
        ],
    )
    .await;
}

/// The queue holds one message per tenant in `expected` (whose credential named it), each under
/// the key `key_of(tenant)`.
async fn assert_tenants_queued(stack: &Stack, expected: &[&str], key_of: impl Fn(&str) -> String) {
    let mut tenants: Vec<String> = stack
        .drain()
        .await
        .iter()
        .map(|m| {
            let e = envelope(m);
            let tenant = e["tenant"].as_str().unwrap().to_owned();
            assert_eq!(e["dedup_key"], key_of(&tenant).as_str());
            tenant
        })
        .collect();
    tenants.sort();
    assert_eq!(tenants, expected);
}

#[tokio::test]
async fn trifft_the_credentials_label_is_the_tenant_and_scopes_the_key() {
    let stack = Stack::new().await;
    let map = [
        (trifft::AUTH_HEADER_VAR, "X-Trifft-Key"),
        (
            trifft::AUTH_VALUE_VAR,
            r#"{"venue-paris":"trifft-key-paris-0001","venue-lyon":["trifft-key-lyon-old","trifft-key-lyon-0001"]}"#,
        ),
    ];
    let receiver = stack
        .receiver(&map, |env| providers::from_env("trifft", env))
        .await;
    let body = r#"{"event_type":"trft_points_earned","points":10}"#;
    let with = |key: &str| {
        Sent::post("/trifft", body)
            .header("content-type", "application/json")
            .header("X-Trifft-Key", key)
    };
    // The same bytes from two venues are two events.
    for key in [
        "trifft-key-paris-0001",
        "trifft-key-lyon-old",
        "trifft-key-lyon-0001",
    ] {
        assert_eq!(send(&receiver, &with(key)).await.status(), 200);
        // Lyon's second key sends Lyon's event again: a duplicate once the processor has it.
        stack.processor_has_taken_the_queue().await;
    }
    assert_unauthorized(
        &send(&receiver, &with("trifft-key-nowhere")).await,
        "unknown key",
    );
    assert_tenants_queued(&stack, &["venue-lyon", "venue-paris"], |tenant| {
        key_hash("trifft", Some(tenant), body.as_bytes())
    })
    .await;
}

#[tokio::test]
async fn standard_webhooks_the_secret_that_verified_is_the_tenant_and_scopes_the_key() {
    use shared::providers::standard_webhook::{self as standard, SECRET_VAR};
    let stack = Stack::new().await;
    const ACME: &str = "whsec_YWNtZS1zdGFuZGFyZC13ZWJob29rLXNlY3JldA==";
    const GLOBEX_OLD: &str = "whsec_Z2xvYmV4LW9sZC1zdGFuZGFyZC13ZWJob29r";
    const GLOBEX: &str = "whsec_Z2xvYmV4LXN0YW5kYXJkLXdlYmhvb2stc2VjcmV0";
    let map = format!(r#"{{"acme": "{ACME}", "globex": ["{GLOBEX_OLD}", "{GLOBEX}"]}}"#);
    let receiver = stack
        .receiver(&[(SECRET_VAR, map.as_str())], |env| {
            providers::from_env(standard::NAME, env)
        })
        .await;
    let body = r#"{"type":"invoice.paid","timestamp":"2026-11-30T09:12:44Z","data":{"id":"in_1"}}"#;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let signed = |secret: &str, id: &str| {
        Sent::post("/standard", body)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", now.to_string())
            .header(
                "webhook-signature",
                standard::sign(&Secret::new(secret).unwrap(), id, now, body.as_bytes()),
            )
    };
    // The same webhook-id from two tenants is two events; a tenant's rotated secret is the
    // same tenant (a duplicate once the processor has the event).
    for secret in [ACME, GLOBEX_OLD, GLOBEX] {
        let response = send(&receiver, &signed(secret, "msg_shared_1")).await;
        assert_eq!(response.status(), 200);
        let expected = if secret == GLOBEX {
            "duplicate"
        } else {
            "accepted"
        };
        assert_eq!(body_json(&response)["status"], expected, "{secret}");
        stack.processor_has_taken_the_queue().await;
    }
    assert_unauthorized(
        &send(
            &receiver,
            &signed("whsec_bm93aGVyZS1zdGFuZGFyZC13ZWJob29r", "msg_shared_1"),
        )
        .await,
        "unknown secret",
    );
    assert_tenants_queued(&stack, &["acme", "globex"], |tenant| {
        key("standard", Some(tenant), "msg_shared_1")
    })
    .await;
}

#[tokio::test]
async fn a_tenant_map_can_come_from_secrets_manager() {
    let stack = Stack::new().await;
    let sm = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    let arn = sm
        .create_secret()
        .name(format!("trybe-map-{}", uuid::Uuid::new_v4().simple()))
        .secret_string(TRYBE_MAP)
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    let receiver = stack
        .receiver(
            &[("TRYBE_SIGNING_SECRET_SECRET_ARN", &arn)],
            trybe::Trybe::from_env,
        )
        .await;
    let body = json!({"id": "sm-1", "event": "x.y", "site_id": "site-b"}).to_string();
    let signed = |secret: &str| {
        Sent::post("/trybe", body.clone()).header(
            "Signature",
            trybe::sign(&Secret::new(secret).unwrap(), body.as_bytes()),
        )
    };
    assert_unauthorized(
        &send(&receiver, &signed("trybe-secret-site-a")).await,
        "A for B",
    );
    assert_eq!(
        send(&receiver, &signed("trybe-secret-site-b"))
            .await
            .status(),
        200
    );
    assert_eq!(stack.drain().await.len(), 1);
}

#[tokio::test]
async fn a_malformed_tenant_map_fails_closed_with_500() {
    let stack = Stack::new().await;
    for bad in [r#"{"site-a": "#, r#"{"site-a": ""}"#, r#"{"site-a": []}"#] {
        let receiver = stack
            .receiver(&[(trybe::SECRET_VAR, bad)], trybe::Trybe::from_env)
            .await;
        let sent = Sent::post("/trybe", "{}").header("Signature", "00".repeat(32));
        assert_eq!(send(&receiver, &sent).await.status(), 500, "{bad}");
    }
    stack.assert_no_trace().await;
}

#[tokio::test]
async fn configurations_that_weaken_authentication_fail_closed_with_500() {
    let stack = Stack::new().await;
    // One Standard Webhooks key under two tenants: it would verify for both and name neither.
    let same_key = r#"{"acme": "whsec_c2FtZS1rZXktdHdvLXRlbmFudHMtMDAwMQ==", "globex": "whsec_c2FtZS1rZXktdHdvLXRlbmFudHMtMDAwMQ=="}"#;
    let cases: [(&str, &[(&str, &str)]); 6] = [
        (
            "standard",
            &[(shared::providers::standard_webhook::SECRET_VAR, same_key)],
        ),
        ("tribemade", &[(tribemade::TOKEN_VAR, "short-token")]),
        (
            "tilby",
            &[(tilby::URL_TOKEN_VAR, "tilby-url-token-0001,tilby")],
        ),
        ("tribemade", &[(tribemade::TOKEN_VAR, "tribemade-webhook")]),
        (
            "trifft",
            &[
                (trifft::AUTH_HEADER_VAR, "X-Trifft-Key"),
                (trifft::AUTH_VALUE_VAR, "trifft-key-0000000001"),
                (trifft::EVENT_ID_HEADER_VAR, "x-trifft-key"),
            ],
        ),
        (
            "trifft",
            &[
                (trifft::BASIC_USER_VAR, "u1,u2"),
                (trifft::BASIC_PASSWORD_VAR, "p1,p2,p3"),
            ],
        ),
    ];
    for (provider, config) in cases {
        let receiver = stack
            .receiver(config, |env| providers::from_env(provider, env))
            .await;
        let env = Env::from_pairs(config.iter().copied());
        // Even a request carrying the configured credential is refused.
        let sent = providers::simulate(provider, b"{\"id\":\"x\"}", &env, now())
            .unwrap_or_else(|_| Sent::post("/", "{}"));
        let response = send(&receiver, &sent).await;
        assert_eq!(response.status(), 500, "{provider}: {config:?}");
    }
    stack.assert_no_trace().await;
}

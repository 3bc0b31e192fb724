//! The senders: authentic events of every provider from the samples in `events/`, each with its
//! provider's retry schedule, concurrent copies, duplicates after a 200, re-sends after the
//! horizon, the same id with other content and hash-keyed bodies that recur; and attackers:
//! forged credentials, and one tenant's events under another tenant's credential.

use std::time::Duration;

use serde_json::{json, Value};
use shared::apigw::Sent;
use shared::config::Env;
use shared::pipeline::dedup_key;
use shared::provider::EventKey;
use shared::providers::{self, standard_webhook, tilby, tribe, tribemade, trifft, trybe};
use time::OffsetDateTime;

use crate::rng::Rng;

pub const PROVIDERS: &[&str] = &[
    trybe::NAME,
    tribe::NAME,
    tribemade::NAME,
    trifft::NAME,
    tilby::NAME,
    standard_webhook::NAME,
];

/// Providers whose events name a tenant, configured here with a tenant map of two tenants.
const TENANTED: &[&str] = &[trybe::NAME, tribe::NAME, tribemade::NAME, tilby::NAME];
pub const TENANTS: [&str; 2] = ["tenant-a", "tenant-b"];

const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STANDARD_FORGED: &str = "whsec_Q2hhbmdlZCBzZWNyZXQgZm9yIGZvcmdpbmc=";

fn map(a: &str, b: &str) -> String {
    json!({ TENANTS[0]: a, TENANTS[1]: b }).to_string()
}

/// The credentials the receivers are configured with (`Trust::Authentic`), a forger's
/// (`Forged`: every value wrong), and one where each tenant holds the other's (`OtherTenant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    Authentic,
    Forged,
    OtherTenant,
}

/// The configuration under `trust`, built once per process (every delivery signs with it).
pub fn env(trust: Trust) -> &'static Env {
    static ENVS: std::sync::OnceLock<[Env; 3]> = std::sync::OnceLock::new();
    let envs =
        ENVS.get_or_init(|| [Trust::Authentic, Trust::Forged, Trust::OtherTenant].map(build_env));
    &envs[trust as usize]
}

fn build_env(trust: Trust) -> Env {
    let pair = |a: &str, b: &str| match trust {
        Trust::Authentic => map(a, b),
        Trust::OtherTenant => map(b, a),
        Trust::Forged => map(&format!("{a}-forged"), &format!("{b}-forged")),
    };
    let plain = |v: &str| match trust {
        Trust::Forged => format!("{v}-forged"),
        _ => v.to_owned(),
    };
    let standard = match trust {
        Trust::Forged => STANDARD_FORGED,
        _ => STANDARD_SECRET,
    };
    let values = [
        ("EVENTS_TABLE", "events".to_owned()),
        ("EVENTS_QUEUE_URL", "sim://events".to_owned()),
        (
            trybe::SECRET_VAR,
            pair("trybe-secret-aaaa", "trybe-secret-bbbb"),
        ),
        (
            tribe::SECRET_VAR,
            pair("tribe-secret-aaaa", "tribe-secret-bbbb"),
        ),
        (
            tribemade::TOKEN_VAR,
            pair("tribemade-token-aaaa-0001", "tribemade-token-bbbb-0002"),
        ),
        (
            tilby::URL_TOKEN_VAR,
            pair("tilby-url-token-aaaa-0001", "tilby-url-token-bbbb-0002"),
        ),
        (
            tilby::SIGNING_TOKEN_VAR,
            pair("tilby-signing-aaaa-0001", "tilby-signing-bbbb-0002"),
        ),
        (trifft::AUTH_HEADER_VAR, "x-trifft-key".to_owned()),
        (trifft::AUTH_VALUE_VAR, plain("trifft-key-0000-0001")),
        (standard_webhook::SECRET_VAR, standard.to_owned()),
    ];
    Env::from_pairs(values.iter().map(|(k, v)| (*k, v.as_str())))
}

fn sample(provider: &str) -> Value {
    let text = match provider {
        trybe::NAME => include_str!("../../../events/trybe/basket.submitted.json"),
        tribe::NAME => include_str!("../../../events/tribe/post.published.json"),
        tribemade::NAME => include_str!("../../../events/tribemade/order.created.json"),
        trifft::NAME => include_str!("../../../events/trifft/perk_redeemed.json"),
        tilby::NAME => include_str!("../../../events/tilby/sales.closed.json"),
        _ => include_str!("../../../events/standard/invoice.paid.json"),
    };
    serde_json::from_str(text).expect("sample")
}

/// One event a sender means to deliver (or an attacker to slip in).
#[derive(Debug, Clone)]
pub struct Event {
    pub n: usize,
    pub provider: &'static str,
    pub body: Value,
    /// The dedup keys its request carries (Tilby: one per entity).
    pub keys: Vec<String>,
    pub trust: Trust,
    /// A Standard Webhooks sender's `webhook-id`, the same on every retry.
    pub webhook_id: String,
    /// A TRIFFT GET: the content travels in this query, the body is empty.
    pub query: Option<String>,
}

impl Event {
    pub fn authentic(&self) -> bool {
        self.trust == Trust::Authentic
    }
}

/// A fresh event of `provider`; `marker` goes into its ids ("forged-" for attackers).
pub fn new_event(n: usize, provider: &'static str, rng: &mut Rng, trust: Trust) -> Event {
    let marker = if trust == Trust::Authentic {
        ""
    } else {
        "forged-"
    };
    let id = format!("{marker}{}", rng.hex_id());
    let tenant = TENANTED.contains(&provider).then(|| *rng.pick(&TENANTS));
    let mut body = sample(provider);
    let keys = match provider {
        trybe::NAME => {
            body["id"] = json!(id);
            body["site_id"] = json!(tenant);
            vec![dedup_key(provider, tenant, &EventKey::id(&id))]
        }
        tribe::NAME => {
            body["data"]["id"] = json!(id);
            body["networkId"] = json!(tenant);
            vec![dedup_key(provider, tenant, &EventKey::id(&id))]
        }
        tribemade::NAME => {
            // TribeMade's order ids are UUIDs; a forger's is marked in its content instead.
            let id = rng.uuid();
            if trust != Trust::Authentic {
                body["status"] = json!(format!("forged-{id}"));
            }
            body["order_id"] = json!(id);
            body["store_id"] = json!(tenant);
            vec![dedup_key(provider, tenant, &EventKey::id(&id))]
        }
        trifft::NAME => {
            // No id: keyed by the SHA-256 of the body as sent.
            body["nonce"] = json!(id);
            vec![dedup_key(
                provider,
                None,
                &EventKey::hash_of(body.to_string().as_bytes()),
            )]
        }
        tilby::NAME => {
            body["notification_uuid"] = json!(id);
            body["environment_id"] = json!(tenant);
            let mut entities: Vec<Value> = (0..rng.between(1, 3))
                .map(|_| {
                    let mut e = body["entities"][0].clone();
                    e["uuid"] = json!(format!("{marker}{}", rng.hex_id()));
                    e
                })
                .collect();
            // An import that names one entity twice.
            if rng.chance(0.1) {
                entities.push(entities[0].clone());
            }
            let mut keys: Vec<String> = entities
                .iter()
                .map(|e| {
                    dedup_key(
                        provider,
                        tenant,
                        &EventKey::parts([id.clone(), e["uuid"].as_str().unwrap().to_owned()]),
                    )
                })
                .collect();
            keys.dedup();
            body["entities"] = json!(entities);
            keys
        }
        _ => {
            body["data"]["id"] = json!(id);
            let webhook_id = format!("msg_{id}");
            return Event {
                n,
                provider,
                keys: vec![dedup_key(provider, None, &EventKey::id(&webhook_id))],
                body,
                trust,
                webhook_id,
                query: None,
            };
        }
    };
    Event {
        n,
        provider,
        body,
        keys,
        trust,
        webhook_id: String::new(),
        query: None,
    }
}

/// A TRIFFT GET event: its content is the query (keyed by its SHA-256), its body empty.
pub fn trifft_get(n: usize, rng: &mut Rng) -> Event {
    let query = format!(
        "event_type=trft_points_earned&points=10&nonce={}",
        rng.hex_id()
    );
    Event {
        n,
        provider: trifft::NAME,
        body: Value::Null,
        keys: vec![dedup_key(
            trifft::NAME,
            None,
            &EventKey::hash_of(query.as_bytes()),
        )],
        trust: Trust::Authentic,
        webhook_id: String::new(),
        query: Some(query),
    }
}

/// The same event (same keys) with other content: a field that is not part of its key changed.
pub fn other_content(event: &Event) -> Option<Event> {
    let mut body = event.body.clone();
    match event.provider {
        trybe::NAME => body["data"]["total_cost"] = json!(999_999),
        tribe::NAME => body["data"]["name"] = json!("changed"),
        tribemade::NAME => body["status"] = json!("changed"),
        tilby::NAME => body["from_user"] = json!("someone.else@example.com"),
        standard_webhook::NAME => body["data"]["amount_paid"] = json!(1),
        // A hash-keyed body with other content is another event.
        _ => return None,
    }
    Some(Event {
        body,
        ..event.clone()
    })
}

/// The request `event` goes out as on its `attempt` (0 first), at `now`, under `trust`'s
/// credentials: Tilby counts `nRetry`, Tribe and Standard Webhooks sign a fresh timestamp, a
/// Standard Webhooks sender keeps its `webhook-id`.
pub fn request(event: &Event, attempt: usize, now: OffsetDateTime) -> Sent {
    let env = env(event.trust);
    if let Some(query) = &event.query {
        let mut sent = trifft::simulate_get(query, env, now).expect("simulated GET");
        sent.path = providers::request_path(event.provider, &sent);
        return sent;
    }
    let mut body = event.body.clone();
    if event.provider == tilby::NAME {
        body["nRetry"] = json!(attempt);
    }
    let bytes = body.to_string().into_bytes();
    let mut sent = if event.provider == standard_webhook::NAME {
        let secrets = env.secrets(standard_webhook::SECRET_VAR).expect("secret");
        let ts = now.unix_timestamp();
        let signature = standard_webhook::sign(secrets.first(), &event.webhook_id, ts, &bytes);
        Sent::post("/", bytes)
            .header("content-type", "application/json")
            .header("webhook-id", &event.webhook_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
    } else {
        providers::simulate(event.provider, &bytes, env, now).expect("simulated request")
    };
    sent.path = providers::request_path(event.provider, &sent);
    sent
}

/// When a provider tries again after a failed delivery: delays from the first try, in seconds.
pub fn schedule(provider: &str) -> Vec<Duration> {
    const M: u64 = 60;
    const H: u64 = 3600;
    let secs: &[u64] = match provider {
        // Up to 3 tries, the same id.
        trybe::NAME => &[0, 60, 5 * M],
        // Retried on timeout.
        tribe::NAME => &[0, 30, 2 * M, 10 * M],
        tribemade::NAME => &[0, M, 10 * M, H],
        trifft::NAME => &[0, M, 10 * M],
        // At least 3 retries, 15 minutes apart.
        tilby::NAME => &[0, 15 * M, 30 * M, 45 * M],
        // Standard Webhooks' documented schedule: immediately, then after 5 s, 5 min, 30 min,
        // 2 h, 5 h, 10 h and 10 h.
        _ => &[
            0,
            5,
            5 * M + 5,
            35 * M + 5,
            2 * H + 35 * M + 5,
            7 * H + 35 * M + 5,
            17 * H + 35 * M + 5,
            27 * H + 35 * M + 5,
        ],
    };
    secs.iter().copied().map(Duration::from_secs).collect()
}

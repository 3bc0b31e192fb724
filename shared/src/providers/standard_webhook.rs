//! Standard Webhooks (<https://www.standardwebhooks.com>, spec v1), and Svix-built senders, which
//! use the same scheme under `svix-*` headers. Added the way a user adds a provider:
//! docs/adding-a-provider.md.
//!
//! - Auth: `webhook-id`, `webhook-timestamp` (integer seconds) and `webhook-signature`: one or
//!   more space-separated `v1,<base64 HMAC-SHA256>` over `<id>.<timestamp>.<raw body>`, keyed by
//!   the secret's bytes (`whsec_<base64>`, the prefix optional). Any listed `v1` signature may
//!   match (senders list several while they rotate secrets); other versions are ignored. The
//!   timestamp must be within `STANDARD_WEBHOOK_TOLERANCE_SECONDS` (default 300) of now, in
//!   either direction. Each family of headers is taken whole: a `webhook-signature` is never
//!   checked against an `svix-timestamp`.
//! - Secrets in `STANDARD_WEBHOOK_SECRET`: `whsec_…` values, comma-separated, or a tenant map
//!   (`{"<tenant>": "whsec_…" | ["whsec_…", …]}`). The payloads name no tenant: with a map, the
//!   tenant is the one whose secret verified the request (as for TRIFFT).
//! - Event id: the `webhook-id` header (stable across retries, signed), the dedup key; type
//!   `type`; occurred at `timestamp` (the payload's, RFC 3339). A signed body that is not a JSON
//!   object is refused with 400.

use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::apigw::Sent;
use crate::config::{ConfigError, Env};
use crate::provider::{
    json_fields, json_payload, EventKey, Inbound, InboundEvent, Inspection, Provider, Refusal,
    VerifiedRequest,
};
use crate::secret::{Secret, SecretList};
use crate::verify::{self, AuthFailure, Verified};

/// The provider's name: dedup keys `standard#…`, route `/standard`, samples `events/standard/`,
/// function `standard-webhook` (`<name>-webhook`, as every receiver).
pub const NAME: &str = "standard";
pub const SECRET_VAR: &str = "STANDARD_WEBHOOK_SECRET";
pub const TOLERANCE_VAR: &str = "STANDARD_WEBHOOK_TOLERANCE_SECONDS";
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);
const SECRET_PREFIX: &str = "whsec_";

/// One family of the three headers.
struct Headers {
    id: &'static str,
    timestamp: &'static str,
    signature: &'static str,
}

/// In order of preference: the specification's, then Svix's.
const FAMILIES: [Headers; 2] = [
    Headers {
        id: "webhook-id",
        timestamp: "webhook-timestamp",
        signature: "webhook-signature",
    },
    Headers {
        id: "svix-id",
        timestamp: "svix-timestamp",
        signature: "svix-signature",
    },
];

#[derive(Debug)]
pub struct StandardWebhook {
    secrets: SecretList,
    tolerance: Duration,
}

/// The HMAC key of a configured secret: the base64 after `whsec_` (or the whole value without
/// the prefix). `None` when it does not decode.
fn key_of(secret: &Secret) -> Option<Vec<u8>> {
    let value = std::str::from_utf8(secret.expose()).ok()?;
    let encoded = value.strip_prefix(SECRET_PREFIX).unwrap_or(value);
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .filter(|k| !k.is_empty())
}

impl StandardWebhook {
    /// Fails when a secret does not decode (fail closed at cold start, not a 401 per request).
    pub fn new(secrets: SecretList, tolerance: Duration) -> Result<Self, ConfigError> {
        if secrets.iter().any(|s| key_of(s).is_none()) {
            return Err(ConfigError::Invalid {
                name: SECRET_VAR.into(),
                why: "every secret must be whsec_ followed by base64".into(),
            });
        }
        if tolerance.is_zero() {
            return Err(ConfigError::Invalid {
                name: TOLERANCE_VAR.into(),
                why: "must be positive".into(),
            });
        }
        // The key names the tenant (the payload names none): one key under two tenants would
        // verify for both, name neither, and every request either sent would be refused.
        let keys: Vec<(Option<&str>, Option<Vec<u8>>)> =
            secrets.entries().map(|(t, s)| (t, key_of(s))).collect();
        let shared = (1..keys.len()).any(|j| {
            keys[..j]
                .iter()
                .any(|(t, k)| *k == keys[j].1 && *t != keys[j].0)
        });
        if secrets.is_per_tenant() && shared {
            return Err(ConfigError::Invalid {
                name: SECRET_VAR.into(),
                why: "the same key is given for two tenants".into(),
            });
        }
        Ok(StandardWebhook { secrets, tolerance })
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let secs: u64 = env.parse_or(TOLERANCE_VAR, DEFAULT_TOLERANCE.as_secs())?;
        StandardWebhook::new(env.mac_keys(SECRET_VAR, false)?, Duration::from_secs(secs))
    }
}

/// The `v1` signatures of a signature header, decoded. Entries of other versions are skipped,
/// and so is a `v1` entry that is not base64 of 32 bytes when another one is usable (as the
/// reference libraries do: it simply never matches); a header whose `v1` entries are all
/// unusable is malformed.
fn v1_signatures(header: &str) -> Result<Vec<[u8; 32]>, AuthFailure> {
    let (mut out, mut unusable) = (Vec::new(), 0);
    for entry in header.split(' ').filter(|e| !e.is_empty()) {
        let Some((version, value)) = entry.split_once(',') else {
            unusable += 1;
            continue;
        };
        if version != "v1" {
            continue;
        }
        match base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
        {
            Some(signature) => out.push(signature),
            None => unusable += 1,
        }
    }
    if out.is_empty() && unusable > 0 {
        return Err(AuthFailure::Malformed);
    }
    Ok(out)
}

/// The id, timestamp and signature of the first family whose three headers are all present:
/// authentication and the event id always read the same family, so the id used for dedup is
/// the one that was signed.
fn signed_headers<'r>(request: &'r Inbound<'_>) -> Option<(&'r str, &'r str, &'r str)> {
    FAMILIES.iter().find_map(|f| {
        Some((
            request.header(f.id)?,
            request.header(f.timestamp)?,
            request.header(f.signature)?,
        ))
    })
}

impl Provider for StandardWebhook {
    fn name(&self) -> &'static str {
        NAME
    }

    fn authenticate(&self, request: &Inbound<'_>) -> Result<Verified, AuthFailure> {
        let (id, timestamp, signature) = signed_headers(request).ok_or(AuthFailure::Missing)?;
        let timestamp = timestamp.trim();
        if timestamp.is_empty() || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AuthFailure::Malformed);
        }
        let sent: i64 = timestamp.parse().map_err(|_| AuthFailure::Malformed)?;
        let signatures = v1_signatures(signature)?;
        // The window first, before any MAC: a request outside it costs no hash of its body,
        // whatever the number of secrets (`Stale` in the logs is then not proof of authenticity).
        if request.now.unix_timestamp().abs_diff(sent) > self.tolerance.as_secs() {
            return Err(AuthFailure::Stale);
        }
        verify::hmac_sha256_any(
            &self.secrets,
            key_of,
            &[
                id.as_bytes(),
                b".",
                timestamp.as_bytes(),
                b".",
                request.body,
            ],
            &signatures,
        )
    }

    fn inspect(&self, request: &VerifiedRequest<'_, '_>) -> Result<Inspection, Refusal> {
        // The id authentication verified (same family).
        let id = signed_headers(request)
            .map(|(id, ..)| id)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Refusal::BadRequest("webhook-id is empty".into()))?
            .to_owned();
        let body = json_fields(request.body, &["type", "timestamp"])?;
        Ok(Inspection::event(InboundEvent {
            event_id: id.clone(),
            key: EventKey::id(id),
            event_type: body.str("type").as_deref().unwrap_or("unknown").to_owned(),
            occurred_at: body.str("timestamp").map(|s| s.into_owned()),
            tenant: request.proof().tenant().map(str::to_owned),
            payload: json_payload(request.body)?,
            fingerprint: None,
        }))
    }
}

/// The `webhook-signature` value a sender would send: `v1,<base64>`.
pub fn sign(secret: &Secret, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = key_of(secret).expect("a whsec_ secret");
    let timestamp = timestamp.to_string();
    let mac = verify::hmac_sha256_key(
        &key,
        &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
    );
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac)
    )
}

/// The request a Standard Webhooks sender would send with `body`: a fresh `msg_…` id, now as the
/// timestamp, signed with the first configured secret (a map: the first tenant's).
pub fn simulate(body: &[u8], env: &Env, now: OffsetDateTime) -> Result<Sent, ConfigError> {
    let secrets = env.secrets(SECRET_VAR)?;
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let timestamp = now.unix_timestamp();
    Ok(Sent::post("/", body.to_vec())
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            sign(secrets.first(), &id, timestamp, body),
        ))
}

/// A Standard Webhooks payload, typed: `type`, `timestamp`, `data`; anything else in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub data: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::{HeaderMap, HeaderValue, Method};
    use proptest::prelude::*;

    // The specification's published test vector (standard-webhooks/standard-webhooks, the
    // reference libraries' tests).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: i64 = 1614265330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(secs).unwrap()
    }

    fn headers(family: usize, id: &str, ts: &str, sig: &str) -> HeaderMap {
        let f = &FAMILIES[family];
        let mut h = HeaderMap::new();
        h.insert(f.id, HeaderValue::from_str(id).unwrap());
        h.insert(f.timestamp, HeaderValue::from_str(ts).unwrap());
        h.insert(f.signature, HeaderValue::from_str(sig).unwrap());
        h
    }

    fn inbound<'a>(headers: &'a HeaderMap, body: &'a [u8], now: i64) -> Inbound<'a> {
        static POST: Method = Method::POST;
        Inbound {
            method: &POST,
            headers,
            path: "/",
            query: None,
            body,
            now: at(now),
        }
    }

    fn provider(secrets: &str) -> StandardWebhook {
        StandardWebhook::new(SecretList::parse(secrets).unwrap(), DEFAULT_TOLERANCE).unwrap()
    }

    #[test]
    fn a_key_under_two_tenants_is_refused_at_cold_start() {
        let key = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let same_bytes = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        for map in [
            format!(r#"{{"acme":"{key}","globex":"{key}"}}"#),
            format!(r#"{{"acme":"{key}","globex":["whsec_b3RoZXI=","{same_bytes}"]}}"#),
        ] {
            let err = StandardWebhook::from_env(&Env::from_pairs([(SECRET_VAR, map.as_str())]))
                .expect_err("refused");
            assert!(
                matches!(err, ConfigError::Invalid { ref name, ref why } if name == SECRET_VAR && why.contains("two tenants")),
                "{err:?}"
            );
            assert!(
                !format!("{err}").contains(same_bytes),
                "no value in the error"
            );
        }
        // One tenant's rotation may repeat itself; different keys for different tenants pass.
        for fine in [
            format!(r#"{{"acme":["{key}","{key}"],"globex":"whsec_b3RoZXI="}}"#),
            format!("{key},{key}"),
        ] {
            assert!(
                StandardWebhook::from_env(&Env::from_pairs([(SECRET_VAR, fine.as_str())])).is_ok(),
                "{fine}"
            );
        }
    }

    #[test]
    fn the_specifications_vector_signs_and_verifies() {
        let secret = Secret::new(SECRET).unwrap();
        assert_eq!(sign(&secret, ID, TIMESTAMP, BODY.as_bytes()), SIGNATURE);
        let p = provider(&format!("whsec_b3RoZXItc2VjcmV0LTAwMDAwMDAwMA==,{SECRET}"));
        for family in [0, 1] {
            let h = headers(family, ID, &TIMESTAMP.to_string(), SIGNATURE);
            assert!(p
                .authenticate(&inbound(&h, BODY.as_bytes(), TIMESTAMP))
                .is_ok());
        }
    }

    #[test]
    fn any_listed_v1_signature_may_match_and_other_versions_are_ignored() {
        let p = provider(SECRET);
        let other = "v1,Ym9ndXMtc2lnbmF0dXJlLWJvZ3VzLXNpZ25hdHVyZSE=";
        for sig in [
            format!("{other} {SIGNATURE}"),
            format!("v1a,c29tZXRoaW5nLWVsc2U= {SIGNATURE}"),
            format!("{SIGNATURE}  {other}"),
            format!("v1,c2hvcnQ= {SIGNATURE} garbage"),
        ] {
            let h = headers(0, ID, &TIMESTAMP.to_string(), &sig);
            assert!(
                p.authenticate(&inbound(&h, BODY.as_bytes(), TIMESTAMP))
                    .is_ok(),
                "{sig}"
            );
        }
        let only_other = headers(0, ID, &TIMESTAMP.to_string(), other);
        assert_eq!(
            p.authenticate(&inbound(&only_other, BODY.as_bytes(), TIMESTAMP)),
            Err(AuthFailure::Mismatch)
        );
        let only_v2 = headers(0, ID, &TIMESTAMP.to_string(), "v2,c29tZXRoaW5n");
        assert_eq!(
            p.authenticate(&inbound(&only_v2, BODY.as_bytes(), TIMESTAMP)),
            Err(AuthFailure::Missing)
        );
    }

    #[test]
    fn id_timestamp_and_body_are_all_signed() {
        let p = provider(SECRET);
        let ts = TIMESTAMP.to_string();
        let cases = [
            ("another id", headers(0, "msg_other", &ts, SIGNATURE), BODY),
            (
                "another timestamp",
                headers(0, ID, "1614265331", SIGNATURE),
                BODY,
            ),
            (
                "another body",
                headers(0, ID, &ts, SIGNATURE),
                r#"{"test": 2432232315}"#,
            ),
        ];
        for (case, h, body) in cases {
            assert_eq!(
                p.authenticate(&inbound(&h, body.as_bytes(), TIMESTAMP)),
                Err(AuthFailure::Mismatch),
                "{case}"
            );
        }
    }

    #[test]
    fn the_tolerance_holds_both_ways_and_is_configurable() {
        let p = provider(SECRET);
        let h = headers(0, ID, &TIMESTAMP.to_string(), SIGNATURE);
        let body = BODY.as_bytes();
        assert!(p.authenticate(&inbound(&h, body, TIMESTAMP + 300)).is_ok());
        assert!(p.authenticate(&inbound(&h, body, TIMESTAMP - 300)).is_ok());
        for now in [TIMESTAMP + 301, TIMESTAMP - 301] {
            assert_eq!(
                p.authenticate(&inbound(&h, body, now)),
                Err(AuthFailure::Stale)
            );
        }
        let env = |tol: &str| Env::from_pairs([(SECRET_VAR, SECRET), (TOLERANCE_VAR, tol)]);
        let wide = StandardWebhook::from_env(&env("3600")).unwrap();
        assert!(wide
            .authenticate(&inbound(&h, body, TIMESTAMP + 3600))
            .is_ok());
        assert!(StandardWebhook::from_env(&env("0")).is_err());
        assert_eq!(
            StandardWebhook::from_env(&Env::from_pairs([(SECRET_VAR, SECRET)]))
                .unwrap()
                .tolerance,
            DEFAULT_TOLERANCE
        );
    }

    #[test]
    fn missing_or_malformed_headers_and_secrets_fail_closed() {
        let p = provider(SECRET);
        let ts = TIMESTAMP.to_string();
        let body = BODY.as_bytes();
        assert_eq!(
            p.authenticate(&inbound(&HeaderMap::new(), body, TIMESTAMP)),
            Err(AuthFailure::Missing)
        );
        // A family is taken whole: webhook-id and webhook-timestamp with an svix-signature.
        let mut mixed = headers(0, ID, &ts, SIGNATURE);
        mixed.remove("webhook-signature");
        mixed.insert("svix-signature", HeaderValue::from_static(SIGNATURE));
        assert_eq!(
            p.authenticate(&inbound(&mixed, body, TIMESTAMP)),
            Err(AuthFailure::Missing)
        );
        for (ts, sig) in [
            ("16142653x0", SIGNATURE),
            ("", SIGNATURE),
            (ts.as_str(), "v1"),
            (ts.as_str(), "v1,not base64!"),
            (ts.as_str(), "v1,c2hvcnQ="),
        ] {
            let h = headers(0, ID, ts, sig);
            assert_eq!(
                p.authenticate(&inbound(&h, body, TIMESTAMP)),
                Err(AuthFailure::Malformed),
                "{ts:?} {sig:?}"
            );
        }
        for bad in ["whsec_not base64", "whsec_", "plain text"] {
            assert!(
                StandardWebhook::new(SecretList::parse(bad).unwrap(), DEFAULT_TOLERANCE).is_err(),
                "{bad}"
            );
        }
        assert!(StandardWebhook::from_env(&Env::from_pairs([])).is_err());
    }

    #[test]
    fn the_event_is_keyed_by_webhook_id_and_a_map_names_the_tenant() {
        let map = format!(
            r#"{{"acme": "{SECRET}", "globex": "whsec_Z2xvYmV4LXNlY3JldC0wMDAwMDAwMA=="}}"#
        );
        let p = StandardWebhook::new(
            SecretList::from_config(&map).unwrap().unwrap(),
            DEFAULT_TOLERANCE,
        )
        .unwrap();
        let body =
            br#"{"type":"invoice.paid","timestamp":"2021-02-25T15:02:10Z","data":{"id":"in_1"}}"#;
        let sig = sign(&Secret::new(SECRET).unwrap(), ID, TIMESTAMP, body);
        let h = headers(1, ID, &TIMESTAMP.to_string(), &sig);
        let req = inbound(&h, body, TIMESTAMP);
        let verified = VerifiedRequest::new(&req, p.authenticate(&req).unwrap());
        let Inspection::Events { events, ack: None } = p.inspect(&verified).unwrap() else {
            panic!("one event expected")
        };
        let e = &events[0];
        assert_eq!(e.key, EventKey::id(ID));
        assert_eq!(e.event_id, ID);
        assert_eq!(e.event_type, "invoice.paid");
        assert_eq!(e.tenant.as_deref(), Some("acme"));
        assert_eq!(e.occurred_at.as_deref(), Some("2021-02-25T15:02:10Z"));
        // An unsigned webhook-id beside a signed svix family is not the event's id.
        let mut extra = h.clone();
        extra.insert("webhook-id", HeaderValue::from_static("msg_unsigned"));
        let req = inbound(&extra, body, TIMESTAMP);
        let verified = VerifiedRequest::new(&req, p.authenticate(&req).unwrap());
        let Inspection::Events { events, .. } = p.inspect(&verified).unwrap() else {
            panic!("one event expected")
        };
        assert_eq!(events[0].event_id, ID);
        let not_json = inbound(&h, b"not json", TIMESTAMP);
        let verified = VerifiedRequest::new(&not_json, p.authenticate(&req).unwrap());
        assert!(matches!(p.inspect(&verified), Err(Refusal::BadRequest(_))));
    }

    proptest! {
        /// Whatever the id, time and body, a signature made with a configured secret verifies,
        /// and changing any one byte of the body breaks it.
        #[test]
        fn what_a_sender_signs_verifies_and_a_changed_byte_does_not(
            key in proptest::collection::vec(any::<u8>(), 24..64),
            id in "[a-zA-Z0-9_]{1,40}",
            ts in 1_000_000_000i64..4_000_000_000,
            body in proptest::collection::vec(any::<u8>(), 0..512),
            flip in any::<prop::sample::Index>(),
        ) {
            let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(&key));
            let p = provider(&secret);
            let sig = sign(&Secret::new(&secret).unwrap(), &id, ts, &body);
            let h = headers(0, &id, &ts.to_string(), &sig);
            prop_assert!(p.authenticate(&inbound(&h, &body, ts)).is_ok());
            if !body.is_empty() {
                let mut changed = body.clone();
                let i = flip.index(changed.len());
                changed[i] ^= 0x01;
                prop_assert_eq!(p.authenticate(&inbound(&h, &changed, ts)), Err(AuthFailure::Mismatch));
            }
        }
    }
}

//! Tribe, now Bettermode (community platform). Source: docs/providers.md "Tribe".
//!
//! - Auth: HMAC-SHA256 keyed by the app's signing secret over `<timestamp header, verbatim>:<raw
//!   body>`, 64 hex characters. Two header families: current `X-Bettermode-Signature` +
//!   `X-Bettermode-Request-Timestamp`, legacy `X-Tribe-Signature` + `X-Tribe-Request-Timestamp`.
//!   Signature and timestamp always come from one family; Bettermode's is preferred when both are
//!   complete. Several secrets accepted (rotation, several apps).
//! - Replay: the timestamp is in milliseconds (the public vector verifies only with 13 digits);
//!   more than `TRIBE_TOLERANCE_SECONDS` (default 900) from now, in either direction, is a 401.
//!   The official starter app checks only the future direction: docs/providers.md "Tribe:
//!   Timestamp and replay" says not to copy that. Default (same subsection): a 10-digit value is
//!   read as seconds.
//! - `TEST` is the URL handshake: verified like any request, answered with the same challenge,
//!   nothing stored or queued.
//! - `SUBSCRIPTION`: dedup key `data.id`, type `data.name` (never noun + verb, which are
//!   ambiguous), tenant `networkId`, occurred at `data.time`. Only `type` and `data` are required.
//!   Without `data.id` (never seen; our default) the key is the body's SHA-256 and a warning is
//!   logged: a retry re-sends the same bytes.
//! - Any other `type` (APP_INSTALLED, APP_UNINSTALLED, ...) is queued under the type lowercased
//!   (`app_installed`) and answered `{"type": <type>, "status": "SUCCEEDED"}`. Its key is the
//!   body's SHA-256, not `data.id`: in those types `data` is an object (an app installation)
//!   whose id repeats across distinct events (installed, then uninstalled), so keying on it would
//!   drop the second event as a duplicate. `data.id`, when present, is still the `event_id`.

use std::borrow::Cow;
use std::time::Duration;

use lambda_http::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use tracing::warn;

use crate::apigw::Sent;
use crate::clock::epoch_millis;
use crate::config::{ConfigError, Env};
use crate::provider::{
    body_field, json_fields, json_payload, secrets_for, EventKey, Inbound, InboundEvent,
    Inspection, Provider, Refusal, VerifiedRequest,
};
use crate::secret::{Secret, SecretList};
use crate::verify::{self, AuthFailure, Verified};

pub const NAME: &str = "tribe";
pub const SECRET_VAR: &str = "TRIBE_SIGNING_SECRET";
pub const TOLERANCE_VAR: &str = "TRIBE_TOLERANCE_SECONDS";
/// docs/providers.md "Tribe: Timestamp and replay": "reject when more than 15 minutes from now".
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(900);

/// The `type` of the URL handshake.
pub const TEST: &str = "TEST";
/// The `type` of community events.
pub const SUBSCRIPTION: &str = "SUBSCRIPTION";

/// A signature header and the timestamp header that goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderFamily {
    pub signature: &'static str,
    pub timestamp: &'static str,
}

/// Current headers (Tribe is now Bettermode).
pub const BETTERMODE: HeaderFamily = HeaderFamily {
    signature: "X-Bettermode-Signature",
    timestamp: "X-Bettermode-Request-Timestamp",
};

/// Legacy headers (docs/providers.md "Tribe: Headers").
pub const LEGACY: HeaderFamily = HeaderFamily {
    signature: "X-Tribe-Signature",
    timestamp: "X-Tribe-Request-Timestamp",
};

/// In order of preference.
const FAMILIES: [HeaderFamily; 2] = [BETTERMODE, LEGACY];

#[derive(Debug)]
pub struct Tribe {
    secrets: SecretList,
    tolerance: Duration,
}

impl Tribe {
    pub fn new(secrets: SecretList, tolerance: Duration) -> Self {
        Tribe { secrets, tolerance }
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let secs: u64 = env.parse_or(TOLERANCE_VAR, DEFAULT_TOLERANCE.as_secs())?;
        if secs == 0 {
            // A zero window would refuse every delivery: a configuration mistake, not a choice.
            return Err(ConfigError::Invalid {
                name: TOLERANCE_VAR.into(),
                why: "must be positive".into(),
            });
        }
        Ok(Tribe::new(
            env.mac_keys(SECRET_VAR, true)?,
            Duration::from_secs(secs),
        ))
    }
}

/// Milliseconds since the epoch from a timestamp header. Digits only; 10 digits are seconds
/// (docs/providers.md "Tribe: Timestamp and replay", default), anything else is milliseconds.
fn timestamp_millis(raw: &str) -> Result<i64, AuthFailure> {
    let digits = raw.trim();
    if digits.is_empty() {
        return Err(AuthFailure::Missing);
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AuthFailure::Malformed);
    }
    let value: i64 = digits.parse().map_err(|_| AuthFailure::Malformed)?;
    Ok(if digits.len() == 10 {
        value * 1000
    } else {
        value
    })
}

impl Provider for Tribe {
    fn name(&self) -> &'static str {
        NAME
    }

    fn authenticate(&self, request: &Inbound<'_>) -> Result<Verified, AuthFailure> {
        // The first family whose two headers are both present: a signature is never checked
        // against the other family's timestamp.
        let (signature, timestamp) = FAMILIES
            .iter()
            .find_map(|f| Some((request.header(f.signature)?, request.header(f.timestamp)?)))
            .ok_or(AuthFailure::Missing)?;
        let sent_ms = timestamp_millis(timestamp)?;
        // The window first, before any MAC: a request outside it costs no hash of its body,
        // whatever the number of secrets (`Stale` in the logs is then not proof of authenticity).
        let tolerance_ms = self.tolerance.as_millis() as u64;
        if epoch_millis(request.now).abs_diff(sent_ms) > tolerance_ms {
            return Err(AuthFailure::Stale);
        }
        // With a map of networks, only the network the body names is tried.
        let secrets = secrets_for(&self.secrets, request.body, "networkId")?;
        verify::hmac_sha256_hex(
            &secrets,
            &[timestamp.as_bytes(), b":", request.body],
            signature,
        )
    }

    fn inspect(&self, request: &VerifiedRequest<'_, '_>) -> Result<Inspection, Refusal> {
        let body = json_fields(request.body, &["type", "networkId", "data"])?;
        let kind = match (body.str("type"), body.raw("type")) {
            (Some(t), _) => t.into_owned(),
            (None, Some(_)) => return Err(Refusal::BadRequest("type must be a string".into())),
            (None, None) => return Err(Refusal::BadRequest("type is missing".into())),
        };
        let data = body
            .object("data", &["time", "id", "challenge", "name"])
            .ok()
            .flatten();
        let data_str = |name: &str| data.as_ref().and_then(|d| d.str(name)).map(Cow::into_owned);
        let tenant = body.str("networkId").map(Cow::into_owned);
        let occurred_at = data_str("time");
        let data_id = data_str("id");
        let (event_id, key, event_type, ack) = match kind.as_str() {
            TEST => {
                let challenge = data_str("challenge").ok_or_else(|| {
                    Refusal::BadRequest("data.challenge is missing or not a string".into())
                })?;
                return Ok(Inspection::Reply {
                    status: StatusCode::OK,
                    body: challenge_reply(&challenge),
                    tenant,
                });
            }
            SUBSCRIPTION => {
                if data.is_none() {
                    return Err(Refusal::BadRequest(
                        "data is missing or not an object".into(),
                    ));
                }
                let key = match data_id {
                    Some(id) => EventKey::id(id),
                    None => {
                        let key = EventKey::hash_of(request.body);
                        warn!(provider = NAME, body_sha256 = %key.to_event_id(),
                            "SUBSCRIPTION without data.id: keyed by the body's SHA-256");
                        key
                    }
                };
                let event_type = data_str("name").unwrap_or_else(|| "subscription".into());
                (key.to_event_id(), key, event_type, None)
            }
            other => {
                let key = EventKey::hash_of(request.body);
                let event_id = data_id.unwrap_or_else(|| key.to_event_id());
                let ack = json!({ "type": other, "status": "SUCCEEDED" });
                (event_id, key, other.to_ascii_lowercase(), Some(ack))
            }
        };
        Ok(Inspection::Events {
            events: vec![InboundEvent {
                key,
                event_id,
                event_type,
                occurred_at,
                tenant,
                payload: json_payload(request.body)?,
                fingerprint: None,
            }],
            ack,
        })
    }
}

/// The answer that passes the URL handshake (docs/providers.md "Tribe: Saving webhook URL"),
/// keys in the documented order.
pub fn challenge_reply(challenge: &str) -> Value {
    json!({ "type": TEST, "status": "SUCCEEDED", "data": { "challenge": challenge } })
}

/// The signature Tribe would send for `body` at `timestamp` (header value, verbatim).
pub fn sign(secret: &Secret, timestamp: &str, body: &[u8]) -> String {
    verify::sign_hex(secret, &[timestamp.as_bytes(), b":", body])
}

/// The request Tribe would send with `body` at `now`: signed with the first configured secret,
/// the timestamp in milliseconds, Bettermode's headers.
pub fn simulate(body: &[u8], env: &Env, now: OffsetDateTime) -> Result<Sent, ConfigError> {
    let secrets = env.secrets(SECRET_VAR)?;
    let tenant = body_field(body, "networkId");
    let secret = secrets.for_tenant(tenant.as_deref());
    let timestamp = epoch_millis(now).to_string();
    Ok(Sent::post("/", body.to_vec())
        .header("content-type", "application/json")
        .header(BETTERMODE.timestamp, timestamp.clone())
        .header(BETTERMODE.signature, sign(secret, &timestamp, body)))
}

/// Tribe's webhook request, typed (docs/providers.md "Tribe: Webhook requests structure").
/// Unknown fields (`currentSettings`, `entities`, ...) are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub network_id: Option<String>,
    #[serde(default)]
    pub context: Option<String>,
    #[serde(default)]
    pub entity_id: Option<String>,
    #[serde(default)]
    pub data: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `data` of a SUBSCRIPTION request: one community event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionEvent {
    /// Unique per event instance; the same on a retry.
    #[serde(default)]
    pub id: Option<String>,
    /// `post.published`, `member.verified`, ...: what to route on.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub noun: Option<String>,
    #[serde(default)]
    pub verb: Option<String>,
    #[serde(default)]
    pub time: Option<String>,
    /// Who performed the action.
    #[serde(default)]
    pub actor: Option<Actor>,
    /// The main object of the action.
    #[serde(default)]
    pub object: Option<Object>,
    /// The ids of the target and related objects.
    #[serde(default)]
    pub target: Option<Target>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Actor {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub role_id: Option<String>,
    #[serde(default)]
    pub role_type: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An object as Tribe's API returns it (post, member, space, ...): its id and everything else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    #[serde(default)]
    pub network_id: Option<String>,
    #[serde(default)]
    pub space_id: Option<String>,
    #[serde(default)]
    pub member_id: Option<String>,
    #[serde(default)]
    pub post_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The handshake's `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Challenge {
    pub challenge: String,
}

/// `data`, by `type`.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    Test(Challenge),
    /// Boxed: an event is large beside the other variants.
    Subscription(Box<SubscriptionEvent>),
    /// APP_INSTALLED, APP_UNINSTALLED and any type this model does not know: kept as sent.
    Other(Value),
}

impl Webhook {
    pub fn data(&self) -> Result<Data, serde_json::Error> {
        Ok(match self.kind.as_str() {
            TEST => Data::Test(serde_json::from_value(self.data.clone())?),
            SUBSCRIPTION => Data::Subscription(serde_json::from_value(self.data.clone())?),
            _ => Data::Other(self.data.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::Answer;
    use lambda_http::http::{HeaderMap, HeaderValue, Method};

    // The public vector (docs/providers.md "Tribe: Test vectors").
    const TEST_SECRET: &str = "9e2bb174144943d98df25f7fbd89753d";
    const TEST_TS: &str = "1649315900181";
    const TEST_BODY: &str = r#"{"networkId":"jpLyIGaMxu","context":"NETWORK","currentSettings":[],"type":"TEST","data":{"challenge":"22b4c546752f27207399d5f835a90808b3c6a34c"}}"#;
    const TEST_SIG: &str = "b6544929f924aad3553f79a75a186162053da99b3215e75c5359a0a3d91fb285";
    const TEST_RESPONSE: &str = r#"{"type":"TEST","status":"SUCCEEDED","data":{"challenge":"22b4c546752f27207399d5f835a90808b3c6a34c"}}"#;

    // Our own subscription vector (docs/providers.md "Tribe: Test vectors").
    const SUB_SECRET: &str = "tribe-signing-secret-example";
    const SUB_TS: &str = "1735689600123";
    const SUB_BODY: &str = r#"{"networkId":"LUNjAcpf92","context":"NETWORK","entityId":"LUNjAcpf92","currentSettings":[],"type":"SUBSCRIPTION","data":{"time":"2025-01-01T00:00:00.100Z","verb":"PUBLISHED","verbAction":"PUBLISHED","actor":{"id":"FLq5ZaUUna","roleId":"sThLxaQZd1","roleType":"admin"},"object":{"id":"0BFGF78M5DV05Fe","networkId":"LUNjAcpf92","spaceId":"dWBZxO8g6uJl","title":"Hello","isReply":false},"target":{"networkId":"LUNjAcpf92","spaceId":"dWBZxO8g6uJl","memberId":"FLq5ZaUUna"},"id":"01435cf2c7bb70b61ef8f9968908d977","name":"post.published","noun":"POST","shortDescription":"Publish Post"}}"#;
    const SUB_SIG: &str = "4eaefb00637aff87836183f55fa5d2e625bbc13d3aa2a1be76b8cc305914db81";
    const SUB_SIG_IF_SECONDS: &str =
        "7c352e416087976d428e92d5336e3a0f30bff3ec06d27a487db13ee51225223b";

    const MINUTE_MS: i64 = 60_000;

    fn at_ms(ms: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
    }

    fn tribe(secrets: &str) -> Tribe {
        Tribe::new(SecretList::parse(secrets).unwrap(), DEFAULT_TOLERANCE)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(
                lambda_http::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    fn inbound<'a>(headers: &'a HeaderMap, body: &'a [u8], now_ms: i64) -> Inbound<'a> {
        static POST: Method = Method::POST;
        Inbound {
            method: &POST,
            headers,
            path: "/",
            query: None,
            body,
            now: at_ms(now_ms),
        }
    }

    fn bettermode(sig: &str, ts: &str) -> HeaderMap {
        headers(&[(BETTERMODE.signature, sig), (BETTERMODE.timestamp, ts)])
    }

    fn inspect(provider: &Tribe, h: &HeaderMap, body: &str, now_ms: i64) -> Inspection {
        let req = inbound(h, body.as_bytes(), now_ms);
        let verified = VerifiedRequest::new(&req, provider.authenticate(&req).unwrap());
        provider.inspect(&verified).unwrap()
    }

    #[test]
    fn public_vector_verifies_with_the_millisecond_timestamp_only() {
        let secret = Secret::new(TEST_SECRET).unwrap();
        assert_eq!(sign(&secret, TEST_TS, TEST_BODY.as_bytes()), TEST_SIG);
        let t = tribe(&format!("another-app-secret,{TEST_SECRET}"));
        let now = 1_649_315_900_181;
        let h = bettermode(TEST_SIG, TEST_TS);
        assert!(t
            .authenticate(&inbound(&h, TEST_BODY.as_bytes(), now))
            .is_ok());
        // The same instant in seconds: the signature no longer matches.
        let h = bettermode(TEST_SIG, "1649315900");
        assert_eq!(
            t.authenticate(&inbound(&h, TEST_BODY.as_bytes(), now))
                .unwrap_err(),
            AuthFailure::Mismatch
        );
    }

    #[test]
    fn test_challenge_is_answered_byte_for_byte() {
        let t = tribe(TEST_SECRET);
        let h = bettermode(TEST_SIG, TEST_TS);
        let Inspection::Reply {
            status,
            body,
            tenant,
        } = inspect(&t, &h, TEST_BODY, 1_649_315_900_181)
        else {
            panic!("reply expected")
        };
        assert_eq!(tenant.as_deref(), Some("jpLyIGaMxu"));
        assert_eq!(status, StatusCode::OK);
        let response = Answer::Reply { status, body }.into_response();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(
            std::str::from_utf8(response.body().as_ref()).unwrap(),
            TEST_RESPONSE
        );
    }

    #[test]
    fn subscription_vector_verifies_and_gives_key_type_tenant_time() {
        let secret = Secret::new(SUB_SECRET).unwrap();
        assert_eq!(sign(&secret, SUB_TS, SUB_BODY.as_bytes()), SUB_SIG);
        assert_eq!(
            sign(&secret, "1735689600", SUB_BODY.as_bytes()),
            SUB_SIG_IF_SECONDS
        );
        let t = tribe(SUB_SECRET);
        let now = 1_735_689_600_123 + 2_000;
        // The signature computed over the seconds value does not verify with the ms header.
        let h = bettermode(SUB_SIG_IF_SECONDS, SUB_TS);
        assert_eq!(
            t.authenticate(&inbound(&h, SUB_BODY.as_bytes(), now))
                .unwrap_err(),
            AuthFailure::Mismatch
        );
        let h = bettermode(SUB_SIG, SUB_TS);
        let Inspection::Events { events, ack: None } = inspect(&t, &h, SUB_BODY, now) else {
            panic!("one event, default answer expected")
        };
        let e = &events[0];
        assert_eq!(e.key, EventKey::id("01435cf2c7bb70b61ef8f9968908d977"));
        assert_eq!(e.event_id, "01435cf2c7bb70b61ef8f9968908d977");
        assert_eq!(e.event_type, "post.published");
        assert_eq!(e.tenant.as_deref(), Some("LUNjAcpf92"));
        assert_eq!(e.occurred_at.as_deref(), Some("2025-01-01T00:00:00.100Z"));
    }

    #[test]
    fn legacy_headers_verify_and_bettermode_is_preferred() {
        let t = tribe(SUB_SECRET);
        let now = 1_735_689_600_123;
        let legacy = headers(&[(LEGACY.signature, SUB_SIG), (LEGACY.timestamp, SUB_TS)]);
        assert!(t
            .authenticate(&inbound(&legacy, SUB_BODY.as_bytes(), now))
            .is_ok());
        // Both families complete: Bettermode's is the one checked.
        let both = headers(&[
            (BETTERMODE.signature, &"0".repeat(64)),
            (BETTERMODE.timestamp, SUB_TS),
            (LEGACY.signature, SUB_SIG),
            (LEGACY.timestamp, SUB_TS),
        ]);
        assert_eq!(
            t.authenticate(&inbound(&both, SUB_BODY.as_bytes(), now))
                .unwrap_err(),
            AuthFailure::Mismatch
        );
        let both = headers(&[
            (BETTERMODE.signature, SUB_SIG),
            (BETTERMODE.timestamp, SUB_TS),
            (LEGACY.signature, &"0".repeat(64)),
            (LEGACY.timestamp, SUB_TS),
        ]);
        assert!(t
            .authenticate(&inbound(&both, SUB_BODY.as_bytes(), now))
            .is_ok());
    }

    #[test]
    fn signature_and_timestamp_from_different_families_are_refused() {
        let t = tribe(SUB_SECRET);
        let now = 1_735_689_600_123;
        for h in [
            headers(&[(BETTERMODE.signature, SUB_SIG), (LEGACY.timestamp, SUB_TS)]),
            headers(&[(LEGACY.signature, SUB_SIG), (BETTERMODE.timestamp, SUB_TS)]),
            headers(&[(BETTERMODE.signature, SUB_SIG)]),
            headers(&[(BETTERMODE.timestamp, SUB_TS)]),
            HeaderMap::new(),
        ] {
            assert_eq!(
                t.authenticate(&inbound(&h, SUB_BODY.as_bytes(), now))
                    .unwrap_err(),
                AuthFailure::Missing,
                "{h:?}"
            );
        }
    }

    #[test]
    fn replay_window_is_fifteen_minutes_both_ways() {
        let t = tribe(SUB_SECRET);
        let sent = 1_735_689_600_123;
        let h = bettermode(SUB_SIG, SUB_TS);
        let check = |now: i64| t.authenticate(&inbound(&h, SUB_BODY.as_bytes(), now));
        for ok in [
            sent,
            sent + 15 * MINUTE_MS,
            sent - 15 * MINUTE_MS,
            sent + MINUTE_MS,
        ] {
            assert!(check(ok).is_ok(), "{}", ok - sent);
        }
        // Received 15 min 1 s after it was sent (a replay), or sent 15 min 1 s in the future.
        for stale in [sent + 15 * MINUTE_MS + 1_000, sent - 15 * MINUTE_MS - 1_000] {
            assert_eq!(
                check(stale).unwrap_err(),
                AuthFailure::Stale,
                "{}",
                stale - sent
            );
        }
    }

    #[test]
    fn tolerance_is_configurable_and_never_zero() {
        let env = |tol: &str| Env::from_pairs([(SECRET_VAR, SUB_SECRET), (TOLERANCE_VAR, tol)]);
        let t = Tribe::from_env(&env("60")).unwrap();
        assert_eq!(t.tolerance, Duration::from_secs(60));
        let h = bettermode(SUB_SIG, SUB_TS);
        let later = 1_735_689_600_123 + 61_000;
        assert_eq!(
            t.authenticate(&inbound(&h, SUB_BODY.as_bytes(), later))
                .unwrap_err(),
            AuthFailure::Stale
        );
        assert!(matches!(
            Tribe::from_env(&env("0")),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            Tribe::from_env(&env("soon")),
            Err(ConfigError::Invalid { .. })
        ));
        let default = Tribe::from_env(&Env::from_pairs([(SECRET_VAR, SUB_SECRET)])).unwrap();
        assert_eq!(default.tolerance, DEFAULT_TOLERANCE);
        assert_eq!(
            Tribe::from_env(&Env::default()).unwrap_err(),
            ConfigError::Missing(SECRET_VAR.into())
        );
    }

    #[test]
    fn ten_digit_timestamps_are_seconds_and_non_numeric_ones_refused() {
        let t = tribe(SUB_SECRET);
        let secret = Secret::new(SUB_SECRET).unwrap();
        let now = 1_735_689_600_123;
        let h = bettermode(
            &sign(&secret, "1735689600", SUB_BODY.as_bytes()),
            "1735689600",
        );
        assert!(t
            .authenticate(&inbound(&h, SUB_BODY.as_bytes(), now))
            .is_ok());
        // Read as seconds, it is on time; read as milliseconds it would be 1970.
        assert_eq!(timestamp_millis("1735689600"), Ok(1_735_689_600_000));
        assert_eq!(timestamp_millis("1735689600123"), Ok(1_735_689_600_123));
        for bad in [
            "17356896OO",
            "-1735689600",
            "1.7e12",
            "0x1234",
            "99999999999999999999",
        ] {
            let h = bettermode(&sign(&secret, bad, SUB_BODY.as_bytes()), bad);
            assert_eq!(
                t.authenticate(&inbound(&h, SUB_BODY.as_bytes(), now))
                    .unwrap_err(),
                AuthFailure::Malformed,
                "{bad}"
            );
        }
    }

    #[test]
    fn other_types_are_queued_under_their_type_with_a_succeeded_ack() {
        let t = tribe(SUB_SECRET);
        let secret = Secret::new(SUB_SECRET).unwrap();
        let body = r#"{"networkId":"LUNjAcpf92","context":"NETWORK","currentSettings":[],"type":"APP_INSTALLED","data":{"id":"inst-1","appId":"app-1","status":"ENABLED"}}"#;
        let h = bettermode(&sign(&secret, SUB_TS, body.as_bytes()), SUB_TS);
        let Inspection::Events {
            events,
            ack: Some(ack),
        } = inspect(&t, &h, body, 1_735_689_600_123)
        else {
            panic!("event with ack expected")
        };
        assert_eq!(ack, json!({"type": "APP_INSTALLED", "status": "SUCCEEDED"}));
        assert_eq!(
            ack.to_string(),
            r#"{"type":"APP_INSTALLED","status":"SUCCEEDED"}"#
        );
        let e = &events[0];
        assert_eq!(e.event_type, "app_installed");
        assert_eq!(e.event_id, "inst-1");
        assert_eq!(e.key, EventKey::hash_of(body.as_bytes()));
        assert_eq!(e.tenant.as_deref(), Some("LUNjAcpf92"));
    }

    #[test]
    fn subscription_without_id_is_keyed_by_body_hash_and_without_name_typed_subscription() {
        let t = tribe(SUB_SECRET);
        let secret = Secret::new(SUB_SECRET).unwrap();
        let body = r#"{"type":"SUBSCRIPTION","data":{"noun":"POST","verb":"PUBLISHED"}}"#;
        let h = bettermode(&sign(&secret, SUB_TS, body.as_bytes()), SUB_TS);
        let Inspection::Events { events, .. } = inspect(&t, &h, body, 1_735_689_600_123) else {
            panic!("event expected")
        };
        assert_eq!(events[0].key, EventKey::hash_of(body.as_bytes()));
        assert_eq!(events[0].event_type, "subscription");
        assert_eq!(events[0].tenant, None);
    }

    #[test]
    fn malformed_envelopes_are_refused_naming_the_field() {
        let t = tribe(SUB_SECRET);
        let secret = Secret::new(SUB_SECRET).unwrap();
        for (body, field) in [
            (r#"{"data":{"id":"1"}}"#, "type is missing"),
            (r#"{"type":7,"data":{}}"#, "type must be a string"),
            (r#"{"type":"SUBSCRIPTION"}"#, "data is missing"),
            (r#"{"type":"SUBSCRIPTION","data":"x"}"#, "data is missing"),
            (r#"{"type":"TEST","data":{}}"#, "data.challenge is missing"),
        ] {
            let h = bettermode(&sign(&secret, SUB_TS, body.as_bytes()), SUB_TS);
            let req = inbound(&h, body.as_bytes(), 1_735_689_600_123);
            let verified = VerifiedRequest::new(&req, t.authenticate(&req).unwrap());
            let Err(Refusal::BadRequest(why)) = t.inspect(&verified) else {
                panic!("400 expected for {body}")
            };
            assert!(why.starts_with(field), "{why}");
        }
    }

    #[test]
    fn simulate_signs_with_the_first_secret_and_the_time_in_ms() {
        let env = Env::from_pairs([(SECRET_VAR, "tribe-dev-secret-0001,second-secret")]);
        let now = 1_735_689_600_123;
        let sent = simulate(SUB_BODY.as_bytes(), &env, at_ms(now)).unwrap();
        let header = |n: &str| {
            sent.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(header(BETTERMODE.timestamp), "1735689600123");
        assert_eq!(header("content-type"), "application/json");
        let t = Tribe::from_env(&env).unwrap();
        let h = bettermode(&header(BETTERMODE.signature), &header(BETTERMODE.timestamp));
        assert!(t.authenticate(&inbound(&h, &sent.body, now)).is_ok());
    }

    #[test]
    fn typed_model_reads_subscription_and_keeps_unknown_fields() {
        let webhook: Webhook = serde_json::from_str(SUB_BODY).unwrap();
        assert_eq!(webhook.network_id.as_deref(), Some("LUNjAcpf92"));
        assert_eq!(webhook.entity_id.as_deref(), Some("LUNjAcpf92"));
        assert_eq!(webhook.extra["currentSettings"], json!([]));
        let Data::Subscription(e) = webhook.data().unwrap() else {
            panic!("subscription expected")
        };
        assert_eq!(e.name.as_deref(), Some("post.published"));
        assert_eq!(e.actor.unwrap().role_type.as_deref(), Some("admin"));
        assert_eq!(e.object.unwrap().fields["title"], "Hello");
        assert_eq!(e.target.unwrap().member_id.as_deref(), Some("FLq5ZaUUna"));
        assert_eq!(e.extra["verbAction"], "PUBLISHED");

        let test: Webhook = serde_json::from_str(TEST_BODY).unwrap();
        assert_eq!(
            test.data().unwrap(),
            Data::Test(Challenge {
                challenge: "22b4c546752f27207399d5f835a90808b3c6a34c".into()
            })
        );
    }
}

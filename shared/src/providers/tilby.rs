//! Tilby (point of sale). Source: docs/providers.md "Tilby".
//!
//! - Auth (docs/providers.md "Tilby: Authentication", default): a URL token as a path segment
//!   (`TILBY_URL_TOKEN`, list, constant time against every segment), always. When
//!   `TILBY_SIGNING_TOKEN` is set, also HMAC-SHA256 of the raw body keyed by the shop's static
//!   token, hex; read from the header named by `TILBY_SIGNATURE_HEADER`, or, while that is
//!   unset, from whichever header carries a matching value (its *name* is logged so the operator
//!   can pin it; no public page names it). Setting `TILBY_SIGNATURE_HEADER` without
//!   `TILBY_SIGNING_TOKEN` is a config error (fail closed: the operator expects a signature
//!   check).
//! - Optional `TILBY_ENVIRONMENT_IDS`: another shop (or none named) → 401, handshakes included.
//! - Handshake `type: SUBSCRIBED` → 200 `{"status":"subscribed"}`, nothing stored or queued.
//! - Success is exactly 200 (docs/providers.md "Tilby: Delivery and retries"): the pipeline
//!   answers 200 for accepted and duplicate events alike.
//! - Event type `<entity_name>.<type lowercase>`; `type` compared case-insensitively. When the
//!   body lacks `entity_name` or `type`, the two path segments after the token supply them
//!   (`/<token>/sales/closed`), else `unknown`. Tenant `environment_id`, occurred at `time`.
//! - One event per entry of `entities` (imports carry up to 80). Payload = the envelope without
//!   `entities` and `nRetry`, plus `entity`. `from_user` (an email) is kept for the consumer but
//!   never logged. Dedup key `<notification_uuid>:<entity uuid, else id, else SHA-256 of the
//!   entity JSON>`; without `notification_uuid`, SHA-256 of `entity_name`, type, `time` and the
//!   entity JSON. Never a body hash: `nRetry` grows on each retry (docs/providers.md "Tilby:
//!   Dedup key").
//! - A notification without entities (absent, null or `[]`) is still queued as one event from
//!   the envelope, keyed the same way: an authentic event is never dropped for its shape (and
//!   anything but 200 makes Tilby retry and email the shop).

use std::borrow::Cow;

use lambda_http::http::{HeaderName, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;
use tracing::{info, warn};

use crate::apigw::Sent;
use crate::config::{ConfigError, Env};
use crate::envelope::{describe_json_error, Payload};
use crate::json::{self, Fields, Kind, NotAList, RawJson};
use crate::provider::{
    body_field, json_fields, path_token, secrets_for, url_tokens, EventKey, Inbound, InboundEvent,
    Inspection, Provider, Refusal, VerifiedRequest,
};
use crate::secret::{Secret, SecretList};
use crate::verify::{self, sha256_hex, AuthFailure, Verified};

pub const NAME: &str = "tilby";
pub const URL_TOKEN_VAR: &str = "TILBY_URL_TOKEN";
pub const SIGNING_TOKEN_VAR: &str = "TILBY_SIGNING_TOKEN";
pub const SIGNATURE_HEADER_VAR: &str = "TILBY_SIGNATURE_HEADER";
pub const ENVIRONMENT_IDS_VAR: &str = "TILBY_ENVIRONMENT_IDS";
/// The header the simulator signs in. Tilby's real header name is not public; the receiver
/// finds it by its value unless `TILBY_SIGNATURE_HEADER` pins one.
pub const SIMULATED_SIGNATURE_HEADER: &str = "x-tilby-signature";
const HANDSHAKE: &str = "SUBSCRIBED";
const UNKNOWN: &str = "unknown";

#[derive(Debug)]
pub struct Tilby {
    url_tokens: SecretList,
    signing: Option<Signing>,
    /// Shops accepted; empty = any.
    environments: Vec<String>,
}

#[derive(Debug)]
struct Signing {
    /// Static API tokens of the shops (several shops, rotation). Never logged.
    tokens: SecretList,
    /// Pinned header; `None` = discover it.
    header: Option<HeaderName>,
}

impl Tilby {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let header = env
            .get(SIGNATURE_HEADER_VAR)
            .map(|h| {
                HeaderName::from_bytes(h.as_bytes()).map_err(|_| ConfigError::Invalid {
                    name: SIGNATURE_HEADER_VAR.into(),
                    why: "not a valid HTTP header name".into(),
                })
            })
            .transpose()?;
        let signing = match (env.optional_mac_keys(SIGNING_TOKEN_VAR, true)?, header) {
            (Some(tokens), header) => Some(Signing { tokens, header }),
            (None, Some(_)) => return Err(ConfigError::Missing(SIGNING_TOKEN_VAR.into())),
            (None, None) => None,
        };
        Ok(Tilby {
            url_tokens: url_tokens(env, URL_TOKEN_VAR)?,
            signing,
            environments: env.list(ENVIRONMENT_IDS_VAR),
        })
    }

    /// The position of the path segment holding a configured token. Every segment is compared,
    /// each in constant time.
    fn token_segment(&self, request: &Inbound<'_>) -> Result<(Verified, usize), AuthFailure> {
        path_token(&self.url_tokens, request)
    }

    /// `entity_name` and `type` from the two path segments after the token, if any.
    fn path_names<'a>(&self, request: &'a Inbound<'_>) -> (Option<&'a str>, Option<&'a str>) {
        let Ok((_, at)) = self.token_segment(request) else {
            return (None, None);
        };
        let mut after = request.path_segments().skip(at + 1);
        (after.next(), after.next())
    }

    fn environment_allowed(&self, environment: Option<&str>) -> bool {
        self.environments.is_empty()
            || environment.is_some_and(|e| self.environments.iter().any(|a| a == e))
    }
}

impl Signing {
    fn verify(&self, request: &Inbound<'_>) -> Result<Verified, AuthFailure> {
        let Some(name) = &self.header else {
            return self.discover(request);
        };
        let mut values = Vec::new();
        for value in request.headers.get_all(name) {
            let value = value.to_str().map_err(|_| AuthFailure::Malformed)?;
            values.push(decode_signature(value).ok_or(AuthFailure::Malformed)?);
        }
        if values.is_empty() {
            return Err(AuthFailure::Missing);
        }
        let tokens = secrets_for(&self.tokens, request.body, "environment_id")?;
        // One MAC per token, compared with every value the header carries.
        verify::hmac_sha256_any(
            &tokens,
            |t| Some(t.expose().to_vec()),
            &[request.body],
            &values,
        )
    }

    /// Tries every header whose value looks like a hex HMAC-SHA256 (64 hex characters): one
    /// MAC of the body per token, compared with every candidate, however many headers there
    /// are. Logs the name of the one that verifies, never a value.
    fn discover(&self, request: &Inbound<'_>) -> Result<Verified, AuthFailure> {
        let candidates: Vec<(&HeaderName, [u8; 32])> = request
            .headers
            .iter()
            .filter_map(|(name, value)| Some((name, decode_signature(value.to_str().ok()?)?)))
            .collect();
        if !candidates.is_empty() {
            let tokens = secrets_for(&self.tokens, request.body, "environment_id")?;
            let values: Vec<[u8; 32]> = candidates.iter().map(|(_, v)| *v).collect();
            let found = verify::hmac_sha256_which(&tokens, &[request.body], &values);
            if let Some((proof, at)) = found {
                info!(provider = NAME, header = candidates[at].0.as_str(),
                    "Tilby signature verified in this header; set {SIGNATURE_HEADER_VAR} to its name to pin it");
                return Ok(proof);
            }
        }
        let candidates = candidates.len();
        let names: Vec<&str> = request.headers.keys().map(HeaderName::as_str).collect();
        warn!(provider = NAME, candidates, headers = %names.join(","),
            "no request header carries a valid Tilby signature");
        Err(if candidates == 0 {
            AuthFailure::Missing
        } else {
            AuthFailure::Mismatch
        })
    }
}

impl Provider for Tilby {
    fn name(&self) -> &'static str {
        NAME
    }

    fn authenticate(&self, request: &Inbound<'_>) -> Result<Verified, AuthFailure> {
        let (proof, _) = self.token_segment(request)?;
        match &self.signing {
            // Both must hold, and with tenant maps both must speak for the same shop.
            Some(signing) => proof.and(signing.verify(request)?),
            None => Ok(proof),
        }
    }

    fn inspect(&self, request: &VerifiedRequest<'_, '_>) -> Result<Inspection, Refusal> {
        let body = json_fields(request.body, NOTIFICATION_FIELDS)?;
        let text = |name: &str| body.str(name).map(Cow::into_owned);
        let tenant = text("environment_id");
        if !self.environment_allowed(tenant.as_deref()) {
            return Err(Refusal::Unauthorized(AuthFailure::TenantRefused));
        }
        let kind = text("type").map(|k| k.to_ascii_lowercase());
        if kind
            .as_deref()
            .is_some_and(|k| k.eq_ignore_ascii_case(HANDSHAKE))
        {
            info!(
                provider = NAME,
                entity_name = text("entity_name").as_deref(),
                environment_id = tenant.as_deref(),
                "Tilby subscription handshake answered"
            );
            return Ok(Inspection::Reply {
                status: StatusCode::OK,
                body: json!({"status": "subscribed"}),
                tenant,
            });
        }
        let (path_entity, path_type) = self.path_names(request);
        let entity_name = text("entity_name")
            .or(path_entity.map(str::to_owned))
            .unwrap_or_else(|| UNKNOWN.to_owned());
        let kind = kind
            .or_else(|| path_type.map(str::to_ascii_lowercase))
            .unwrap_or_else(|| UNKNOWN.to_owned());
        // Counted before any entity is read into a list, claimed or sent.
        let entities = match body.raw("entities") {
            None => Vec::new(),
            Some(list) => match json::elements(list, request.max_events()) {
                Ok(list) => list,
                Err(NotAList::TooMany) => return Err(Refusal::TooManyEvents(request.max_events())),
                Err(NotAList::Kind(Kind::Null)) => Vec::new(),
                Err(NotAList::Kind(Kind::Object)) => vec![list],
                Err(NotAList::Kind(_)) => {
                    return Err(Refusal::BadRequest("entities is not a list".into()))
                }
            },
        };
        let shared = shared_members(request.body, &body, !entities.is_empty())?;
        // Each event repeats the shared members: the total is bounded before any is built.
        let total = entities
            .iter()
            .map(|e| shared.len() + e.get().len() + r#",{"entity":}"#.len())
            .sum::<usize>();
        if total > request.max_payload_bytes() {
            return Err(Refusal::TooLarge(request.max_payload_bytes()));
        }
        let time = text("time");
        let common = Common {
            event_type: format!("{entity_name}.{kind}"),
            hash_prefix: format!("{entity_name}\n{kind}\n{}\n", time.as_deref().unwrap_or("")),
            notification_uuid: text("notification_uuid"),
            occurred_at: time,
            tenant,
        };
        let events = if entities.is_empty() {
            vec![common.event(None, &shared)?]
        } else {
            entities
                .into_iter()
                .map(|entity| common.event(Some(entity), &shared))
                .collect::<Result<_, _>>()?
        };
        Ok(Inspection::Events { events, ack: None })
    }
}

/// The members of a notification [`Tilby::inspect`] reads; the others travel unread.
const NOTIFICATION_FIELDS: &[&str] = &[
    "type",
    "entity_name",
    "time",
    "notification_uuid",
    "environment_id",
    "client_id",
    "from_user",
    "entity",
    "entities",
    "nRetry",
];

/// The notification's members that every event of it carries, as the sender wrote them: all
/// but `entities` and `nRetry` (it grows on every retry: it must not reach a key, a
/// fingerprint or the payload), and but `entity` when the events carry their own. A member the
/// typed model reads is written once, at its last occurrence (the value a tree would keep);
/// others as sent.
fn shared_members(body: &[u8], fields: &Fields<'_>, own_entity: bool) -> Result<String, Refusal> {
    let mut out = String::new();
    json::write_members(body, &mut out, &mut |name, value| match name {
        "entities" | "nRetry" => false,
        "entity" if own_entity => false,
        _ => match fields.raw(name) {
            Some(last) if NOTIFICATION_FIELDS.contains(&name) => std::ptr::eq(last, value),
            _ => true,
        },
    })
    .map_err(|e| Refusal::BadRequest(e.to_string()))?;
    Ok(out)
}

/// What the events of one notification share.
struct Common {
    event_type: String,
    /// `entity_name \n type \n time \n`, hashed with an entity's JSON when there is no
    /// notification_uuid.
    hash_prefix: String,
    notification_uuid: Option<String>,
    occurred_at: Option<String>,
    tenant: Option<String>,
}

impl Common {
    /// One event: the shared members and `entity`, or the shared members alone when the
    /// notification carried no entity. The content hashed is canonical JSON (members sorted at
    /// every level), the same bytes on every retry whatever order Tilby writes them in.
    fn event(&self, entity: Option<&RawValue>, shared: &str) -> Result<InboundEvent, Refusal> {
        let mut text =
            String::with_capacity(shared.len() + entity.map_or(0, |e| e.get().len()) + 12);
        text.push('{');
        text.push_str(shared);
        if let Some(entity) = entity {
            if !shared.is_empty() {
                text.push(',');
            }
            text.push_str(r#""entity":"#);
            text.push_str(entity.get());
        }
        text.push('}');
        let payload =
            RawJson::from_string(text).map_err(|e| Refusal::BadRequest(describe_json_error(&e)))?;
        let content = entity.unwrap_or(payload.raw());
        // Three shapes, three arities: a hash, the notification alone, the notification and
        // the entity's id, or the notification and the entity's content hash. The canonical
        // text is held only where the key is made of it; elsewhere it is hashed as written.
        let (key, fingerprint) = match (&self.notification_uuid, entity) {
            (None, _) => {
                let content = json::canonical(content);
                let key = format!("{}{content}", self.hash_prefix);
                (
                    EventKey::hash_of(key.as_bytes()),
                    sha256_hex(content.as_bytes()),
                )
            }
            (Some(n), None) => (EventKey::id(n.clone()), json::canonical_sha256(content)),
            (Some(n), Some(entity)) => {
                let fingerprint = json::canonical_sha256(entity);
                let key = match entity_ref(entity) {
                    Some(r) => EventKey::parts([n.clone(), r]),
                    None => EventKey::parts([n.clone(), "sha256".to_owned(), fingerprint.clone()]),
                };
                (key, fingerprint)
            }
        };
        Ok(InboundEvent {
            event_id: key.to_event_id(),
            key,
            event_type: self.event_type.clone(),
            occurred_at: self.occurred_at.clone(),
            tenant: self.tenant.clone(),
            payload: Payload::Json(payload),
            fingerprint: Some(fingerprint),
        })
    }
}

/// A hex HMAC-SHA256 (64 hex digits, either case), decoded.
fn decode_signature(value: &str) -> Option<[u8; 32]> {
    let value = value.trim();
    let mut out = [0u8; 32];
    (value.len() == 64 && hex::decode_to_slice(value, &mut out).is_ok()).then_some(out)
}

/// An entity's `uuid`, else its `id` (a string, or a number as written).
fn entity_ref(entity: &RawValue) -> Option<String> {
    let found = json::fields(entity.get().as_bytes(), &["uuid", "id"]).ok()?;
    let field = |name: &str| match found.kind(name)? {
        Kind::String => found.str(name).map(Cow::into_owned),
        Kind::Number => found.scalar(name),
        _ => None,
    };
    field("uuid").or_else(|| field("id"))
}

/// The signature Tilby sends for `body`: hex HMAC-SHA256 keyed by the static token.
pub fn sign(token: &Secret, body: &[u8]) -> String {
    verify::sign_hex(token, &[body])
}

/// The request Tilby would send with `body`: POST to `/<first URL token>`, JSON, signed with
/// the first static token when one is configured, in `TILBY_SIGNATURE_HEADER` or else
/// [`SIMULATED_SIGNATURE_HEADER`].
pub fn simulate(body: &[u8], env: &Env, _now: OffsetDateTime) -> Result<Sent, ConfigError> {
    let tenant = body_field(body, "environment_id");
    let tokens = env.secrets(URL_TOKEN_VAR)?;
    let token = String::from_utf8_lossy(tokens.for_tenant(tenant.as_deref()).expose()).into_owned();
    let mut sent = Sent::post(&format!("/{token}"), body.to_vec())
        .header("content-type", "application/json")
        .header("user-agent", "Tilby-Webhooks");
    if let Some(signing) = env.optional_secrets(SIGNING_TOKEN_VAR)? {
        let header = env
            .get(SIGNATURE_HEADER_VAR)
            .unwrap_or(SIMULATED_SIGNATURE_HEADER);
        sent = sent.header(header, sign(signing.for_tenant(tenant.as_deref()), body));
    }
    Ok(sent)
}

/// Personal data (an email address): serialized as sent, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Personal(pub String);

impl std::fmt::Debug for Personal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The request sent when a webhook is created (docs/providers.md "Tilby: Handshake"). Answered,
/// never queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handshake {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub entity_name: Option<String>,
    #[serde(default)]
    pub time: Option<String>,
    #[serde(default)]
    pub environment_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A notification as Tilby posts it (docs/providers.md "Tilby: Event envelope"): the envelope
/// and its entities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// CREATED, UPDATED, DELETED or CLOSED; case varies between sources.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub entity_name: Option<String>,
    #[serde(default)]
    pub time: Option<String>,
    #[serde(default)]
    pub notification_uuid: Option<String>,
    #[serde(default)]
    pub environment_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub from_user: Option<Personal>,
    #[serde(default)]
    pub entities: Vec<Value>,
    /// Grows on each retry.
    #[serde(rename = "nRetry", default)]
    pub n_retry: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One queued Tilby event (the envelope's `payload`): the notification's fields with one
/// `entity` instead of `entities`, and no `nRetry`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityEvent {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub entity_name: Option<String>,
    #[serde(default)]
    pub time: Option<String>,
    #[serde(default)]
    pub notification_uuid: Option<String>,
    #[serde(default)]
    pub environment_id: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub from_user: Option<Personal>,
    /// The entity as the API returns it (a sale, an item, a customer…); absent for a
    /// notification that carried none.
    #[serde(default)]
    pub entity: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl EntityEvent {
    /// The entity's `uuid`, else its `id`.
    pub fn entity_ref(&self) -> Option<String> {
        let entity = serde_json::value::to_raw_value(self.entity.as_ref()?).ok()?;
        entity_ref(&entity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::http::{HeaderMap, HeaderValue, Method};
    use std::collections::HashSet;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    // docs/providers.md "Tilby: Test vectors".
    const TOKEN: &str = "tilby-static-token-EXAMPLE-0000";
    const BODY: &str = r#"{"type":"CLOSED","entity_name":"sales","time":"2022-03-24T10:25:03.499Z","notification_uuid":"625bd8dc-f13c-4d43-9ca7-39c9a26c8f9c","environment_id":"s3_e2e_restaurant","client_id":"SclobyElectron3","from_user":"mario.rossi@example.com","entities":[{"id":29,"uuid":"235f2cd2-4cf1-4550-acab-b6248ad99dfc","external_id":"ext-1","status":"closed","final_amount":18}],"nRetry":0}"#;
    const SIGNATURE: &str = "0900c808a34282bc9ad2324a815d0c56538dbcb2a6f82f74c450646dd3ce59f2";
    const SUB_BODY: &str = r#"{"type":"SUBSCRIBED","entity_name":"sales","time":"2022-02-23T15:43:31.714Z","environment_id":"s3_e2e_restaurant","client_id":"SclobyElectron3"}"#;
    const SUB_SIGNATURE: &str = "638010dc5e84d64b4c1d7168acc31691c399d489cff4e0e6cacc4c4f326bdd9a";
    const URL_TOKEN: &str = "url-token-0000001";

    const IMPORT: &str = include_str!("../../../events/tilby/customers.import-80.json");
    const SUBSCRIBED: &str = include_str!("../../../events/tilby/subscribed.json");
    const SALES_CLOSED: &str = include_str!("../../../events/tilby/sales.closed.json");
    const ITEMS_UPDATED: &str = include_str!("../../../events/tilby/items.updated.json");

    static POST: Method = Method::POST;

    fn tilby(extra: &[(&str, &str)]) -> Tilby {
        let mut env = Env::from_pairs([(URL_TOKEN_VAR, "other-token-0000009,url-token-0000001")]);
        for (k, v) in extra {
            env.set(k, v);
        }
        Tilby::from_env(&env).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn inbound<'a>(path: &'a str, headers: &'a HeaderMap, body: &'a [u8]) -> Inbound<'a> {
        Inbound {
            method: &POST,
            headers,
            path,
            query: None,
            body,
            now: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn inspect(t: &Tilby, req: &Inbound<'_>) -> Result<Inspection, Refusal> {
        let verified = VerifiedRequest::new(req, t.authenticate(req).expect("authenticated"));
        t.inspect(&verified)
    }

    fn events(t: &Tilby, path: &str, body: &str) -> Vec<InboundEvent> {
        let h = HeaderMap::new();
        match inspect(t, &inbound(path, &h, body.as_bytes())).unwrap() {
            Inspection::Events { events, ack: None } => events,
            other => panic!("events expected, got {other:?}"),
        }
    }

    #[test]
    fn vectors_sign_and_verify_in_a_discovered_or_pinned_header() {
        let key = Secret::new(TOKEN).unwrap();
        assert_eq!(sign(&key, BODY.as_bytes()), SIGNATURE);
        assert_eq!(sign(&key, SUB_BODY.as_bytes()), SUB_SIGNATURE);

        let discovering = tilby(&[(SIGNING_TOKEN_VAR, &format!("other-static-0,{TOKEN}"))]);
        let path = format!("/tilby/{URL_TOKEN}");
        for name in ["x-signature", "X-Tilby-Hmac", "whatever"] {
            let h = headers(&[("content-type", "application/json"), (name, SIGNATURE)]);
            assert!(discovering
                .authenticate(&inbound(&path, &h, BODY.as_bytes()))
                .is_ok());
        }
        let upper = headers(&[("x-sig", &SUB_SIGNATURE.to_uppercase())]);
        assert!(discovering
            .authenticate(&inbound(&path, &upper, SUB_BODY.as_bytes()))
            .is_ok());
        let h = headers(&[("x-signature", SIGNATURE)]);
        assert_eq!(
            discovering
                .authenticate(&inbound(&path, &h, SUB_BODY.as_bytes()))
                .unwrap_err(),
            AuthFailure::Mismatch
        );
        assert_eq!(
            discovering
                .authenticate(&inbound(&path, &HeaderMap::new(), BODY.as_bytes()))
                .unwrap_err(),
            AuthFailure::Missing
        );

        let pinned = tilby(&[
            (SIGNING_TOKEN_VAR, TOKEN),
            (SIGNATURE_HEADER_VAR, "X-Tilby-Signature"),
        ]);
        let right = headers(&[("x-tilby-signature", SIGNATURE)]);
        let elsewhere = headers(&[("x-other", SIGNATURE)]);
        assert!(pinned
            .authenticate(&inbound(&path, &right, BODY.as_bytes()))
            .is_ok());
        assert_eq!(
            pinned
                .authenticate(&inbound(&path, &elsewhere, BODY.as_bytes()))
                .unwrap_err(),
            AuthFailure::Missing
        );
        // The URL token is required as well as the signature.
        assert_eq!(
            pinned
                .authenticate(&inbound("/tilby/nope", &right, BODY.as_bytes()))
                .unwrap_err(),
            AuthFailure::Mismatch
        );
    }

    #[test]
    fn url_token_is_any_path_segment_matching_a_configured_token() {
        let t = tilby(&[]);
        let h = HeaderMap::new();
        let ok = |path: &str| t.authenticate(&inbound(path, &h, b"{}")).is_ok();
        assert!(ok("/url-token-0000001"));
        assert!(ok("/prod/tilby/url-token-0000001/sales/closed"));
        assert!(ok("/other-token-0000009"));
        assert!(!ok("/url-token-000"));
        assert!(!ok("/url-token-00000011"));
        assert!(!ok("/tilby/url-token-0000001x"));
        assert_eq!(
            t.authenticate(&inbound("/", &h, b"{}")).unwrap_err(),
            AuthFailure::Missing
        );
    }

    #[test]
    fn configuration_fails_closed() {
        let err = |pairs: &[(&str, &str)]| {
            Tilby::from_env(&Env::from_pairs(pairs.iter().copied())).unwrap_err()
        };
        assert_eq!(err(&[]), ConfigError::Missing(URL_TOKEN_VAR.into()));
        assert_eq!(
            err(&[(URL_TOKEN_VAR, "t"), (SIGNATURE_HEADER_VAR, "x-sig")]),
            ConfigError::Missing(SIGNING_TOKEN_VAR.into())
        );
        assert!(matches!(
            err(&[
                (URL_TOKEN_VAR, "t"),
                (SIGNING_TOKEN_VAR, "s"),
                (SIGNATURE_HEADER_VAR, "x sig")
            ]),
            ConfigError::Invalid { .. }
        ));
    }

    #[test]
    fn handshake_is_answered_200_and_other_shops_are_refused() {
        let t = tilby(&[(ENVIRONMENT_IDS_VAR, "s3_e2e_restaurant, s3_bistrot_milano")]);
        let h = HeaderMap::new();
        let path = format!("/{URL_TOKEN}");
        for body in [
            SUB_BODY,
            SUBSCRIBED,
            &SUB_BODY.replace("SUBSCRIBED", "subscribed"),
        ] {
            let Inspection::Reply {
                status,
                body: reply,
                tenant,
            } = inspect(&t, &inbound(&path, &h, body.as_bytes())).unwrap()
            else {
                panic!("handshake reply expected")
            };
            assert_eq!(status, StatusCode::OK);
            assert_eq!(reply, json!({"status": "subscribed"}));
            assert_eq!(
                tenant.as_deref(),
                crate::provider::body_field(body.as_bytes(), "environment_id").as_deref()
            );
            assert!(tenant.is_some());
        }
        let other = SUB_BODY.replace("s3_e2e_restaurant", "someone-else");
        assert_eq!(
            inspect(&t, &inbound(&path, &h, other.as_bytes())).unwrap_err(),
            Refusal::Unauthorized(AuthFailure::TenantRefused)
        );
        let unnamed = r#"{"type":"CLOSED","entity_name":"sales","entities":[{"id":1}]}"#;
        assert_eq!(
            inspect(&t, &inbound(&path, &h, unnamed.as_bytes())).unwrap_err(),
            Refusal::Unauthorized(AuthFailure::TenantRefused)
        );
        assert!(matches!(
            inspect(&t, &inbound(&path, &h, BODY.as_bytes())),
            Ok(Inspection::Events { .. })
        ));
    }

    #[test]
    fn vector_becomes_one_event_per_entity_keyed_by_notification_and_entity() {
        let t = tilby(&[]);
        let events = events(&t, "/url-token-0000001", BODY);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(
            e.key,
            EventKey::parts([
                "625bd8dc-f13c-4d43-9ca7-39c9a26c8f9c",
                "235f2cd2-4cf1-4550-acab-b6248ad99dfc"
            ])
        );
        assert_eq!(
            e.event_id,
            "625bd8dc-f13c-4d43-9ca7-39c9a26c8f9c:235f2cd2-4cf1-4550-acab-b6248ad99dfc"
        );
        assert_eq!(e.event_type, "sales.closed");
        assert_eq!(e.tenant.as_deref(), Some("s3_e2e_restaurant"));
        assert_eq!(e.occurred_at.as_deref(), Some("2022-03-24T10:25:03.499Z"));
        let entity = json!({"id":29,"uuid":"235f2cd2-4cf1-4550-acab-b6248ad99dfc","external_id":"ext-1","status":"closed","final_amount":18});
        assert_eq!(
            e.fingerprint.as_deref(),
            Some(
                sha256_hex(
                    json::canonical(&serde_json::value::to_raw_value(&entity).unwrap()).as_bytes()
                )
                .as_str()
            )
        );
        let Payload::Json(payload) = &e.payload else {
            panic!("JSON payload")
        };
        assert_eq!(
            payload,
            &json!({"type":"CLOSED","entity_name":"sales","time":"2022-03-24T10:25:03.499Z",
                "notification_uuid":"625bd8dc-f13c-4d43-9ca7-39c9a26c8f9c","environment_id":"s3_e2e_restaurant",
                "client_id":"SclobyElectron3","from_user":"mario.rossi@example.com","entity": entity})
        );
        let typed: EntityEvent = payload.parse().unwrap();
        assert_eq!(
            typed.entity_ref().as_deref(),
            Some("235f2cd2-4cf1-4550-acab-b6248ad99dfc")
        );
        assert!(!format!("{typed:?}").contains("mario.rossi"));
        let notification: Notification = serde_json::from_str(BODY).unwrap();
        assert_eq!(
            (notification.entities.len(), notification.n_retry),
            (1, Some(0))
        );
    }

    #[test]
    fn retries_with_a_new_n_retry_keep_every_key_and_fingerprint() {
        let t = tilby(&[]);
        let without_uuid: Value = {
            let mut v: Value = serde_json::from_str(BODY).unwrap();
            v.as_object_mut().unwrap().remove("notification_uuid");
            v["entities"] = json!([{"id": 1, "n": "a"}, {"id": 2, "n": "b"}, {"n": "c"}]);
            v
        };
        for body in [BODY.to_owned(), without_uuid.to_string(), IMPORT.to_owned()] {
            let first = events(&t, "/url-token-0000001", &body);
            let mut retried: Value = serde_json::from_str(&body).unwrap();
            retried["nRetry"] = json!(3);
            let again = events(&t, "/url-token-0000001", &retried.to_string());
            assert_eq!(first, again);
            let keys: HashSet<&EventKey> = first.iter().map(|e| &e.key).collect();
            assert_eq!(keys.len(), first.len(), "keys are distinct");
        }
        // Without notification_uuid the key is a hash of name, type, time and the entity.
        let hashed = events(&t, "/url-token-0000001", &without_uuid.to_string());
        assert_eq!(
            hashed[0].key,
            EventKey::hash_of(
                b"sales\nclosed\n2022-03-24T10:25:03.499Z\n{\"id\":1,\"n\":\"a\"}".as_slice()
            )
        );
        // The same entity with its keys in another order (a re-serialization) keeps its key.
        let mut reordered = without_uuid.clone();
        reordered["entities"][0] = serde_json::from_str(r#"{"n":"a","id":1}"#).unwrap();
        assert_eq!(
            events(&t, "/url-token-0000001", &reordered.to_string())[0].key,
            hashed[0].key
        );
        // An entity without uuid or id is keyed by its content under the notification.
        let anonymous = r#"{"type":"UPDATED","entity_name":"items","notification_uuid":"n-1","entities":[{"name":"x"}],"nRetry":1}"#;
        let e = &events(&t, "/url-token-0000001", anonymous)[0];
        assert_eq!(
            e.key,
            EventKey::parts(["n-1", "sha256", &sha256_hex(br#"{"name":"x"}"#)])
        );
        assert_eq!(
            e.event_id,
            format!("n-1:sha256:{}", sha256_hex(br#"{"name":"x"}"#))
        );
    }

    #[test]
    fn type_is_case_insensitive_and_path_segments_fill_in_missing_names() {
        let t = tilby(&[]);
        let lower = BODY.replace("\"CLOSED\"", "\"Closed\"");
        assert_eq!(
            events(&t, "/url-token-0000001", &lower)[0].event_type,
            "sales.closed"
        );
        let bare = r#"{"notification_uuid":"n-2","environment_id":"shop","entities":[{"id":5}]}"#;
        assert_eq!(
            events(&t, "/tilby/url-token-0000001/items/UPDATED", bare)[0].event_type,
            "items.updated"
        );
        assert_eq!(
            events(&t, "/url-token-0000001", bare)[0].event_type,
            "unknown.unknown"
        );
        // The body wins over the path.
        assert_eq!(
            events(&t, "/url-token-0000001/items/updated", BODY)[0].event_type,
            "sales.closed"
        );
    }

    #[test]
    fn notifications_without_entities_are_queued_whole_and_bad_shapes_refused() {
        let t = tilby(&[]);
        for entities in ["", ",\"entities\":[]", ",\"entities\":null"] {
            let body = format!(
                r#"{{"type":"DELETED","entity_name":"items","notification_uuid":"n-3","time":"t"{entities},"nRetry":2}}"#
            );
            let e = events(&t, "/url-token-0000001", &body);
            assert_eq!(e.len(), 1);
            assert_eq!(e[0].key, EventKey::id("n-3"));
            assert_eq!(
                e[0].payload,
                Payload::Json(
                    json!({"type":"DELETED","entity_name":"items","notification_uuid":"n-3","time":"t"}).into())
            );
        }
        let h = HeaderMap::new();
        for bad in [r#"{"type":"CLOSED","entities":"x"}"#, "[1]", "{\"type\":"] {
            assert!(
                matches!(
                    inspect(&t, &inbound("/url-token-0000001", &h, bad.as_bytes())),
                    Err(Refusal::BadRequest(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn more_entities_than_the_cap_are_refused_before_any_is_copied() {
        let t = tilby(&[]);
        let h = HeaderMap::new();
        let body = |n: usize| {
            let entities: Vec<Value> = (0..n).map(|i| json!({ "id": i })).collect();
            json!({"type": "CREATED", "entity_name": "customers", "notification_uuid": "n-cap",
                "entities": entities})
            .to_string()
        };
        let at_cap = body(crate::provider::DEFAULT_MAX_EVENTS);
        let req = inbound("/url-token-0000001", &h, at_cap.as_bytes());
        assert!(
            matches!(inspect(&t, &req), Ok(Inspection::Events { ref events, .. }) if events.len() == 200)
        );
        let over = body(crate::provider::DEFAULT_MAX_EVENTS + 1);
        let req = inbound("/url-token-0000001", &h, over.as_bytes());
        assert_eq!(inspect(&t, &req).unwrap_err(), Refusal::TooManyEvents(200));
    }

    #[test]
    fn each_event_carries_the_shared_members_as_sent_and_their_total_is_capped() {
        let t = tilby(&[]);
        let h = HeaderMap::new();
        let body = |pad: usize, n: usize| {
            let entities: Vec<String> = (0..n)
                .map(|i| format!(r#"{{"id": {i}, "p": 1.10}}"#))
                .collect();
            format!(
                r#"{{"type":"CREATED","entity_name":"customers","notification_uuid":"n-pad","nRetry":3,
                "note":"{}","n": 1.10, "type":"CREATED", "entities":[{}]}}"#,
                "x".repeat(pad),
                entities.join(" , ")
            )
        };
        // 200 entities sharing 100 KiB of notification: 20 MB of events, over the 16 MiB cap.
        let big = body(100 * 1024, 200);
        let req = inbound("/url-token-0000001", &h, big.as_bytes());
        let verified = VerifiedRequest::new(&req, t.authenticate(&req).unwrap())
            .with_max_payload_bytes(crate::config::DEFAULT_MAX_REQUEST_PAYLOAD_BYTES);
        assert_eq!(
            t.inspect(&verified).unwrap_err(),
            Refusal::TooLarge(crate::config::DEFAULT_MAX_REQUEST_PAYLOAD_BYTES)
        );
        // Under the cap: each event is the shared members as written (numbers, order, one
        // `type` although it came twice) and its own entity as written.
        let small = body(10, 3);
        let events = events(&t, "/url-token-0000001", &small);
        assert_eq!(events.len(), 3);
        let Payload::Json(first) = &events[0].payload else {
            panic!("JSON")
        };
        assert_eq!(
            first.get(),
            r#"{"entity_name":"customers","notification_uuid":"n-pad","note":"xxxxxxxxxx","n":1.10,"type":"CREATED","entity":{"id": 0, "p": 1.10}}"#
        );
        let typed: EntityEvent = first.parse().unwrap();
        assert_eq!(typed.entity_ref().as_deref(), Some("0"));
    }

    #[test]
    fn one_mac_per_token_is_compared_with_every_candidate_header() {
        let t = tilby(&[(SIGNING_TOKEN_VAR, TOKEN)]);
        let path = format!("/tilby/{URL_TOKEN}");
        let decoy = "ab".repeat(32);
        let mut pairs: Vec<(String, String)> = (0..50)
            .map(|i| (format!("x-decoy-{i}"), decoy.clone()))
            .collect();
        pairs.push(("x-late-signature".into(), SIGNATURE.into()));
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let h = headers(&refs);
        assert!(t.authenticate(&inbound(&path, &h, BODY.as_bytes())).is_ok());
        let forged: Vec<(&str, &str)> = refs[..50].to_vec();
        let h = headers(&forged);
        assert_eq!(
            t.authenticate(&inbound(&path, &h, BODY.as_bytes()))
                .unwrap_err(),
            AuthFailure::Mismatch
        );
        let found = verify::hmac_sha256_which(
            &SecretList::parse(TOKEN).unwrap(),
            &[BODY.as_bytes()],
            &[
                [0u8; 32],
                decode_signature(SIGNATURE).unwrap(),
                decode_signature(SIGNATURE).unwrap(),
            ],
        );
        assert_eq!(found.map(|(_, at)| at), Some(1), "the first that matched");
    }

    #[test]
    fn samples_are_realistic_and_the_import_splits_into_80_events() {
        let t = tilby(&[]);
        let import = events(&t, "/url-token-0000001", IMPORT);
        assert_eq!(import.len(), 80);
        assert!(import.iter().all(|e| e.event_type == "customers.created"));
        let keys: HashSet<&EventKey> = import.iter().map(|e| &e.key).collect();
        assert_eq!(keys.len(), 80);
        assert_eq!(
            events(&t, "/url-token-0000001", SALES_CLOSED)[0].event_type,
            "sales.closed"
        );
        assert_eq!(
            events(&t, "/url-token-0000001", ITEMS_UPDATED)[0].event_type,
            "items.updated"
        );
        for sample in [SALES_CLOSED, ITEMS_UPDATED, IMPORT] {
            let n: Notification = serde_json::from_str(sample).unwrap();
            assert!(n.notification_uuid.is_some() && !n.entities.is_empty());
        }
        let h: Handshake = serde_json::from_str(SUBSCRIBED).unwrap();
        assert_eq!(h.kind, "SUBSCRIBED");
    }

    #[test]
    fn simulate_posts_to_the_token_and_signs_when_a_static_token_is_set() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let env = Env::from_pairs([(URL_TOKEN_VAR, "tok-1,tok-2"), (SIGNING_TOKEN_VAR, TOKEN)]);
        let sent = simulate(BODY.as_bytes(), &env, now).unwrap();
        assert_eq!(
            (&sent.method, sent.path.as_str()),
            (&Method::POST, "/tok-1")
        );
        assert!(sent
            .headers
            .contains(&(SIMULATED_SIGNATURE_HEADER.into(), SIGNATURE.into())));
        let mut pinned = env.clone();
        pinned.set(SIGNATURE_HEADER_VAR, "X-Pinned");
        let sent = simulate(BODY.as_bytes(), &pinned, now).unwrap();
        assert!(sent
            .headers
            .contains(&("X-Pinned".into(), SIGNATURE.into())));
        let unsigned = simulate(b"{}", &Env::from_pairs([(URL_TOKEN_VAR, "t")]), now).unwrap();
        assert_eq!(unsigned.headers.len(), 2);
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn discovery_logs_the_header_name_never_its_value_or_the_token() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let t = tilby(&[(SIGNING_TOKEN_VAR, TOKEN)]);
        let h = headers(&[("x-hidden-signature", SIGNATURE)]);
        tracing::subscriber::with_default(subscriber, || {
            assert!(t
                .authenticate(&inbound("/url-token-0000001", &h, BODY.as_bytes()))
                .is_ok());
            let wrong = headers(&[("x-hidden-signature", SUB_SIGNATURE)]);
            assert!(t
                .authenticate(&inbound("/url-token-0000001", &wrong, BODY.as_bytes()))
                .is_err());
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("x-hidden-signature"), "{log}");
        assert!(log.contains(SIGNATURE_HEADER_VAR), "{log}");
        for secret in [SIGNATURE, SUB_SIGNATURE, TOKEN, URL_TOKEN] {
            assert!(!log.contains(secret), "{log}");
        }
    }
}

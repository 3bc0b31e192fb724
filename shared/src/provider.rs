//! The contract between the pipeline and a provider's rules. A provider says how to
//! authenticate, what a handshake is, and how to turn a verified request into events; the
//! pipeline does everything else (size, claims, queue, answers) the same way for all.

use lambda_http::http::{HeaderMap, Method, StatusCode};
use serde_json::Value;
use time::OffsetDateTime;

use crate::envelope::Payload;
use crate::json::{Fields, RawJson};
use crate::secret::SecretList;
use crate::verify::{AuthFailure, Verified};

/// What a provider sees of a request.
#[derive(Debug)]
pub struct Inbound<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    /// The request path (API Gateway's raw path; stage and route prefixes included).
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The body exactly as received (base64 already decoded by lambda_http).
    pub body: &'a [u8],
    pub now: OffsetDateTime,
}

impl Inbound<'_> {
    /// A header as text; `HeaderMap` lookups are case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The media type without parameters, lowercased (`application/json`).
    pub fn media_type(&self) -> Option<String> {
        let ct = self.header("content-type")?;
        let media = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        (!media.is_empty()).then_some(media)
    }

    /// Path segments, for URL tokens (`/tribemade/<token>`).
    pub fn path_segments(&self) -> impl Iterator<Item = &str> {
        self.path.split('/').filter(|s| !s.is_empty())
    }
}

pub use crate::config::DEFAULT_MAX_EVENTS;

/// A request that passed authentication: only the pipeline makes one, from a [`Verified`].
#[derive(Debug)]
pub struct VerifiedRequest<'r, 'a> {
    inbound: &'r Inbound<'a>,
    proof: Verified,
    max_events: usize,
    max_payload_bytes: usize,
}

impl<'r, 'a> VerifiedRequest<'r, 'a> {
    pub(crate) fn new(inbound: &'r Inbound<'a>, proof: Verified) -> Self {
        VerifiedRequest {
            inbound,
            proof,
            max_events: DEFAULT_MAX_EVENTS,
            max_payload_bytes: crate::config::DEFAULT_MAX_REQUEST_PAYLOAD_BYTES,
        }
    }

    pub(crate) fn with_max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// The most payload bytes one request's events may carry in all: a provider that repeats
    /// part of a body in each event refuses more with [`Refusal::TooLarge`] before building
    /// them.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_payload_bytes
    }

    pub(crate) fn with_max_events(mut self, max_events: usize) -> Self {
        self.max_events = max_events;
        self
    }

    /// Whom the credential that verified this request speaks for.
    pub fn proof(&self) -> &Verified {
        &self.proof
    }

    /// The most events one request may carry: a provider that splits a body into many events
    /// refuses more with [`Refusal::TooManyEvents`] before building them.
    pub fn max_events(&self) -> usize {
        self.max_events
    }
}

impl<'a> std::ops::Deref for VerifiedRequest<'_, 'a> {
    type Target = Inbound<'a>;
    fn deref(&self) -> &Inbound<'a> {
        self.inbound
    }
}

/// What identifies an event within its provider and tenant: the provider's id (in parts, when
/// it is composite), or a hash of the content where the provider sends no id. The two never
/// meet in a dedup key ([`crate::pipeline::dedup_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventKey {
    Id(Vec<String>),
    /// Lowercase hex SHA-256.
    Hash(String),
}

impl EventKey {
    pub fn id(id: impl Into<String>) -> Self {
        EventKey::Id(vec![id.into()])
    }

    /// A composite id (Tilby: notification, then entity).
    pub fn parts<I: IntoIterator<Item = S>, S: Into<String>>(parts: I) -> Self {
        EventKey::Id(parts.into_iter().map(Into::into).collect())
    }

    /// The SHA-256 of `bytes`.
    pub fn hash_of(bytes: &[u8]) -> Self {
        EventKey::Hash(crate::verify::sha256_hex(bytes))
    }

    /// How the key reads as an `event_id`: the id (parts joined by `:`) or the hex hash.
    pub fn to_event_id(&self) -> String {
        match self {
            EventKey::Id(parts) => parts.join(":"),
            EventKey::Hash(hex) => hex.clone(),
        }
    }
}

/// One event extracted from a verified request.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundEvent {
    /// What the dedup key is made of (with the provider and the tenant).
    pub key: EventKey,
    pub event_id: String,
    pub event_type: String,
    pub occurred_at: Option<String>,
    pub tenant: Option<String>,
    pub payload: Payload,
    /// SHA-256 of the bytes that identify this event's content, when not the whole body (a
    /// batch entity): a refused claim with a different value is logged as a conflict.
    pub fingerprint: Option<String>,
}

/// What a verified request turned out to be.
#[derive(Debug)]
pub enum Inspection {
    /// A handshake or test request: answered as given, nothing stored or queued. `tenant` is the
    /// tenant the request names: with a tenant map, another tenant's credential is refused.
    Reply {
        status: StatusCode,
        body: Value,
        tenant: Option<String>,
    },
    /// Events to claim and queue. `ack` replaces the default 200 body when the provider expects
    /// a particular one.
    Events {
        events: Vec<InboundEvent>,
        ack: Option<Value>,
    },
}

impl Inspection {
    pub fn event(event: InboundEvent) -> Self {
        Inspection::Events {
            events: vec![event],
            ack: None,
        }
    }
}

/// A verified request the provider refuses. Messages are shown to the caller: name fields,
/// never echo values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("unsupported content type")]
    UnsupportedMediaType,
    #[error("more than {0} events in one request")]
    TooManyEvents(usize),
    /// The events' payloads would add up to more than this many bytes (a Tilby notification
    /// whose shared fields are repeated in each of its events).
    #[error("events of more than {0} bytes in all in one request")]
    TooLarge(usize),
    #[error("not accepted: {0}")]
    Unauthorized(AuthFailure),
}

/// A provider's rules. One implementation per provider, in `providers/`; adding one never
/// touches the pipeline.
pub trait Provider: Send + Sync + 'static {
    /// Stable prefix of dedup keys and the `provider` field of envelopes.
    fn name(&self) -> &'static str;

    /// Methods the provider delivers with; anything else is answered 405.
    fn methods(&self) -> &'static [Method] {
        &[Method::POST]
    }

    /// Whether a body of this media type is understood (`None`: no Content-Type header).
    /// Checked after authentication; refused with 415.
    fn accepts_media_type(&self, media_type: Option<&str>) -> bool {
        media_type.is_none_or(is_json_media_type)
    }

    /// Authenticates the request, in constant time, against every configured secret.
    fn authenticate(&self, request: &Inbound<'_>) -> Result<Verified, AuthFailure>;

    /// Handshake, validation and event extraction for an authenticated request.
    fn inspect(&self, request: &VerifiedRequest<'_, '_>) -> Result<Inspection, Refusal>;
}

/// A boxed provider is a provider: tools that pick one by name at run time (samples test,
/// simulator, benchmarks) use `Receiver<Box<dyn Provider>>`.
impl<P: Provider + ?Sized> Provider for Box<P> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn methods(&self) -> &'static [Method] {
        (**self).methods()
    }
    fn accepts_media_type(&self, media_type: Option<&str>) -> bool {
        (**self).accepts_media_type(media_type)
    }
    fn authenticate(&self, request: &Inbound<'_>) -> Result<Verified, AuthFailure> {
        (**self).authenticate(request)
    }
    fn inspect(&self, request: &VerifiedRequest<'_, '_>) -> Result<Inspection, Refusal> {
        (**self).inspect(request)
    }
}

pub fn is_json_media_type(media_type: &str) -> bool {
    media_type == "application/json" || media_type.ends_with("+json")
}

/// Reads `names` from a JSON object body without building a tree of it ([`crate::json`]), or
/// says why it is not one (no values echoed).
pub fn json_fields<'a>(body: &'a [u8], names: &[&'a str]) -> Result<Fields<'a>, Refusal> {
    crate::json::fields(body, names).map_err(|e| Refusal::BadRequest(e.to_string()))
}

/// The body as the event's JSON payload: the sender's bytes, checked as JSON, not re-written.
pub fn json_payload(body: &[u8]) -> Result<Payload, Refusal> {
    RawJson::from_slice(body).map(Payload::Json).map_err(|e| {
        Refusal::BadRequest(format!(
            "body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// The values that may verify `request`: with a map of more than one tenant, only the values of
/// the tenant its body names in `field` (one pass over the body, nothing allocated: less than
/// one MAC of it), and none when it names no tenant of the map, since such a request could not
/// be accepted whatever its MAC. A plain list, or a map of one tenant, whole.
pub fn secrets_for<'s>(
    secrets: &'s SecretList,
    body: &[u8],
    field: &str,
) -> Result<std::borrow::Cow<'s, SecretList>, AuthFailure> {
    if !secrets.is_per_tenant() || secrets.tenants().len() < 2 {
        return Ok(std::borrow::Cow::Borrowed(secrets));
    }
    let fields = crate::json::fields(body, &[field]).ok();
    let tenant = fields.as_ref().and_then(|f| f.str(field));
    secrets
        .narrowed(tenant.as_deref())
        .map(std::borrow::Cow::Owned)
        .ok_or(AuthFailure::TenantRefused)
}

/// Shortest URL token accepted: a token in a path is a bearer credential.
pub const MIN_URL_TOKEN_LEN: usize = 16;

/// Every provider's name and function name (`providers::ALL`, spelled here so that this module
/// does not depend on the providers that depend on it; a test in `providers` keeps the two
/// equal).
pub const ROUTE_NAMES: &[&str] = &[
    "trybe",
    "trybe-webhook",
    "tribe",
    "tribe-webhook",
    "tribemade",
    "tribemade-webhook",
    "trifft",
    "trifft-webhook",
    "tilby",
    "tilby-webhook",
    "standard",
    "standard-webhook",
];

/// Path segments that appear in a receiver's URL by construction (the route, the local emulator's
/// prefix, common stage names): a token equal to one would let every request to the route in.
const RESERVED_SEGMENTS: &[&str] = &[
    "lambda-url",
    "$default",
    "default",
    "prod",
    "production",
    "staging",
    "stage",
    "dev",
    "test",
    "live",
    "api",
    "webhook",
    "webhooks",
];

/// URL tokens from `var` (a list or a tenant map), refused when one is shorter than
/// [`MIN_URL_TOKEN_LEN`], holds a `/`, or equals a segment every URL of the route has (a provider
/// or function name, `lambda-url`, a stage name, or the `API_STAGE_NAME` variable's value).
pub fn url_tokens(
    env: &crate::config::Env,
    var: &str,
) -> Result<crate::secret::SecretList, crate::config::ConfigError> {
    let tokens = env.secrets(var)?;
    let stage = env.get("API_STAGE_NAME");
    for token in tokens.iter() {
        let value = String::from_utf8_lossy(token.expose());
        let reserved = RESERVED_SEGMENTS
            .iter()
            .copied()
            .chain(stage)
            .chain(ROUTE_NAMES.iter().copied())
            .any(|r| r.eq_ignore_ascii_case(&value));
        let why = if value.chars().count() < MIN_URL_TOKEN_LEN {
            format!("every token needs at least {MIN_URL_TOKEN_LEN} characters")
        } else if value.contains('/') {
            "a token is one path segment: no '/'".to_owned()
        } else if reserved {
            "a token equals a segment of the route's URL (provider, function or stage name)"
                .to_owned()
        } else {
            continue;
        };
        return Err(crate::config::ConfigError::Invalid {
            name: var.to_owned(),
            why,
        });
    }
    Ok(tokens)
}

/// Finds a configured URL token among the path's segments: every segment is compared (no early
/// exit), each in constant time against every token. Returns the proof and the position of the
/// first matching segment.
pub fn path_token(
    tokens: &crate::secret::SecretList,
    request: &Inbound<'_>,
) -> Result<(Verified, usize), AuthFailure> {
    let mut found = None;
    let mut segments = 0;
    for (i, segment) in request.path_segments().enumerate() {
        segments += 1;
        if let Ok(proof) = crate::verify::token(tokens, segment.as_bytes()) {
            found = found.or(Some((proof, i)));
        }
    }
    match (found, segments) {
        (Some(found), _) => Ok(found),
        (None, 0) => Err(AuthFailure::Missing),
        (None, _) => Err(AuthFailure::Mismatch),
    }
}

/// A top-level string field of a JSON body, for a simulator choosing which tenant's secret to
/// sign with.
pub fn body_field(body: &[u8], name: &str) -> Option<String> {
    crate::json::fields(body, &[name])
        .ok()?
        .str(name)
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_tokens_too_short_multi_segment_or_equal_to_a_route_segment_are_refused() {
        use crate::config::{ConfigError, Env};
        let check = |value: &str, stage: Option<&str>| {
            let mut env = Env::from_pairs([("TOKEN", value)]);
            if let Some(stage) = stage {
                env.set("API_STAGE_NAME", stage);
            }
            url_tokens(&env, "TOKEN")
        };
        assert!(check("0123456789abcdef", None).is_ok());
        assert!(check(r#"{"store-a":"0123456789abcdef"}"#, None).is_ok());
        for bad in [
            "0123456789abcde",                     // 15 characters
            "good-token-0000001,short",            // one short value in a list
            r#"{"a":"0123456789abcdef","b":"x"}"#, // one short value in a map
            "0123456789/abcdef",                   // two segments
            "tribemade-webhook",                   // the function's name
            "TRIBEMADE-WEBHOOK",
        ] {
            assert!(
                matches!(check(bad, None), Err(ConfigError::Invalid { ref name, .. }) if name == "TOKEN"),
                "{bad}"
            );
        }
        assert!(check("production-stage-01", None).is_ok());
        assert!(check("production-stage-01", Some("production-stage-01")).is_err());
        assert_eq!(
            check("", None).unwrap_err(),
            ConfigError::Missing("TOKEN".into())
        );
    }
}

//! The contract between the pipeline and a provider's rules. A provider says how to
//! authenticate, what a handshake is, and how to turn a verified request into events; the
//! pipeline does everything else (size, claims, queue, answers) the same way for all.

use lambda_http::http::{HeaderMap, Method, StatusCode};
use serde_json::Value;
use time::OffsetDateTime;

use crate::envelope::Payload;
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

/// A request that passed authentication: only the pipeline makes one, from a [`Verified`].
#[derive(Debug)]
pub struct VerifiedRequest<'r, 'a> {
    inbound: &'r Inbound<'a>,
}

impl<'r, 'a> VerifiedRequest<'r, 'a> {
    pub(crate) fn new(inbound: &'r Inbound<'a>, _proof: Verified) -> Self {
        VerifiedRequest { inbound }
    }
}

impl<'a> std::ops::Deref for VerifiedRequest<'_, 'a> {
    type Target = Inbound<'a>;
    fn deref(&self) -> &Inbound<'a> {
        self.inbound
    }
}

/// One event extracted from a verified request.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundEvent {
    /// The dedup key without the provider prefix: the provider's event id, or a hash.
    pub key: String,
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
    /// A handshake or test request: answered as given, nothing stored or queued.
    Reply { status: StatusCode, body: Value },
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

/// Parses a JSON object body, or says why it is not one (no values echoed).
pub fn json_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Refusal> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Refusal::BadRequest("body is not a JSON object".into())),
        Err(e) => Err(Refusal::BadRequest(format!(
            "body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))),
    }
}

/// Compact JSON with every object's keys sorted, whatever order they arrived in (and whether or
/// not serde_json preserves order): stable bytes to hash when a provider has no event id.
pub fn canonical_json(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(&map[key], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// A string field of a JSON object, if present and a non-empty string.
pub fn str_field<'v>(map: &'v serde_json::Map<String, Value>, name: &str) -> Option<&'v str> {
    map.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[{"q":1,"p":"x"}],"x":null}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":null,"y":[{"p":"x","q":1}]},"b":1}"#).unwrap();
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":null,"y":[{"p":"x","q":1}]},"b":1}"#
        );
        assert_eq!(canonical_json(&a), canonical_json(&b));
    }
}

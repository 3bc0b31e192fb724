//! TRIFFT (loyalty platform). Source: docs/providers.md "TRIFFT".
//!
//! The account owner designs every request (method, headers, payload type and template), so this
//! receiver assumes as little as possible about the content:
//!
//! - Auth: TRIFFT's "Header Authentication" (`TRIFFT_AUTH_HEADER` names, `TRIFFT_AUTH_VALUE`
//!   values) and/or "Basic" (`TRIFFT_BASIC_USER`, `TRIFFT_BASIC_PASSWORD`). A request passing
//!   either configured kind is accepted (docs/providers.md "TRIFFT: Authentication"); with
//!   neither configured, `from_env` fails and the receiver answers 500 to everything (fail
//!   closed). Every list is comma-separated.
//!   Header names × values: any listed header carrying any listed value passes. Basic pairs:
//!   equal-length lists are zipped (`u1,u2` + `p1,p2` → u1:p1, u2:p2); a single user takes each
//!   password (rotation), a single password serves each user; any other shape is a config error.
//! - Methods POST, PUT, PATCH, DELETE, GET; media types JSON, XML, plain text, URL-encoded form,
//!   or none (docs/providers.md "TRIFFT: Endpoint Type", "TRIFFT: Payload Type").
//! - Content: the query string when the method is GET, or when the body is empty and a query is
//!   present (docs/providers.md "TRIFFT: Payload Type": "GET has no body"); otherwise the body.
//!   JSON travels parsed (malformed JSON under a JSON content type → 400); a form or query is
//!   decoded into a JSON object of strings (a repeated name → array of its values, in order); XML
//!   and plain text travel verbatim in `payload_raw`. Without a content type the body is JSON if
//!   it parses, else text. A body that is not UTF-8 (XML in Latin-1) travels byte for byte in
//!   `payload_base64`: an authenticated event is never refused for its encoding.
//! - Event id (docs/providers.md "TRIFFT: Event id and type", default):
//!   `TRIFFT_EVENT_ID_POINTER` (JSON pointer into the JSON or decoded form payload), then
//!   `TRIFFT_EVENT_ID_HEADER`, else the SHA-256 of the content bytes (a retry re-sends the same
//!   bytes). A configured id that is absent falls back to the hash, with a warning: an authentic
//!   event is never dropped for its shape.
//! - Event type: `TRIFFT_EVENT_TYPE_POINTER`, then `TRIFFT_EVENT_TYPE_HEADER`, then a top-level
//!   `event`, `type` or `event_type` (TRIFFT's own event objects use `event_type`:
//!   docs/providers.md "TRIFFT: Test vectors"), else `trifft.webhook`. Occurred at: top-level
//!   `timestamp`, `occurred_at`, `created_at` or `time`, verbatim. No tenant.

use base64::Engine;
use lambda_http::http::{HeaderName, Method};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tracing::warn;

use crate::apigw::Sent;
use crate::config::{ConfigError, Env};
use crate::envelope::{describe_json_error, Payload};
use crate::json::{self, RawJson};
use crate::provider::{
    is_json_media_type, json_payload, EventKey, Inbound, InboundEvent, Inspection, Provider,
    Refusal, VerifiedRequest,
};
use crate::secret::{Secret, SecretList};
use crate::verify::{self, AuthFailure, BasicPair, Verified};

pub const NAME: &str = "trifft";
pub const AUTH_HEADER_VAR: &str = "TRIFFT_AUTH_HEADER";
pub const AUTH_VALUE_VAR: &str = "TRIFFT_AUTH_VALUE";
pub const BASIC_USER_VAR: &str = "TRIFFT_BASIC_USER";
pub const BASIC_PASSWORD_VAR: &str = "TRIFFT_BASIC_PASSWORD";
pub const EVENT_ID_POINTER_VAR: &str = "TRIFFT_EVENT_ID_POINTER";
pub const EVENT_ID_HEADER_VAR: &str = "TRIFFT_EVENT_ID_HEADER";
pub const EVENT_TYPE_POINTER_VAR: &str = "TRIFFT_EVENT_TYPE_POINTER";
pub const EVENT_TYPE_HEADER_VAR: &str = "TRIFFT_EVENT_TYPE_HEADER";
/// Event type when neither configuration nor payload names one (docs/providers.md "TRIFFT:
/// Event id and type").
pub const DEFAULT_EVENT_TYPE: &str = "trifft.webhook";

const FORM: &str = "application/x-www-form-urlencoded";
const TEXT: &str = "text/plain";
/// Top-level fields read as the event type, in this order (docs/providers.md "TRIFFT: Event id
/// and type"; `event_type` is what TRIFFT's own event objects carry, "TRIFFT: Test vectors").
const TYPE_FIELDS: [&str; 3] = ["event", "type", "event_type"];
const TIME_FIELDS: [&str; 4] = ["timestamp", "occurred_at", "created_at", "time"];
/// Both, in that order: read in one pass over the content.
const TOP_FIELDS: [&str; 7] = [
    TYPE_FIELDS[0],
    TYPE_FIELDS[1],
    TYPE_FIELDS[2],
    TIME_FIELDS[0],
    TIME_FIELDS[1],
    TIME_FIELDS[2],
    TIME_FIELDS[3],
];

/// TRIFFT's "Header Authentication": any of these headers carrying any of these values.
#[derive(Debug)]
struct HeaderAuth {
    names: Vec<HeaderName>,
    values: SecretList,
}

/// Where a configured field (event id, event type) is read: a JSON pointer first, then a header.
#[derive(Debug, Default)]
struct Locator {
    pointer: Option<String>,
    header: Option<HeaderName>,
}

impl Locator {
    fn from_env(env: &Env, pointer_var: &str, header_var: &str) -> Result<Self, ConfigError> {
        let pointer = match env.get(pointer_var) {
            Some(p) if !p.starts_with('/') => {
                return Err(ConfigError::Invalid {
                    name: pointer_var.into(),
                    why: "a JSON pointer starts with '/', e.g. /event_id".into(),
                })
            }
            p => p.map(str::to_owned),
        };
        let header = env
            .get(header_var)
            .map(|h| header_name(header_var, h))
            .transpose()?;
        Ok(Locator { pointer, header })
    }

    fn is_set(&self) -> bool {
        self.pointer.is_some() || self.header.is_some()
    }

    fn find(&self, request: &Inbound<'_>, doc: &Doc<'_>) -> Option<String> {
        let from_pointer = || doc.pointer(self.pointer.as_deref()?);
        let from_header = || {
            let value = request.header(self.header.as_ref()?.as_str())?.trim();
            (!value.is_empty()).then(|| value.to_owned())
        };
        from_pointer().or_else(from_header)
    }

    /// What is configured, for logs (names and pointers only, never values).
    fn describe(&self) -> String {
        [
            self.pointer.as_deref(),
            self.header.as_ref().map(HeaderName::as_str),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" or header ")
    }
}

#[derive(Debug)]
pub struct Trifft {
    header_auth: Option<HeaderAuth>,
    /// Accepted Basic (user, password) pairs; empty when Basic is not configured.
    basic: Vec<BasicPair>,
    event_id: Locator,
    event_type: Locator,
}

impl Trifft {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let header_auth = header_auth(env)?;
        let basic = basic_pairs(env)?;
        if header_auth.is_none() && basic.is_empty() {
            return Err(ConfigError::Missing(format!(
                "{AUTH_HEADER_VAR} + {AUTH_VALUE_VAR} or {BASIC_USER_VAR} + {BASIC_PASSWORD_VAR}"
            )));
        }
        let event_id = Locator::from_env(env, EVENT_ID_POINTER_VAR, EVENT_ID_HEADER_VAR)?;
        let event_type = Locator::from_env(env, EVENT_TYPE_POINTER_VAR, EVENT_TYPE_HEADER_VAR)?;
        // An id or type read from a credential header would put the secret in the envelope, the
        // claim and the logs.
        for (var, locator) in [
            (EVENT_ID_HEADER_VAR, &event_id),
            (EVENT_TYPE_HEADER_VAR, &event_type),
        ] {
            let Some(header) = &locator.header else {
                continue;
            };
            let is_credential = *header == lambda_http::http::header::AUTHORIZATION
                || header_auth
                    .as_ref()
                    .is_some_and(|auth| auth.names.contains(header));
            if is_credential {
                return Err(ConfigError::Invalid {
                    name: var.into(),
                    why: format!("{header} carries the credential"),
                });
            }
        }
        Ok(Trifft {
            header_auth,
            basic,
            event_id,
            event_type,
        })
    }

    fn header_matches(&self, request: &Inbound<'_>) -> Option<Result<Verified, AuthFailure>> {
        let auth = self.header_auth.as_ref()?;
        let mut outcome = Err(AuthFailure::Missing);
        for name in &auth.names {
            for value in request.headers.get_all(name) {
                match verify::token(&auth.values, value.as_bytes()) {
                    Ok(proof) => return Some(Ok(proof)),
                    Err(why) => outcome = Err(worse(outcome.err(), why)),
                }
            }
        }
        Some(outcome)
    }
}

fn header_name(var: &str, value: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(value.as_bytes()).map_err(|_| ConfigError::Invalid {
        name: var.into(),
        why: "not a valid HTTP header name".into(),
    })
}

fn header_auth(env: &Env) -> Result<Option<HeaderAuth>, ConfigError> {
    let names = env.list(AUTH_HEADER_VAR);
    match (names.is_empty(), env.optional_secrets(AUTH_VALUE_VAR)?) {
        (true, None) => Ok(None),
        (false, None) => Err(ConfigError::Missing(AUTH_VALUE_VAR.into())),
        (true, Some(_)) => Err(ConfigError::Missing(AUTH_HEADER_VAR.into())),
        (false, Some(values)) => {
            // The value names the tenant: one value for two tenants would name neither.
            let all: Vec<&[u8]> = values.iter().map(Secret::expose).collect();
            if values.is_per_tenant() && (1..all.len()).any(|i| all[..i].contains(&all[i])) {
                return Err(ConfigError::Invalid {
                    name: AUTH_VALUE_VAR.into(),
                    why: "the same value is given for two tenants".into(),
                });
            }
            Ok(Some(HeaderAuth {
                names: names
                    .iter()
                    .map(|n| header_name(AUTH_HEADER_VAR, n))
                    .collect::<Result<_, _>>()?,
                values,
            }))
        }
    }
}

/// Pairs users and passwords. Lists: zipped when of equal lengths, otherwise a single user (or
/// password) goes with every entry of the other list (rotation). A tenant map of passwords: the
/// user is one plain value for every tenant, or a map giving each of the same tenants one user.
/// Anything else is ambiguous, and so a configuration error.
fn basic_pairs(env: &Env) -> Result<Vec<BasicPair>, ConfigError> {
    let (users, passwords) = match (
        env.optional_secrets(BASIC_USER_VAR)?,
        env.optional_secrets(BASIC_PASSWORD_VAR)?,
    ) {
        (None, None) => return Ok(Vec::new()),
        (Some(_), None) => return Err(ConfigError::Missing(BASIC_PASSWORD_VAR.into())),
        (None, Some(_)) => return Err(ConfigError::Missing(BASIC_USER_VAR.into())),
        (Some(u), Some(p)) => (u, p),
    };
    let invalid = |why: String| ConfigError::Invalid {
        name: BASIC_PASSWORD_VAR.into(),
        why,
    };
    let pair = |tenant: Option<&str>, user: &Secret, password: &Secret| BasicPair {
        tenant: tenant.map(str::to_owned),
        user: user.clone(),
        password: password.clone(),
    };
    let pairs: Vec<BasicPair> = match (users.is_per_tenant(), passwords.is_per_tenant()) {
        (false, false) => {
            let (u, p): (Vec<&Secret>, Vec<&Secret>) =
                (users.iter().collect(), passwords.iter().collect());
            match (u.as_slice(), p.as_slice()) {
                (u, p) if u.len() == p.len() => {
                    u.iter().zip(p).map(|(u, p)| pair(None, u, p)).collect()
                }
                ([user], _) => p.iter().map(|p| pair(None, user, p)).collect(),
                (_, [password]) => u.iter().map(|u| pair(None, u, password)).collect(),
                _ => {
                    return Err(invalid(format!(
                        "{} users and {} passwords: give equal counts, one user, or one password",
                        u.len(),
                        p.len()
                    )))
                }
            }
        }
        (false, true) if users.len() == 1 => passwords
            .entries()
            .map(|(t, p)| pair(t, users.first(), p))
            .collect(),
        (true, true) => {
            if users.tenants() != passwords.tenants() || users.len() != users.tenants().len() {
                return Err(invalid(format!(
                    "{BASIC_USER_VAR} must give the same tenants as {BASIC_PASSWORD_VAR}, one user each"
                )));
            }
            passwords
                .entries()
                .map(|(t, p)| pair(t, users.for_tenant(t), p))
                .collect()
        }
        _ => {
            return Err(invalid(format!(
                "with a tenant map of passwords, {BASIC_USER_VAR} is one user or a tenant map of users; \
                 with a list of passwords it is a list"
            )))
        }
    };
    for (i, a) in pairs.iter().enumerate() {
        if pairs[..i]
            .iter()
            .any(|b| b.tenant != a.tenant && b.user == a.user && b.password == a.password)
        {
            return Err(invalid(
                "the same user and password are given for two tenants".into(),
            ));
        }
    }
    Ok(pairs)
}

/// The more telling of two failures, for the log: a wrong credential beats a malformed one,
/// which beats a missing one.
fn worse(a: Option<AuthFailure>, b: AuthFailure) -> AuthFailure {
    let rank = |f: AuthFailure| match f {
        AuthFailure::Mismatch => 2,
        AuthFailure::Malformed => 1,
        _ => 0,
    };
    match a {
        Some(a) if rank(a) >= rank(b) => a,
        _ => b,
    }
}

/// What the configured pointers and the default fields are read from: the JSON payload, or the
/// form's fields (a body or a query), never built into a tree.
enum Doc<'a> {
    Json(&'a RawValue),
    Form(&'a [u8]),
    Nothing,
}

impl Doc<'_> {
    /// The id or type at `pointer`: a string that is not blank, or a number as written.
    fn pointer(&self, pointer: &str) -> Option<String> {
        match self {
            Doc::Json(raw) => json::pointer(raw, pointer).and_then(json::scalar),
            Doc::Form(form) => form_pointer(form, pointer),
            Doc::Nothing => None,
        }
    }

    /// The id or type each of the top-level `names` holds, all read in one pass (a form's
    /// field counts when it is sent once, as the pointer `/name` finds it).
    fn top(&self, names: &[&str]) -> Vec<Option<String>> {
        match self {
            Doc::Json(raw) => match json::fields(raw.get().as_bytes(), names) {
                Ok(found) => names.iter().map(|n| found.scalar(n)).collect(),
                Err(_) => vec![None; names.len()],
            },
            Doc::Form(form) => form_fields(form, names),
            Doc::Nothing => vec![None; names.len()],
        }
    }
}

/// The value of each of `names` in a form when it is sent exactly once and is not blank: one
/// pass, a value kept per name.
fn form_fields(form: &[u8], names: &[&str]) -> Vec<Option<String>> {
    let mut seen: Vec<(usize, Option<std::borrow::Cow<'_, str>>)> = vec![(0, None); names.len()];
    for (name, value) in form_urlencoded::parse(form) {
        if let Some(i) = names.iter().position(|n| *n == name) {
            let (count, first) = &mut seen[i];
            if *count == 0 {
                *first = Some(value);
            }
            *count += 1;
        }
    }
    seen.into_iter()
        .map(|(count, value)| {
            value
                .filter(|v| count == 1 && !v.trim().is_empty())
                .map(|v| v.into_owned())
        })
        .collect()
}

/// A form field by JSON pointer, as the pointer would find it in the form read as a JSON object
/// (`/name` a field sent once, `/name/i` the i-th of a field sent more than once), without
/// building that object: one pass, two values kept at most.
fn form_pointer(form: &[u8], pointer: &str) -> Option<String> {
    let mut tokens = pointer.strip_prefix('/')?.split('/');
    let name = tokens.next()?.replace("~1", "/").replace("~0", "~");
    let index: Option<usize> = match tokens.next() {
        None => None,
        Some(i) => Some(i.parse().ok()?),
    };
    if tokens.next().is_some() {
        return None;
    }
    let (mut count, mut first, mut nth) = (0usize, None, None);
    for (n, value) in form_urlencoded::parse(form) {
        if n != name.as_str() {
            continue;
        }
        if count == 0 {
            first = Some(value.clone());
        }
        if Some(count) == index {
            nth = Some(value);
        }
        count += 1;
        if count >= 2 && index.is_none_or(|i| i < count) {
            break;
        }
    }
    let value = match index {
        None => first.filter(|_| count == 1),
        Some(_) => nth.filter(|_| count >= 2),
    }?;
    (!value.trim().is_empty()).then(|| value.into_owned())
}

fn is_xml(media_type: &str) -> bool {
    media_type == "application/xml" || media_type == "text/xml" || media_type.ends_with("+xml")
}

impl Provider for Trifft {
    fn name(&self) -> &'static str {
        NAME
    }

    fn methods(&self) -> &'static [Method] {
        // docs/providers.md "TRIFFT: Endpoint Type".
        &[
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::GET,
        ]
    }

    fn accepts_media_type(&self, media_type: Option<&str>) -> bool {
        // docs/providers.md "TRIFFT: Payload Type": JSON, XML, PLAIN, FORM data.
        media_type.is_none_or(|m| is_json_media_type(m) || is_xml(m) || m == TEXT || m == FORM)
    }

    fn authenticate(&self, request: &Inbound<'_>) -> Result<Verified, AuthFailure> {
        // Both kinds are checked, each against all its values: either passing is enough
        // (docs/providers.md "TRIFFT: Authentication": different TRIFFT webhooks of one account
        // may use different kinds).
        let by_header = self.header_matches(request);
        let by_basic = (!self.basic.is_empty())
            .then(|| verify::basic(&self.basic, request.header("authorization")));
        match (by_header, by_basic) {
            (Some(Ok(proof)), _) | (_, Some(Ok(proof))) => Ok(proof),
            (Some(Err(a)), Some(Err(b))) => Err(worse(Some(a), b)),
            (Some(Err(why)), None) | (None, Some(Err(why))) => Err(why),
            (None, None) => Err(AuthFailure::Missing),
        }
    }

    fn inspect(&self, request: &VerifiedRequest<'_, '_>) -> Result<Inspection, Refusal> {
        let (content, payload) = content(request)?;
        let doc = match &payload {
            Payload::Json(v) => Doc::Json(v.raw()),
            _ if is_form(request) => Doc::Form(request.body),
            Payload::Raw(_) | Payload::Bytes(_) => Doc::Nothing,
        };
        let key = match self.event_id.find(request, &doc) {
            Some(id) => EventKey::id(id),
            None => {
                if self.event_id.is_set() {
                    warn!(provider = NAME, configured = %self.event_id.describe(),
                        "configured event id not found; keyed by the content's SHA-256");
                }
                EventKey::hash_of(content)
            }
        };
        let top = doc.top(&TOP_FIELDS);
        let (types, times) = top.split_at(TYPE_FIELDS.len());
        let default_type = types.iter().flatten().next().cloned();
        let occurred_at = times.iter().flatten().next().cloned();
        let event_type = self
            .event_type
            .find(request, &doc)
            .or(default_type)
            .unwrap_or_else(|| DEFAULT_EVENT_TYPE.to_owned());
        Ok(Inspection::event(InboundEvent {
            event_id: key.to_event_id(),
            key,
            event_type,
            occurred_at,
            // The payload names no tenant: with a tenant map, the credential's label is it.
            tenant: request.proof().tenant().map(str::to_owned),
            payload,
            fingerprint: None,
        }))
    }
}

/// A form body (never a query: a GET's query arrives as JSON).
fn is_form(request: &Inbound<'_>) -> bool {
    !request.body.is_empty() && request.media_type().as_deref() == Some(FORM)
}

/// The bytes that identify the request's content (hashed for the default event id) and the
/// payload that travels in the envelope.
fn content<'a>(request: &Inbound<'a>) -> Result<(&'a [u8], Payload), Refusal> {
    let query = request.query.filter(|q| !q.is_empty());
    if let Some(query) = query.filter(|_| *request.method == Method::GET || request.body.is_empty())
    {
        // A query is bounded by the URL's limit: read into a JSON object of its fields.
        let json = RawJson::from_value(&form_to_json(query.as_bytes()))
            .map_err(|e| Refusal::BadRequest(describe_json_error(&e)))?;
        return Ok((query.as_bytes(), Payload::Json(json)));
    }
    let body = request.body;
    if body.is_empty() {
        // Nothing was sent (a DELETE without payload): queued as an empty text payload.
        return Ok((body, Payload::Raw(String::new())));
    }
    let payload = match request.media_type().as_deref() {
        Some(m) if is_json_media_type(m) => {
            if !json::depth_within_limit(body) {
                return Err(Refusal::BadRequest(json::NotAnObject::TooDeep.to_string()));
            }
            json_payload(body)?
        }
        // A form body travels as the sender's text (its fields are read in place): a
        // 10 MiB form of empty fields as a JSON object held 2.5 million strings.
        Some(_) => Payload::text_or_bytes(body),
        None => match RawJson::from_slice(body) {
            Ok(json) if json::depth_within_limit(body) => Payload::Json(json),
            _ => Payload::text_or_bytes(body),
        },
    };
    Ok((body, payload))
}

/// Decodes `application/x-www-form-urlencoded` bytes (a form body or a query string) into a JSON
/// object: each value a string, a repeated name an array of its values in order.
pub fn form_to_json(bytes: &[u8]) -> Value {
    let mut map = Map::new();
    for (name, value) in form_urlencoded::parse(bytes) {
        let value = Value::String(value.into_owned());
        match map.get_mut(name.as_ref()) {
            None => {
                map.insert(name.into_owned(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
        }
    }
    Value::Object(map)
}

/// The content type TRIFFT would declare for `body`, guessed from its first character
/// (simulator and samples): XML, JSON, a form, or plain text.
pub fn sniff_media_type(body: &[u8]) -> &'static str {
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim_start();
    let looks_like_form = !trimmed.is_empty()
        && !trimmed.contains(char::is_whitespace)
        && trimmed.split('&').all(|pair| {
            pair.split_once('=')
                .is_some_and(|(name, _)| !name.is_empty())
        });
    match trimmed.chars().next() {
        Some('<') => "application/xml",
        Some('{' | '[') => "application/json",
        _ if looks_like_form => FORM,
        _ => TEXT,
    }
}

fn first(list: &SecretList) -> String {
    // A SecretList is never empty; values are configured text.
    list.iter()
        .next()
        .map(|s| String::from_utf8_lossy(s.expose()).into_owned())
        .unwrap_or_default()
}

/// The request TRIFFT would send with `body` as a POST: header authentication with the first
/// configured header and value, or Basic when only Basic is configured. The content type is
/// sniffed from the body ([`sniff_media_type`]).
pub fn simulate(body: &[u8], env: &Env, _now: OffsetDateTime) -> Result<Sent, ConfigError> {
    let sent = Sent::post("/", body.to_vec())
        .header("content-type", sniff_media_type(body))
        .header("user-agent", "TRIFFT-Webhooks");
    match header_auth(env)? {
        Some(auth) => Ok(sent.header(auth.names[0].as_str(), first(&auth.values))),
        None => with_basic(sent, env),
    }
}

/// The request TRIFFT would send with `body` as a POST with Basic authentication (first pair).
pub fn simulate_basic(body: &[u8], env: &Env, _now: OffsetDateTime) -> Result<Sent, ConfigError> {
    let sent = Sent::post("/", body.to_vec())
        .header("content-type", sniff_media_type(body))
        .header("user-agent", "TRIFFT-Webhooks");
    with_basic(sent, env)
}

/// The GET request TRIFFT would send with `query` (no body), authenticated like [`simulate`].
pub fn simulate_get(query: &str, env: &Env, now: OffsetDateTime) -> Result<Sent, ConfigError> {
    let mut sent = simulate(b"", env, now)?.method(Method::GET);
    sent.headers.retain(|(name, _)| name != "content-type");
    sent.query = Some(query.to_owned());
    Ok(sent)
}

fn with_basic(sent: Sent, env: &Env) -> Result<Sent, ConfigError> {
    let pairs = basic_pairs(env)?;
    let pair = pairs
        .first()
        .ok_or_else(|| ConfigError::Missing(format!("{AUTH_VALUE_VAR} or {BASIC_USER_VAR}")))?;
    let credentials = [pair.user.expose(), b":", pair.password.expose()].concat();
    Ok(sent.header(
        "authorization",
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        ),
    ))
}

/// TRIFFT's own member-event shape (docs/providers.md "TRIFFT: Test vectors"): the type, the
/// event's properties and the member's identifiers. A user-designed template may look nothing
/// like it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberEvent {
    #[serde(default)]
    pub event_type: Option<String>,
    #[serde(default)]
    pub properties: Map<String, Value>,
    #[serde(default)]
    pub customer_ids: Option<CustomerIds>,
    /// Epoch seconds, as a string in TRIFFT's example.
    #[serde(default)]
    pub timestamp: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerIds {
    #[serde(default)]
    pub trfft_loyalty_id: Option<String>,
    /// Personal data: never logged (the `Debug` output hides it).
    #[serde(default)]
    pub email_address: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl std::fmt::Debug for CustomerIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerIds")
            .field("trfft_loyalty_id", &self.trfft_loyalty_id)
            .field("email_address", &self.email_address.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::sha256_hex;
    use lambda_http::http::{HeaderMap, HeaderValue};
    use serde_json::json;

    // docs/providers.md "TRIFFT: Test vectors".
    const HEADER_VALUE: &str = "trf_4f9c2b7e0d1a4c6b9e8f7a6b5c4d3e2f";
    const BODY: &str = r#"{"event_type":"trft_perk_redeemed","properties":{"perk_id":"fa89ef32-1420-4fcd-b23a-e9478706dba9","perk_name":"Welcome!","venue_id":"06d27d15-7867-4412-8a81-aaf9b23af497","venue_name":"The Frog & Rosbif, Toulouse"},"customer_ids":{"email_address":"member@example.com","trfft_loyalty_id":"bf428af0-bf06-4bc4-a91b-91b5bda6e211"},"timestamp":"1747053296"}"#;
    const BASIC: &str = "dHJpZmZ0LWhvb2s6UzNjcjN0LVBhNTU=";

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().copied())
    }

    fn trifft(pairs: &[(&str, &str)]) -> Trifft {
        Trifft::from_env(&env(pairs)).unwrap()
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

    fn inbound<'a>(
        method: &'a Method,
        headers: &'a HeaderMap,
        query: Option<&'a str>,
        body: &'a [u8],
    ) -> Inbound<'a> {
        Inbound {
            method,
            headers,
            path: "/",
            query,
            body,
            now: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn inspect_one(t: &Trifft, req: &Inbound<'_>) -> Result<InboundEvent, Refusal> {
        let verified = VerifiedRequest::new(req, t.authenticate(req).expect("authenticated"));
        match t.inspect(&verified)? {
            Inspection::Events { mut events, .. } if events.len() == 1 => Ok(events.remove(0)),
            other => panic!("one event expected, got {other:?}"),
        }
    }

    const HEADER_AUTH: [(&str, &str); 2] = [
        (AUTH_HEADER_VAR, "X-Trifft-Key"),
        (
            AUTH_VALUE_VAR,
            "old-value-0000,trf_4f9c2b7e0d1a4c6b9e8f7a6b5c4d3e2f",
        ),
    ];

    #[test]
    fn header_authentication_accepts_any_configured_value_of_the_vector() {
        let t = trifft(&HEADER_AUTH);
        let post = Method::POST;
        let ok = headers(&[("x-trifft-key", HEADER_VALUE)]);
        assert!(t.authenticate(&inbound(&post, &ok, None, b"")).is_ok());
        let wrong = headers(&[("X-Trifft-Key", "trf_4f9c2b7e0d1a4c6b9e8f7a6b5c4d3e2")]);
        assert_eq!(
            t.authenticate(&inbound(&post, &wrong, None, b""))
                .unwrap_err(),
            AuthFailure::Mismatch
        );
        let elsewhere = headers(&[("X-Other", HEADER_VALUE)]);
        assert_eq!(
            t.authenticate(&inbound(&post, &elsewhere, None, b""))
                .unwrap_err(),
            AuthFailure::Missing
        );
        // A Basic header does not pass when only header authentication is configured.
        let basic = headers(&[("authorization", &format!("Basic {BASIC}"))]);
        assert!(t.authenticate(&inbound(&post, &basic, None, b"")).is_err());
    }

    #[test]
    fn basic_authentication_accepts_the_vector_and_either_kind_passes_when_both_are_set() {
        let basic_only = [
            (BASIC_USER_VAR, "trifft-hook"),
            (BASIC_PASSWORD_VAR, "S3cr3t-Pa55"),
        ];
        let post = Method::POST;
        let good = headers(&[("Authorization", &format!("Basic {BASIC}"))]);
        let bad = headers(&[("Authorization", "Basic dHJpZmZ0LWhvb2s6d3Jvbmc=")]);
        let header = headers(&[("X-Trifft-Key", HEADER_VALUE)]);
        let t = trifft(&basic_only);
        assert!(t.authenticate(&inbound(&post, &good, None, b"")).is_ok());
        assert_eq!(
            t.authenticate(&inbound(&post, &bad, None, b""))
                .unwrap_err(),
            AuthFailure::Mismatch
        );
        assert!(t.authenticate(&inbound(&post, &header, None, b"")).is_err());

        let both = trifft(&[HEADER_AUTH[0], HEADER_AUTH[1], basic_only[0], basic_only[1]]);
        assert!(both.authenticate(&inbound(&post, &good, None, b"")).is_ok());
        assert!(both
            .authenticate(&inbound(&post, &header, None, b""))
            .is_ok());
        let wrong_both = headers(&[
            ("Authorization", "Basic dHJpZmZ0LWhvb2s6d3Jvbmc="),
            ("X-Trifft-Key", "nope"),
        ]);
        assert_eq!(
            both.authenticate(&inbound(&post, &wrong_both, None, b""))
                .unwrap_err(),
            AuthFailure::Mismatch
        );
        assert_eq!(
            both.authenticate(&inbound(&post, &HeaderMap::new(), None, b""))
                .unwrap_err(),
            AuthFailure::Missing
        );
    }

    #[test]
    fn configuration_fails_closed_and_pairs_basic_lists_unambiguously() {
        let missing = |pairs: &[(&str, &str)]| Trifft::from_env(&env(pairs)).unwrap_err();
        assert!(matches!(missing(&[]), ConfigError::Missing(_)));
        assert!(matches!(
            missing(&[(AUTH_VALUE_VAR, " , ")]),
            ConfigError::Missing(_)
        ));
        assert_eq!(
            missing(&[(AUTH_HEADER_VAR, "X-Key")]),
            ConfigError::Missing(AUTH_VALUE_VAR.into())
        );
        assert_eq!(
            missing(&[(AUTH_VALUE_VAR, "v")]),
            ConfigError::Missing(AUTH_HEADER_VAR.into())
        );
        assert_eq!(
            missing(&[(BASIC_USER_VAR, "u")]),
            ConfigError::Missing(BASIC_PASSWORD_VAR.into())
        );
        assert!(matches!(
            missing(&[(AUTH_HEADER_VAR, "bad header"), (AUTH_VALUE_VAR, "v")]),
            ConfigError::Invalid { .. }
        ));
        assert!(matches!(
            missing(&[(BASIC_USER_VAR, "a,b"), (BASIC_PASSWORD_VAR, "1,2,3")]),
            ConfigError::Invalid { .. }
        ));
        assert!(matches!(
            missing(&[
                (AUTH_HEADER_VAR, "X-Key"),
                (AUTH_VALUE_VAR, "v"),
                (EVENT_ID_POINTER_VAR, "event_id")
            ]),
            ConfigError::Invalid { .. }
        ));

        // An id or type taken from a credential header would store and log the secret.
        for (var, header) in [
            (EVENT_ID_HEADER_VAR, "x-key"),
            (EVENT_TYPE_HEADER_VAR, "X-KEY"),
            (EVENT_ID_HEADER_VAR, "Authorization"),
        ] {
            assert_eq!(
                missing(&[
                    (AUTH_HEADER_VAR, "X-Key"),
                    (AUTH_VALUE_VAR, "v"),
                    (var, header)
                ]),
                ConfigError::Invalid {
                    name: var.into(),
                    why: format!("{} carries the credential", header.to_ascii_lowercase())
                }
            );
        }
        // Tenant maps: one value for two tenants names neither; user and password maps pair by
        // tenant, one user each; a password map with a list of several users is ambiguous.
        let invalid = |pairs: &[(&str, &str)]| {
            matches!(
                Trifft::from_env(&env(pairs)),
                Err(ConfigError::Invalid { .. })
            )
        };
        assert!(invalid(&[
            (AUTH_HEADER_VAR, "X-Key"),
            (AUTH_VALUE_VAR, r#"{"a":"same-value","b":"same-value"}"#)
        ]));
        assert!(invalid(&[
            (BASIC_USER_VAR, "u1,u2"),
            (BASIC_PASSWORD_VAR, r#"{"a":"p1"}"#)
        ]));
        assert!(invalid(&[
            (BASIC_USER_VAR, r#"{"a":"u1"}"#),
            (BASIC_PASSWORD_VAR, r#"{"b":"p1"}"#)
        ]));
        assert!(invalid(&[
            (BASIC_USER_VAR, r#"{"a":"u1"}"#),
            (BASIC_PASSWORD_VAR, "p1")
        ]));
        assert!(invalid(&[
            (BASIC_USER_VAR, "u"),
            (BASIC_PASSWORD_VAR, r#"{"a":"same","b":"same"}"#)
        ]));
        let mapped = basic_pairs(&env(&[
            (BASIC_USER_VAR, r#"{"a":"ua","b":"ub"}"#),
            (BASIC_PASSWORD_VAR, r#"{"a":["pa1","pa2"],"b":"pb"}"#),
        ]))
        .unwrap();
        let labelled: Vec<(Option<&str>, &[u8], &[u8])> = mapped
            .iter()
            .map(|p| (p.tenant.as_deref(), p.user.expose(), p.password.expose()))
            .collect();
        assert_eq!(
            labelled,
            vec![
                (Some("a"), b"ua".as_slice(), b"pa1".as_slice()),
                (Some("a"), b"ua".as_slice(), b"pa2".as_slice()),
                (Some("b"), b"ub".as_slice(), b"pb".as_slice())
            ]
        );

        let pairs = |users: &str, passwords: &str| -> Vec<(String, String)> {
            basic_pairs(&env(&[
                (BASIC_USER_VAR, users),
                (BASIC_PASSWORD_VAR, passwords),
            ]))
            .unwrap()
            .iter()
            .map(|p| {
                (
                    String::from_utf8_lossy(p.user.expose()).into(),
                    String::from_utf8_lossy(p.password.expose()).into(),
                )
            })
            .collect()
        };
        let owned = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(pairs("a,b", "1,2"), owned(&[("a", "1"), ("b", "2")]));
        assert_eq!(pairs("a", "1,2"), owned(&[("a", "1"), ("a", "2")]));
        assert_eq!(pairs("a,b", "1"), owned(&[("a", "1"), ("b", "1")]));
    }

    #[test]
    fn vector_is_keyed_by_its_body_hash_with_type_and_time_from_the_body() {
        let t = trifft(&HEADER_AUTH);
        let post = Method::POST;
        let h = headers(&[
            ("X-Trifft-Key", HEADER_VALUE),
            ("content-type", "application/json"),
        ]);
        let e = inspect_one(&t, &inbound(&post, &h, None, BODY.as_bytes())).unwrap();
        assert_eq!(e.key, EventKey::hash_of(BODY.as_bytes()));
        assert_eq!(e.event_id, sha256_hex(BODY.as_bytes()));
        assert_eq!(e.event_type, "trft_perk_redeemed");
        assert_eq!(e.occurred_at.as_deref(), Some("1747053296"));
        assert_eq!(e.tenant, None);
        assert_eq!(
            e.payload,
            Payload::Json(serde_json::from_str(BODY).unwrap())
        );
        let model: MemberEvent = serde_json::from_str(BODY).unwrap();
        let ids = model.customer_ids.unwrap();
        assert_eq!(
            ids.trfft_loyalty_id.as_deref(),
            Some("bf428af0-bf06-4bc4-a91b-91b5bda6e211")
        );
        assert!(!format!("{ids:?}").contains("member@example.com"));
    }

    #[test]
    fn id_and_type_come_from_configured_pointers_then_headers_then_fields() {
        let post = Method::POST;
        let configured = trifft(&[
            HEADER_AUTH[0],
            HEADER_AUTH[1],
            (EVENT_ID_POINTER_VAR, "/meta/id"),
            (EVENT_ID_HEADER_VAR, "X-Event-Id"),
            (EVENT_TYPE_POINTER_VAR, "/meta/kind"),
            (EVENT_TYPE_HEADER_VAR, "X-Event-Type"),
        ]);
        let h = headers(&[
            ("X-Trifft-Key", HEADER_VALUE),
            ("X-Event-Id", "hdr-id"),
            ("X-Event-Type", "hdr.type"),
        ]);
        let both = br#"{"meta":{"id":42,"kind":"points.earned"},"event":"ignored"}"#;
        let e = inspect_one(&configured, &inbound(&post, &h, None, both)).unwrap();
        assert_eq!(
            (e.key, e.event_type.as_str()),
            (EventKey::id("42"), "points.earned")
        );
        // Pointer absent: the header.
        let e = inspect_one(&configured, &inbound(&post, &h, None, br#"{"event":"x"}"#)).unwrap();
        assert_eq!(
            (e.key, e.event_type.as_str()),
            (EventKey::id("hdr-id"), "hdr.type")
        );
        // Neither: the hash and the top-level fields, in their order.
        let bare = headers(&[("X-Trifft-Key", HEADER_VALUE)]);
        for (body, expected) in [
            (r#"{"event":"a","type":"b","event_type":"c"}"#, "a"),
            (r#"{"type":"b","event_type":"c"}"#, "b"),
            (r#"{"event_type":"c"}"#, "c"),
            (r#"{"event":""}"#, DEFAULT_EVENT_TYPE),
            (r#"[1,2]"#, DEFAULT_EVENT_TYPE),
        ] {
            let e =
                inspect_one(&configured, &inbound(&post, &bare, None, body.as_bytes())).unwrap();
            assert_eq!(e.event_type, expected, "{body}");
            assert_eq!(e.key, EventKey::hash_of(body.as_bytes()));
        }
    }

    #[test]
    fn get_query_is_the_payload_decoded_like_a_form() {
        let t = trifft(&HEADER_AUTH);
        let get = Method::GET;
        let h = headers(&[("X-Trifft-Key", HEADER_VALUE)]);
        let query = "event=points_earned&email=member%40example.com&tag=a&tag=b+c&empty=";
        let e = inspect_one(&t, &inbound(&get, &h, Some(query), b"")).unwrap();
        assert_eq!(e.key, EventKey::hash_of(query.as_bytes()));
        assert_eq!(e.event_type, "points_earned");
        assert_eq!(
            e.payload,
            Payload::Json(
                json!({
                    "event": "points_earned",
                    "email": "member@example.com",
                    "tag": ["a", "b c"],
                    "empty": ""
                })
                .into()
            )
        );
        // A DELETE without body also carries its content in the query.
        let delete = Method::DELETE;
        let e = inspect_one(&t, &inbound(&delete, &h, Some("id=7"), b"")).unwrap();
        assert_eq!(e.payload, Payload::Json(json!({"id": "7"}).into()));
        // A POST with a body ignores its query.
        let post = Method::POST;
        let e = inspect_one(&t, &inbound(&post, &h, Some("id=7"), b"hello")).unwrap();
        assert_eq!(e.payload, Payload::Raw("hello".into()));
        // Nothing at all: an empty text payload.
        let e = inspect_one(&t, &inbound(&delete, &h, None, b"")).unwrap();
        assert_eq!(e.payload, Payload::Raw(String::new()));
    }

    #[test]
    fn bodies_travel_by_media_type() {
        let t = trifft(&HEADER_AUTH);
        let post = Method::POST;
        let with_type = |ct: &str| headers(&[("X-Trifft-Key", HEADER_VALUE), ("Content-Type", ct)]);
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<event type=\"x\">\r\n  <name>Zoë</name>\n</event>\n";
        for ct in ["application/xml", "text/xml; charset=utf-8", "text/plain"] {
            let h = with_type(ct);
            let e = inspect_one(&t, &inbound(&post, &h, None, xml.as_bytes())).unwrap();
            assert_eq!(e.payload, Payload::Raw(xml.into()), "{ct}");
            assert_eq!(e.event_type, DEFAULT_EVENT_TYPE);
        }
        let h = with_type(FORM);
        // A form body travels as the sender's text; its fields are read in place.
        let form = b"type=signup&name=Zo%C3%AB&time=t1";
        let e = inspect_one(&t, &inbound(&post, &h, None, form)).unwrap();
        assert_eq!(
            e.payload,
            Payload::Raw("type=signup&name=Zo%C3%AB&time=t1".into())
        );
        assert_eq!(e.event_type, "signup");
        assert_eq!(e.occurred_at.as_deref(), Some("t1"));
        // As the form read as a JSON object would answer: a field sent twice is a list.
        let twice = b"type=a&type=b&id=%20";
        assert_eq!(form_pointer(twice, "/type"), None);
        assert_eq!(form_pointer(twice, "/type/1").as_deref(), Some("b"));
        assert_eq!(form_pointer(twice, "/type/2"), None);
        assert_eq!(form_pointer(form, "/name").as_deref(), Some("Zoë"));
        assert_eq!(form_pointer(form, "/name/0"), None, "sent once: not a list");
        assert_eq!(form_pointer(twice, "/id"), None, "blank");
        assert_eq!(form_pointer(form, "name"), None);
        // A type sent twice is a list, not a type; the next field in the order is taken.
        let e = inspect_one(
            &t,
            &inbound(&post, &h, None, b"event=a&event=b&type=t2&time=t3"),
        )
        .unwrap();
        assert_eq!(
            (e.event_type.as_str(), e.occurred_at.as_deref()),
            ("t2", Some("t3"))
        );
        assert_eq!(
            form_fields(b"event=a&event=b&type=%20&time=t3", &TOP_FIELDS),
            [None, None, None, None, None, None, Some("t3".to_owned())]
        );
        let h = with_type("application/json");
        assert!(matches!(
            inspect_one(&t, &inbound(&post, &h, None, b"{\"a\":")),
            Err(Refusal::BadRequest(_))
        ));
        // Not UTF-8 (Latin-1 XML, stray bytes): carried byte for byte, never refused.
        for media in ["text/plain", "application/xml"] {
            let h = with_type(media);
            let e = inspect_one(&t, &inbound(&post, &h, None, b"<n>caf\xe9</n>\xff")).unwrap();
            assert_eq!(e.payload, Payload::Bytes(b"<n>caf\xe9</n>\xff".to_vec()));
        }
        // No content type: JSON when it parses, text otherwise.
        let h = headers(&[("X-Trifft-Key", HEADER_VALUE)]);
        let e = inspect_one(&t, &inbound(&post, &h, None, br#"{"type":"t"}"#)).unwrap();
        assert_eq!(e.payload, Payload::Json(json!({"type": "t"}).into()));
        let e = inspect_one(&t, &inbound(&post, &h, None, b"{not json")).unwrap();
        assert_eq!(e.payload, Payload::Raw("{not json".into()));
    }

    #[test]
    fn methods_and_media_types() {
        let t = trifft(&HEADER_AUTH);
        for m in ["POST", "PUT", "PATCH", "DELETE", "GET"] {
            assert!(t
                .methods()
                .contains(&Method::from_bytes(m.as_bytes()).unwrap()));
        }
        assert!(!t.methods().contains(&Method::HEAD));
        for ok in [
            None,
            Some("application/json"),
            Some("application/vnd.trifft+json"),
            Some("application/xml"),
            Some("text/xml"),
            Some("text/plain"),
            Some(FORM),
        ] {
            assert!(t.accepts_media_type(ok), "{ok:?}");
        }
        for refused in ["multipart/form-data", "image/png", "text/html"] {
            assert!(!t.accepts_media_type(Some(refused)), "{refused}");
        }
    }

    #[test]
    fn simulate_sniffs_the_content_type_and_authenticates() {
        let e = env(&[
            (AUTH_HEADER_VAR, "X-Trifft-Key"),
            (AUTH_VALUE_VAR, "k1,k2"),
            (BASIC_USER_VAR, "trifft-hook"),
            (BASIC_PASSWORD_VAR, "S3cr3t-Pa55"),
        ]);
        let now = OffsetDateTime::UNIX_EPOCH;
        let header = |sent: &Sent, name: &str| {
            sent.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        for (body, ct) in [
            ("<a/>", "application/xml"),
            (" {\"a\":1}", "application/json"),
            ("[1]", "application/json"),
            ("a=1&b=2", FORM),
            ("a=1 b", TEXT),
            ("hello", TEXT),
        ] {
            let sent = simulate(body.as_bytes(), &e, now).unwrap();
            assert_eq!(header(&sent, "content-type").as_deref(), Some(ct), "{body}");
            assert_eq!(header(&sent, "x-trifft-key").as_deref(), Some("k1"));
        }
        let basic = simulate_basic(b"{}", &e, now).unwrap();
        assert_eq!(
            header(&basic, "authorization"),
            Some(format!("Basic {BASIC}"))
        );
        let get = simulate_get("a=1", &e, now).unwrap();
        assert_eq!(
            (&get.method, get.query.as_deref(), get.body.is_empty()),
            (&Method::GET, Some("a=1"), true)
        );
        assert_eq!(header(&get, "content-type"), None);
        let only_basic = env(&[(BASIC_USER_VAR, "u"), (BASIC_PASSWORD_VAR, "p")]);
        let sent = simulate(b"x", &only_basic, now).unwrap();
        assert!(header(&sent, "authorization").is_some());
        assert!(simulate(b"x", &env(&[]), now).is_err());
    }
}

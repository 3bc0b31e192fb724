//! The properties of the webhook intake, defined once and checked twice: by the stable test
//! `tests/properties` (proptest, sample replay) and by the cargo-fuzz targets in `fuzz/`, which
//! include this file with `#[path = …] mod harness;`. Only `shared`'s public API and its own
//! dependencies are used here, so the file compiles in both crates.
//!
//! Every `check_*` function panics, naming the property, when one does not hold; the fuzz targets
//! and the proptests turn that panic into a crash or a failing case. The oracles are independent
//! of the code under test: credentials are recomputed with `hmac`/`sha2`/`base64` directly from
//! the configured values, forms are decoded by hand, and the SQS character set is written out
//! from the SQS documentation.
#![allow(dead_code)]

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use hmac::{Hmac, Mac};
use lambda_http::http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::{Map, Value};
use sha2::Sha256;
use time::OffsetDateTime;

use shared::apigw::Sent;
use shared::clock::FixedClock;
use shared::config::{Env, Settings};
use shared::envelope::{sqs_allows, Envelope, Payload};
use shared::provider::{path_token, Inbound};
use shared::providers::{self, standard_webhook, tilby, tribe, trifft, trybe};
use shared::queue::{MemoryQueue, Message, ATTRIBUTE_TYPE};
use shared::secret::{Secret, SecretList};
use shared::store::MemoryClaims;
use shared::verify::{self, BasicPair, Scope, Verified};
use shared::{Answer, Receiver};

/// Every provider, in `providers::ALL` order.
pub const PROVIDERS: [&str; 6] = ["trybe", "tribe", "tribemade", "trifft", "tilby", "standard"];

/// The receivers' clock (2025-01-01T00:00:00Z): fixed, so Tribe's timestamps line up.
pub const NOW_MS: i64 = 1_735_689_600_000;

/// Methods a fuzzed request may use (TRIFFT takes five of them; everyone else only POST).
pub const METHODS: [&str; 8] = [
    "POST", "GET", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "PROPFIND",
];

/// Header names a fuzzed request may carry by number: every credential and content header the
/// providers read, so that a fuzzer finds them without guessing.
pub const KNOWN_HEADERS: [&str; 13] = [
    "content-type",
    "signature",
    "x-bettermode-signature",
    "x-bettermode-request-timestamp",
    "x-tribe-signature",
    "x-tribe-request-timestamp",
    "x-trifft-key",
    "authorization",
    "x-tilby-signature",
    "x-webhook-signature",
    "x-event-id",
    "x-event-type",
    "user-agent",
];

/// The repository root: `shared/` and `fuzz/` are both one level below it.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate below the repository root")
        .to_path_buf()
}

/// `local.env`, the dev secrets every sample is signed with.
pub fn dev_env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| Env::from_env_file(&root().join("local.env")).expect("local.env"))
}

/// The receiver's environment: local.env plus the table and queue, and with `tight` small limits
/// (body, message size, events per request) so that the size checks are reached.
pub fn receiver_env(tight: bool) -> Env {
    let mut env = dev_env().clone();
    env.set("EVENTS_TABLE", "webhook-events");
    env.set("EVENTS_QUEUE_URL", "memory://webhook-events");
    if tight {
        env.set("MAX_BODY_BYTES", "8192");
        env.set("MAX_MESSAGE_BYTES", "1200");
        env.set("MAX_EVENTS_PER_REQUEST", "3");
    }
    env
}

/// The sample bodies in `events/<provider>/` (not the rendered `*.apigw.json`), sorted by name.
pub fn samples(provider: &str) -> Vec<(String, Vec<u8>)> {
    let dir = root().join("events").join(provider);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file() && !p.to_string_lossy().ends_with(".apigw.json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("sample"))
        })
        .collect();
    files.sort();
    files
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("tokio runtime");
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(future))
}

fn at_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).expect("in range")
}

// ---------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------

/// What a fuzzer or a proptest decides about one request to a provider's receiver.
#[derive(Debug, Clone, Default)]
pub struct Case {
    /// Authenticate the body the way the provider does (`providers::simulate`).
    pub sign: bool,
    /// Another way of sending the credential, per provider (see [`signed`]).
    pub variant: u8,
    /// Small limits: 8 KiB bodies, 1200-byte messages, 3 events per request.
    pub tight: bool,
    /// Another method than the signer's.
    pub method: Option<Method>,
    /// The signer's clock minus the receiver's, in seconds.
    pub skew_secs: i32,
    /// Path segments before and after the signer's path.
    pub prefix: Vec<String>,
    pub suffix: Vec<String>,
    pub query: Option<String>,
    /// Headers that replace the signer's of the same name (name, value), then headers added
    /// after them; either dropped when not valid HTTP.
    pub set_headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// A cursor over fuzz bytes: every read succeeds (zeros or nothing past the end).
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// A length byte, then that many bytes.
    fn chunk(&mut self) -> &'a [u8] {
        let n = self.byte() as usize;
        self.take(n)
    }

    fn rest(&mut self) -> &'a [u8] {
        self.take(self.0.len())
    }
}

impl Case {
    /// Decodes fuzz bytes:
    ///
    /// ```text
    /// [flags] [skew] [sections] section* body…
    /// flags: bit 0 sign, bit 1 tight, bits 2-3 variant, bits 4-7 method (0: the signer's,
    ///        k: METHODS[(k - 1) % 8])
    /// skew:  i8, × 8 s (±1024 s: across Tribe's 900 s window)
    /// section: [kind] [len] [len bytes]; kind % 4: 0 prefix segment, 1 suffix segment,
    ///        2 query, 3 header ([name index] value, or an index past KNOWN_HEADERS and
    ///        `name:value`), added when kind % 8 is 3, replacing the signer's when 7
    /// ```
    ///
    /// A sample with `01 00 00` in front is that sample, signed, as the provider sends it.
    pub fn decode(data: &[u8]) -> Case {
        let mut bytes = Bytes(data);
        let flags = bytes.byte();
        let skew = bytes.byte() as i8;
        let sections = bytes.byte() % 16;
        let mut case = Case {
            sign: flags & 1 != 0,
            tight: flags & 2 != 0,
            variant: (flags >> 2) & 3,
            method: match flags >> 4 {
                0 => None,
                k => Some(Method::from_bytes(METHODS[(k as usize - 1) % 8].as_bytes()).unwrap()),
            },
            skew_secs: i32::from(skew) * 8,
            ..Case::default()
        };
        for _ in 0..sections {
            let kind = bytes.byte();
            let chunk = bytes.chunk();
            let text = || String::from_utf8_lossy(chunk).into_owned();
            match kind % 4 {
                0 => case.prefix.push(text()),
                1 => case.suffix.push(text()),
                2 => case.query = Some(text()),
                _ => {
                    let (sel, value) = chunk.split_first().unwrap_or((&0, &[]));
                    let header = match KNOWN_HEADERS.get(*sel as usize) {
                        Some(name) => (name.as_bytes().to_vec(), value.to_vec()),
                        None => {
                            let at = value.iter().position(|&b| b == b':').unwrap_or(0);
                            let (name, value) = value.split_at(at);
                            let value = value.get(1..).unwrap_or_default();
                            (name.to_vec(), value.to_vec())
                        }
                    };
                    if kind % 8 == 7 {
                        case.set_headers.push(header);
                    } else {
                        case.headers.push(header);
                    }
                }
            }
        }
        case.body = bytes.rest().to_vec();
        case
    }
}

/// One request as the receiver sees it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Request {
    fn values(&self, name: &str) -> impl Iterator<Item = &[u8]> {
        self.headers.get_all(name).iter().map(HeaderValue::as_bytes)
    }

    fn segments(&self) -> impl Iterator<Item = &str> {
        self.path.split('/').filter(|s| !s.is_empty())
    }
}

/// The request the provider would send for `case`, signed at the receiver's time plus the skew.
/// Variants: Trybe sends its signature in upper case; Tribe uses the legacy `X-Tribe-*` headers;
/// TRIFFT uses Basic (1) or a GET whose query is the content (2); Tilby's signature travels in
/// another header, found by its value.
pub fn signed(provider: &str, case: &Case) -> Sent {
    let env = dev_env();
    let now = at_ms(NOW_MS + i64::from(case.skew_secs) * 1000);
    let sent = match (provider, case.variant) {
        (trifft::NAME, 1) => {
            trifft::simulate_basic(&case.body, env, now).map_err(|e| e.to_string())
        }
        (trifft::NAME, 2) => {
            let query = case
                .query
                .clone()
                .unwrap_or_else(|| String::from_utf8_lossy(&case.body).into_owned());
            trifft::simulate_get(&query, env, now).map_err(|e| e.to_string())
        }
        _ => providers::simulate(provider, &case.body, env, now).map_err(|e| e.to_string()),
    };
    let mut sent = sent.unwrap_or_else(|e| panic!("local.env configures {provider}: {e}"));
    if case.variant == 1 {
        for (name, value) in &mut sent.headers {
            match provider {
                trybe::NAME if name.eq_ignore_ascii_case(trybe::SIGNATURE_HEADER) => {
                    *value = value.to_uppercase()
                }
                tribe::NAME if name.eq_ignore_ascii_case(tribe::BETTERMODE.signature) => {
                    *name = tribe::LEGACY.signature.into()
                }
                tribe::NAME if name.eq_ignore_ascii_case(tribe::BETTERMODE.timestamp) => {
                    *name = tribe::LEGACY.timestamp.into()
                }
                tilby::NAME if name.eq_ignore_ascii_case(tilby::SIMULATED_SIGNATURE_HEADER) => {
                    *name = "x-webhook-signature".into()
                }
                // Svix-built senders: the same scheme under `svix-*` headers.
                standard_webhook::NAME if name.starts_with("webhook-") => {
                    *name = name.replacen("webhook-", "svix-", 1)
                }
                _ => {}
            }
        }
    }
    sent
}

/// The request of `case` for `provider`: the signer's (or a bare POST to `/`), with the fuzzed
/// path segments, query, method and headers added.
pub fn build(provider: &str, case: &Case) -> Request {
    let sent = if case.sign {
        signed(provider, case)
    } else {
        Sent::post("/", case.body.clone())
    };
    let mut path = String::new();
    for segment in &case.prefix {
        path.push('/');
        path.push_str(segment);
    }
    path.push_str(&sent.path);
    for segment in &case.suffix {
        path.push('/');
        path.push_str(segment);
    }
    let header = |name: &[u8], value: &[u8]| {
        Some((
            HeaderName::from_bytes(name).ok()?,
            HeaderValue::from_bytes(value).ok()?,
        ))
    };
    let mut headers = HeaderMap::new();
    for (n, v) in sent
        .headers
        .iter()
        .filter_map(|(n, v)| header(n.as_bytes(), v.as_bytes()))
    {
        headers.append(n, v);
    }
    for (n, v) in case.set_headers.iter().filter_map(|(n, v)| header(n, v)) {
        headers.insert(n, v);
    }
    for (n, v) in case.headers.iter().filter_map(|(n, v)| header(n, v)) {
        headers.append(n, v);
    }
    Request {
        method: case.method.clone().unwrap_or(sent.method),
        path,
        query: sent.query.or_else(|| case.query.clone()),
        headers,
        body: sent.body,
    }
}

// ---------------------------------------------------------------------------------------------
// The receiver properties
// ---------------------------------------------------------------------------------------------

/// What one checked request did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: u16,
    pub queued: usize,
}

/// Sends `case` to a fresh receiver for `provider` (in-memory claims and queue, local.env
/// secrets, the fixed clock) and checks every receiver property:
///
/// 1. nothing panics;
/// 2. no 2xx without a valid credential ([`has_valid_credential`], an independent oracle);
/// 3. no error answer echoes input: a non-2xx body holds no 8-byte window of the request's body,
///    path, query or header values, beyond the answers' own vocabulary;
/// 4. every message on the queue is SQS-legal (body and attributes), within the configured size
///    as SQS counts it, and reads back as this provider's envelope with its content.
pub fn check_provider(provider: &str, case: &Case) -> Outcome {
    let request = build(provider, case);
    check_request(provider, &request, case.tight)
}

/// Sends `request` to a fresh receiver for `provider`: its answer, what it queued, and the
/// message size limit it had.
pub fn send(provider: &str, request: &Request, tight: bool) -> (Answer, Vec<Message>, usize) {
    let env = receiver_env(tight);
    let settings = Settings::from_env(&env).expect("receiver settings");
    let max_message_bytes = settings.max_message_bytes;
    let queue = Arc::new(MemoryQueue::default());
    let receiver = Receiver::new(
        providers::from_env(provider, &env).expect("local.env configures every provider"),
        Arc::new(MemoryClaims::default()),
        queue.clone(),
        settings,
        Arc::new(FixedClock::at_millis(NOW_MS)),
    );
    let answer = block_on(receiver.answer_parts(
        &request.method,
        &request.headers,
        &request.path,
        request.query.as_deref(),
        &request.body,
    ));
    (answer, queue.messages(), max_message_bytes)
}

/// [`check_provider`] for a request built elsewhere.
pub fn check_request(provider: &str, request: &Request, tight: bool) -> Outcome {
    let (answer, messages, max_message_bytes) = send(provider, request, tight);
    let status = answer.status();
    if status.is_success() {
        assert!(
            has_valid_credential(provider, request),
            "{provider} answered {status} to a request without a valid credential: {request:?}"
        );
    } else {
        let response = answer.clone().into_response();
        let body = response.body().as_ref();
        if let Some(window) = echoed(body, request) {
            panic!(
                "{provider}'s {status} answer echoes {window:?} from the request: {:?} for {request:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
    for message in &messages {
        check_message(provider, message, max_message_bytes);
    }
    let queued = match &answer {
        Answer::Accepted { queued, .. } => *queued,
        _ => 0,
    };
    assert_eq!(
        messages.len(),
        queued,
        "{provider}: the queue holds what the answer says was queued ({answer:?})"
    );
    Outcome {
        status: status.as_u16(),
        queued,
    }
}

/// One queued message: SQS-legal, within the size limit, this provider's envelope.
pub fn check_message(provider: &str, message: &Message, max_message_bytes: usize) {
    if let Some(c) = message
        .body
        .chars()
        .find(|&c| !(sqs_legal(c) && sqs_allows(c)))
    {
        panic!("{provider}: message body holds {c:?}, which SQS refuses");
    }
    let mut size = message.body.len();
    for (name, value) in message.attributes() {
        assert!(
            !value.is_empty(),
            "{provider}: attribute {name} is empty (SQS refuses it)"
        );
        if let Some(c) = value.chars().find(|&c| !(sqs_legal(c) && sqs_allows(c))) {
            panic!("{provider}: attribute {name} holds {c:?}, which SQS refuses");
        }
        size += name.len() + ATTRIBUTE_TYPE.len() + value.len();
    }
    assert_eq!(
        message.sqs_size(),
        size,
        "{provider}: size as SQS counts it"
    );
    assert!(
        size <= max_message_bytes,
        "{provider}: a {size}-byte message passed the {max_message_bytes}-byte limit"
    );
    let envelope: Envelope = serde_json::from_str(&message.body)
        .unwrap_or_else(|e| panic!("{provider}: message body is not an envelope: {e}"));
    assert_eq!(envelope.provider, provider);
    assert_eq!(message.provider, provider);
    if envelope.content().is_none() {
        panic!(
            "{provider}: queued envelope has no content: {}",
            message.body
        );
    }
}

/// The SQS character set, written out from SendMessage's documentation (the checks require both
/// this and the library's `sqs_allows`; `check_sqs_allows` compares the two on every char): `#x9 | #xA | #xD |
/// #x20–#xD7FF | #xE000–#xFFFD | #x10000–#x10FFFF`.
pub fn sqs_legal(c: char) -> bool {
    let u = c as u32;
    matches!(u, 0x9 | 0xA | 0xD)
        || (0x20..=0xD7FF).contains(&u)
        || (0xE000..=0xFFFD).contains(&u)
        || (0x10000..=0x10FFFF).contains(&u)
}

// ---------------------------------------------------------------------------------------------
// Oracles
// ---------------------------------------------------------------------------------------------

/// The values of a credential variable, parsed here without `SecretList`: a JSON object of
/// tenant → value or [values], else a comma-separated list; values trimmed, blanks dropped.
pub fn configured(env: &Env, var: &str) -> Vec<Vec<u8>> {
    let Some(raw) = env.get(var) else {
        return Vec::new();
    };
    let values: Vec<String> = match serde_json::from_str::<Map<String, Value>>(raw) {
        Ok(map) if raw.trim_start().starts_with('{') => map
            .values()
            .flat_map(|v| match v {
                Value::Array(list) => list.clone(),
                one => vec![one.clone()],
            })
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => raw.split(',').map(str::to_owned).collect(),
    };
    values
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(|v| v.as_bytes().to_vec())
        .collect()
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Whether a header value is the hex (either case) of `mac`, surrounding whitespace allowed.
fn hex_is(value: &[u8], mac: &[u8]) -> bool {
    hex::decode(value.trim_ascii()).is_ok_and(|bytes| bytes == mac)
}

fn signed_by_any(value: &[u8], keys: &[Vec<u8>], parts: &[&[u8]]) -> bool {
    keys.iter().any(|k| hex_is(value, &hmac_sha256(k, parts)))
}

fn segment_is_token(request: &Request, tokens: &[Vec<u8>]) -> bool {
    request
        .segments()
        .any(|s| tokens.iter().any(|t| t == s.as_bytes()))
}

/// Whether Tribe would accept `timestamp` at [`NOW_MS`]: digits only, 10 digits are seconds,
/// within `TRIBE_TOLERANCE_SECONDS` (900 by default) either way.
fn tribe_fresh(timestamp: &[u8], env: &Env) -> bool {
    let digits = timestamp.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let Ok(value) = std::str::from_utf8(digits).unwrap().parse::<i64>() else {
        return false;
    };
    let sent_ms = if digits.len() == 10 {
        value * 1000
    } else {
        value
    };
    let tolerance: i64 = env
        .get(tribe::TOLERANCE_VAR)
        .map_or(900, |v| v.parse().expect("tolerance"));
    (NOW_MS - sent_ms).abs() <= tolerance * 1000
}

/// The oracle of "no 2xx without a valid credential": whether `request` carries a credential
/// configured in local.env for `provider`, recomputed from the configured values. Lenient where
/// leniency is harmless (any header of the right name counts, not only the first).
pub fn has_valid_credential(provider: &str, request: &Request) -> bool {
    let env = dev_env();
    let body = request.body.as_slice();
    match provider {
        "trybe" => {
            let keys = configured(env, "TRYBE_SIGNING_SECRET");
            request
                .values("signature")
                .any(|v| signed_by_any(v, &keys, &[body]))
        }
        "tribe" => {
            let keys = configured(env, "TRIBE_SIGNING_SECRET");
            [
                ("x-bettermode-signature", "x-bettermode-request-timestamp"),
                ("x-tribe-signature", "x-tribe-request-timestamp"),
            ]
            .iter()
            .any(|(sig, ts)| {
                request.values(sig).any(|s| {
                    request
                        .values(ts)
                        .any(|t| tribe_fresh(t, env) && signed_by_any(s, &keys, &[t, b":", body]))
                })
            })
        }
        "tribemade" => segment_is_token(request, &configured(env, "TRIBEMADE_URL_TOKEN")),
        "tilby" => {
            let url = segment_is_token(request, &configured(env, "TILBY_URL_TOKEN"));
            let keys = configured(env, "TILBY_SIGNING_TOKEN");
            let signed = keys.is_empty()
                || request.headers.iter().any(|(name, v)| {
                    env.get("TILBY_SIGNATURE_HEADER")
                        .is_none_or(|pinned| pinned.eq_ignore_ascii_case(name.as_str()))
                        && signed_by_any(v.as_bytes(), &keys, &[body])
                });
            url && signed
        }
        "trifft" => {
            let names: Vec<String> = env
                .get("TRIFFT_AUTH_HEADER")
                .unwrap_or("")
                .split(',')
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect();
            let values = configured(env, "TRIFFT_AUTH_VALUE");
            let by_header = request.headers.iter().any(|(name, v)| {
                names.iter().any(|n| n == name.as_str()) && values.iter().any(|x| x == v.as_bytes())
            });
            let pairs = pair_up(
                configured(env, "TRIFFT_BASIC_USER"),
                configured(env, "TRIFFT_BASIC_PASSWORD"),
            );
            let by_basic = request
                .values("authorization")
                .filter_map(|v| std::str::from_utf8(v).ok())
                .filter_map(basic_credentials)
                .any(|presented| {
                    pairs
                        .iter()
                        .any(|(u, p)| presented == [u.as_slice(), b":", p].concat())
                });
            by_header || by_basic
        }
        "standard" => {
            // Keys: the base64 after `whsec_`; any family whose id, timestamp and signature are
            // present, any of their values; `v1,<base64>` entries anywhere in the header.
            let keys: Vec<Vec<u8>> = configured(env, standard_webhook::SECRET_VAR)
                .iter()
                .filter_map(|s| {
                    let s = std::str::from_utf8(s).ok()?;
                    let b64 = s.strip_prefix("whsec_").unwrap_or(s);
                    base64::engine::general_purpose::STANDARD.decode(b64).ok()
                })
                .collect();
            let tolerance: i64 = env
                .get(standard_webhook::TOLERANCE_VAR)
                .map_or(300, |v| v.parse().expect("tolerance"));
            ["webhook", "svix"].iter().any(|family| {
                let values = |part: &str| request.values(&format!("{family}-{part}"));
                values("id").any(|id| {
                    values("timestamp").any(|ts| {
                        let ts = ts.trim_ascii();
                        let fresh = !ts.is_empty()
                            && ts.iter().all(u8::is_ascii_digit)
                            && std::str::from_utf8(ts)
                                .unwrap()
                                .parse::<i64>()
                                .is_ok_and(|t| (NOW_MS / 1000 - t).abs() <= tolerance);
                        fresh
                            && values("signature").any(|sig| {
                                sig.split(|b| *b == b' ')
                                    .filter_map(|e| e.strip_prefix(b"v1,"))
                                    .filter_map(|e| {
                                        base64::engine::general_purpose::STANDARD.decode(e).ok()
                                    })
                                    .any(|mac| {
                                        keys.iter().any(|k| {
                                            mac == hmac_sha256(k, &[id, b".", ts, b".", body])
                                        })
                                    })
                            })
                    })
                })
            })
        }
        other => panic!("no oracle for {other}"),
    }
}

/// Users and passwords as TRIFFT pairs them: zipped when the counts match, else one of either
/// side goes with each of the other.
fn pair_up(users: Vec<Vec<u8>>, passwords: Vec<Vec<u8>>) -> Vec<(Vec<u8>, Vec<u8>)> {
    if users.len() == passwords.len() {
        return users.into_iter().zip(passwords).collect();
    }
    let mut pairs = Vec::new();
    for u in &users {
        for p in &passwords {
            if users.len() == 1 || passwords.len() == 1 {
                pairs.push((u.clone(), p.clone()));
            }
        }
    }
    pairs
}

/// The decoded `user:password` of a Basic header, read leniently: scheme in any case, any
/// whitespace around and after it.
fn basic_credentials(value: &str) -> Option<Vec<u8>> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()
}

// ---------------------------------------------------------------------------------------------
// Echo check
// ---------------------------------------------------------------------------------------------

/// What an error answer is made of (answer.rs, the refusals of provider.rs, pipeline.rs and the
/// providers). A window of input found in an answer is an echo unless these pieces spell it.
const VOCABULARY: &[&str] = &[
    "{\"status\":\"",
    "\"}",
    "\",\"error\":\"",
    "unauthorized",
    "bad_request",
    "unsupported_media_type",
    "method_not_allowed",
    "too_large",
    "unavailable",
    "misconfigured",
    "error",
    "temporarily unavailable, retry later",
    "receiver not configured",
    "body is not valid JSON (line 0, column 0)",
    "body is not a JSON object",
    "body nests deeper than 128 levels",
    "no events in the request",
    "payload cannot be forwarded",
    "type must be a string",
    "type is missing",
    "data is missing or not an object",
    "data.challenge is missing or not a string",
    "webhook-id is empty",
    "entities is not a list",
    "event is not order.created",
    "order_id is not a UUID",
    "created_at is not an ISO 8601 date and time",
    "; ",
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
    " is missing",
    " is empty",
    " must be a string",
    " must be a number",
    " must be an object",
];

/// `(line 12, column 5)` → `(line 0, column 0)`: JSON error positions are not echoes.
fn normalize_positions(answer: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(answer.len());
    let mut i = 0;
    while i < answer.len() {
        let rest = &answer[i..];
        let marker = [b"(line ".as_slice(), b", column "]
            .into_iter()
            .find(|m| rest.starts_with(m));
        match marker {
            Some(m) => {
                out.extend_from_slice(m);
                i += m.len();
                let digits = answer[i..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                if digits > 0 {
                    out.push(b'0');
                    i += digits;
                }
            }
            None => {
                out.push(answer[i]);
                i += 1;
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether `w` is part of a concatenation of vocabulary pieces: the end of one piece, whole
/// pieces, the start of another (or a part of a single piece).
fn vocabulary_spells(w: &[u8]) -> bool {
    let pieces: Vec<&[u8]> = VOCABULARY.iter().map(|p| p.as_bytes()).collect();
    if pieces.iter().any(|p| contains(p, w)) {
        return true;
    }
    // at[i]: w[..i] ends exactly at the end of a piece.
    let mut at = vec![false; w.len() + 1];
    for i in 0..=w.len() {
        at[i] = i == 0 || pieces.iter().any(|p| p.ends_with(&w[..i]));
    }
    for i in 0..=w.len() {
        if !at[i] {
            continue;
        }
        for p in &pieces {
            if w[i..].starts_with(p) {
                at[i + p.len()] = true;
            }
        }
    }
    (0..=w.len()).any(|i| at[i] && pieces.iter().any(|p| p.starts_with(&w[i..])))
}

/// The first 8-byte window of the request (body, path, query, header values) found in `answer`
/// that the answers' vocabulary does not spell.
///
/// Windows are compared as `u64`s, rolled over each input once: slice comparisons would go
/// through libFuzzer's memcmp hooks and cost the fuzzer most of its time on large bodies.
pub fn echoed(answer: &[u8], request: &Request) -> Option<String> {
    let answer = normalize_positions(answer);
    if answer.len() < 8 {
        return None;
    }
    let key = |w: &[u8]| u64::from_le_bytes(w.try_into().expect("8 bytes"));
    let mut windows: Vec<(u64, usize)> = answer
        .windows(8)
        .enumerate()
        .map(|(at, w)| (key(w), at))
        .collect();
    windows.sort_unstable();
    let mut found = vec![false; windows.len()];
    let mut inputs: Vec<&[u8]> = vec![&request.body, request.path.as_bytes()];
    inputs.extend(request.query.as_deref().map(str::as_bytes));
    inputs.extend(request.headers.values().map(HeaderValue::as_bytes));
    for input in inputs.into_iter().filter(|i| i.len() >= 8) {
        let mut k = key(&input[..8]);
        let mut mark = |k: u64| {
            let first = windows.partition_point(|(w, _)| *w < k);
            for (w, at) in &windows[first..] {
                if *w != k {
                    break;
                }
                found[*at] = true;
            }
        };
        mark(k);
        for &b in &input[8..] {
            k = (k >> 8) | (u64::from(b) << 56);
            mark(k);
        }
    }
    answer
        .windows(8)
        .zip(found)
        .find(|(w, found)| *found && !vocabulary_spells(w))
        .map(|(w, _)| String::from_utf8_lossy(w).into_owned())
}

// ---------------------------------------------------------------------------------------------
// Basic authentication
// ---------------------------------------------------------------------------------------------

/// Accepted Basic pairs (tenant, user, password) and an `Authorization` header.
#[derive(Debug, Clone, Default)]
pub struct BasicCase {
    pub pairs: Vec<(Option<String>, String, String)>,
    pub header: Option<String>,
}

const SCHEMES: [&str; 5] = ["Basic", "basic", "BASIC", "Bearer", "Basic "];

impl BasicCase {
    /// `[n pairs] ([tenant len][tenant][user len][user][password len][password])* [mode] rest`:
    /// tenant length 0 is no tenant; mode 0 takes `rest` as the header, mode k > 0 builds
    /// `<SCHEMES[k % 5]> base64(<pair k's user>:<password><rest>)`; 255 sends no header.
    pub fn decode(data: &[u8]) -> BasicCase {
        let mut bytes = Bytes(data);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let n = bytes.byte() % 5;
        let mut pairs = Vec::new();
        for _ in 0..n {
            let tenant = bytes.chunk();
            let tenant = (!tenant.is_empty()).then(|| text(tenant));
            let user = text(bytes.chunk());
            let password = text(bytes.chunk());
            pairs.push((tenant, user, password));
        }
        let mode = bytes.byte();
        let rest = bytes.rest();
        let header = match mode {
            255 => None,
            0 => Some(text(rest)),
            k => {
                let (user, password) = pairs
                    .get(k as usize % pairs.len().max(1))
                    .map(|(_, u, p)| (u.clone(), p.clone()))
                    .unwrap_or_default();
                let mut plain = format!("{user}:{password}").into_bytes();
                plain.extend_from_slice(rest);
                let encoded = base64::engine::general_purpose::STANDARD.encode(plain);
                Some(format!("{} {encoded}", SCHEMES[k as usize % SCHEMES.len()]))
            }
        };
        BasicCase { pairs, header }
    }
}

/// `verify::basic`: never panics; accepts only a header whose decoded `user:password` is an
/// accepted pair (and always the canonical header of a pair whose user has no `:`); the proof
/// speaks for exactly the tenants of the matching pairs.
pub fn check_basic(case: &BasicCase) {
    let credentials: Vec<BasicPair> = case
        .pairs
        .iter()
        .filter_map(|(tenant, user, password)| {
            Some(BasicPair {
                tenant: tenant.clone(),
                user: Secret::new(user)?,
                password: Secret::new(password)?,
            })
        })
        .collect();
    let result = verify::basic(&credentials, case.header.as_deref());
    let presented = case.header.as_deref().and_then(basic_credentials);
    let matching: Vec<&BasicPair> = credentials
        .iter()
        .filter(|p| {
            presented.as_deref()
                == Some(
                    [p.user.expose(), b":", p.password.expose()]
                        .concat()
                        .as_slice(),
                )
        })
        .collect();
    match &result {
        Ok(proof) => {
            assert!(
                !matching.is_empty(),
                "Basic accepted a header no pair spells: {case:?}"
            );
            let mut expected: Vec<&str> = matching
                .iter()
                .filter_map(|p| p.tenant.as_deref())
                .collect();
            expected.dedup();
            if credentials.iter().any(|p| p.tenant.is_some()) {
                let Scope::Tenants(tenants) = proof.scope() else {
                    panic!("a proof from tenant-bound pairs speaks for any tenant: {case:?}");
                };
                let mut got: Vec<&str> = tenants.iter().map(String::as_str).collect();
                got.sort();
                expected.sort();
                expected.dedup();
                assert_eq!(got, expected, "the proof's tenants: {case:?}");
            } else {
                assert_eq!(proof.scope(), &Scope::AnyTenant);
            }
        }
        Err(_) => {
            let canonical = matching.iter().any(|p| {
                !p.user.expose().contains(&b':')
                    && case.header.as_deref().is_some_and(|h| {
                        let (scheme, rest) = h.split_once(' ').unwrap_or(("", ""));
                        scheme.eq_ignore_ascii_case("basic") && !rest.starts_with(' ')
                    })
            });
            assert!(
                !canonical,
                "Basic refused an accepted pair's header: {case:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// URL tokens
// ---------------------------------------------------------------------------------------------

/// Configured tokens (plain list, or a tenant map `t0`, `t1`, …) and a request path.
#[derive(Debug, Clone, Default)]
pub struct PathCase {
    pub tokens: Vec<String>,
    pub per_tenant: bool,
    pub path: String,
}

impl PathCase {
    /// `[flags] [n tokens] ([len][token])* path…`: flags bit 0 makes a tenant map; in the path,
    /// byte 0x01 followed by k stands for token k.
    pub fn decode(data: &[u8]) -> PathCase {
        let mut bytes = Bytes(data);
        let flags = bytes.byte();
        let n = bytes.byte() % 6;
        let tokens: Vec<String> = (0..n)
            .map(|_| String::from_utf8_lossy(bytes.chunk()).replace(',', ""))
            .collect();
        let mut path = Vec::new();
        let rest = bytes.rest();
        let mut i = 0;
        while i < rest.len() {
            if rest[i] == 1 && i + 1 < rest.len() && !tokens.is_empty() {
                path.extend_from_slice(tokens[rest[i + 1] as usize % tokens.len()].as_bytes());
                i += 2;
            } else {
                path.push(rest[i]);
                i += 1;
            }
        }
        PathCase {
            tokens,
            per_tenant: flags & 1 != 0,
            path: String::from_utf8_lossy(&path).into_owned(),
        }
    }

    /// The configured value: `a,b` or `{"t0":"a","t1":"b"}`.
    pub fn config(&self) -> String {
        if self.per_tenant {
            let map: Map<String, Value> = self
                .tokens
                .iter()
                .enumerate()
                .map(|(i, t)| (format!("t{i}"), Value::String(t.clone())))
                .collect();
            Value::Object(map).to_string()
        } else {
            self.tokens.join(",")
        }
    }
}

/// `provider::path_token`: a match only when a whole segment equals a token; the position is
/// the first such segment's; the proof speaks for the tenants holding that token; no segment at
/// all is `Missing`, segments without a token `Mismatch`.
pub fn check_path_token(case: &PathCase) {
    let Ok(Some(tokens)) = SecretList::from_config(&case.config()) else {
        return; // nothing (valid) configured: a receiver would not start
    };
    // The accepted values, as configured: trimmed, blanks dropped.
    let accepted: Vec<(Option<String>, &str)> = case
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (case.per_tenant.then(|| format!("t{i}")), t.trim()))
        .filter(|(_, t)| !t.is_empty())
        .collect();
    let method = Method::POST;
    let headers = HeaderMap::new();
    let inbound = Inbound {
        method: &method,
        headers: &headers,
        path: &case.path,
        query: None,
        body: b"",
        now: OffsetDateTime::UNIX_EPOCH,
    };
    let segments: Vec<&str> = case.path.split('/').filter(|s| !s.is_empty()).collect();
    let first = segments
        .iter()
        .position(|s| accepted.iter().any(|(_, t)| t == s));
    match (path_token(&tokens, &inbound), first) {
        (Ok((proof, at)), Some(expected)) => {
            assert_eq!(at, expected, "position of the token segment: {case:?}");
            let mut tenants: Vec<String> = accepted
                .iter()
                .filter(|(_, t)| *t == segments[at])
                .filter_map(|(tenant, _)| tenant.clone())
                .collect();
            tenants.dedup();
            if case.per_tenant {
                assert_eq!(proof.scope(), &Scope::Tenants(tenants), "{case:?}");
            } else {
                assert_eq!(proof.scope(), &Scope::AnyTenant, "{case:?}");
            }
        }
        (Ok(found), None) => panic!("a path without a token segment matched: {case:?} {found:?}"),
        (Err(why), Some(_)) => panic!("a token segment was not found ({why}): {case:?}"),
        (Err(why), None) => {
            let expected = if segments.is_empty() {
                verify::AuthFailure::Missing
            } else {
                verify::AuthFailure::Mismatch
            };
            assert_eq!(why, expected, "{case:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Form decoding
// ---------------------------------------------------------------------------------------------

/// `application/x-www-form-urlencoded`, decoded by hand: `&`-separated pairs (empty ones
/// skipped), split at the first `=`, `+` as space, `%XX` as a byte (a `%` without two hex digits
/// is itself), then UTF-8 with replacement characters.
pub fn decode_form(bytes: &[u8]) -> Vec<(String, Vec<String>)> {
    fn unescape(s: &[u8]) -> String {
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            match s[i] {
                b'+' => {
                    out.push(b' ');
                    i += 1;
                }
                b'%' if s.get(i + 1).and_then(|&b| hex(b)).is_some()
                    && s.get(i + 2).and_then(|&b| hex(b)).is_some() =>
                {
                    let hi = hex(s[i + 1]).unwrap();
                    let lo = hex(s[i + 2]).unwrap();
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    let mut fields: Vec<(String, Vec<String>)> = Vec::new();
    for piece in bytes.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match piece.iter().position(|&b| b == b'=') {
            Some(at) => (&piece[..at], &piece[at + 1..]),
            None => (piece, &[][..]),
        };
        let (name, value) = (unescape(name), unescape(value));
        match fields.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => fields.push((name, vec![value])),
        }
    }
    fields
}

/// `trifft::form_to_json`: never panics; a JSON object whose every value is a string, or an
/// array of two or more strings for a repeated name, equal to the hand decoding.
pub fn check_form(bytes: &[u8]) {
    let json = trifft::form_to_json(bytes);
    let Value::Object(map) = &json else {
        panic!("form_to_json gave a non-object: {json}");
    };
    for (name, value) in map {
        match value {
            Value::String(_) => {}
            Value::Array(items) if items.len() >= 2 && items.iter().all(Value::is_string) => {}
            other => panic!("form field {name:?} decoded to {other}"),
        }
    }
    let expected = decode_form(bytes);
    let got: Vec<(String, Vec<String>)> = map
        .iter()
        .map(|(name, value)| {
            let values = match value {
                Value::Array(items) => items
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect(),
                one => vec![one.as_str().unwrap().to_owned()],
            };
            (name.clone(), values)
        })
        .collect();
    let mut sorted_expected = expected.clone();
    let mut sorted_got = got.clone();
    sorted_expected.sort();
    sorted_got.sort();
    assert_eq!(
        sorted_got,
        sorted_expected,
        "form {:?}",
        String::from_utf8_lossy(bytes)
    );
}

// ---------------------------------------------------------------------------------------------
// Envelope encoding
// ---------------------------------------------------------------------------------------------

/// Characters SQS refuses or that sit at the edges of its ranges, for invalid UTF-8 bytes in
/// fuzz input to stand for.
pub const AWKWARD: [char; 12] = [
    '\u{FFFE}',
    '\u{FFFF}',
    '\u{0}',
    '\u{1}',
    '\u{1F}',
    '\u{7F}',
    '\u{D7FF}',
    '\u{E000}',
    '\u{FFFD}',
    '\u{10000}',
    '\u{10FFFF}',
    '\u{2028}',
];

/// Text from fuzz bytes: valid UTF-8 kept, each invalid byte replaced by an [`AWKWARD`] char.
pub fn awkward_text(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for &b in chunk.invalid() {
            out.push(AWKWARD[b as usize % AWKWARD.len()]);
        }
    }
    out
}

/// An envelope with every field and the payload chosen.
#[derive(Debug, Clone)]
pub struct EnvelopeCase {
    pub fields: [String; 6],
    pub optional: [Option<String>; 3],
    pub payload: Payload,
}

impl EnvelopeCase {
    /// `[kind] ([len][text])×6 ([len][text])×3 payload…`: texts through [`awkward_text`], an
    /// optional field of length 255 is absent; kind % 4: 0 JSON (the payload parsed, else a JSON
    /// string of it), 1 text, 2 bytes, 3 a JSON object `{text: text}`.
    pub fn decode(data: &[u8]) -> EnvelopeCase {
        let mut bytes = Bytes(data);
        let kind = bytes.byte();
        let fields = std::array::from_fn(|_| awkward_text(bytes.chunk()));
        let optional = std::array::from_fn(|_| {
            let n = bytes.byte();
            (n != 255).then(|| awkward_text(bytes.take(n as usize)))
        });
        let rest = bytes.rest();
        let payload = match kind % 4 {
            0 => Payload::Json(
                serde_json::from_slice::<Value>(rest)
                    .unwrap_or_else(|_| Value::String(awkward_text(rest)))
                    .into(),
            ),
            1 => Payload::Raw(awkward_text(rest)),
            2 => Payload::Bytes(rest.to_vec()),
            _ => {
                let text = awkward_text(rest);
                let mut map = Map::new();
                map.insert(text.clone(), Value::String(text));
                Payload::Json(Value::Object(map).into())
            }
        };
        EnvelopeCase {
            fields,
            optional,
            payload,
        }
    }

    pub fn envelope(&self) -> Envelope {
        let [provider, event_id, event_type, dedup_key, received_at, body_sha256] =
            self.fields.clone();
        let [occurred_at, tenant, content_type] = self.optional.clone();
        let mut envelope = Envelope {
            provider,
            event_id,
            event_type,
            dedup_key,
            received_at,
            occurred_at,
            tenant,
            content_type,
            body_sha256,
            payload: None,
            payload_raw: None,
            payload_base64: None,
            payload_ref: None,
            replay: None,
        };
        envelope.set_payload(self.payload.clone());
        envelope
    }
}

/// The envelope encoder: the SQS body is all SQS-legal, reads back as the same envelope, whose
/// `content()` is the original payload; the attributes are SQS-legal, non-empty, and the field
/// itself whenever that is already legal and not blank.
pub fn check_envelope(case: &EnvelopeCase) {
    let envelope = case.envelope();
    let body = envelope
        .to_sqs_body()
        .expect("an envelope always serializes");
    if let Some(c) = body.chars().find(|&c| !(sqs_legal(c) && sqs_allows(c))) {
        panic!("SQS body holds {c:?}: {body:?}");
    }
    let mut back: Envelope = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("SQS body does not read back ({e}): {body:?}"));
    // A JSON payload holding characters SQS refuses comes back with escapes for them: the same
    // value, not the same bytes (the receivers send such a payload through the payload bucket,
    // objects::message_for). Any other payload comes back byte for byte.
    if let (Some(sent), Some(got)) = (&envelope.payload, &back.payload) {
        if !sent.get().chars().all(sqs_allows) {
            let value = |j: &shared::json::RawJson| j.parse::<Value>().expect("JSON");
            assert_eq!(value(got), value(sent), "the payload's value from {body:?}");
            back.payload = envelope.payload.clone();
        }
    }
    assert_eq!(back, envelope, "the envelope read back from {body:?}");
    assert_eq!(
        back.content().as_ref(),
        Some(&case.payload),
        "content() after the round trip"
    );
    let message = Message::from_envelope(&envelope).expect("serializes");
    assert_eq!(message.body, body);
    for ((name, value), field) in message
        .attributes()
        .into_iter()
        .zip([&envelope.provider, &envelope.event_type])
    {
        assert!(!value.is_empty(), "attribute {name} is empty");
        if let Some(c) = value.chars().find(|&c| !(sqs_legal(c) && sqs_allows(c))) {
            panic!("attribute {name} holds {c:?}");
        }
        if field.chars().all(sqs_legal) && !field.trim().is_empty() {
            assert_eq!(value, field, "a legal attribute is kept as it is");
        }
    }
}

/// `sqs_allows` agrees with the documented set on `c`.
pub fn check_sqs_allows(c: char) {
    assert_eq!(sqs_allows(c), sqs_legal(c), "{c:?} (U+{:04X})", c as u32);
}

/// Runs fuzz target `target`'s check on `data`, decoded as that target decodes it (replaying
/// saved artifacts).
pub fn check_target(target: &str, data: &[u8]) {
    match target {
        "basic_auth" => check_basic(&BasicCase::decode(data)),
        "path_token" => check_path_token(&PathCase::decode(data)),
        "form_decode" => check_form(data),
        "envelope" => check_envelope(&EnvelopeCase::decode(data)),
        provider if PROVIDERS.contains(&provider) => {
            check_provider(provider, &Case::decode(data));
        }
        other => panic!("no fuzz target {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers for tests
// ---------------------------------------------------------------------------------------------

/// A proof's tenants for display in assertion messages.
pub fn tenants_of(proof: &Verified) -> Vec<String> {
    match proof.scope() {
        Scope::AnyTenant => vec!["*".into()],
        Scope::Tenants(t) => t.clone(),
    }
}

/// Collects outcomes by status, to assert that a run reached more than 401s.
#[derive(Debug, Default)]
pub struct Tally(RefCell<std::collections::BTreeMap<u16, usize>>);

impl Tally {
    pub fn add(&self, outcome: &Outcome) {
        *self.0.borrow_mut().entry(outcome.status).or_default() += 1;
    }

    pub fn statuses(&self) -> std::collections::BTreeMap<u16, usize> {
        self.0.borrow().clone()
    }
}

//! The normalized message every receiver sends to SQS and the processor reads (README "Data").

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::json::RawJson;

/// SQS message body. Field names are a contract with the processor and other tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub provider: String,
    /// The provider's event id, or the derived key where the provider has none.
    pub event_id: String,
    pub event_type: String,
    /// `<provider>#<event key>`: the claim's partition key.
    pub dedup_key: String,
    /// When this receiver accepted the request (RFC 3339).
    pub received_at: String,
    /// The provider's own timestamp, verbatim, when it sends one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
    /// Site / network / store / shop id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// SHA-256 of the request body exactly as received.
    pub body_sha256: String,
    /// The JSON payload, for JSON bodies: the sender's text of the value, byte for byte
    /// ([`RawJson`]); read it into a typed model with [`RawJson::parse`]. A body of `null` is
    /// present and `null`, not absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub payload: Option<RawJson>,
    /// The body as text, for bodies that are not JSON (XML, plain text, form data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_raw: Option<String>,
    /// The body byte for byte, base64 (standard alphabet, padded), for bodies that are not UTF-8
    /// text (a TRIFFT XML body in Latin-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// Claim check: the content was too large for the queue and waits in the payload bucket.
    /// The message then carries this reference and the metadata, no content; the processor
    /// reads the object back before any handler sees the envelope ([`crate::objects`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_ref: Option<PayloadRef>,
    /// Set only on a message `webhook-ops replay` queued from the archive: the processor then
    /// runs the event again, under a claim of its own ([`Replay::processed_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<Replay>,
}

/// Where a claim-checked envelope waits: an object in the payload bucket holding the whole
/// envelope as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadRef {
    /// The object's key: `<provider>/<sha256(dedup key)>/<sha256(object)>.json`.
    pub key: String,
    /// The object's size in bytes.
    pub bytes: u64,
    /// SHA-256 of the object (lowercase hex): the processor refuses an object that differs.
    pub sha256: String,
}

/// What marks a replayed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// One id per `webhook-ops replay` run.
    pub id: String,
    /// When the operator asked for it (RFC 3339).
    pub requested_at: String,
    /// The archive object the event came from.
    pub archive_key: String,
}

impl Replay {
    /// The processor's claim for a replayed event: its own, so that the event runs again even
    /// though `processed#<dedup key>` says it ran, and yet runs once per replay if SQS delivers
    /// the replay twice.
    pub fn processed_key(&self, dedup_key: &str) -> String {
        format!(
            "{}#replay#{}",
            crate::store::processed_key(dedup_key),
            self.id
        )
    }
}

/// What travels as the event's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// JSON as the sender wrote it.
    Json(RawJson),
    Raw(String),
    /// Bytes that are not UTF-8 text: carried as base64.
    Bytes(Vec<u8>),
}

impl Payload {
    /// How many bytes the content is (base64 not counted: the bytes themselves).
    pub fn len(&self) -> usize {
        match self {
            Payload::Json(json) => json.len(),
            Payload::Raw(text) => text.len(),
            Payload::Bytes(bytes) => bytes.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Text when the bytes are UTF-8 and JSON carries them at no more than 4/3 of their size
    /// (plus 1 KiB, so that short text stays text); else the bytes themselves, as base64 (4/3):
    /// nothing is refused for its encoding, and no text grows sixfold on its way (a control
    /// character is six bytes in a JSON string).
    pub fn text_or_bytes(body: &[u8]) -> Payload {
        match std::str::from_utf8(body) {
            Ok(text) if json_string_len(text) <= text.len() / 3 * 4 + 1024 => {
                Payload::Raw(text.to_owned())
            }
            _ => Payload::Bytes(body.to_vec()),
        }
    }
}

impl Envelope {
    /// The processor's claim key for this message: the event's `processed#<dedup key>`, or a
    /// replay's own ([`Replay::processed_key`]).
    pub fn processed_key(&self) -> String {
        match &self.replay {
            Some(replay) => replay.processed_key(&self.dedup_key),
            None => crate::store::processed_key(&self.dedup_key),
        }
    }

    /// The same envelope without its content (no payload of any kind, no reference), made
    /// without copying the content.
    pub fn metadata(&self) -> Envelope {
        Envelope {
            provider: self.provider.clone(),
            event_id: self.event_id.clone(),
            event_type: self.event_type.clone(),
            dedup_key: self.dedup_key.clone(),
            received_at: self.received_at.clone(),
            occurred_at: self.occurred_at.clone(),
            tenant: self.tenant.clone(),
            content_type: self.content_type.clone(),
            body_sha256: self.body_sha256.clone(),
            payload: None,
            payload_raw: None,
            payload_base64: None,
            payload_ref: None,
            replay: self.replay.clone(),
        }
    }

    pub fn set_payload(&mut self, payload: Payload) {
        (self.payload, self.payload_raw, self.payload_base64) = match payload {
            Payload::Json(v) => (Some(v), None, None),
            Payload::Raw(s) => (None, Some(s), None),
            Payload::Bytes(b) => (None, None, Some(BASE64.encode(b))),
        };
    }

    /// The content as it was carried: JSON, text or bytes. `None` when the envelope has none or
    /// its base64 is damaged.
    pub fn content(&self) -> Option<Payload> {
        match (&self.payload, &self.payload_raw, &self.payload_base64) {
            (Some(v), _, _) => Some(Payload::Json(v.clone())),
            (None, Some(s), _) => Some(Payload::Raw(s.clone())),
            (None, None, Some(b)) => BASE64.decode(b).ok().map(Payload::Bytes),
            (None, None, None) => None,
        }
    }

    /// SQS message attributes: routing without parsing the body. Values are made SQS-legal
    /// ([`sqs_legal_attribute`]); the body keeps the exact type.
    pub fn attributes(&self) -> [(&'static str, String); 2] {
        [
            ("provider", sqs_legal_attribute(&self.provider)),
            ("event_type", sqs_legal_attribute(&self.event_type)),
        ]
    }

    /// The message body: the envelope as JSON in which every character SQS refuses is escaped.
    pub fn to_sqs_body(&self) -> Result<String, serde_json::Error> {
        let json = self.to_json()?;
        // serde_json writes valid UTF-8.
        Ok(escape_for_sqs(
            String::from_utf8(json).expect("serde_json writes UTF-8"),
        ))
    }

    /// The envelope as JSON, written into a buffer sized for it up front: growing one by
    /// doubling holds the old and the new buffer at once, up to three times a large payload.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let content = self.payload.as_ref().map_or(0, RawJson::len)
            + self
                .payload_raw
                .as_ref()
                .map_or(0, |t| t.len() + t.len() / 8)
            + self.payload_base64.as_ref().map_or(0, String::len);
        let mut out = Vec::with_capacity(content + 2048);
        serde_json::to_writer(&mut out, self)?;
        Ok(out)
    }
}

/// The bytes `text` takes inside a JSON string as serde_json writes it (quotes excluded).
fn json_string_len(text: &str) -> usize {
    text.bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum()
}

/// A field that is present is `Some`, even when it is `null` (serde reads a present `null` as
/// `None` for an `Option`, which would lose a JSON body of `null`; found by the envelope fuzz
/// target). An absent field is `None` through `#[serde(default)]`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<RawJson>, D::Error> {
    RawJson::deserialize(d).map(Some)
}

/// SHA-256 (lowercase hex) of the bytes a base64 text decodes to, decoded a block at a time
/// (never the whole content at once); `None` when it is not valid base64.
pub fn decoded_sha256(b64: &str) -> Option<String> {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    let mut block = Vec::with_capacity(3 * 1024);
    // Blocks of 4096 characters: whole base64 quanta, so that only the last may hold padding.
    for chunk in b64.as_bytes().chunks(4096) {
        block.clear();
        BASE64.decode_vec(chunk, &mut block).ok()?;
        hash.update(&block);
    }
    Some(hex::encode(hash.finalize()))
}

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Whether SQS accepts `c` in a message body or attribute: `#x9 | #xA | #xD | #x20–#xD7FF |
/// #xE000–#xFFFD | #x10000–#x10FFFF` (SendMessage, "MessageBody"). A Rust `char` is never a
/// surrogate, so what remains to refuse is C0 controls and U+FFFE, U+FFFF.
pub fn sqs_allows(c: char) -> bool {
    matches!(c, '\u{9}' | '\u{A}' | '\u{D}' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// JSON text with every character SQS refuses written as a `\uXXXX` escape. serde_json already
/// escapes C0 controls inside strings and JSON has none outside them; it writes U+FFFE and
/// U+FFFF raw, and those can only stand inside a string, where the escape means the same
/// character: the JSON decodes to the same value.
pub fn escape_for_sqs(json: String) -> String {
    if !holds_noncharacters(&json) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 12);
    for c in json.chars() {
        if sqs_allows(c) {
            out.push(c);
        } else {
            use std::fmt::Write;
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
    }
    out
}

/// Whether JSON text holds a character SQS refuses: in JSON text (serde_json's, or text it
/// checked) that can only be U+FFFE or U+FFFF, since control characters are escaped inside
/// strings and stand nowhere else. Two byte searches, not a decode of every character.
pub fn holds_noncharacters(json: &str) -> bool {
    json.contains('\u{FFFE}') || json.contains('\u{FFFF}')
}

/// An attribute value SQS accepts: refused characters become U+FFFD, and an empty value (SQS
/// refuses those too) becomes `unknown`. Attributes only route; the body is exact.
pub fn sqs_legal_attribute(value: &str) -> String {
    let clean: String = value
        .chars()
        .map(|c| if sqs_allows(c) { c } else { '\u{FFFD}' })
        .collect();
    if clean.trim().is_empty() {
        "unknown".to_owned()
    } else {
        clean
    }
}

/// A JSON error as category and position only: serde_json's messages can quote values from the
/// payload (`invalid type: string "alex@example.com"`), which must not reach the logs.
pub fn describe_json_error(e: &serde_json::Error) -> String {
    let category = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected shape",
        serde_json::error::Category::Eof => "unexpected end",
    };
    format!("{category} at line {}, column {}", e.line(), e.column())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn raw(text: &str) -> RawJson {
        RawJson::from_slice(text.as_bytes()).unwrap()
    }

    #[test]
    fn json_errors_are_described_without_values() {
        let e =
            serde_json::from_str::<Envelope>(r#"{"provider": 5, "event_id": "alex@example.com"}"#)
                .unwrap_err();
        assert!(e.to_string().contains('5') || e.to_string().contains("integer"));
        let described = describe_json_error(&e);
        assert_eq!(described, "unexpected shape at line 1, column 14");
        let e = serde_json::from_str::<Envelope>(r#"{"provider": "alex@example.com""#).unwrap_err();
        assert!(!describe_json_error(&e).contains("alex"));
    }

    #[test]
    fn raw_payloads_travel_as_text_and_json_ones_as_json() {
        let mut e = Envelope {
            provider: "trifft".into(),
            event_id: "k".into(),
            event_type: "t".into(),
            dedup_key: "trifft#k".into(),
            received_at: "2024-01-01T00:00:00Z".into(),
            occurred_at: None,
            tenant: None,
            content_type: Some("application/xml".into()),
            body_sha256: "00".into(),
            payload: None,
            payload_raw: None,
            payload_base64: None,
            payload_ref: None,
            replay: None,
        };
        e.set_payload(Payload::Raw("<a>1</a>".into()));
        let json: Value = serde_json::to_value(&e).unwrap();
        assert_eq!(json["payload_raw"], "<a>1</a>");
        assert!(json.get("payload").is_none() && json.get("occurred_at").is_none());
        e.set_payload(Payload::Json(raw(r#"{"x": 1.10, "a": [ 1 ]}"#)));
        let back: Envelope = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        assert_eq!(
            back.payload.as_ref().unwrap().get(),
            r#"{"x": 1.10, "a": [ 1 ]}"#
        );
        assert_eq!(
            back.attributes(),
            [("provider", "trifft".into()), ("event_type", "t".into())]
        );
        let latin1 = b"<n>caf\xe9</n>".to_vec();
        e.set_payload(Payload::text_or_bytes(&latin1));
        let json: Value = serde_json::from_str(&e.to_sqs_body().unwrap()).unwrap();
        assert_eq!(json["payload_base64"], "PG4+Y2Fm6Twvbj4=");
        assert!(json.get("payload").is_none() && json.get("payload_raw").is_none());
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back.content(), Some(Payload::Bytes(latin1)));
    }

    #[test]
    fn text_that_json_would_inflate_travels_as_bytes() {
        let controls = "\u{1}".repeat(4096);
        assert_eq!(
            Payload::text_or_bytes(controls.as_bytes()),
            Payload::Bytes(controls.as_bytes().to_vec())
        );
        let short = "\u{1}\u{2} short";
        assert_eq!(
            Payload::text_or_bytes(short.as_bytes()),
            Payload::Raw(short.into())
        );
        let xml = "<a href=\"x\">\n</a>".repeat(500);
        assert_eq!(
            Payload::text_or_bytes(xml.as_bytes()),
            Payload::Raw(xml.clone())
        );
        assert_eq!(json_string_len("a\"\\\n\u{1}é"), 1 + 2 + 2 + 2 + 6 + 2);
        assert_eq!(
            json_string_len(&xml) + 2,
            serde_json::to_string(&xml).unwrap().len(),
            "as serde_json writes it"
        );
    }

    #[test]
    fn characters_sqs_refuses_are_escaped_in_the_body_and_replaced_in_attributes() {
        let note = "a\u{FFFE}b\u{FFFF}\u{1}\u{10FFFF}";
        let envelope = Envelope {
            provider: "trybe".into(),
            event_id: "k".into(),
            event_type: "type\u{FFFF}".into(),
            dedup_key: "trybe##id#k".into(),
            received_at: "2024-01-01T00:00:00Z".into(),
            occurred_at: None,
            tenant: None,
            content_type: None,
            body_sha256: "00".into(),
            payload: Some(
                RawJson::from_value(&serde_json::json!({ "note\u{FFFE}": note })).unwrap(),
            ),
            payload_raw: None,
            payload_base64: None,
            payload_ref: None,
            replay: None,
        };
        let body = envelope.to_sqs_body().unwrap();
        assert!(body.chars().all(sqs_allows), "{body:?}");
        assert!(
            body.contains("\\ufffe") && body.contains("\\uffff"),
            "{body}"
        );
        let back: Envelope = serde_json::from_str(&body).unwrap();
        // The same value, not the same bytes: the payload's text now holds escapes where the
        // sender wrote the characters, which is why such a payload travels by claim check
        // when there is a bucket (objects::message_for).
        assert_eq!(back.event_type, envelope.event_type);
        assert_ne!(back.payload, envelope.payload);
        assert_eq!(
            back.payload.unwrap().parse::<Value>().unwrap(),
            envelope.payload.as_ref().unwrap().parse::<Value>().unwrap()
        );
        assert_eq!(envelope.attributes()[1].1, "type\u{FFFD}");
        assert_eq!(sqs_legal_attribute("\u{1}"), "\u{FFFD}");
        assert_eq!(sqs_legal_attribute(""), "unknown");
    }
}

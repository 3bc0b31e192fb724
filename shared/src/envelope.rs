//! The normalized message every receiver sends to SQS and the processor reads (DESIGN.md).

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// The parsed JSON payload, for JSON bodies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// The body as text, for bodies that are not JSON (XML, plain text, form data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_raw: Option<String>,
}

/// What travels as the event's content.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Json(Value),
    Raw(String),
}

impl Envelope {
    pub fn set_payload(&mut self, payload: Payload) {
        match payload {
            Payload::Json(v) => (self.payload, self.payload_raw) = (Some(v), None),
            Payload::Raw(s) => (self.payload, self.payload_raw) = (None, Some(s)),
        }
    }

    /// SQS message attributes: routing without parsing the body.
    pub fn attributes(&self) -> [(&'static str, &str); 2] {
        [
            ("provider", self.provider.as_str()),
            ("event_type", self.event_type.as_str()),
        ]
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
        };
        e.set_payload(Payload::Raw("<a>1</a>".into()));
        let json: Value = serde_json::to_value(&e).unwrap();
        assert_eq!(json["payload_raw"], "<a>1</a>");
        assert!(json.get("payload").is_none() && json.get("occurred_at").is_none());
        e.set_payload(Payload::Json(serde_json::json!({"x": 1})));
        let back: Envelope = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
        assert_eq!(
            back.attributes(),
            [("provider", "trifft"), ("event_type", "t")]
        );
    }
}

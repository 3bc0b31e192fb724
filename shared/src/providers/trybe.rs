//! Trybe (spa and wellness bookings). Source: docs/providers.md "Trybe".
//!
//! - Auth: header `signature`, HMAC-SHA256 of the raw body keyed by the webhook's secret, 64 hex
//!   characters, no prefix (docs/providers.md "Trybe: Authentication", default; Trybe runs
//!   Laravel's webhook sender). A missing header is a 401. Several secrets accepted (one
//!   configuration per site, rotation).
//! - Event id `id` (stable across retries) is the dedup key; type `event`; tenant `site_id`;
//!   occurred at `timestamp`. Unknown event names are accepted (Trybe adds events).
//! - A verified JSON object without `id` is still queued, keyed by the body's SHA-256 (a retry
//!   re-sends the same bytes): an authentic event is never dropped for its shape.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::apigw::Sent;
use crate::config::{ConfigError, Env};
use crate::envelope::Payload;
use crate::provider::{
    body_field, json_object, str_field, EventKey, Inbound, InboundEvent, Inspection, Provider,
    Refusal, VerifiedRequest,
};
use crate::secret::SecretList;
use crate::verify::{self, AuthFailure, Verified};

pub const NAME: &str = "trybe";
pub const SIGNATURE_HEADER: &str = "signature";
pub const SECRET_VAR: &str = "TRYBE_SIGNING_SECRET";

#[derive(Debug)]
pub struct Trybe {
    secrets: SecretList,
}

impl Trybe {
    pub fn new(secrets: SecretList) -> Self {
        Trybe { secrets }
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Trybe::new(env.secrets(SECRET_VAR)?))
    }
}

impl Provider for Trybe {
    fn name(&self) -> &'static str {
        NAME
    }

    fn authenticate(&self, request: &Inbound<'_>) -> Result<Verified, AuthFailure> {
        let signature = request
            .header(SIGNATURE_HEADER)
            .ok_or(AuthFailure::Missing)?;
        verify::hmac_sha256_hex(&self.secrets, &[request.body], signature)
    }

    fn inspect(&self, request: &VerifiedRequest<'_, '_>) -> Result<Inspection, Refusal> {
        let body = json_object(request.body)?;
        let key = match str_field(&body, "id") {
            Some(id) => EventKey::id(id),
            None => EventKey::hash_of(request.body),
        };
        Ok(Inspection::event(InboundEvent {
            event_id: key.to_event_id(),
            key,
            event_type: str_field(&body, "event").unwrap_or("unknown").to_owned(),
            occurred_at: str_field(&body, "timestamp").map(str::to_owned),
            tenant: str_field(&body, "site_id").map(str::to_owned),
            payload: Payload::Json(Value::Object(body)),
            fingerprint: None,
        }))
    }
}

/// The signature Trybe would send for `body` (simulator, samples, tests).
pub fn sign(secret: &crate::secret::Secret, body: &[u8]) -> String {
    verify::sign_hex(secret, &[body])
}

/// The request Trybe would send with `body`, signed with the first configured secret.
pub fn simulate(body: &[u8], env: &Env, _now: OffsetDateTime) -> Result<Sent, ConfigError> {
    let secrets = env.secrets(SECRET_VAR)?;
    let tenant = body_field(body, "site_id");
    let secret = secrets.for_tenant(tenant.as_deref());
    Ok(Sent::post("/", body.to_vec())
        .header("content-type", "application/json")
        .header("user-agent", "GuzzleHttp/7")
        .header("Signature", sign(secret, body)))
}

/// Trybe's webhook envelope, typed. Unknown fields are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    pub event: String,
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub webhook_config_id: Option<String>,
    #[serde(default)]
    pub site_id: Option<String>,
    #[serde(default)]
    pub data: Value,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An object as Trybe's API returns it: its id and everything else as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerLabels {
    pub customer_id: String,
    #[serde(default)]
    pub labels: Vec<Label>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `data`, by the object type named in `event` (`object_type.action`; docs/providers.md
/// "Trybe: Events").
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// basket.*: an Order.
    Order(Object),
    /// basket_item.*: an OrderItem.
    OrderItem(Object),
    Customer(Object),
    CustomerAddress(Object),
    CustomerLabels(CustomerLabels),
    CustomerNote(Object),
    MarketingPreferenceOptIn(Object),
    Membership(Object),
    Payment(Object),
    Refund(Object),
    /// An event this model does not know yet: kept as sent.
    Other(Value),
}

impl Webhook {
    /// The object type and action of `event`.
    pub fn kind(&self) -> (&str, &str) {
        self.event
            .split_once('.')
            .unwrap_or((self.event.as_str(), ""))
    }

    pub fn data(&self) -> Result<Data, serde_json::Error> {
        let object = || serde_json::from_value::<Object>(self.data.clone());
        Ok(match self.kind().0 {
            "basket" => Data::Order(object()?),
            "basket_item" => Data::OrderItem(object()?),
            "customer" => Data::Customer(object()?),
            "customer_address" => Data::CustomerAddress(object()?),
            "customer_labels" => Data::CustomerLabels(serde_json::from_value(self.data.clone())?),
            "customer_note" => Data::CustomerNote(object()?),
            "marketing_preference_opt_in" => Data::MarketingPreferenceOptIn(object()?),
            "membership" => Data::Membership(object()?),
            "payment" => Data::Payment(object()?),
            "refund" => Data::Refund(object()?),
            _ => Data::Other(self.data.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use lambda_http::http::{HeaderMap, HeaderValue, Method};

    // docs/providers.md "Trybe: Test vectors".
    const SECRET: &str = "trybe-test-secret-0123";
    const BODY: &str = r#"{"id":"66c36d4eef7657ae2b096128","event":"customer_labels.added","timestamp":"2024-08-19T16:05:34+00:00","webhook_config_id":"66ba3d8f13e43589da030ad8","site_id":"00000000-0000-0000-0000-111111111111","data":{"customer_id":"9e4bd4d6-8f6d-42f0-bea3-e61382954057","labels":[{"id":"66a1f0c2b1e2d3f4a5b6c7d8","name":"VIP"}]}}"#;
    const SIGNATURE: &str = "c12d2dc0e15788fe71491ac766abd34500c58705b3dd2001f943365caa8ae035";

    fn inbound<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> Inbound<'a> {
        static POST: Method = Method::POST;
        Inbound {
            method: &POST,
            headers,
            path: "/",
            query: None,
            body,
            now: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn headers(sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("Signature", HeaderValue::from_str(sig).unwrap());
        h
    }

    #[test]
    fn vector_signs_and_verifies() {
        assert_eq!(
            sign(&Secret::new(SECRET).unwrap(), BODY.as_bytes()),
            SIGNATURE
        );
        let trybe = Trybe::new(SecretList::parse(&format!("other-secret-000,{SECRET}")).unwrap());
        let h = headers(SIGNATURE);
        assert!(trybe.authenticate(&inbound(&h, BODY.as_bytes())).is_ok());
        let tampered = BODY.replace("VIP", "VIQ");
        assert_eq!(
            trybe
                .authenticate(&inbound(&h, tampered.as_bytes()))
                .unwrap_err(),
            AuthFailure::Mismatch
        );
        assert_eq!(
            trybe
                .authenticate(&inbound(&HeaderMap::new(), BODY.as_bytes()))
                .unwrap_err(),
            AuthFailure::Missing
        );
    }

    #[test]
    fn inspect_takes_id_type_tenant_and_time() {
        let trybe = Trybe::new(SecretList::parse(SECRET).unwrap());
        let h = headers(SIGNATURE);
        let req = inbound(&h, BODY.as_bytes());
        let verified = VerifiedRequest::new(&req, trybe.authenticate(&req).unwrap());
        let Inspection::Events { events, ack: None } = trybe.inspect(&verified).unwrap() else {
            panic!("events expected")
        };
        let e = &events[0];
        assert_eq!(
            (&e.key, e.event_type.as_str()),
            (
                &EventKey::id("66c36d4eef7657ae2b096128"),
                "customer_labels.added"
            )
        );
        assert_eq!(
            e.tenant.as_deref(),
            Some("00000000-0000-0000-0000-111111111111")
        );
        assert_eq!(e.occurred_at.as_deref(), Some("2024-08-19T16:05:34+00:00"));
    }

    #[test]
    fn typed_model_reads_labels_and_keeps_unknown_events() {
        let webhook: Webhook = serde_json::from_str(BODY).unwrap();
        let Data::CustomerLabels(labels) = webhook.data().unwrap() else {
            panic!("labels expected")
        };
        assert_eq!(labels.customer_id, "9e4bd4d6-8f6d-42f0-bea3-e61382954057");
        assert_eq!(labels.labels[0].name.as_deref(), Some("VIP"));
        let future: Webhook = serde_json::from_str(
            r#"{"id":"1","event":"spa_room.cleaned","data":{"room":7},"new_field":true}"#,
        )
        .unwrap();
        assert_eq!(
            future.data().unwrap(),
            Data::Other(serde_json::json!({"room": 7}))
        );
        assert_eq!(future.extra["new_field"], true);
    }
}

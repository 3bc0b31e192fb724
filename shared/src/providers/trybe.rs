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

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::apigw::Sent;
use crate::config::{ConfigError, Env};
use crate::provider::{
    body_field, json_fields, json_payload, secrets_for, EventKey, Inbound, InboundEvent,
    Inspection, Provider, Refusal, VerifiedRequest,
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
        Ok(Trybe::new(env.mac_keys(SECRET_VAR, true)?))
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
        // With a map of sites, only the site the body names is tried.
        let secrets = secrets_for(&self.secrets, request.body, "site_id")?;
        verify::hmac_sha256_hex(&secrets, &[request.body], signature)
    }

    fn inspect(&self, request: &VerifiedRequest<'_, '_>) -> Result<Inspection, Refusal> {
        let body = json_fields(request.body, &["id", "event", "timestamp", "site_id"])?;
        let key = match body.str("id") {
            Some(id) => EventKey::id(id),
            None => EventKey::hash_of(request.body),
        };
        Ok(Inspection::event(InboundEvent {
            event_id: key.to_event_id(),
            key,
            event_type: body.str("event").as_deref().unwrap_or("unknown").to_owned(),
            occurred_at: body.str("timestamp").map(Cow::into_owned),
            tenant: body.str("site_id").map(Cow::into_owned),
            payload: json_payload(request.body)?,
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
    fn with_a_map_of_sites_only_the_named_sites_secret_is_tried() {
        let site = "00000000-0000-0000-0000-111111111111";
        let map =
            format!(r#"{{"site-a":"secret-a-0000","{site}":"{SECRET}","site-c":"secret-c-0000"}}"#);
        let trybe = Trybe::from_env(&Env::from_pairs([(SECRET_VAR, map.as_str())])).unwrap();
        let h = headers(SIGNATURE);
        let proof = trybe.authenticate(&inbound(&h, BODY.as_bytes())).unwrap();
        assert_eq!(proof.tenant(), Some(site));
        // The body names site-a: only site-a's secret is tried, and the signature is not its.
        let elsewhere = BODY.replace(site, "site-a");
        let signed = sign(&Secret::new(SECRET).unwrap(), elsewhere.as_bytes());
        let h = headers(&signed);
        assert_eq!(
            trybe
                .authenticate(&inbound(&h, elsewhere.as_bytes()))
                .unwrap_err(),
            AuthFailure::Mismatch
        );
        // A site the map lacks, or none, or no JSON: refused before any MAC.
        for body in [
            BODY.replace(site, "site-z"),
            BODY.replace("site_id", "not_site"),
            "not json".to_owned(),
        ] {
            let h = headers(&sign(&Secret::new(SECRET).unwrap(), body.as_bytes()));
            assert_eq!(
                trybe
                    .authenticate(&inbound(&h, body.as_bytes()))
                    .unwrap_err(),
                AuthFailure::TenantRefused,
                "{body}"
            );
        }
    }

    #[test]
    fn at_most_sixteen_secrets_are_tried_for_any_request() {
        let list = |n: usize| {
            (0..n)
                .map(|i| format!("secret-{i:04}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let from = |v: &str| Trybe::from_env(&Env::from_pairs([(SECRET_VAR, v)]));
        assert!(from(&list(16)).is_ok());
        assert!(
            matches!(from(&list(17)), Err(ConfigError::Invalid { ref name, .. }) if name == SECRET_VAR)
        );
        // Two hundred sites of one secret each: one MAC per request.
        let sites: Vec<String> = (0..200)
            .map(|i| format!(r#""site-{i}":"secret-{i:04}""#))
            .collect();
        assert!(from(&format!("{{{}}}", sites.join(","))).is_ok());
        let rotation: Vec<String> = (0..17).map(|i| format!(r#""s-{i:04}""#)).collect();
        assert!(from(&format!(r#"{{"site-a":[{}]}}"#, rotation.join(","))).is_err());
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

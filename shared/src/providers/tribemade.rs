//! TribeMade (online store). Source: docs/providers.md "TribeMade".
//!
//! - Auth: TribeMade signs nothing. The URL is the secret: a random token as a path segment
//!   (`/tribemade/<token>`), compared in constant time with every configured token (a store has
//!   up to 5 URLs). Every segment of the path is tried, so the stage and route prefixes do not
//!   matter; a path where no segment matches is a 401.
//! - Optional `TRIBEMADE_STORE_IDS`: another `store_id` is a 401 (tenant refused).
//! - One event, `order.created`, validated strictly: a missing or malformed required field is a
//!   400 whose message names the field and never shows a value (the body is personal data);
//!   another `event` is a 400.
//! - Dedup key `order_id` (the same order may be sent more than once), tenant `store_id`,
//!   occurred at `created_at`.
//! - Personal data (customer name, email, phone, address, pincode) is never logged: the typed
//!   [`Customer`] does not even print it in `Debug`.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};
use time::format_description::well_known::{Iso8601, Rfc3339};
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::apigw::Sent;
use crate::config::{ConfigError, Env};
use crate::json::{self, Fields, Kind};
use crate::provider::{
    body_field, json_fields, json_payload, path_token, url_tokens, EventKey, Inbound, InboundEvent,
    Inspection, Provider, Refusal, VerifiedRequest,
};
use crate::secret::SecretList;
use crate::verify::{AuthFailure, Verified};

pub const NAME: &str = "tribemade";
pub const TOKEN_VAR: &str = "TRIBEMADE_URL_TOKEN";
pub const STORE_IDS_VAR: &str = "TRIBEMADE_STORE_IDS";
/// The only event TribeMade sends (docs/providers.md "TribeMade: Event Details").
pub const ORDER_CREATED: &str = "order.created";

#[derive(Debug)]
pub struct TribeMade {
    tokens: SecretList,
    /// Empty: every store is accepted.
    store_ids: Vec<String>,
}

impl TribeMade {
    pub fn new(tokens: SecretList, store_ids: Vec<String>) -> Self {
        TribeMade { tokens, store_ids }
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(TribeMade::new(
            url_tokens(env, TOKEN_VAR)?,
            env.list(STORE_IDS_VAR),
        ))
    }
}

impl Provider for TribeMade {
    fn name(&self) -> &'static str {
        NAME
    }

    fn authenticate(&self, request: &Inbound<'_>) -> Result<Verified, AuthFailure> {
        path_token(&self.tokens, request).map(|(proof, _)| proof)
    }

    fn inspect(&self, request: &VerifiedRequest<'_, '_>) -> Result<Inspection, Refusal> {
        let order = validate(&json_fields(request.body, ORDER_FIELDS)?)?;
        if !self.store_ids.is_empty() && !self.store_ids.iter().any(|s| s == &order.store_id) {
            return Err(Refusal::Unauthorized(AuthFailure::TenantRefused));
        }
        Ok(Inspection::event(InboundEvent {
            key: EventKey::id(order.order_id.clone()),
            event_id: order.order_id,
            event_type: ORDER_CREATED.to_owned(),
            occurred_at: Some(order.created_at),
            tenant: Some(order.store_id),
            payload: json_payload(request.body)?,
            fingerprint: None,
        }))
    }
}

/// What the receiver needs from a valid order.
#[derive(Debug)]
struct Valid {
    order_id: String,
    store_id: String,
    created_at: String,
}

/// Collects what is wrong with a body, by field name only.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn field<'a>(&mut self, obj: &Fields<'a>, path: &str) -> Option<&'a RawValue> {
        let name = path.rsplit('.').next().unwrap_or(path);
        match obj.raw(name) {
            Some(v) if json::kind(v) != Kind::Null => Some(v),
            _ => {
                self.0.push(format!("{path} is missing"));
                None
            }
        }
    }

    fn string<'a>(&mut self, obj: &Fields<'a>, path: &str) -> Option<Cow<'a, str>> {
        match json::string(self.field(obj, path)?) {
            Some(s) if s.trim().is_empty() => {
                self.0.push(format!("{path} is empty"));
                None
            }
            Some(s) => Some(s),
            None => {
                self.0.push(format!("{path} must be a string"));
                None
            }
        }
    }

    /// Phone numbers and pincodes: text in the documentation's example, but a number is the
    /// same information and an order must not be lost over it (our default).
    fn digits(&mut self, obj: &Fields<'_>, path: &str) {
        match self.field(obj, path).map(json::kind) {
            Some(Kind::Number) | None => {}
            Some(_) => {
                self.string(obj, path);
            }
        }
    }

    fn number(&mut self, obj: &Fields<'_>, path: &str) {
        if let Some(v) = self.field(obj, path) {
            if json::kind(v) != Kind::Number {
                self.0.push(format!("{path} must be a number"));
            }
        }
    }

    fn object<'a>(&mut self, obj: &Fields<'a>, path: &str, names: &[&str]) -> Option<Fields<'a>> {
        let v = self.field(obj, path)?;
        match json::kind(v) {
            Kind::Object => json::fields(v.get().as_bytes(), names).ok(),
            _ => {
                self.0.push(format!("{path} must be an object"));
                None
            }
        }
    }

    fn check(&mut self, ok: bool, message: &str) {
        if !ok {
            self.0.push(message.to_owned());
        }
    }
}

/// The members [`validate`] reads; every other member is skipped unread.
const ORDER_FIELDS: &[&str] = &[
    "event",
    "order_id",
    "store_id",
    "product_id",
    "status",
    "created_at",
    "customer",
    "order_details",
];

/// The required fields of `order.created` (docs/providers.md "TribeMade: Payload Structure").
fn validate(body: &Fields<'_>) -> Result<Valid, Refusal> {
    let mut p = Problems::default();
    // The event first: anything but order.created is refused on that ground alone.
    match p.string(body, "event").as_deref() {
        Some(ORDER_CREATED) => {}
        Some(_) => return Err(Refusal::BadRequest(format!("event is not {ORDER_CREATED}"))),
        None => return Err(Refusal::BadRequest(p.0.join("; "))),
    }
    let order_id = p.string(body, "order_id");
    if let Some(id) = &order_id {
        p.check(is_uuid(id), "order_id is not a UUID");
    }
    let store_id = p.string(body, "store_id");
    p.string(body, "product_id");
    p.string(body, "status");
    let created_at = p.string(body, "created_at");
    if let Some(at) = &created_at {
        p.check(
            is_iso8601(at),
            "created_at is not an ISO 8601 date and time",
        );
    }
    let customer_fields = ["name", "email", "number", "pincode", "full_address"];
    if let Some(customer) = p.object(body, "customer", &customer_fields) {
        p.string(&customer, "customer.name");
        p.string(&customer, "customer.email");
        p.digits(&customer, "customer.number");
        p.digits(&customer, "customer.pincode");
        p.string(&customer, "customer.full_address");
    }
    if let Some(details) = p.object(body, "order_details", &["quantity", "amount"]) {
        p.number(&details, "order_details.quantity");
        p.number(&details, "order_details.amount");
    }
    match (order_id, store_id, created_at) {
        (Some(order_id), Some(store_id), Some(created_at)) if p.0.is_empty() => Ok(Valid {
            order_id: order_id.into_owned(),
            store_id: store_id.into_owned(),
            created_at: created_at.into_owned(),
        }),
        _ => Err(Refusal::BadRequest(p.0.join("; "))),
    }
}

/// A hyphenated UUID (`770e8400-e29b-41d4-a716-446655440789`), any version.
fn is_uuid(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

/// ISO 8601 date and time, the zone optional (TribeMade sends UTC without one:
/// `2024-11-16T10:30:45.123456`). A space instead of `T` is accepted, as RFC 3339 allows.
fn is_iso8601(s: &str) -> bool {
    let local = format_description!(
        version = 2,
        "[year]-[month]-[day][first [T][ ]][hour]:[minute]:[second][optional [[first [.][,]][subsecond]]]"
    );
    OffsetDateTime::parse(s, &Rfc3339).is_ok()
        || OffsetDateTime::parse(s, &Iso8601::DEFAULT).is_ok()
        || PrimitiveDateTime::parse(s, &local).is_ok()
}

/// The request TribeMade would send with `body`: a POST to the URL with the store's token (the
/// first configured one, or the body's store's in a tenant map) as its last path segment.
pub fn simulate(body: &[u8], env: &Env, _now: OffsetDateTime) -> Result<Sent, ConfigError> {
    let tokens = env.secrets(TOKEN_VAR)?;
    let token = tokens.for_tenant(body_field(body, "store_id").as_deref());
    let path = format!("/{}", String::from_utf8_lossy(token.expose()));
    Ok(Sent::post(&path, body.to_vec()).header("content-type", "application/json"))
}

/// TribeMade's `order.created` payload, typed. Unknown fields are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub event: String,
    pub order_id: String,
    pub store_id: String,
    pub product_id: String,
    /// `started` for new orders.
    pub status: String,
    /// UTC, often without a zone.
    pub created_at: String,
    pub customer: Customer,
    pub order_details: OrderDetails,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The buyer: personal data, never logged. `Debug` prints no value.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub name: String,
    pub email: String,
    #[serde(deserialize_with = "text_or_number")]
    pub number: String,
    pub full_address: String,
    #[serde(deserialize_with = "text_or_number")]
    pub pincode: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl fmt::Debug for Customer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Customer { <personal data> }")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderDetails {
    pub quantity: Number,
    /// Kept as sent (`2048.00` arrives as `2048.0`): no float arithmetic on money here.
    pub amount: Number,
    #[serde(default)]
    pub variation: Option<String>,
    #[serde(default)]
    pub size: Option<String>,
    #[serde(default)]
    pub color: Option<String>,
    /// Free text typed by the buyer: may hold personal data, never logged.
    #[serde(default)]
    pub special_instructions: Option<String>,
    #[serde(default)]
    pub custom_questions: Vec<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn text_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(serde::de::Error::custom("expected a string or a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Payload;
    use lambda_http::http::{HeaderMap, Method};
    use serde_json::json;

    // docs/providers.md "TribeMade: Test vectors": the documentation's example payload.
    const BODY: &str = r#"{"event":"order.created","order_id":"770e8400-e29b-41d4-a716-446655440789","store_id":"550e8400-e29b-41d4-a716-446655440000","product_id":"660e8400-e29b-41d4-a716-446655440123","customer":{"name":"Rahul Sharma","email":"rahul@example.com","number":"9876543210","full_address":"123, MG Road, Apartment 4B, Mumbai, Maharashtra, India","pincode":"400001"},"order_details":{"quantity":2,"amount":2048.0,"variation":"Slim Fit","size":"L","color":"Navy Blue","special_instructions":"Please gift wrap","custom_questions":[]},"status":"started","created_at":"2024-11-16T10:30:45.123456"}"#;
    const TOKEN: &str = "tribemade-test-token-0123456789";
    const STORE: &str = "550e8400-e29b-41d4-a716-446655440000";

    fn inbound<'a>(headers: &'a HeaderMap, path: &'a str, body: &'a [u8]) -> Inbound<'a> {
        static POST: Method = Method::POST;
        Inbound {
            method: &POST,
            headers,
            path,
            query: None,
            body,
            now: OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn provider(store_ids: &[&str]) -> TribeMade {
        TribeMade::new(
            SecretList::parse(&format!("other-url-token-0001,{TOKEN}")).unwrap(),
            store_ids.iter().map(|s| s.to_string()).collect(),
        )
    }

    fn inspect(p: &TribeMade, body: &str) -> Result<Inspection, Refusal> {
        let h = HeaderMap::new();
        let path = format!("/tribemade/{TOKEN}");
        let req = inbound(&h, &path, body.as_bytes());
        let verified = VerifiedRequest::new(&req, p.authenticate(&req).unwrap());
        p.inspect(&verified)
    }

    fn refusal(body: &Value) -> String {
        match inspect(&provider(&[]), &body.to_string()) {
            Err(Refusal::BadRequest(why)) => why,
            other => panic!("400 expected, got {other:?}"),
        }
    }

    fn body() -> Value {
        serde_json::from_str(BODY).unwrap()
    }

    #[test]
    fn token_must_be_one_whole_path_segment() {
        let p = provider(&[]);
        let h = HeaderMap::new();
        let ok = |path: &str| p.authenticate(&inbound(&h, path, BODY.as_bytes()));
        assert!(ok(&format!("/tribemade/{TOKEN}")).is_ok());
        assert!(ok(&format!("/prod/{TOKEN}/tribemade")).is_ok());
        assert!(ok("/tribemade/other-url-token-0001").is_ok());
        for bad in [
            "/tribemade/".to_owned(),
            "/tribemade/wrong-token".to_owned(),
            format!("/tribemade/{TOKEN}x"),
            format!("/tribemade/{}", &TOKEN[..TOKEN.len() - 1]),
            format!("/tribemade/x{TOKEN}"),
            format!("/tribemade{TOKEN}"),
        ] {
            assert_eq!(ok(&bad).unwrap_err(), AuthFailure::Mismatch, "{bad}");
        }
        assert_eq!(ok("/").unwrap_err(), AuthFailure::Missing);
        assert_eq!(ok("").unwrap_err(), AuthFailure::Missing);
    }

    #[test]
    fn vector_order_gives_key_tenant_and_time() {
        let Inspection::Events { events, ack: None } = inspect(&provider(&[]), BODY).unwrap()
        else {
            panic!("one event expected")
        };
        let e = &events[0];
        assert_eq!(e.key, EventKey::id("770e8400-e29b-41d4-a716-446655440789"));
        assert_eq!(e.event_id, "770e8400-e29b-41d4-a716-446655440789");
        assert_eq!(e.event_type, "order.created");
        assert_eq!(e.tenant.as_deref(), Some(STORE));
        assert_eq!(e.occurred_at.as_deref(), Some("2024-11-16T10:30:45.123456"));
        assert_eq!(e.payload, Payload::Json(body().into()));
    }

    #[test]
    fn store_ids_restrict_the_tenants() {
        assert!(inspect(&provider(&[STORE]), BODY).is_ok());
        assert!(inspect(&provider(&["another-store", STORE]), BODY).is_ok());
        assert_eq!(
            inspect(&provider(&["another-store"]), BODY).unwrap_err(),
            Refusal::Unauthorized(AuthFailure::TenantRefused)
        );
        let env = Env::from_pairs([(TOKEN_VAR, TOKEN), (STORE_IDS_VAR, " a , ,b ")]);
        assert_eq!(TribeMade::from_env(&env).unwrap().store_ids, ["a", "b"]);
        assert_eq!(
            TribeMade::from_env(&Env::default()).unwrap_err(),
            ConfigError::Missing(TOKEN_VAR.into())
        );
    }

    #[test]
    fn each_missing_required_field_is_named_and_no_value_is_echoed() {
        let fields = [
            "order_id",
            "store_id",
            "product_id",
            "status",
            "created_at",
            "customer",
            "order_details",
            "customer.name",
            "customer.email",
            "customer.number",
            "customer.pincode",
            "customer.full_address",
            "order_details.quantity",
            "order_details.amount",
        ];
        for field in fields {
            let mut b = body();
            match field.split_once('.') {
                Some((outer, inner)) => b[outer].as_object_mut().unwrap().remove(inner),
                None => b.as_object_mut().unwrap().remove(field),
            };
            let why = refusal(&b);
            assert_eq!(why, format!("{field} is missing"));
            // null counts as missing
            let mut b = body();
            match field.split_once('.') {
                Some((outer, inner)) => b[outer][inner] = Value::Null,
                None => b[field] = Value::Null,
            };
            assert_eq!(refusal(&b), format!("{field} is missing"));
        }
        let mut b = body();
        b.as_object_mut().unwrap().remove("event");
        assert_eq!(refusal(&b), "event is missing");
    }

    #[test]
    fn several_problems_are_listed_together() {
        let mut b = body();
        b["customer"].as_object_mut().unwrap().remove("email");
        b["order_details"]["amount"] = json!("2048.00");
        b["order_id"] = json!("ORD-12345");
        let why = refusal(&b);
        assert_eq!(
            why,
            "order_id is not a UUID; customer.email is missing; order_details.amount must be a number"
        );
        assert!(!why.contains("ORD-12345") && !why.contains("2048"), "{why}");
    }

    #[test]
    fn malformed_values_are_refused_without_echo() {
        let cases = [
            (
                "order_id",
                json!("770e8400e29b41d4a716446655440789"),
                "order_id is not a UUID",
            ),
            ("order_id", json!(42), "order_id must be a string"),
            ("store_id", json!(""), "store_id is empty"),
            (
                "created_at",
                json!("16/11/2024 10:30"),
                "created_at is not an ISO 8601",
            ),
            (
                "created_at",
                json!("yesterday"),
                "created_at is not an ISO 8601",
            ),
            (
                "customer",
                json!("Rahul Sharma"),
                "customer must be an object",
            ),
            (
                "order_details",
                json!([]),
                "order_details must be an object",
            ),
            (
                "event",
                json!("order.updated"),
                "event is not order.created",
            ),
            ("event", json!(1), "event must be a string"),
        ];
        for (field, value, message) in cases {
            let mut b = body();
            b[field] = value.clone();
            let why = refusal(&b);
            assert!(why.starts_with(message), "{field}: {why}");
            if let Some(text) = value.as_str().filter(|t| t.len() > 3) {
                assert!(!why.contains(text), "{why}");
            }
        }
        let mut b = body();
        b["customer"]["email"] = json!(["rahul@example.com"]);
        let why = refusal(&b);
        assert_eq!(why, "customer.email must be a string");
    }

    #[test]
    fn created_at_accepts_iso_8601_with_or_without_zone() {
        for ok in [
            "2024-11-16T10:30:45.123456",
            "2024-11-16T10:30:45",
            "2024-11-16 10:30:45.5",
            "2024-11-16T10:30:45Z",
            "2024-11-16T10:30:45.123+05:30",
            "2024-11-16T10:30:45+0000",
            "2024-11-16T10:30:45,5Z",
        ] {
            assert!(is_iso8601(ok), "{ok}");
        }
        for bad in [
            "",
            "2024-11-16",
            "2024-13-16T10:30:45",
            "10:30:45",
            "2024-11-16T10:30:45 UTC",
        ] {
            assert!(!is_iso8601(bad), "{bad}");
        }
    }

    #[test]
    fn numeric_phone_and_pincode_are_accepted() {
        let mut b = body();
        b["customer"]["number"] = json!(9876543210u64);
        b["customer"]["pincode"] = json!(400001);
        assert!(inspect(&provider(&[]), &b.to_string()).is_ok());
        let order: Order = serde_json::from_value(b).unwrap();
        assert_eq!(order.customer.number, "9876543210");
        assert_eq!(order.customer.pincode, "400001");
    }

    #[test]
    fn typed_model_keeps_unknown_fields_and_never_prints_personal_data() {
        let mut b = body();
        b["coupon"] = json!("WELCOME10");
        b["customer"]["landmark"] = json!("Near the station");
        let order: Order = serde_json::from_value(b).unwrap();
        assert_eq!(order.order_details.amount.as_f64(), Some(2048.0));
        assert_eq!(order.order_details.size.as_deref(), Some("L"));
        assert_eq!(order.extra["coupon"], "WELCOME10");
        assert_eq!(order.customer.extra["landmark"], "Near the station");
        let printed = format!("{order:?}");
        for personal in [
            "Rahul",
            "rahul@example.com",
            "9876543210",
            "MG Road",
            "400001",
            "station",
        ] {
            assert!(!printed.contains(personal), "{printed}");
        }
    }

    #[test]
    fn simulate_posts_to_the_first_token() {
        let env = Env::from_pairs([(TOKEN_VAR, "tribemade-dev-token-0001,second-token-0000001")]);
        let sent = simulate(BODY.as_bytes(), &env, OffsetDateTime::UNIX_EPOCH).unwrap();
        assert_eq!(sent.path, "/tribemade-dev-token-0001");
        assert_eq!(sent.method, Method::POST);
        assert_eq!(
            sent.headers,
            [("content-type".to_owned(), "application/json".to_owned())]
        );
        let p = TribeMade::from_env(&env).unwrap();
        let h = HeaderMap::new();
        assert!(p.authenticate(&inbound(&h, &sent.path, &sent.body)).is_ok());
    }
}

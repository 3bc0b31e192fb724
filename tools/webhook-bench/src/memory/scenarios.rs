//! The scenarios of `webhook-bench memory` and the bodies they send, made from the real samples in
//! `events/` (fresh ids) with a filler that brings them to an exact size, so that each provider
//! accepts them where it can.

use serde_json::{json, Value};

use crate::setup::root;

/// API Gateway's payload limit and the receivers' default `MAX_BODY_BYTES`.
pub const BODY_BYTES: usize = 10 * 1024 * 1024;
/// SQS's largest message (body and attributes), the queue's `MaximumMessageSize`.
pub const MESSAGE_BYTES: usize = 1024 * 1024;
/// `MAX_EVENTS_PER_REQUEST`'s default.
pub const MAX_EVENTS: usize = 200;
/// Secrets configured in the forged-signature scenarios.
pub const FORGED_SECRETS: usize = 200;
/// Records of an SQS batch (the event source mapping's BatchSize).
pub const BATCH: usize = 10;

/// How a receiver scenario's body is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// The sample plus `"filler": [0,0,0,…]`: many small values.
    JsonSmall,
    /// The sample plus one long string of plain ASCII.
    JsonLongString,
    /// The sample plus one long string of `\u0001` escapes.
    JsonEscapes,
    /// The sample plus `"filler": [[[[…]]]]`.
    JsonDeep,
    /// text/plain: control characters 0x01..0x1f except tab, LF and CR.
    TextControl,
    /// application/xml in ISO-8859-1: bytes ≥ 0xA0, invalid UTF-8.
    NonUtf8,
    /// application/x-www-form-urlencoded: the sample's fields and `filler=0&filler=0&…`.
    Form,
    /// Tilby: 200 entities, the size in one top-level field of the notification.
    ImportShared,
    /// Tilby: 200 entities, each padded.
    ImportEntities,
}

impl Body {
    pub fn name(self) -> &'static str {
        match self {
            Body::JsonSmall => "json-small",
            Body::JsonLongString => "json-long-string",
            Body::JsonEscapes => "json-escapes",
            Body::JsonDeep => "json-deep",
            Body::TextControl => "text-control",
            Body::NonUtf8 => "non-utf8",
            Body::Form => "form",
            Body::ImportShared => "import-shared",
            Body::ImportEntities => "import-entities",
        }
    }

    /// The content type the request declares, where it is not the provider's own.
    pub fn content_type(self) -> Option<&'static str> {
        match self {
            Body::TextControl => Some("text/plain"),
            Body::NonUtf8 => Some("application/xml"),
            Body::Form => Some("application/x-www-form-urlencoded"),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One request to a receiver. `forged`: signed with a secret the receiver does not have,
    /// which is configured with [`FORGED_SECRETS`] others.
    Receiver {
        provider: &'static str,
        body: Body,
        forged: bool,
    },
    /// The processor, one SQS batch of ten messages at SQS's size limit.
    Batch,
    /// The processor, one SQS batch of ten claim-checked 10 MiB events.
    ClaimChecked,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    /// `<provider>/<case>` or `processor/<case>`.
    pub name: String,
    pub function: &'static str,
    pub kind: Kind,
}

/// The providers with JSON bodies, in the report's order, and their functions.
const JSON_PROVIDERS: [(&str, &str); 6] = [
    ("trybe", "trybe-webhook"),
    ("tribe", "tribe-webhook"),
    ("tribemade", "tribemade-webhook"),
    ("tilby", "tilby-webhook"),
    ("standard", "standard-webhook"),
    ("trifft", "trifft-webhook"),
];

/// Every scenario, in the report's order.
pub fn all() -> Vec<Scenario> {
    let receiver =
        |provider: &'static str, function: &'static str, body: Body, forged: bool| Scenario {
            name: format!(
                "{provider}/{}",
                if forged {
                    "forged".to_owned()
                } else {
                    body.name().to_owned()
                }
            ),
            function,
            kind: Kind::Receiver {
                provider,
                body,
                forged,
            },
        };
    let mut all = Vec::new();
    for (provider, function) in JSON_PROVIDERS {
        for body in [Body::JsonSmall, Body::JsonLongString, Body::JsonEscapes] {
            all.push(receiver(provider, function, body, false));
        }
        match provider {
            "trybe" => all.push(receiver(provider, function, Body::JsonDeep, false)),
            "tilby" => {
                all.push(receiver(provider, function, Body::ImportShared, false));
                all.push(receiver(provider, function, Body::ImportEntities, false));
            }
            "trifft" => {
                for body in [Body::TextControl, Body::NonUtf8, Body::Form] {
                    all.push(receiver(provider, function, body, false));
                }
            }
            _ => {}
        }
    }
    for (provider, function) in [
        ("trybe", "trybe-webhook"),
        ("tribe", "tribe-webhook"),
        ("standard", "standard-webhook"),
    ] {
        all.push(receiver(provider, function, Body::JsonLongString, true));
    }
    all.push(Scenario {
        name: format!("processor/batch-{BATCH}x1mib"),
        function: "event-processor",
        kind: Kind::Batch,
    });
    all.push(Scenario {
        name: format!("processor/claim-checked-{BATCH}x10mib"),
        function: "event-processor",
        kind: Kind::ClaimChecked,
    });
    all
}

/// The scenarios `filters` select: an exact name, or a prefix ending in `/` (`trybe/`). No
/// filter selects all; a filter that selects nothing is an error.
pub fn select(filters: &[String]) -> Result<Vec<Scenario>, String> {
    let all = all();
    if filters.is_empty() {
        return Ok(all);
    }
    for f in filters {
        if !all.iter().any(|s| matches(&s.name, f)) {
            return Err(format!(
                "--scenario {f} matches no scenario; they are:\n  {}",
                all.iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join("\n  ")
            ));
        }
    }
    Ok(all
        .into_iter()
        .filter(|s| filters.iter().any(|f| matches(&s.name, f)))
        .collect())
}

fn matches(name: &str, filter: &str) -> bool {
    name == filter || (filter.ends_with('/') && name.starts_with(filter))
}

/// The variable the forged scenario fills, its value (random secrets, none of them the one the
/// request is signed with), and a note for the report. Trybe and Tribe: a map of
/// [`FORGED_SECRETS`] tenants, the tenant `body` names among them (the worst case: its secret is
/// tried). Standard Webhooks, whose requests name no tenant: the most a receiver accepts,
/// `shared::secret::MAX_MAC_KEYS`. (Before issue 21, a plain list of 200 was accepted for all.)
pub fn forged_secrets(
    provider: &str,
    body: &[u8],
) -> Result<(&'static str, String, String), String> {
    let fresh = || uuid::Uuid::new_v4().simple().to_string();
    let map = |var: &'static str, field: &str| {
        let named = shared::provider::body_field(body, field)
            .ok_or_else(|| format!("{provider}: the body names no {field}"))?;
        let mut tenants = vec![format!(r#""{named}":"forged-{}""#, fresh())];
        tenants
            .extend((1..FORGED_SECRETS).map(|i| format!(r#""tenant-{i}":"forged-{}""#, fresh())));
        Ok::<_, String>((
            var,
            format!("{{{}}}", tenants.join(",")),
            format!("a map of {FORGED_SECRETS} tenants in {var}, the body's {field} among them"),
        ))
    };
    match provider {
        "trybe" => map("TRYBE_SIGNING_SECRET", "site_id"),
        "tribe" => map("TRIBE_SIGNING_SECRET", "networkId"),
        "standard" => {
            let n = shared::secret::MAX_MAC_KEYS;
            // `whsec_<base64>`: 32 hex digits are base64 of 24 bytes.
            let list: Vec<String> = (0..n).map(|_| format!("whsec_{}", fresh())).collect();
            Ok((
                "STANDARD_WEBHOOK_SECRET",
                list.join(","),
                format!("{n} secrets in STANDARD_WEBHOOK_SECRET (the most it accepts)"),
            ))
        }
        other => Err(format!("no forged-signature scenario for {other}")),
    }
}

/// `events/<file>`.
fn read_sample(file: &str) -> Result<Vec<u8>, String> {
    let path = root().join("events").join(file);
    std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The provider's default JSON sample with fresh ids.
fn json_sample(provider: &str) -> Result<Vec<u8>, String> {
    let sample = crate::default_event(&format!("{provider}-webhook"))
        .ok_or_else(|| format!("{provider}: no default sample"))?;
    Ok(crate::fresh(&read_sample(&format!("{sample}.json"))?))
}

/// A receiver scenario's body, exactly `total` bytes.
pub fn receiver_body(provider: &str, body: Body, total: usize) -> Result<Vec<u8>, String> {
    match body {
        Body::JsonSmall => pad_object(&json_sample(provider)?, "filler", total, zeros),
        Body::JsonLongString => pad_object(&json_sample(provider)?, "filler", total, ascii_string),
        Body::JsonEscapes => pad_object(&json_sample(provider)?, "filler", total, escapes),
        Body::JsonDeep => pad_object(&json_sample(provider)?, "filler", total, deep),
        Body::TextControl => Ok(control_text(total)),
        Body::NonUtf8 => latin1_xml(total),
        Body::Form => form(total),
        Body::ImportShared => tilby_import(total, false),
        Body::ImportEntities => tilby_import(total, true),
    }
}

/// `object` (a JSON object's text) with one more field, `name`, whose value `value(n)` is the
/// `n` bytes that make the whole exactly `total` bytes.
pub fn pad_object(
    object: &[u8],
    name: &str,
    total: usize,
    value: fn(usize) -> Vec<u8>,
) -> Result<Vec<u8>, String> {
    let text = object.trim_ascii_end();
    let open = text
        .strip_suffix(b"}")
        .ok_or("the sample is not a JSON object")?;
    let mut out = open.to_vec();
    if !open.trim_ascii_end().ends_with(b"{") {
        out.push(b',');
    }
    out.extend_from_slice(format!("\"{name}\":").as_bytes());
    let n = total
        .checked_sub(out.len() + 1)
        .filter(|n| *n >= 4)
        .ok_or_else(|| format!("a sample of {} bytes leaves no room in {total}", text.len()))?;
    let filler = value(n);
    assert_eq!(filler.len(), n, "filler of the wrong size");
    out.extend_from_slice(&filler);
    out.push(b'}');
    Ok(out)
}

/// `[0,0,…,0]` of exactly `n` ≥ 3 bytes (a leading space when `n` is even).
pub fn zeros(n: usize) -> Vec<u8> {
    let pad = (n - 1) % 2;
    let count = (n - 1 - pad) / 2;
    let mut out = Vec::with_capacity(n);
    out.resize(pad, b' ');
    out.push(b'[');
    for i in 0..count {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'0');
    }
    out.push(b']');
    out
}

const TEXT: &[u8] = b"The quick brown fox jumps over the lazy dog, 0123456789. ";

/// `n` bytes of plain ASCII text (no quote, no backslash).
fn ascii(n: usize) -> Vec<u8> {
    TEXT.iter().copied().cycle().take(n).collect()
}

/// A JSON string of plain ASCII, `n` ≥ 2 bytes with its quotes.
pub fn ascii_string(n: usize) -> Vec<u8> {
    let mut out = vec![b'"'];
    out.extend(ascii(n - 2));
    out.push(b'"');
    out
}

/// A JSON string of `\u0001` escapes (six bytes each, one character once parsed), `n` bytes.
pub fn escapes(n: usize) -> Vec<u8> {
    let inner = n - 2;
    let mut out = Vec::with_capacity(n);
    out.push(b'"');
    for _ in 0..inner / 6 {
        out.extend_from_slice(br"\u0001");
    }
    out.extend(ascii(inner % 6));
    out.push(b'"');
    out
}

/// `[[[…]]]` nested as deep as `n` bytes allow (a leading space when `n` is odd).
pub fn deep(n: usize) -> Vec<u8> {
    let depth = n / 2;
    let mut out = vec![b' '; n % 2];
    out.resize(out.len() + depth, b'[');
    out.resize(out.len() + depth, b']');
    out
}

/// Control characters 0x01..0x1f, tab, LF and CR left out, cycled to `total` bytes.
pub fn control_text(total: usize) -> Vec<u8> {
    let controls: Vec<u8> = (1u8..=0x1f)
        .filter(|b| !matches!(b, b'\t' | b'\n' | b'\r'))
        .collect();
    controls.iter().copied().cycle().take(total).collect()
}

/// TRIFFT's XML sample re-encoded in ISO-8859-1 (declared so), with a `<note>` of Latin-1 bytes
/// 0xA0..=0xFF cycled: `total` bytes that are not UTF-8.
pub fn latin1_xml(total: usize) -> Result<Vec<u8>, String> {
    let sample = String::from_utf8(read_sample("trifft/points_earned.xml")?)
        .map_err(|e| e.to_string())?
        .replace("encoding=\"UTF-8\"", "encoding=\"ISO-8859-1\"");
    let (head, tail) = sample
        .rsplit_once("</webhook>")
        .ok_or("trifft/points_earned.xml: no </webhook>")?;
    let latin1 = |s: &str| -> Vec<u8> {
        s.chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
            .collect()
    };
    let mut out = latin1(head);
    out.extend_from_slice(b"  <note>");
    let end = [b"</note>\n</webhook>".as_slice(), &latin1(tail)].concat();
    let n = total
        .checked_sub(out.len() + end.len())
        .ok_or("XML sample too large")?;
    out.extend((0xA0u8..=0xFF).cycle().take(n));
    out.extend_from_slice(&end);
    Ok(out)
}

/// TRIFFT's form sample (a nonce added) and `&filler=0` repeated: a form of `total` bytes whose
/// one name repeats into an array of small strings once decoded.
pub fn form(total: usize) -> Result<Vec<u8>, String> {
    let mut out = read_sample("trifft/signup.form")?.trim_ascii().to_vec();
    out.extend_from_slice(format!("&bench_nonce={}", uuid::Uuid::new_v4().simple()).as_bytes());
    let pair = b"&filler=0";
    let room = total
        .checked_sub(out.len())
        .ok_or("form sample too large")?;
    for _ in 0..room / pair.len() {
        out.extend_from_slice(pair);
    }
    out.resize(total, b'0'); // the last value grows by what is left
    Ok(out)
}

/// Tilby's import sample with [`MAX_EVENTS`] entities (the sample's, repeated with fresh ids and
/// uuids), `total` bytes: the size in one top-level field of the notification (`per_entity`
/// false: the fan-out copies it into every event) or spread over the entities.
pub fn tilby_import(total: usize, per_entity: bool) -> Result<Vec<u8>, String> {
    let sample: Value = serde_json::from_slice(&crate::fresh(&read_sample(
        "tilby/customers.import-80.json",
    )?))
    .map_err(|e| e.to_string())?;
    let Value::Object(mut notification) = sample else {
        return Err("tilby sample is not an object".into());
    };
    let entities = notification
        .get("entities")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
        .cloned()
        .ok_or("tilby sample without entities")?;
    let mut many: Vec<Value> = (0..MAX_EVENTS)
        .map(|i| {
            let mut e = entities[i % entities.len()].clone();
            e["id"] = json!(900_000 + i);
            e["uuid"] = json!(uuid::Uuid::new_v4().to_string());
            if per_entity {
                e["filler"] = json!("");
            }
            e
        })
        .collect();
    if !per_entity {
        notification.insert("entities".into(), Value::Array(many));
        let text = serde_json::to_vec(&Value::Object(notification)).map_err(|e| e.to_string())?;
        return pad_object(&text, "filler", total, ascii_string);
    }
    notification.insert("entities".into(), Value::Array(many.clone()));
    let base = serde_json::to_vec(&notification).map_err(|e| e.to_string())?;
    let extra = total
        .checked_sub(base.len())
        .ok_or("tilby import too large")?;
    for (i, e) in many.iter_mut().enumerate() {
        let n = extra / MAX_EVENTS + usize::from(i < extra % MAX_EVENTS);
        e["filler"] = Value::String(String::from_utf8(ascii(n)).expect("ASCII"));
    }
    notification.insert("entities".into(), Value::Array(many));
    let out = serde_json::to_vec(&notification).map_err(|e| e.to_string())?;
    assert_eq!(out.len(), total);
    Ok(out)
}

/// The SQS message attributes every receiver sends (`Envelope::attributes`).
pub fn message_attributes(provider: &str, event_type: &str) -> Value {
    json!({
        "provider": {"DataType": "String", "StringValue": provider},
        "event_type": {"DataType": "String", "StringValue": event_type},
    })
}

/// Bytes SQS counts for those attributes: name, data type and value of each.
pub fn attributes_size(provider: &str, event_type: &str) -> usize {
    ("provider".len() + "String".len() + provider.len())
        + ("event_type".len() + "String".len() + event_type.len())
}

/// A message as a Trybe receiver queues it, written as JSON text (the envelope's field names are
/// the contract; its Rust type is not used): the sample `basket.submitted` with fresh ids and a
/// `filler` of zeros, so that body and attributes are exactly `total` bytes. Returns the body
/// and the event type.
pub fn batch_message(total: usize) -> Result<(String, &'static str), String> {
    let event_type = "basket.submitted";
    let payload_sample = crate::fresh(&read_sample("trybe/basket.submitted.json")?);
    let sample: Value = serde_json::from_slice(&payload_sample).map_err(|e| e.to_string())?;
    let field = |name: &str| {
        sample[name]
            .as_str()
            .map(str::to_owned)
            .ok_or(format!("sample without {name}"))
    };
    let (id, site, timestamp) = (field("id")?, field("site_id")?, field("timestamp")?);
    // shared/src/keys.rs: `<provider>#<tenant>#id#<id>` (neither holds `%` or `#`).
    let dedup_key = format!("trybe#{site}#id#{id}");
    let received_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())?;
    let placeholder = "0".repeat(64);
    let metadata = json!({
        "provider": "trybe",
        "event_id": id,
        "event_type": event_type,
        "dedup_key": dedup_key,
        "received_at": received_at,
        "occurred_at": timestamp,
        "tenant": site,
        "content_type": "application/json",
        "body_sha256": placeholder,
    })
    .to_string();
    let open = metadata.strip_suffix('}').expect("an object");
    let body_total = total - attributes_size("trybe", event_type);
    let payload_total = body_total
        .checked_sub(open.len() + ",\"payload\":".len() + 1)
        .ok_or("message too small")?;
    let payload = pad_object(&payload_sample, "filler", payload_total, zeros)?;
    let payload = String::from_utf8(payload).map_err(|e| e.to_string())?;
    let open = open.replace(
        &placeholder,
        &shared::verify::sha256_hex(payload.as_bytes()),
    );
    let body = format!("{open},\"payload\":{payload}}}");
    debug_assert_eq!(body.len(), body_total);
    Ok((body, event_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: usize = 64 * 1024;

    #[test]
    fn fillers_have_their_exact_size_and_are_valid_json() {
        for n in [4, 5, 6, 7, 8, 13, 1000, 1001] {
            for (what, f) in [
                ("zeros", zeros as fn(usize) -> Vec<u8>),
                ("ascii", ascii_string),
                ("escapes", escapes),
                ("deep", deep),
            ] {
                let v = f(n);
                assert_eq!(v.len(), n, "{what} {n}");
                let parsed: Result<Value, _> = serde_json::from_slice(&v);
                if what != "deep" || n < 200 {
                    assert!(
                        parsed.is_ok(),
                        "{what} {n}: {}",
                        String::from_utf8_lossy(&v)
                    );
                }
            }
        }
        let s: Value = serde_json::from_slice(&escapes(14)).unwrap();
        assert_eq!(s.as_str().unwrap(), "\u{1}\u{1}");
    }

    #[test]
    fn every_json_body_is_its_sample_plus_a_filler_at_the_exact_size() {
        for provider in ["trybe", "tribe", "tribemade", "tilby", "standard", "trifft"] {
            for body in [Body::JsonSmall, Body::JsonLongString, Body::JsonEscapes] {
                let bytes = receiver_body(provider, body, SMALL).unwrap();
                assert_eq!(bytes.len(), SMALL, "{provider} {body:?}");
                let v: Value = serde_json::from_slice(&bytes).unwrap();
                assert!(v["filler"].is_array() || v["filler"].is_string());
            }
        }
        let trybe: Value =
            serde_json::from_slice(&receiver_body("trybe", Body::JsonSmall, SMALL).unwrap())
                .unwrap();
        assert_eq!(trybe["event"], "basket.submitted");
        assert!(trybe["filler"].as_array().unwrap().len() > 30_000);
        let deep = receiver_body("trybe", Body::JsonDeep, SMALL).unwrap();
        assert_eq!(deep.len(), SMALL);
        assert!(deep.ends_with(b"]]]}"));
    }

    #[test]
    fn text_xml_and_form_bodies() {
        let text = receiver_body("trifft", Body::TextControl, SMALL).unwrap();
        assert_eq!(text.len(), SMALL);
        assert!(text
            .iter()
            .all(|b| (1..0x20).contains(b) && !matches!(b, 9 | 10 | 13)));
        assert!(std::str::from_utf8(&text).is_ok());

        let xml = receiver_body("trifft", Body::NonUtf8, SMALL).unwrap();
        assert_eq!(xml.len(), SMALL);
        assert!(std::str::from_utf8(&xml).is_err(), "not UTF-8");
        assert!(xml.starts_with(b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>"));
        assert!(xml.trim_ascii_end().ends_with(b"</webhook>"));
        assert_eq!(
            shared::providers::trifft::sniff_media_type(&xml),
            "application/xml"
        );

        let form = receiver_body("trifft", Body::Form, SMALL).unwrap();
        assert_eq!(form.len(), SMALL);
        assert_eq!(
            shared::providers::trifft::sniff_media_type(&form),
            "application/x-www-form-urlencoded"
        );
        let decoded = shared::providers::trifft::form_to_json(&form);
        assert_eq!(decoded["event"], "trft_member_signup");
        assert!(decoded["filler"].as_array().unwrap().len() > 7000);
    }

    #[test]
    fn tilby_imports_carry_the_maximum_of_entities() {
        for per_entity in [false, true] {
            let body = tilby_import(SMALL * 4, per_entity).unwrap();
            assert_eq!(body.len(), SMALL * 4);
            let v: Value = serde_json::from_slice(&body).unwrap();
            let entities = v["entities"].as_array().unwrap();
            assert_eq!(entities.len(), MAX_EVENTS);
            let uuids: std::collections::HashSet<&str> = entities
                .iter()
                .map(|e| e["uuid"].as_str().unwrap())
                .collect();
            assert_eq!(uuids.len(), MAX_EVENTS, "one dedup key per entity");
            assert_eq!(v["filler"].is_string(), !per_entity);
            assert_eq!(entities[7]["filler"].is_string(), per_entity);
        }
    }

    #[test]
    fn a_batch_message_is_an_envelope_at_the_queues_limit() {
        let (body, event_type) = batch_message(MESSAGE_BYTES).unwrap();
        assert_eq!(
            body.len() + attributes_size("trybe", event_type),
            MESSAGE_BYTES
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        let id = v["event_id"].as_str().unwrap();
        assert_eq!(v["payload"]["id"], id);
        assert_eq!(
            v["dedup_key"],
            format!("trybe#{}#id#{id}", v["tenant"].as_str().unwrap())
        );
        let payload = body.split_once(",\"payload\":").unwrap().1;
        let payload = payload.strip_suffix('}').unwrap();
        assert_eq!(
            v["body_sha256"],
            shared::verify::sha256_hex(payload.as_bytes())
        );
        // What the processor reads: the envelope's own type.
        let envelope: shared::envelope::Envelope = serde_json::from_str(&body).unwrap();
        assert_eq!(envelope.provider, "trybe");
        let (other, _) = batch_message(MESSAGE_BYTES).unwrap();
        let other: Value = serde_json::from_str(&other).unwrap();
        assert_ne!(other["event_id"], v["event_id"], "distinct event ids");
    }

    #[test]
    fn scenario_names_and_filters() {
        let names: Vec<String> = all().into_iter().map(|s| s.name).collect();
        assert_eq!(names.len(), 6 * 3 + 1 + 3 + 2 + 3 + 2);
        for n in [
            "trybe/json-deep",
            "trifft/non-utf8",
            "tilby/import-shared",
            "tribe/forged",
            "processor/batch-10x1mib",
            "processor/claim-checked-10x10mib",
        ] {
            assert!(names.iter().any(|m| m == n), "{n}");
        }
        let trybe = select(&["trybe/".into()]).unwrap();
        assert_eq!(trybe.len(), 5);
        assert!(trybe.iter().all(|s| s.function == "trybe-webhook"));
        assert_eq!(select(&["trybe/json-small".into()]).unwrap().len(), 1);
        assert!(select(&["trybe".into()]).is_err(), "a prefix ends in /");
        assert_eq!(select(&[]).unwrap().len(), names.len());
    }
}

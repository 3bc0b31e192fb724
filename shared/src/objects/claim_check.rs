//! The claim check: how an envelope travels as a message, inline or by reference to an object
//! in the payload bucket, decided in one place ([`message_for`]), and how the processor makes a
//! referenced envelope whole again ([`resolve`]).

use bytes::Bytes;

use super::{ObjectError, ObjectStore};
use crate::envelope::{holds_noncharacters, Envelope, PayloadRef};
use crate::queue::Message;
use crate::verify::sha256_hex;

/// The claim check's key: the provider's prefix (its function may write nothing else), the
/// SHA-256 of the dedup key (any characters, any length, become 64 hex digits), then the
/// object's own SHA-256: a later delivery with other content never overwrites an object a
/// queued message points to, and writing the same object again changes nothing.
pub fn payload_key(provider: &str, dedup_key: &str, object_sha256: &str) -> String {
    format!(
        "{provider}/{}/{object_sha256}.json",
        sha256_hex(dedup_key.as_bytes())
    )
}

/// A claim-checked envelope's object (the whole envelope as JSON) and its key.
pub struct PayloadObject {
    pub key: String,
    pub bytes: Bytes,
}

/// An envelope checked in: its object, and the envelope that travels instead (the same
/// metadata, no content, a reference).
pub struct Checked {
    pub object: PayloadObject,
    pub reference: Envelope,
}

pub fn check(envelope: &Envelope) -> Result<Checked, serde_json::Error> {
    Ok(check_json(envelope, envelope.to_json()?))
}

/// [`check`] with the envelope already serialized as `json` (any JSON text of it: the SQS
/// body, whose escapes read back as the same envelope, serves). Whatever replay mark or
/// reference the object holds is ignored by [`resolve`], which keeps the message's.
fn check_json(envelope: &Envelope, json: Vec<u8>) -> Checked {
    let sha256 = sha256_hex(&json);
    let key = payload_key(&envelope.provider, &envelope.dedup_key, &sha256);
    let mut reference = envelope.metadata();
    reference.payload_ref = Some(PayloadRef {
        key: key.clone(),
        bytes: json.len() as u64,
        sha256,
    });
    Checked {
        object: PayloadObject {
            key,
            bytes: json.into(),
        },
        reference,
    }
}

/// Why an envelope cannot travel.
#[derive(Debug, thiserror::Error)]
pub enum Unsendable {
    #[error("envelope not serializable: {}", crate::envelope::describe_json_error(.0))]
    Json(#[from] serde_json::Error),
    /// Over the queue's limit, counted as SQS counts (body and attributes): the message itself
    /// (no payload bucket), or even the claim check's reference.
    #[error("{what} of {bytes} bytes (body and attributes) exceeds the queue limit of {limit}")]
    TooLarge {
        what: &'static str,
        bytes: usize,
        limit: usize,
    },
}

/// What to do with an envelope over the queue's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Oversize {
    /// No payload bucket: refuse it (413).
    Refuse,
    /// Write it to the payload bucket and send a reference.
    ClaimCheck,
}

/// How one envelope travels: its message, and, for a claim-checked one, the object to write
/// before the message is sent.
pub struct Outbound {
    pub message: Message,
    pub object: Option<PayloadObject>,
}

/// The message an envelope travels as, decided here and nowhere else: itself when it fits the
/// queue's `limit` (counted as SQS counts, body and attributes) and its JSON payload holds no
/// character SQS refuses (escaped, it would no longer be the sender's bytes); else, with
/// [`Oversize::ClaimCheck`], a reference, with the object to write before it is sent
/// ([`check`]; the object is the message body already serialized).
pub fn message_for(
    envelope: &Envelope,
    limit: usize,
    oversize: Oversize,
) -> Result<Outbound, Unsendable> {
    let message = Message::from_envelope(envelope)?;
    // A JSON payload holding characters SQS refuses would arrive with escapes where the sender
    // wrote the characters: the same value, other bytes. The bucket keeps bytes as they are.
    let escaped = envelope
        .payload
        .as_ref()
        .is_some_and(|p| holds_noncharacters(p.get()));
    let fits = message.sqs_size() <= limit;
    if fits && (!escaped || oversize == Oversize::Refuse) {
        return Ok(Outbound {
            message,
            object: None,
        });
    }
    let too_large = |what, m: &Message| Unsendable::TooLarge {
        what,
        bytes: m.sqs_size(),
        limit,
    };
    if oversize == Oversize::Refuse {
        return Err(too_large("message", &message));
    }
    let json = if escaped {
        envelope.to_json()?
    } else {
        message.body.into_bytes()
    };
    let checked = check_json(envelope, json);
    let reference = Message::from_envelope(&checked.reference)?;
    if reference.sqs_size() > limit {
        return Err(too_large("claim-check reference", &reference));
    }
    Ok(Outbound {
        message: reference,
        object: Some(checked.object),
    })
}

/// Why a claim-checked envelope could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// The object is gone or is not the one the message names: it can never succeed.
    #[error("payload object {0}")]
    Unusable(&'static str),
    /// The store failed: a redelivery may succeed.
    #[error("payload object not read: {0}")]
    Unavailable(String),
    /// A reference in a function without `PAYLOAD_BUCKET`.
    #[error("payload object referenced but PAYLOAD_BUCKET is not set")]
    NoBucket,
}

impl ResolveError {
    pub fn is_poison(&self) -> bool {
        matches!(self, ResolveError::Unusable(_))
    }
}

/// The envelope the handlers see: the message itself, or, for a claim-checked one, the whole
/// envelope read back from its object (checked against the reference's size and SHA-256 and
/// the message's dedup key; the message's replay mark kept).
pub async fn resolve(
    store: Option<&dyn ObjectStore>,
    message: Envelope,
) -> Result<Envelope, ResolveError> {
    let Some(reference) = &message.payload_ref else {
        return Ok(message);
    };
    let store = store.ok_or(ResolveError::NoBucket)?;
    let object = match store.get(&reference.key, reference.bytes).await {
        Ok(object) => object,
        Err(ObjectError::Missing) => return Err(ResolveError::Unusable("missing")),
        Err(ObjectError::TooLarge(_)) => {
            return Err(ResolveError::Unusable("differs from its reference"))
        }
        Err(ObjectError::Failed(e)) => return Err(ResolveError::Unavailable(e)),
        Err(e @ ObjectError::Exists) => return Err(ResolveError::Unavailable(e.to_string())),
    };
    if object.len() as u64 != reference.bytes || sha256_hex(&object) != reference.sha256 {
        return Err(ResolveError::Unusable("differs from its reference"));
    }
    let mut whole: Envelope = serde_json::from_slice(&object)
        .map_err(|_| ResolveError::Unusable("is not an envelope"))?;
    if whole.dedup_key != message.dedup_key || whole.provider != message.provider {
        return Err(ResolveError::Unusable("belongs to another event"));
    }
    whole.payload_ref = None;
    whole.replay = message.replay;
    Ok(whole)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::envelope::{Payload, Replay};
    use crate::json::RawJson;
    use crate::objects::MemoryObjects;
    use serde_json::json;

    pub(in crate::objects) fn envelope(payload: Payload) -> Envelope {
        let mut e = Envelope {
            provider: "trybe".into(),
            event_id: "e1".into(),
            event_type: "booking.created".into(),
            dedup_key: "trybe#site/1#id#e1".into(),
            received_at: "2026-12-01T10:00:00Z".into(),
            occurred_at: None,
            tenant: Some("site/1".into()),
            content_type: Some("application/json".into()),
            body_sha256: "ab".repeat(32),
            payload: None,
            payload_raw: None,
            payload_base64: None,
            payload_ref: None,
            replay: None,
        };
        e.set_payload(payload);
        e
    }

    #[tokio::test]
    async fn a_checked_envelope_travels_without_content_and_comes_back_whole() {
        let e = envelope(Payload::Json(
            RawJson::from_value(&json!({"big": "x".repeat(100)})).unwrap(),
        ));
        let checked = check(&e).unwrap();
        let r = &checked.reference;
        assert!(r.payload.is_none() && r.payload_raw.is_none() && r.payload_base64.is_none());
        assert_eq!(
            (&r.event_id, &r.dedup_key, &r.tenant),
            (&e.event_id, &e.dedup_key, &e.tenant)
        );
        let reference = r.payload_ref.clone().unwrap();
        assert_eq!(reference.key, checked.object.key);
        assert!(
            checked.object.key.starts_with("trybe/"),
            "{}",
            checked.object.key
        );
        assert!(
            !checked.object.key.contains("site"),
            "the dedup key is hashed"
        );
        assert_eq!(reference.bytes as usize, checked.object.bytes.len());

        let store = MemoryObjects::default();
        store.insert(&checked.object.key, checked.object.bytes.to_vec());
        let mut message = checked.reference.clone();
        message.replay = Some(Replay {
            id: "r1".into(),
            requested_at: "now".into(),
            archive_key: "k".into(),
        });
        let back = resolve(Some(&store), message.clone()).await.unwrap();
        assert_eq!(
            back.replay, message.replay,
            "the message's replay mark is kept"
        );
        let mut plain = back.clone();
        plain.replay = None;
        assert_eq!(plain, e, "the handler sees the envelope as it was built");

        // An envelope with its content resolves to itself without a store.
        assert_eq!(resolve(None, e.clone()).await.unwrap(), e);
        // A reference without a bucket, a missing object, a damaged one, a store failure.
        assert_eq!(
            resolve(None, message.clone()).await,
            Err(ResolveError::NoBucket)
        );
        store.insert(&checked.object.key, b"{}".to_vec());
        let damaged = resolve(Some(&store), message.clone()).await.unwrap_err();
        assert!(damaged.is_poison(), "{damaged}");
        // Larger than the reference says: refused by the store before it is read.
        let larger = vec![b' '; reference.bytes as usize + 1];
        store.insert(&checked.object.key, larger);
        assert_eq!(
            store.get(&checked.object.key, reference.bytes).await,
            Err(ObjectError::TooLarge(reference.bytes))
        );
        assert_eq!(
            resolve(Some(&store), message.clone()).await,
            Err(ResolveError::Unusable("differs from its reference"))
        );
        store.remove(&checked.object.key);
        let missing = resolve(Some(&store), message.clone()).await.unwrap_err();
        assert_eq!(missing, ResolveError::Unusable("missing"));
        store.fail(true);
        let down = resolve(Some(&store), message).await.unwrap_err();
        assert!(!down.is_poison(), "a failing store is retried: {down}");
    }

    #[tokio::test]
    async fn an_object_of_another_event_is_refused_even_when_its_hash_matches() {
        let e = envelope(Payload::Raw("a".into()));
        let mut other = e.clone();
        other.dedup_key = "trybe#site/1#id#e2".into();
        let theirs = check(&other).unwrap();
        let store = MemoryObjects::default();
        store.insert(&theirs.object.key, theirs.object.bytes.to_vec());
        let mut message = check(&e).unwrap().reference;
        message.payload_ref = theirs.reference.payload_ref.clone();
        assert_eq!(
            resolve(Some(&store), message).await,
            Err(ResolveError::Unusable("belongs to another event"))
        );
    }

    #[tokio::test]
    async fn a_payload_with_characters_sqs_refuses_travels_by_claim_check_byte_for_byte() {
        let text = "{\"note\": \"a\u{FFFE}b\u{FFFF}\", \"n\": 1.10}";
        let e = envelope(Payload::Json(RawJson::from_slice(text.as_bytes()).unwrap()));
        let out = message_for(&e, 1024 * 1024, Oversize::ClaimCheck).unwrap();
        let object = out.object.expect("claim-checked although small");
        let store = MemoryObjects::default();
        store.insert(&object.key, object.bytes.to_vec());
        let message: Envelope = serde_json::from_str(&out.message.body).unwrap();
        let back = resolve(Some(&store), message).await.unwrap();
        assert_eq!(back.payload.unwrap().get(), text, "byte for byte");
        // Without a bucket it still travels, escaped: the same value, not the same bytes.
        let inline = message_for(&e, 1024 * 1024, Oversize::Refuse).unwrap();
        assert!(inline.object.is_none());
        assert!(inline.message.body.contains("\\ufffe"));
        // Plain text needs no object.
        let plain = envelope(Payload::Json(
            RawJson::from_slice(b"{\"n\": 1.10}").unwrap(),
        ));
        assert!(message_for(&plain, 1024 * 1024, Oversize::ClaimCheck)
            .unwrap()
            .object
            .is_none());
    }

    #[test]
    fn different_content_under_one_dedup_key_gets_a_different_object() {
        let a = check(&envelope(Payload::Raw("a".into()))).unwrap();
        let b = check(&envelope(Payload::Raw("b".into()))).unwrap();
        let (a_dir, _) = a.object.key.rsplit_once('/').unwrap();
        let (b_dir, _) = b.object.key.rsplit_once('/').unwrap();
        assert_eq!(a_dir, b_dir, "one prefix per dedup key");
        assert_ne!(a.object.key, b.object.key);
    }
}

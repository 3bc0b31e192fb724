//! The archive: what is kept of every accepted request, and where.

use base64::Engine;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::envelope::Envelope;

/// What the archive keeps of one accepted request. `E`: the envelopes as read back (owned) or
/// as written by a receiver (borrowed from its request, not copied).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveRecord<E = Envelope> {
    pub provider: String,
    /// When the receiver accepted it (RFC 3339).
    pub received_at: String,
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// SHA-256 of the body as received.
    pub body_sha256: String,
    /// The body byte for byte, base64 (standard alphabet, padded).
    pub body_base64: String,
    /// The events the request carried, as they were queued, content included (what
    /// `webhook-ops replay` queues again).
    pub events: Vec<E>,
}

impl<E> ArchiveRecord<E> {
    pub fn body(&self) -> Option<Vec<u8>> {
        BASE64.decode(&self.body_base64).ok()
    }
}

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The archive record of a request: its body, method, media type and the envelopes built from
/// it. Headers, path and query are left out: the credentials travel there.
pub fn archive_record<'e>(
    method: &str,
    content_type: Option<&str>,
    body: &[u8],
    events: Vec<&'e Envelope>,
) -> Option<ArchiveRecord<&'e Envelope>> {
    let first = events.first()?;
    Some(ArchiveRecord {
        provider: first.provider.clone(),
        received_at: first.received_at.clone(),
        method: method.to_owned(),
        content_type: content_type.map(str::to_owned),
        body_sha256: first.body_sha256.clone(),
        body_base64: BASE64.encode(body),
        events,
    })
}

const DATE: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");
const TIME: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[hour][minute][second].[subsecond digits:3]");

/// `<provider>/<YYYY-MM-DD>/<HHMMSS.mmm>Z-<first 16 hex of the body's SHA-256>-<request>.json`,
/// in UTC: listed by provider and day, and in time order within a day. `request` is unique to
/// the request ([`archive_request_id`]): two requests in one millisecond with the same body (two
/// tenants, a TRIFFT GET burst whose content is in the query) get two keys, where the time and
/// hash alone would name one object twice.
pub fn archive_key(
    provider: &str,
    received: OffsetDateTime,
    body_sha256: &str,
    request: &str,
) -> String {
    let at = received.to_offset(time::UtcOffset::UTC);
    format!(
        "{provider}/{}/{}Z-{}-{request}.json",
        at.format(DATE).expect("date formats"),
        at.format(TIME).expect("time formats"),
        &body_sha256[..body_sha256.len().min(16)]
    )
}

/// A fresh request part for [`archive_key`]: 16 random hex digits (64 bits).
pub fn archive_request_id() -> String {
    let mut token = crate::keys::new_token();
    token.truncate(16);
    token
}

/// The archive's day prefix: `<provider>/<YYYY-MM-DD>/`.
pub fn archive_day_prefix(provider: &str, day: time::Date) -> String {
    format!("{provider}/{}/", day.format(DATE).expect("date formats"))
}

/// When the request under an archive key was received (to the millisecond), read from the key.
pub fn archive_key_time(key: &str) -> Option<OffsetDateTime> {
    let mut parts = key.rsplitn(3, '/');
    let name = parts.next()?;
    let day = time::Date::parse(parts.next()?, DATE).ok()?;
    let clock = name.split_once('Z')?.0;
    let time = time::Time::parse(clock, TIME).ok()?;
    Some(day.with_time(time).assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Payload;

    #[test]
    fn archive_keys_are_by_provider_and_day_and_give_their_time_back() {
        let at = time::macros::datetime!(2026-12-01 23:59:58.123 +02:00);
        let key = archive_key(
            "tilby",
            at,
            &"0123456789abcdef".repeat(4),
            "00ff00ff00ff00ff",
        );
        assert_eq!(
            key,
            "tilby/2026-12-01/215958.123Z-0123456789abcdef-00ff00ff00ff00ff.json"
        );
        assert_eq!(archive_key_time(&key), Some(at));
        assert_eq!(archive_day_prefix("tilby", at.date()), "tilby/2026-12-01/");
        assert_eq!(archive_key_time("tilby/nonsense"), None);
        assert_eq!(archive_key_time("tilby/2026-12-01/x.json"), None);
        // Keys written before the request part are still read.
        assert_eq!(
            archive_key_time("tilby/2026-12-01/215958.123Z-0123456789abcdef.json"),
            Some(at)
        );
    }

    #[test]
    fn two_requests_in_one_millisecond_with_one_body_get_two_keys() {
        let at = time::macros::datetime!(2026-12-01 10:00:00.001 UTC);
        let hash = "ab".repeat(32);
        let (a, b) = (archive_request_id(), archive_request_id());
        assert_eq!(a.len(), 16);
        assert_ne!(
            archive_key("trifft", at, &hash, &a),
            archive_key("trifft", at, &hash, &b)
        );
    }

    #[test]
    fn the_archive_record_keeps_the_body_byte_for_byte() {
        let body = b"<n>caf\xe9</n>".to_vec();
        let event = crate::objects::claim_check::tests::envelope(Payload::Bytes(body.clone()));
        let record = archive_record("POST", Some("application/xml"), &body, vec![&event]).unwrap();
        assert_eq!(record.body(), Some(body));
        assert_eq!(record.provider, "trybe");
        // Written with borrowed envelopes, read back with owned ones: the same record.
        let back: ArchiveRecord =
            serde_json::from_slice(&serde_json::to_vec(&record).unwrap()).unwrap();
        assert_eq!(back.events, vec![event.clone()]);
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&record).unwrap()
        );
        assert!(archive_record("POST", None, b"", Vec::new()).is_none());
    }
}

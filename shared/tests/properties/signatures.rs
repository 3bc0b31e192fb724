//! Signing and verifying agree for random bodies, secrets and timestamps, and a single flipped
//! bit of the body, the signature or the timestamp makes verification fail.

use std::time::Duration;

use lambda_http::http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::collection::vec;
use proptest::prelude::*;
use time::OffsetDateTime;

use shared::config::Env;
use shared::provider::{Inbound, Provider};
use shared::providers::tilby::{self, Tilby};
use shared::providers::tribe::{self, Tribe};
use shared::providers::trybe::{self, Trybe};
use shared::secret::{Secret, SecretList};
use shared::verify::{self, AuthFailure};

use crate::config;

/// Secrets as a comma-separated list holds them: printable, no comma, no surrounding space.
fn secrets() -> impl Strategy<Value = Vec<String>> {
    vec("[!-+\\--~]{1,32}", 1..4)
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..256)
}

fn at_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
}

fn headers(pairs: &[(&str, &[u8])]) -> Option<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_bytes(value).ok()?,
        );
    }
    Some(map)
}

fn authenticate(
    provider: &dyn Provider,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<(), AuthFailure> {
    let method = Method::POST;
    let inbound = Inbound {
        method: &method,
        headers,
        path,
        query: None,
        body,
        now: at_ms(now_ms),
    };
    provider.authenticate(&inbound).map(|_| ())
}

/// `hex` with one bit of the raw MAC flipped (flipping a bit of the hex text could only change
/// a letter's case, which is the same signature).
fn flip_mac_bit(signature_hex: &str, bit: usize) -> String {
    let mut raw = hex::decode(signature_hex).unwrap();
    raw[bit / 8 % 32] ^= 1 << (bit % 8);
    hex::encode(raw)
}

fn flip_bit(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let at = bit / 8 % out.len();
    out[at] ^= 1 << (bit % 8);
    out
}

fn list(secrets: &[String]) -> SecretList {
    SecretList::parse(&secrets.join(",")).unwrap()
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn an_hmac_over_any_split_of_the_parts_verifies_and_any_flipped_bit_fails(
        secrets in secrets(),
        which in any::<prop::sample::Index>(),
        parts in vec(vec(any::<u8>(), 0..64), 0..4),
        bit in any::<usize>(),
        upper in any::<bool>(),
    ) {
        let list = list(&secrets);
        let secret = Secret::new(which.get::<String>(&secrets)).unwrap();
        let whole = parts.concat();
        let signature = verify::sign_hex(&secret, &[&whole]);
        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let presented = if upper { signature.to_uppercase() } else { signature.clone() };
        prop_assert!(verify::hmac_sha256_hex(&list, &slices, &presented).is_ok());
        prop_assert_eq!(
            verify::hmac_sha256_hex(&list, &slices, &flip_mac_bit(&signature, bit)),
            Err(AuthFailure::Mismatch)
        );
        if !whole.is_empty() {
            let flipped = flip_bit(&whole, bit);
            prop_assert_eq!(
                verify::hmac_sha256_hex(&list, &[&flipped], &signature),
                Err(AuthFailure::Mismatch)
            );
        }
    }

    #[test]
    fn trybe_verifies_what_trybe_signs_and_nothing_one_bit_away(
        secrets in secrets(),
        which in any::<prop::sample::Index>(),
        body in body(),
        bit in any::<usize>(),
    ) {
        let trybe = Trybe::new(list(&secrets));
        let signature = trybe::sign(&Secret::new(which.get::<String>(&secrets)).unwrap(), &body);
        let check = |sig: &str, body: &[u8]| {
            authenticate(&trybe, &headers(&[("signature", sig.as_bytes())]).unwrap(), "/", body, 0)
        };
        prop_assert_eq!(check(&signature, &body), Ok(()));
        prop_assert!(check(&flip_mac_bit(&signature, bit), &body).is_err());
        if !body.is_empty() {
            prop_assert!(check(&signature, &flip_bit(&body, bit)).is_err());
        }
    }

    #[test]
    fn tribe_verifies_what_tribe_signs_within_its_window_and_nothing_one_bit_away(
        secrets in secrets(),
        which in any::<prop::sample::Index>(),
        body in body(),
        now_ms in 1_000_000_000_000i64..9_000_000_000_000,
        tolerance_secs in 1u64..3600,
        offset in -1.0f64..1.0,
        seconds in any::<bool>(),
        legacy in any::<bool>(),
        bit in any::<usize>(),
    ) {
        let tribe = Tribe::new(list(&secrets), Duration::from_secs(tolerance_secs));
        let secret = Secret::new(which.get::<String>(&secrets)).unwrap();
        let family = if legacy { tribe::LEGACY } else { tribe::BETTERMODE };
        // A timestamp inside the window: in milliseconds, or in seconds (10 digits).
        let window_ms = tolerance_secs as i64 * 1000;
        let timestamp = if seconds {
            let sent_s = (now_ms + (offset * (window_ms - 1000) as f64) as i64) / 1000;
            prop_assume!((now_ms - sent_s * 1000).abs() <= window_ms);
            sent_s.to_string()
        } else {
            (now_ms + (offset * window_ms as f64) as i64).to_string()
        };
        let check = |sig: &[u8], ts: &[u8], body: &[u8]| match headers(&[
            (family.signature, sig),
            (family.timestamp, ts),
        ]) {
            Some(h) => authenticate(&tribe, &h, "/", body, now_ms),
            None => Err(AuthFailure::Malformed), // not a header: cannot be sent
        };
        let signature = tribe::sign(&secret, &timestamp, &body);
        prop_assert_eq!(check(signature.as_bytes(), timestamp.as_bytes(), &body), Ok(()));
        prop_assert!(check(flip_mac_bit(&signature, bit).as_bytes(), timestamp.as_bytes(), &body).is_err());
        prop_assert!(check(signature.as_bytes(), &flip_bit(timestamp.as_bytes(), bit), &body).is_err());
        if !body.is_empty() {
            prop_assert!(check(signature.as_bytes(), timestamp.as_bytes(), &flip_bit(&body, bit)).is_err());
        }
        // Signed correctly but outside the window, either way: stale.
        let outside = now_ms + (window_ms + 1 + (bit % 100_000) as i64) * if offset < 0.0 { -1 } else { 1 };
        let outside = outside.to_string();
        let stale = tribe::sign(&secret, &outside, &body);
        prop_assert_eq!(
            check(stale.as_bytes(), outside.as_bytes(), &body),
            Err(AuthFailure::Stale)
        );
    }

    #[test]
    fn tilby_verifies_what_tilby_signs_under_its_url_token_and_nothing_one_bit_away(
        secrets in secrets(),
        which in any::<prop::sample::Index>(),
        url_token in "[A-Za-z0-9_-]{16,24}",
        body in body(),
        bit in any::<usize>(),
    ) {
        let joined = secrets.join(",");
        let tilby = Tilby::from_env(&Env::from_pairs([
            (tilby::URL_TOKEN_VAR, url_token.as_str()),
            (tilby::SIGNING_TOKEN_VAR, joined.as_str()),
        ]));
        prop_assume!(tilby.is_ok()); // a token equal to a reserved segment is refused
        let tilby = tilby.unwrap();
        let signature = tilby::sign(&Secret::new(which.get::<String>(&secrets)).unwrap(), &body);
        let path = format!("/tilby/{url_token}");
        let check = |sig: &str, path: &str, body: &[u8]| {
            let h = headers(&[(tilby::SIMULATED_SIGNATURE_HEADER, sig.as_bytes())]).unwrap();
            authenticate(&tilby, &h, path, body, 0)
        };
        prop_assert_eq!(check(&signature, &path, &body), Ok(()));
        prop_assert!(check(&flip_mac_bit(&signature, bit), &path, &body).is_err());
        prop_assert!(check(&signature, "/tilby/", &body).is_err());
        if !body.is_empty() {
            prop_assert!(check(&signature, &path, &flip_bit(&body, bit)).is_err());
        }
    }
}

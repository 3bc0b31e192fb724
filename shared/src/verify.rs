//! Verification primitives. Every successful check returns a [`Verified`] proof; the pipeline
//! hands a provider the request for parsing only together with such a proof.
//!
//! All comparisons are constant time (`subtle`, `hmac::Mac::verify`) with an explicit length
//! check, and every configured secret is tried without short-circuiting.

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::secret::{Secret, SecretList};

type HmacSha256 = Hmac<Sha256>;

/// Proof that a request passed its provider's authentication. Only this module makes one.
#[derive(Debug)]
pub struct Verified {
    _private: (),
}

impl Verified {
    fn new() -> Self {
        Verified { _private: () }
    }
}

/// Why authentication failed. Shown only in logs (never the values involved); the caller
/// always answers a plain 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("credential missing")]
    Missing,
    #[error("credential malformed")]
    Malformed,
    #[error("credential does not match")]
    Mismatch,
    #[error("timestamp outside the replay window")]
    Stale,
    #[error("tenant not accepted")]
    TenantRefused,
}

/// Verifies a hex HMAC-SHA256 (either case) over the concatenation of `parts`, against every
/// secret in `secrets`. The length is checked before any comparison (32 bytes).
pub fn hmac_sha256_hex(
    secrets: &SecretList,
    parts: &[&[u8]],
    signature_hex: &str,
) -> Result<Verified, AuthFailure> {
    let signature_hex = signature_hex.trim();
    if signature_hex.is_empty() {
        return Err(AuthFailure::Missing);
    }
    if signature_hex.len() != 64 {
        return Err(AuthFailure::Malformed);
    }
    let mut given = [0u8; 32];
    hex::decode_to_slice(signature_hex, &mut given).map_err(|_| AuthFailure::Malformed)?;
    let mut matched = Choice::from(0);
    for secret in secrets.iter() {
        matched |= hmac_sha256(secret, parts).as_slice().ct_eq(&given);
    }
    bool::from(matched)
        .then(Verified::new)
        .ok_or(AuthFailure::Mismatch)
}

/// Constant-time match of a presented token (URL token, header value) against a list.
/// `subtle`'s slice comparison checks the length first.
pub fn token(secrets: &SecretList, presented: &[u8]) -> Result<Verified, AuthFailure> {
    if presented.is_empty() {
        return Err(AuthFailure::Missing);
    }
    let mut matched = Choice::from(0);
    for secret in secrets.iter() {
        matched |= secret.expose().ct_eq(presented);
    }
    bool::from(matched)
        .then(Verified::new)
        .ok_or(AuthFailure::Mismatch)
}

/// Basic authentication: `Authorization: Basic base64(user:password)` against accepted pairs.
pub fn basic(
    credentials: &[(Secret, Secret)],
    authorization: Option<&str>,
) -> Result<Verified, AuthFailure> {
    let value = authorization.ok_or(AuthFailure::Missing)?.trim();
    let (scheme, encoded) = value.split_once(' ').ok_or(AuthFailure::Malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthFailure::Malformed);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| AuthFailure::Malformed)?;
    let split = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(AuthFailure::Malformed)?;
    let (user, password) = (&decoded[..split], &decoded[split + 1..]);
    let mut matched = Choice::from(0);
    for (u, p) in credentials {
        matched |= u.expose().ct_eq(user) & p.expose().ct_eq(password);
    }
    bool::from(matched)
        .then(Verified::new)
        .ok_or(AuthFailure::Mismatch)
}

/// The raw MAC of `parts` under `secret`. For signing (simulator, samples, tests): never log it.
pub fn hmac_sha256(secret: &Secret, parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        HmacSha256::new_from_slice(secret.expose()).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Lowercase hex HMAC-SHA256, the form every provider here sends.
pub fn sign_hex(secret: &Secret, parts: &[&[u8]]) -> String {
    hex::encode(hmac_sha256(secret, parts))
}

/// Lowercase hex SHA-256 of `bytes` (dedup keys, `body_sha256`).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> SecretList {
        SecretList::parse(s).unwrap()
    }

    #[test]
    fn hmac_accepts_any_configured_secret_and_either_hex_case() {
        let body = b"{\"a\":1}";
        let sig = sign_hex(&Secret::new("second-secret").unwrap(), &[body]);
        assert!(hmac_sha256_hex(&list("first-secret,second-secret"), &[body], &sig).is_ok());
        assert!(hmac_sha256_hex(
            &list("first-secret,second-secret"),
            &[body],
            &sig.to_uppercase()
        )
        .is_ok());
        assert_eq!(
            hmac_sha256_hex(&list("first-secret"), &[body], &sig).unwrap_err(),
            AuthFailure::Mismatch
        );
    }

    #[test]
    fn hmac_refuses_missing_truncated_overlong_and_non_hex_signatures() {
        let s = list("k");
        let sig = sign_hex(&Secret::new("k").unwrap(), &[b"x"]);
        assert_eq!(
            hmac_sha256_hex(&s, &[b"x"], "").unwrap_err(),
            AuthFailure::Missing
        );
        assert_eq!(
            hmac_sha256_hex(&s, &[b"x"], &sig[..63]).unwrap_err(),
            AuthFailure::Malformed
        );
        assert_eq!(
            hmac_sha256_hex(&s, &[b"x"], &format!("{sig}00")).unwrap_err(),
            AuthFailure::Malformed
        );
        assert_eq!(
            hmac_sha256_hex(&s, &[b"x"], &"zz".repeat(32)).unwrap_err(),
            AuthFailure::Malformed
        );
        assert!(hmac_sha256_hex(&s, &[b"x"], &sig).is_ok());
    }

    #[test]
    fn hmac_parts_are_concatenated() {
        let key = Secret::new("k").unwrap();
        assert_eq!(
            sign_hex(&key, &[b"12:", b"body"]),
            sign_hex(&key, &[b"12:body"])
        );
    }

    #[test]
    fn token_needs_exact_match_of_same_length() {
        let s = list("tok-A,tok-B");
        assert!(token(&s, b"tok-B").is_ok());
        assert_eq!(token(&s, b"tok-").unwrap_err(), AuthFailure::Mismatch);
        assert_eq!(token(&s, b"tok-BB").unwrap_err(), AuthFailure::Mismatch);
        assert_eq!(token(&s, b"").unwrap_err(), AuthFailure::Missing);
    }

    #[test]
    fn basic_auth_checks_user_and_password_together() {
        let pair = |u: &str, p: &str| (Secret::new(u).unwrap(), Secret::new(p).unwrap());
        let creds = vec![pair("alice", "pw1"), pair("bob", "pw2")];
        let header = |u: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(u)
            )
        };
        assert!(basic(&creds, Some(&header("bob:pw2"))).is_ok());
        assert!(basic(
            &creds,
            Some(&header("alice:pw1"))
                .map(|h| h.replace("Basic", "basic"))
                .as_deref()
        )
        .is_ok());
        assert_eq!(
            basic(&creds, Some(&header("alice:pw2"))).unwrap_err(),
            AuthFailure::Mismatch
        );
        assert_eq!(
            basic(&creds, Some(&header("alicepw1"))).unwrap_err(),
            AuthFailure::Malformed
        );
        assert_eq!(
            basic(&creds, Some("Bearer abc")).unwrap_err(),
            AuthFailure::Malformed
        );
        assert_eq!(basic(&creds, None).unwrap_err(), AuthFailure::Missing);
    }
}

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

/// Proof that a request passed its provider's authentication, and for which tenants. Only this
/// module makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    scope: Scope,
}

/// Whom a verified credential speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// A comma-separated list verified it: one trust domain, any tenant.
    AnyTenant,
    /// A tenant map verified it: these tenants only (several when they share a value).
    Tenants(Vec<String>),
}

impl Verified {
    fn new(scope: Scope) -> Self {
        Verified { scope }
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Whether a request naming `tenant` (or none) may be accepted under this proof.
    pub fn permits(&self, tenant: Option<&str>) -> bool {
        match &self.scope {
            Scope::AnyTenant => true,
            Scope::Tenants(tenants) => tenant.is_some_and(|t| tenants.iter().any(|a| a == t)),
        }
    }

    /// The one tenant this proof speaks for, when a map verified it (TRIFFT, whose payloads name
    /// no tenant, takes its tenant from the credential).
    pub fn tenant(&self) -> Option<&str> {
        match &self.scope {
            Scope::Tenants(t) if t.len() == 1 => Some(&t[0]),
            _ => None,
        }
    }

    /// Both proofs at once (a URL token and a signature): the tenants both speak for. A request
    /// whose two credentials belong to different tenants is refused.
    pub fn and(self, other: Verified) -> Result<Verified, AuthFailure> {
        let scope = match (self.scope, other.scope) {
            (Scope::AnyTenant, s) | (s, Scope::AnyTenant) => s,
            (Scope::Tenants(a), Scope::Tenants(b)) => {
                let both: Vec<String> = a.into_iter().filter(|t| b.contains(t)).collect();
                if both.is_empty() {
                    return Err(AuthFailure::TenantRefused);
                }
                Scope::Tenants(both)
            }
        };
        Ok(Verified::new(scope))
    }
}

/// Checks every entry of `secrets` with `matches` (each check constant time, none skipped) and
/// makes the proof: the tenants whose values matched, or any tenant for a plain list.
fn check_all(secrets: &SecretList, matches: impl Fn(&Secret) -> Choice) -> Option<Verified> {
    let mut any = Choice::from(0);
    let mut tenants = Vec::new();
    for (tenant, secret) in secrets.entries() {
        let hit = matches(secret);
        any |= hit;
        // Branching after the constant-time comparison only tells a caller who matched.
        if let (true, Some(t)) = (bool::from(hit), tenant) {
            if !tenants.iter().any(|x: &String| x == t) {
                tenants.push(t.to_owned());
            }
        }
    }
    if !bool::from(any) {
        return None;
    }
    Some(Verified::new(if secrets.is_per_tenant() {
        Scope::Tenants(tenants)
    } else {
        Scope::AnyTenant
    }))
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
    check_all(secrets, |secret| {
        hmac_sha256(secret, parts).as_slice().ct_eq(&given)
    })
    .ok_or(AuthFailure::Mismatch)
}

/// Verifies raw HMAC-SHA256 values (already decoded from the sender's encoding, e.g. base64)
/// over the concatenation of `parts`. Each secret is first turned into its key by `key_of` (a
/// sender's secrets can be encoded: Standard Webhooks' `whsec_<base64>`); a secret without a
/// key never matches. Every (secret, signature) pair is compared in constant time, none skipped;
/// a signature of the wrong length is the caller's to refuse (they are `[u8; 32]` here).
pub fn hmac_sha256_any(
    secrets: &SecretList,
    key_of: impl Fn(&Secret) -> Option<Vec<u8>>,
    parts: &[&[u8]],
    signatures: &[[u8; 32]],
) -> Result<Verified, AuthFailure> {
    if signatures.is_empty() {
        return Err(AuthFailure::Missing);
    }
    check_all(secrets, |secret| {
        let Some(key) = key_of(secret) else {
            return Choice::from(0);
        };
        let computed = hmac_sha256_key(&key, parts);
        signatures
            .iter()
            .fold(Choice::from(0), |any, given| any | computed.ct_eq(given))
    })
    .ok_or(AuthFailure::Mismatch)
}

/// Which of `candidates` (raw HMAC-SHA256 values) is the MAC of `parts` under one of
/// `secrets`: one MAC per secret, each compared with every candidate in constant time, none
/// skipped. The proof and the position of the first candidate that matched.
pub fn hmac_sha256_which(
    secrets: &SecretList,
    parts: &[&[u8]],
    candidates: &[[u8; 32]],
) -> Option<(Verified, usize)> {
    let first = std::cell::Cell::new(None);
    let proof = check_all(secrets, |secret| {
        let computed = hmac_sha256(secret, parts);
        candidates
            .iter()
            .enumerate()
            .fold(Choice::from(0), |any, (i, given)| {
                let hit = computed.ct_eq(given);
                // Branching after the comparison only tells the caller which header held it.
                if bool::from(hit) && first.get().is_none() {
                    first.set(Some(i));
                }
                any | hit
            })
    })?;
    Some((proof, first.get()?))
}

/// Constant-time match of a presented token (URL token, header value) against a list.
/// `subtle`'s slice comparison checks the length first.
pub fn token(secrets: &SecretList, presented: &[u8]) -> Result<Verified, AuthFailure> {
    if presented.is_empty() {
        return Err(AuthFailure::Missing);
    }
    check_all(secrets, |secret| secret.expose().ct_eq(presented)).ok_or(AuthFailure::Mismatch)
}

/// An accepted Basic user and password, and the tenant they belong to (`None`: any tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicPair {
    pub tenant: Option<String>,
    pub user: Secret,
    pub password: Secret,
}

/// Basic authentication: `Authorization: Basic base64(user:password)` against accepted pairs.
pub fn basic(
    credentials: &[BasicPair],
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
    let mut any = Choice::from(0);
    let mut tenants: Vec<String> = Vec::new();
    for pair in credentials {
        let hit = pair.user.expose().ct_eq(user) & pair.password.expose().ct_eq(password);
        any |= hit;
        if let (true, Some(t)) = (bool::from(hit), &pair.tenant) {
            if !tenants.contains(t) {
                tenants.push(t.clone());
            }
        }
    }
    if !bool::from(any) {
        return Err(AuthFailure::Mismatch);
    }
    Ok(Verified::new(
        if credentials.iter().any(|p| p.tenant.is_some()) {
            Scope::Tenants(tenants)
        } else {
            Scope::AnyTenant
        },
    ))
}

/// The raw MAC of `parts` under `secret`. For signing (simulator, samples, tests): never log it.
pub fn hmac_sha256(secret: &Secret, parts: &[&[u8]]) -> [u8; 32] {
    hmac_sha256_key(secret.expose(), parts)
}

/// The raw MAC of `parts` under a key derived from a secret (Standard Webhooks' decoded
/// `whsec_` value). Never log it.
pub fn hmac_sha256_key(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
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
        let pair = |u: &str, p: &str| BasicPair {
            tenant: None,
            user: Secret::new(u).unwrap(),
            password: Secret::new(p).unwrap(),
        };
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

    #[test]
    fn a_tenant_map_proof_names_the_tenants_whose_value_matched() {
        let map = SecretList::from_config(r#"{"a":"key-a","b":["old-b","key-b"],"c":"key-a"}"#)
            .unwrap()
            .unwrap();
        let body = b"x";
        let sig = sign_hex(&Secret::new("key-b").unwrap(), &[body]);
        let proof = hmac_sha256_hex(&map, &[body], &sig).unwrap();
        assert_eq!(proof.scope(), &Scope::Tenants(vec!["b".into()]));
        assert!(proof.permits(Some("b")));
        assert!(!proof.permits(Some("a")) && !proof.permits(None));
        assert_eq!(proof.tenant(), Some("b"));
        // A value shared by two tenants speaks for both, and names neither alone.
        let shared = token(&map, b"key-a").unwrap();
        assert_eq!(
            shared.scope(),
            &Scope::Tenants(vec!["a".into(), "c".into()])
        );
        assert!(shared.permits(Some("c")) && shared.tenant().is_none());
        // A plain list is one trust domain.
        let any = token(&list("key-a,key-b"), b"key-b").unwrap();
        assert!(any.permits(Some("whoever")) && any.permits(None));
        // Two credentials of different tenants never combine.
        let a = token(&map, b"key-a").unwrap();
        let b = token(&map, b"key-b").unwrap();
        assert_eq!(a.clone().and(b).unwrap_err(), AuthFailure::TenantRefused);
        assert_eq!(a.clone().and(any).unwrap(), a);
    }
}

//! The keys of the records that guard an event, in one place: the receivers' claim
//! (`<provider>#<tenant>#…`, [`dedup_key`]), the processor's (`processed#<dedup key>`,
//! [`processed_key`]), and the token that says whose a claim is ([`new_token`]). The processor
//! uses this module without importing the receiver.

use crate::provider::EventKey;
use crate::verify::sha256_hex;

/// Prefix of the processor's records (`processed#<dedup_key>`); receivers' keys start with
/// `<provider>#`. The deployment's IAM policies scope each function to its prefix.
pub const PROCESSED_PREFIX: &str = "processed#";

/// The processor's record of the event whose receiver claim is `dedup_key`. The receivers read it
/// to learn whether an event reached the queue.
pub fn processed_key(dedup_key: &str) -> String {
    format!("{PROCESSED_PREFIX}{dedup_key}")
}

/// A random claim token (release and finish only touch a claim that is still ours).
pub fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Longest dedup key kept readable; longer ones are hashed (DynamoDB allows 2048 bytes).
const MAX_KEY_BYTES: usize = 1024;

/// The claim's partition key: `<provider>#<tenant>#id#<part>[#<part>…]` for a provider's id,
/// `<provider>#<tenant>#sha256#<hex>` for a content hash; `<tenant>` is empty when the request
/// names none. `%` and `#` inside a tenant or an id part are percent-encoded, so the parts can be
/// read back unambiguously: two different (tenant, key) pairs never share a dedup key, and an id
/// never equals a hash key. A key over [`MAX_KEY_BYTES`] becomes `<provider>#sha256-of-key:<hex>`
/// (two segments: no readable key has fewer than four).
pub fn dedup_key(provider: &str, tenant: Option<&str>, key: &EventKey) -> String {
    fn push_escaped(out: &mut String, part: &str) {
        for c in part.chars() {
            match c {
                '%' => out.push_str("%25"),
                '#' => out.push_str("%23"),
                c => out.push(c),
            }
        }
    }
    let mut out = String::with_capacity(64);
    out.push_str(provider);
    out.push('#');
    match tenant {
        None => {}
        // A lone `%` never comes out of `push_escaped`: an empty tenant is not no tenant.
        Some("") => out.push('%'),
        Some(t) => push_escaped(&mut out, t),
    }
    match key {
        EventKey::Id(parts) => {
            out.push_str("#id");
            for part in parts {
                out.push('#');
                push_escaped(&mut out, part);
            }
        }
        EventKey::Hash(hex) => {
            out.push_str("#sha256#");
            push_escaped(&mut out, hex);
        }
    }
    if out.len() > MAX_KEY_BYTES {
        return format!("{provider}#sha256-of-key:{}", sha256_hex(out.as_bytes()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify;

    #[test]
    fn dedup_keys_separate_tenants_ids_hashes_and_composite_parts() {
        let id = |s: &str| EventKey::id(s);
        assert_eq!(dedup_key("p", None, &id("abc")), "p##id#abc");
        assert_eq!(
            dedup_key("p", Some("site-1"), &id("abc")),
            "p#site-1#id#abc"
        );
        let hash = EventKey::hash_of(b"x");
        assert_eq!(
            dedup_key("p", None, &hash),
            format!("p##sha256#{}", verify::sha256_hex(b"x"))
        );
        // An id that spells a hash key is still an id.
        let spelled = id(&format!("sha256#{}", verify::sha256_hex(b"x")));
        assert_ne!(dedup_key("p", None, &spelled), dedup_key("p", None, &hash));
        // A tenant or id holding the separator cannot impersonate another split.
        assert_ne!(
            dedup_key("p", Some("a#id#b"), &id("c")),
            dedup_key("p", Some("a"), &EventKey::parts(["b#id", "c"]))
        );
        assert_ne!(
            dedup_key("p", None, &EventKey::parts(["n", "e:1"])),
            dedup_key("p", None, &EventKey::parts(["n:e", "1"]))
        );
        assert_ne!(
            dedup_key("p", None, &EventKey::parts(["a", "b"])),
            dedup_key("p", None, &id("a#b"))
        );
        assert_eq!(dedup_key("p", Some("%#"), &id("x")), "p#%25%23#id#x");
    }

    #[test]
    fn long_keys_are_hashed_into_the_dedup_key() {
        let long = dedup_key("p", None, &EventKey::id("k".repeat(1100)));
        assert!(
            long.starts_with("p#sha256-of-key:") && long.len() == "p#sha256-of-key:".len() + 64
        );
        let other = dedup_key("p", Some("t"), &EventKey::id("k".repeat(1100)));
        assert_ne!(long, other, "the tenant is inside the hash");
    }
}

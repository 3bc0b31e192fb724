//! Secrets as types: a [`Secret`] never prints its value, and a [`SecretList`] is never empty,
//! so "no secret configured" cannot reach a verifier (fail closed, README "Credentials and tenants").
//!
//! A credential variable holds either a comma-separated list (one trust domain: any value
//! verifies a request for any tenant) or a JSON object mapping a tenant id to its secret or to an
//! array of secrets (rotation): then a value only verifies requests for its own tenant.

use std::fmt;

/// The most keys a MAC of a request's whole body is computed with, per request: a plain list
/// (rotation), one tenant's values in a map, or a map its requests cannot narrow. With a MAC of a
/// 10 MiB body at about 7 ms of a core, a forged request costs at most 16 of them.
pub const MAX_MAC_KEYS: usize = 16;

/// One secret value (signing secret, URL token, password). `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<[u8]>);

impl Secret {
    /// `None` for an empty or all-whitespace value.
    pub fn new(value: &str) -> Option<Self> {
        let value = value.trim();
        (!value.is_empty()).then(|| Secret(value.as_bytes().into()))
    }

    /// The raw bytes, for keying a MAC or a constant-time comparison. Never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// All accepted values of one credential, each bound to a tenant or to none. Never empty.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretList {
    entries: Vec<(Option<String>, Secret)>,
    per_tenant: bool,
}

impl SecretList {
    /// Parses a comma-separated list; blank entries are dropped. `None` when nothing is left.
    pub fn parse(csv: &str) -> Option<Self> {
        let entries: Vec<_> = csv
            .split(',')
            .filter_map(Secret::new)
            .map(|s| (None, s))
            .collect();
        (!entries.is_empty()).then_some(SecretList {
            entries,
            per_tenant: false,
        })
    }

    /// A configured value: a tenant map when it is a JSON object (`{"<tenant>": "<secret>" |
    /// ["<secret>", …]}`), else a comma-separated list. `Ok(None)` when nothing is configured;
    /// `Err` (naming no value) when a map is malformed or has an empty tenant or secret.
    pub fn from_config(raw: &str) -> Result<Option<Self>, String> {
        let raw = raw.trim();
        if !raw.starts_with('{') {
            return Ok(SecretList::parse(raw));
        }
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(raw).map_err(|e| {
                format!(
                    "not a JSON object of tenant → secret(s): {}",
                    crate::envelope::describe_json_error(&e)
                )
            })?;
        let mut entries = Vec::new();
        for (tenant, value) in map {
            let tenant = tenant.trim();
            if tenant.is_empty() {
                return Err("a tenant id is empty".into());
            }
            let values: Vec<&serde_json::Value> = match &value {
                serde_json::Value::Array(list) if !list.is_empty() => list.iter().collect(),
                serde_json::Value::Array(_) => {
                    return Err(format!("tenant {tenant} has an empty list of secrets"))
                }
                one => vec![one],
            };
            for v in values {
                let secret = v.as_str().and_then(Secret::new).ok_or_else(|| {
                    format!("tenant {tenant}: every secret must be a non-empty string")
                })?;
                entries.push((Some(tenant.to_owned()), secret));
            }
        }
        if entries.is_empty() {
            return Ok(None);
        }
        Ok(Some(SecretList {
            entries,
            per_tenant: true,
        }))
    }

    /// Whether values are bound to tenants (a JSON map was configured).
    pub fn is_per_tenant(&self) -> bool {
        self.per_tenant
    }

    /// The first value: the one to sign with (simulator, samples).
    pub fn first(&self) -> &Secret {
        &self.entries[0].1 // never empty: `parse` and `from_config` refuse an empty list
    }

    /// The value to sign a request for `tenant` with: that tenant's first secret in a map,
    /// else the first value (simulator, samples, tests).
    pub fn for_tenant(&self, tenant: Option<&str>) -> &Secret {
        self.entries
            .iter()
            .find(|(t, _)| t.is_some() && t.as_deref() == tenant)
            .map(|(_, s)| s)
            .unwrap_or_else(|| self.first())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Secret> {
        self.entries.iter().map(|(_, s)| s)
    }

    /// Every value with the tenant it belongs to (`None` in a comma-separated list).
    pub fn entries(&self) -> impl Iterator<Item = (Option<&str>, &Secret)> {
        self.entries.iter().map(|(t, s)| (t.as_deref(), s))
    }

    /// The tenants of a map, in configuration order, each once.
    pub fn tenants(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (t, _) in self.entries() {
            if let Some(t) = t.filter(|t| !out.contains(t)) {
                out.push(t);
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The values that may verify a request naming `tenant`: a plain list whole; in a map, that
    /// tenant's values only, and none when the request names no tenant or one the map lacks
    /// (such a request could not be accepted whatever its MAC). `None`: no value may.
    pub fn narrowed(&self, tenant: Option<&str>) -> Option<SecretList> {
        if !self.per_tenant {
            return Some(self.clone());
        }
        let tenant = tenant?;
        let entries: Vec<_> = self
            .entries
            .iter()
            .filter(|(t, _)| t.as_deref() == Some(tenant))
            .cloned()
            .collect();
        (!entries.is_empty()).then_some(SecretList {
            entries,
            per_tenant: true,
        })
    }

    /// The most values any one request is checked against (MACs of its whole body): a plain
    /// list, one tenant's values in a map the request's tenant narrows ([`Self::narrowed`]),
    /// or a whole map that cannot be narrowed. What a forged request costs is bounded by it.
    pub fn most_tried(&self, narrowable: bool) -> usize {
        if !(self.per_tenant && narrowable) {
            return self.entries.len();
        }
        self.tenants()
            .iter()
            .map(|t| {
                self.entries
                    .iter()
                    .filter(|(e, _)| e.as_deref() == Some(*t))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl fmt::Debug for SecretList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.per_tenant {
            write!(
                f,
                "SecretList({} tenants, {} × ***)",
                self.tenants().len(),
                self.entries.len()
            )
        } else {
            write!(f, "SecretList({} × ***)", self.entries.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_value() {
        let list = SecretList::parse("hunter2-secret, other-secret").unwrap();
        let printed = format!("{list:?} {:?}", Secret::new("hunter2-secret").unwrap());
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("2 × ***"), "{printed}");
        let map = SecretList::from_config(r#"{"site-a":"hunter2-secret"}"#)
            .unwrap()
            .unwrap();
        let printed = format!("{map:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn empty_and_blank_lists_are_refused() {
        assert!(SecretList::parse("").is_none());
        assert!(SecretList::parse(" , ,").is_none());
        assert!(Secret::new("   ").is_none());
        let list = SecretList::parse(" a ,,b ").unwrap();
        let values: Vec<&[u8]> = list.iter().map(Secret::expose).collect();
        assert_eq!(values, vec![b"a".as_slice(), b"b".as_slice()]);
        assert!(!list.is_per_tenant());
    }

    #[test]
    fn a_json_object_binds_secrets_to_tenants() {
        let map = SecretList::from_config(r#" {"site-a":"s1","site-b":["s2","s3"]} "#)
            .unwrap()
            .unwrap();
        assert!(map.is_per_tenant());
        let entries: Vec<(Option<&str>, &[u8])> =
            map.entries().map(|(t, s)| (t, s.expose())).collect();
        assert_eq!(
            entries,
            vec![
                (Some("site-a"), b"s1".as_slice()),
                (Some("site-b"), b"s2".as_slice()),
                (Some("site-b"), b"s3".as_slice())
            ]
        );
        assert_eq!(map.tenants(), vec!["site-a", "site-b"]);
        assert_eq!(map.for_tenant(Some("site-b")).expose(), b"s2");
        assert_eq!(map.for_tenant(None).expose(), b"s1");
        // A comma inside a map value is part of the secret, not a separator.
        let one = SecretList::from_config(r#"{"t":"a,b"}"#).unwrap().unwrap();
        assert_eq!(one.first().expose(), b"a,b");
    }

    #[test]
    fn a_map_is_narrowed_to_the_named_tenant_and_a_list_stays_whole() {
        let map = SecretList::from_config(r#"{"a":"s1","b":["s2","s3"],"c":"s4"}"#)
            .unwrap()
            .unwrap();
        let b = map.narrowed(Some("b")).unwrap();
        let values: Vec<&[u8]> = b.iter().map(Secret::expose).collect();
        assert_eq!(values, [b"s2".as_slice(), b"s3".as_slice()]);
        assert!(b.is_per_tenant());
        assert_eq!(map.narrowed(Some("z")), None);
        assert_eq!(map.narrowed(None), None);
        assert_eq!(map.most_tried(true), 2);
        assert_eq!(map.most_tried(false), 4);
        let list = SecretList::parse("x,y,z").unwrap();
        assert_eq!(list.narrowed(None).unwrap(), list);
        assert_eq!(list.narrowed(Some("a")).unwrap(), list);
        assert_eq!(list.most_tried(true), 3);
    }

    #[test]
    fn malformed_maps_are_errors_that_name_no_value() {
        for bad in [
            r#"{"site-a": "hunter2-secret""#,
            r#"{"site-a": ""}"#,
            r#"{"site-a": []}"#,
            r#"{"site-a": ["hunter2-secret", 5]}"#,
            r#"{" ": "hunter2-secret"}"#,
            r#"{"site-a": {"x": "hunter2-secret"}}"#,
        ] {
            let err = SecretList::from_config(bad).unwrap_err();
            assert!(!err.contains("hunter2"), "{bad}: {err}");
        }
        assert_eq!(SecretList::from_config("{}").unwrap(), None);
        assert_eq!(SecretList::from_config("  ").unwrap(), None);
    }
}

//! Secrets as types: a [`Secret`] never prints its value, and a [`SecretList`] is never empty,
//! so "no secret configured" cannot reach a verifier (fail closed, DESIGN.md).

use std::fmt;

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

/// All accepted values of one secret (rotation, several sites, several URLs). Never empty.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretList(Vec<Secret>);

impl SecretList {
    /// Parses a comma-separated list; blank entries are dropped. `None` when nothing is left.
    pub fn parse(csv: &str) -> Option<Self> {
        let list: Vec<Secret> = csv.split(',').filter_map(Secret::new).collect();
        (!list.is_empty()).then_some(SecretList(list))
    }

    /// The first value: the one to sign with (simulator, samples).
    pub fn first(&self) -> &Secret {
        &self.0[0] // never empty: `parse` refuses an empty list
    }

    pub fn iter(&self) -> impl Iterator<Item = &Secret> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretList({} × ***)", self.0.len())
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
    }

    #[test]
    fn empty_and_blank_lists_are_refused() {
        assert!(SecretList::parse("").is_none());
        assert!(SecretList::parse(" , ,").is_none());
        assert!(Secret::new("   ").is_none());
        let list = SecretList::parse(" a ,,b ").unwrap();
        let values: Vec<&[u8]> = list.iter().map(Secret::expose).collect();
        assert_eq!(values, vec![b"a".as_slice(), b"b".as_slice()]);
    }
}

//! Reading what a receiver needs from a JSON body without building a tree of it.
//!
//! A body is parsed once, as a stream: the members a provider asks for are kept as the raw JSON
//! text the sender wrote (`&RawValue`, borrowed from the body, never copied); every other member
//! is checked for syntax and skipped without allocating (`IgnoredAny`). Memory is therefore a few
//! words per requested member whatever the body holds: a 10 MiB body of `[0,0,0,…]` costs what a
//! 100-byte one does, where a `serde_json::Value` of it took over 300 MB (docs/design.md
//! "Memory"). Nesting deeper than serde_json's limit (128) is refused as malformed.
//!
//! The payload itself then travels as the body's own bytes ([`crate::envelope::Payload::Json`]).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// One JSON value as the sender wrote it: its text from the first character of the value to the
/// last, byte for byte (`1.10` stays `1.10`, keys keep their order, integers of any length keep
/// every digit, whitespace inside is kept). JSON whitespace around the value is not part of it.
/// Serialized as that text, unquoted: an envelope carries the payload inside its own JSON.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// `bytes` as one JSON value (checked: any valid JSON text), or where it breaks.
    pub fn from_slice(bytes: &[u8]) -> Result<RawJson, serde_json::Error> {
        serde_json::from_slice(bytes).map(RawJson)
    }

    /// Checked JSON text, moved in without a copy when it has no surrounding whitespace.
    pub fn from_string(text: String) -> Result<RawJson, serde_json::Error> {
        RawValue::from_string(text).map(RawJson)
    }

    /// The value serialized once (for JSON built here, never for what a sender sent).
    pub fn from_value<T: serde::Serialize + ?Sized>(
        value: &T,
    ) -> Result<RawJson, serde_json::Error> {
        serde_json::value::to_raw_value(value).map(RawJson)
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }

    pub fn raw(&self) -> &RawValue {
        &self.0
    }

    /// The value read into a typed model (or a `serde_json::Value`).
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// How many bytes the text is.
    pub fn len(&self) -> usize {
        self.0.get().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &RawJson) -> bool {
        self.get() == other.get()
    }
}

impl Eq for RawJson {}

/// The same value (not the same bytes): for tests and tools that build what they compare.
impl PartialEq<serde_json::Value> for RawJson {
    fn eq(&self, other: &serde_json::Value) -> bool {
        self.parse::<serde_json::Value>().is_ok_and(|v| v == *other)
    }
}

/// A value built here, written once (compact).
impl From<serde_json::Value> for RawJson {
    fn from(value: serde_json::Value) -> RawJson {
        // A Value always serializes.
        RawJson::from_value(&value).expect("a Value serializes")
    }
}

/// Sizes, never content: a payload carries personal data.
impl fmt::Debug for RawJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawJson({} bytes)", self.len())
    }
}

/// Why a body is not a JSON object: named by position only, never by content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAnObject {
    #[error("body is not valid JSON (line {line}, column {column})")]
    Syntax { line: usize, column: usize },
    #[error("body is not a JSON object")]
    Shape,
    #[error("body nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// An object reader's error: the wrong kind of value (serde's "data" errors, the only ones
/// a reader of raw text and skipped members can raise), or broken JSON.
impl From<serde_json::Error> for NotAnObject {
    fn from(e: serde_json::Error) -> Self {
        match e.classify() {
            serde_json::error::Category::Data => NotAnObject::Shape,
            _ => NotAnObject::Syntax {
                line: e.line(),
                column: e.column(),
            },
        }
    }
}

/// The members of one JSON object that a reader asked for, by name, each as the raw JSON text
/// of its value. A member named twice keeps its last value (as `serde_json::Value` does).
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    names: Vec<String>,
    values: Vec<Option<&'a RawValue>>,
}

/// The first character of a JSON value: what kind of value it is, without parsing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

pub fn kind(raw: &RawValue) -> Kind {
    match raw.get().as_bytes().first() {
        Some(b'n') => Kind::Null,
        Some(b't' | b'f') => Kind::Bool,
        Some(b'"') => Kind::String,
        Some(b'[') => Kind::Array,
        Some(b'{') => Kind::Object,
        _ => Kind::Number,
    }
}

/// Reads `names` from the JSON object `json` (the whole text must be one object, surrounding
/// whitespace allowed).
pub fn fields<'a>(json: &'a [u8], names: &[&str]) -> Result<Fields<'a>, NotAnObject> {
    if !depth_within_limit(json) {
        return Err(NotAnObject::TooDeep);
    }
    let mut de = serde_json::Deserializer::from_slice(json);
    let values = Members { names }
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(NotAnObject::from)?;
    Ok(Fields {
        names: names.iter().map(|n| (*n).to_owned()).collect(),
        values,
    })
}

impl<'a> Fields<'a> {
    /// The member's raw value, `null` included; `None` when absent or not asked for.
    pub fn raw(&self, name: &str) -> Option<&'a RawValue> {
        let i = self.names.iter().position(|n| *n == name)?;
        self.values[i]
    }

    /// The member's kind; `None` when absent.
    pub fn kind(&self, name: &str) -> Option<Kind> {
        self.raw(name).map(kind)
    }

    /// The member as text when it is a non-empty string.
    pub fn str(&self, name: &str) -> Option<Cow<'a, str>> {
        string(self.raw(name)?).filter(|s| !s.is_empty())
    }

    /// The member as an id or a type: a string that is not blank, or a number as written.
    pub fn scalar(&self, name: &str) -> Option<String> {
        scalar(self.raw(name)?)
    }

    /// The member, when it is an object, read for `names`. `Ok(None)` when absent or `null`;
    /// `Err` when it is something else.
    pub fn object(&self, name: &str, names: &[&str]) -> Result<Option<Fields<'a>>, Kind> {
        match self.raw(name) {
            None => Ok(None),
            Some(raw) => match kind(raw) {
                Kind::Null => Ok(None),
                Kind::Object => Ok(fields(raw.get().as_bytes(), names).ok()),
                other => Err(other),
            },
        }
    }
}

/// A JSON string's text (unescaped; borrowed when it holds no escape). `None` for any other
/// kind of value.
pub fn string(raw: &RawValue) -> Option<Cow<'_, str>> {
    if kind(raw) != Kind::String {
        return None;
    }
    match serde_json::from_str::<&str>(raw.get()) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(raw.get())
            .ok()
            .map(Cow::Owned),
    }
}

/// A value as an id or a type: a string that is not blank, or a number exactly as written
/// (`1.10` stays `1.10`; an integer beyond 64 bits keeps every digit).
pub fn scalar(raw: &RawValue) -> Option<String> {
    match kind(raw) {
        Kind::String => string(raw)
            .filter(|s| !s.trim().is_empty())
            .map(Cow::into_owned),
        Kind::Number => Some(raw.get().to_owned()),
        _ => None,
    }
}

/// The value at a JSON pointer (RFC 6901: `/a/0/b`, `~1` for `/`, `~0` for `~`), found by
/// reading one level at a time, each level as [`fields`] reads it. `None` when any step is
/// missing or of the wrong kind.
pub fn pointer<'a>(root: &'a RawValue, pointer: &str) -> Option<&'a RawValue> {
    if pointer.is_empty() {
        return Some(root);
    }
    let mut at = root;
    for token in pointer.strip_prefix('/')?.split('/') {
        let token = token.replace("~1", "/").replace("~0", "~");
        at = match kind(at) {
            Kind::Object => fields(at.get().as_bytes(), &[token.as_str()])
                .ok()?
                .raw(&token)?,
            Kind::Array => {
                let index: usize = token.parse().ok()?;
                element(at, index)?
            }
            _ => return None,
        };
    }
    Some(at)
}

/// Element `index` of a JSON array, the others skipped without allocating.
fn element(array: &RawValue, index: usize) -> Option<&RawValue> {
    let mut de = serde_json::Deserializer::from_str(array.get());
    Nth { index }.deserialize(&mut de).ok().flatten()
}

/// Why [`elements`] refused a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAList {
    /// Not an array: what it is.
    Kind(Kind),
    /// More elements than allowed: counting stops at the first one over.
    TooMany,
}

/// The elements of a JSON array as raw text, in order; refused past `max` elements before any
/// more are read.
pub fn elements(raw: &RawValue, max: usize) -> Result<Vec<&RawValue>, NotAList> {
    match kind(raw) {
        Kind::Array => {}
        other => return Err(NotAList::Kind(other)),
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    let list = Upto { max }
        .deserialize(&mut de)
        .map_err(|_| NotAList::Kind(Kind::Array))?;
    list.ok_or(NotAList::TooMany)
}

/// Writes the members of the JSON object `json` for which `keep(name, value)` holds into `out`,
/// as `"name":value` separated by commas, in the order sent, each value as the sender wrote it
/// (names are written as serde_json writes strings). Nothing else is kept: memory is `out`.
pub fn write_members(
    json: &[u8],
    out: &mut String,
    keep: &mut dyn FnMut(&str, &RawValue) -> bool,
) -> Result<(), NotAnObject> {
    let mut de = serde_json::Deserializer::from_slice(json);
    Writer { out, keep }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(NotAnObject::from)
}

/// The object reader behind [`write_members`].
struct Writer<'o, 'k> {
    out: &'o mut String,
    keep: &'k mut dyn FnMut(&str, &RawValue) -> bool,
}

impl<'de> DeserializeSeed<'de> for Writer<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Writer<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let value = map.next_value::<&'de RawValue>()?;
            if (self.keep)(&key, value) {
                if !self.out.is_empty() {
                    self.out.push(',');
                }
                self.out
                    .push_str(&serde_json::Value::from(key.as_ref()).to_string());
                self.out.push(':');
                self.out.push_str(value.get());
            }
        }
        Ok(())
    }
}

/// serde_json's nesting limit, which a tree of the body would have hit: deeper bodies are
/// refused as before, although reading raw text has no such limit of its own.
pub const MAX_DEPTH: usize = 128;

/// Whether `json` nests no deeper than [`MAX_DEPTH`]: one pass over the bytes, brackets counted
/// outside strings. Syntax is not checked here.
pub fn depth_within_limit(json: &[u8]) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in json {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Compact JSON with every object's members sorted by name, at every level, whatever order and
/// spacing they arrived in: stable bytes to hash where a provider sends no id. Strings and
/// numbers are written as `serde_json::Value` writes them, so the bytes are those of the tree
/// this replaced (`{"b":1.10,"a":"\u00e9"}` gives `{"a":"é","b":1.1}`). Written from the raw
/// text one level at a time: memory is the widest object's member list, never a tree.
///
/// A number the tree could not hold (`1e400`: the tree refused such a body) leaves the text as
/// written, whitespace and order included: stable on every retry of the same bytes.
pub fn canonical(raw: &RawValue) -> String {
    let mut out = Vec::with_capacity(raw.get().len());
    match write_canonical(raw, &mut out) {
        // Every piece written is JSON text that serde_json wrote: UTF-8.
        Ok(()) => String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        Err(_) => raw.get().to_owned(),
    }
}

/// SHA-256 (lowercase hex) of [`canonical`]`(raw)`, hashed as it is written: the canonical text
/// is never held, so a 10 MiB payload costs its widest object's member list, not 10 MiB more.
pub fn canonical_sha256(raw: &RawValue) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    match write_canonical(raw, &mut hash) {
        Ok(()) => hex::encode(hash.finalize()),
        Err(_) => hex::encode(sha2::Sha256::digest(raw.get().as_bytes())),
    }
}

/// Where canonical text goes: a buffer, or a hash.
trait Sink {
    fn push(&mut self, text: &[u8]);
}

impl Sink for Vec<u8> {
    fn push(&mut self, text: &[u8]) {
        self.extend_from_slice(text);
    }
}

impl Sink for sha2::Sha256 {
    fn push(&mut self, text: &[u8]) {
        sha2::Digest::update(self, text);
    }
}

/// A sink as `io::Write`, for serde_json to write a string into it as it escapes it.
struct SinkWriter<'o>(&'o mut dyn Sink);

impl std::io::Write for SinkWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.push(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn write_canonical(raw: &RawValue, out: &mut dyn Sink) -> Result<(), serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    Canon {
        out,
        depth: 0,
        comma: false,
    }
    .deserialize(&mut de)
}

/// The writer behind [`canonical`].
struct Canon<'o> {
    out: &'o mut dyn Sink,
    /// Objects read so far on the way here: each object's members are read by a deserializer
    /// of their own, whose nesting limit starts afresh, so the limit is kept here.
    depth: usize,
    /// An array element after the first: a comma goes before it, once it is known to exist.
    comma: bool,
}

impl<'de> DeserializeSeed<'de> for Canon<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.comma {
            self.out.push(b",");
        }
        d.deserialize_any(Canon {
            comma: false,
            ..self
        })
    }
}

impl Canon<'_> {
    fn scalar(self, value: serde_json::Value) {
        self.out.push(value.to_string().as_bytes());
    }

    /// A string escaped as serde_json escapes it, written as it goes: a 10 MiB string is not
    /// copied.
    fn string(self, text: &str) {
        // Writing to a sink cannot fail.
        let _ = serde_json::to_writer(SinkWriter(self.out), text);
    }
}

impl<'de> Visitor<'de> for Canon<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.push(b"null");
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.scalar(v.into());
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.scalar(v.into());
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.scalar(v.into());
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.scalar(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.string(v);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.out.push(b"[");
        let mut comma = false;
        while seq
            .next_element_seed(Canon {
                out: &mut *self.out,
                depth: self.depth,
                comma,
            })?
            .is_some()
        {
            comma = true;
        }
        self.out.push(b"]");
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom("nested too deep"));
        }
        let mut members: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::new();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            members.push((key, map.next_value::<&'de RawValue>()?));
        }
        // Sorted by name (stable: a repeated name's values stay in the order sent), then the
        // last of a repeated name kept, as in the tree. n log n, whatever the repetitions.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        let mut members = members.into_iter().peekable();
        let mut kept = Vec::new();
        while let Some(member) = members.next() {
            if members.peek().is_none_or(|next| next.0 != member.0) {
                kept.push(member);
            }
        }
        let members = kept;
        self.out.push(b"{");
        for (i, (key, value)) in members.into_iter().enumerate() {
            if i > 0 {
                self.out.push(b",");
            }
            let _ = serde_json::to_writer(SinkWriter(&mut *self.out), key.as_ref());
            self.out.push(b":");
            let mut de = serde_json::Deserializer::from_str(value.get());
            Canon {
                out: &mut *self.out,
                depth: self.depth + 1,
                comma: false,
            }
            .deserialize(&mut de)
            .map_err(de::Error::custom)?;
        }
        self.out.push(b"}");
        Ok(())
    }
}

/// A member name, borrowed when it holds no escape.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The object reader behind [`fields`].
struct Members<'n, 'a> {
    names: &'n [&'a str],
}

impl<'de> DeserializeSeed<'de> for Members<'_, '_> {
    type Value = Vec<Option<&'de RawValue>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Members<'_, '_> {
    type Value = Vec<Option<&'de RawValue>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values = vec![None; self.names.len()];
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            match self.names.iter().position(|n| *n == key) {
                Some(i) => values[i] = Some(map.next_value::<&'de RawValue>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(values)
    }
}

/// The array reader behind [`element`].
struct Nth {
    index: usize,
}

impl<'de> DeserializeSeed<'de> for Nth {
    type Value = Option<&'de RawValue>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Nth {
    type Value = Option<&'de RawValue>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut i = 0;
        loop {
            if i == self.index {
                match seq.next_element::<&'de RawValue>()? {
                    Some(v) => found = Some(v),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }
}

/// The array reader behind [`elements`]: `None` past `max` elements.
struct Upto {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for Upto {
    type Value = Option<Vec<&'de RawValue>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Upto {
    type Value = Option<Vec<&'de RawValue>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::new();
        while let Some(v) = seq.next_element::<&'de RawValue>()? {
            if list.len() == self.max {
                return Ok(None);
            }
            list.push(v);
        }
        Ok(Some(list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_members_come_back_as_written_and_the_rest_is_skipped() {
        let body = br#" {"id": "e-1", "n": 1.10, "big": 123456789012345678901234567890,
            "skip": [0, {"x": [1, 2]}], "o": {"id": 7, "t": "a\"b"}, "id": "e-2"} "#;
        let f = fields(body, &["id", "n", "big", "o", "absent"]).unwrap();
        assert_eq!(
            f.str("id").as_deref(),
            Some("e-2"),
            "the last of a repeated name"
        );
        assert_eq!(f.raw("n").unwrap().get(), "1.10");
        assert_eq!(f.scalar("big").unwrap(), "123456789012345678901234567890");
        assert_eq!(f.kind("o"), Some(Kind::Object));
        assert!(f.raw("absent").is_none());
        assert!(f.raw("skip").is_none(), "not asked for");
        let o = f.object("o", &["id", "t"]).unwrap().unwrap();
        assert_eq!(o.scalar("id").unwrap(), "7");
        assert_eq!(o.str("t").as_deref(), Some("a\"b"));
        assert_eq!(f.object("n", &["x"]).unwrap_err(), Kind::Number);
    }

    #[test]
    fn non_objects_and_broken_json_are_told_apart_by_position_only() {
        assert_eq!(fields(b"[1]", &["a"]).unwrap_err(), NotAnObject::Shape);
        assert_eq!(fields(b"null", &["a"]).unwrap_err(), NotAnObject::Shape);
        assert!(matches!(
            fields(br#"{"a": "alex@example.com""#, &["a"]).unwrap_err(),
            NotAnObject::Syntax { line: 1, .. }
        ));
        assert!(matches!(
            fields(br#"{"a": 1} x"#, &["a"]).unwrap_err(),
            NotAnObject::Syntax { .. }
        ));
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(
            fields(deep.as_bytes(), &["a"]).unwrap_err(),
            NotAnObject::TooDeep
        );
        let at_limit = format!("{{\"a\":{}{}}}", "[".repeat(127), "]".repeat(127));
        assert!(fields(at_limit.as_bytes(), &["a"]).is_ok());
        let in_strings = format!("{{\"a\":\"{}\\\"{}\"}}", "[".repeat(200), "{".repeat(200));
        assert!(
            fields(in_strings.as_bytes(), &["a"]).is_ok(),
            "brackets in strings"
        );
        // Objects nested past the limit are written as sent, not recursed into.
        let objects = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
        let raw = RawValue::from_string(objects.clone()).unwrap();
        assert_eq!(canonical(&raw), objects);
        let escaped_key = br#"{"\u0069d": "x"}"#;
        assert_eq!(
            fields(escaped_key, &["id"]).unwrap().str("id").as_deref(),
            Some("x")
        );
    }

    #[test]
    fn canonical_json_sorts_members_at_every_level_and_writes_scalars_as_the_tree_did() {
        let a: &RawValue =
            serde_json::from_str(r#"{"b":1,"a":{"y":[{"q":1,"p":"x"}],"x":null}}"#).unwrap();
        let b: &RawValue = serde_json::from_str(
            r#" { "a" : {"x":null,"y":[{"p":"\u0078","q":1.0e0}]},"b":1 , "b": 1}"#,
        )
        .unwrap();
        assert_eq!(
            canonical(a),
            r#"{"a":{"x":null,"y":[{"p":"x","q":1}]},"b":1}"#
        );
        assert_eq!(
            canonical(b),
            r#"{"a":{"x":null,"y":[{"p":"x","q":1.0}]},"b":1}"#
        );
        let repeated: &RawValue =
            serde_json::from_str(r#"{"k": 1, "j": 0, "k": 2, "k": [3]}"#).unwrap();
        assert_eq!(
            canonical(repeated),
            r#"{"j":0,"k":[3]}"#,
            "the last value of a name"
        );
        let wide = format!(
            "{{{}}}",
            (0..200_000)
                .map(|i| format!("\"k{}\":{i}", i % 1000))
                .collect::<Vec<_>>()
                .join(",")
        );
        let wide = RawValue::from_string(wide).unwrap();
        assert_eq!(
            canonical(&wide).matches(':').count(),
            1000,
            "200,000 members, n log n"
        );
        let huge: &RawValue = serde_json::from_str(r#"{"b": 1e400, "a": 1}"#).unwrap();
        assert_eq!(canonical(huge), r#"{"b": 1e400, "a": 1}"#);
        for raw in [a, b, huge] {
            let hashed = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
                canonical(raw).as_bytes(),
            ));
            assert_eq!(canonical_sha256(raw), hashed, "hashed as written");
        }
        // Byte for byte what serde_json's tree wrote (the keys it was hashed with before).
        for text in [
            r#"{"n":[1.10,-0,1e300,12345678901234567890123,-9223372036854775809,0.1],"s":"é\u00e9\n\/"}"#,
            r#"[[],{},[{}],"",true,false,null]"#,
            r#"{"z":{"b":[1,{"d":2,"c":3}],"a":0},"é":1,"e":2}"#,
        ] {
            let raw: &RawValue = serde_json::from_str(text).unwrap();
            let tree: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(canonical(raw), tree_canonical(&tree), "{text}");
        }
    }

    /// The tree-based canonical form this module replaced, kept as the reference.
    fn tree_canonical(value: &serde_json::Value) -> String {
        use serde_json::Value;
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let members: Vec<String> = keys
                    .into_iter()
                    .map(|k| format!("{}:{}", Value::String(k.clone()), tree_canonical(&map[k])))
                    .collect();
                format!("{{{}}}", members.join(","))
            }
            Value::Array(items) => format!(
                "[{}]",
                items
                    .iter()
                    .map(tree_canonical)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            scalar => scalar.to_string(),
        }
    }

    #[test]
    fn members_are_written_as_sent_and_filtered() {
        let body = br#"{"a": 1.10, "skip": [0], "b": {"x" : 2}, "a": 3}"#;
        let mut out = String::new();
        write_members(body, &mut out, &mut |k, _| k != "skip").unwrap();
        assert_eq!(out, r#""a":1.10,"b":{"x" : 2},"a":3"#);
        assert_eq!(
            write_members(b"[1]", &mut String::new(), &mut |_, _| true).unwrap_err(),
            NotAnObject::Shape
        );
    }

    #[test]
    fn pointers_walk_objects_and_arrays() {
        let root: &RawValue =
            serde_json::from_str(r#"{"a": [{"b/c": 1}, {"d~e": "x"}], "n": 2}"#).unwrap();
        assert_eq!(pointer(root, "/a/0/b~1c").unwrap().get(), "1");
        assert_eq!(pointer(root, "/a/1/d~0e").unwrap().get(), r#""x""#);
        assert!(pointer(root, "/a/2").is_none());
        assert!(pointer(root, "/n/0").is_none());
        assert!(pointer(root, "a").is_none(), "a pointer starts with /");
        assert_eq!(pointer(root, "").unwrap().get(), root.get());
        let list: &RawValue = serde_json::from_str(r#"[ {"a": 1} , 2.50 ]"#).unwrap();
        let items = elements(list, 2).unwrap();
        assert_eq!(
            items.iter().map(|v| v.get()).collect::<Vec<_>>(),
            [r#"{"a": 1}"#, "2.50"]
        );
        assert_eq!(elements(list, 1).unwrap_err(), NotAList::TooMany);
        assert_eq!(elements(root, 9).unwrap_err(), NotAList::Kind(Kind::Object));
    }
}

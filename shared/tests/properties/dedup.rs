//! Dedup keys are injective: two different (provider, tenant, event key) triples never share a
//! claim, however their tenants and ids are spelled (`#`, `%`, `:`, empty strings, ids that
//! spell a hash key, composite keys split differently, keys long enough to be hashed).

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use shared::pipeline::dedup_key;
use shared::provider::EventKey;

use crate::config;
use crate::harness::PROVIDERS;

const HEX: &str = "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881";

/// Text made of the pieces a dedup key is made of: separators, their escapes, the namespace
/// words, a hash, and a run long enough to push the key past its readable length.
fn text() -> impl Strategy<Value = String> {
    let atom = select(vec![
        "#",
        "%",
        ":",
        "%23",
        "%25",
        "#id#",
        "id",
        "sha256",
        "sha256#",
        "sha256-of-key:",
        "a",
        "b",
        "1",
        HEX,
    ])
    .prop_map(str::to_owned);
    let atom = prop_oneof![20 => atom, 1 => Just("k".repeat(700))];
    vec(atom, 0..4).prop_map(|atoms| atoms.concat())
}

/// A tenant as providers give one: none, or a non-empty id (every provider drops empty ones).
fn tenant() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(
        text().prop_filter("providers never name an empty tenant", |t| !t.is_empty()),
    )
}

fn key() -> impl Strategy<Value = EventKey> {
    prop_oneof![
        3 => vec(text(), 0..4).prop_map(EventKey::Id),
        1 => prop_oneof![Just(HEX.to_owned()), text()].prop_map(EventKey::Hash),
    ]
}

type Triple = (&'static str, Option<String>, EventKey);

fn triple() -> impl Strategy<Value = Triple> {
    (select(PROVIDERS.to_vec()), tenant(), key())
}

fn dedup((provider, tenant, key): &Triple) -> String {
    dedup_key(provider, tenant.as_deref(), key)
}

/// Two triples that differ only in how one text is split between tenant and key parts, or
/// between key parts: the shapes most likely to collide.
fn resplit() -> impl Strategy<Value = (Triple, Triple)> {
    (
        select(PROVIDERS.to_vec()),
        vec(text(), 1..5),
        any::<prop::sample::Index>(),
        any::<bool>(),
    )
        .prop_map(|(provider, pieces, at, tenant_first)| {
            let joined = |p: &[String], sep: &str| p.join(sep);
            let cut = at.index(pieces.len());
            let a: Triple = if tenant_first && !pieces[0].is_empty() {
                (
                    provider,
                    Some(pieces[0].clone()),
                    EventKey::Id(pieces[1..].to_vec()),
                )
            } else {
                (provider, None, EventKey::Id(pieces.clone()))
            };
            let b: Triple = (
                provider,
                None,
                EventKey::Id(vec![
                    joined(&pieces[..cut], "#"),
                    joined(&pieces[cut..], ":"),
                ]),
            );
            (a, b)
        })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn different_tenants_and_event_keys_never_share_a_dedup_key(
        triples in vec(triple(), 2..8),
    ) {
        for (i, a) in triples.iter().enumerate() {
            for b in &triples[i + 1..] {
                if a != b {
                    prop_assert_ne!(dedup(a), dedup(b), "{:?} and {:?}", a, b);
                } else {
                    prop_assert_eq!(dedup(a), dedup(b));
                }
            }
        }
    }

    #[test]
    fn the_same_text_split_differently_never_shares_a_dedup_key((a, b) in resplit()) {
        prop_assume!(a != b);
        prop_assert_ne!(dedup(&a), dedup(&b), "{:?} and {:?}", a, b);
    }

    #[test]
    fn an_id_that_spells_a_hash_key_is_not_that_hash_key(
        provider in select(PROVIDERS.to_vec()),
        tenant in tenant(),
        hex in prop_oneof![Just(HEX.to_owned()), "[0-9a-f]{64}"],
    ) {
        let hash = dedup_key(provider, tenant.as_deref(), &EventKey::Hash(hex.clone()));
        for id in [
            EventKey::id(format!("sha256#{hex}")),
            EventKey::id(hex.clone()),
            EventKey::parts(["sha256".to_owned(), hex.clone()]),
        ] {
            prop_assert_ne!(dedup_key(provider, tenant.as_deref(), &id), hash.clone());
        }
    }
}

#[test]
fn no_tenant_and_an_empty_tenant_get_different_dedup_keys() {
    let key = EventKey::id("e1");
    assert_ne!(
        dedup_key("trybe", None, &key),
        dedup_key("trybe", Some(""), &key)
    );
}

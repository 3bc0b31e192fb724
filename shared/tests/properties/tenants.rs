//! Tenant maps: a proof made with one tenant's secret never permits another tenant, whether the
//! secret is a signing key, a URL token or a Basic password, and a receiver configured with a
//! map refuses a body naming another tenant than the signer's.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use lambda_http::http::{HeaderMap, HeaderValue, Method};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::json;

use shared::clock::FixedClock;
use shared::config::{Env, Settings};
use shared::providers;
use shared::queue::MemoryQueue;
use shared::secret::{Secret, SecretList};
use shared::store::MemoryClaims;
use shared::verify::{self, BasicPair, Verified};
use shared::Receiver;

use crate::config;
use crate::harness::NOW_MS;

/// Tenant → its secrets: 2-4 tenants, 1-3 secrets each, no secret shared between tenants.
fn tenant_map() -> impl Strategy<Value = BTreeMap<String, Vec<String>>> {
    btree_map(
        "[a-z0-9][a-z0-9:#%_-]{0,11}",
        vec("[!-~]{1,24}", 1..4),
        2..5,
    )
    .prop_filter("each secret belongs to one tenant", |map| {
        let mut all: Vec<&String> = map.values().flatten().collect();
        let n = all.len();
        all.sort();
        all.dedup();
        all.len() == n
    })
}

fn config_of(map: &BTreeMap<String, Vec<String>>) -> String {
    serde_json::to_string(map).unwrap()
}

fn assert_speaks_only_for(proof: &Verified, tenant: &str, map: &BTreeMap<String, Vec<String>>) {
    assert!(proof.permits(Some(tenant)), "{tenant}'s own proof");
    assert_eq!(proof.tenant(), Some(tenant));
    assert!(
        !proof.permits(None),
        "a tenant's proof permits a request naming none"
    );
    for other in map.keys().filter(|t| *t != tenant) {
        assert!(
            !proof.permits(Some(other)),
            "{tenant}'s proof permits {other}"
        );
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn a_tenants_signature_token_or_password_never_permits_another_tenant(
        map in tenant_map(),
        body in vec(any::<u8>(), 0..64),
    ) {
        let list = SecretList::from_config(&config_of(&map)).unwrap().unwrap();
        let pairs: Vec<BasicPair> = map
            .iter()
            .enumerate()
            .flat_map(|(i, (tenant, secrets))| {
                // Tenant ids may hold ':', which a Basic user cannot.
                secrets.iter().map(move |s| BasicPair {
                    tenant: Some(tenant.clone()),
                    user: Secret::new(&format!("user-{i}")).unwrap(),
                    password: Secret::new(s).unwrap(),
                })
            })
            .collect();
        for (i, (tenant, secrets)) in map.iter().enumerate() {
            for secret in secrets {
                let key = Secret::new(secret).unwrap();
                let signature = verify::sign_hex(&key, &[&body]);
                let by_hmac = verify::hmac_sha256_hex(&list, &[&body], &signature).unwrap();
                assert_speaks_only_for(&by_hmac, tenant, &map);
                let by_token = verify::token(&list, secret.as_bytes()).unwrap();
                assert_speaks_only_for(&by_token, tenant, &map);
                let header = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("user-{i}:{secret}"))
                );
                let by_basic = verify::basic(&pairs, Some(&header)).unwrap();
                assert_speaks_only_for(&by_basic, tenant, &map);
                // Two credentials of two tenants never combine.
                for (other, other_secrets) in map.iter().filter(|(t, _)| *t != tenant) {
                    let theirs = verify::token(&list, other_secrets[0].as_bytes()).unwrap();
                    prop_assert!(by_token.clone().and(theirs).is_err(), "{} and {}", tenant, other);
                }
            }
        }
    }

    #[test]
    fn a_value_shared_by_tenants_permits_exactly_those_tenants(
        map in tenant_map(),
        shared_by in proptest::sample::subsequence((0..4usize).collect::<Vec<_>>(), 2..4),
    ) {
        let tenants: Vec<&String> = map.keys().collect();
        let sharing: Vec<&String> = shared_by.iter().filter_map(|&i| tenants.get(i).copied()).collect();
        prop_assume!(sharing.len() >= 2);
        let mut with_shared = map.clone();
        for t in &sharing {
            with_shared.get_mut(*t).unwrap().push("shared-value-0001".into());
        }
        let list = SecretList::from_config(&config_of(&with_shared)).unwrap().unwrap();
        let proof = verify::token(&list, b"shared-value-0001").unwrap();
        for t in &tenants {
            prop_assert_eq!(proof.permits(Some(t.as_str())), sharing.contains(t), "{}", t);
        }
        prop_assert_eq!(proof.tenant(), None, "a shared value names no single tenant");
    }

    #[test]
    fn a_receiver_with_a_tenant_map_refuses_a_body_naming_another_tenant(
        map in tenant_map(),
        signer in any::<prop::sample::Index>(),
        named in any::<prop::sample::Index>(),
        tribe in any::<bool>(),
    ) {
        let tenants: Vec<&String> = map.keys().collect();
        let (signer, named) = (signer.get(&tenants), named.get(&tenants));
        let (provider, var, field) = if tribe {
            ("tribe", "TRIBE_SIGNING_SECRET", "networkId")
        } else {
            ("trybe", "TRYBE_SIGNING_SECRET", "site_id")
        };
        let body = json!({
            "id": "evt-1", "event": "customer.created", "type": "SUBSCRIPTION",
            "data": {"id": "evt-1", "name": "member.verified"}, field: named,
        })
        .to_string();
        let key = Secret::new(&map[*signer][0]).unwrap();
        let timestamp = NOW_MS.to_string();
        let mut headers = HeaderMap::new();
        if tribe {
            let signature = providers::tribe::sign(&key, &timestamp, body.as_bytes());
            headers.insert("x-bettermode-signature", HeaderValue::from_str(&signature).unwrap());
            headers.insert("x-bettermode-request-timestamp", HeaderValue::from_str(&timestamp).unwrap());
        } else {
            let signature = providers::trybe::sign(&key, body.as_bytes());
            headers.insert("signature", HeaderValue::from_str(&signature).unwrap());
        }
        let map_config = config_of(&map);
        let env = Env::from_pairs([
            (var, map_config.as_str()),
            ("EVENTS_TABLE", "t"),
            ("EVENTS_QUEUE_URL", "q"),
        ]);
        let queue = Arc::new(MemoryQueue::default());
        let receiver = Receiver::new(
            providers::from_env(provider, &env).unwrap(),
            Arc::new(MemoryClaims::default()),
            queue.clone(),
            Settings::from_env(&env).unwrap(),
            Arc::new(FixedClock::at_millis(NOW_MS)),
        );
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let answer = runtime.block_on(receiver.answer_parts(
            &Method::POST, &headers, "/", None, body.as_bytes(),
        ));
        if signer == named {
            prop_assert_eq!(answer.status().as_u16(), 200, "{:?}", answer);
            prop_assert_eq!(queue.messages().len(), 1);
        } else {
            prop_assert_eq!(answer.status().as_u16(), 401, "{:?}", answer);
            prop_assert!(queue.messages().is_empty());
        }
    }
}

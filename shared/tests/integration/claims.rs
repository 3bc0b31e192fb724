//! One contract for `ClaimStore`, run against the in-memory store and against DynamoDB on moto.
//! Both take the claim condition from one definition (`store::CLAIM_CONDITION`); each case here
//! runs twice, so a clause missing from either store, or a guard missing from either adapter,
//! fails on that store by name (`claims::dynamodb::…`, `claims::memory::…`).

use std::time::Duration;

use shared::store::{Claim, ClaimOutcome, ClaimStore, Finish, Record, Status};
use time::OffsetDateTime;

const T0: i64 = 1_700_000_000_000;
const LEASE: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(3600);

fn at(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap()
}

fn pk() -> String {
    format!("trybe#site#id#{}", uuid::Uuid::new_v4().simple())
}

fn claim(pk: &str, ms: i64, token: &str) -> Claim {
    Claim {
        pk: pk.into(),
        pending: Status::Received,
        event_type: "basket.submitted".into(),
        fingerprint: "content-1".into(),
        now: at(ms),
        lease: LEASE,
        ttl: TTL,
        token: token.into(),
    }
}

fn processing(pk: &str, ms: i64, token: &str) -> Claim {
    Claim {
        pending: Status::Processing,
        lease: Duration::from_secs(300),
        ..claim(&format!("processed#{pk}"), ms, token)
    }
}

fn enqueued() -> Finish {
    Finish::Enqueued {
        message_id: Some("msg-1".into()),
        first: None,
    }
}

async fn record(store: &dyn ClaimStore, pk: &str) -> Option<Record> {
    store.record(pk).await.expect("read")
}

async fn a_new_event_is_claimed_with_its_lease_and_expiry(store: &dyn ClaimStore) {
    let pk = pk();
    assert_eq!(
        store.claim(&claim(&pk, T0, "a")).await.unwrap(),
        ClaimOutcome::New
    );
    let r = record(store, &pk).await.expect("stored");
    assert_eq!(r.status, Status::Received);
    assert_eq!(r.lease_until_ms, T0 + 30_000);
    assert_eq!(r.expires_at, T0 / 1000 + 3600);
    assert_eq!(
        (r.token.as_str(), r.fingerprint.as_str()),
        ("a", "content-1")
    );
}

async fn a_live_lease_is_in_flight_with_the_time_it_has_left(store: &dyn ClaimStore) {
    let pk = pk();
    store.claim(&claim(&pk, T0, "a")).await.unwrap();
    assert_eq!(
        store.claim(&claim(&pk, T0 + 10_500, "b")).await.unwrap(),
        ClaimOutcome::InFlight {
            retry_after: Duration::from_millis(19_500),
            conflict: false
        }
    );
    // At the last millisecond of the lease it is still in flight (at least a second to wait).
    assert_eq!(
        store.claim(&claim(&pk, T0 + 30_000, "b")).await.unwrap(),
        ClaimOutcome::InFlight {
            retry_after: Duration::from_secs(1),
            conflict: false
        }
    );
    assert_eq!(record(store, &pk).await.unwrap().token, "a");
}

async fn a_lapsed_lease_is_taken_over_and_the_old_holder_can_neither_finish_nor_release(
    store: &dyn ClaimStore,
) {
    let pk = pk();
    store.claim(&claim(&pk, T0, "a")).await.unwrap();
    let first = record(store, &pk).await.unwrap();
    // The taker learns what it replaced (the receiver then asks the processor's record).
    assert_eq!(
        store.claim(&claim(&pk, T0 + 30_001, "b")).await.unwrap(),
        ClaimOutcome::TakenOver { previous: first }
    );
    store
        .finish(&pk, "a", &enqueued(), at(T0 + 30_002))
        .await
        .unwrap();
    store.release(&pk, "a").await.unwrap();
    let r = record(store, &pk).await.expect("still there");
    assert_eq!((r.status, r.token.as_str()), (Status::Received, "b"));
    store
        .finish(&pk, "b", &enqueued(), at(T0 + 30_003))
        .await
        .unwrap();
    assert_eq!(record(store, &pk).await.unwrap().status, Status::Enqueued);
}

async fn finished_claims_are_duplicates_and_other_content_is_a_conflict(store: &dyn ClaimStore) {
    let pk = pk();
    store.claim(&claim(&pk, T0, "a")).await.unwrap();
    store.finish(&pk, "a", &enqueued(), at(T0)).await.unwrap();
    // Long after the lease: a finished claim is never taken over.
    assert_eq!(
        store.claim(&claim(&pk, T0 + 600_000, "b")).await.unwrap(),
        ClaimOutcome::Duplicate {
            status: Status::Enqueued,
            conflict: false
        }
    );
    let other = Claim {
        fingerprint: "content-2".into(),
        ..claim(&pk, T0 + 600_000, "c")
    };
    assert_eq!(
        store.claim(&other).await.unwrap(),
        ClaimOutcome::Duplicate {
            status: Status::Enqueued,
            conflict: true
        }
    );
}

async fn an_expired_claim_is_free_again_before_ttl_deletes_it(store: &dyn ClaimStore) {
    let pk = pk();
    store.claim(&claim(&pk, T0, "a")).await.unwrap();
    store.finish(&pk, "a", &enqueued(), at(T0)).await.unwrap();
    let last_second = T0 + 3_600_000;
    assert!(matches!(
        store.claim(&claim(&pk, last_second, "b")).await.unwrap(),
        ClaimOutcome::Duplicate { .. }
    ));
    assert_eq!(
        store
            .claim(&claim(&pk, last_second + 1_000, "b"))
            .await
            .unwrap(),
        ClaimOutcome::New
    );
    assert_eq!(record(store, &pk).await.unwrap().token, "b");
}

async fn release_needs_the_owners_token(store: &dyn ClaimStore) {
    let pk = pk();
    store.claim(&claim(&pk, T0, "a")).await.unwrap();
    store.release(&pk, "not-a").await.unwrap();
    assert!(
        record(store, &pk).await.is_some(),
        "another token deletes nothing"
    );
    store.release(&pk, "a").await.unwrap();
    assert!(record(store, &pk).await.is_none());
    // Releasing what is already gone is not an error.
    store.release(&pk, "a").await.unwrap();
}

async fn finish_needs_the_owners_token(store: &dyn ClaimStore) {
    let pk = pk();
    store.claim(&claim(&pk, T0, "a")).await.unwrap();
    store
        .finish(&pk, "not-a", &enqueued(), at(T0))
        .await
        .unwrap();
    assert_eq!(record(store, &pk).await.unwrap().status, Status::Received);
    store.finish(&pk, "a", &enqueued(), at(T0)).await.unwrap();
    assert_eq!(record(store, &pk).await.unwrap().status, Status::Enqueued);
}

async fn a_retried_write_that_landed_finds_its_own_claim(store: &dyn ClaimStore) {
    let pk = pk();
    store.claim(&claim(&pk, T0, "a")).await.unwrap();
    assert_eq!(
        store.claim(&claim(&pk, T0 + 5, "a")).await.unwrap(),
        ClaimOutcome::New
    );
}

async fn the_processors_stage_leases_processing_and_keeps_processed(store: &dyn ClaimStore) {
    let event = pk();
    let p = processing(&event, T0, "p1");
    assert_eq!(store.claim(&p).await.unwrap(), ClaimOutcome::New);
    assert_eq!(
        record(store, &p.pk).await.unwrap().status,
        Status::Processing
    );
    assert!(matches!(
        store
            .claim(&processing(&event, T0 + 299_000, "p2"))
            .await
            .unwrap(),
        ClaimOutcome::InFlight { .. }
    ));
    // A receiver-stage claim never takes over a processing record, lease or not.
    let receiver_stage = Claim {
        pk: p.pk.clone(),
        ..claim(&event, T0 + 400_000, "r")
    };
    assert!(matches!(
        store.claim(&receiver_stage).await.unwrap(),
        ClaimOutcome::InFlight { .. }
    ));
    assert!(
        matches!(
            store
                .claim(&processing(&event, T0 + 300_001, "p3"))
                .await
                .unwrap(),
            ClaimOutcome::TakenOver { previous } if previous.token == "p1"
        ),
        "taken over after the processing lease"
    );
    store
        .finish(&p.pk, "p1", &Finish::Processed, at(T0))
        .await
        .unwrap();
    assert_eq!(
        record(store, &p.pk).await.unwrap().status,
        Status::Processing
    );
    store
        .finish(&p.pk, "p3", &Finish::Processed, at(T0))
        .await
        .unwrap();
    assert_eq!(
        store
            .claim(&processing(&event, T0 + 900_000, "p4"))
            .await
            .unwrap(),
        ClaimOutcome::Duplicate {
            status: Status::Processed,
            conflict: false
        }
    );
}

async fn a_takeover_marked_enqueued_gets_the_first_horizon_and_fingerprint_back(
    store: &dyn ClaimStore,
) {
    let pk = pk();
    store.claim(&claim(&pk, T0, "a")).await.unwrap();
    let later = Claim {
        fingerprint: "content-2".into(),
        ..claim(&pk, T0 + 40_000, "b")
    };
    let ClaimOutcome::TakenOver { previous } = store.claim(&later).await.unwrap() else {
        panic!("a lapsed RECEIVED claim is taken over")
    };
    // The takeover moved the horizon and the fingerprint with it.
    assert_eq!(
        record(store, &pk).await.unwrap().expires_at,
        T0 / 1000 + 40 + 3600
    );
    let settle = Finish::Enqueued {
        message_id: None,
        first: Some(previous),
    };
    store
        .finish(&pk, "b", &settle, at(T0 + 40_001))
        .await
        .unwrap();
    let r = record(store, &pk).await.unwrap();
    assert_eq!(
        (
            r.status,
            r.expires_at,
            r.fingerprint.as_str(),
            r.token.as_str()
        ),
        (Status::Enqueued, T0 / 1000 + 3600, "content-1", "b")
    );
    // Its first horizon blocks duplicates, and ends, as the first delivery's did.
    assert!(matches!(
        store.claim(&claim(&pk, T0 + 3_600_000, "c")).await.unwrap(),
        ClaimOutcome::Duplicate {
            status: Status::Enqueued,
            conflict: false
        }
    ));
    assert_eq!(
        store.claim(&claim(&pk, T0 + 3_601_000, "c")).await.unwrap(),
        ClaimOutcome::New
    );
}

async fn an_expired_or_own_record_is_new_not_a_takeover(store: &dyn ClaimStore) {
    let pk = pk();
    store.claim(&claim(&pk, T0, "a")).await.unwrap();
    assert_eq!(
        store.claim(&claim(&pk, T0 + 3_601_000, "b")).await.unwrap(),
        ClaimOutcome::New,
        "a record past its horizon is a new event's, lapsed lease or not"
    );
    assert_eq!(
        store.claim(&claim(&pk, T0 + 3_700_000, "b")).await.unwrap(),
        ClaimOutcome::New,
        "an SDK retry replacing its own write, even past the lease"
    );
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&shared::store::MemoryClaims::default()).await
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test]
                async fn $case() {
                    let stack = crate::helpers::Stack::new().await;
                    let store = shared::store::DynamoClaims::new(stack.ddb.clone(), &stack.table);
                    super::$case(&store).await
                }
            )*
        }
    };
}

contract!(
    a_new_event_is_claimed_with_its_lease_and_expiry,
    a_live_lease_is_in_flight_with_the_time_it_has_left,
    a_lapsed_lease_is_taken_over_and_the_old_holder_can_neither_finish_nor_release,
    finished_claims_are_duplicates_and_other_content_is_a_conflict,
    an_expired_claim_is_free_again_before_ttl_deletes_it,
    release_needs_the_owners_token,
    finish_needs_the_owners_token,
    a_retried_write_that_landed_finds_its_own_claim,
    the_processors_stage_leases_processing_and_keeps_processed,
    a_takeover_marked_enqueued_gets_the_first_horizon_and_fingerprint_back,
    an_expired_or_own_record_is_new_not_a_takeover,
);

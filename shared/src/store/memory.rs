//! In-memory claims for unit tests of the domain logic (same rules as DynamoDB's adapter).

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{
    claimable, new_record, refused, Claim, ClaimOutcome, ClaimStore, Finish, Record, Status,
    StoreError,
};

#[derive(Debug, Default)]
pub struct MemoryClaims {
    records: Mutex<HashMap<String, Record>>,
    /// When set, every call fails (to test the 503 paths).
    pub fail: std::sync::atomic::AtomicBool,
    /// Each claim takes this long (milliseconds of tokio time), so that concurrency shows.
    pub claim_delay_ms: std::sync::atomic::AtomicU64,
    in_flight: std::sync::atomic::AtomicUsize,
    /// The most claims seen in flight at once.
    pub max_in_flight: std::sync::atomic::AtomicUsize,
}

impl MemoryClaims {
    pub fn get(&self, pk: &str) -> Option<Record> {
        self.records.lock().expect("lock").get(pk).cloned()
    }

    pub fn len(&self) -> usize {
        self.records.lock().expect("lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError("injected failure".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl ClaimStore for MemoryClaims {
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.check()?;
        let delay = self.claim_delay_ms.load(SeqCst);
        if delay > 0 {
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            self.max_in_flight.fetch_max(now, SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            self.in_flight.fetch_sub(1, SeqCst);
        }
        let mut records = self.records.lock().expect("lock");
        let existing = records.get(&claim.pk);
        if claimable(existing, claim) {
            records.insert(claim.pk.clone(), new_record(claim));
            Ok(ClaimOutcome::New)
        } else {
            Ok(refused(existing.expect("refused only when present"), claim))
        }
    }

    async fn release(&self, pk: &str, token: &str) -> Result<(), StoreError> {
        self.check()?;
        let mut records = self.records.lock().expect("lock");
        if records.get(pk).is_some_and(|r| r.token == token) {
            records.remove(pk);
        }
        Ok(())
    }

    async fn finish(
        &self,
        pk: &str,
        token: &str,
        finish: &Finish,
        _now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        self.check()?;
        let mut records = self.records.lock().expect("lock");
        if let Some(r) = records.get_mut(pk).filter(|r| r.token == token) {
            r.status = match finish {
                Finish::Enqueued { .. } => Status::Enqueued,
                Finish::Processed => Status::Processed,
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn claim(now_s: i64, pending: Status, token: &str, fingerprint: &str) -> Claim {
        Claim {
            pk: "trybe#e1".into(),
            pending,
            event_type: "t".into(),
            fingerprint: fingerprint.into(),
            now: OffsetDateTime::from_unix_timestamp(now_s).unwrap(),
            lease: Duration::from_secs(30),
            ttl: Duration::from_secs(3600),
            token: token.into(),
        }
    }

    #[tokio::test]
    async fn lifecycle_new_inflight_takeover_duplicate_conflict_expiry() {
        let store = MemoryClaims::default();
        let t0 = 1_700_000_000;
        assert_eq!(
            store
                .claim(&claim(t0, Status::Received, "a", "h1"))
                .await
                .unwrap(),
            ClaimOutcome::New
        );
        // Live lease: in flight, retry after the rest of the lease.
        let r = store
            .claim(&claim(t0 + 10, Status::Received, "b", "h1"))
            .await
            .unwrap();
        assert_eq!(
            r,
            ClaimOutcome::InFlight {
                retry_after: Duration::from_secs(20)
            }
        );
        // Lease over: a retry takes the claim over; the old holder can no longer finish it.
        assert_eq!(
            store
                .claim(&claim(t0 + 31, Status::Received, "c", "h1"))
                .await
                .unwrap(),
            ClaimOutcome::New
        );
        store
            .finish(
                "trybe#e1",
                "a",
                &Finish::Enqueued {
                    message_id: "m".into(),
                },
                claim(t0, Status::Received, "", "").now,
            )
            .await
            .unwrap();
        assert_eq!(store.get("trybe#e1").unwrap().status, Status::Received);
        store
            .finish(
                "trybe#e1",
                "c",
                &Finish::Enqueued {
                    message_id: "m".into(),
                },
                claim(t0, Status::Received, "", "").now,
            )
            .await
            .unwrap();
        // Enqueued: a duplicate, and a conflict when the content differs.
        let same = store
            .claim(&claim(t0 + 40, Status::Received, "d", "h1"))
            .await
            .unwrap();
        assert_eq!(
            same,
            ClaimOutcome::Duplicate {
                status: Status::Enqueued,
                conflict: false
            }
        );
        let other = store
            .claim(&claim(t0 + 40, Status::Received, "d", "h2"))
            .await
            .unwrap();
        assert_eq!(
            other,
            ClaimOutcome::Duplicate {
                status: Status::Enqueued,
                conflict: true
            }
        );
        // The takeover at t0+31 expires at t0+3631: until then a duplicate, after it free again
        // even if DynamoDB's TTL has not deleted the item yet.
        assert!(matches!(
            store
                .claim(&claim(t0 + 3630, Status::Received, "e", "h1"))
                .await
                .unwrap(),
            ClaimOutcome::Duplicate { .. }
        ));
        assert_eq!(
            store
                .claim(&claim(t0 + 3632, Status::Received, "e", "h1"))
                .await
                .unwrap(),
            ClaimOutcome::New
        );
    }

    #[tokio::test]
    async fn release_only_deletes_our_own_claim() {
        let store = MemoryClaims::default();
        store
            .claim(&claim(1_700_000_000, Status::Received, "mine", "h"))
            .await
            .unwrap();
        store.release("trybe#e1", "theirs").await.unwrap();
        assert!(store.get("trybe#e1").is_some());
        store.release("trybe#e1", "mine").await.unwrap();
        assert!(store.get("trybe#e1").is_none());
    }
}

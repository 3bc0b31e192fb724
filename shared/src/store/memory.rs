//! In-memory claims for unit tests of the domain logic (same rules as DynamoDB's adapter).

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{
    claimable, granted, new_record, refused, Claim, ClaimOutcome, ClaimStore, Finish, Record,
    Status, StoreError,
};

#[derive(Debug, Default)]
pub struct MemoryClaims {
    records: Mutex<BTreeMap<String, Record>>,
    /// When set, every call fails (to test the 503 paths).
    pub fail: std::sync::atomic::AtomicBool,
    /// When set, reads (`record`) fail.
    pub fail_reads: std::sync::atomic::AtomicBool,
    /// Each claim takes this long (milliseconds of tokio time), so that concurrency shows.
    pub claim_delay_ms: std::sync::atomic::AtomicU64,
    in_flight: std::sync::atomic::AtomicUsize,
    /// The most claims seen in flight at once.
    pub max_in_flight: std::sync::atomic::AtomicUsize,
    /// Every call made, in order: `claim`, `record`, `release`, `finish`.
    calls: Mutex<Vec<&'static str>>,
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

    /// Deletes the record under `pk` if it expired before `now`, as DynamoDB's TTL process does
    /// (late: the simulation decides when). `true` when it deleted one.
    pub fn delete_expired(&self, pk: &str, now: OffsetDateTime) -> bool {
        let mut records = self.records.lock().expect("lock");
        let expired = records
            .get(pk)
            .is_some_and(|r| r.expires_at < now.unix_timestamp());
        if expired {
            records.remove(pk);
        }
        expired
    }

    /// Every call made so far, in order (`claim`, `record`, `release`, `finish`).
    pub fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().expect("lock").clone()
    }

    fn called(&self, call: &'static str) {
        self.calls.lock().expect("lock").push(call);
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
    async fn record(&self, pk: &str) -> Result<Option<Record>, StoreError> {
        self.called("record");
        self.check()?;
        if self.fail_reads.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError("injected read failure".into()));
        }
        Ok(self.get(pk))
    }

    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        self.called("claim");
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
            let previous = records.insert(claim.pk.clone(), new_record(claim));
            Ok(granted(previous, claim))
        } else {
            Ok(refused(existing.expect("refused only when present"), claim))
        }
    }

    async fn release(&self, pk: &str, token: &str) -> Result<(), StoreError> {
        self.called("release");
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
        self.called("finish");
        self.check()?;
        let mut records = self.records.lock().expect("lock");
        if let Some(r) = records.get_mut(pk).filter(|r| r.token == token) {
            match finish {
                Finish::Enqueued { first, .. } => {
                    r.status = Status::Enqueued;
                    if let Some(first) = first {
                        r.expires_at = first.expires_at;
                        r.fingerprint = first.fingerprint.clone();
                    }
                }
                Finish::Processed => r.status = Status::Processed,
            }
        }
        Ok(())
    }
}

// Its behaviour is the claim contract, tested against this store and DynamoDB alike in
// `shared/tests/integration/claims.rs`.

//! Claims: one record per provider event, taken with a conditional write so that exactly one
//! delivery of an event goes on to the queue (DESIGN.md "The claim record").
//!
//! The same record shape serves the processor (`processed#<dedup_key>`, PROCESSING →
//! PROCESSED), so both stages share one adapter and one set of rules.

mod dynamodb;
mod memory;

pub use dynamodb::DynamoClaims;
pub use memory::MemoryClaims;

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

/// Where a claim stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Receiver holds the claim; the message is not yet queued.
    Received,
    /// The message is on the queue.
    Enqueued,
    /// Processor holds the claim; the handler is running.
    Processing,
    /// The handler finished.
    Processed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Received => "RECEIVED",
            Status::Enqueued => "ENQUEUED",
            Status::Processing => "PROCESSING",
            Status::Processed => "PROCESSED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "RECEIVED" => Status::Received,
            "ENQUEUED" => Status::Enqueued,
            "PROCESSING" => Status::Processing,
            "PROCESSED" => Status::Processed,
            _ => return None,
        })
    }

    /// A pending claim is held under a lease; a final one blocks duplicates until it expires.
    pub fn is_pending(self) -> bool {
        matches!(self, Status::Received | Status::Processing)
    }
}

/// A request to claim `pk`.
#[derive(Debug, Clone)]
pub struct Claim {
    pub pk: String,
    /// `Received` for the receiver, `Processing` for the processor.
    pub pending: Status,
    pub event_type: String,
    pub fingerprint: String,
    pub now: OffsetDateTime,
    /// How long the holder may take before another delivery can take the claim over.
    pub lease: Duration,
    /// How long a claim blocks duplicates (logical expiry, compared on every claim).
    pub ttl: Duration,
    /// Random, per attempt: release and finish only touch a claim that is still ours.
    pub token: String,
}

/// The result of a claim attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// Ours: go on.
    New,
    /// Already done (enqueued or processed). `conflict`: same key, different content.
    Duplicate { status: Status, conflict: bool },
    /// Another delivery holds a live lease.
    InFlight { retry_after: Duration },
}

/// How a held claim ends well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Enqueued { message_id: String },
    Processed,
}

#[derive(Debug, thiserror::Error)]
#[error("claim store unavailable: {0}")]
pub struct StoreError(pub String);

#[async_trait]
pub trait ClaimStore: Send + Sync {
    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError>;
    /// Deletes the claim if it is still ours (the queue send failed: let a retry take it).
    async fn release(&self, pk: &str, token: &str) -> Result<(), StoreError>;
    /// Moves our claim to its final status.
    async fn finish(
        &self,
        pk: &str,
        token: &str,
        finish: &Finish,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;
}

/// A stored claim record, as both adapters see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub status: Status,
    pub lease_until_ms: i64,
    pub expires_at: i64,
    pub fingerprint: String,
    pub token: String,
}

/// The claim condition of the in-memory store; `CLAIM_CONDITION` in `store/dynamodb.rs` is its
/// twin (issue 11 makes one definition serve both):
/// `attribute_not_exists(pk) OR claim_token = :token OR expires_at < :now OR (#status = pending AND lease_until_ms < :now_ms)`.
pub fn claimable(existing: Option<&Record>, claim: &Claim) -> bool {
    let now_ms = crate::clock::epoch_millis(claim.now);
    match existing {
        None => true,
        Some(r) => {
            r.token == claim.token
                || r.expires_at < claim.now.unix_timestamp()
                || (r.status == claim.pending && r.lease_until_ms < now_ms)
        }
    }
}

/// The outcome of a refused claim, from the record that refused it.
pub fn refused(existing: &Record, claim: &Claim) -> ClaimOutcome {
    if existing.status.is_pending() {
        let now_ms = crate::clock::epoch_millis(claim.now);
        let left_ms = (existing.lease_until_ms - now_ms).max(0) as u64;
        ClaimOutcome::InFlight {
            retry_after: Duration::from_millis(left_ms).max(Duration::from_secs(1)),
        }
    } else {
        ClaimOutcome::Duplicate {
            status: existing.status,
            conflict: existing.fingerprint != claim.fingerprint,
        }
    }
}

pub fn new_record(claim: &Claim) -> Record {
    Record {
        status: claim.pending,
        lease_until_ms: crate::clock::epoch_millis(claim.now) + claim.lease.as_millis() as i64,
        expires_at: claim.now.unix_timestamp() + claim.ttl.as_secs() as i64,
        fingerprint: claim.fingerprint.clone(),
        token: claim.token.clone(),
    }
}

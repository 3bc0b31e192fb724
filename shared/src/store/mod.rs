//! Claims: one record per provider event, taken with a conditional write so that exactly one
//! delivery of an event goes on to the queue (DESIGN.md "The claim record").
//!
//! The same record shape serves the processor (`processed#<dedup_key>`, PROCESSING →
//! PROCESSED), so both stages share one adapter and one set of rules, and both adapters share
//! one definition of the claim condition ([`CLAIM_CONDITION`]).

mod dynamodb;
mod memory;
mod retries;

pub use dynamodb::DynamoClaims;
pub use retries::{
    retry_key, DynamoRetryNotes, MemoryRetryNotes, RetryNote, RetryNotes, RETRY_SUFFIX,
};

pub use crate::keys::{processed_key, PROCESSED_PREFIX};
pub use memory::MemoryClaims;

use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

/// Where a claim stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Receiver holds the claim. Its message may be on the queue: the receiver answers 200 right
    /// after the send and does not mark the claim; the processor's own `processed#` record is
    /// what says the event reached the queue (README "Two round trips").
    Received,
    /// The event is known to be on the queue: a retry found the processor's record under a
    /// lapsed RECEIVED claim (or an older version marked every claim so after its send).
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
    /// Ours, taken over from a holder whose lease lapsed before it finished (it crashed, timed
    /// out, or, for a receiver, sent the message and never marks the claim). `previous` is the
    /// record the write replaced.
    TakenOver { previous: Record },
    /// Already done (enqueued or processed). `conflict`: same key, different content.
    Duplicate { status: Status, conflict: bool },
    /// Another delivery holds a live lease. `conflict`: it holds other content under the key.
    InFlight {
        retry_after: Duration,
        conflict: bool,
    },
}

/// How a held claim ends well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The event is on the queue. `first`: the record a takeover replaced, whose dedup horizon
    /// and fingerprint are put back, so that taking a claim over never moves the horizon past
    /// the processor's record (which would let a late retry run the event twice).
    Enqueued {
        message_id: Option<String>,
        first: Option<Record>,
    },
    Processed,
}

#[derive(Debug, thiserror::Error)]
#[error("claim store unavailable: {0}")]
pub struct StoreError(pub String);

#[async_trait]
pub trait ClaimStore: Send + Sync {
    /// The record under `pk`, read consistently (operators' tools, tests).
    async fn record(&self, pk: &str) -> Result<Option<Record>, StoreError>;
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

/// One clause of the claim condition. A claim is taken when any clause holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clause {
    /// No record: a new event.
    Absent,
    /// The record is this very attempt's (an SDK retry of a write whose answer was lost).
    OwnToken,
    /// The record outlived the dedup horizon; DynamoDB's TTL deletes late, so it is compared.
    Expired,
    /// The holder's lease lapsed before it finished (it crashed or timed out): take it over.
    LeaseLapsed,
}

/// The claim condition, defined once: DynamoDB's `ConditionExpression` is written from it
/// ([`condition_expression`]) and the in-memory store evaluates it ([`claimable`]), so the two
/// stores cannot disagree; the contract tests run against both.
pub const CLAIM_CONDITION: &[Clause] = &[
    Clause::Absent,
    Clause::OwnToken,
    Clause::Expired,
    Clause::LeaseLapsed,
];

impl Clause {
    /// The clause as a DynamoDB condition, with the placeholders `:token`, `:now`, `:pending`,
    /// `:now_ms` and the name `#status`.
    pub fn expression(self) -> &'static str {
        match self {
            Clause::Absent => "attribute_not_exists(pk)",
            Clause::OwnToken => "claim_token = :token",
            Clause::Expired => "expires_at < :now",
            Clause::LeaseLapsed => "(#status = :pending AND lease_until_ms < :now_ms)",
        }
    }

    /// Whether the clause holds for `existing` (`None`: no record).
    pub fn holds(self, existing: Option<&Record>, claim: &Claim) -> bool {
        let now_ms = crate::clock::epoch_millis(claim.now);
        match (self, existing) {
            (Clause::Absent, None) => true,
            (_, None) | (Clause::Absent, Some(_)) => false,
            (Clause::OwnToken, Some(r)) => r.token == claim.token,
            (Clause::Expired, Some(r)) => r.expires_at < claim.now.unix_timestamp(),
            (Clause::LeaseLapsed, Some(r)) => {
                r.status == claim.pending && r.lease_until_ms < now_ms
            }
        }
    }
}

/// `attribute_not_exists(pk) OR claim_token = :token OR expires_at < :now OR (#status = :pending
/// AND lease_until_ms < :now_ms)`.
pub fn condition_expression() -> String {
    CLAIM_CONDITION
        .iter()
        .map(|c| c.expression())
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The claim condition, evaluated (the in-memory store).
pub fn claimable(existing: Option<&Record>, claim: &Claim) -> bool {
    CLAIM_CONDITION.iter().any(|c| c.holds(existing, claim))
}

/// The outcome of a refused claim, from the record that refused it.
pub fn refused(existing: &Record, claim: &Claim) -> ClaimOutcome {
    if existing.status.is_pending() {
        let now_ms = crate::clock::epoch_millis(claim.now);
        let left_ms = (existing.lease_until_ms - now_ms).max(0) as u64;
        ClaimOutcome::InFlight {
            retry_after: Duration::from_millis(left_ms).max(Duration::from_secs(1)),
            conflict: existing.fingerprint != claim.fingerprint,
        }
    } else {
        ClaimOutcome::Duplicate {
            status: existing.status,
            conflict: existing.fingerprint != claim.fingerprint,
        }
    }
}

/// The outcome of a granted claim, from the record the write replaced (`None`: there was none).
/// Replacing our own record (an SDK retry) or an expired one is a plain `New`.
pub fn granted(previous: Option<Record>, claim: &Claim) -> ClaimOutcome {
    match previous {
        Some(r)
            if r.token != claim.token
                && !Clause::Expired.holds(Some(&r), claim)
                && Clause::LeaseLapsed.holds(Some(&r), claim) =>
        {
            ClaimOutcome::TakenOver { previous: r }
        }
        _ => ClaimOutcome::New,
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_dynamodb_condition_is_written_from_the_clauses() {
        assert_eq!(
            super::condition_expression(),
            "attribute_not_exists(pk) OR claim_token = :token OR expires_at < :now OR (#status = :pending AND lease_until_ms < :now_ms)"
        );
    }
}

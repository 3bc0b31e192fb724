//! Claim and resolve: one conditional write per event, then, for the claims an earlier delivery
//! holds, the processor's record, which alone says whether that delivery's message reached the
//! queue (docs/design.md "Claims").

use std::time::Duration;

use futures::stream::{self, StreamExt};
use tracing::{error, warn};

use super::deliver::{Accepted, Attempt, Failure, Progress, Settle};
use super::prepare::Prepared;
use super::state::ClaimState;
use super::Ready;
use crate::metrics;
use crate::provider::Provider;
use crate::store::{ClaimOutcome, Record, StoreError};

/// The claims of a request, once every write answered.
struct Claimed<'p> {
    /// Ours, new: to send.
    fresh: Vec<&'p Prepared>,
    /// Held by an earlier delivery that may have queued the event already.
    unsure: Vec<Unsure<'p>>,
    duplicates: usize,
}

struct Unsure<'p> {
    event: &'p Prepared,
    holder: Holder,
    /// The holder's content differs from ours under the same key.
    conflict: bool,
}

/// Who holds a claim we could not simply take.
enum Holder {
    /// Another delivery, whose lease is live: it may still be sending.
    InFlight(Duration),
    /// Nobody now: its lease lapsed and we took it over. The record it replaced.
    TakenOver(Record),
}

/// What the processor's records said of the unsure claims.
struct Resolved<'p> {
    /// Taken over, and not on the queue as far as the processor knows: to send again.
    fresh: Vec<&'p Prepared>,
    duplicates: usize,
    /// The longest live lease among the claims whose event the processor does not have.
    retry_after: Option<Duration>,
    settle: Vec<Settle<'p>>,
}

impl<P: Provider> Ready<P> {
    /// Claim → resolve → send: one conditional write and one send per new event before the
    /// answer, nothing else.
    pub(super) async fn attempt<'p>(
        &self,
        prepared: &'p [Prepared],
        ack: Option<serde_json::Value>,
    ) -> Attempt<'p> {
        let Some(claimed) = self.claim(prepared).await else {
            // Nothing is sent when the store is failing: give back what we took (and what a
            // failed write may have taken), let the provider retry.
            self.release(super::cleanup::maybe_ours(prepared)).await;
            return Attempt::failed(Failure::CLAIM, Progress::default());
        };
        let resolved = self.resolve(claimed.unsure).await;
        let mut fresh = claimed.fresh;
        fresh.extend(resolved.fresh);
        let mut progress = Progress {
            settle: resolved.settle,
            ..Progress::default()
        };
        // Claim check: the objects of oversized events are written before their messages are
        // sent; if any fails, nothing is sent and every claim this request took is given back.
        if !self.check_in(&fresh).await {
            self.release(fresh).await;
            return Attempt::failed(Failure::PAYLOAD, progress);
        }
        let unsent = self.send(&fresh, &mut progress).await;
        if !unsent.is_empty() {
            self.release(unsent).await;
            return Attempt::failed(Failure::SEND, progress);
        }
        if let Some(wait) = resolved.retry_after {
            return Attempt::failed(Failure::in_flight(wait), progress);
        }
        let duplicates = claimed.duplicates + resolved.duplicates;
        Attempt {
            result: Ok(Accepted { duplicates, ack }),
            progress,
        }
    }

    /// Claims every event, a bounded number at a time. `None` when any write failed.
    async fn claim<'p>(&self, prepared: &'p [Prepared]) -> Option<Claimed<'p>> {
        let provider = self.provider.name();
        let claims: Vec<_> = prepared.iter().map(|p| self.take(p)).collect();
        let outcomes: Vec<Result<ClaimOutcome, StoreError>> = stream::iter(claims)
            .buffered(self.settings.max_concurrent_calls)
            .collect()
            .await;
        let mut claimed = Claimed {
            fresh: Vec::new(),
            unsure: Vec::new(),
            duplicates: 0,
        };
        let mut failed = false;
        for (p, outcome) in prepared.iter().zip(outcomes) {
            let unsure = |holder, conflict| Unsure {
                event: p,
                holder,
                conflict,
            };
            match outcome {
                Ok(ClaimOutcome::New) => claimed.fresh.push(p),
                Ok(ClaimOutcome::Duplicate { status, conflict }) => {
                    claimed.duplicates += 1;
                    if conflict {
                        warn!(provider, event_id = %p.envelope.event_id, dedup_key = %p.envelope.dedup_key, status = status.as_str(),
                            conflict = 1, "same event key with different content: treated as a duplicate");
                    }
                }
                Ok(ClaimOutcome::InFlight {
                    retry_after,
                    conflict,
                }) => claimed
                    .unsure
                    .push(unsure(Holder::InFlight(retry_after), conflict)),
                Ok(ClaimOutcome::TakenOver { previous }) => {
                    let conflict = previous.fingerprint != p.claim.fingerprint;
                    claimed
                        .unsure
                        .push(unsure(Holder::TakenOver(previous), conflict))
                }
                Err(e) => {
                    error!(provider, event_id = %p.envelope.event_id, error = %e, "claim failed");
                    failed = true;
                }
            }
        }
        (!failed).then_some(claimed)
    }

    /// One claim attempt, recording how far it got and how long the write took.
    async fn take(&self, p: &Prepared) -> Result<ClaimOutcome, StoreError> {
        p.state.become_(ClaimState::Claiming);
        let started = std::time::Instant::now();
        let outcome = self.claims.claim(&p.claim).await;
        let _ = p.claim_ms.set(metrics::millis(started.elapsed()));
        match &outcome {
            Ok(ClaimOutcome::New | ClaimOutcome::TakenOver { .. }) => {
                p.state.become_(ClaimState::Ours)
            }
            // A failed write may have landed: Claiming keeps it among what to give back.
            Err(_) => {}
            Ok(ClaimOutcome::InFlight { .. }) => p.state.become_(ClaimState::InFlight),
            Ok(ClaimOutcome::Duplicate { conflict, .. }) => {
                if *conflict {
                    p.state.flag_conflict();
                }
                p.state.become_(ClaimState::Duplicate)
            }
        }
        outcome
    }

    /// A RECEIVED claim does not say whether its message was sent; the processor's record
    /// does. Found live: the event is on the queue (a duplicate). Not found (or expired): within
    /// the lease, the first delivery may still be sending (503); past it, send again (the
    /// processor absorbs a second copy).
    async fn resolve<'p>(&self, unsure: Vec<Unsure<'p>>) -> Resolved<'p> {
        let provider = self.provider.name();
        let lookups: Vec<_> = unsure
            .iter()
            .map(|u| self.reached_processor(u.event))
            .collect();
        let found: Vec<Option<Record>> = stream::iter(lookups)
            .buffered(self.settings.max_concurrent_calls)
            .collect()
            .await;
        let mut resolved = Resolved {
            fresh: Vec::new(),
            duplicates: 0,
            retry_after: None,
            settle: Vec::new(),
        };
        for (u, processed) in unsure.into_iter().zip(found) {
            let p = u.event;
            if processed.is_some() && u.conflict {
                p.state.flag_conflict();
                warn!(provider, event_id = %p.envelope.event_id, dedup_key = %p.envelope.dedup_key,
                    conflict = 1, "same event key with different content: treated as a duplicate");
            }
            match (u.holder, processed) {
                (Holder::InFlight(_), Some(_)) => {
                    p.state.become_(ClaimState::Duplicate);
                    resolved.duplicates += 1;
                }
                (Holder::InFlight(wait), None) => {
                    resolved.retry_after = Some(resolved.retry_after.map_or(wait, |w| w.max(wait)));
                }
                (Holder::TakenOver(mut first), Some(processed)) => {
                    // Ours now, but its event is on the queue: not to be given back. Marked
                    // ENQUEUED with the first delivery's content and horizon, never past the
                    // processor's record: a claim that blocked duplicates longer than that
                    // record would answer "duplicate" for an event the processor would run
                    // again, and nothing would run it.
                    p.state.become_(ClaimState::Sent);
                    resolved.duplicates += 1;
                    first.expires_at = first.expires_at.min(processed.expires_at);
                    resolved.settle.push(Settle { event: p, first });
                }
                (Holder::TakenOver(_), None) => resolved.fresh.push(p),
            }
        }
        resolved
    }

    /// The processor's live record of the event (it reached the queue within the horizon). An
    /// expired record, which DynamoDB's TTL deletes late, says nothing about this delivery: it
    /// counts as absent. A failed read counts as absent too: the caller then answers 503 or
    /// sends again, both safe.
    async fn reached_processor(&self, p: &Prepared) -> Option<Record> {
        match self
            .claims
            .record(&crate::keys::processed_key(&p.claim.pk))
            .await
        {
            Ok(found) => found.filter(|r| r.expires_at >= p.claim.now.unix_timestamp()),
            Err(e) => {
                warn!(provider = self.provider.name(), dedup_key = %p.claim.pk, error = %e,
                    "processor's record not read; treated as absent");
                None
            }
        }
    }
}

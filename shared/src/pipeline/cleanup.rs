//! Giving claims back and marking them: the only writes a receiver makes to a claim it holds,
//! each by its token, a bounded number at a time.

use futures::stream::{self, StreamExt};
use time::OffsetDateTime;
use tracing::warn;

use super::prepare::Prepared;
use super::state::ClaimState;
use super::Ready;
use crate::provider::Provider;
use crate::store::Finish;

/// Claims that may be ours and are not on the queue: taken, or written without an answer.
pub(super) fn maybe_ours(prepared: &[Prepared]) -> Vec<&Prepared> {
    prepared
        .iter()
        .filter(|p| p.state.get().maybe_ours())
        .collect()
}

impl<P: Provider> Ready<P> {
    /// Marks claims ENQUEUED (never on an accepted request's ack path). A failure is only
    /// logged: the claim stays RECEIVED, and a retry resolves it from the processor's record.
    pub(super) async fn mark(&self, marks: Vec<(&Prepared, Finish)>, now: OffsetDateTime) {
        let finishes: Vec<_> = marks
            .into_iter()
            .map(|(p, finish)| async move {
                if let Err(e) = self
                    .claims
                    .finish(&p.claim.pk, &p.claim.token, &finish, now)
                    .await
                {
                    warn!(provider = self.provider.name(), dedup_key = %p.claim.pk, error = %e,
                        "claim not marked ENQUEUED");
                }
                p.state.become_(ClaimState::Done);
            })
            .collect();
        stream::iter(finishes)
            .buffer_unordered(self.settings.max_concurrent_calls)
            .collect::<Vec<()>>()
            .await;
    }

    /// Deletes each claim if it is still ours.
    pub(super) async fn release(&self, claims: Vec<&Prepared>) {
        let releases: Vec<_> = claims.into_iter().map(|p| self.release_one(p)).collect();
        stream::iter(releases)
            .buffer_unordered(self.settings.max_concurrent_calls)
            .collect::<Vec<()>>()
            .await;
    }

    async fn release_one(&self, p: &Prepared) {
        match self.claims.release(&p.claim.pk, &p.claim.token).await {
            Ok(()) => p.state.become_(ClaimState::Done),
            // The lease expires on its own; the provider's retry then takes the claim over.
            Err(e) => {
                warn!(dedup_key = %p.claim.pk, error = %e, "claim not released; it frees itself when its lease ends")
            }
        }
    }
}

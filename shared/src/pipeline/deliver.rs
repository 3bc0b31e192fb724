//! Deliver a request's events: prepare, then claim → resolve → send (beside the archive's
//! write) under one deadline, then settle. 200 only when every event is on the queue, put there
//! by this request or found there from an earlier one.

use std::time::Duration;

use futures::future::join;
use serde_json::Value;
use tokio::time::Instant;
use tracing::{error, warn};

use super::prepare::{distinct, Prepared};
use super::state::ClaimState;
use super::{Outcome, Ready, Trace};
use crate::answer::Answer;
use crate::metrics::{Cause, RequestTally};
use crate::objects::ObjectError;
use crate::provider::{Inbound, InboundEvent, Provider, Refusal};
use crate::store::{Finish, Record};

/// Why a request is answered 503 (the metrics' `Reason`, the log line's reason).
#[derive(Debug, Clone, Copy)]
pub(super) struct Failure {
    cause: Cause,
    reason: &'static str,
    retry_after_secs: u64,
}

impl Failure {
    pub(super) const CLAIM: Failure = Failure::retry(Cause::Claim, "claim store failed");
    pub(super) const PAYLOAD: Failure = Failure::retry(Cause::Payload, "payload store failed");
    pub(super) const SEND: Failure = Failure::retry(Cause::Send, "queue send failed");
    const ARCHIVE: Failure = Failure::retry(Cause::Archive, "archive write failed");

    const fn retry(cause: Cause, reason: &'static str) -> Failure {
        Failure {
            cause,
            reason,
            retry_after_secs: 1,
        }
    }

    /// The first delivery still holds a live lease: retry when it ends.
    pub(super) fn in_flight(wait: Duration) -> Failure {
        Failure {
            cause: Cause::InFlight,
            reason: "first delivery still in flight",
            retry_after_secs: wait.as_secs_f64().ceil() as u64,
        }
    }
}

/// A claim taken over from a delivery whose event the processor already has, and the record it
/// replaced, whose content and horizon (capped at the processor record's) its mark puts back.
pub(super) struct Settle<'p> {
    pub(super) event: &'p Prepared,
    pub(super) first: Record,
}

/// What a request did on the way, whatever its answer.
#[derive(Default)]
pub(super) struct Progress<'p> {
    /// Events this request put on the queue.
    pub(super) queued: usize,
    /// How long the send to the queue took, if there was one.
    pub(super) send_ms: Option<f64>,
    pub(super) settle: Vec<Settle<'p>>,
}

/// Every event of a request is on the queue.
pub(super) struct Accepted {
    /// How many were there from an earlier delivery.
    pub(super) duplicates: usize,
    /// The provider's acknowledgement body, if it expects one.
    pub(super) ack: Option<Value>,
}

/// What claiming and sending a request's events came to.
pub(super) struct Attempt<'p> {
    pub(super) result: Result<Accepted, Failure>,
    pub(super) progress: Progress<'p>,
}

impl<'p> Attempt<'p> {
    pub(super) fn failed(failure: Failure, progress: Progress<'p>) -> Self {
        Attempt {
            result: Err(failure),
            progress,
        }
    }

    /// Every accepted request is archived: without its archive object it is not accepted.
    fn archived(mut self, archived: Result<(), ObjectError>) -> Self {
        if self.result.is_ok() && archived.is_err() {
            self.result = Err(Failure::ARCHIVE);
        }
        self
    }
}

/// A request's answer, the reason to log, and its metrics.
struct Decided {
    answer: Answer,
    reason: Option<String>,
    metrics: RequestTally,
}

/// The request's events as its one log line names them: for a batch, its size, and type and
/// tenant when all share them.
struct Summary {
    event_id: Option<String>,
    event_type: Option<String>,
    tenant: Option<String>,
}

impl Summary {
    fn of(events: &[InboundEvent]) -> Summary {
        let Some(first) = events.first() else {
            return Summary {
                event_id: None,
                event_type: None,
                tenant: None,
            };
        };
        Summary {
            event_id: Some(match events.len() {
                1 => first.event_id.clone(),
                n => format!("{n} events"),
            }),
            event_type: events
                .iter()
                .all(|e| e.event_type == first.event_type)
                .then(|| first.event_type.clone()),
            tenant: first
                .tenant
                .clone()
                .filter(|t| events.iter().all(|e| e.tenant.as_ref() == Some(t))),
        }
    }

    fn outcome(
        self,
        Decided {
            answer,
            reason,
            metrics,
        }: Decided,
    ) -> Outcome {
        Outcome {
            answer,
            trace: Trace {
                event_id: self.event_id,
                event_type: self.event_type,
                tenant: self.tenant,
                reason,
                metrics,
            },
        }
    }
}

impl<P: Provider> Ready<P> {
    /// The phases, strung together under the request's deadline.
    pub(super) async fn deliver(
        &self,
        inbound: &Inbound<'_>,
        events: Vec<InboundEvent>,
        ack: Option<Value>,
    ) -> Outcome {
        let summary = Summary::of(&events);
        if events.is_empty() {
            let empty = Refusal::BadRequest("no events in the request".into());
            return summary.outcome(Decided {
                answer: Answer::Refused(empty),
                reason: None,
                metrics: RequestTally::default(),
            });
        }
        let (events, repeated) = distinct(events);
        let prepared = match self.prepare(inbound, events) {
            Ok(prepared) => prepared,
            Err(refused) => {
                return summary.outcome(Decided {
                    answer: refused.answer,
                    reason: Some(refused.reason),
                    metrics: RequestTally::default(),
                });
            }
        };
        let started = Instant::now();
        let cleanup = self.settings.cleanup_budget();
        let work_until = started + self.settings.deadline.saturating_sub(cleanup);
        // The archive (when on) is written beside the claims and the send, not after them.
        let work = join(
            self.attempt(&prepared, ack),
            self.archive(inbound, &prepared),
        );
        let done = tokio::time::timeout_at(work_until, work).await;
        let mut tally = claims_tally(&prepared);
        let Ok((attempt, archived)) = done else {
            return summary.outcome(self.out_of_time(&prepared, tally).await);
        };
        let Attempt { result, progress } = attempt.archived(archived);
        self.settle(progress.settle, inbound, started + self.settings.deadline)
            .await;
        tally.queued = progress.queued;
        tally.send_ms = progress.send_ms;
        let answer = match result {
            Ok(Accepted { duplicates, ack }) => Answer::Accepted {
                event_id: (prepared.len() == 1).then(|| prepared[0].envelope.event_id.clone()),
                queued: progress.queued,
                duplicates: duplicates + repeated,
                events: prepared.len() + repeated,
                ack,
            },
            Err(failure) => {
                tally.cause = Some(failure.cause);
                let answer = Answer::Unavailable {
                    retry_after_secs: failure.retry_after_secs,
                };
                return summary.outcome(Decided {
                    answer,
                    reason: Some(failure.reason.into()),
                    metrics: tally,
                });
            }
        };
        summary.outcome(Decided {
            answer,
            reason: None,
            metrics: tally,
        })
    }

    /// Out of time: give back every claim that may be ours and is not on the queue, within the
    /// cleanup budget, and answer 503. What is on the queue keeps its RECEIVED claim: a retry
    /// reads the processor's record. (Marking it ENQUEUED here, without the first delivery's
    /// horizon, let the claim outlive the processor's record and answer "duplicate" for an
    /// event nothing would run: found by the delivery simulation, seed 4263.)
    async fn out_of_time(&self, prepared: &[Prepared], mut tally: RequestTally) -> Decided {
        tally.queued = prepared
            .iter()
            .filter(|p| p.is(ClaimState::Sent) && !p.state.conflict())
            .count();
        tally.cause = Some(Cause::Deadline);
        let cleanup = self.release(super::cleanup::maybe_ours(prepared));
        if tokio::time::timeout(self.settings.cleanup_budget(), cleanup)
            .await
            .is_err()
        {
            warn!(provider = self.provider.name(),
                "deadline cleanup cut short; remaining claims free themselves when their lease ends");
        }
        error!(
            provider = self.provider.name(),
            deadline_ms = self.settings.deadline.as_millis() as u64,
            "claim store or queue did not answer within the request deadline"
        );
        let answer = Answer::Unavailable {
            retry_after_secs: 1,
        };
        Decided {
            answer,
            reason: Some("request deadline passed".into()),
            metrics: tally,
        }
    }

    /// The answer is decided. Claims stay RECEIVED, whatever the answer: the processor's record
    /// is what says an event reached the queue, and a retry reads it. Only claims taken over
    /// from a delivery the processor already has are marked ENQUEUED (off the ack path, by the
    /// deadline), with the first delivery's horizon capped at the processor record's. The
    /// events a 503 did queue are not marked: their processor record may be an older one (the
    /// processor deduplicates against it), and an ENQUEUED claim with this request's fresh
    /// horizon would then outlive it and answer "duplicate" for an event nothing runs (found by
    /// the delivery simulation, seed 2007).
    async fn settle(&self, settle: Vec<Settle<'_>>, inbound: &Inbound<'_>, by: Instant) {
        if settle.is_empty() {
            return;
        }
        let marks = settle
            .into_iter()
            .map(|s| {
                let finish = Finish::Enqueued {
                    message_id: None,
                    first: Some(s.first),
                };
                (s.event, finish)
            })
            .collect();
        if tokio::time::timeout_at(by, self.mark(marks, inbound.now))
            .await
            .is_err()
        {
            warn!(
                provider = self.provider.name(),
                "claims not marked ENQUEUED within the deadline; they free themselves when their lease ends"
            );
        }
    }
}

/// The metrics of the claims that answered, whatever happened next: each write's latency, and
/// the events that met another delivery's live lease or other content under their key.
fn claims_tally(prepared: &[Prepared]) -> RequestTally {
    RequestTally {
        claim_ms: prepared
            .iter()
            .filter_map(|p| p.claim_ms.get().copied())
            .collect(),
        conflicts: prepared
            .iter()
            .filter(|p| p.state.conflict() || p.is(ClaimState::InFlight))
            .count(),
        ..RequestTally::default()
    }
}

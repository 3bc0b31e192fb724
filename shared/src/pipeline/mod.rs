//! The receiver pipeline, the same for every provider (docs/design.md "Flow"): a request is
//! admitted (method, size, authentication, media type) and inspected by its provider (a
//! handshake, or events: [`admit`]), then its events are delivered in named phases: prepare,
//! claim, resolve, send, settle ([`deliver`]). A provider only supplies its rules
//! ([`Provider`]).

mod admit;
mod claim;
mod cleanup;
mod deliver;
mod prepare;
mod send;
mod state;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use lambda_http::http::{HeaderMap, Method};
use lambda_http::{Body, Request, RequestExt, Response};
use tracing::{error, info};

use crate::answer::Answer;
use crate::clock::Clock;
use crate::config::Settings;
use crate::metrics::{self, RequestTally};
use crate::objects::ObjectStore;
use crate::provider::{Inbound, Provider};
use crate::queue::EventQueue;
use crate::store::ClaimStore;

pub use crate::keys::{dedup_key, new_token};

/// A receiver: the pipeline wired to one provider, its store and its queue. Built once per cold
/// start; `handle` does only per-request work.
pub struct Receiver<P> {
    ready: Result<Ready<P>, String>,
    clock: Arc<dyn Clock>,
    /// The provider's name, in the log line and as the metrics' `Provider` dimension (known even
    /// when the provider could not be configured: see [`Receiver::named`]).
    name: &'static str,
}

struct Ready<P> {
    provider: P,
    claims: Arc<dyn ClaimStore>,
    queue: Arc<dyn EventQueue>,
    settings: Settings,
    allow: String,
    /// The claim check's bucket: envelopes too large for the queue wait there.
    payloads: Option<Arc<dyn ObjectStore>>,
    /// The archive's bucket, when the archive is on.
    archive: Option<Arc<dyn ObjectStore>>,
}

impl<P: Provider> Receiver<P> {
    pub fn new(
        provider: P,
        claims: Arc<dyn ClaimStore>,
        queue: Arc<dyn EventQueue>,
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let allow = provider
            .methods()
            .iter()
            .map(Method::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        Receiver {
            name: provider.name(),
            ready: Ok(Ready {
                provider,
                claims,
                queue,
                settings,
                allow,
                payloads: None,
                archive: None,
            }),
            clock,
        }
    }

    /// The same receiver with the claim check's bucket (envelopes over the queue's limit are
    /// written there, the message carries a reference) and the archive's, each when given.
    pub fn with_objects(
        mut self,
        payloads: Option<Arc<dyn ObjectStore>>,
        archive: Option<Arc<dyn ObjectStore>>,
    ) -> Self {
        if let Ok(ready) = &mut self.ready {
            ready.payloads = payloads;
            ready.archive = archive;
        }
        self
    }

    /// The same receiver reading time from `clock` (tests with signed, time-stamped samples).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A receiver that refuses everything with 500: its configuration is incomplete (fail closed).
    /// The reason is logged once, here, at cold start.
    pub fn misconfigured(reason: impl std::fmt::Display) -> Self {
        let reason = reason.to_string();
        error!(reason = %reason, "receiver misconfigured: refusing every request with 500");
        Receiver {
            ready: Err(reason),
            clock: Arc::new(crate::clock::SystemClock),
            name: "unconfigured",
        }
    }

    /// The same receiver under the provider's name, which a misconfigured one cannot ask its
    /// provider for (the function knows which provider it serves).
    pub fn named(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// The Lambda entry point: one request in, one response out, one log line.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let request_id = request.lambda_context_ref().map(|c| c.request_id.clone());
        let body: &[u8] = request.body().as_ref();
        let Outcome { answer, trace } = self
            .answer(
                request.method(),
                request.headers(),
                request.uri().path(),
                request.uri().query(),
                body,
            )
            .await;
        info!(
            provider = self.name,
            request_id = request_id.as_deref(),
            method = %request.method(),
            status = answer.status().as_u16(),
            outcome = answer.outcome(),
            event_id = trace.event_id.as_deref(),
            event_type = trace.event_type.as_deref(),
            tenant = trace.tenant.as_deref(),
            reason = trace.reason.as_deref(),
            bytes = body.len(),
            "webhook answered"
        );
        answer.into_response()
    }

    /// The pipeline without the Lambda types: usable from tests and benchmarks. Records the
    /// request's metrics, as [`Receiver::handle`] does.
    pub async fn answer_parts(
        &self,
        method: &Method,
        headers: &HeaderMap,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> Answer {
        self.answer(method, headers, path, query, body).await.answer
    }

    /// The outcome, with the request's metrics recorded (flushed by the runtime, once per
    /// invocation).
    async fn answer(
        &self,
        method: &Method,
        headers: &HeaderMap,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> Outcome {
        let outcome = match &self.ready {
            Err(_) => Outcome::from(Answer::Misconfigured),
            Ok(ready) => {
                let inbound = Inbound {
                    method,
                    headers,
                    path,
                    query,
                    body,
                    now: self.clock.now(),
                };
                ready.decide(&inbound).await
            }
        };
        metrics::record_request(self.name, &outcome.answer, &outcome.trace.metrics);
        outcome
    }
}

impl<P: Provider> Ready<P> {
    /// Admit, inspect, deliver: the request's answer and what its log line says.
    async fn decide(&self, inbound: &Inbound<'_>) -> Outcome {
        let admitted = match self.admit(inbound) {
            Ok(admitted) => admitted,
            Err(refused) => return *refused,
        };
        match self.inspect(inbound, admitted) {
            admit::Inspected::Answered(outcome) => outcome,
            admit::Inspected::Events { events, ack } => self.deliver(inbound, events, ack).await,
        }
    }
}

/// What one request came to: its answer, and what its log line and metrics say of it.
#[derive(Debug)]
struct Outcome {
    answer: Answer,
    trace: Trace,
}

impl From<Answer> for Outcome {
    fn from(answer: Answer) -> Self {
        Outcome {
            answer,
            trace: Trace::default(),
        }
    }
}

impl Outcome {
    /// A refusal, with the reason to log.
    fn refused(answer: Answer, reason: impl Into<String>) -> Self {
        Outcome {
            answer,
            trace: Trace {
                reason: Some(reason.into()),
                ..Trace::default()
            },
        }
    }
}

/// What one request did, for the single log line and the metrics it leaves: filled once, from
/// the outcome of the phase that decided the answer.
#[derive(Debug, Default)]
struct Trace {
    event_id: Option<String>,
    event_type: Option<String>,
    tenant: Option<String>,
    reason: Option<String>,
    metrics: RequestTally,
}

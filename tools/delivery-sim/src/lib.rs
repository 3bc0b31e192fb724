//! A deterministic simulation of the whole delivery: the real receivers of every provider and
//! the real processor (the real router and handlers, each run recorded), driven through their
//! public entry points over the AWS twins of [`aws`], with faults at every call, crashed
//! invocations, DynamoDB's late TTL, SQS's at-least-once redelivery and one simulated clock.
//! A run is a function of its seed; the invariants of docs/design.md are checked on every run.
//!
//! The machinery: tokio's current-thread runtime with paused time (a simulated week takes as
//! long as the work in it) and one seeded random stream. Every remote call applies in a task of
//! its own after its latency, so a caller that gives up (a deadline, a crash) does not stop a
//! write already on its way, as with a real service.

pub mod aws;
pub mod checks;
pub mod rng;
pub mod senders;
pub mod world;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use lambda_http::http::{HeaderMap, HeaderName, HeaderValue};
use shared::answer::Answer;
use shared::clock::Clock;
use shared::config::Settings;
use shared::consumer::{EventHandler, HandlerError, Processor};
use shared::envelope::{Envelope, Replay};
use shared::objects::{ArchiveRecord, ObjectStore};
use shared::pipeline::Receiver;
use shared::provider::Provider;

use crate::aws::{SimClaims, SimObjects, SimQueue, Sqs};
use crate::rng::Rng;
use crate::senders::{Event, Trust, PROVIDERS};
use crate::world::{Answered, Run, Weather, World};

pub use checks::{Report, Violation};

/// The receivers' function timeout (the template's `Timeout` for them).
pub const RECEIVER_TIMEOUT: Duration = Duration::from_secs(8);
/// The processor's function timeout.
pub const PROCESSOR_TIMEOUT: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 3600);
/// The operator's `SenderId` (redrives and replays).
pub const OPERATOR: &str = "AROAOPERATOR:alice";

/// The `SenderId` of `provider`'s receiver: its role's id and the function's session.
pub fn role_of(provider: &str) -> String {
    format!("AROA{}:{provider}-webhook", provider.to_uppercase())
}
const HOUR: Duration = Duration::from_secs(3600);

/// What a run is made of, drawn from its seed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub events: usize,
    pub weather: Weather,
    /// Envelopes over this go through the payload bucket (small, so that some do).
    pub max_message_bytes: Option<usize>,
    pub archive: bool,
    pub pollers: usize,
    /// The dedup horizon.
    pub horizon: Duration,
    /// Bursts of TRIFFT GETs, several different ones at one instant: with the archive on, each
    /// must keep its own archive object (keys once named the time and body hash only, and a
    /// burst's GETs, whose content is in the query, overwrote each other's record).
    pub trifft_get_bursts: bool,
    /// A downstream outage: every handler run fails (retry) from `start` for `length`, shorter
    /// than the retry horizon. With it the run has no other fault (a failed visibility change
    /// brings a record back early and spends a receive): no message may reach the DLQ.
    pub outage: Option<Outage>,
}

/// An outage of what the handlers call, from `start` (since the run began) for `length`.
#[derive(Debug, Clone, Copy)]
pub struct Outage {
    pub start: Duration,
    pub length: Duration,
}

impl Outage {
    fn covers(&self, since_start: Duration) -> bool {
        since_start >= self.start && since_start < self.start + self.length
    }
}

impl Plan {
    pub fn from_seed(seed: u64) -> Self {
        let mut r = Rng::new(seed.wrapping_mul(31).wrapping_add(17));
        Plan {
            events: r.between(20, 60) as usize,
            weather: Weather {
                fault_rate: [0.0, 0.02, 0.05, 0.1, 0.2][r.below(5) as usize],
                crash_rate: [0.0, 0.02, 0.05, 0.1][r.below(4) as usize],
                duplicate_rate: [0.0, 0.05, 0.2][r.below(3) as usize],
            },
            max_message_bytes: r.chance(0.3).then(|| r.between(1_500, 4_000) as usize),
            archive: r.chance(0.5),
            pollers: r.between(1, 3) as usize,
            horizon: Duration::from_secs(7 * 24 * 3600),
            trifft_get_bursts: true,
            outage: None,
        }
        .with_outage_drawn(seed)
    }

    /// A quarter of the seeds: an outage in the first day, while events arrive, and no other
    /// fault; of 1 to 24 hours (just under the retry horizon), or in a fifth of them 1 to 12
    /// hours past it (what the horizon gives up: messages reach the DLQ, and the operator's
    /// redrive must bring every one back). Drawn from a stream of its own, so that the other
    /// seeds' plans are unchanged.
    fn with_outage_drawn(mut self, seed: u64) -> Self {
        let mut r = Rng::new(seed ^ 0x07A6_E000_0000_0004);
        if r.chance(0.25) {
            let horizon = aws::RETRY_HORIZON.as_millis() as u64;
            let hour = HOUR.as_millis() as u64;
            let start = Duration::from_millis(r.below(DAY.as_millis() as u64));
            let length = if r.chance(0.2) {
                r.between(horizon + hour, horizon + 12 * hour)
            } else {
                r.between(hour, horizon - 1)
            };
            self.outage = Some(Outage {
                start,
                length: Duration::from_millis(length),
            });
            self.weather.fault_rate = 0.0;
            self.weather.crash_rate = 0.0;
        }
        self
    }
}

/// Epoch milliseconds of an RFC 3339 time (an envelope's `received_at`).
fn epoch_ms(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(shared::clock::epoch_millis)
        .unwrap_or(i64::MAX)
}

/// Records every handler run, then lets the real handler decide.
struct Recording {
    inner: Arc<dyn EventHandler>,
    world: Arc<World>,
    outage: Option<Outage>,
}

#[async_trait]
impl EventHandler for Recording {
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        if let Some(outage) = self.outage {
            if outage.covers(self.world.clock.elapsed()) {
                self.world
                    .note(|| format!("handler failed {}: downstream outage", event.dedup_key));
                return Err(HandlerError::Retry("downstream outage".into()));
            }
        }
        let result = self.inner.handle(event).await;
        if result.is_ok() {
            let content = format!("{:?}", event.content());
            let run = Run {
                dedup_key: event.dedup_key.clone(),
                replay: event.replay.as_ref().map(|r| r.id.clone()),
                at_ms: self.world.clock.now_ms(),
                received_ms: epoch_ms(&event.received_at),
                forged: event.dedup_key.contains("forged-")
                    || content.contains("forged-")
                    || event.event_id.contains("forged-")
                    || event
                        .replay
                        .as_ref()
                        .is_some_and(|r| r.id.contains("forged-")),
                event_id: event.event_id.clone(),
            };
            self.world
                .note(|| format!("handler ran {} replay={:?}", run.dedup_key, run.replay));
            self.world.log(|l| l.runs.push(run));
        } else {
            self.world
                .note(|| format!("handler failed {}: {result:?}", event.dedup_key));
        }
        result
    }
}

/// The deployment under test.
struct System {
    world: Arc<World>,
    receivers: BTreeMap<&'static str, Receiver<Box<dyn Provider>>>,
    processor: Processor,
    sqs: Arc<Sqs>,
    payloads: Arc<SimObjects>,
    archive: Arc<SimObjects>,
    plan: Plan,
    max_message_bytes: usize,
}

fn settings(plan: &Plan) -> Settings {
    let mut env = senders::env(Trust::Authentic).clone();
    let horizon = plan.horizon.as_secs().to_string();
    env.set("DEDUP_TTL_SECONDS", &horizon);
    if let Some(limit) = plan.max_message_bytes {
        env.set("MAX_MESSAGE_BYTES", &limit.to_string());
    }
    Settings::from_env(&env).expect("settings")
}

impl System {
    fn new(world: Arc<World>, plan: Plan) -> Arc<Self> {
        let claims = Arc::new(SimClaims::new(world.clone()));
        let sqs = Sqs::new(world.clone());
        let payloads = Arc::new(SimObjects::new(world.clone(), "payloads"));
        let archive = Arc::new(SimObjects::new(world.clone(), "archive"));
        let settings = settings(&plan);
        let env = senders::env(Trust::Authentic);
        let receivers = PROVIDERS
            .iter()
            .map(|name| {
                let provider = shared::providers::from_env(name, env).expect("provider");
                let queue = Arc::new(SimQueue::new(world.clone(), sqs.clone(), &role_of(name)));
                let receiver = Receiver::new(
                    provider,
                    claims.clone(),
                    queue,
                    settings.clone(),
                    world.clock.clone(),
                )
                .with_objects(
                    Some(payloads.clone() as Arc<dyn ObjectStore>),
                    plan.archive
                        .then(|| archive.clone() as Arc<dyn ObjectStore>),
                );
                (*name, receiver)
            })
            .collect();
        let recording_world = world.clone();
        let outage = plan.outage;
        let router = event_processor::router().wrap(move |inner| {
            Arc::new(Recording {
                inner,
                world: recording_world.clone(),
                outage,
            })
        });
        let trusted: Vec<String> = PROVIDERS
            .iter()
            .map(|p| format!("{p}={}", role_of(p)))
            .collect();
        let providers: Vec<&str> = shared::providers::ALL.iter().map(|(p, _)| *p).collect();
        let trust = shared::trust::Trust {
            senders: shared::trust::Senders::parse(&trusted.join(","), OPERATOR, &providers)
                .expect("senders"),
            dead_letters: Arc::new(aws::SimDeadLetters {
                sqs: sqs.clone(),
                world: world.clone(),
            }),
        };
        let visibility = Arc::new(aws::SimVisibility {
            sqs: sqs.clone(),
            world: world.clone(),
        });
        let processor =
            Processor::new(claims, router, settings.clone(), world.clock.clone(), trust)
                .with_payloads(Some(payloads.clone() as Arc<dyn ObjectStore>))
                .with_backoff(visibility, shared::queue::Backoff::default());
        Arc::new(System {
            world,
            receivers,
            processor,
            sqs,
            payloads,
            archive,
            max_message_bytes: settings.max_message_bytes,
            plan,
        })
    }

    /// One receiver invocation: its status, or `None` when no answer reached the sender.
    async fn deliver(&self, event: &Event, attempt: usize) -> Option<u16> {
        self.deliver_answer(event, attempt)
            .await
            .map(|a| a.status().as_u16())
    }

    /// One receiver invocation: the request as API Gateway hands it over, cut short where the
    /// invocation crashes or times out. `None`: no answer reached the sender.
    async fn deliver_answer(&self, event: &Event, attempt: usize) -> Option<Answer> {
        let now = self.world.clock.now();
        let sent = senders::request(event, attempt, now);
        let mut headers = HeaderMap::new();
        for (name, value) in &sent.headers {
            headers.append(
                HeaderName::try_from(name.as_str()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        let receiver = &self.receivers[event.provider];
        let crash = self.world.crash_after();
        let limit = crash.unwrap_or(RECEIVER_TIMEOUT);
        self.world.log(|l| l.deliveries += 1);
        let at_ms = self.world.clock.now_ms();
        let answer = tokio::time::timeout(
            limit,
            receiver.answer_parts(
                &sent.method,
                &headers,
                &sent.path,
                sent.query.as_deref(),
                &sent.body,
            ),
        )
        .await;
        let status = match &answer {
            Ok(a) => Some(a.status().as_u16()),
            Err(_) => {
                if crash.is_some() {
                    self.world.log(|l| l.crashes += 1);
                }
                None
            }
        };
        self.world.note(|| {
            format!(
                "{} #{} try {attempt} {:?} {:?} -> {:?}{}",
                event.provider,
                event.n,
                event.trust,
                event.keys,
                status,
                if crash.is_some() && status.is_none() {
                    " (crashed)"
                } else {
                    ""
                }
            )
        });
        self.world.log(|l| {
            l.answers.push(Answered {
                sender: event.n,
                keys: event.keys.clone(),
                at_ms: self.world.clock.now_ms(),
                status,
                authentic: event.authentic(),
                received_at_ms: at_ms,
            })
        });
        answer.ok()
    }

    /// Retry-After tells the truth: a delivery that fails for a failure of ours (`call` meets
    /// `fault`) is answered 503 with its claims given back, so that the retry after Retry-After,
    /// with nothing failing, is accepted instead of meeting its own claim's lease.
    async fn prompt_retry(
        self: Arc<Self>,
        event: Event,
        at: Duration,
        (call, fault): (&'static str, world::Fault),
    ) {
        tokio::time::sleep_until(self.world.clock.at(at)).await;
        self.world.force(call, &event.keys[0], fault);
        let held = |why: String| {
            self.world.note(|| format!("HELD {:?}: {why}", event.keys));
            self.world
                .log(|l| l.held.push((event.keys[0].clone(), why)));
        };
        let wait = match self.deliver_answer(&event, 0).await {
            Some(Answer::Unavailable { retry_after_secs }) => retry_after_secs,
            other => return held(format!("{call} {fault:?} answered {other:?}, not 503")),
        };
        tokio::time::sleep(Duration::from_secs(wait)).await;
        match self.deliver(&event, 1).await {
            Some(s) if (200..300).contains(&s) => {}
            other => held(format!(
                "after {call} {fault:?} and Retry-After {wait} s, the retry was answered {other:?}"
            )),
        }
    }

    /// Tries `event` on its provider's schedule until a 2xx; whether it got one.
    async fn until_accepted(&self, event: &Event, first_attempt: usize) -> bool {
        let start = tokio::time::Instant::now();
        for (i, delay) in senders::schedule(event.provider).iter().enumerate() {
            tokio::time::sleep_until(start + *delay).await;
            let copies = if i == 0 && self.world.rng(|r| r.chance(0.1)) {
                3
            } else {
                1
            };
            let answers = futures::future::join_all(
                (0..copies).map(|_| self.deliver(event, first_attempt + i)),
            )
            .await;
            if answers
                .iter()
                .any(|s| s.is_some_and(|s| (200..300).contains(&s)))
            {
                return true;
            }
        }
        false
    }

    /// One sender: its event, then (drawn) a duplicate, the same id with other content, a
    /// re-send after the horizon; in the quiet phase a last delivery that must be answered 2xx.
    async fn sender(self: Arc<Self>, event: Event, start: Duration, quiet: Duration) {
        tokio::time::sleep_until(self.world.clock.at(start)).await;
        let (duplicate, variant, resend) = self.world.rng(|r| {
            (
                r.chance(0.2)
                    .then(|| Duration::from_millis(r.below(2 * DAY.as_millis() as u64))),
                r.chance(0.1),
                r.chance(0.3).then(|| {
                    // Around the horizon: from 6 hours before to 3 days after.
                    self.plan.horizon - 6 * HOUR
                        + Duration::from_millis(r.below((3 * DAY + 6 * HOUR).as_millis() as u64))
                }),
            )
        });
        let accepted = self.until_accepted(&event, 0).await;
        if !event.authentic() {
            return;
        }
        let mut attempts = senders::schedule(event.provider).len();
        if accepted {
            if let Some(after) = duplicate {
                tokio::time::sleep(after).await;
                self.deliver(&event, attempts).await;
                attempts += 1;
            }
        }
        if variant {
            if let Some(other) = senders::other_content(&event) {
                self.until_accepted(&other, 0).await;
            }
        }
        if let Some(after) = resend {
            tokio::time::sleep_until(self.world.clock.at(start + after)).await;
            self.until_accepted(&event, attempts).await;
            attempts += senders::schedule(event.provider).len();
        }
        // The quiet phase: no faults; the event must get a 2xx within a few tries.
        let probe = self
            .world
            .rng(|r| Duration::from_secs(r.between(3600, 6 * 3600)));
        tokio::time::sleep_until(self.world.clock.at(quiet + probe)).await;
        for i in 0..6 {
            match self.deliver(&event, attempts + i).await {
                Some(s) if (200..300).contains(&s) => return,
                Some(503) | None => tokio::time::sleep(Duration::from_secs(600)).await,
                Some(other) => {
                    checks::blocked(
                        &self.world,
                        &event,
                        &format!("answered {other} in the quiet phase"),
                    );
                    return;
                }
            }
        }
        checks::blocked(&self.world, &event, "never answered 2xx in the quiet phase");
    }

    /// One slot of the SQS event source mapping: receives batches and invokes the processor;
    /// what it did not report as failed is deleted.
    async fn poller(self: Arc<Self>) {
        loop {
            let batch = self.sqs.receive();
            if batch.is_empty() {
                let next = self
                    .sqs
                    .next_visible()
                    .unwrap_or_else(|| tokio::time::Instant::now() + 30 * DAY);
                tokio::select! {
                    biased;
                    _ = self.sqs.arrived.notified() => {}
                    _ = tokio::time::sleep_until(next) => {}
                }
                // The batching window.
                let wait = self.world.rng(|r| r.between(0, 1_000));
                tokio::time::sleep(Duration::from_millis(wait)).await;
                continue;
            }
            self.invoke_processor(batch).await;
        }
    }

    async fn invoke_processor(&self, batch: Vec<aws::Queued>) {
        let mut event = SqsEvent::default();
        event.records = batch
            .iter()
            .map(|q| {
                let mut m = SqsMessage::default();
                m.message_id = Some(format!("m-{}", q.id));
                m.receipt_handle = Some(aws::receipt_handle(q.id, q.receives));
                m.body = Some(q.message.body.clone());
                m.attributes
                    .insert("SentTimestamp".into(), q.sent_ms.to_string());
                m.attributes
                    .insert("ApproximateReceiveCount".into(), q.receives.to_string());
                m.attributes
                    .insert(shared::trust::SENDER_ID.into(), q.sender.clone());
                m
            })
            .collect();
        self.world.log(|l| l.invocations += 1);
        let runs_before = self.world.log(|l| l.runs.len());
        let crash = self.world.crash_after();
        let limit = crash.unwrap_or(PROCESSOR_TIMEOUT);
        match tokio::time::timeout(limit, self.processor.process(event)).await {
            Ok(response) => {
                let failed: Vec<String> = response
                    .batch_item_failures
                    .iter()
                    .map(|f| f.item_identifier.clone())
                    .collect();
                self.note_skips(&batch, &failed, runs_before);
                let done: Vec<u64> = batch
                    .iter()
                    .filter(|q| !failed.contains(&format!("m-{}", q.id)))
                    .map(|q| q.id)
                    .collect();
                self.world
                    .note(|| format!("processor batch done: delete {done:?}, failed {failed:?}"));
                let sqs = self.sqs.clone();
                // The event source mapping's own call, which gives up on a hung answer (what
                // it did not delete comes back after the visibility timeout).
                let delete =
                    self.world.remote(
                        "DeleteMessageBatch",
                        "batch",
                        async move { sqs.delete(&done) },
                    );
                let _ = tokio::time::timeout(Duration::from_secs(30), delete).await;
            }
            Err(_) => {
                if crash.is_some() {
                    self.world.log(|l| l.crashes += 1);
                }
                let at = self.world.clock.now_ms();
                let keys: Vec<String> = batch
                    .iter()
                    .filter_map(|q| serde_json::from_str::<serde_json::Value>(&q.message.body).ok())
                    .filter_map(|v| v["dedup_key"].as_str().map(str::to_owned))
                    .collect();
                self.world.log(|l| {
                    l.dropped.extend(keys.iter().map(|k| (k.clone(), at)));
                });
                self.world.note(|| {
                    format!(
                        "processor invocation dropped ({}) with {keys:?}",
                        if crash.is_some() { "crash" } else { "timeout" }
                    )
                });
            }
        }
    }

    /// The records of a finished batch that neither failed nor ran: the processor skipped them
    /// as already processed (replays left out: their own invariant covers them).
    fn note_skips(&self, batch: &[aws::Queued], failed: &[String], runs_before: usize) {
        let at_ms = self.world.clock.now_ms();
        self.world.log(|l| {
            let ran: Vec<(String, i64)> = l.runs[runs_before..]
                .iter()
                .filter(|r| r.replay.is_none())
                .map(|r| (r.dedup_key.clone(), r.received_ms))
                .collect();
            for q in batch {
                // Failed (it comes back), or a compromised receiver's message: refused into the
                // DLQ, neither run nor skipped (the redrive after an outage past the horizon can
                // put it in one batch with the genuine event it copied, before that one runs).
                if failed.contains(&format!("m-{}", q.id)) || l.rogues.contains(&q.message.body) {
                    continue;
                }
                let Ok(envelope) = serde_json::from_str::<Envelope>(&q.message.body) else {
                    continue;
                };
                let received_ms = epoch_ms(&envelope.received_at);
                if envelope.replay.is_some()
                    || ran.contains(&(envelope.dedup_key.clone(), received_ms))
                {
                    continue;
                }
                l.skips.push(world::Skip {
                    dedup_key: envelope.dedup_key,
                    at_ms,
                    received_ms,
                });
            }
        });
    }

    /// The operator replays one archived request, as `webhook-ops replay` does: every event of
    /// it marked with a new replay id, oversized ones through the payload bucket.
    async fn replay(&self, n: usize) {
        let objects = self.archive.bucket.objects();
        if objects.is_empty() {
            return;
        }
        let keys: Vec<&String> = objects.keys().collect();
        let key = self.world.rng(|r| *r.pick(&keys));
        let record: ArchiveRecord =
            serde_json::from_slice(&objects[key.as_str()]).expect("archive record");
        let id = format!("replay-{n}");
        let mut messages = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for mut envelope in record.events {
            if !seen.insert(envelope.dedup_key.clone()) {
                continue;
            }
            envelope.replay = Some(Replay {
                id: id.clone(),
                requested_at: shared::clock::rfc3339(self.world.clock.now()),
                archive_key: key.clone(),
            });
            let shared::objects::Outbound { message, object } = shared::objects::message_for(
                &envelope,
                self.max_message_bytes,
                shared::objects::Oversize::ClaimCheck,
            )
            .expect("an archived envelope travels again");
            if let Some(object) = object {
                self.payloads
                    .bucket
                    .insert(&object.key, object.bytes.to_vec());
            }
            self.world
                .log(|l| l.replays.push((id.clone(), envelope.dedup_key.clone())));
            messages.push(message);
        }
        self.world
            .note(|| format!("operator replay {id} of {key}: {} event(s)", messages.len()));
        self.sqs.enqueue(&messages, OPERATOR);
    }

    /// A compromised receiver copies a message of another provider on the queue and sends a
    /// variant of it: (0) Tilby's role, the same dedup key under Tilby; (1) Tilby's role, the
    /// same envelope with its content replaced; (2) the message's own provider's role, the same
    /// envelope marked as a replay (a receiver bypassing deduplication for its own events).
    /// Each is marked `forged-`: if one ever ran, the check "nothing forged runs" would say so;
    /// if one claimed the event first, the genuine event would never run.
    async fn rogue(&self, n: usize) {
        // The first message of another provider on the queue from now on.
        let body = loop {
            let arrived = self.sqs.arrived.notified();
            let pick = self.world.rng(|r| r.below(1 << 16) as usize);
            if let Some(body) = self.sqs.sample_inline(shared::providers::tilby::NAME, pick) {
                break body;
            }
            arrived.await;
        };
        let mut v: serde_json::Value = serde_json::from_str(&body).expect("an envelope");
        match n % 3 {
            0 => {
                v["provider"] = shared::providers::tilby::NAME.into();
                v["event_id"] = format!("forged-rogue-{n}").into();
            }
            1 => {
                v["event_id"] = format!("forged-rogue-{n}").into();
                v["payload"] = serde_json::json!({"forged-rogue": n});
            }
            _ => {
                v["replay"] = serde_json::json!({
                    "id": format!("forged-replay-{n}"),
                    "requested_at": "2026-12-01T00:00:00Z",
                    "archive_key": "-"
                });
            }
        }
        let provider = v["provider"].as_str().unwrap_or("").to_owned();
        let sender = match n % 3 {
            2 => role_of(&provider),
            _ => role_of(shared::providers::tilby::NAME),
        };
        let message = shared::queue::Message {
            body: v.to_string(),
            provider,
            event_type: v["event_type"].as_str().unwrap_or("").to_owned(),
        };
        self.world
            .note(|| format!("rogue sender {n} as {sender}: {}", v["dedup_key"]));
        self.world.log(|l| l.rogues.push(message.body.clone()));
        self.sqs.enqueue(&[message], &sender);
    }
}

/// Runs one seed to its end and checks every invariant.
pub fn run_seed(seed: u64, trace: bool) -> Report {
    run_plan(seed, Plan::from_seed(seed), trace)
}

pub fn run_plan(seed: u64, plan: Plan, trace: bool) -> Report {
    let trace_on = trace;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let world = World::new(seed, plan.weather, trace);
        let system = System::new(world.clone(), plan.clone());
        // Events start within two days; re-sends reach a few days past the horizon.
        let active = plan.horizon + 3 * DAY + 2 * DAY;
        let quiet = active + HOUR;
        for _ in 0..plan.pollers {
            tokio::spawn(system.clone().poller());
        }
        let mut rng = Rng::new(seed);
        for n in 0..plan.events {
            let provider = *rng.pick(PROVIDERS);
            let trust = match rng.below(100) {
                0..=4 => Trust::Forged,
                5..=7 if provider != "trifft" && provider != "standard" => Trust::OtherTenant,
                _ => Trust::Authentic,
            };
            let event = senders::new_event(n, provider, &mut rng, trust);
            let start = Duration::from_millis(rng.below(2 * DAY.as_millis() as u64));
            tokio::spawn(system.clone().sender(event, start, quiet));
        }
        if plan.trifft_get_bursts {
            let mut bursts = Rng::new(seed ^ 0x7B1F_F76E_0000_0002);
            for b in 0..3 {
                let start = Duration::from_millis(bursts.below(2 * DAY.as_millis() as u64));
                for i in 0..bursts.between(2, 3) as usize {
                    let event = senders::trifft_get(10_000 + b * 10 + i, &mut bursts);
                    tokio::spawn(system.clone().sender(event, start, quiet));
                }
            }
        }
        // Scripted checks in the quiet phase, from a stream of their own (the seed's history
        // before them is unchanged): fresh events whose first delivery meets a failure of ours.
        let mut script = Rng::new(seed ^ 0x5C21_97ED_0000_0001);
        for n in 0..3 {
            let provider = *script.pick(PROVIDERS);
            let event =
                senders::new_event(plan.events + n, provider, &mut script, Trust::Authentic);
            let at = quiet + Duration::from_secs(script.between(600, 6 * 3600));
            let failure = *script.pick(&[
                ("SendMessageBatch", world::Fault::FailBefore),
                ("PutItem", world::Fault::AnswerLost),
                ("PutItem", world::Fault::FailBefore),
            ]);
            tokio::spawn(system.clone().prompt_retry(event, at, failure));
        }
        // The operator: replays from the archive now and then, redrives the DLQ after the storm.
        if plan.archive {
            for n in 0..3 {
                let at = Duration::from_millis(rng.below(active.as_millis() as u64));
                let s = system.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(s.world.clock.at(at)).await;
                    s.replay(n).await;
                });
            }
        }
        tokio::time::sleep_until(world.clock.at(active)).await;
        world.calm();
        // A compromised receiver sends a few forged messages while events flow.
        let mut rogue = Rng::new(seed ^ 0x7A05_0E5E_0000_0003);
        for n in 0..3 {
            let at = Duration::from_millis(rogue.below(2 * DAY.as_millis() as u64));
            let s = system.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(s.world.clock.at(at)).await;
                s.rogue(n).await;
            });
        }
        for after in [10 * 60, 12 * 3600, 2 * 24 * 3600] {
            tokio::time::sleep_until(world.clock.at(active + Duration::from_secs(after))).await;
            system.sqs.redrive(OPERATOR);
        }
        tokio::time::sleep_until(world.clock.at(quiet + 3 * DAY)).await;
        let archived = system.archive.bucket.objects();
        let mut report = checks::check(seed, &plan, &world, &system.sqs, &archived);
        if trace_on {
            report.trace = world.trace_lines();
        }
        report
    })
}

/// The steps of a trace that name any of `keys` (or every step when none is given), with the
/// processor's record of each (`processed#…`) and its replays.
pub fn relevant<'t>(trace: &'t [String], keys: &[&str]) -> Vec<&'t String> {
    trace
        .iter()
        .filter(|line| {
            keys.is_empty() || keys.iter().any(|k| line.contains(k)) || line.contains("faults stop")
        })
        .collect()
}

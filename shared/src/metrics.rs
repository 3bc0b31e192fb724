//! Metrics in CloudWatch embedded metric format (EMF): recorded through the `metrics` facade,
//! collected by `metrics_cloudwatch_embedded` and written to stdout (which Lambda ships to
//! CloudWatch Logs, where the EMF lines become metrics) once per invocation, after the answer is
//! decided. The names, units and dimensions are a contract with the alarms and the dashboard:
//! docs/metrics.md lists them.
//!
//! Every metric has one dimension, `Provider` (a provider's name, or `unknown`), and
//! `Unavailable` a second, `Reason` (a [`Cause`]). Nothing else is ever a dimension: no tenant,
//! no event id, no payload, no secret. Without [`init`] (tests, tools) the facade has no recorder
//! and every call here does nothing.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_histogram, histogram, Unit};
use metrics_cloudwatch_embedded::Collector;

use crate::answer::Answer;
use crate::config::Env;
use crate::provider::Refusal;

/// The variable naming the CloudWatch namespace.
pub const NAMESPACE_VAR: &str = "METRICS_NAMESPACE";
pub const DEFAULT_NAMESPACE: &str = "WebhookIntake";

/// Dimension names.
pub const PROVIDER: &str = "Provider";
pub const REASON: &str = "Reason";
/// The `Provider` of a message the processor could not read, or that names no provider we know.
pub const UNKNOWN_PROVIDER: &str = "unknown";

// Receivers.
pub const ACCEPTED: &str = "Accepted";
pub const DUPLICATE: &str = "Duplicate";
pub const CONFLICT: &str = "Conflict";
pub const UNAUTHORIZED: &str = "Unauthorized";
pub const BAD_REQUEST: &str = "BadRequest";
pub const UNAVAILABLE: &str = "Unavailable";
pub const HANDSHAKE: &str = "Handshake";
pub const CLAIM_LATENCY: &str = "ClaimLatency";
pub const SEND_LATENCY: &str = "SendLatency";
// Processor.
pub const PROCESSED: &str = "Processed";
pub const FAILED: &str = "Failed";
pub const REJECTED: &str = "Rejected";
/// Messages the trust check refused (no dimension: one alarm, whatever they claimed to be).
pub const REFUSED: &str = "Refused";
pub const HANDLER_LATENCY: &str = "HandlerLatency";
pub const MESSAGE_AGE: &str = "MessageAge";
/// The age of each record that failed (no dimension): `RetryHorizonAlarm` compares its maximum
/// with the retry horizon. SQS's ApproximateAgeOfOldestMessage cannot: it stops seeing a
/// message after its third receive.
pub const FAILING_MESSAGE_AGE: &str = "FailingMessageAge";

/// The counts (their meaning: docs/metrics.md).
const COUNTS: &[&str] = &[
    ACCEPTED,
    DUPLICATE,
    CONFLICT,
    UNAUTHORIZED,
    BAD_REQUEST,
    UNAVAILABLE,
    HANDSHAKE,
    PROCESSED,
    FAILED,
    REFUSED,
    REJECTED,
];

/// The durations, in milliseconds.
const LATENCIES: &[&str] = &[
    CLAIM_LATENCY,
    SEND_LATENCY,
    HANDLER_LATENCY,
    MESSAGE_AGE,
    FAILING_MESSAGE_AGE,
];

/// EMF takes at most 100 values of a metric in one document (and the collector keeps no more
/// between flushes): an invocation reports at most this many of each duration.
pub const MAX_SAMPLES: usize = 100;

/// Why a receiver answered 5xx: the `Reason` dimension of `Unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The claim store failed (an error, a throttle, a timeout of the SDK).
    Claim,
    /// The queue did not take every message.
    Send,
    /// The first delivery of an event still holds its claim (503 + Retry-After).
    InFlight,
    /// The claim store or the queue did not answer within `REQUEST_DEADLINE_MS`.
    Deadline,
    /// The receiver is not configured (500).
    Config,
    /// The claim check's object was not written (an event too large for the queue).
    Payload,
    /// The archive (when on) did not take the request.
    Archive,
}

impl Cause {
    pub const ALL: [Cause; 7] = [
        Cause::Claim,
        Cause::Send,
        Cause::InFlight,
        Cause::Deadline,
        Cause::Config,
        Cause::Payload,
        Cause::Archive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Claim => "claim",
            Cause::Send => "send",
            Cause::InFlight => "in_flight",
            Cause::Deadline => "deadline",
            Cause::Config => "config",
            Cause::Payload => "payload",
            Cause::Archive => "archive",
        }
    }
}

/// What one receiver request did beyond its answer: the per-event counts and the latencies.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RequestTally {
    /// Events this request claimed and put on the queue (also when a sibling event failed and
    /// the request was answered 503: these are on the queue).
    pub queued: usize,
    /// Events whose claim met another delivery's live lease (answered 503), or found the event
    /// queued before with other content under the same key (answered as a duplicate).
    pub conflicts: usize,
    /// Why the request was answered 503.
    pub cause: Option<Cause>,
    /// Each conditional claim write that answered, in milliseconds.
    pub claim_ms: Vec<f64>,
    /// The request's send to the queue, if it sent anything.
    pub send_ms: Option<f64>,
}

/// Records one receiver request under `Provider=provider`.
pub fn record_request(provider: &'static str, answer: &Answer, tally: &RequestTally) {
    let count = |name: &'static str, n: usize| {
        if n > 0 {
            counter!(name, PROVIDER => provider).increment(n as u64);
        }
    };
    count(ACCEPTED, tally.queued);
    count(CONFLICT, tally.conflicts);
    match answer {
        Answer::Accepted { duplicates, .. } => count(DUPLICATE, *duplicates),
        Answer::Reply { .. } => count(HANDSHAKE, 1),
        Answer::Unauthorized | Answer::Refused(Refusal::Unauthorized(_)) => count(UNAUTHORIZED, 1),
        Answer::Refused(
            Refusal::BadRequest(_)
            | Refusal::UnsupportedMediaType
            | Refusal::TooManyEvents(_)
            | Refusal::TooLarge(_),
        )
        | Answer::MethodNotAllowed { .. }
        | Answer::PayloadTooLarge => count(BAD_REQUEST, 1),
        Answer::Unavailable { .. } | Answer::Misconfigured => {
            let cause = match answer {
                Answer::Misconfigured => Some(Cause::Config),
                _ => tally.cause,
            };
            debug_assert!(cause.is_some(), "every 503 names its cause");
            if let Some(cause) = cause {
                counter!(UNAVAILABLE, PROVIDER => provider, REASON => cause.as_str()).increment(1);
            }
        }
    }
    samples(CLAIM_LATENCY, provider, tally.claim_ms.iter().copied());
    samples(SEND_LATENCY, provider, tally.send_ms);
}

/// How one processor record ended, in metric terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordMetric {
    Processed,
    Failed,
    Rejected,
    /// A redelivery of an event already processed: acknowledged, counted in none.
    Skipped,
    /// Refused by the trust check: counted in `Refused`, without a `Provider` (a refused
    /// message's provider is what it claimed, not what it is).
    Refused,
}

/// What one processor record did.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordTally {
    /// From the envelope; [`UNKNOWN_PROVIDER`] when unreadable.
    pub provider: &'static str,
    pub outcome: RecordMetric,
    pub handler_ms: Option<f64>,
    /// Now minus the record's SQS `SentTimestamp`.
    pub age_ms: Option<f64>,
}

/// Records one processor batch.
pub fn record_batch(records: &[RecordTally]) {
    for r in records {
        let name = match r.outcome {
            RecordMetric::Processed => PROCESSED,
            RecordMetric::Failed => FAILED,
            RecordMetric::Rejected => REJECTED,
            RecordMetric::Skipped => continue,
            RecordMetric::Refused => {
                counter!(REFUSED).increment(1);
                continue;
            }
        };
        counter!(name, PROVIDER => r.provider).increment(1);
    }
    // At most MAX_SAMPLES values of each duration in all (so in each provider's document too).
    for (name, values) in [
        (
            HANDLER_LATENCY,
            records.iter().map(|r| r.handler_ms).collect::<Vec<_>>(),
        ),
        (MESSAGE_AGE, records.iter().map(|r| r.age_ms).collect()),
    ] {
        for (r, value) in records
            .iter()
            .zip(values)
            .filter_map(|(r, v)| Some((r, v?)))
            .take(MAX_SAMPLES)
        {
            histogram!(name, PROVIDER => r.provider).record(value);
        }
    }
    for age in records
        .iter()
        .filter(|r| r.outcome == RecordMetric::Failed)
        .filter_map(|r| r.age_ms)
        .take(MAX_SAMPLES)
    {
        histogram!(FAILING_MESSAGE_AGE).record(age);
    }
}

/// Up to [`MAX_SAMPLES`] values of `name`.
fn samples(name: &'static str, provider: &'static str, values: impl IntoIterator<Item = f64>) {
    for value in values.into_iter().take(MAX_SAMPLES) {
        histogram!(name, PROVIDER => provider).record(value);
    }
}

/// A duration in (fractional) milliseconds.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `name` as a `Provider` value: one of `known` (the providers of this deployment), else
/// [`UNKNOWN_PROVIDER`], so that a message naming anything else cannot add a dimension value.
pub fn provider_label(name: &str, known: &[&'static str]) -> &'static str {
    known
        .iter()
        .find(|k| **k == name)
        .copied()
        .unwrap_or(UNKNOWN_PROVIDER)
}

/// The namespace from `METRICS_NAMESPACE`, else [`DEFAULT_NAMESPACE`]. CloudWatch refuses (and EMF
/// then silently drops) a namespace over 255 characters, with other characters than letters,
/// digits and `. - _ / # :` or space, or starting with `AWS/`: such a value is refused here,
/// with the reason, and the default used.
pub fn namespace(env: &Env) -> (String, Option<String>) {
    let Some(value) = env.get(NAMESPACE_VAR) else {
        return (DEFAULT_NAMESPACE.to_owned(), None);
    };
    let valid = value.len() <= 255
        && !value.starts_with("AWS/")
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c));
    if valid {
        (value.to_owned(), None)
    } else {
        (
            DEFAULT_NAMESPACE.to_owned(),
            Some(format!(
                "{NAMESPACE_VAR} is not a valid CloudWatch namespace; using {DEFAULT_NAMESPACE}"
            )),
        )
    }
}

static COLLECTOR: OnceLock<&'static Collector> = OnceLock::new();

/// Installs the EMF collector as the process's recorder (cold start of a function). Later calls
/// change nothing.
pub fn init(env: &Env) {
    if COLLECTOR.get().is_some() {
        return;
    }
    let (namespace, problem) = namespace(env);
    if let Some(problem) = problem {
        tracing::error!(problem = %problem, "metrics namespace");
    }
    match metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace(namespace)
        .init()
    {
        Ok(collector) => {
            let _ = COLLECTOR.set(collector);
            // The units of the documents (the collector ignores descriptions).
            for name in COUNTS {
                describe_counter!(*name, Unit::Count, "");
            }
            for name in LATENCIES {
                describe_histogram!(*name, Unit::Milliseconds, "");
            }
        }
        Err(e) => tracing::error!(error = %e, "metrics recorder not installed; no metrics"),
    }
}

/// Writes what this invocation recorded to stdout, one EMF document per dimension set (none when
/// nothing was recorded), with the invocation's request id as the `RequestId` property (not a
/// dimension). The documents are written with one locked write, so no log line lands inside one.
pub fn flush(request_id: Option<&str>) {
    let Some(collector) = COLLECTOR.get() else {
        return;
    };
    if let Some(id) = request_id {
        collector.set_property("RequestId", id);
    }
    let mut documents = Vec::with_capacity(1024);
    // Writing to a Vec cannot fail.
    let _ = collector.flush(&mut documents);
    if documents.is_empty() {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&documents).and_then(|()| stdout.flush());
}

#[cfg(test)]
pub(crate) mod testing {
    //! A recorder that keeps what it is given, installed for one closure on this thread.

    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
        SharedString, Unit,
    };

    #[derive(Debug, Clone, PartialEq)]
    pub struct Sample {
        pub name: String,
        pub labels: Vec<(String, String)>,
        pub value: f64,
    }

    #[derive(Default, Clone)]
    pub struct Seen(Arc<Mutex<Vec<Sample>>>);

    struct Handle {
        name: String,
        labels: Vec<(String, String)>,
        seen: Seen,
    }

    impl Handle {
        fn push(&self, value: f64) {
            self.seen.0.lock().unwrap().push(Sample {
                name: self.name.clone(),
                labels: self.labels.clone(),
                value,
            });
        }
    }

    impl CounterFn for Handle {
        fn increment(&self, value: u64) {
            self.push(value as f64)
        }
        fn absolute(&self, _: u64) {
            unimplemented!("not used")
        }
    }

    impl HistogramFn for Handle {
        fn record(&self, value: f64) {
            self.push(value)
        }
    }

    impl Seen {
        fn handle(&self, key: &Key) -> Arc<Handle> {
            Arc::new(Handle {
                name: key.name().to_owned(),
                labels: key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect(),
                seen: self.clone(),
            })
        }

        /// Runs `f` with this recorder on this thread.
        pub fn during<T>(&self, f: impl FnOnce() -> T) -> T {
            metrics::with_local_recorder(self, f)
        }

        /// Runs `future` to completion on a current-thread runtime with this recorder (tokio's
        /// time paused: deadlines pass at once when nothing else is left to do).
        pub fn during_async<F: std::future::Future>(&self, future: F) -> F::Output {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            self.during(|| runtime.block_on(future))
        }

        pub fn samples(&self) -> Vec<Sample> {
            self.0.lock().unwrap().clone()
        }

        /// The sum of counter `name` under these labels (all labels, in order).
        pub fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
            self.values(name, labels).iter().sum()
        }

        pub fn values(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
            self.samples()
                .into_iter()
                .filter(|s| {
                    s.name == name
                        && s.labels.len() == labels.len()
                        && s.labels
                            .iter()
                            .zip(labels)
                            .all(|((k, v), (lk, lv))| k == lk && v == lv)
                })
                .map(|s| s.value)
                .collect()
        }

        /// Every metric name seen.
        pub fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = self.samples().into_iter().map(|s| s.name).collect();
            names.sort();
            names.dedup();
            names
        }
    }

    impl Recorder for Seen {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(self.handle(key))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            unimplemented!("no gauges")
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(self.handle(key))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Seen;
    use super::*;
    use crate::verify::AuthFailure;
    use lambda_http::http::StatusCode;

    fn accepted(queued: usize, duplicates: usize) -> Answer {
        Answer::Accepted {
            event_id: None,
            queued,
            duplicates,
            events: queued + duplicates,
            ack: None,
        }
    }

    #[test]
    fn each_answer_is_counted_once_under_its_name() {
        let p = [(PROVIDER, "trybe")];
        let cases: Vec<(Answer, &str)> = vec![
            (
                Answer::Reply {
                    status: StatusCode::OK,
                    body: serde_json::json!({}),
                },
                HANDSHAKE,
            ),
            (Answer::Unauthorized, UNAUTHORIZED),
            (
                Answer::Refused(Refusal::Unauthorized(AuthFailure::TenantRefused)),
                UNAUTHORIZED,
            ),
            (
                Answer::Refused(Refusal::BadRequest("x".into())),
                BAD_REQUEST,
            ),
            (Answer::Refused(Refusal::UnsupportedMediaType), BAD_REQUEST),
            (Answer::Refused(Refusal::TooManyEvents(3)), BAD_REQUEST),
            (Answer::PayloadTooLarge, BAD_REQUEST),
            (
                Answer::MethodNotAllowed {
                    allow: "POST".into(),
                },
                BAD_REQUEST,
            ),
        ];
        for (answer, name) in cases {
            let seen = Seen::default();
            seen.during(|| record_request("trybe", &answer, &RequestTally::default()));
            assert_eq!(seen.count(name, &p), 1.0, "{answer:?}");
            assert_eq!(seen.names(), vec![name.to_owned()], "{answer:?}");
        }
    }

    #[test]
    fn events_are_counted_per_event_and_duplicates_only_when_acknowledged() {
        let p = [(PROVIDER, "tilby")];
        let seen = Seen::default();
        let tally = RequestTally {
            queued: 78,
            claim_ms: vec![1.5; 80],
            send_ms: Some(12.0),
            ..Default::default()
        };
        seen.during(|| record_request("tilby", &accepted(78, 2), &tally));
        assert_eq!(seen.count(ACCEPTED, &p), 78.0);
        assert_eq!(seen.count(DUPLICATE, &p), 2.0);
        assert_eq!(seen.values(CLAIM_LATENCY, &p).len(), 80);
        assert_eq!(seen.values(SEND_LATENCY, &p), vec![12.0]);
        assert_eq!(seen.count(CONFLICT, &p), 0.0);

        // A 503 after two of three events were queued and one met a live lease: the queued ones
        // count, nothing is acknowledged as a duplicate.
        let seen = Seen::default();
        let tally = RequestTally {
            queued: 2,
            conflicts: 1,
            cause: Some(Cause::InFlight),
            ..Default::default()
        };
        let answer = Answer::Unavailable {
            retry_after_secs: 3,
        };
        seen.during(|| record_request("tilby", &answer, &tally));
        assert_eq!(seen.count(ACCEPTED, &p), 2.0);
        assert_eq!(seen.count(CONFLICT, &p), 1.0);
        assert_eq!(
            seen.count(UNAVAILABLE, &[(PROVIDER, "tilby"), (REASON, "in_flight")]),
            1.0
        );
        assert!(!seen.names().contains(&DUPLICATE.to_owned()));
    }

    #[test]
    fn a_misconfigured_receiver_is_unavailable_for_config() {
        let seen = Seen::default();
        seen.during(|| record_request("tribe", &Answer::Misconfigured, &RequestTally::default()));
        assert_eq!(
            seen.count(UNAVAILABLE, &[(PROVIDER, "tribe"), (REASON, "config")]),
            1.0
        );
    }

    #[test]
    fn at_most_the_emf_limit_of_values_per_invocation() {
        let seen = Seen::default();
        let tally = RequestTally {
            queued: 200,
            claim_ms: vec![2.0; 200],
            ..Default::default()
        };
        seen.during(|| record_request("tilby", &accepted(200, 0), &tally));
        assert_eq!(
            seen.values(CLAIM_LATENCY, &[(PROVIDER, "tilby")]).len(),
            MAX_SAMPLES
        );
        assert_eq!(seen.count(ACCEPTED, &[(PROVIDER, "tilby")]), 200.0);

        let records: Vec<RecordTally> = (0..150)
            .map(|i| RecordTally {
                provider: if i % 2 == 0 { "trybe" } else { "tribe" },
                outcome: RecordMetric::Processed,
                handler_ms: Some(1.0),
                age_ms: Some(5.0),
            })
            .collect();
        let seen = Seen::default();
        seen.during(|| record_batch(&records));
        let handler = |p| seen.values(HANDLER_LATENCY, &[(PROVIDER, p)]).len();
        assert_eq!(handler("trybe") + handler("tribe"), MAX_SAMPLES);
        assert_eq!(seen.count(PROCESSED, &[(PROVIDER, "trybe")]), 75.0);
    }

    #[test]
    fn a_batch_counts_each_record_under_its_provider() {
        let record = |provider, outcome, handler_ms| RecordTally {
            provider,
            outcome,
            handler_ms,
            age_ms: Some(40.0),
        };
        let records = [
            record("trybe", RecordMetric::Processed, Some(3.0)),
            record("trybe", RecordMetric::Failed, Some(4.0)),
            record("tilby", RecordMetric::Skipped, None),
            record(UNKNOWN_PROVIDER, RecordMetric::Rejected, None),
        ];
        let seen = Seen::default();
        seen.during(|| record_batch(&records));
        assert_eq!(seen.count(PROCESSED, &[(PROVIDER, "trybe")]), 1.0);
        assert_eq!(seen.count(FAILED, &[(PROVIDER, "trybe")]), 1.0);
        assert_eq!(seen.count(REJECTED, &[(PROVIDER, "unknown")]), 1.0);
        assert_eq!(
            seen.values(HANDLER_LATENCY, &[(PROVIDER, "trybe")]),
            vec![3.0, 4.0]
        );
        assert_eq!(seen.values(MESSAGE_AGE, &[(PROVIDER, "tilby")]), vec![40.0]);
        // Only the failed record's age, without a dimension (RetryHorizonAlarm's metric).
        assert_eq!(seen.values(FAILING_MESSAGE_AGE, &[]), vec![40.0]);
        assert_eq!(
            seen.names(),
            vec![
                FAILED,
                FAILING_MESSAGE_AGE,
                HANDLER_LATENCY,
                MESSAGE_AGE,
                PROCESSED,
                REJECTED
            ]
        );
    }

    #[test]
    fn only_known_providers_become_a_dimension_value() {
        let known = ["trybe", "tilby"];
        assert_eq!(provider_label("trybe", &known), "trybe");
        assert_eq!(provider_label("TRYBE", &known), UNKNOWN_PROVIDER);
        assert_eq!(provider_label("site-123", &known), UNKNOWN_PROVIDER);
    }

    #[test]
    fn the_namespace_comes_from_the_environment_and_an_invalid_one_is_refused() {
        let env = |v: &str| Env::from_pairs([(NAMESPACE_VAR, v)]);
        assert_eq!(namespace(&Env::default()), (DEFAULT_NAMESPACE.into(), None));
        assert_eq!(namespace(&env("  ")).0, DEFAULT_NAMESPACE);
        assert_eq!(
            namespace(&env("Intake/prod-1")),
            ("Intake/prod-1".into(), None)
        );
        for bad in ["AWS/Lambda", "intake{prod}", "é", &"x".repeat(256)] {
            let (ns, problem) = namespace(&env(bad));
            assert_eq!(ns, DEFAULT_NAMESPACE, "{bad}");
            assert!(problem.is_some(), "{bad}");
        }
    }

    #[test]
    fn reasons_are_a_small_fixed_set() {
        let names: Vec<&str> = Cause::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "claim",
                "send",
                "in_flight",
                "deadline",
                "config",
                "payload",
                "archive"
            ]
        );
    }
}

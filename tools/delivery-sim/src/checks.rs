//! The invariants, checked on the log of a finished run (docs/design.md "Invariants"):
//! 1. every event answered 2xx runs its handler (nothing lost): a message queued by a delivery
//!    received before the answer runs within the horizon before the answer or later, or is
//!    skipped by the processor against such a run; and the processor skips a message only when
//!    its event ran within the horizon before;
//! 2. within its horizon an event runs once, except after a processor finish that did not land
//!    (counted as excused);
//! 3. nothing forged and nothing under another tenant's credential is accepted or runs;
//! 4. no claim blocks its event forever: in the quiet phase every authentic event gets a 2xx;
//! 5. a replay runs once per replay id;
//! 6. with the archive on, every accepted request has its record;
//! 8. Retry-After tells the truth: after a 503 for a failure of ours, the retry it asks for,
//!    with nothing failing, is accepted (the request gave its claims back);
//!    and the queues drain once the faults stop.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shared::objects::ArchiveRecord;
use shared::store::processed_key;

use crate::aws::Sqs;
use crate::senders::Event;
use crate::world::{Run, World};
use crate::Plan;

/// Seconds of slack on the horizon: expiry is compared in whole seconds.
const SLACK_MS: i64 = 2_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    /// The dedup key it concerns (what to look for in the trace).
    pub key: String,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub seed: u64,
    pub deliveries: u64,
    pub invocations: u64,
    pub runs: usize,
    pub simulated: Duration,
    pub faults: u64,
    pub crashes: u64,
    pub ttl_deletes: u64,
    pub dlq_moves: u64,
    /// The downstream outage of this run, if it had one: its length.
    pub outage: Option<Duration>,
    /// From the outage's end to the last run of an event received before it ended: how long
    /// the waits kept the backlog back (the simulated processor takes no time itself).
    pub outage_drain: Option<Duration>,
    /// Messages of a compromised receiver, each refused into the DLQ.
    pub refused: usize,
    /// Second runs within the horizon after a processor finish that did not land.
    pub excused: usize,
    pub violations: Vec<Violation>,
    pub trace: Vec<String>,
}

/// Invariant 4, recorded by a sender in the quiet phase.
pub fn blocked(world: &World, event: &Event, why: &str) {
    world.note(|| format!("BLOCKED {:?}: {why}", event.keys));
    let detail = format!("{} event #{}: {why}", event.provider, event.n);
    world.log(|l| l.blocked.push((event.keys[0].clone(), detail)));
}

/// What excuses a second run of one claim within the horizon: the earlier run's claim was never
/// marked PROCESSED before the later one, because its finish failed or its invocation was
/// dropped after the handler (the README's documented case). Anything else is a violation.
struct Excuses<'l> {
    marks: &'l [(String, i64)],
    finish_failures: &'l [(String, i64)],
    dropped: &'l [(String, i64)],
}

impl Excuses<'_> {
    fn excused(&self, pk: &str, key: &str, earlier: &Run, later: &Run) -> bool {
        let within = |at: i64| at >= earlier.at_ms && at <= later.at_ms;
        let marked = self.marks.iter().any(|(k, at)| k == pk && within(*at));
        let failed = self
            .finish_failures
            .iter()
            .any(|(k, at)| k == pk && within(*at))
            || self.dropped.iter().any(|(k, at)| k == key && within(*at));
        !marked && failed
    }
}

fn runs_once(
    runs: &[&Run],
    pk: &str,
    excuses: &Excuses<'_>,
    horizon_ms: i64,
    what: &'static str,
    violations: &mut Vec<Violation>,
) -> usize {
    let mut excused = 0;
    for pair in runs.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.at_ms - a.at_ms >= horizon_ms - SLACK_MS {
            continue;
        }
        if excuses.excused(pk, &a.dedup_key, a, b) {
            excused += 1;
        } else {
            violations.push(Violation {
                invariant: what,
                key: a.dedup_key.clone(),
                detail: format!(
                    "ran at +{} ms and again at +{} ms, within the horizon, with no failed finish between",
                    a.at_ms - crate::world::EPOCH_MS,
                    b.at_ms - crate::world::EPOCH_MS
                ),
            });
        }
    }
    excused
}

/// The latest run at or before `at_ms`.
fn last_run_before(runs: &[&Run], at_ms: i64) -> Option<i64> {
    runs.iter().map(|r| r.at_ms).filter(|at| *at <= at_ms).max()
}

pub fn check(
    seed: u64,
    plan: &Plan,
    world: &World,
    sqs: &Sqs,
    archived: &BTreeMap<String, Vec<u8>>,
) -> Report {
    let log = world.log.lock().expect("log");
    let horizon_ms = plan.horizon.as_millis() as i64;
    let mut violations: Vec<Violation> = log
        .blocked
        .iter()
        .map(|(key, detail)| Violation {
            invariant: "no claim blocks its event forever",
            key: key.clone(),
            detail: detail.clone(),
        })
        .chain(log.held.iter().map(|(key, detail)| Violation {
            invariant: "Retry-After tells the truth after a failure of ours",
            key: key.clone(),
            detail: detail.clone(),
        }))
        .collect();
    let mut by_key: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    let mut by_replay: BTreeMap<(&str, &str), Vec<&Run>> = BTreeMap::new();
    for run in &log.runs {
        if run.forged {
            violations.push(Violation {
                invariant: "nothing forged runs",
                key: run.dedup_key.clone(),
                detail: format!("event {} ran", run.event_id),
            });
        }
        match &run.replay {
            None => by_key.entry(&run.dedup_key).or_default().push(run),
            Some(id) => by_replay
                .entry((id.as_str(), run.dedup_key.as_str()))
                .or_default()
                .push(run),
        }
    }

    // 1b: the processor skips a message only when its event ran within the horizon before.
    let mut skips_by_key: BTreeMap<&str, Vec<&crate::world::Skip>> = BTreeMap::new();
    for skip in &log.skips {
        skips_by_key.entry(&skip.dedup_key).or_default().push(skip);
        let runs: &[&Run] = by_key
            .get(skip.dedup_key.as_str())
            .map_or(&[], |r| r.as_slice());
        let vouched = last_run_before(runs, skip.at_ms)
            .is_some_and(|r| r >= skip.at_ms - horizon_ms - SLACK_MS);
        if !vouched {
            violations.push(Violation {
                invariant: "the processor skips only what ran within the horizon",
                key: skip.dedup_key.clone(),
                detail: format!(
                    "skipped at +{} ms with no run in the horizon before",
                    skip.at_ms - crate::world::EPOCH_MS
                ),
            });
        }
    }

    // 1 and 3: every 2xx.
    let archived_events: BTreeSet<(String, String)> = archived
        .values()
        .filter_map(|bytes| serde_json::from_slice::<ArchiveRecord>(bytes).ok())
        .flat_map(|r| {
            r.events
                .into_iter()
                .map(|e| (e.dedup_key, e.received_at))
                .collect::<Vec<_>>()
        })
        .collect();
    for answer in &log.answers {
        let Some(status) = answer.status.filter(|s| (200..300).contains(s)) else {
            continue;
        };
        if !answer.authentic {
            violations.push(Violation {
                invariant: "nothing forged is accepted",
                key: answer.keys[0].clone(),
                detail: format!("sender #{} answered {status}", answer.sender),
            });
            continue;
        }
        for key in &answer.keys {
            // A message some delivery queued before the answer was given, run within the
            // horizon before the answer or later, or skipped as already run by the processor
            // whose run then was within that horizon. A run that only a later delivery caused
            // does not vouch for this answer.
            let runs: &[&Run] = by_key.get(key.as_str()).map_or(&[], |r| r.as_slice());
            let since = answer.at_ms - horizon_ms - SLACK_MS;
            let ran = runs
                .iter()
                .any(|r| r.received_ms <= answer.at_ms && r.at_ms >= since)
                || skips_by_key.get(key.as_str()).is_some_and(|skips| {
                    skips.iter().any(|s| {
                        s.received_ms <= answer.at_ms
                            && last_run_before(runs, s.at_ms).is_some_and(|r| r >= since)
                    })
                });
            if !ran {
                violations.push(Violation {
                    invariant: "every event answered 2xx runs (nothing lost)",
                    key: key.clone(),
                    detail: format!(
                        "sender #{} answered {status} at +{} ms; no run since the horizon before",
                        answer.sender,
                        answer.at_ms - crate::world::EPOCH_MS
                    ),
                });
            }
            if plan.archive {
                let received_at = shared::clock::rfc3339(
                    time::OffsetDateTime::from_unix_timestamp_nanos(
                        i128::from(answer.received_at_ms) * 1_000_000,
                    )
                    .expect("time"),
                );
                if !archived_events.contains(&(key.clone(), received_at.clone())) {
                    violations.push(Violation {
                        invariant: "every accepted request is archived",
                        key: key.clone(),
                        detail: format!(
                            "sender #{} answered {status}; no archive record received at {received_at}",
                            answer.sender
                        ),
                    });
                }
            }
        }
    }

    // 2 and 5: once within the horizon, once per replay.
    let excuses = Excuses {
        marks: &log.processed_marks,
        finish_failures: &log.finish_failures,
        dropped: &log.dropped,
    };
    let mut excused = 0;
    for (key, runs) in &by_key {
        excused += runs_once(
            runs,
            &processed_key(key),
            &excuses,
            horizon_ms,
            "an event runs once within its horizon",
            &mut violations,
        );
    }
    for (id, key) in &log.replays {
        let runs = by_replay
            .get(&(id.as_str(), key.as_str()))
            .cloned()
            .unwrap_or_default();
        if runs.is_empty() {
            violations.push(Violation {
                invariant: "a replay runs once per replay id",
                key: key.clone(),
                detail: format!("replay {id} never ran"),
            });
        }
        let pk = format!("{}#replay#{id}", processed_key(key));
        excused += runs_once(
            &runs,
            &pk,
            &excuses,
            horizon_ms,
            "a replay runs once per replay id",
            &mut violations,
        );
    }

    // Every message a compromised receiver sent was refused into the DLQ (none ran: "nothing
    // forged runs" above), and no redrive took it back.
    let refused = sqs.refused_bodies();
    for body in &log.rogues {
        if !refused.contains(body) {
            violations.push(Violation {
                invariant: "a message its sender may not send is refused into the DLQ",
                key: String::new(),
                detail: format!(
                    "rogue message not refused: {}",
                    &body[..body.len().min(200)]
                ),
            });
        }
    }

    if let Some(outage) = plan.outage.filter(|o| o.length < crate::aws::RETRY_HORIZON) {
        // After the outage, each event waits at most its current wait (the longest, an hour
        // plus its jitter), then runs: the README's worst case.
        let backoff = shared::queue::Backoff::default();
        let worst = backoff.cap.mul_f64(1.0 + backoff.jitter) + Duration::from_secs(120);
        let end_ms = crate::world::EPOCH_MS + (outage.start + outage.length).as_millis() as i64;
        for run in log.runs.iter().filter(|r| r.replay.is_none()) {
            let waited = run.at_ms - end_ms.max(run.received_ms);
            if run.received_ms < end_ms && run.at_ms > end_ms && waited > worst.as_millis() as i64 {
                violations.push(Violation {
                    invariant: "after an outage an event runs within one wait",
                    key: run.dedup_key.clone(),
                    detail: format!(
                        "ran {:.0} min after the outage ended (at most {:.0})",
                        waited as f64 / 60_000.0,
                        worst.as_secs_f64() / 60.0
                    ),
                });
            }
        }
        if log.dlq_moves > 0 {
            violations.push(Violation {
                invariant: "an outage shorter than the retry horizon moves nothing to the DLQ",
                key: String::new(),
                detail: format!(
                    "{} message(s) reached the DLQ through maxReceiveCount ({}) in an outage of {:.1} h",
                    log.dlq_moves,
                    crate::aws::max_receive_count(),
                    outage.length.as_secs_f64() / 3600.0
                ),
            });
        }
    }
    let (live, dlq) = sqs.depth();
    if live + dlq > 0 {
        violations.push(Violation {
            invariant: "the queues drain once the faults stop",
            key: String::new(),
            detail: format!("{live} message(s) in the queue, {dlq} in the DLQ at the end"),
        });
    }
    Report {
        seed,
        deliveries: log.deliveries,
        invocations: log.invocations,
        runs: log.runs.len(),
        simulated: world.clock.elapsed(),
        faults: log.faults,
        crashes: log.crashes,
        ttl_deletes: log.ttl_deletes,
        dlq_moves: log.dlq_moves,
        outage: plan.outage.map(|o| o.length),
        outage_drain: plan.outage.map(|o| {
            let end_ms = crate::world::EPOCH_MS + (o.start + o.length).as_millis() as i64;
            let last = log
                .runs
                .iter()
                .filter(|r| r.received_ms < end_ms && r.replay.is_none())
                .map(|r| r.at_ms)
                .max()
                .unwrap_or(end_ms);
            Duration::from_millis(last.saturating_sub(end_ms).max(0) as u64)
        }),
        refused: log.rogues.len(),
        excused,
        violations,
        trace: Vec::new(),
    }
}

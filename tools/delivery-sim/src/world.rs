//! The simulated world: one clock (tokio's paused time, read as wall time by the code under
//! test), one random stream, the faults every remote call may meet, and the log the invariants
//! are checked against.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::rng::Rng;

/// 2026-01-01T00:00:00Z: where every run's clock starts.
pub const EPOCH_MS: i64 = 1_767_225_600_000;

/// Wall time read off tokio's clock: with paused time, both move together and jump when every
/// task waits, so a simulated week costs only the work done in it.
#[derive(Debug)]
pub struct SimClock {
    start: Instant,
}

impl SimClock {
    pub fn new() -> Self {
        SimClock {
            start: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn now_ms(&self) -> i64 {
        EPOCH_MS + self.elapsed().as_millis() as i64
    }

    /// The tokio instant at which wall time reaches `epoch_s` (seconds).
    pub fn instant_at_epoch_s(&self, epoch_s: i64) -> Instant {
        let ms = (epoch_s * 1000 - EPOCH_MS).max(0) as u64;
        self.start + Duration::from_millis(ms)
    }

    pub fn at(&self, since_start: Duration) -> Instant {
        self.start + since_start
    }
}

impl Default for SimClock {
    fn default() -> Self {
        SimClock::new()
    }
}

impl shared::clock::Clock for SimClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.now_ms()) * 1_000_000)
            .expect("simulated time in range")
    }
}

/// What one remote call meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Fails before the service applies it.
    FailBefore,
    /// The service applies it; the answer is lost on the way back.
    AnswerLost,
    /// Applied and answered, seconds late (past a receiver's deadline, often).
    Late,
    /// Never applied, never answered.
    Hang,
}

/// How often things go wrong in one run (drawn from its seed).
#[derive(Debug, Clone, Copy)]
pub struct Weather {
    /// Probability that a remote call meets a fault.
    pub fault_rate: f64,
    /// Probability that an invocation is dropped at a random point (Lambda timeout, instance
    /// death).
    pub crash_rate: f64,
    /// Probability that SQS hands a message out twice.
    pub duplicate_rate: f64,
}

/// One handler run, as the recording wrapper saw it.
#[derive(Debug, Clone)]
pub struct Run {
    pub dedup_key: String,
    pub replay: Option<String>,
    pub at_ms: i64,
    /// When the delivery that queued this message was received (the envelope's `received_at`).
    pub received_ms: i64,
    /// The payload carried a forger's mark.
    pub forged: bool,
    pub event_id: String,
}

/// A message the processor acknowledged without running its handler (its record said the
/// event had run).
#[derive(Debug, Clone)]
pub struct Skip {
    pub dedup_key: String,
    pub at_ms: i64,
    /// When the delivery that queued the message was received.
    pub received_ms: i64,
}

/// One answer a sender got.
#[derive(Debug, Clone)]
pub struct Answered {
    pub sender: usize,
    pub keys: Vec<String>,
    pub at_ms: i64,
    /// 2xx; `None`: no answer (timed out, crashed).
    pub status: Option<u16>,
    pub authentic: bool,
    /// The `received_at` the receiver stamped (its clock at the request), for the archive check.
    pub received_at_ms: i64,
}

#[derive(Debug, Default)]
pub struct Log {
    pub runs: Vec<Run>,
    pub skips: Vec<Skip>,
    pub answers: Vec<Answered>,
    /// `processed#…` claims moved to PROCESSED: (pk, when).
    pub processed_marks: Vec<(String, i64)>,
    /// Processor finishes (`processed#…` → PROCESSED) that failed: (pk, when).
    pub finish_failures: Vec<(String, i64)>,
    /// Dedup keys of processor invocations dropped (crash, timeout): (key, when).
    pub dropped: Vec<(String, i64)>,
    /// Replays queued by the operator: (replay id, dedup key).
    pub replays: Vec<(String, String)>,
    /// Bodies a compromised receiver put on the queue.
    pub rogues: Vec<String>,
    /// Authentic events not answered 2xx in the quiet phase: (key, why).
    pub blocked: Vec<(String, String)>,
    /// Retries after a 503 for a failure of ours, with nothing failing, not accepted:
    /// (key, why).
    pub held: Vec<(String, String)>,
    pub deliveries: u64,
    pub invocations: u64,
    pub faults: u64,
    pub crashes: u64,
    pub ttl_deletes: u64,
    pub dlq_moves: u64,
    pub redriven: u64,
}

/// A fault a scripted check puts on the next `call` whose subject names `key`.
#[derive(Debug, Clone)]
pub struct Forced {
    pub call: &'static str,
    pub key: String,
    pub fault: Fault,
}

pub struct World {
    pub clock: Arc<SimClock>,
    forced: Mutex<Vec<Forced>>,
    rng: Mutex<Rng>,
    weather: Mutex<Option<Weather>>,
    pub log: Mutex<Log>,
    trace: Option<Mutex<Vec<String>>>,
}

impl World {
    pub fn new(seed: u64, weather: Weather, trace: bool) -> Arc<Self> {
        Arc::new(World {
            clock: Arc::new(SimClock::new()),
            forced: Mutex::new(Vec::new()),
            rng: Mutex::new(Rng::new(seed)),
            weather: Mutex::new(Some(weather)),
            log: Mutex::new(Log::default()),
            trace: trace.then(|| Mutex::new(Vec::new())),
        })
    }

    pub fn rng<T>(&self, f: impl FnOnce(&mut Rng) -> T) -> T {
        f(&mut self.rng.lock().expect("rng"))
    }

    pub fn log<T>(&self, f: impl FnOnce(&mut Log) -> T) -> T {
        f(&mut self.log.lock().expect("log"))
    }

    /// Stops every fault, crash and duplicate delivery: the quiet phase, in which the system
    /// must settle.
    pub fn calm(&self) {
        *self.weather.lock().expect("weather") = None;
        self.note(|| "faults stop".into());
    }

    pub fn weather(&self) -> Option<Weather> {
        *self.weather.lock().expect("weather")
    }

    pub fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    /// Adds a step to the trace (built only when tracing).
    pub fn note(&self, line: impl FnOnce() -> String) {
        if let Some(trace) = &self.trace {
            let at = format_elapsed(self.clock.elapsed());
            let line = redact_tokens(&line());
            trace.lock().expect("trace").push(format!("{at} {line}"));
        }
    }

    pub fn trace_lines(&self) -> Vec<String> {
        self.trace
            .as_ref()
            .map(|t| t.lock().expect("trace").clone())
            .unwrap_or_default()
    }

    /// Puts `fault` on the next `call` whose subject names `key` (drawing nothing from the
    /// random stream).
    pub fn force(&self, call: &'static str, key: &str, fault: Fault) {
        self.forced.lock().expect("forced").push(Forced {
            call,
            key: key.to_owned(),
            fault,
        });
    }

    pub fn has_forced(&self) -> bool {
        !self.forced.lock().expect("forced").is_empty()
    }

    fn forced_fault(&self, call: &str, subject: &str) -> Option<Fault> {
        let mut forced = self.forced.lock().expect("forced");
        let i = forced
            .iter()
            .position(|f| f.call == call && subject.contains(&f.key))?;
        Some(forced.remove(i).fault)
    }

    pub fn fault(&self) -> Fault {
        let Some(w) = self.weather() else {
            return Fault::None;
        };
        self.rng(|r| {
            if !r.chance(w.fault_rate) {
                return Fault::None;
            }
            match r.below(10) {
                0..=3 => Fault::FailBefore,
                4..=6 => Fault::AnswerLost,
                7..=8 => Fault::Late,
                _ => Fault::Hang,
            }
        })
    }

    /// When an invocation starting now is dropped, if it is: a crash at a random point.
    pub fn crash_after(&self) -> Option<Duration> {
        let w = self.weather()?;
        self.rng(|r| {
            r.chance(w.crash_rate)
                .then(|| Duration::from_millis(r.between(0, 60)))
        })
    }

    /// One remote call: the request travels, the service applies `apply` (in a task of its own,
    /// so a caller that gives up does not stop it), the answer travels back, each leg with its
    /// latency and the call's fault.
    pub async fn remote<T: Send + 'static>(
        self: &Arc<Self>,
        call: &str,
        subject: &str,
        apply: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, String> {
        let fault = self
            .forced_fault(call, subject)
            .unwrap_or_else(|| self.fault());
        let (there, back) = self.rng(|r| {
            let leg = |r: &mut Rng| Duration::from_millis(r.between(1, 15));
            let there = match fault {
                Fault::Late => Duration::from_millis(r.between(2_000, 20_000)),
                _ => leg(r),
            };
            (there, leg(r))
        });
        if fault != Fault::None {
            self.log(|l| l.faults += 1);
            self.note(|| format!("{call} {subject}: fault {fault:?}"));
        }
        let (tx, rx) = oneshot::channel();
        if matches!(fault, Fault::None | Fault::AnswerLost | Fault::Late) {
            tokio::spawn(async move {
                tokio::time::sleep(there).await;
                let _ = tx.send(apply.await);
            });
        } else {
            drop(apply);
        }
        match fault {
            Fault::Hang => futures::future::pending().await,
            Fault::FailBefore => {
                tokio::time::sleep(there + back).await;
                Err(format!("{call}: injected failure before it applied"))
            }
            Fault::AnswerLost => {
                let _ = rx.await;
                tokio::time::sleep(back).await;
                Err(format!("{call}: injected failure after it applied"))
            }
            Fault::None | Fault::Late => {
                let answer = rx.await.map_err(|_| format!("{call}: service gone"))?;
                tokio::time::sleep(back).await;
                Ok(answer)
            }
        }
    }
}

pub fn format_elapsed(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    let (s, ms) = (ms / 1000, ms % 1000);
    let (m, s) = (s / 60, s % 60);
    let (h, m) = (m / 60, m % 60);
    let (days, h) = (h / 24, h % 24);
    format!("[d{days} {h:02}:{m:02}:{s:02}.{ms:03}]")
}

/// Claim tokens are random (uuid v4) and decide nothing but ownership; they are left out of the
/// trace so that a seed always prints the same one.
fn redact_tokens(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("token: \"") {
        let (head, tail) = rest.split_at(i + "token: \"".len());
        out.push_str(head);
        out.push('…');
        rest = tail.find('"').map_or("", |j| &tail[j..]);
    }
    out.push_str(rest);
    out
}

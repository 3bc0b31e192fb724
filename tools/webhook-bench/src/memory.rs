//! `memory`: peak memory per scenario, optionally under a memory limit.
//!
//! Each scenario runs in a fresh function process (one cold start, one invocation: a request,
//! or for the processor one SQS batch), spawned as Lambda spawns it under the emulated Runtime
//! API, against the harness's moto, with a fresh table and queue. Reported per scenario: the
//! answer (HTTP status, or the batch's failures), peak RSS (`VmHWM`, sampled while it runs and
//! read at the end), the memory cgroup's peak when a limit is applied, the invocation's CPU and
//! wall time, the target and whether it held, and whether the process was killed or crashed.
//!
//! Targets: a receiver's peak RSS ≤ 3 × its body + 32 MiB; the processor's on a batch of ten
//! 1 MiB messages ≤ 96 MB; on ten claim-checked events ≤ 2 × the largest event + 32 MB
//! (MB = 10^6 bytes, MiB = 2^20).

mod cgroup;
mod scenarios;
mod template;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};
use shared::config::Env;
use time::OffsetDateTime;

use crate::procstat::{self, ms};
use crate::runtime_api::{Answer, Poll, Posted, RuntimeApi};
use crate::setup::{self, moto_call, root, Cgroup};
use cgroup::{Hierarchy, MemStats, MemoryLimit, Version};
use scenarios::{Body, Kind, Scenario, BATCH, BODY_BYTES, MESSAGE_BYTES};

const MIB: u64 = 1024 * 1024;
const MB: u64 = 1_000_000;
/// How often peak RSS and CPU are sampled while the function runs (a process the OOM killer
/// ends has no /proc entry to read afterwards).
const TICK: Duration = Duration::from_millis(10);

#[derive(Args)]
pub struct MemoryArgs {
    /// A scenario (`trybe/json-small`) or a prefix ending in `/` (`trybe/`, `processor/`);
    /// repeatable. Default: every scenario (`--list` names them)
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// Name the scenarios and exit
    #[arg(long)]
    list: bool,
    /// Where the function binaries are (default: the release directory)
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Limit every function process to this much memory (MiB), as a memory cgroup
    #[arg(long, conflicts_with = "limit_from_template")]
    limit_mb: Option<u64>,
    /// Limit each function to its MemorySize in infra/template.yaml (Globals, or its own)
    #[arg(long)]
    limit_from_template: bool,
    /// Exit non-zero if a scenario's process was killed or crashed, gave no answer, a 5xx or
    /// another answer than expected
    #[arg(long)]
    check: bool,
    /// With --check, also fail on a missed target
    #[arg(long, requires = "check")]
    check_targets: bool,
    /// Limit the function to this percentage of one CPU (Lambda: 128 MB ≈ 7.2 %, 256 MB ≈ 14.5 %)
    #[arg(long)]
    cpu_percent: Option<f64>,
    /// CFS period of the CPU limit, µs
    #[arg(long, default_value_t = 100_000)]
    cpu_period_us: u64,
    /// Runs of each scenario (each a fresh process); the worst is reported, every peak noted
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// How long to wait for a function's answer, seconds
    #[arg(long, default_value_t = 300)]
    wait_seconds: u64,
    /// Python with moto[server] (the project venv)
    #[arg(long, default_value = ".venv/bin/python")]
    moto_python: PathBuf,
}

/// One function process's life.
#[derive(Debug, Default)]
struct ProcessRun {
    init_ms: Option<f64>,
    invocations: Vec<Invocation>,
    peak_rss_kib: Option<u64>,
    limit_bytes: Option<u64>,
    memory: Option<MemStats>,
    /// How the process ended, when it did before the harness ended it.
    died: Option<ExitStatus>,
    /// An init error it posted.
    init_error: Option<String>,
    /// It gave no sign of life within the wait.
    timed_out: bool,
    log_tail: String,
}

#[derive(Debug)]
enum Reply {
    Response(Value),
    /// An invocation error it posted.
    Error(String),
    /// No answer: the process died, or the wait ran out.
    Missing,
}

#[derive(Debug)]
struct Invocation {
    reply: Reply,
    cpu_ms: f64,
    wall_ms: f64,
}

impl ProcessRun {
    fn killed(&self) -> bool {
        self.died.and_then(|s| s.signal()) == Some(libc::SIGKILL)
    }

    fn crashed(&self) -> bool {
        (self.died.is_some() && !self.killed()) || self.init_error.is_some()
    }

    fn oom_kills(&self) -> u64 {
        self.memory.map_or(0, |m| m.oom_kills)
    }

    fn fate(&self) -> String {
        if self.killed() {
            if self.oom_kills() > 0 {
                "killed (OOM)".into()
            } else {
                "killed (SIGKILL)".into()
            }
        } else if let Some(status) = self.died {
            match (status.signal(), status.code()) {
                (Some(sig), _) => format!("crashed ({})", signal_name(sig)),
                (None, Some(code)) => format!("exited {code}"),
                _ => "ended".into(),
            }
        } else if self.init_error.is_some() {
            "init error".into()
        } else if self.timed_out {
            "timed out".into()
        } else {
            "ok".into()
        }
    }

    fn first(&self) -> Option<&Invocation> {
        self.invocations.first()
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGTERM => "SIGTERM".into(),
        other => format!("signal {other}"),
    }
}

/// A function to start: the measured run is limited (memory, CPU); a setup run is not.
struct Launch<'a> {
    function: &'a str,
    env: Vec<(String, String)>,
    events: Vec<Vec<u8>>,
    limited: bool,
}

/// One scenario's outcome, as reported.
#[derive(Debug)]
struct Row {
    scenario: String,
    function: String,
    input_bytes: usize,
    event_bytes: usize,
    run: ProcessRun,
    /// HTTP status of a receiver's answer.
    status: Option<u16>,
    /// A receiver's answer body, shortened.
    answer_body: Option<String>,
    expected_status: Option<u16>,
    /// The processor's batchItemFailures, and how many of the batch's events have a
    /// `processed#` record afterwards.
    batch_failures: Option<usize>,
    processed: Option<usize>,
    target_bytes: u64,
    target_text: String,
    /// Setup of the scenario failed: nothing was measured.
    error: Option<String>,
    notes: Vec<String>,
}

impl Row {
    fn new(scenario: &Scenario) -> Row {
        Row {
            scenario: scenario.name.clone(),
            function: scenario.function.to_owned(),
            input_bytes: 0,
            event_bytes: 0,
            run: ProcessRun::default(),
            status: None,
            answer_body: None,
            expected_status: None,
            batch_failures: None,
            processed: None,
            target_bytes: 0,
            target_text: String::new(),
            error: None,
            notes: Vec::new(),
        }
    }

    fn peak_rss_bytes(&self) -> Option<u64> {
        self.run.peak_rss_kib.map(|k| k * 1024)
    }

    fn answered(&self) -> bool {
        matches!(self.run.first().map(|i| &i.reply), Some(Reply::Response(_)))
    }

    /// The target held: the process lived, answered, and its peak RSS is within the target.
    fn held(&self) -> bool {
        self.error.is_none()
            && self.run.died.is_none()
            && self.answered()
            && self
                .peak_rss_bytes()
                .is_some_and(|p| p <= self.target_bytes)
    }

    /// What `--check` fails on.
    /// Every problem: the failures, and a missed target.
    fn problems(&self) -> Vec<String> {
        let mut out = self.failures();
        out.extend(self.target_missed());
        out
    }

    /// What `--check` fails on: a kill, a crash, no answer, a 5xx, a wrong answer, a record not
    /// processed. Not a missed target (peaks vary by a few MiB run to run: that is for the
    /// report and for `--check-targets`).
    fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.error {
            out.push(format!("not measured: {e}"));
            return out;
        }
        if self.run.died.is_some() || self.run.init_error.is_some() {
            out.push(self.run.fate());
        }
        match self.run.first().map(|i| &i.reply) {
            Some(Reply::Response(_)) => {}
            Some(Reply::Error(e)) => out.push(format!("invocation error: {}", shorten(e, 200))),
            Some(Reply::Missing) | None => out.push("no response".into()),
        }
        if let Some(status) = self.status {
            if status >= 500 {
                out.push(format!("answered {status}"));
            }
            if self.expected_status.is_some_and(|e| e != status) {
                out.push(format!(
                    "answered {status}, expected {}",
                    self.expected_status.unwrap_or_default()
                ));
            }
        }
        if let Some(f) = self.batch_failures.filter(|f| *f > 0) {
            out.push(format!("{f} batchItemFailures"));
        }
        if self.answered() && self.processed.is_some_and(|p| p < BATCH) {
            out.push(format!(
                "{} of {BATCH} events processed",
                self.processed.unwrap_or(0)
            ));
        }
        out
    }

    /// The target, when it did not hold.
    fn target_missed(&self) -> Option<String> {
        if self.held() {
            return None;
        }
        Some(match self.peak_rss_bytes() {
            Some(p) if p > self.target_bytes => format!(
                "peak RSS {:.1} MiB over the target {}",
                p as f64 / MIB as f64,
                self.target_text
            ),
            Some(_) => format!("target {} not met (no answer)", self.target_text),
            None => "no peak RSS read".into(),
        })
    }

    /// How bad a run was, to keep the worst of several: not measured, then killed or crashed or
    /// unanswered, then more problems, then the higher peak.
    fn severity(&self) -> (bool, bool, usize, u64) {
        (
            self.error.is_some(),
            self.run.died.is_some() || self.run.init_error.is_some() || !self.answered(),
            self.problems().len(),
            self.peak_rss_bytes().unwrap_or(0),
        )
    }

    fn answer_text(&self) -> String {
        if let Some(e) = &self.error {
            return format!("not measured ({})", shorten(e, 60));
        }
        match (self.status, self.batch_failures) {
            (Some(s), _) => {
                let outcome = self
                    .answer_body
                    .as_deref()
                    .and_then(|b| serde_json::from_str::<Value>(b).ok())
                    .and_then(|v| v["status"].as_str().map(str::to_owned));
                match outcome {
                    Some(o) => format!("{s} {o}"),
                    None => s.to_string(),
                }
            }
            (None, Some(f)) => format!(
                "{f} failures, {}/{BATCH} processed",
                self.processed.unwrap_or(0)
            ),
            (None, None) => match self.run.first().map(|i| &i.reply) {
                Some(Reply::Error(_)) => "invocation error".into(),
                _ => "none".into(),
            },
        }
    }

    fn to_json(&self) -> Value {
        let inv = self.run.first();
        json!({
            "scenario": self.scenario,
            "function": self.function,
            "input_bytes": self.input_bytes,
            "event_bytes": self.event_bytes,
            "answer": self.answer_text(),
            "status": self.status,
            "answer_body": self.answer_body,
            "batch_failures": self.batch_failures,
            "processed": self.processed,
            "peak_rss_kib": self.run.peak_rss_kib,
            "limit_bytes": self.run.limit_bytes,
            "cgroup_peak_bytes": self.run.memory.and_then(|m| m.peak_bytes),
            "cgroup_failcnt": self.run.memory.map(|m| m.failcnt),
            "cgroup_oom_kills": self.run.memory.map(|m| m.oom_kills),
            "init_ms": self.run.init_ms,
            "cpu_ms": inv.map(|i| i.cpu_ms),
            "wall_ms": inv.map(|i| i.wall_ms),
            "target_bytes": self.target_bytes,
            "target": self.target_text,
            "held": self.held(),
            "process": self.run.fate(),
            "killed": self.run.killed(),
            "crashed": self.run.crashed(),
            "problems": self.problems(),
            "error": self.error,
            "notes": self.notes,
        })
    }
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// The harness: moto, the Runtime API, the limits.
struct Ctx {
    api: RuntimeApi,
    aws: setup::Aws,
    config: Vec<(String, String)>,
    bin_dir: PathBuf,
    wait: Duration,
    sizes: Result<template::MemorySizes, String>,
    limit_mb: Option<u64>,
    limit_from_template: bool,
    memcg: Option<Hierarchy>,
    /// The CPU cgroup (v1, or v2 for unlimited memory).
    cpu: Option<Cgroup>,
    /// The CPU limit for a v2 memory cgroup, which must carry it itself.
    cpu_v2: Option<(f64, u64)>,
    seq: usize,
}

impl Ctx {
    /// The memory limit of `function`'s measured process, bytes.
    fn limit_for(&self, function: &str) -> Result<Option<u64>, String> {
        if let Some(mb) = self.limit_mb {
            return Ok(Some(mb * MIB));
        }
        if self.limit_from_template {
            let sizes = self.sizes.as_ref().map_err(Clone::clone)?;
            // Lambda's "MB" of MemorySize is MiB.
            return Ok(Some(sizes.of(function)? * MIB));
        }
        Ok(None)
    }

    /// AWS_LAMBDA_FUNCTION_MEMORY_SIZE: the limit, else the template's size, else 128.
    fn memory_size(&self, function: &str) -> u64 {
        self.limit_mb.unwrap_or_else(|| {
            self.sizes
                .as_ref()
                .ok()
                .and_then(|s| s.of(function).ok())
                .unwrap_or(128)
        })
    }

    /// Config with a fresh table and queue.
    fn stack_env(&self) -> Result<Vec<(String, String)>, String> {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let mut env = self.config.clone();
        env.retain(|(k, _)| k != "EVENTS_TABLE" && k != "EVENTS_QUEUE_URL");
        env.extend(setup::fresh_stack(&self.aws.moto, &tag[..12])?);
        Ok(env)
    }

    fn signing_env(&self) -> Env {
        Env::from_pairs(self.config.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    async fn run_process(&mut self, launch: Launch<'_>) -> Result<ProcessRun, String> {
        self.api.drain();
        let program = self.bin_dir.join(launch.function);
        if !program.exists() {
            return Err(format!(
                "{} is missing: cargo build --release -p {}",
                program.display(),
                launch.function
            ));
        }
        let mut target = crate::Target::rust(launch.function);
        target.program = program.clone();
        let mut cmd = Command::new(&program);
        cmd.env_clear()
            .envs(launch.env)
            .envs(crate::lambda_env(
                &target,
                &self.api.address,
                self.memory_size(launch.function) as u32,
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut run = ProcessRun::default();
        let limit: Option<MemoryLimit> = if launch.limited {
            match self.limit_for(launch.function)? {
                Some(bytes) => {
                    let hierarchy = self
                        .memcg
                        .as_ref()
                        .ok_or("a memory limit without a memory cgroup hierarchy")?;
                    self.seq += 1;
                    let name = format!("webhook-bench-mem-{}-{}", std::process::id(), self.seq);
                    let limit = hierarchy.limit(&name, bytes, self.cpu_v2)?;
                    limit.enter_on_spawn(&mut cmd);
                    run.limit_bytes = Some(bytes);
                    Some(limit)
                }
                None => None,
            }
        } else {
            None
        };
        if launch.limited {
            let cpu_in_memory_cgroup = limit.is_some() && self.cpu_v2.is_some();
            if let (Some(cpu), false) = (&self.cpu, cpu_in_memory_cgroup) {
                cpu.enter_on_spawn(&mut cmd);
            }
        }
        let started = Instant::now();
        let mut spawned = crate::Spawned::start(&mut cmd, &program)?;
        let guard = &mut spawned.child;
        let mut watch = Watch {
            pid: guard.0.id(),
            peak_rss_kib: 0,
            cpu_ns: 0,
        };
        self.lifetime(&mut guard.0, &mut watch, launch.events, started, &mut run)
            .await;
        if run.died.is_none() {
            watch.sample();
            if let Ok(Some(status)) = guard.0.try_wait() {
                run.died = Some(status);
            }
        }
        run.peak_rss_kib = (watch.peak_rss_kib > 0).then_some(watch.peak_rss_kib);
        run.log_tail = spawned.tail(3000);
        drop(spawned); // killed and reaped: the cgroup's counters are final
        if let Some(limit) = &limit {
            run.memory = Some(limit.stats());
        }
        drop(limit);
        Ok(run)
    }

    /// From spawn to the last invocation's end (or the process's).
    async fn lifetime(
        &mut self,
        child: &mut Child,
        watch: &mut Watch,
        events: Vec<Vec<u8>>,
        started: Instant,
        run: &mut ProcessRun,
    ) {
        let mut poll: Poll = match next(&mut self.api, child, watch, self.wait).await {
            Next::Poll(p) => p,
            Next::Answer(a) => {
                run.init_error = Some(describe_posted(&a.posted));
                return;
            }
            Next::Died(s) => {
                run.died = Some(s);
                return;
            }
            Next::TimedOut => {
                run.timed_out = true;
                return;
            }
        };
        run.init_ms = Some(ms(poll.at - started));
        for event in events {
            let id = uuid::Uuid::new_v4().to_string();
            watch.sample();
            let cpu_before = watch.cpu_ns;
            let handed = poll.deliver(&id, event);
            let answer = loop {
                match next(&mut self.api, child, watch, self.wait).await {
                    Next::Answer(a) => break Ok(a),
                    Next::Poll(_) => continue, // not ours to answer: impossible, one at a time
                    Next::Died(s) => break Err(Some(s)),
                    Next::TimedOut => break Err(None),
                }
            };
            let answer = match answer {
                Ok(a) => a,
                Err(died) => {
                    run.invocations.push(Invocation {
                        reply: Reply::Missing,
                        cpu_ms: watch.cpu_ns.saturating_sub(cpu_before) as f64 / 1e6,
                        wall_ms: ms(handed.elapsed()),
                    });
                    run.died = died;
                    run.timed_out = died.is_none();
                    return;
                }
            };
            let wall_ms = ms(answer.at - handed);
            let reply = match answer.posted {
                Posted::Response { body, .. } => {
                    Reply::Response(serde_json::from_slice(&body).unwrap_or(Value::Null))
                }
                other => Reply::Error(describe_posted(&other)),
            };
            // The invocation's CPU is complete once the function asks for the next event.
            let after = next(&mut self.api, child, watch, Duration::from_secs(30)).await;
            watch.sample();
            run.invocations.push(Invocation {
                reply,
                cpu_ms: watch.cpu_ns.saturating_sub(cpu_before) as f64 / 1e6,
                wall_ms,
            });
            match after {
                Next::Poll(p) => poll = p,
                Next::Died(s) => {
                    run.died = Some(s);
                    return;
                }
                Next::Answer(_) | Next::TimedOut => return,
            }
        }
    }
}

fn describe_posted(posted: &Posted) -> String {
    match posted {
        Posted::Response { body, .. } => format!("response {}", String::from_utf8_lossy(body)),
        Posted::Error { body, .. } => format!("error {}", String::from_utf8_lossy(body)),
        Posted::InitError { body } => format!("init error {}", String::from_utf8_lossy(body)),
    }
}

/// What is read of the process while it runs: peak RSS and CPU, kept at their last values.
struct Watch {
    pid: u32,
    peak_rss_kib: u64,
    cpu_ns: u64,
}

impl Watch {
    fn sample(&mut self) {
        if let Some(kib) = procstat::peak_rss_kib(self.pid) {
            self.peak_rss_kib = self.peak_rss_kib.max(kib);
        }
        let cpu = procstat::cpu_ns(self.pid);
        self.cpu_ns = self.cpu_ns.max(cpu);
    }
}

enum Next {
    Poll(Poll),
    Answer(Answer),
    Died(ExitStatus),
    TimedOut,
}

/// The next thing the function does, or its death, sampling it meanwhile.
async fn next(api: &mut RuntimeApi, child: &mut Child, watch: &mut Watch, wait: Duration) -> Next {
    let deadline = Instant::now() + wait;
    loop {
        tokio::select! {
            Some(p) = api.polls.recv() => return Next::Poll(p),
            Some(a) = api.answers.recv() => return Next::Answer(a),
            _ = tokio::time::sleep(TICK) => {
                watch.sample();
                if let Ok(Some(status)) = child.try_wait() {
                    // What it posted just before it ended comes first.
                    if let Ok(a) = api.answers.try_recv() {
                        return Next::Answer(a);
                    }
                    return Next::Died(status);
                }
                if Instant::now() >= deadline {
                    return Next::TimedOut;
                }
            }
        }
    }
}

/// The API Gateway event of `body` as `provider` sends it, signed as `events()` in main.rs
/// signs (`shared::providers::simulate`, `Sent::to_event_json`: a body that is not UTF-8 goes
/// base64-encoded, `isBase64Encoded`), with the content type replaced when given.
fn api_event(
    provider: &str,
    body: &[u8],
    env: &Env,
    content_type: Option<&str>,
    request_id: &str,
) -> Result<Vec<u8>, String> {
    let now = OffsetDateTime::now_utc();
    let mut sent =
        shared::providers::simulate(provider, body, env, now).map_err(|e| e.to_string())?;
    if let Some(ct) = content_type {
        sent.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
        sent.headers.push(("content-type".into(), ct.into()));
    }
    sent.path = format!("/{provider}{}", sent.path)
        .trim_end_matches('/')
        .to_owned();
    let mut event = sent.to_event_json();
    event["requestContext"]["timeEpoch"] = shared::clock::epoch_millis(now).into();
    event["requestContext"]["requestId"] = request_id.into();
    serde_json::to_vec(&event).map_err(|e| e.to_string())
}

fn status_of(run: &ProcessRun) -> (Option<u16>, Option<String>) {
    match run.first().map(|i| &i.reply) {
        Some(Reply::Response(v)) => (
            v["statusCode"].as_u64().map(|s| s as u16),
            v["body"].as_str().map(|b| shorten(b, 300)),
        ),
        _ => (None, None),
    }
}

fn batch_failures(run: &ProcessRun) -> Option<usize> {
    match run.first().map(|i| &i.reply) {
        Some(Reply::Response(v)) => Some(v["batchItemFailures"].as_array().map_or(0, Vec::len)),
        _ => None,
    }
}

async fn receiver(
    ctx: &mut Ctx,
    scenario: &Scenario,
    provider: &'static str,
    body: Body,
    forged: bool,
) -> Result<Row, String> {
    let mut row = Row::new(scenario);
    let bytes = scenarios::receiver_body(provider, body, BODY_BYTES)?;
    row.input_bytes = bytes.len();
    row.target_bytes = 3 * bytes.len() as u64 + 32 * MIB;
    row.target_text = format!(
        "3 × body + 32 MiB = {:.1} MiB",
        row.target_bytes as f64 / MIB as f64
    );
    // Signed with local.env's secrets; the forged scenario's function has others.
    let event = api_event(
        provider,
        &bytes,
        &ctx.signing_env(),
        body.content_type(),
        &format!("memory-{}", scenario.name),
    )?;
    let forged_env = forged
        .then(|| scenarios::forged_secrets(provider, &bytes))
        .transpose()?;
    drop(bytes);
    row.event_bytes = event.len();
    let mut env = ctx.stack_env()?;
    if let Some((var, secrets, note)) = forged_env {
        env.retain(|(k, _)| k != var);
        env.push((var.to_owned(), secrets));
        row.expected_status = Some(401);
        row.notes.push(format!("{note}; none the signing one"));
    }
    row.run = ctx
        .run_process(Launch {
            function: scenario.function,
            env,
            events: vec![event],
            limited: true,
        })
        .await?;
    (row.status, row.answer_body) = status_of(&row.run);
    Ok(row)
}

fn sqs_send(moto: &str, url: &str, body: &str, attributes: Value) -> Result<(), String> {
    moto_call(
        moto,
        "sqs",
        "AmazonSQS.SendMessage",
        &json!({"QueueUrl": url, "MessageBody": body, "MessageAttributes": attributes}),
    )
    .map(|_| ())
}

/// `n` messages of the queue, as ReceiveMessage gives them (all attributes).
fn sqs_receive(moto: &str, url: &str, n: usize) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        let answer = moto_call(
            moto,
            "sqs",
            "AmazonSQS.ReceiveMessage",
            &json!({
                "QueueUrl": url,
                "MaxNumberOfMessages": (n - out.len()).min(10),
                "VisibilityTimeout": 900,
                "WaitTimeSeconds": 1,
                "AttributeNames": ["All"],
                "MessageSystemAttributeNames": ["All"],
                "MessageAttributeNames": ["All"],
            }),
        )?;
        if let Some(messages) = answer["Messages"].as_array() {
            out.extend(messages.iter().cloned());
        }
        if Instant::now() > deadline {
            return Err(format!("{} of {n} messages on the queue", out.len()));
        }
    }
    Ok(out)
}

/// The SQS event Lambda's event source mapping would hand the processor for `messages`
/// (aws_lambda_events' `SqsEvent` shape).
fn sqs_event(moto: &str, url: &str, messages: &[Value]) -> Result<Vec<u8>, String> {
    let arn = moto_call(
        moto,
        "sqs",
        "AmazonSQS.GetQueueAttributes",
        &json!({"QueueUrl": url, "AttributeNames": ["QueueArn"]}),
    )?["Attributes"]["QueueArn"]
        .as_str()
        .ok_or("GetQueueAttributes without QueueArn")?
        .to_owned();
    let now = shared::clock::epoch_millis(OffsetDateTime::now_utc()).to_string();
    let records: Vec<Value> = messages
        .iter()
        .map(|m| {
            let mut attributes = m["Attributes"].as_object().cloned().unwrap_or_default();
            for (name, default) in [
                ("ApproximateReceiveCount", "1"),
                ("SentTimestamp", now.as_str()),
                ("SenderId", shared::trust::LOCAL_SENDER_ID),
                ("ApproximateFirstReceiveTimestamp", now.as_str()),
            ] {
                attributes
                    .entry(name)
                    .or_insert_with(|| Value::String(default.to_owned()));
            }
            let message_attributes: serde_json::Map<String, Value> = m["MessageAttributes"]
                .as_object()
                .map(|a| {
                    a.iter()
                        .map(|(name, v)| {
                            (
                                name.clone(),
                                json!({
                                    "stringValue": v["StringValue"],
                                    "stringListValues": [],
                                    "binaryListValues": [],
                                    "dataType": v["DataType"],
                                }),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": m["MD5OfBody"],
                "md5OfMessageAttributes": m["MD5OfMessageAttributes"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1",
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "Records": records })).map_err(|e| e.to_string())
}

/// The messages' envelopes (their bodies).
fn envelopes(messages: &[Value]) -> Result<Vec<Value>, String> {
    messages
        .iter()
        .map(|m| {
            serde_json::from_str(m["Body"].as_str().unwrap_or_default())
                .map_err(|e| format!("a queued message is not an envelope: {e}"))
        })
        .collect()
}

/// How many of `dedup_keys` have a PROCESSED record of the processor.
fn processed(moto: &str, table: &str, dedup_keys: &[String]) -> Result<usize, String> {
    let mut count = 0;
    for key in dedup_keys {
        let item = moto_call(
            moto,
            "dynamodb",
            "DynamoDB_20120810.GetItem",
            &json!({
                "TableName": table,
                "Key": {"pk": {"S": format!("processed#{key}")}},
                "ConsistentRead": true,
            }),
        )?;
        if item["Item"]["status"]["S"] == "PROCESSED" {
            count += 1;
        }
    }
    Ok(count)
}

fn env_value<'a>(env: &'a [(String, String)], name: &str) -> Result<&'a str, String> {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| format!("{name} is not set"))
}

/// The processor on one batch of `messages` (received from the queue of `env`): its answer, and
/// which of their events it recorded as processed.
async fn process_batch(
    ctx: &mut Ctx,
    row: &mut Row,
    env: Vec<(String, String)>,
    messages: &[Value],
) -> Result<(), String> {
    let url = env_value(&env, "EVENTS_QUEUE_URL")?.to_owned();
    let table = env_value(&env, "EVENTS_TABLE")?.to_owned();
    let keys: Vec<String> = envelopes(messages)?
        .iter()
        .map(|e| e["dedup_key"].as_str().unwrap_or_default().to_owned())
        .collect();
    let event = sqs_event(&ctx.aws.moto, &url, messages)?;
    row.event_bytes = event.len();
    row.run = ctx
        .run_process(Launch {
            function: row.function.clone().as_str(),
            env,
            events: vec![event],
            limited: true,
        })
        .await?;
    row.batch_failures = batch_failures(&row.run);
    if row.batch_failures.is_some() {
        row.processed = Some(processed(&ctx.aws.moto, &table, &keys)?);
    }
    Ok(())
}

/// Ten messages at SQS's size limit, each a Trybe envelope whose payload is small values.
async fn batch(ctx: &mut Ctx, scenario: &Scenario) -> Result<Row, String> {
    let mut row = Row::new(scenario);
    row.target_bytes = 96 * MB;
    row.target_text = "96 MB".into();
    let env = ctx.stack_env()?;
    let url = env_value(&env, "EVENTS_QUEUE_URL")?.to_owned();
    for _ in 0..BATCH {
        let (body, event_type) = scenarios::batch_message(MESSAGE_BYTES)?;
        row.input_bytes += body.len() + scenarios::attributes_size("trybe", event_type);
        sqs_send(
            &ctx.aws.moto,
            &url,
            &body,
            scenarios::message_attributes("trybe", event_type),
        )?;
    }
    let messages = sqs_receive(&ctx.aws.moto, &url, BATCH)?;
    row.notes.push(format!(
        "{BATCH} messages of {} bytes with attributes",
        row.input_bytes / BATCH
    ));
    process_batch(ctx, &mut row, env, &messages).await?;
    Ok(row)
}

/// Ten 10 MiB Trybe events through the real receiver (claim-checked into the payload bucket,
/// their references queued), then the processor on the batch of their references.
async fn claim_checked(ctx: &mut Ctx, scenario: &Scenario) -> Result<Row, String> {
    let mut row = Row::new(scenario);
    let env = ctx.stack_env()?;
    let url = env_value(&env, "EVENTS_QUEUE_URL")?.to_owned();
    let signing = ctx.signing_env();
    let events = (0..BATCH)
        .map(|i| {
            let body = scenarios::receiver_body("trybe", Body::JsonLongString, BODY_BYTES)?;
            api_event("trybe", &body, &signing, None, &format!("claim-check-{i}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let setup = ctx
        .run_process(Launch {
            function: "trybe-webhook",
            env: env.clone(),
            events,
            limited: false,
        })
        .await?;
    let statuses: Vec<String> = setup
        .invocations
        .iter()
        .map(|i| match &i.reply {
            Reply::Response(v) => v["statusCode"].to_string(),
            _ => "none".into(),
        })
        .collect();
    if statuses.len() != BATCH || statuses.iter().any(|s| s != "200") {
        return Err(format!(
            "the trybe receiver did not accept the {BATCH} events (answers {statuses:?}, process {})\n{}",
            setup.fate(),
            setup.log_tail
        ));
    }
    let messages = sqs_receive(&ctx.aws.moto, &url, BATCH)?;
    let mut largest = 0u64;
    for envelope in envelopes(&messages)? {
        let bytes = envelope["payload_ref"]["bytes"]
            .as_u64()
            .ok_or("a queued message carries no payload_ref: not claim-checked")?;
        largest = largest.max(bytes);
        row.input_bytes += bytes as usize;
    }
    row.target_bytes = 2 * largest + 32 * MB;
    row.target_text = format!(
        "2 × {largest} B + 32 MB = {:.1} MiB",
        row.target_bytes as f64 / MIB as f64
    );
    row.notes.push(format!(
        "{BATCH} trybe json-long-string events of {BODY_BYTES} bytes through trybe-webhook; objects of up to {largest} bytes"
    ));
    process_batch(ctx, &mut row, env, &messages).await?;
    Ok(row)
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("–".into(), |b| format!("{:.1}", b as f64 / MIB as f64))
}

fn table(rows: &[Row]) {
    println!(
        "| scenario | function | input (bytes) | answer | peak RSS (MiB) | cgroup peak (MiB) | limit (MiB) | CPU (ms) | wall (ms) | target | held | process |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let inv = r.run.first();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | ≤ {:.1} MiB | {} | {} |",
            r.scenario,
            r.function,
            r.input_bytes,
            r.answer_text(),
            mib(r.peak_rss_bytes()),
            mib(r.run.memory.and_then(|m| m.peak_bytes)),
            r.run
                .limit_bytes
                .map_or("none".into(), |b| (b / MIB).to_string()),
            inv.map_or("–".into(), |i| format!("{:.0}", i.cpu_ms)),
            inv.map_or("–".into(), |i| format!("{:.0}", i.wall_ms)),
            r.target_bytes as f64 / MIB as f64,
            if r.held() { "yes" } else { "**no**" },
            r.run.fate(),
        );
    }
}

/// One run of `scenario`, reported on stderr as it ends; a scenario that could not be set up is
/// a row with its error.
async fn run_scenario(ctx: &mut Ctx, scenario: &Scenario) -> Row {
    let started = Instant::now();
    let result = match scenario.kind {
        Kind::Receiver {
            provider,
            body,
            forged,
        } => receiver(ctx, scenario, provider, body, forged).await,
        Kind::Batch => batch(ctx, scenario).await,
        Kind::ClaimChecked => claim_checked(ctx, scenario).await,
    };
    let row = result.unwrap_or_else(|e| {
        let mut row = Row::new(scenario);
        row.error = Some(e);
        row
    });
    eprintln!(
        "  {}: {}, peak RSS {} MiB, cgroup peak {} MiB, CPU {} ms, {} ({:.1} s)",
        row.scenario,
        row.answer_text(),
        mib(row.peak_rss_bytes()),
        mib(row.run.memory.and_then(|m| m.peak_bytes)),
        row.run
            .first()
            .map_or("–".into(), |i| format!("{:.0}", i.cpu_ms)),
        row.run.fate(),
        started.elapsed().as_secs_f64()
    );
    let unexplained = row.error.is_some()
        || (row.run.died.is_some() && !row.run.killed())
        || (row.run.died.is_none() && !row.answered());
    if unexplained {
        eprintln!("    {}", row.problems().join("; "));
        if !row.run.log_tail.is_empty() {
            eprintln!("    log tail:\n{}", row.run.log_tail);
        }
    }
    row
}

pub async fn run(args: MemoryArgs) -> Result<(), String> {
    let selected = scenarios::select(&args.scenarios)?;
    if args.list {
        for s in &selected {
            println!("{}\t{}", s.name, s.function);
        }
        return Ok(());
    }
    let root = root();
    let sizes = template::MemorySizes::read(&root.join("infra/template.yaml"));
    let limited = args.limit_mb.is_some() || args.limit_from_template;
    if args.limit_mb == Some(0) {
        return Err("--limit-mb 0: give a positive size".into());
    }
    // Every limit is checked before anything runs: one that cannot be applied fails the run.
    let memcg = limited.then(Hierarchy::detect).transpose()?;
    if args.limit_from_template {
        let sizes = sizes.as_ref().map_err(Clone::clone)?;
        for s in &selected {
            sizes.of(s.function)?;
        }
    }
    let bin_dir = args.bin_dir.clone().unwrap_or_else(crate::release_dir);
    let cpu_v2 = match (&memcg, args.cpu_percent) {
        (Some(h), Some(p)) if h.version == Version::V2 => Some((p, args.cpu_period_us)),
        _ => None,
    };
    // On v2 with a memory limit, the memory cgroup carries the CPU limit too.
    let cpu = match (args.cpu_percent, cpu_v2) {
        (Some(p), None) => Some(Cgroup::create(p, args.cpu_period_us)?),
        _ => None,
    };
    crate::machine_line();
    let python = if args.moto_python.is_absolute() {
        args.moto_python.clone()
    } else {
        root.join(&args.moto_python)
    };
    let aws = setup::start_aws(&python, false, false, false)?;
    let mut config = setup::read_env_file(&root.join("local.env"))?;
    config.retain(|(k, _)| !k.starts_with("AWS_"));
    config.extend(aws.env.iter().cloned());
    // As a deployed stack: the payload bucket (claim check) on, the archive off.
    config.retain(|(k, _)| k != "ARCHIVE_BUCKET");
    let limit_text = match (args.limit_mb, args.limit_from_template) {
        (Some(mb), _) => format!("memory limit {mb} MiB per function"),
        (None, true) => "memory limit per function = its MemorySize in infra/template.yaml".into(),
        _ => "no memory limit".into(),
    };
    let cpu_text = match (args.cpu_percent, &cpu) {
        (Some(p), Some(cg)) => format!(
            "CPU limited to {p} % of one core ({}, period {} µs)",
            cg.kind, args.cpu_period_us
        ),
        (Some(p), None) => format!("CPU limited to {p} % of one core (in the memory cgroup, v2)"),
        _ => "full CPU".into(),
    };
    let cgroup_text = memcg.as_ref().map_or(String::new(), |h| {
        format!(
            "; memory cgroup {}",
            match h.version {
                Version::V1 => "v1 (memory.limit_in_bytes = memory.memsw.limit_in_bytes)",
                Version::V2 => "v2 (memory.max, memory.swap.max 0)",
            }
        )
    });
    let header = format!(
        "{limit_text}{cgroup_text}; {cpu_text}; binaries {}; plain HTTP (keep-alive) to moto; body {BODY_BYTES} bytes",
        bin_dir.display()
    );
    eprintln!("AWS endpoint {} ; {header}", aws.endpoint);
    let mut ctx = Ctx {
        api: RuntimeApi::start().await.map_err(|e| e.to_string())?,
        aws,
        config,
        bin_dir,
        wait: Duration::from_secs(args.wait_seconds),
        sizes,
        limit_mb: args.limit_mb,
        limit_from_template: args.limit_from_template,
        memcg,
        cpu,
        cpu_v2,
        seq: 0,
    };
    let mut rows = Vec::new();
    for scenario in &selected {
        let mut worst: Option<Row> = None;
        let mut peaks = Vec::new();
        for _ in 0..args.runs {
            let row = run_scenario(&mut ctx, scenario).await;
            peaks.push(mib(row.peak_rss_bytes()));
            worst = Some(match worst {
                Some(w) if row.severity() <= w.severity() => w,
                _ => row,
            });
        }
        let mut row = worst.expect("--runs is at least 1");
        if args.runs > 1 {
            row.notes.push(format!(
                "the worst of {} runs; peak RSS per run (MiB): {}",
                args.runs,
                peaks.join(", ")
            ));
        }
        rows.push(row);
    }
    println!("\n### Peak memory per scenario — {header}\n");
    table(&rows);
    println!(
        "\nPeak RSS is VmHWM, sampled every {} ms and at the end (a killed process's last sample); the cgroup peak counts the process's page cache too. Targets: receivers 3 × body + 32 MiB; processor ≤ 96 MB on ten 1 MiB messages, ≤ 2 × the largest event + 32 MB claim-checked (MB = 10^6 bytes).",
        TICK.as_millis()
    );
    if rows.iter().any(|r| !r.notes.is_empty()) {
        println!("\nNotes:\n");
    }
    for r in rows.iter().filter(|r| !r.notes.is_empty()) {
        println!("- {}: {}", r.scenario, r.notes.join("; "));
    }
    let failing: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let mut p = r.failures();
            if args.check_targets {
                p.extend(r.target_missed());
            }
            (!p.is_empty()).then(|| format!("{}: {}", r.scenario, p.join("; ")))
        })
        .collect();
    crate::save(
        &format!(
            "memory-{}",
            match (args.limit_mb, args.limit_from_template) {
                (Some(mb), _) => format!("limit{mb}"),
                (None, true) => "template".into(),
                _ => "unlimited".into(),
            }
        ),
        &json!({
            "scenario": header,
            "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        }),
    );
    if args.check && !failing.is_empty() {
        return Err(format!(
            "--check: {} of {} scenarios failed:\n  {}",
            failing.len(),
            rows.len(),
            failing.join("\n  ")
        ));
    }
    if args.check {
        eprintln!("--check: all {} scenarios passed", rows.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local_env() -> Env {
        Env::from_env_file(&root().join("local.env")).unwrap()
    }

    #[test]
    fn a_body_that_is_not_utf8_travels_base64_encoded_and_the_content_type_is_replaced() {
        let body = scenarios::latin1_xml(4096).unwrap();
        let event =
            api_event("trifft", &body, &local_env(), Some("application/xml"), "r1").unwrap();
        let event: Value = serde_json::from_slice(&event).unwrap();
        assert_eq!(event["isBase64Encoded"], true);
        assert_eq!(event["headers"]["content-type"], "application/xml");
        assert_eq!(event["rawPath"], "/trifft");
        assert_eq!(event["requestContext"]["requestId"], "r1");
        // 4096 bytes as base64: 4 characters per 3 bytes, padded.
        assert_eq!(
            event["body"].as_str().unwrap().len(),
            4096_usize.div_ceil(3) * 4
        );

        let text = scenarios::control_text(100);
        let event = api_event("trifft", &text, &local_env(), Some("text/plain"), "r2").unwrap();
        let event: Value = serde_json::from_slice(&event).unwrap();
        assert!(event.get("isBase64Encoded").is_none_or(|b| b == false));
        assert_eq!(event["body"].as_str().unwrap().as_bytes(), text);
        assert_eq!(event["headers"]["content-type"], "text/plain");
    }

    #[test]
    fn check_fails_on_a_kill_a_5xx_a_wrong_status_and_a_missed_target() {
        let scenario = scenarios::select(&["trybe/json-small".into()])
            .unwrap()
            .remove(0);
        let answered = |status: u16, rss_kib: u64| {
            let mut row = Row::new(&scenario);
            row.target_bytes = 62 * MIB;
            row.run.peak_rss_kib = Some(rss_kib);
            row.run.invocations.push(Invocation {
                reply: Reply::Response(json!({"statusCode": status})),
                cpu_ms: 1.0,
                wall_ms: 1.0,
            });
            row.status = Some(status);
            row
        };
        let fine = answered(200, 40 * 1024);
        assert!(
            fine.held() && fine.problems().is_empty(),
            "{:?}",
            fine.problems()
        );
        assert_eq!(answered(503, 40 * 1024).problems(), ["answered 503"]);
        let over = answered(200, 63 * 1024);
        assert!(!over.held());
        assert!(over.problems()[0].starts_with("peak RSS 63.0 MiB over"));
        let mut forged = answered(200, 40 * 1024);
        forged.expected_status = Some(401);
        assert_eq!(forged.problems(), ["answered 200, expected 401"]);

        let mut killed = Row::new(&scenario);
        killed.target_bytes = 62 * MIB;
        killed.run.peak_rss_kib = Some(30 * 1024);
        killed.run.died = Some(ExitStatus::from_raw(libc::SIGKILL));
        killed.run.memory = Some(MemStats {
            peak_bytes: Some(64 * MIB),
            failcnt: 3,
            oom_kills: 1,
        });
        killed.run.invocations.push(Invocation {
            reply: Reply::Missing,
            cpu_ms: 1.0,
            wall_ms: 1.0,
        });
        assert!(killed.run.killed() && !killed.run.crashed());
        assert_eq!(killed.run.fate(), "killed (OOM)");
        assert!(!killed.held());
        let problems = killed.problems();
        assert_eq!(problems[..2], ["killed (OOM)", "no response"]);
        // The worst of several runs: a kill beats any peak, a higher peak a lower one.
        assert!(killed.severity() > answered(200, 900 * 1024).severity());
        assert!(over.severity() > fine.severity());

        let mut aborted = Row::new(&scenario);
        aborted.run.died = Some(ExitStatus::from_raw(libc::SIGABRT));
        assert!(aborted.run.crashed());
        assert_eq!(aborted.run.fate(), "crashed (SIGABRT)");
    }
}

//! `processor`: our event processor (functions/event-processor, release build) beside a Python
//! peer (bench/python-processor-peer: Powertools' BatchProcessor + idempotency on DynamoDB), on
//! the same SQS batches, against the same moto, alternating, one cold start each per run.
//!
//! Each batch is an `SqsEvent` as Lambda's event source mapping hands it (every record with its
//! message id, receipt handle, system attributes, the message attributes our receivers send,
//! both MD5s, the source ARN and region), its records envelopes of real Trybe samples with
//! fresh ids, so that every record is a first delivery. The envelope is written here as JSON
//! text from the contract's stable field names, not with `shared::envelope`'s types.
//!
//! Checked: every answer lists no `batchItemFailures`, and after each cold start every record
//! is in the function's fresh table, finished (ours: `processed#<dedup key>` PROCESSED; the
//! peer: Powertools' `<function>.handler.process_envelope#<md5>` COMPLETED), nothing else.
//! Measured, as `e2e` does: the function process's CPU only (schedstat of its threads), from
//! spawn to the first `GET next` (init), then per batch (answer → next poll included); peak
//! RSS (VmHWM).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use clap::Args;
use md5::{Digest, Md5};
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::procstat::{self, ms, summarize};
use crate::runtime_api::{Posted, RuntimeApi};
use crate::setup::{self, root, Cgroup};
use crate::{fmt3, lambda_env, machine_line, prepare, release_dir, save, Common, Spawned, Target};

/// Where the peer lives, and its name (AWS_LAMBDA_FUNCTION_NAME, the prefix of its keys).
const PEER_DIR: &str = "bench/python-processor-peer";
const PEER_NAME: &str = "python-processor-peer";
/// The Powertools-decorated function of the peer (module.qualname in its idempotency keys).
const PEER_FUNCTION: &str = "handler.process_envelope";
const PROVIDER: &str = "trybe";
/// The records' `SenderId` role: trusted for [`PROVIDER`] (`TRUSTED_SENDERS`), as a stack passes
/// the receiver role's id.
const SENDER_ROLE_ID: &str = "AROAQXAMPLE7ROLEID0001";
/// The target CPU ratio: ours at least this many times less CPU per processed event.
const TARGET_RATIO: f64 = 5.0;

#[derive(Args)]
pub struct ProcessorArgs {
    /// --runs: cold starts per function; --warm: batches after the first one, per cold start
    #[command(flatten)]
    common: Common,
    /// Records per batch (the template's event source mapping: BatchSize 10)
    #[arg(long, default_value_t = 10)]
    batch_size: usize,
    /// Python of the peer (awslambdaric, aws-lambda-powertools, boto3)
    #[arg(long, default_value = ".venv-bench/bin/python")]
    peer_python: PathBuf,
    /// Trybe samples (events/trybe/<name>.json) the payloads are fresh copies of, in turn;
    /// repeatable. Default: every Trybe sample
    #[arg(long = "sample")]
    samples: Vec<String>,
    /// Print the last lines each function wrote (its logs: ids and types, no payloads) after
    /// each cold start, to see what each one logs
    #[arg(long)]
    show_logs: bool,
    /// Extra environment for both functions, KEY=VALUE; repeatable (e.g. RUST_LOG=warn and
    /// POWERTOOLS_LOG_LEVEL=WARNING, to see what logging costs each)
    #[arg(long = "env", value_parser = crate::parse_pair)]
    env: Vec<(String, String)>,
}

/// One batch to hand out, and what it must leave in the table.
#[derive(Clone)]
struct Batch {
    event: Vec<u8>,
    dedup_keys: Vec<String>,
}

/// MD5, lowercase hex.
fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `md5OfMessageAttributes` as SQS computes it for String attributes: for each attribute in name
/// order, its name and data type (each length-prefixed: 4 bytes, big endian), the transport type
/// byte (1 for String and Number), then the length-prefixed value.
fn md5_of_string_attributes(attributes: &[(&str, &str)]) -> String {
    fn prefixed(bytes: &mut Vec<u8>, b: &[u8]) {
        bytes.extend_from_slice(&(b.len() as u32).to_be_bytes());
        bytes.extend_from_slice(b);
    }
    let mut sorted = attributes.to_vec();
    sorted.sort();
    let mut bytes = Vec::new();
    for (name, value) in sorted {
        prefixed(&mut bytes, name.as_bytes());
        prefixed(&mut bytes, b"String");
        bytes.push(1);
        prefixed(&mut bytes, value.as_bytes());
    }
    md5_hex(&bytes)
}

/// The samples' bodies: `names` under events/trybe, or every Trybe sample (not the rendered
/// API Gateway events).
fn samples(names: &[String]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let dir = root().join("events").join(PROVIDER);
    let mut names = names.to_vec();
    if names.is_empty() {
        names = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().to_string_lossy().into_owned();
                let name = file.strip_suffix(".json")?;
                (!name.ends_with(".apigw")).then(|| name.to_owned())
            })
            .collect();
        names.sort();
    }
    names
        .into_iter()
        .map(|name| {
            let name = name
                .strip_prefix(&format!("{PROVIDER}/"))
                .unwrap_or(&name)
                .to_owned();
            let path = dir.join(format!("{name}.json"));
            let body = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok((name, body))
        })
        .collect()
}

/// The envelope of a fresh copy of a Trybe sample, as JSON text (the contract's stable fields:
/// provider, event_id, event_type, dedup_key, received_at, body_sha256, payload), and its dedup
/// key (shared/src/keys.rs: `trybe#<site_id>#id#<id>`).
fn envelope(sample: &[u8], now: OffsetDateTime) -> Result<(String, String), String> {
    let body = crate::fresh(sample);
    let payload: Value = serde_json::from_slice(&body).map_err(|e| format!("sample: {e}"))?;
    let event_id = payload["id"]
        .as_str()
        .ok_or("a Trybe sample without an id")?
        .to_owned();
    let event_type = payload["event"].as_str().unwrap_or("unknown").to_owned();
    let dedup_key = shared::keys::dedup_key(
        PROVIDER,
        payload["site_id"].as_str(),
        &shared::provider::EventKey::id(event_id.clone()),
    );
    let text = json!({
        "provider": PROVIDER,
        "event_id": event_id,
        "event_type": event_type,
        "dedup_key": dedup_key,
        "received_at": shared::clock::rfc3339(now),
        "body_sha256": shared::verify::sha256_hex(&body),
        "payload": payload,
    })
    .to_string();
    Ok((text, dedup_key))
}

/// One SQS record as the event source mapping hands it to the function.
fn sqs_record(body: &str, event_type: &str, sent_ms: i64, queue_arn: &str) -> Value {
    let handle: String = (0..4)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    let attributes = [("provider", PROVIDER), ("event_type", event_type)];
    let message_attributes: serde_json::Map<String, Value> = attributes
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_owned(),
                json!({"stringValue": v, "stringListValues": [], "binaryListValues": [], "dataType": "String"}),
            )
        })
        .collect();
    json!({
        "messageId": uuid::Uuid::new_v4().to_string(),
        "receiptHandle": format!("AQEB{handle}"),
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": sent_ms.to_string(),
            "SenderId": format!("{SENDER_ROLE_ID}:trybe-webhook"),
            "ApproximateFirstReceiveTimestamp": (sent_ms + 21).to_string(),
        },
        "messageAttributes": message_attributes,
        "md5OfMessageAttributes": md5_of_string_attributes(&attributes),
        "md5OfBody": md5_hex(body.as_bytes()),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": "us-east-1",
    })
}

/// `count` batches of `size` records, each record a fresh copy of the next sample.
fn batches(
    samples: &[(String, Vec<u8>)],
    count: usize,
    size: usize,
    queue_arn: &str,
) -> Result<Vec<Batch>, String> {
    let mut next = samples.iter().cycle();
    (0..count)
        .map(|_| {
            let now = OffsetDateTime::now_utc();
            let mut records = Vec::with_capacity(size);
            let mut dedup_keys = Vec::with_capacity(size);
            for _ in 0..size {
                let (name, body) = next.next().ok_or("no sample")?;
                let (text, key) = envelope(body, now)?;
                records.push(sqs_record(
                    &text,
                    name,
                    shared::clock::epoch_millis(now),
                    queue_arn,
                ));
                dedup_keys.push(key);
            }
            let event =
                serde_json::to_vec(&json!({ "Records": records })).map_err(|e| e.to_string())?;
            Ok(Batch { event, dedup_keys })
        })
        .collect()
}

/// The item a finished record leaves in the table: its key and status.
fn expected_item(ours: bool, dedup_key: &str) -> (String, &'static str) {
    if ours {
        (
            shared::keys::processed_key(dedup_key),
            shared::store::Status::Processed.as_str(),
        )
    } else {
        // Powertools: `<function name>.<module>.<qualname>#` + MD5 of json.dumps(key) (the
        // same text as serde_json's for an ASCII key).
        let quoted = serde_json::to_string(dedup_key).unwrap_or_default();
        (
            format!("{PEER_NAME}.{PEER_FUNCTION}#{}", md5_hex(quoted.as_bytes())),
            "COMPLETED",
        )
    }
}

/// Every item of `table`: pk → status.
fn scan(moto: &str, table: &str) -> Result<HashMap<String, String>, String> {
    let mut items = HashMap::new();
    let mut start: Option<Value> = None;
    loop {
        let mut request = json!({
            "TableName": table,
            "ProjectionExpression": "pk, #s",
            "ExpressionAttributeNames": {"#s": "status"},
        });
        if let Some(key) = start.take() {
            request["ExclusiveStartKey"] = key;
        }
        let page = setup::moto_call(moto, "dynamodb", "DynamoDB_20120810.Scan", &request)?;
        for item in page["Items"].as_array().into_iter().flatten() {
            let pk = item["pk"]["S"].as_str().unwrap_or_default().to_owned();
            let status = item["status"]["S"].as_str().unwrap_or_default().to_owned();
            items.insert(pk, status);
        }
        match page.get("LastEvaluatedKey") {
            Some(key) if !key.is_null() => start = Some(key.clone()),
            _ => return Ok(items),
        }
    }
}

/// Every record of `batches` finished in the table, and nothing else there.
fn verify(ours: bool, moto: &str, table: &str, batches: &[Batch]) -> Result<usize, String> {
    let items = scan(moto, table)?;
    let mut found = 0;
    for key in batches.iter().flat_map(|b| &b.dedup_keys) {
        let (pk, status) = expected_item(ours, key);
        match items.get(&pk) {
            Some(s) if s == status => found += 1,
            Some(s) => return Err(format!("{pk}: status {s}, expected {status}")),
            None => return Err(format!("{pk}: not in the table")),
        }
    }
    if items.len() != found {
        return Err(format!(
            "{} items in the table, {found} expected",
            items.len()
        ));
    }
    Ok(found)
}

/// One cold start and its batches.
#[derive(Debug, Default)]
struct Run {
    init_ms: f64,
    init_cpu_ms: f64,
    first_ms: f64,
    first_cpu_ms: f64,
    /// Warm batches: wall (ms) and CPU (µs) of each.
    warm_ms: Vec<f64>,
    warm_cpu_us: Vec<f64>,
    rss_peak_kib: u64,
    cpu_total_ms: f64,
    records: usize,
    verified: usize,
    throttled: u64,
}

impl Run {
    fn cpu_per_event_us(&self, batch_size: usize) -> f64 {
        summarize(&self.warm_cpu_us).map_or(0.0, |s| s.mean) / batch_size.max(1) as f64
    }
    fn warm_median_ms(&self) -> f64 {
        summarize(&self.warm_ms).map_or(0.0, |s| s.median)
    }
}

struct Env<'a> {
    moto: &'a str,
    show_logs: bool,
    config: &'a [(String, String)],
    common: &'a Common,
    cgroup: Option<&'a Cgroup>,
}

async fn cold_start(
    api: &mut RuntimeApi,
    target: &Target,
    ours: bool,
    env: &Env<'_>,
    batches: &[Batch],
) -> Result<Run, String> {
    api.drain();
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut config = env.config.to_vec();
    config.retain(|(k, _)| k != "EVENTS_TABLE" && k != "EVENTS_QUEUE_URL");
    config.retain(|(k, _)| k != "TRUSTED_SENDERS");
    config.push((
        "TRUSTED_SENDERS".into(),
        format!("{PROVIDER}={SENDER_ROLE_ID}"),
    ));
    let stack = setup::fresh_stack(env.moto, &tag[..12])?;
    let table = stack
        .iter()
        .find(|(k, _)| k == "EVENTS_TABLE")
        .map(|(_, v)| v.clone())
        .ok_or("fresh_stack gave no table")?;
    config.extend(stack);
    let mut cmd = Command::new(&target.program);
    cmd.args(&target.args)
        .env_clear()
        .envs(config)
        .envs(lambda_env(target, &api.address, env.common.memory))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = &target.cwd {
        cmd.current_dir(dir);
    }
    if let Some(cg) = env.cgroup {
        cg.enter_on_spawn(&mut cmd);
    }
    let throttled_before = env.cgroup.map(Cgroup::throttled).unwrap_or(0);
    let started = Instant::now();
    let child = Spawned::start(&mut cmd, &target.program)?;
    let pid = child.pid();
    // The last lines the function printed, for an error.
    let tail = || child.tail(2000);
    let label = &target.label;
    let wait = crate::WAIT;

    let mut run = Run::default();
    let mut poll = tokio::select! {
        p = api.polls.recv() => p.ok_or("runtime API closed")?,
        a = api.answers.recv() => return Err(format!("{label}: answered before its first poll: {:?}\n{}", a.map(|a| a.posted), tail())),
        _ = tokio::time::sleep(wait) => return Err(format!("{label}: no GET next within {wait:?}\n{}", tail())),
    };
    run.init_ms = ms(poll.at - started);
    let mut cpu_prev = procstat::cpu_ns(pid);
    run.init_cpu_ms = cpu_prev as f64 / 1e6;

    for (i, batch) in batches.iter().enumerate() {
        let id = uuid::Uuid::new_v4().to_string();
        let handed = poll.deliver(&id, batch.event.clone());
        let answer = tokio::time::timeout(wait, api.answer())
            .await
            .map_err(|_| format!("{label}: no answer within {wait:?}\n{}", tail()))?
            .ok_or("runtime API closed")?;
        let latency = ms(answer.at - handed);
        match &answer.posted {
            Posted::Response { id: got, body } if *got == id => {
                let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                match value["batchItemFailures"].as_array() {
                    Some(failures) if failures.is_empty() => {}
                    _ => {
                        return Err(format!(
                        "{label}: batch {i} answered {value} (expected no batchItemFailures)\n{}",
                        tail()
                    ))
                    }
                }
            }
            Posted::Response { id: got, .. } => {
                return Err(format!("{label}: answer for {got}, expected {id}"))
            }
            Posted::Error { id: got, body } => {
                return Err(format!(
                    "{label}: invocation {got} failed: {}\n{}",
                    String::from_utf8_lossy(body),
                    tail()
                ))
            }
            Posted::InitError { body } => {
                return Err(format!(
                    "{label}: init failed: {}\n{}",
                    String::from_utf8_lossy(body),
                    tail()
                ))
            }
        }
        run.records += batch.dedup_keys.len();
        poll = tokio::time::timeout(wait, api.poll())
            .await
            .map_err(|_| format!("{label}: no GET next after an answer\n{}", tail()))?
            .ok_or("runtime API closed")?;
        let cpu_now = procstat::cpu_ns(pid);
        let cpu = cpu_now.saturating_sub(cpu_prev) as f64;
        cpu_prev = cpu_now;
        if i == 0 {
            run.first_ms = latency;
            run.first_cpu_ms = cpu / 1e6;
        } else {
            run.warm_ms.push(latency);
            run.warm_cpu_us.push(cpu / 1e3);
        }
    }
    run.rss_peak_kib = procstat::peak_rss_kib(pid).unwrap_or(0);
    run.cpu_total_ms = cpu_prev as f64 / 1e6;
    run.throttled = env.cgroup.map(Cgroup::throttled).unwrap_or(0) - throttled_before;
    if env.show_logs {
        eprintln!("--- {label}: the end of its output ---\n{}\n---", tail());
    }
    drop(poll);
    drop(child);
    run.verified = verify(ours, env.moto, &table, batches)
        .map_err(|e| format!("{label}: the table does not hold every record finished: {e}"))?;
    Ok(run)
}

/// A private copy of the release binary, so that a build of the shared target directory during
/// the measurement cannot swap it between cold starts; and its SHA-256.
fn private_copy(program: &Path) -> Result<(PathBuf, String), String> {
    let bytes = std::fs::read(program).map_err(|e| {
        format!(
            "{}: {e}: cargo build --release -p event-processor",
            program.display()
        )
    })?;
    let dir = release_dir()
        .parent()
        .map(|t| t.join("webhook-bench"))
        .unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let copy = dir.join(format!("event-processor-{}", std::process::id()));
    std::fs::write(&copy, &bytes).map_err(|e| format!("{}: {e}", copy.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", copy.display()))?;
    Ok((copy, shared::verify::sha256_hex(&bytes)))
}

fn peer(python: &Path) -> Target {
    let dir = root().join(PEER_DIR);
    Target {
        label: "python peer (Powertools BatchProcessor + idempotency)".into(),
        name: PEER_NAME.into(),
        program: python.to_owned(),
        args: ["-m", "awslambdaric", "handler.handler"]
            .map(String::from)
            .to_vec(),
        cwd: Some(dir.clone()),
        extra_env: vec![
            ("AWS_EXECUTION_ENV".into(), "AWS_Lambda_python3.11".into()),
            ("LAMBDA_TASK_ROOT".into(), dir.display().to_string()),
            ("_HANDLER".into(), "handler.handler".into()),
            ("PYTHONPATH".into(), dir.display().to_string()),
            ("POWERTOOLS_SERVICE_NAME".into(), PEER_NAME.into()),
        ],
    }
}

pub async fn processor(args: ProcessorArgs) -> Result<(), String> {
    machine_line();
    if args.batch_size == 0 || args.batch_size > 10_000 {
        return Err("--batch-size: 1 to 10 000 (SQS: 10, or 10 000 with a batching window)".into());
    }
    let peer_python = if args.peer_python.is_absolute() {
        args.peer_python.clone()
    } else {
        root().join(&args.peer_python)
    };
    if !peer_python.exists() {
        return Err(format!(
            "{} is missing: python3 -m venv .venv-bench && .venv-bench/bin/pip install -r bench/requirements.txt",
            peer_python.display()
        ));
    }
    let mut ours = Target::rust("event-processor");
    let (copy, sha256) = private_copy(&ours.program)?;
    println!(
        "ours: {} (SHA-256 {}), measured from a private copy",
        ours.program.display(),
        &sha256[..16]
    );
    ours.program = copy.clone();
    ours.label = "ours (event-processor)".into();
    let samples = samples(&args.samples)?;
    let mut bench = prepare(&args.common).await?;
    let mut targets = [ours, peer(&peer_python)];
    for target in &mut targets {
        target.extra_env.extend(args.env.iter().cloned());
    }
    let count = 1 + args.common.warm;
    let queue_arn = "arn:aws:sqs:us-east-1:123456789012:webhook-events";
    let mut runs: [Vec<Run>; 2] = Default::default();
    let result = async {
        for r in 0..args.common.runs {
            // The same batches for both (each cold start has a table of its own); the order
            // alternates.
            let batches = batches(&samples, count, args.batch_size, queue_arn)?;
            let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
            for t in order {
                let env = Env {
                    moto: &bench.aws.moto,
                    config: &bench.config,
                    common: &args.common,
                    cgroup: bench.cgroup.as_ref(),
                    show_logs: args.show_logs,
                };
                let run = cold_start(&mut bench.api, &targets[t], t == 0, &env, &batches).await?;
                eprintln!(
                    "  run {r} {}: init {:.1} ms (CPU {:.1}), first batch CPU {:.2} ms, warm CPU/event {:.0} µs, warm batch median {:.2} ms, peak RSS {:.1} MiB, {} records verified",
                    targets[t].label,
                    run.init_ms,
                    run.init_cpu_ms,
                    run.first_cpu_ms,
                    run.cpu_per_event_us(args.batch_size),
                    run.warm_median_ms(),
                    run.rss_peak_kib as f64 / 1024.0,
                    run.verified
                );
                runs[t].push(run);
            }
        }
        Ok::<(), String>(())
    }
    .await;
    let _ = std::fs::remove_file(&copy);
    result?;
    report(&args, &bench.scenario, &targets, &runs, &sha256);
    Ok(())
}

fn report(
    args: &ProcessorArgs,
    scenario: &str,
    targets: &[Target; 2],
    runs: &[Vec<Run>; 2],
    sha256: &str,
) {
    let size = args.batch_size;
    let of =
        |t: usize, f: &dyn Fn(&Run) -> f64| summarize(&runs[t].iter().map(f).collect::<Vec<_>>());
    let med = |t: usize, f: &dyn Fn(&Run) -> f64| of(t, f).map_or(0.0, |s| s.median);
    let extra: Vec<String> = args.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let scenario = format!(
        "{scenario}; batches of {size} record{}{}",
        if size == 1 { "" } else { "s" },
        if extra.is_empty() {
            String::new()
        } else {
            format!("; env {}", extra.join(" "))
        }
    );
    println!("\n### Event processor beside a Python peer — {scenario}\n");
    println!(
        "{} cold starts each, alternating; each: 1 first + {} warm batches of {size} fresh Trybe envelopes ({} records per cold start); every answer without batchItemFailures, every record found finished in DynamoDB ({} and {} verified). min / median / max over cold starts.\n",
        args.common.runs,
        args.common.warm,
        (1 + args.common.warm) * size,
        runs[0].iter().map(|r| r.verified).sum::<usize>(),
        runs[1].iter().map(|r| r.verified).sum::<usize>(),
    );
    println!("| figure | ours (event-processor) | python peer | peer ÷ ours (medians) |");
    println!("|---|---|---|---|");
    type Row<'a> = (&'a str, Box<dyn Fn(&Run) -> f64 + 'a>, usize);
    let rows: Vec<Row> = vec![
        (
            "CPU per processed event, warm batches: mean (µs)",
            Box::new(move |r: &Run| r.cpu_per_event_us(size)),
            0,
        ),
        (
            "CPU per processed event, median warm batch (µs)",
            Box::new(move |r: &Run| {
                summarize(&r.warm_cpu_us).map_or(0.0, |s| s.median) / size.max(1) as f64
            }),
            0,
        ),
        (
            "CPU per warm batch, mean (ms)",
            Box::new(|r: &Run| summarize(&r.warm_cpu_us).map_or(0.0, |s| s.mean) / 1e3),
            2,
        ),
        (
            "wall per warm batch, median (ms)",
            Box::new(Run::warm_median_ms),
            2,
        ),
        (
            "first batch CPU (ms)",
            Box::new(|r: &Run| r.first_cpu_ms),
            2,
        ),
        ("first batch wall (ms)", Box::new(|r: &Run| r.first_ms), 2),
        ("init CPU (ms)", Box::new(|r: &Run| r.init_cpu_ms), 1),
        ("init wall (ms)", Box::new(|r: &Run| r.init_ms), 1),
        (
            "CPU whole life ÷ records, init included (µs)",
            Box::new(|r: &Run| r.cpu_total_ms * 1e3 / r.records.max(1) as f64),
            0,
        ),
        (
            "peak RSS (VmHWM, MiB)",
            Box::new(|r: &Run| r.rss_peak_kib as f64 / 1024.0),
            1,
        ),
    ];
    for (name, f, digits) in &rows {
        println!(
            "| {name} | {} | {} | {:.1}× |",
            fmt3(of(0, f.as_ref()), 1.0, *digits),
            fmt3(of(1, f.as_ref()), 1.0, *digits),
            med(1, f.as_ref()) / med(0, f.as_ref()).max(1e-12)
        );
    }
    if runs.iter().flatten().any(|r| r.throttled > 0) {
        println!(
            "\nCFS throttled (median per cold start): ours {:.0}, peer {:.0}",
            med(0, &|r| r.throttled as f64),
            med(1, &|r| r.throttled as f64)
        );
    }
    let per_event = |r: &Run| r.cpu_per_event_us(size);
    let ratio = med(1, &per_event) / med(0, &per_event).max(1e-12);
    let (worst_peer, best_ours) = (
        of(1, &per_event).map_or(0.0, |s| s.min),
        of(0, &per_event).map_or(0.0, |s| s.max),
    );
    println!(
        "\nTarget, ours ≥ {TARGET_RATIO}× less CPU per processed event (warm): {:.1}× on the medians — {}; cheapest peer cold start ÷ dearest of ours: {:.1}×.",
        ratio,
        if ratio >= TARGET_RATIO { "met" } else { "NOT met" },
        worst_peer / best_ours.max(1e-12)
    );
    let json_runs = |t: usize| {
        runs[t]
            .iter()
            .map(|r| {
                json!({
                    "init_ms": r.init_ms, "init_cpu_ms": r.init_cpu_ms,
                    "first_ms": r.first_ms, "first_cpu_ms": r.first_cpu_ms,
                    "warm_ms": r.warm_ms, "warm_cpu_us": r.warm_cpu_us,
                    "cpu_per_event_us": r.cpu_per_event_us(size),
                    "rss_peak_kib": r.rss_peak_kib, "cpu_total_ms": r.cpu_total_ms,
                    "records": r.records, "verified": r.verified, "throttled": r.throttled,
                })
            })
            .collect::<Vec<_>>()
    };
    save(
        &format!("processor-batch{size}"),
        &json!({
            "scenario": scenario,
            "event_processor_sha256": sha256,
            "batch_size": size,
            "targets": [
                {"label": targets[0].label, "runs": json_runs(0)},
                {"label": targets[1].label, "runs": json_runs(1)},
            ],
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5s_as_sqs_computes_them() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        // A published example of SQS's algorithm (one String attribute).
        assert_eq!(
            md5_of_string_attributes(&[("attribName1", "attribValue 1")]),
            "19e27d4e946b072f3f58da80d94fd778"
        );
        assert_eq!(
            md5_of_string_attributes(&[("b", "2"), ("a", "1")]),
            md5_of_string_attributes(&[("a", "1"), ("b", "2")]),
            "in name order"
        );
    }

    #[test]
    fn the_peers_keys_are_powertools_keys() {
        // hashlib.md5(json.dumps(key).encode()).hexdigest(), computed with Python.
        let (pk, status) = expected_item(
            false,
            "trybe#00000000-0000-0000-0000-111111111111#id#66c36e0aef7657ae2b0961a1",
        );
        assert_eq!(
            pk,
            "python-processor-peer.handler.process_envelope#4efbc7ec45240d289612aad61138ca54"
        );
        assert_eq!(status, "COMPLETED");
        assert_eq!(
            expected_item(true, "trybe#s#id#1"),
            ("processed#trybe#s#id#1".into(), "PROCESSED")
        );
    }

    #[test]
    fn batches_are_sqs_events_of_fresh_envelopes() {
        let samples = samples(&[]).unwrap();
        assert!(samples.len() >= 2, "every Trybe sample by default");
        assert!(samples.iter().all(|(n, _)| !n.ends_with(".apigw")));
        let arn = "arn:aws:sqs:us-east-1:123456789012:q";
        let made = batches(&samples, 3, 10, arn).unwrap();
        let keys: std::collections::HashSet<&String> =
            made.iter().flat_map(|b| &b.dedup_keys).collect();
        assert_eq!(keys.len(), 30, "a fresh dedup key per record");
        // What the processor deserializes (aws_lambda_events, as lambda_runtime does).
        let event: aws_lambda_events::event::sqs::SqsEvent =
            serde_json::from_slice(&made[0].event).unwrap();
        assert_eq!(event.records.len(), 10);
        let record = &event.records[0];
        assert_eq!(record.event_source.as_deref(), Some("aws:sqs"));
        assert_eq!(record.event_source_arn.as_deref(), Some(arn));
        let body = record.body.as_deref().unwrap();
        assert_eq!(
            record.md5_of_body.as_deref(),
            Some(md5_hex(body.as_bytes()).as_str())
        );
        for name in [
            "ApproximateReceiveCount",
            "SentTimestamp",
            "SenderId",
            "ApproximateFirstReceiveTimestamp",
        ] {
            assert!(record.attributes.contains_key(name), "{name}");
        }
        assert_eq!(
            record.message_attributes["provider"]
                .string_value
                .as_deref(),
            Some("trybe")
        );
        let envelope: Value = serde_json::from_str(body).unwrap();
        for field in [
            "provider",
            "event_id",
            "event_type",
            "dedup_key",
            "received_at",
            "body_sha256",
            "payload",
        ] {
            assert!(!envelope[field].is_null(), "{field}");
        }
        let id = envelope["payload"]["id"].as_str().unwrap();
        assert_eq!(envelope["event_id"], id);
        let site = envelope["payload"]["site_id"].as_str().unwrap();
        assert_eq!(envelope["dedup_key"], format!("trybe#{site}#id#{id}"));
        assert_eq!(made[0].dedup_keys[0], envelope["dedup_key"]);
        // The body's hash is of the payload's bytes as a receiver would have hashed them.
        assert_eq!(
            envelope["body_sha256"],
            shared::verify::sha256_hex(envelope["payload"].to_string().as_bytes())
        );
    }
}

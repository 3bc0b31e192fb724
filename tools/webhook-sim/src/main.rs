//! webhook-sim: fires provider webhooks at a receiver exactly as the provider sends them
//! (headers, signatures, timestamps, URL tokens, handshakes, Tilby batches), and renders the
//! API Gateway events in `events/`. Use it on a deployed URL before pointing the provider at it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures::stream::{self, StreamExt};
use serde_json::Value;
use shared::apigw::Sent;
use shared::config::Env;
use shared::providers;
use time::OffsetDateTime;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Env file with the secrets to sign with (the dev ones by default).
    #[arg(long, global = true, default_value = "local.env")]
    env_file: PathBuf,
    /// Folder of samples: `<events>/<provider>/<name>.<ext>`.
    #[arg(long, global = true, default_value = "events")]
    events: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send a sample (or a body) to a receiver and print each answer.
    Send(SendArgs),
    /// Write `<sample>.apigw.json` (API Gateway HTTP API event) beside every sample, or under
    /// `--events-out/<provider>/`, signed now.
    Render {
        #[arg(long)]
        events_out: Option<PathBuf>,
    },
    /// List providers and their samples.
    List,
}

#[derive(clap::Args)]
struct SendArgs {
    provider: String,
    /// Sample name (file stem in `events/<provider>/`), e.g. `basket.submitted`; without it, the
    /// provider's first sample by name.
    sample: Option<String>,
    /// The function's URL, e.g. http://127.0.0.1:9000/lambda-url/trybe-webhook
    #[arg(long)]
    url: String,
    /// Send this file's bytes instead of a sample.
    #[arg(long)]
    body_file: Option<PathBuf>,
    /// Number of requests.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Send the same event every time (a provider retrying); otherwise each copy gets a unique id.
    #[arg(long)]
    duplicate: bool,
    /// Override the HTTP method (TRIFFT lets the account choose it).
    #[arg(long)]
    method: Option<String>,
    /// Print only the summary.
    #[arg(long)]
    quiet: bool,
}

/// What one request got: status and body, or a transport error.
type Reply = Result<(u16, String), String>;

fn samples(events: &Path, provider: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(events.join(provider))
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file() && !p.to_string_lossy().ends_with(".apigw.json"));
    files.sort();
    files
}

fn sample_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A copy of a JSON sample with its event ids made unique, so that a load run is not all duplicates.
fn unique(body: &[u8], n: usize) -> Vec<u8> {
    let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(body) else {
        return body.to_vec();
    };
    let suffix = |v: &mut Value| {
        if let Value::String(s) = v {
            s.push_str(&format!("-{n}"));
        }
    };
    for key in ["id", "order_id", "notification_uuid", "event_id"] {
        map.get_mut(key).map(suffix);
    }
    if let Some(Value::Object(data)) = map.get_mut("data") {
        data.get_mut("id").map(suffix);
    }
    serde_json::to_vec(&Value::Object(map)).unwrap_or_else(|_| body.to_vec())
}

/// `base` (a function's URL: the stack's `TrybeWebhookUrl`, or `make dev`'s) followed by the
/// request's path, except a bare `/`: an HTTP API route `/trybe` does not match `/trybe/`.
fn url_for(base: &str, sent: &Sent) -> String {
    let base = base.trim_end_matches('/');
    let mut url = match sent.path.as_str() {
        "/" | "" => base.to_owned(),
        path => format!("{base}{path}"),
    };
    if let Some(q) = sent.query.as_deref().filter(|q| !q.is_empty()) {
        url.push('?');
        url.push_str(q);
    }
    url
}

async fn fire(
    client: &reqwest::Client,
    base: &str,
    sent: &Sent,
) -> (Result<(u16, String), String>, Duration) {
    let started = Instant::now();
    let method = reqwest::Method::from_bytes(sent.method.as_str().as_bytes())
        .unwrap_or(reqwest::Method::POST);
    let mut request = client
        .request(method, url_for(base, sent))
        .body(sent.body.clone());
    for (k, v) in &sent.headers {
        request = request.header(k, v);
    }
    let result = match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            Ok((status, response.text().await.unwrap_or_default()))
        }
        Err(e) => Err(e.to_string()),
    };
    (result, started.elapsed())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn send(env: &Env, events: &Path, args: SendArgs) -> Result<bool, String> {
    let SendArgs {
        provider,
        sample,
        url,
        body_file,
        count,
        concurrency,
        duplicate,
        method,
        quiet,
    } = args;
    let (provider, url) = (provider.as_str(), url.as_str());
    let body = match (body_file, sample) {
        (Some(file), _) => std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?,
        (None, sample) => {
            // The sample named, or the provider's first by name.
            let mut all = samples(events, provider).into_iter();
            let path = match &sample {
                Some(name) => all.find(|p| sample_name(p) == *name),
                None => all.next(),
            }
            .ok_or_else(|| {
                let what = sample.map_or("samples".into(), |name| format!("sample {name}"));
                format!("no {what} in {}", events.join(provider).display())
            })?;
            std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?
        }
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let results: Vec<(usize, Reply, Duration)> = stream::iter(0..count)
        .map(|n| {
            let body = if duplicate || count == 1 {
                body.clone()
            } else {
                unique(&body, n)
            };
            let client = &client;
            let method = method.clone();
            async move {
                // Signed at send time, as the provider does (Tribe's timestamp is in the signature).
                let mut sent =
                    match providers::simulate(provider, &body, env, OffsetDateTime::now_utc()) {
                        Ok(sent) => sent,
                        Err(e) => return (n, Err(e.to_string()), Duration::ZERO),
                    };
                if let Some(m) = method.as_deref().and_then(|m| m.parse().ok()) {
                    sent.method = m;
                }
                let (result, took) = fire(client, url, &sent).await;
                (n, result, took)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut by_status: std::collections::BTreeMap<String, usize> = Default::default();
    for (n, result, took) in &results {
        let key = match result {
            Ok((status, body)) => {
                if !quiet {
                    println!("#{n} {status} {:.1}ms {body}", took.as_secs_f64() * 1e3);
                }
                latencies.push(*took);
                status.to_string()
            }
            Err(e) => {
                println!("#{n} error {e}");
                "error".into()
            }
        };
        *by_status.entry(key).or_default() += 1;
    }
    latencies.sort();
    println!(
        "{count} requests in {:.2}s ({:.0}/s), concurrency {concurrency}; answers {by_status:?}; latency p50 {:.1}ms p95 {:.1}ms p99 {:.1}ms max {:.1}ms",
        elapsed.as_secs_f64(),
        count as f64 / elapsed.as_secs_f64().max(1e-9),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.95).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Ok(by_status.keys().all(|k| k == "200"))
}

fn render(env: &Env, events: &Path, out_dir: Option<&Path>) -> Result<(), String> {
    let now = OffsetDateTime::now_utc();
    for (provider, _) in providers::ALL {
        for path in samples(events, provider) {
            let body = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut sent =
                providers::simulate(provider, &body, env, now).map_err(|e| e.to_string())?;
            // As API Gateway routes it: /<provider>/<rest>.
            sent.path = format!("/{provider}{}", sent.path)
                .trim_end_matches('/')
                .to_owned();
            let mut event = sent.to_event_json();
            event["requestContext"]["timeEpoch"] = shared::clock::epoch_millis(now).into();
            event["requestContext"]["requestId"] =
                format!("sample-{provider}-{}", sample_name(&path)).into();
            let file = format!("{}.apigw.json", sample_name(&path));
            let out = match out_dir {
                Some(dir) => {
                    std::fs::create_dir_all(dir.join(provider)).map_err(|e| e.to_string())?;
                    dir.join(provider).join(file)
                }
                None => path.with_file_name(file),
            };
            let json = serde_json::to_string_pretty(&event).map_err(|e| e.to_string())?;
            std::fs::write(&out, json + "\n").map_err(|e| format!("{}: {e}", out.display()))?;
            println!("wrote {}", out.display());
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // ring, as the functions use: the workspace's rustls has no default provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let env = match Env::from_env_file(&cli.env_file) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("{}: {e}", cli.env_file.display());
            return std::process::ExitCode::from(2);
        }
    };
    let outcome = match cli.command {
        Command::Send(args) => send(&env, &cli.events, args).await,
        Command::Render { events_out } => {
            render(&env, &cli.events, events_out.as_deref()).map(|_| true)
        }
        Command::List => {
            for (provider, function) in providers::ALL {
                let names: Vec<String> = samples(&cli.events, provider)
                    .iter()
                    .map(|p| sample_name(p))
                    .collect();
                println!("{provider} ({function}): {}", names.join(", "));
            }
            Ok(true)
        }
    };
    match outcome {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("webhook-sim: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_copies_change_only_the_ids() {
        let body = br#"{"id":"e1","data":{"id":"d1","x":1},"site_id":"s"}"#;
        let v: Value = serde_json::from_slice(&unique(body, 7)).unwrap();
        assert_eq!(v["id"], "e1-7");
        assert_eq!(v["data"]["id"], "d1-7");
        assert_eq!(v["site_id"], "s");
        assert_eq!(unique(b"<xml/>", 3), b"<xml/>");
    }

    #[test]
    fn urls_join_base_path_and_query() {
        let mut sent = Sent::post("/tok", "");
        assert_eq!(
            url_for("http://h/lambda-url/f/", &sent),
            "http://h/lambda-url/f/tok"
        );
        sent.query = Some("a=1".into());
        assert_eq!(url_for("http://h/x", &sent), "http://h/x/tok?a=1");
    }

    #[test]
    fn a_bare_slash_is_not_appended_to_a_stack_url() {
        // The stack's TrybeWebhookUrl is …/trybe; the HTTP API's route /trybe is not /trybe/.
        let mut sent = Sent::post("/", "");
        let url = "https://abc.execute-api.eu-west-1.amazonaws.com/trybe";
        assert_eq!(url_for(url, &sent), url);
        assert_eq!(url_for(&format!("{url}/"), &sent), url);
        sent.query = Some("a=1".into());
        assert_eq!(url_for(url, &sent), format!("{url}?a=1"));
    }
}

//! webhook-ops: the operator's tool for the webhook intake. It looks into and redrives the
//! dead-letter queue, and shows or releases the claim records in DynamoDB. It never prints a
//! payload unless asked (`dlq list --show-payload`), and it asks before it changes anything.
//!
//! Exit codes: 0 done, 1 an error, a refusal or a declined confirmation, 2 a usage error.

mod claim;
mod dlq;
mod replay;
mod text;

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Operator tool for the webhook intake: the dead-letter queue, the claim records, replays from the archive",
    long_about = "Operator tool for the webhook intake: the dead-letter queue and the claim records.\n\n\
        AWS credentials, region and endpoint come from the usual chain (environment, profile, \
        instance role); AWS_ENDPOINT_URL points it at local AWS (moto, `make dev`). Payloads are \
        never printed unless `dlq list --show-payload` asks for them, and nothing is changed \
        without a typed `yes` (or --yes).\n\n\
        Exit codes: 0 done, 1 error, refusal or declined confirmation, 2 usage error."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Global {
    /// DynamoDB claim table [default: $EVENTS_TABLE].
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        help_heading = "Global options"
    )]
    table: Option<String>,
    /// Main queue, as a URL or a queue name [default: $EVENTS_QUEUE_URL, else $EVENTS_QUEUE_NAME].
    #[arg(
        long = "queue-url",
        visible_alias = "queue",
        global = true,
        value_name = "URL|NAME",
        help_heading = "Global options"
    )]
    queue: Option<String>,
    /// Dead-letter queue, as a URL or a queue name [default: $EVENTS_DLQ_URL, else
    /// $EVENTS_DLQ_NAME].
    #[arg(
        long = "dlq-url",
        visible_alias = "dlq",
        global = true,
        value_name = "URL|NAME",
        help_heading = "Global options"
    )]
    dlq: Option<String>,
    /// Read KEY=VALUE lines from this file into the environment first (repeatable; a variable
    /// already set wins), e.g. `--env-file local.env --env-file .dev/resources.env` under `make dev`.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        help_heading = "Global options"
    )]
    env_file: Vec<PathBuf>,
    /// Machine-readable output (JSON on stdout); prompts and errors still go to stderr.
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
    /// Long-poll wait of each SQS receive, in seconds (0-20). An empty receive ends a pass over
    /// the queue; with 0, SQS may answer empty while messages remain (short polling samples).
    #[arg(
        long,
        global = true,
        default_value_t = 1,
        help_heading = "Global options",
        value_parser = clap::value_parser!(i32).range(0..=20)
    )]
    wait_seconds: i32,
}

#[derive(Subcommand)]
enum Command {
    /// The dead-letter queue: list its messages, move them back to the main queue.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Claim records (`<dedup key>` and the processor's `processed#<dedup key>`): show, release.
    #[command(subcommand)]
    Claim(claim::ClaimCommand),
    /// Queue archived events again, marked as replays (asks first unless --yes).
    #[command(long_about = replay::ABOUT)]
    Replay(replay::ReplayArgs),
}

/// Why a command did not succeed, and its exit code.
#[derive(Debug)]
pub enum Fail {
    /// Exit 2: the command cannot run as given (missing table, queue, ...).
    Usage(String),
    /// Exit 1: an AWS call failed, the operator declined, or the tool refused.
    Error(String),
}

impl Fail {
    pub fn aws<E: std::error::Error + 'static>(op: &str, e: E) -> Fail {
        Fail::Error(format!(
            "{op} failed: {}",
            aws_sdk_sqs::error::DisplayErrorContext(e)
        ))
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Usage(m) | Fail::Error(m) => f.write_str(m),
        }
    }
}

pub type Outcome = Result<(), Fail>;

/// What every command needs: the SDK configuration and the resolved options.
pub struct Ctx {
    pub sdk: SdkConfig,
    pub json: bool,
    pub wait_seconds: i32,
    table: Option<String>,
    queue: Option<String>,
    dlq: Option<String>,
}

impl Ctx {
    pub fn table(&self) -> Result<String, Fail> {
        from_flag_or_env(self.table.as_deref(), &["EVENTS_TABLE"])
            .ok_or_else(|| Fail::Usage("no claim table: pass --table or set EVENTS_TABLE".into()))
    }

    pub async fn queue_url(&self, sqs: &aws_sdk_sqs::Client) -> Result<String, Fail> {
        let given = from_flag_or_env(
            self.queue.as_deref(),
            &["EVENTS_QUEUE_URL", "EVENTS_QUEUE_NAME"],
        )
        .ok_or_else(|| {
            Fail::Usage(
                "no queue: pass --queue-url (a URL or a name) or set EVENTS_QUEUE_URL or EVENTS_QUEUE_NAME"
                    .into(),
            )
        })?;
        resolve_queue(sqs, &given).await
    }

    pub async fn dlq_url(&self, sqs: &aws_sdk_sqs::Client) -> Result<String, Fail> {
        let given = from_flag_or_env(self.dlq.as_deref(), &["EVENTS_DLQ_URL", "EVENTS_DLQ_NAME"])
            .ok_or_else(|| {
                Fail::Usage(
                    "no dead-letter queue: pass --dlq-url (a URL or a name) or set EVENTS_DLQ_URL or EVENTS_DLQ_NAME"
                        .into(),
                )
            })?;
        resolve_queue(sqs, &given).await
    }
}

/// The flag, else the first variable set (and not empty).
fn from_flag_or_env(flag: Option<&str>, vars: &[&str]) -> Option<String> {
    flag.map(str::to_owned)
        .or_else(|| {
            vars.iter()
                .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
        })
        .map(|s| s.trim().to_owned())
}

/// Whether `given` is a queue URL rather than a queue name.
fn is_queue_url(given: &str) -> bool {
    given.starts_with("https://") || given.starts_with("http://")
}

/// A queue URL as is; a queue name through GetQueueUrl.
async fn resolve_queue(sqs: &aws_sdk_sqs::Client, given: &str) -> Result<String, Fail> {
    if is_queue_url(given) {
        return Ok(given.to_owned());
    }
    let out = sqs
        .get_queue_url()
        .queue_name(given)
        .send()
        .await
        .map_err(|e| Fail::aws(&format!("GetQueueUrl for queue {given:?}"), e))?;
    out.queue_url
        .ok_or_else(|| Fail::Error(format!("GetQueueUrl gave no URL for queue {given:?}")))
}

/// `word` as a POSIX shell reads it back: as it is when it holds only characters no shell
/// treats specially, else in single quotes (a `'` inside written as `'\''`).
pub fn shell_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Asks on stderr and reads one line of stdin: only `yes` confirms (end of input does not).
pub fn confirm(question: &str) -> bool {
    eprint!("{question} Type yes to continue: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let stdin = std::io::stdin();
    let read = stdin.lock().read_line(&mut line);
    if !stdin.is_terminal() || matches!(read, Ok(0)) {
        // No echo of a typed Enter: end the prompt's line.
        eprintln!();
    }
    matches!(read, Ok(n) if n > 0) && line.trim() == "yes"
}

/// KEY=VALUE lines (blank lines and `#` comments skipped; surrounding quotes removed).
fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

fn load_env_file(path: &Path) -> Result<(), Fail> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Fail::Usage(format!("cannot read --env-file {}: {e}", path.display())))?;
    for (k, v) in parse_env_file(&text) {
        if std::env::var_os(&k).is_none() {
            // Before the runtime starts: no other thread reads the environment yet.
            std::env::set_var(k, v);
        }
    }
    Ok(())
}

async fn sdk() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(shared::runtime::http_client())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(30))
                .operation_timeout(Duration::from_secs(90))
                .build(),
        )
        .load()
        .await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    for path in &cli.global.env_file {
        if let Err(e) = load_env_file(path) {
            return report(Err(e));
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return report(Err(Fail::Error(format!("cannot start the runtime: {e}")))),
    };
    let outcome = runtime.block_on(async {
        let ctx = Ctx {
            sdk: sdk().await,
            json: cli.global.json,
            wait_seconds: cli.global.wait_seconds,
            table: cli.global.table,
            queue: cli.global.queue,
            dlq: cli.global.dlq,
        };
        match cli.command {
            Command::Dlq(c) => dlq::run(&ctx, c).await,
            Command::Claim(c) => claim::run(&ctx, c).await,
            Command::Replay(args) => replay::run(&ctx, args).await,
        }
    });
    report(outcome)
}

fn report(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Error(m)) => {
            eprintln!("webhook-ops: {m}");
            ExitCode::from(1)
        }
        Err(Fail::Usage(m)) => {
            eprintln!("webhook-ops: {m}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn queue_urls_and_names_are_told_apart() {
        assert!(is_queue_url(
            "https://sqs.eu-west-1.amazonaws.com/123456789012/webhook-events"
        ));
        assert!(is_queue_url(
            "http://127.0.0.1:4566/123456789012/webhook-events"
        ));
        assert!(!is_queue_url("webhook-events-dlq"));
    }

    #[test]
    fn shell_words_read_back_as_given() {
        assert_eq!(
            shell_word("trybe/2026-12-01/100000.000Z-ab.json"),
            "trybe/2026-12-01/100000.000Z-ab.json"
        );
        assert_eq!(
            shell_word("2026-12-01T10:00:00+01:00"),
            "2026-12-01T10:00:00+01:00"
        );
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("$HOME;x"), "'$HOME;x'");
    }

    #[test]
    fn env_files_read_as_make_dev_writes_them() {
        let parsed = parse_env_file(
            "# comment\n\nEVENTS_TABLE=webhook-events\nexport EVENTS_QUEUE_NAME = \"q\"\nX='a=b'\nnot a pair\n",
        );
        assert_eq!(
            parsed,
            vec![
                ("EVENTS_TABLE".to_owned(), "webhook-events".to_owned()),
                ("EVENTS_QUEUE_NAME".to_owned(), "q".to_owned()),
                ("X".to_owned(), "a=b".to_owned()),
            ]
        );
    }

    #[test]
    fn usage_errors_exit_2_and_help_documents_what_listing_does() {
        let e = Cli::try_parse_from(["webhook-ops", "dlq", "redrive"])
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2, "redrive needs --id or --all");
        let e = Cli::try_parse_from(["webhook-ops", "dlq", "redrive", "--id", "a", "--all"])
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2, "--id and --all exclude each other");
        let e = Cli::try_parse_from(["webhook-ops", "claim", "show", "nosuch", "id"])
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2, "unknown provider");
        let e = Cli::try_parse_from(["webhook-ops", "claim", "show", "trybe"])
            .err()
            .unwrap();
        assert_eq!(e.exit_code(), 2, "an event id or --key");
        assert!(
            Cli::try_parse_from(["webhook-ops", "claim", "show", "--key", "trybe#s#id#1"]).is_ok()
        );
        let e = Cli::try_parse_from([
            "webhook-ops",
            "claim",
            "release",
            "trybe",
            "1",
            "--key",
            "trybe#s#id#1",
        ])
        .err()
        .unwrap();
        assert_eq!(e.exit_code(), 2, "--key replaces provider and event id");

        let mut cmd = Cli::command();
        let list = cmd
            .find_subcommand_mut("dlq")
            .unwrap()
            .find_subcommand_mut("list")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(list.contains("ChangeMessageVisibility"), "{list}");
        assert!(list.contains("does not consume"), "{list}");
    }
}

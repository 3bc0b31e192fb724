//! JSON logs, one object per line, for CloudWatch Logs Insights. Level from `RUST_LOG`, else
//! `AWS_LAMBDA_LOG_LEVEL`, else `info`. Call sites log ids, types and outcomes, never secrets,
//! signatures or payload contents. Each line carries the runtime's invocation span
//! (`span.requestId`, `span.xrayTraceId`), so every line of a request can be found by its id.
//!
//! Other crates are capped at INFO whatever the level says: at DEBUG and TRACE the Lambda runtime
//! logs raw invocation events (request bodies, headers with signatures and tokens) and the AWS
//! SDK logs requests (message bodies with personal data). `RUST_LOG=trace` opens only our own
//! crates, which log nothing secret at any level.

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::{filter_fn, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

/// Crates of this workspace: the only targets allowed below INFO.
const OWN_CRATES: &[&str] = &[
    "shared",
    "event_processor",
    "trybe_webhook",
    "tribe_webhook",
    "trifft_webhook",
    "tribemade_webhook",
    "tilby_webhook",
    "webhook_sim",
];

/// Whether an event or span may be recorded at all: ours at any level, others at INFO and above.
pub fn allowed(meta: &Metadata<'_>) -> bool {
    *meta.level() <= Level::INFO || {
        let root = meta.target().split("::").next().unwrap_or("");
        OWN_CRATES.contains(&root)
    }
}

/// The level directive in force: `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL`, else `info`.
pub fn level_from_env() -> String {
    std::env::var("RUST_LOG")
        .ok()
        .filter(|v| v.parse::<Targets>().is_ok())
        .or_else(|| {
            std::env::var("AWS_LAMBDA_LOG_LEVEL")
                .ok()
                .map(|l| l.to_lowercase())
        })
        .unwrap_or_else(|| "info".into())
}

/// The subscriber every function uses, writing to `writer` (stdout in Lambda, a buffer in the
/// tests that check what the logs may contain).
pub fn subscriber<W>(directives: &str, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    // `level` or `target=level,…` (tracing-subscriber's Targets: no span or field directives,
    // and no regex engine in the binary).
    let level = directives
        .parse::<Targets>()
        .unwrap_or_else(|_| Targets::new().with_default(Level::INFO));
    let json = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .with_writer(writer);
    // Global filters (not per-layer ones, whose interest is kept per thread and can be lost
    // when another thread registers a call site first).
    tracing_subscriber::registry()
        .with(level)
        .with(filter_fn(allowed))
        .with(json)
}

/// A writer that keeps what the subscriber writes, for tests that check what logs contain
/// (`subscriber(level, capture.clone())`, then `capture.text()`).
#[derive(Clone, Default)]
pub struct Capture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("capture lock")).into_owned()
    }
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Capture {
        self.clone()
    }
}

pub fn init() {
    // Tests and benches may call this more than once: the first subscriber stays.
    let _ = tracing::subscriber::set_global_default(subscriber(&level_from_env(), std::io::stdout));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_opens_our_crates_only_and_other_crates_stay_at_info() {
        let capture = Capture::default();
        let subscriber = subscriber(
            "trace,lambda_runtime=trace,aws_smithy_runtime=trace",
            capture.clone(),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "lambda_runtime::layers", "raw event secret-body-1");
            tracing::debug!(target: "aws_smithy_runtime::client", "request secret-body-2");
            tracing::trace!(target: "hyper_util", "bytes secret-body-3");
            tracing::info!(target: "lambda_runtime", "runtime-info-line");
            tracing::trace!(target: "shared::pipeline", "own-trace-line");
            tracing::trace!("own-default-target-line");
        });
        let logs = capture.text();
        assert!(!logs.contains("secret-body"), "{logs}");
        for line in [
            "runtime-info-line",
            "own-trace-line",
            "own-default-target-line",
        ] {
            assert!(logs.contains(line), "{line} missing: {logs}");
        }
    }

    #[test]
    fn the_level_directive_is_obeyed_and_a_bad_one_means_info() {
        let logged = |directives: &str| {
            let capture = Capture::default();
            tracing::subscriber::with_default(subscriber(directives, capture.clone()), || {
                tracing::debug!(target: "shared::pipeline", "debug-line");
                tracing::info!(target: "shared::pipeline", "info-line");
                tracing::warn!(target: "shared::pipeline", "warn-line");
            });
            let text = capture.text();
            ["debug-line", "info-line", "warn-line"]
                .into_iter()
                .filter(|l| text.contains(l))
                .collect::<Vec<_>>()
        };
        assert_eq!(logged("warn"), ["warn-line"]);
        assert_eq!(
            logged("shared=debug,warn"),
            ["debug-line", "info-line", "warn-line"]
        );
        assert_eq!(logged("[span{x=1}]=nonsense"), ["info-line", "warn-line"]);
        assert_eq!(logged("off"), Vec::<&str>::new());
    }
}

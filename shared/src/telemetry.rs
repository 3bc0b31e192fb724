//! JSON logs, one object per line, for CloudWatch Logs Insights. Level from `RUST_LOG`, else
//! `AWS_LAMBDA_LOG_LEVEL`, else `info`. Call sites log ids, types and outcomes, never secrets,
//! signatures or payload contents. Each line carries the runtime's invocation span
//! (`span.requestId`, `span.xrayTraceId`), so every line of a request can be found by its id.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .map(|l| l.to_lowercase())
        .unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // try_init: tests and benches may call this more than once.
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .try_init();
}

//! Webhook intake for AWS Lambda: the pipeline every receiver shares, the processor, and the
//! providers' rules. See docs/design.md for the flow and the claims, README "Answers" for the
//! answers, docs/providers.md for each provider's wire format.

pub mod answer;
pub mod apigw;
pub mod clock;
pub mod config;
pub mod consumer;
pub mod envelope;
pub mod json;
pub mod keys;
pub mod metrics;
pub mod objects;
pub mod pipeline;
pub mod provider;
pub mod providers;
pub mod queue;
pub mod runtime;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod trust;
pub mod verify;

pub use answer::Answer;
pub use config::{ConfigError, Env, Settings};
pub use envelope::{Envelope, Payload};
pub use pipeline::Receiver;
pub use provider::{Inbound, InboundEvent, Inspection, Provider, Refusal, VerifiedRequest};
pub use runtime::{run_processor, run_receiver};

/// mimalloc instead of glibc's malloc, with the `mimalloc` feature (default; BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

//! One module per provider: its rules (a [`crate::provider::Provider`]), its typed model and
//! processor handler, how it sends a request (`simulate`), and its test vectors. Adding a
//! provider adds a module here and a line to each table below; the pipeline is untouched.

use time::OffsetDateTime;

use crate::apigw::Sent;
use crate::config::{ConfigError, Env};

pub mod tilby;
pub mod trifft;
pub mod trybe;

/// Every provider: (name, Lambda function that receives it).
pub const ALL: &[(&str, &str)] = &[
    (trybe::NAME, "trybe-webhook"),
    (trifft::NAME, "trifft-webhook"),
    (tilby::NAME, "tilby-webhook"),
];

/// The request `provider` would send with `body`, authenticated with the secrets in `env` the way
/// that provider does it (signature headers, timestamps, URL tokens, credentials). `Sent::path`
/// is relative to the function's URL.
pub fn simulate(
    provider: &str,
    body: &[u8],
    env: &Env,
    now: OffsetDateTime,
) -> Result<Sent, SimulateError> {
    match provider {
        trybe::NAME => Ok(trybe::simulate(body, env, now)?),
        trifft::NAME => Ok(trifft::simulate(body, env, now)?),
        tilby::NAME => Ok(tilby::simulate(body, env, now)?),
        other => Err(SimulateError::UnknownProvider(other.to_owned())),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("unknown provider {0}")]
    UnknownProvider(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

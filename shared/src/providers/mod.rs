//! One module per provider: its rules (a [`crate::provider::Provider`]), its typed model and
//! processor handler, how it sends a request (`simulate`), and its test vectors. Adding a
//! provider adds a module here and a line to each table below; the pipeline is untouched.

use time::OffsetDateTime;

use crate::apigw::Sent;
use crate::config::{ConfigError, Env};
use crate::provider::Provider;

pub mod tilby;
pub mod tribe;
pub mod tribemade;
pub mod trifft;
pub mod trybe;

/// Every provider: (name, Lambda function that receives it).
pub const ALL: &[(&str, &str)] = &[
    (trybe::NAME, "trybe-webhook"),
    (tribe::NAME, "tribe-webhook"),
    (tribemade::NAME, "tribemade-webhook"),
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
        tribe::NAME => Ok(tribe::simulate(body, env, now)?),
        tribemade::NAME => Ok(tribemade::simulate(body, env, now)?),
        trifft::NAME => Ok(trifft::simulate(body, env, now)?),
        tilby::NAME => Ok(tilby::simulate(body, env, now)?),
        other => Err(SimulateError::UnknownProvider(other.to_owned())),
    }
}

/// The processor's routing: each provider's events to its handler.
pub fn router() -> crate::consumer::Router {
    use std::sync::Arc;
    crate::consumer::Router::default()
        .provider(trybe::NAME, Arc::new(trybe::TrybeHandler))
        .provider(tribe::NAME, Arc::new(tribe::TribeHandler))
        .provider(tribemade::NAME, Arc::new(tribemade::TribeMadeHandler))
        .provider(trifft::NAME, Arc::new(trifft::TrifftHandler))
        .provider(tilby::NAME, Arc::new(tilby::TilbyHandler))
}

/// The provider `name`, configured from `env` (the same `from_env` its function uses).
pub fn from_env(name: &str, env: &Env) -> Result<Box<dyn Provider>, ConfigError> {
    Ok(match name {
        trybe::NAME => Box::new(trybe::Trybe::from_env(env)?),
        tribe::NAME => Box::new(tribe::Tribe::from_env(env)?),
        tribemade::NAME => Box::new(tribemade::TribeMade::from_env(env)?),
        trifft::NAME => Box::new(trifft::Trifft::from_env(env)?),
        tilby::NAME => Box::new(tilby::Tilby::from_env(env)?),
        other => {
            return Err(ConfigError::Invalid {
                name: "provider".into(),
                why: format!("unknown provider {other}"),
            })
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("unknown provider {0}")]
    UnknownProvider(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

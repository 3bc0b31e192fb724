//! One module per provider: its rules (a [`crate::provider::Provider`]), the typed model of its
//! payloads, how it sends a request (`simulate`), and its test vectors. Adding a provider adds a
//! module here and a line to each table below; the pipeline is untouched
//! (docs/adding-a-provider.md). Its events' business processing lives in the `event-processor`
//! crate (`functions/event-processor/src/handlers/`).

use time::OffsetDateTime;

use crate::apigw::Sent;
use crate::config::{ConfigError, Env};
use crate::provider::Provider;

pub mod standard_webhook;
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
    (standard_webhook::NAME, "standard-webhook"),
];

/// The API route of each provider's function (the SAM template and the CDK app use these; a
/// test checks both). Greedy (`{token+}`) where the provider's URLs carry more than one segment
/// after the provider's name: Tilby appends `/<entity>/<event>` after its token, and both URL
/// token providers accept the token in any segment.
pub const ROUTES: &[(&str, &str)] = &[
    (trybe::NAME, "/trybe"),
    (tribe::NAME, "/tribe"),
    (tribemade::NAME, "/tribemade/{token+}"),
    (trifft::NAME, "/trifft"),
    (tilby::NAME, "/tilby/{token+}"),
    (standard_webhook::NAME, "/standard"),
];

pub fn route(provider: &str) -> Option<&'static str> {
    ROUTES
        .iter()
        .find(|(name, _)| *name == provider)
        .map(|(_, route)| *route)
}

/// Whether API Gateway's HTTP API route `route` (`/a/{b}`, `/a/{b+}`) matches `path`: a
/// `{name}` is one non-empty segment, a final `{name+}` one or more.
pub fn route_matches(route: &str, path: &str) -> bool {
    let mut route = route.trim_start_matches('/').split('/');
    let mut path = path.trim_start_matches('/').split('/');
    loop {
        match (route.next(), path.next()) {
            (None, None) => return true,
            (Some(r), Some(p)) if r.starts_with('{') && r.ends_with("+}") => {
                return !p.is_empty() && route.next().is_none();
            }
            (Some(r), Some(p)) if r.starts_with('{') && r.ends_with('}') => {
                if p.is_empty() {
                    return false;
                }
            }
            (Some(r), Some(p)) if r == p => {}
            _ => return false,
        }
    }
}

/// The full path a provider's request arrives at: its route's prefix and the simulated,
/// function-relative path (`/` alone adds nothing).
pub fn request_path(provider: &str, sent: &Sent) -> String {
    match sent.path.as_str() {
        "" | "/" => format!("/{provider}"),
        rest => format!("/{provider}{rest}"),
    }
}

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
        standard_webhook::NAME => Ok(standard_webhook::simulate(body, env, now)?),
        other => Err(SimulateError::UnknownProvider(other.to_owned())),
    }
}

/// The provider `name`, configured from `env` (the same `from_env` its function uses).
pub fn from_env(name: &str, env: &Env) -> Result<Box<dyn Provider>, ConfigError> {
    Ok(match name {
        trybe::NAME => Box::new(trybe::Trybe::from_env(env)?),
        tribe::NAME => Box::new(tribe::Tribe::from_env(env)?),
        tribemade::NAME => Box::new(tribemade::TribeMade::from_env(env)?),
        trifft::NAME => Box::new(trifft::Trifft::from_env(env)?),
        tilby::NAME => Box::new(tilby::Tilby::from_env(env)?),
        standard_webhook::NAME => Box::new(standard_webhook::StandardWebhook::from_env(env)?),
        other => {
            return Err(ConfigError::Invalid {
                name: "provider".into(),
                why: format!("unknown provider {other}"),
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_route_names_url_tokens_may_not_equal_are_every_provider_and_function() {
        let names: Vec<&str> = ALL.iter().flat_map(|(p, f)| [*p, *f]).collect();
        assert_eq!(names, crate::provider::ROUTE_NAMES);
    }

    #[test]
    fn routes_match_as_api_gateway_does() {
        assert!(route_matches("/trybe", "/trybe"));
        assert!(!route_matches("/trybe", "/trybe/x"));
        assert!(!route_matches("/trybe", "/tribe"));
        assert!(route_matches("/t/{token}", "/t/abc"));
        assert!(!route_matches("/t/{token}", "/t/abc/sales/closed"));
        assert!(!route_matches("/t/{token}", "/t/"));
        assert!(route_matches("/t/{token+}", "/t/abc"));
        assert!(route_matches("/t/{token+}", "/t/abc/sales/closed"));
        assert!(!route_matches("/t/{token+}", "/t"));
        assert!(!route_matches("/t/{token+}", "/t/"));
    }

    /// Every URL shape a provider is documented to call reaches its function: the simulated
    /// request, the API Gateway samples in `events/`, and Tilby's `/<token>/<entity>/<event>`.
    #[test]
    fn every_provider_url_matches_its_route() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let env = Env::from_env_file(&root.join("local.env")).unwrap();
        let now = time::OffsetDateTime::now_utc();
        assert_eq!(ROUTES.len(), ALL.len());
        for (name, _) in ALL {
            let route = route(name).unwrap();
            let mut paths = Vec::new();
            for file in std::fs::read_dir(root.join("events").join(name)).unwrap() {
                let file = file.unwrap().path();
                let file_name = file.file_name().unwrap().to_string_lossy().into_owned();
                let bytes = std::fs::read(&file).unwrap();
                if file_name.ends_with(".apigw.json") {
                    let event: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                    paths.push(event["rawPath"].as_str().unwrap().to_owned());
                } else if file_name.ends_with(".json") {
                    paths.push(request_path(
                        name,
                        &simulate(name, &bytes, &env, now).unwrap(),
                    ));
                }
            }
            assert!(paths.len() >= 2, "{name}: no samples");
            for path in paths {
                assert!(route_matches(route, &path), "{name}: {path} vs {route}");
            }
        }
        let tilby = simulate(tilby::NAME, br#"{"type":"closed"}"#, &env, now).unwrap();
        let long = format!("{}/sales/closed", request_path(tilby::NAME, &tilby));
        assert!(route_matches(route(tilby::NAME).unwrap(), &long), "{long}");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("unknown provider {0}")]
    UnknownProvider(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

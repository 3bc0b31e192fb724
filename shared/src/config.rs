//! Configuration from the environment, read once per cold start (DESIGN.md "Configuration").
//! Any variable `X` can instead be given as `X_SECRET_ARN`: its value is then read once, at cold
//! start, from Secrets Manager.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;

use crate::secret::SecretList;

pub const SECRET_ARN_SUFFIX: &str = "_SECRET_ARN";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set or empty")]
    Missing(String),
    #[error("{name} is invalid: {why}")]
    Invalid { name: String, why: String },
    #[error("{name}: secret could not be read: {why}")]
    SecretUnreadable { name: String, why: String },
}

/// A snapshot of the environment with `*_SECRET_ARN` values resolved.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn from_process() -> Self {
        Env {
            vars: std::env::vars().collect(),
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    /// Reads `KEY=VALUE` lines (`#` comments, blank lines, optional quotes), as in `local.env`.
    pub fn from_env_file(path: &std::path::Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        let vars = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            .collect();
        Ok(Env { vars })
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.vars.insert(name.to_owned(), value.to_owned());
    }

    /// A non-empty, trimmed value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub fn require(&self, name: &str) -> Result<&str, ConfigError> {
        self.get(name)
            .ok_or_else(|| ConfigError::Missing(name.to_owned()))
    }

    pub fn parse_or<T: FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: T::Err| ConfigError::Invalid {
                name: name.to_owned(),
                why: e.to_string(),
            }),
        }
    }

    /// A required secret list: missing or empty is an error (the receiver then fails closed).
    pub fn secrets(&self, name: &str) -> Result<SecretList, ConfigError> {
        self.optional_secrets(name)
            .ok_or_else(|| ConfigError::Missing(name.to_owned()))
    }

    pub fn optional_secrets(&self, name: &str) -> Option<SecretList> {
        self.vars.get(name).and_then(|v| SecretList::parse(v))
    }

    /// Comma-separated plain values (ids, header names).
    pub fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Names of the variables given as `X_SECRET_ARN`, with their ARNs.
    pub fn secret_arns(&self) -> Vec<(String, String)> {
        let mut arns: Vec<(String, String)> = self
            .vars
            .iter()
            .filter_map(|(k, v)| {
                let name = k.strip_suffix(SECRET_ARN_SUFFIX)?;
                let arn = v.trim();
                (!name.is_empty() && !arn.is_empty()).then(|| (name.to_owned(), arn.to_owned()))
            })
            .collect();
        arns.sort();
        arns
    }

    /// Reads every `X_SECRET_ARN` once and stores the value as `X`. A secret string that is a JSON
    /// object is read as key/value pairs and its `X` key is used.
    pub async fn resolve_secrets(&mut self, source: &dyn SecretSource) -> Result<(), ConfigError> {
        for (name, arn) in self.secret_arns() {
            let raw =
                source
                    .secret_string(&arn)
                    .await
                    .map_err(|why| ConfigError::SecretUnreadable {
                        name: name.clone(),
                        why,
                    })?;
            let value = match serde_json::from_str::<serde_json::Value>(&raw) {
                Ok(serde_json::Value::Object(map)) => match map.get(&name).and_then(|v| v.as_str())
                {
                    Some(v) => v.to_owned(),
                    None => {
                        return Err(ConfigError::SecretUnreadable {
                            name: name.clone(),
                            why: format!("JSON secret has no key {name}"),
                        })
                    }
                },
                _ => raw,
            };
            self.vars.insert(name, value);
        }
        Ok(())
    }
}

/// Where `*_SECRET_ARN` values come from (Secrets Manager in Lambda).
#[async_trait]
pub trait SecretSource: Send + Sync {
    async fn secret_string(&self, arn: &str) -> Result<String, String>;
}

#[async_trait]
impl SecretSource for aws_sdk_secretsmanager::Client {
    async fn secret_string(&self, arn: &str) -> Result<String, String> {
        let out = self
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())?;
        out.secret_string()
            .map(str::to_owned)
            .ok_or_else(|| "secret has no string value".to_owned())
    }
}

/// Pipeline settings shared by every function.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub table: String,
    pub queue_url: String,
    /// How long a claim blocks duplicates (`DEDUP_TTL_SECONDS`, default 7 days).
    pub dedup_ttl: Duration,
    /// How long a receiver may hold a claim before a retry takes it over (`CLAIM_LEASE_SECONDS`,
    /// default 30: longer than the receiver's timeout).
    pub lease: Duration,
    /// How long the processor may hold a claim (`PROCESSING_LEASE_SECONDS`, default 300: longer
    /// than the processor's timeout).
    pub processing_lease: Duration,
    /// `MAX_BODY_BYTES`, default 1 MiB.
    pub max_body_bytes: usize,
    /// Largest envelope sent to the queue (`MAX_MESSAGE_BYTES`, default 256 KiB, SQS's default
    /// queue limit).
    pub max_message_bytes: usize,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let secs = |name: &str, default: u64| -> Result<Duration, ConfigError> {
            let v: u64 = env.parse_or(name, default)?;
            if v == 0 {
                return Err(ConfigError::Invalid {
                    name: name.into(),
                    why: "must be positive".into(),
                });
            }
            Ok(Duration::from_secs(v))
        };
        Ok(Settings {
            table: env.require("EVENTS_TABLE")?.to_owned(),
            queue_url: env.require("EVENTS_QUEUE_URL")?.to_owned(),
            dedup_ttl: secs("DEDUP_TTL_SECONDS", 7 * 24 * 3600)?,
            lease: secs("CLAIM_LEASE_SECONDS", 30)?,
            processing_lease: secs("PROCESSING_LEASE_SECONDS", 300)?,
            max_body_bytes: env.parse_or("MAX_BODY_BYTES", 1024 * 1024)?,
            max_message_bytes: env.parse_or("MAX_MESSAGE_BYTES", 256 * 1024)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;
    #[async_trait]
    impl SecretSource for Fake {
        async fn secret_string(&self, arn: &str) -> Result<String, String> {
            match arn {
                "arn:plain" => Ok("s1,s2".into()),
                "arn:json" => Ok(r#"{"TRIBE_SIGNING_SECRET":"from-json"}"#.into()),
                _ => Err("AccessDenied".into()),
            }
        }
    }

    #[test]
    fn settings_need_table_and_queue_and_take_defaults() {
        let err = Settings::from_env(&Env::from_pairs([("EVENTS_TABLE", "t")])).unwrap_err();
        assert_eq!(err, ConfigError::Missing("EVENTS_QUEUE_URL".into()));
        let s = Settings::from_env(&Env::from_pairs([
            ("EVENTS_TABLE", "t"),
            ("EVENTS_QUEUE_URL", "q"),
        ]))
        .unwrap();
        assert_eq!(s.dedup_ttl, Duration::from_secs(604_800));
        assert_eq!(s.max_body_bytes, 1_048_576);
        let bad = Env::from_pairs([
            ("EVENTS_TABLE", "t"),
            ("EVENTS_QUEUE_URL", "q"),
            ("MAX_BODY_BYTES", "lots"),
        ]);
        assert!(matches!(
            Settings::from_env(&bad),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[tokio::test]
    async fn secret_arns_are_resolved_once_into_their_variable() {
        let mut env = Env::from_pairs([
            ("TRYBE_SIGNING_SECRET_SECRET_ARN", "arn:plain"),
            ("TRIBE_SIGNING_SECRET_SECRET_ARN", "arn:json"),
        ]);
        env.resolve_secrets(&Fake).await.unwrap();
        assert_eq!(env.secrets("TRYBE_SIGNING_SECRET").unwrap().len(), 2);
        assert_eq!(env.get("TRIBE_SIGNING_SECRET"), Some("from-json"));
        let mut denied = Env::from_pairs([("X_SECRET_ARN", "arn:other")]);
        let err = denied.resolve_secrets(&Fake).await.unwrap_err();
        assert!(
            matches!(err, ConfigError::SecretUnreadable { ref name, .. } if name == "X"),
            "{err}"
        );
    }

    #[test]
    fn empty_secrets_count_as_missing() {
        let env = Env::from_pairs([("TRYBE_SIGNING_SECRET", " , ")]);
        assert_eq!(
            env.secrets("TRYBE_SIGNING_SECRET").unwrap_err(),
            ConfigError::Missing("TRYBE_SIGNING_SECRET".into())
        );
    }
}

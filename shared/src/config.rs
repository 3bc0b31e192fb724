//! Configuration from the environment, read once per cold start (README "Configuration").
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
    /// Every name looked up, set or not: what a function's configuration reads, so the
    /// deployment templates can be checked against the code ([`Env::names_read`]).
    read: std::sync::Arc<std::sync::Mutex<Reads>>,
}

/// The names an [`Env`] was asked for: all of them, and those read as credentials.
#[derive(Debug, Default)]
struct Reads {
    names: std::collections::BTreeSet<String>,
    secrets: std::collections::BTreeSet<String>,
}

impl Env {
    pub fn from_process() -> Self {
        Env {
            vars: std::env::vars().collect(),
            ..Env::default()
        }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..Env::default()
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
        Ok(Env {
            vars,
            ..Env::default()
        })
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.vars.insert(name.to_owned(), value.to_owned());
    }

    /// The names looked up so far (set or not), sorted. Clones share the record.
    pub fn names_read(&self) -> Vec<String> {
        let read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        read.names.iter().cloned().collect()
    }

    /// The names looked up as credentials ([`Env::secrets`], [`Env::optional_secrets`]).
    pub fn secrets_read(&self) -> Vec<String> {
        let read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        read.secrets.iter().cloned().collect()
    }

    fn note(&self, name: &str, secret: bool) {
        let mut read = self.read.lock().unwrap_or_else(|e| e.into_inner());
        if !read.names.contains(name) {
            read.names.insert(name.to_owned());
        }
        if secret && !read.secrets.contains(name) {
            read.secrets.insert(name.to_owned());
        }
    }

    /// A non-empty, trimmed value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.note(name, false);
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

    /// A required credential: missing or empty is an error (the receiver then fails closed).
    /// A comma-separated list, or a JSON object of tenant → secret(s) ([`SecretList::from_config`]).
    pub fn secrets(&self, name: &str) -> Result<SecretList, ConfigError> {
        self.optional_secrets(name)?
            .ok_or_else(|| ConfigError::Missing(name.to_owned()))
    }

    /// Keys of a MAC over the whole body ([`Self::secrets`]), at most
    /// [`crate::secret::MAX_MAC_KEYS`] tried for any one request: what a forged request costs
    /// is bounded whatever is configured. `narrowable`: the provider's requests name their
    /// tenant, so that a map is narrowed to one tenant's values before any MAC.
    pub fn mac_keys(&self, name: &str, narrowable: bool) -> Result<SecretList, ConfigError> {
        self.optional_mac_keys(name, narrowable)?
            .ok_or_else(|| ConfigError::Missing(name.to_owned()))
    }

    /// [`Self::mac_keys`] for an optional credential.
    pub fn optional_mac_keys(
        &self,
        name: &str,
        narrowable: bool,
    ) -> Result<Option<SecretList>, ConfigError> {
        let Some(keys) = self.optional_secrets(name)? else {
            return Ok(None);
        };
        let most = crate::secret::MAX_MAC_KEYS;
        if keys.most_tried(narrowable) > most {
            let why = if narrowable && keys.is_per_tenant() {
                format!("a tenant has more than {most} values")
            } else if narrowable {
                format!("more than {most} values: bind them to tenants with a JSON map")
            } else {
                format!("more than {most} values: each forged request would be checked against all")
            };
            return Err(ConfigError::Invalid {
                name: name.to_owned(),
                why,
            });
        }
        Ok(Some(keys))
    }

    /// An optional credential: `Ok(None)` when unset or blank; a malformed map is an error.
    pub fn optional_secrets(&self, name: &str) -> Result<Option<SecretList>, ConfigError> {
        self.note(name, true);
        match self.vars.get(name) {
            None => Ok(None),
            Some(v) => SecretList::from_config(v).map_err(|why| ConfigError::Invalid {
                name: name.to_owned(),
                why,
            }),
        }
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
    /// object with an `X` key is read as key/value pairs and that key is used (its value a
    /// string, or a tenant map given as an object); any other secret string is the value itself
    /// (a comma-separated list, or a tenant map).
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
                Ok(serde_json::Value::Object(mut map)) => match map.remove(&name) {
                    Some(serde_json::Value::String(v)) => v,
                    Some(map @ serde_json::Value::Object(_)) => map.to_string(),
                    Some(_) => {
                        return Err(ConfigError::SecretUnreadable {
                            name: name.clone(),
                            why: format!("key {name} is neither a string nor an object"),
                        })
                    }
                    // No `X` key: the whole object is the value (a tenant map).
                    None => raw,
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

/// `MAX_MESSAGE_BYTES` default: SQS's largest message (1 MiB since 2026), which the template
/// sets as the queue's `MaximumMessageSize`.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// API Gateway's payload limit (HTTP and REST APIs: 10 MB). Lambda's own limit on a synchronous
/// invocation's payload (6 MB, the body base64-encoded when binary) is lower: API Gateway answers
/// a larger request itself before this function runs.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Default for `MAX_REQUEST_PAYLOAD_BYTES`: the payloads of one request's events, in all. A body
/// becomes at most itself as one event's payload (10 MiB); only a fan-out that repeats the
/// notification's fields in each event (Tilby) can make more of it, and this bounds what one
/// request may hold in memory and put on the queue.
pub const DEFAULT_MAX_REQUEST_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;
/// Default for `PROCESSOR_BYTES_IN_FLIGHT`: the records of a batch the processor works on at
/// once, in bytes of their envelopes (a claim-checked one counted at its object's size).
pub const DEFAULT_PROCESSOR_BYTES_IN_FLIGHT: usize = 2 * 1024 * 1024;
/// Default for `MAX_EVENTS_PER_REQUEST`: Tilby's imports carry at most 80 entities.
pub const DEFAULT_MAX_EVENTS: usize = 200;
/// `MAX_CONCURRENT_CALLS` default: claims (or batch sends) of one request in flight at once.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize = 16;
/// `REQUEST_DEADLINE_MS` default.
pub const DEFAULT_DEADLINE_MS: u64 = 5_000;
/// The receiver's claim lease is this many times its request deadline.
pub const LEASE_PER_DEADLINE: u32 = 2;

/// Pipeline settings shared by every function.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub table: String,
    pub queue_url: String,
    /// How long a claim blocks duplicates (`DEDUP_TTL_SECONDS`, default 7 days).
    pub dedup_ttl: Duration,
    /// The receiver answers within this (`REQUEST_DEADLINE_MS`, default 5000): whatever DynamoDB
    /// or SQS do, it answers 503 by then, having released what it could. Keep it below the
    /// function timeout.
    pub deadline: Duration,
    /// How long a receiver may hold a claim before a retry takes it over: always
    /// [`LEASE_PER_DEADLINE`] × the deadline, so that no holder still works when its lease ends
    /// (the function timeout lies between the two) and an orphaned claim frees itself soon.
    pub lease: Duration,
    /// How long the processor may hold a claim (`PROCESSING_LEASE_SECONDS`, default 300: longer
    /// than the processor's timeout).
    pub processing_lease: Duration,
    /// `MAX_BODY_BYTES`, default [`DEFAULT_MAX_BODY_BYTES`] (API Gateway's own limit): a body
    /// whose message would exceed the queue's limit is claim-checked through `PAYLOAD_BUCKET`.
    pub max_body_bytes: usize,
    /// The queue's message size limit (`MAX_MESSAGE_BYTES`, default 1 MiB): a message over it,
    /// counted as SQS counts (body and attributes), is refused with 413 before any claim.
    pub max_message_bytes: usize,
    /// Events one request may carry (`MAX_EVENTS_PER_REQUEST`, default 200); more → 413.
    pub max_events: usize,
    /// The payload bytes of one request's events in all (`MAX_REQUEST_PAYLOAD_BYTES`, default
    /// [`DEFAULT_MAX_REQUEST_PAYLOAD_BYTES`]); more → 413 before any claim.
    pub max_request_payload_bytes: usize,
    /// The processor's byte budget (`PROCESSOR_BYTES_IN_FLIGHT`, default
    /// [`DEFAULT_PROCESSOR_BYTES_IN_FLIGHT`]): a batch's records run at once while their sizes
    /// add up to no more; a record larger than the budget runs alone. Memory then follows the
    /// largest event, not the batch.
    pub processor_bytes_in_flight: usize,
    /// Claims, sends and finishes of one request in flight at once (`MAX_CONCURRENT_CALLS`,
    /// default 16).
    pub max_concurrent_calls: usize,
    /// The claim check's bucket (`PAYLOAD_BUCKET`): an envelope too large for the queue waits
    /// there and the message carries a reference. Without it such an event is refused with 413.
    pub payload_bucket: Option<String>,
    /// The archive's bucket (`ARCHIVE_BUCKET`, receivers): every accepted request's body and
    /// envelopes. Off when unset.
    pub archive_bucket: Option<String>,
    /// The KMS key both buckets encrypt with (`OBJECTS_KMS_KEY_ARN`, the stack's
    /// `BucketEncryptionKey=create`): puts ask for SSE-KMS under it. SSE-S3 when unset or blank.
    pub objects_kms_key: Option<String>,
    /// How long the processor hides a failed record ([`crate::queue::Backoff`]): 1 minute
    /// doubling to an hour. `RETRY_BASE_DELAY_SECONDS` and `RETRY_MAX_DELAY_SECONDS` change it
    /// for tests and `make dev` only: the stacks set neither, since their queue's
    /// `maxReceiveCount` is computed for the default waits (a template test checks both).
    pub retry_backoff: crate::queue::Backoff,
}

/// A bucket name, or `None` when the variable is unset or blank.
fn bucket(env: &Env, name: &str) -> Option<String> {
    env.get(name)
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(str::to_owned)
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let positive = |name: &str, default: u64| -> Result<u64, ConfigError> {
            let v: u64 = env.parse_or(name, default)?;
            if v == 0 {
                return Err(ConfigError::Invalid {
                    name: name.into(),
                    why: "must be positive".into(),
                });
            }
            Ok(v)
        };
        if env.get("CLAIM_LEASE_SECONDS").is_some() {
            return Err(ConfigError::Invalid {
                name: "CLAIM_LEASE_SECONDS".into(),
                why: format!(
                    "the lease is {LEASE_PER_DEADLINE} × REQUEST_DEADLINE_MS; set that instead"
                ),
            });
        }
        let deadline = Duration::from_millis(positive("REQUEST_DEADLINE_MS", DEFAULT_DEADLINE_MS)?);
        Ok(Settings {
            table: env.require("EVENTS_TABLE")?.to_owned(),
            queue_url: env.require("EVENTS_QUEUE_URL")?.to_owned(),
            dedup_ttl: Duration::from_secs(positive("DEDUP_TTL_SECONDS", 7 * 24 * 3600)?),
            deadline,
            lease: deadline * LEASE_PER_DEADLINE,
            processing_lease: Duration::from_secs(positive("PROCESSING_LEASE_SECONDS", 300)?),
            max_body_bytes: env.parse_or("MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?,
            max_message_bytes: env.parse_or("MAX_MESSAGE_BYTES", DEFAULT_MAX_MESSAGE_BYTES)?,
            max_events: positive("MAX_EVENTS_PER_REQUEST", DEFAULT_MAX_EVENTS as u64)? as usize,
            max_request_payload_bytes: positive(
                "MAX_REQUEST_PAYLOAD_BYTES",
                DEFAULT_MAX_REQUEST_PAYLOAD_BYTES as u64,
            )? as usize,
            processor_bytes_in_flight: positive(
                "PROCESSOR_BYTES_IN_FLIGHT",
                DEFAULT_PROCESSOR_BYTES_IN_FLIGHT as u64,
            )? as usize,
            max_concurrent_calls: positive(
                "MAX_CONCURRENT_CALLS",
                DEFAULT_MAX_CONCURRENT_CALLS as u64,
            )? as usize,
            payload_bucket: bucket(env, "PAYLOAD_BUCKET"),
            archive_bucket: bucket(env, "ARCHIVE_BUCKET"),
            objects_kms_key: bucket(env, "OBJECTS_KMS_KEY_ARN"),
            retry_backoff: {
                let default = crate::queue::Backoff::default();
                let base: u64 = env.parse_or("RETRY_BASE_DELAY_SECONDS", default.base.as_secs())?;
                let cap: u64 = env.parse_or("RETRY_MAX_DELAY_SECONDS", default.cap.as_secs())?;
                if base > cap || Duration::from_secs(cap) > crate::queue::SQS_MAX_VISIBILITY {
                    return Err(ConfigError::Invalid {
                        name: "RETRY_MAX_DELAY_SECONDS".into(),
                        why: "must be at least RETRY_BASE_DELAY_SECONDS and at most 43200".into(),
                    });
                }
                crate::queue::Backoff {
                    base: Duration::from_secs(base),
                    cap: Duration::from_secs(cap),
                    ..default
                }
            },
        })
    }

    /// The largest claim-checked envelope a receiver writes: its body (at most
    /// `MAX_BODY_BYTES`) as text or base64 (4/3 of it), and metadata. A reference to a larger
    /// object is refused by the processor before it is read.
    pub fn max_record_bytes(&self) -> u64 {
        (self.max_body_bytes as u64).div_ceil(3) * 4 + 64 * 1024
    }

    /// The part of the deadline kept for giving back claims after the work ran out of time: a
    /// fifth of it, at most a second.
    pub fn cleanup_budget(&self) -> Duration {
        (self.deadline / 5).min(Duration::from_secs(1))
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
                "arn:map" => Ok(r#"{"site-a":"sa","site-b":["sb1","sb2"]}"#.into()),
                "arn:keyed-map" => Ok(r#"{"TILBY_URL_TOKEN":{"env-1":"t1"}}"#.into()),
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
        assert_eq!(s.max_body_bytes, 10_485_760, "API Gateway's limit");
        assert_eq!((s.payload_bucket, s.archive_bucket), (None, None));
        assert_eq!(s.max_message_bytes, 1_048_576);
        assert_eq!(s.max_events, 200);
        assert_eq!(
            (s.deadline, s.lease),
            (Duration::from_secs(5), Duration::from_secs(10))
        );
        let fast = Env::from_pairs([
            ("EVENTS_TABLE", "t"),
            ("EVENTS_QUEUE_URL", "q"),
            ("REQUEST_DEADLINE_MS", "1500"),
        ]);
        let fast = Settings::from_env(&fast).unwrap();
        assert_eq!(fast.lease, Duration::from_secs(3));
        assert_eq!(fast.cleanup_budget(), Duration::from_millis(300));
        let leased = Env::from_pairs([
            ("EVENTS_TABLE", "t"),
            ("EVENTS_QUEUE_URL", "q"),
            ("CLAIM_LEASE_SECONDS", "30"),
        ]);
        assert!(matches!(
            Settings::from_env(&leased),
            Err(ConfigError::Invalid { ref name, .. }) if name == "CLAIM_LEASE_SECONDS"
        ));
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
        // Tenant maps from Secrets Manager: the whole secret, or an object under the key.
        let mut maps = Env::from_pairs([
            ("TRYBE_SIGNING_SECRET_SECRET_ARN", "arn:map"),
            ("TILBY_URL_TOKEN_SECRET_ARN", "arn:keyed-map"),
        ]);
        maps.resolve_secrets(&Fake).await.unwrap();
        let trybe = maps.secrets("TRYBE_SIGNING_SECRET").unwrap();
        assert!(trybe.is_per_tenant());
        assert_eq!(trybe.tenants(), vec!["site-a", "site-b"]);
        let tilby = maps.secrets("TILBY_URL_TOKEN").unwrap();
        assert_eq!(tilby.tenants(), vec!["env-1"]);
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

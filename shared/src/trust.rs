//! Who may put what on the queue (docs/design.md "Trust boundaries").
//!
//! Every receiver's role may send to the one queue, so the queue alone does not say which
//! provider a message speaks for. The processor acts on a message only when:
//! - its dedup key is its own provider's (`<provider>#…`), and its provider is one of ours;
//! - SQS's `SenderId` (set by SQS from the caller's credentials, never by the caller) is the
//!   role of that provider's receiver (`TRUSTED_SENDERS`) or an operator (`OPERATOR_SENDERS`:
//!   `webhook-ops` redrives and replays, for any provider);
//! - a replay mark comes from an operator: it bypasses deduplication.
//!
//! A message that fails is refused: moved to the dead-letter queue with its reason
//! ([`crate::queue::DeadLetters`], [`refusal_marks`]), counted as `Refused`, never processed and
//! never claimed.

use std::collections::{HashMap, HashSet};

use aws_lambda_events::event::sqs::SqsMessage;

use crate::config::{ConfigError, Env};
use crate::envelope::Envelope;

/// The SQS system attribute naming who sent a message: an IAM user's unique id, or a role's
/// unique id and session name (`AROA…:session`).
pub const SENDER_ID: &str = "SenderId";
/// The message attributes a refused message carries in the dead-letter queue.
pub const REFUSED: &str = "refused";
pub const REFUSED_SENDER: &str = "refused_sender";

/// The `SenderId` moto gives every message (it has no identities): the local stand-in for every
/// role under `make dev` and in the tests (local.env), where the boundary cannot be drawn.
pub const LOCAL_SENDER_ID: &str = "AIDAIT2UOQQY3AUEKVGXU";

/// The principals the processor trusts, by their IAM unique ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Senders {
    receivers: HashMap<String, HashSet<String>>,
    operators: HashSet<String>,
}

/// Why a message was refused. Names ids and providers, never content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("provider {0:?} is not one of this deployment's")]
    UnknownProvider(String),
    #[error("dedup key does not belong to provider {0}")]
    ForeignKey(String),
    #[error("no SenderId on the message")]
    NoSender,
    #[error("sender {sender} may not act for provider {provider}")]
    Sender { sender: String, provider: String },
    #[error("replay mark from sender {0}, which may not replay")]
    Replay(String),
}

impl Senders {
    /// `trusted`: `provider=ID,provider=ID,…` (a provider may be listed more than once, e.g.
    /// while its role is replaced); `operators`: `ID,ID,…`, possibly empty. Every name must be
    /// one of `providers`; an empty `trusted` is refused (the processor fails closed).
    pub fn parse(trusted: &str, operators: &str, providers: &[&str]) -> Result<Self, String> {
        let mut receivers: HashMap<String, HashSet<String>> = HashMap::new();
        for entry in trusted.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (provider, id) = entry
                .split_once('=')
                .map(|(p, id)| (p.trim(), id.trim()))
                .filter(|(p, id)| !p.is_empty() && !id.is_empty())
                .ok_or_else(|| format!("{entry:?} is not provider=ID"))?;
            if !providers.contains(&provider) {
                return Err(format!("{provider:?} is not a provider"));
            }
            receivers
                .entry(provider.to_owned())
                .or_default()
                .insert(principal(id).to_owned());
        }
        if receivers.is_empty() {
            return Err("names no sender".into());
        }
        let operators = operators
            .split(',')
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(|id| principal(id).to_owned())
            .collect();
        Ok(Senders {
            receivers,
            operators,
        })
    }

    /// From `TRUSTED_SENDERS` (required) and `OPERATOR_SENDERS` (optional: nobody).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let providers: Vec<&str> = crate::providers::ALL.iter().map(|(p, _)| *p).collect();
        let trusted = env.require("TRUSTED_SENDERS")?;
        Senders::parse(
            trusted,
            env.get("OPERATOR_SENDERS").unwrap_or(""),
            &providers,
        )
        .map_err(|why| ConfigError::Invalid {
            name: "TRUSTED_SENDERS".into(),
            why,
        })
    }

    /// Every provider trusted to `id`, and `id` an operator: what `make dev` and the tests run
    /// with against moto ([`LOCAL_SENDER_ID`]).
    pub fn everyone(id: &str, providers: &[&str]) -> Self {
        Senders {
            receivers: providers
                .iter()
                .map(|p| ((*p).to_owned(), HashSet::from([id.to_owned()])))
                .collect(),
            operators: HashSet::from([id.to_owned()]),
        }
    }

    /// May the message `record` act as `envelope` says?
    pub fn check(&self, record: &SqsMessage, envelope: &Envelope) -> Result<(), Refusal> {
        let provider = envelope.provider.as_str();
        let Some(receivers) = self.receivers.get(provider) else {
            return Err(Refusal::UnknownProvider(bounded(provider)));
        };
        if !envelope
            .dedup_key
            .strip_prefix(provider)
            .is_some_and(|rest| rest.starts_with('#'))
        {
            return Err(Refusal::ForeignKey(provider.to_owned()));
        }
        let sender = sender_id(record).ok_or(Refusal::NoSender)?;
        let who = principal(sender);
        let operator = self.operators.contains(who);
        if envelope.replay.is_some() && !operator {
            return Err(Refusal::Replay(bounded(sender)));
        }
        if !operator && !receivers.contains(who) {
            return Err(Refusal::Sender {
                sender: bounded(sender),
                provider: provider.to_owned(),
            });
        }
        Ok(())
    }
}

/// The record's `SenderId`, when SQS gave one.
pub fn sender_id(record: &SqsMessage) -> Option<&str> {
    record
        .attributes
        .get(SENDER_ID)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// The principal of a `SenderId`: a role's unique id without its session name, or a user's id.
fn principal(sender: &str) -> &str {
    sender.split_once(':').map_or(sender, |(id, _)| id)
}

/// A value from the message, cut to a length fit for a log line and an attribute.
fn bounded(s: &str) -> String {
    s.chars().take(128).collect()
}

/// The marks a refused message is parked with in the dead-letter queue: [`REFUSED`] = the
/// reason, [`REFUSED_SENDER`] = its `SenderId` ([`crate::queue::DeadLetters`]). `webhook-ops dlq
/// redrive` never moves such a message back.
pub fn refusal_marks(record: &SqsMessage, reason: &str) -> Vec<(String, String)> {
    vec![
        (REFUSED.to_owned(), reason.to_owned()),
        (
            REFUSED_SENDER.to_owned(),
            sender_id(record).unwrap_or("none").to_owned(),
        ),
    ]
}

/// What the processor checks each message against, and where it puts those it refuses.
#[derive(Clone)]
pub struct Trust {
    pub senders: Senders,
    pub dead_letters: std::sync::Arc<dyn crate::queue::DeadLetters>,
}

impl Trust {
    /// Every provider and every operator as [`LOCAL_SENDER_ID`], refused messages to
    /// `dead_letters`: for tests and tools running against moto or in-memory fakes.
    pub fn local(dead_letters: std::sync::Arc<dyn crate::queue::DeadLetters>) -> Trust {
        let providers: Vec<&str> = crate::providers::ALL.iter().map(|(p, _)| *p).collect();
        Trust {
            senders: Senders::everyone(LOCAL_SENDER_ID, &providers),
            dead_letters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Replay;
    use serde_json::json;

    const PROVIDERS: &[&str] = &["trybe", "tilby"];

    fn senders() -> Senders {
        Senders::parse(
            "trybe=AROATRYBE, tilby=AROATILBY,tilby=AROATILBY2",
            "AROAOPS",
            PROVIDERS,
        )
        .unwrap()
    }

    fn record(sender: Option<&str>) -> SqsMessage {
        let mut r = SqsMessage::default();
        if let Some(s) = sender {
            r.attributes.insert(SENDER_ID.into(), s.into());
        }
        r
    }

    fn envelope(provider: &str, dedup_key: &str) -> Envelope {
        serde_json::from_value(json!({
            "provider": provider, "event_id": "e1", "event_type": "t",
            "dedup_key": dedup_key, "received_at": "2026-12-01T10:00:00Z", "body_sha256": "00"
        }))
        .unwrap()
    }

    #[test]
    fn a_receiver_acts_for_its_own_provider_only() {
        let s = senders();
        let trybe = envelope("trybe", "trybe##id#1");
        assert_eq!(s.check(&record(Some("AROATRYBE:trybe-fn")), &trybe), Ok(()));
        assert_eq!(
            s.check(&record(Some("AROATILBY:tilby-fn")), &trybe),
            Err(Refusal::Sender {
                sender: "AROATILBY:tilby-fn".into(),
                provider: "trybe".into()
            })
        );
        // Either of a provider's listed roles.
        let tilby = envelope("tilby", "tilby#env#id#1");
        assert_eq!(s.check(&record(Some("AROATILBY2:x")), &tilby), Ok(()));
        // A role id that merely starts like a trusted one is another role.
        assert!(s.check(&record(Some("AROATRYBEX:x")), &trybe).is_err());
        assert_eq!(s.check(&record(None), &trybe), Err(Refusal::NoSender));
        assert_eq!(s.check(&record(Some("")), &trybe), Err(Refusal::NoSender));
    }

    #[test]
    fn a_dedup_key_of_another_provider_is_refused_whoever_sends_it() {
        let s = senders();
        // The finding: a genuine Tilby envelope carrying a Trybe event's dedup key.
        let forged = envelope("tilby", "trybe##id#1");
        for sender in ["AROATILBY:x", "AROAOPS:op"] {
            assert_eq!(
                s.check(&record(Some(sender)), &forged),
                Err(Refusal::ForeignKey("tilby".into()))
            );
        }
        // A key that only starts with the provider's name is another provider's.
        let prefix = envelope("tilby", "tilbyx#id#1");
        assert!(s.check(&record(Some("AROATILBY:x")), &prefix).is_err());
        assert_eq!(
            s.check(&record(Some("AROAOPS")), &envelope("other", "other#1")),
            Err(Refusal::UnknownProvider("other".into()))
        );
    }

    #[test]
    fn replay_marks_are_honoured_from_operators_only() {
        let s = senders();
        let mut replayed = envelope("trybe", "trybe##id#1");
        replayed.replay = Some(Replay {
            id: "r1".into(),
            requested_at: "2026-12-01T10:00:00Z".into(),
            archive_key: "k".into(),
        });
        assert_eq!(
            s.check(&record(Some("AROATRYBE:trybe-fn")), &replayed),
            Err(Refusal::Replay("AROATRYBE:trybe-fn".into()))
        );
        assert_eq!(s.check(&record(Some("AROAOPS:alice")), &replayed), Ok(()));
        // Operators redrive: they act for any provider.
        let tilby = envelope("tilby", "tilby#env#id#1");
        assert_eq!(s.check(&record(Some("AROAOPS:alice")), &tilby), Ok(()));
    }

    #[test]
    fn the_configuration_fails_closed() {
        assert!(Senders::parse("", "AROAOPS", PROVIDERS).is_err());
        assert!(Senders::parse(" , ", "", PROVIDERS).is_err());
        assert!(Senders::parse("trybe", "", PROVIDERS).is_err());
        assert!(Senders::parse("trybe=", "", PROVIDERS).is_err());
        assert!(Senders::parse("tryb=AROA1", "", PROVIDERS).is_err());
        let env = Env::from_pairs([("OPERATOR_SENDERS", "AROAOPS")]);
        assert!(Senders::from_env(&env).is_err());
        // No operators: nobody replays.
        let s = Senders::parse("trybe=AROATRYBE", "", PROVIDERS).unwrap();
        let mut replayed = envelope("trybe", "trybe##id#1");
        replayed.replay = Some(Replay {
            id: "r1".into(),
            requested_at: "t".into(),
            archive_key: "k".into(),
        });
        assert!(s.check(&record(Some("AROATRYBE:x")), &replayed).is_err());
    }

    #[test]
    fn local_env_trusts_motos_one_sender_for_every_provider_and_as_the_operator() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let env = Env::from_env_file(&root.join("local.env")).unwrap();
        let providers: Vec<&str> = crate::providers::ALL.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            Senders::from_env(&env).unwrap(),
            Senders::everyone(LOCAL_SENDER_ID, &providers),
            "make dev's processor starts, and trusts what moto stores"
        );
    }

    #[test]
    fn a_refused_message_keeps_its_attributes_and_says_why() {
        let mut r = record(Some("AROAX:s"));
        for (name, value) in [("provider", "trybe"), (REFUSED, "spoofed")] {
            let mut a = aws_lambda_events::event::sqs::SqsMessageAttribute::default();
            a.string_value = Some(value.into());
            a.data_type = Some("String".into());
            r.message_attributes.insert(name.into(), a);
        }
        let attrs = crate::queue::dead_letter_attributes(&r, refusal_marks(&r, "why"));
        assert_eq!(
            attrs,
            vec![
                (REFUSED.into(), "why".into()),
                (REFUSED_SENDER.into(), "AROAX:s".into()),
                ("provider".into(), "trybe".into()),
            ]
        );
    }
}

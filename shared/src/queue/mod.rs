//! The queue between receivers and the processor.

mod backoff;
mod dead_letters;
mod memory;
mod sqs;

pub use backoff::{Backoff, MemoryVisibility, Visibility, RECEIVE_COUNT, SQS_MAX_VISIBILITY};
pub use dead_letters::{dead_letter_attributes, DeadLetters, MemoryDeadLetters, Parked, REJECTED};
pub use memory::MemoryQueue;
pub use sqs::{SqsDeadLetters, SqsQueue, SqsVisibility};

use async_trait::async_trait;

use crate::envelope::Envelope;

/// One message: the serialized envelope and its routing attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub body: String,
    pub provider: String,
    pub event_type: String,
}

/// The data type of both routing attributes.
pub const ATTRIBUTE_TYPE: &str = "String";

impl Message {
    /// The envelope as SQS takes it: a body with only the characters SQS accepts, and SQS-legal
    /// attribute values ([`Envelope::to_sqs_body`], [`Envelope::attributes`]).
    pub fn from_envelope(envelope: &Envelope) -> Result<Self, serde_json::Error> {
        let [(_, provider), (_, event_type)] = envelope.attributes();
        Ok(Message {
            body: envelope.to_sqs_body()?,
            provider,
            event_type,
        })
    }

    /// The attributes as (name, value).
    pub fn attributes(&self) -> [(&'static str, &str); 2] {
        [
            ("provider", self.provider.as_str()),
            ("event_type", self.event_type.as_str()),
        ]
    }

    /// The size SQS counts against the queue's `MaximumMessageSize`: the body's bytes, plus each
    /// attribute's name, data type and value (SendMessage, "MessageAttributes").
    pub fn sqs_size(&self) -> usize {
        self.body.len()
            + self
                .attributes()
                .iter()
                .map(|(name, value)| name.len() + ATTRIBUTE_TYPE.len() + value.len())
                .sum::<usize>()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("queue send failed: {0}")]
pub struct QueueError(pub String);

#[async_trait]
pub trait EventQueue: Send + Sync {
    /// Sends every message; one result per message, in order. `Ok` carries the message id and
    /// means the queue has it durably. A message without `Ok` was not queued.
    async fn send(&self, messages: &[Message]) -> Vec<Result<String, QueueError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_size_counts_body_and_attributes_as_sqs_does() {
        let m = Message {
            body: "{}".into(),
            provider: "trybe".into(),
            event_type: "basket.submitted".into(),
        };
        // 2 + ("provider" 8 + "String" 6 + 5) + ("event_type" 10 + 6 + 16)
        assert_eq!(m.sqs_size(), 2 + 19 + 32);
    }
}

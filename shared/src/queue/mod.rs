//! The queue between receivers and the processor.

mod memory;
mod sqs;

pub use memory::MemoryQueue;
pub use sqs::SqsQueue;

use async_trait::async_trait;

use crate::envelope::Envelope;

/// One message: the serialized envelope and its routing attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub body: String,
    pub provider: String,
    pub event_type: String,
}

impl Message {
    pub fn from_envelope(envelope: &Envelope) -> Result<Self, serde_json::Error> {
        Ok(Message {
            body: serde_json::to_string(envelope)?,
            provider: envelope.provider.clone(),
            event_type: envelope.event_type.clone(),
        })
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

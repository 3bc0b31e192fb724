//! SQS: SendMessage for one message; SendMessageBatch (10 entries, and no more bytes a call than
//! the queue's message size limit) for more, a bounded number of calls at a time. A batch entry
//! counts as queued only when SQS lists it as successful.

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, MessageAttributeValue, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;
use futures::stream::{self, StreamExt};

use super::{EventQueue, Message, QueueError};

const BATCH_ENTRIES: usize = 10;

#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
    /// Bytes per SendMessageBatch call: the queue's message size limit, which SQS also applies
    /// to a batch's total (`MAX_MESSAGE_BYTES`).
    batch_bytes: usize,
    /// SendMessageBatch calls in flight at once (`MAX_CONCURRENT_CALLS`).
    concurrency: usize,
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        SqsQueue {
            client,
            queue_url: queue_url.into(),
            batch_bytes: crate::config::DEFAULT_MAX_MESSAGE_BYTES,
            concurrency: crate::config::DEFAULT_MAX_CONCURRENT_CALLS,
        }
    }

    /// Limits from the settings: batch bytes and calls in flight.
    pub fn with_limits(mut self, batch_bytes: usize, concurrency: usize) -> Self {
        self.batch_bytes = batch_bytes;
        self.concurrency = concurrency.max(1);
        self
    }

    async fn send_one(&self, m: &Message) -> Result<String, QueueError> {
        let out = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(&m.body)
            .set_message_attributes(Some(attributes(m)))
            .send()
            .await
            .map_err(|e| queue_error("SendMessage", e))?;
        out.message_id
            .ok_or_else(|| QueueError("SendMessage: no message id".into()))
    }

    async fn send_batch(
        &self,
        batch: &[(usize, &Message)],
    ) -> Vec<(usize, Result<String, QueueError>)> {
        let entries: Vec<SendMessageBatchRequestEntry> = batch
            .iter()
            .map(|(i, m)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(&m.body)
                    .set_message_attributes(Some(attributes(m)))
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        let result = self
            .client
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                let err = queue_error("SendMessageBatch", e);
                return batch.iter().map(|(i, _)| (*i, Err(err.clone()))).collect();
            }
        };
        batch
            .iter()
            .map(|(i, _)| {
                let id = i.to_string();
                let result = if let Some(ok) = out.successful().iter().find(|s| s.id() == id) {
                    Ok(ok.message_id().to_string())
                } else if let Some(failed) = out.failed().iter().find(|f| f.id() == id) {
                    Err(QueueError(format!(
                        "SendMessageBatch entry: {} {}",
                        failed.code(),
                        failed.message().unwrap_or("")
                    )))
                } else {
                    Err(QueueError(
                        "SendMessageBatch entry missing from the answer".into(),
                    ))
                };
                (*i, result)
            })
            .collect()
    }
}

/// The dead-letter queue, as the processor writes to it: a message it will never process, moved
/// there at once with why ([`super::DeadLetters`]).
#[derive(Debug, Clone)]
pub struct SqsDeadLetters {
    client: Client,
    queue_url: String,
}

impl SqsDeadLetters {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        SqsDeadLetters {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl super::DeadLetters for SqsDeadLetters {
    async fn park(
        &self,
        record: &aws_lambda_events::event::sqs::SqsMessage,
        marks: Vec<(String, String)>,
    ) -> Result<(), QueueError> {
        let attributes = string_attributes(super::dead_letter_attributes(record, marks));
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            // SQS refuses an empty body (a record without one is parked as "-").
            .message_body(
                record
                    .body
                    .as_deref()
                    .filter(|b| !b.is_empty())
                    .unwrap_or("-"),
            )
            .set_message_attributes(Some(attributes))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| queue_error("SendMessage to the dead-letter queue", e))
    }
}

/// ChangeMessageVisibilityBatch on the events queue, ten entries a call (a Lambda batch is ten
/// records at most: one call).
#[derive(Debug, Clone)]
pub struct SqsVisibility {
    client: Client,
    queue_url: String,
}

impl SqsVisibility {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        SqsVisibility {
            client,
            queue_url: queue_url.into(),
        }
    }

    async fn hide_batch(
        &self,
        entries: &[(String, std::time::Duration)],
    ) -> Vec<Result<(), QueueError>> {
        let request = entries.iter().enumerate().map(|(i, (handle, wait))| {
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(handle)
                .visibility_timeout(i32::try_from(wait.as_secs()).unwrap_or(i32::MAX))
                .build()
        });
        let request: Result<Vec<_>, _> = request.collect();
        let out = match request {
            Ok(request) => {
                self.client
                    .change_message_visibility_batch()
                    .queue_url(&self.queue_url)
                    .set_entries(Some(request))
                    .send()
                    .await
            }
            Err(e) => {
                return entries
                    .iter()
                    .map(|_| Err(QueueError(e.to_string())))
                    .collect()
            }
        };
        match out {
            Ok(out) => {
                let failed: std::collections::HashMap<String, String> = out
                    .failed()
                    .iter()
                    .map(|f| (f.id().to_owned(), f.code().to_owned()))
                    .collect();
                (0..entries.len())
                    .map(|i| match failed.get(&i.to_string()) {
                        Some(code) => Err(QueueError(format!("ChangeMessageVisibility: {code}"))),
                        None => Ok(()),
                    })
                    .collect()
            }
            Err(e) => {
                let e = queue_error("ChangeMessageVisibilityBatch", e);
                entries.iter().map(|_| Err(e.clone())).collect()
            }
        }
    }
}

#[async_trait]
impl super::Visibility for SqsVisibility {
    async fn hide(&self, entries: &[(String, std::time::Duration)]) -> Vec<Result<(), QueueError>> {
        let mut results = Vec::with_capacity(entries.len());
        for chunk in entries.chunks(BATCH_ENTRIES) {
            results.extend(self.hide_batch(chunk).await);
        }
        results
    }
}

/// A failed SQS call: the operation and the SDK's whole error chain (which never holds a
/// message's body or attributes).
fn queue_error<E: std::error::Error + 'static>(op: &str, e: E) -> QueueError {
    QueueError(format!(
        "{op}: {}",
        aws_sdk_sqs::error::DisplayErrorContext(e)
    ))
}

fn attributes(m: &Message) -> std::collections::HashMap<String, MessageAttributeValue> {
    string_attributes(m.attributes())
}

/// SQS message attributes of type String, from (name, value) pairs.
fn string_attributes(
    pairs: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
) -> std::collections::HashMap<String, MessageAttributeValue> {
    pairs
        .into_iter()
        .map(|(name, value)| {
            let value = MessageAttributeValue::builder()
                .data_type(super::ATTRIBUTE_TYPE)
                .string_value(value)
                .build()
                .expect("type set");
            (name.into(), value)
        })
        .collect()
}

/// Splits messages into batches of at most 10 entries and `max_bytes` (as SQS counts them),
/// keeping their positions.
fn batches(messages: &[Message], max_bytes: usize) -> Vec<Vec<(usize, &Message)>> {
    let mut out: Vec<Vec<(usize, &Message)>> = Vec::new();
    let mut bytes = 0;
    for (i, m) in messages.iter().enumerate() {
        let size = m.sqs_size();
        match out.last_mut() {
            Some(batch) if batch.len() < BATCH_ENTRIES && bytes + size <= max_bytes => {
                batch.push((i, m));
                bytes += size;
            }
            _ => {
                out.push(vec![(i, m)]);
                bytes = size;
            }
        }
    }
    out
}

#[async_trait]
impl EventQueue for SqsQueue {
    async fn send(&self, messages: &[Message]) -> Vec<Result<String, QueueError>> {
        if let [one] = messages {
            return vec![self.send_one(one).await];
        }
        let batches = batches(messages, self.batch_bytes);
        let calls: Vec<_> = batches.iter().map(|b| self.send_batch(b)).collect();
        let sent: Vec<_> = stream::iter(calls)
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let mut results: Vec<Option<Result<String, QueueError>>> = vec![None; messages.len()];
        for (i, r) in sent.into_iter().flatten() {
            results[i] = Some(r);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(QueueError("not sent".into()))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(size: usize) -> Message {
        Message {
            body: "x".repeat(size),
            provider: "p".into(),
            event_type: "t".into(),
        }
    }

    #[test]
    fn batches_hold_ten_entries_and_respect_the_byte_limit() {
        let many: Vec<Message> = (0..23).map(|_| msg(10)).collect();
        let sizes: Vec<usize> = batches(&many, 256 * 1024).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![10, 10, 3]);
        let big: Vec<Message> = (0..4).map(|_| msg(100 * 1024)).collect();
        let sizes: Vec<usize> = batches(&big, 256 * 1024).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 2]);
        // Exactly at the limit, counted as SQS counts (body + attribute names, types, values).
        let exact = msg(100).sqs_size();
        let sizes: Vec<usize> = batches(&big[..0], 1).iter().map(Vec::len).collect();
        assert!(sizes.is_empty());
        let three: Vec<Message> = (0..3).map(|_| msg(100)).collect();
        let sizes: Vec<usize> = batches(&three, 2 * exact).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 1]);
        let positions: Vec<usize> = batches(&big, 256 * 1024)
            .into_iter()
            .flatten()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(positions, vec![0, 1, 2, 3]);
    }
}

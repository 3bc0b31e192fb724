//! SQS: SendMessage for one message; SendMessageBatch (10 entries, 256 KiB a call) sent
//! concurrently for more. A batch entry counts as queued only when SQS lists it as successful.

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use futures::future::join_all;

use super::{EventQueue, Message, QueueError};

const BATCH_ENTRIES: usize = 10;
const BATCH_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    queue_url: String,
}

impl SqsQueue {
    pub fn new(client: Client, queue_url: impl Into<String>) -> Self {
        SqsQueue {
            client,
            queue_url: queue_url.into(),
        }
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
            .map_err(|e| {
                QueueError(format!(
                    "SendMessage: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                ))
            })?;
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
                let err = QueueError(format!(
                    "SendMessageBatch: {}",
                    aws_sdk_sqs::error::DisplayErrorContext(e)
                ));
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

fn attributes(m: &Message) -> std::collections::HashMap<String, MessageAttributeValue> {
    [("provider", &m.provider), ("event_type", &m.event_type)]
        .into_iter()
        .map(|(k, v)| {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .expect("type set");
            (k.to_string(), value)
        })
        .collect()
}

/// Splits messages into batches of at most 10 entries and 256 KiB, keeping their positions.
fn batches(messages: &[Message]) -> Vec<Vec<(usize, &Message)>> {
    let mut out: Vec<Vec<(usize, &Message)>> = Vec::new();
    let mut bytes = 0;
    for (i, m) in messages.iter().enumerate() {
        let size = m.body.len() + m.provider.len() + m.event_type.len() + 64;
        match out.last_mut() {
            Some(batch) if batch.len() < BATCH_ENTRIES && bytes + size <= BATCH_BYTES => {
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
        let batches = batches(messages);
        let sent = join_all(batches.iter().map(|b| self.send_batch(b))).await;
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
        let sizes: Vec<usize> = batches(&many).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![10, 10, 3]);
        let big: Vec<Message> = (0..4).map(|_| msg(100 * 1024)).collect();
        let sizes: Vec<usize> = batches(&big).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![2, 2]);
        let positions: Vec<usize> = batches(&big)
            .into_iter()
            .flatten()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(positions, vec![0, 1, 2, 3]);
    }
}

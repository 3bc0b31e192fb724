//! The dead-letter queue as the processor writes to it: a message it will never process, moved
//! there at once with why (not after `maxReceiveCount` receives), then acknowledged.

use async_trait::async_trait;
use aws_lambda_events::event::sqs::SqsMessage;

use super::QueueError;

/// The mark of a message the processor rejected (unreadable, refused by its handler, its
/// payload object unusable): the reason. `webhook-ops dlq redrive` moves it back once fixed.
pub const REJECTED: &str = "rejected";

/// SQS's limit on a message's attributes.
const MAX_ATTRIBUTES: usize = 10;

#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Puts `record`'s body on the dead-letter queue with `marks` first, then its own String
    /// message attributes ([`dead_letter_attributes`]). `Ok` when the queue has it.
    async fn park(
        &self,
        record: &SqsMessage,
        marks: Vec<(String, String)>,
    ) -> Result<(), QueueError>;
}

/// The attributes a parked message carries: `marks`, then its own String attributes (by name,
/// none of the marks' names), up to SQS's ten.
pub fn dead_letter_attributes(
    record: &SqsMessage,
    marks: Vec<(String, String)>,
) -> Vec<(String, String)> {
    let mut own: Vec<(String, String)> = record
        .message_attributes
        .iter()
        .filter(|(name, _)| !marks.iter().any(|(m, _)| m == *name))
        .filter_map(|(name, v)| Some((name.clone(), v.string_value.clone()?)))
        .collect();
    own.sort();
    let mut out = marks;
    let room = MAX_ATTRIBUTES.saturating_sub(out.len());
    out.extend(own.into_iter().take(room));
    out
}

/// A parked message: its body and attributes.
pub type Parked = (String, Vec<(String, String)>);

/// Dead letters kept in memory, for unit tests.
#[derive(Default)]
pub struct MemoryDeadLetters {
    parked: std::sync::Mutex<Vec<Parked>>,
    failing: std::sync::atomic::AtomicBool,
}

impl MemoryDeadLetters {
    /// Every park fails while `on`.
    pub fn fail(&self, on: bool) {
        self.failing.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Each parked message: its body and attributes.
    pub fn parked(&self) -> Vec<Parked> {
        self.parked.lock().unwrap().clone()
    }
}

#[async_trait]
impl DeadLetters for MemoryDeadLetters {
    async fn park(
        &self,
        record: &SqsMessage,
        marks: Vec<(String, String)>,
    ) -> Result<(), QueueError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(QueueError("injected".into()));
        }
        self.parked.lock().unwrap().push((
            record.body.clone().unwrap_or_default(),
            dead_letter_attributes(record, marks),
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_come_first_and_the_attributes_stay_within_ten() {
        let mut r = SqsMessage::default();
        for i in 0..12 {
            let mut a = aws_lambda_events::event::sqs::SqsMessageAttribute::default();
            a.string_value = Some(format!("v{i}"));
            a.data_type = Some("String".into());
            r.message_attributes.insert(format!("a{i:02}"), a);
        }
        let attrs = dead_letter_attributes(&r, vec![(REJECTED.into(), "why".into())]);
        assert_eq!(attrs.len(), 10);
        assert_eq!(attrs[0], (REJECTED.to_owned(), "why".to_owned()));
        assert_eq!(attrs[1], ("a00".to_owned(), "v0".to_owned()));
    }
}

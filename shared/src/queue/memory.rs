//! In-memory queue for unit tests; can be told to fail chosen sends.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{EventQueue, Message, QueueError};

#[derive(Debug, Default)]
pub struct MemoryQueue {
    messages: Mutex<Vec<Message>>,
    /// Every send fails while set.
    pub fail: AtomicBool,
    /// Fails the message at this position of each send call (1-based; 0 = none).
    pub fail_position: AtomicUsize,
    /// Every send hangs (never answers) while set.
    pub hang: AtomicBool,
}

impl MemoryQueue {
    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().expect("lock").clone()
    }
}

#[async_trait]
impl EventQueue for MemoryQueue {
    async fn send(&self, messages: &[Message]) -> Vec<Result<String, QueueError>> {
        if self.hang.load(Ordering::SeqCst) {
            futures::future::pending::<()>().await;
        }
        let fail_at = self.fail_position.load(Ordering::SeqCst);
        let mut stored = self.messages.lock().expect("lock");
        messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                if self.fail.load(Ordering::SeqCst) || i + 1 == fail_at {
                    return Err(QueueError("injected failure".into()));
                }
                stored.push(m.clone());
                Ok(format!("mem-{}", stored.len()))
            })
            .collect()
    }
}

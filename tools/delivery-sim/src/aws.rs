//! The AWS twins as the protocol meets them: the in-memory claim store with DynamoDB's late TTL,
//! a standard SQS queue (at-least-once, visibility timeout, reordering, maxReceiveCount and a
//! DLQ, operator redrive), and S3 buckets; every call through [`World::remote`], so each can
//! fail before it applies, apply and lose its answer, answer late, or hang.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::time::Instant;

use shared::objects::{MemoryObjects, ObjectError, ObjectStore};
use shared::queue::{EventQueue, Message, QueueError};
use shared::store::{
    Claim, ClaimOutcome, ClaimStore, Finish, MemoryClaims, Record, StoreError, PROCESSED_PREFIX,
};

use crate::world::World;

/// DynamoDB deletes an expired item "typically within a few days"; the simulation deletes each
/// anywhere from at once to 48 hours after it expires, and reads see it until then.
pub const MAX_TTL_LAG: Duration = Duration::from_secs(48 * 3600);

/// The claim table: [`MemoryClaims`] (the same conditional writes as DynamoDB's adapter) behind
/// remote calls, with TTL deletions scheduled as records expire.
pub struct SimClaims {
    pub table: Arc<MemoryClaims>,
    world: Arc<World>,
}

impl SimClaims {
    pub fn new(world: Arc<World>) -> Self {
        SimClaims {
            table: Arc::new(MemoryClaims::default()),
            world,
        }
    }
}

/// After a write to `pk`, DynamoDB's TTL process deletes the item some time after it expires,
/// if it is still expired then.
fn schedule_ttl(world: &Arc<World>, table: &Arc<MemoryClaims>, pk: &str) {
    let Some(record) = table.get(pk) else {
        return;
    };
    let lag = world.rng(|r| {
        if r.chance(0.1) {
            Duration::ZERO
        } else {
            Duration::from_millis(r.below(MAX_TTL_LAG.as_millis() as u64))
        }
    });
    let when = world.clock.instant_at_epoch_s(record.expires_at + 1) + lag;
    let (world, table, pk) = (world.clone(), table.clone(), pk.to_owned());
    tokio::spawn(async move {
        tokio::time::sleep_until(when).await;
        let now = shared::clock::Clock::now(world.clock.as_ref());
        if table.delete_expired(&pk, now) {
            world.log(|l| l.ttl_deletes += 1);
            world.note(|| format!("TTL deleted {pk}"));
        }
    });
}

#[async_trait]
impl ClaimStore for SimClaims {
    async fn record(&self, pk: &str) -> Result<Option<Record>, StoreError> {
        let (table, key) = (self.table.clone(), pk.to_owned());
        let found = self
            .world
            .remote("GetItem", pk, async move { table.get(&key) })
            .await
            .map_err(StoreError)?;
        self.world
            .note(|| format!("GetItem {pk} -> {:?}", found.as_ref().map(|r| r.status)));
        Ok(found)
    }

    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        let (table, world, c) = (self.table.clone(), self.world.clone(), claim.clone());
        let outcome = self
            .world
            .remote("PutItem", &claim.pk, async move {
                let outcome = table.claim(&c).await;
                if matches!(
                    outcome,
                    Ok(ClaimOutcome::New | ClaimOutcome::TakenOver { .. })
                ) {
                    schedule_ttl(&world, &table, &c.pk);
                }
                world.note(|| format!("PutItem {} applied: {outcome:?}", c.pk));
                outcome
            })
            .await
            .map_err(StoreError)??;
        Ok(outcome)
    }

    async fn release(&self, pk: &str, token: &str) -> Result<(), StoreError> {
        let (table, world, key, token) = (
            self.table.clone(),
            self.world.clone(),
            pk.to_owned(),
            token.to_owned(),
        );
        self.world
            .remote("DeleteItem", pk, async move {
                world.note(|| format!("DeleteItem {key} applied"));
                table.release(&key, &token).await
            })
            .await
            .map_err(StoreError)?
    }

    async fn finish(
        &self,
        pk: &str,
        token: &str,
        finish: &Finish,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (table, world, key, token, f) = (
            self.table.clone(),
            self.world.clone(),
            pk.to_owned(),
            token.to_owned(),
            finish.clone(),
        );
        let processed = matches!(finish, Finish::Processed) && pk.starts_with(PROCESSED_PREFIX);
        let result = self
            .world
            .remote("UpdateItem", pk, async move {
                let result = table.finish(&key, &token, &f, now).await;
                let applied = table.get(&key).is_some_and(|r| r.token == token);
                if applied {
                    schedule_ttl(&world, &table, &key);
                    if processed {
                        let at = world.clock.now_ms();
                        world.log(|l| l.processed_marks.push((key.clone(), at)));
                    }
                }
                world.note(|| format!("UpdateItem {key} {f:?} applied: {applied}"));
                result
            })
            .await
            .map_err(StoreError);
        if processed && result.is_err() {
            let at = self.world.clock.now_ms();
            self.world
                .log(|l| l.finish_failures.push((pk.to_owned(), at)));
        }
        result?
    }
}

/// A bucket: [`MemoryObjects`] behind remote calls.
pub struct SimObjects {
    pub bucket: Arc<MemoryObjects>,
    world: Arc<World>,
    name: &'static str,
}

impl SimObjects {
    pub fn new(world: Arc<World>, name: &'static str) -> Self {
        SimObjects {
            bucket: Arc::new(MemoryObjects::default()),
            world,
            name,
        }
    }
}

#[async_trait]
impl ObjectStore for SimObjects {
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), ObjectError> {
        let (bucket, key_owned, ct) =
            (self.bucket.clone(), key.to_owned(), content_type.to_owned());
        let call = format!("PutObject {}", self.name);
        self.world
            .remote(&call, key, async move {
                bucket.put(&key_owned, body, &ct).await
            })
            .await
            .map_err(ObjectError::Failed)?
    }

    async fn get(&self, key: &str, max_bytes: u64) -> Result<Vec<u8>, ObjectError> {
        let (bucket, key_owned) = (self.bucket.clone(), key.to_owned());
        let call = format!("GetObject {}", self.name);
        self.world
            .remote(&call, key, async move {
                bucket.get(&key_owned, max_bytes).await
            })
            .await
            .map_err(ObjectError::Failed)?
    }
}

/// SQS's numbers as the stacks set them.
pub const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(360);
pub const BATCH_SIZE: usize = 10;
/// The stacks' default `RetryHorizonHours`.
pub const RETRY_HORIZON: Duration = Duration::from_secs(24 * 3600);

/// The queue's `maxReceiveCount` as the stacks derive it from [`RETRY_HORIZON`] (their
/// `RetryHorizon` mapping, which a template test checks against the same function).
pub fn max_receive_count() -> u32 {
    static COUNT: std::sync::LazyLock<u32> =
        std::sync::LazyLock::new(|| shared::queue::Backoff::default().receives_for(RETRY_HORIZON));
    *COUNT
}

#[derive(Debug, Clone)]
pub struct Queued {
    pub id: u64,
    pub message: Message,
    pub sent_ms: i64,
    pub visible_at: Instant,
    pub receives: u32,
    /// Its `SenderId`: the role of whoever sent it.
    pub sender: String,
    /// In the DLQ because the processor refused it (its reason): never redriven.
    pub refused: Option<String>,
}

#[derive(Default)]
struct QueueState {
    next_id: u64,
    live: BTreeMap<u64, Queued>,
    dlq: Vec<Queued>,
}

/// A standard queue with its dead-letter queue.
pub struct Sqs {
    state: Mutex<QueueState>,
    world: Arc<World>,
    pub arrived: Notify,
}

impl Sqs {
    pub fn new(world: Arc<World>) -> Arc<Self> {
        Arc::new(Sqs {
            state: Mutex::new(QueueState::default()),
            world,
            arrived: Notify::new(),
        })
    }

    /// Puts messages from `sender` on the queue at once (the service side of a send).
    pub fn enqueue(&self, messages: &[Message], sender: &str) -> Vec<String> {
        let now = Instant::now();
        let sent_ms = self.world.clock.now_ms();
        let ids = {
            let mut s = self.state.lock().expect("queue");
            messages
                .iter()
                .map(|m| {
                    s.next_id += 1;
                    let id = s.next_id;
                    s.live.insert(
                        id,
                        Queued {
                            id,
                            message: m.clone(),
                            sent_ms,
                            visible_at: now,
                            receives: 0,
                            sender: sender.to_owned(),
                            refused: None,
                        },
                    );
                    format!("m-{id}")
                })
                .collect()
        };
        self.arrived.notify_waiters();
        ids
    }

    /// One receive as the event source mapping makes it: up to [`BATCH_SIZE`] visible messages in
    /// a random order, each hidden for the visibility timeout; a message received more than
    /// [`max_receive_count`] times goes to the DLQ instead; now and then an in-flight message
    /// is handed out again (at-least-once).
    pub fn receive(&self) -> Vec<Queued> {
        let now = Instant::now();
        let duplicate_rate = self.world.weather().map_or(0.0, |w| w.duplicate_rate);
        let mut s = self.state.lock().expect("queue");
        let mut visible: Vec<u64> = s
            .live
            .values()
            .filter(|q| q.visible_at <= now)
            .map(|q| q.id)
            .collect();
        let mut batch = Vec::new();
        while batch.len() < BATCH_SIZE && !visible.is_empty() {
            let i = self.world.rng(|r| r.below(visible.len() as u64)) as usize;
            let id = visible.swap_remove(i);
            let q = s.live.get_mut(&id).expect("live");
            q.receives += 1;
            if q.receives > max_receive_count() {
                let q = s.live.remove(&id).expect("live");
                self.world.note(|| format!("SQS m-{id} moved to the DLQ"));
                self.world.log(|l| l.dlq_moves += 1);
                s.dlq.push(q);
                continue;
            }
            q.visible_at = now + VISIBILITY_TIMEOUT;
            batch.push(q.clone());
        }
        if !batch.is_empty() && self.world.rng(|r| r.chance(duplicate_rate)) {
            let hidden: Vec<u64> = s
                .live
                .values()
                .filter(|q| q.visible_at > now)
                .map(|q| q.id)
                .collect();
            if !hidden.is_empty() {
                let id = self.world.rng(|r| *r.pick(&hidden));
                let q = s.live[&id].clone();
                self.world
                    .note(|| format!("SQS m-{id} handed out again (at-least-once)"));
                batch.push(q);
            }
        }
        batch
    }

    /// When the next hidden message becomes visible, if any is hidden.
    pub fn next_visible(&self) -> Option<Instant> {
        let s = self.state.lock().expect("queue");
        s.live.values().map(|q| q.visible_at).min()
    }

    /// ChangeMessageVisibility: message `id`, as received for the `receives`-th time (its
    /// receipt handle), hidden for `wait` from now. `false` when the message is gone or was
    /// received again since (a stale receipt handle).
    pub fn change_visibility(&self, id: u64, receives: u32, wait: Duration) -> bool {
        let mut s = self.state.lock().expect("queue");
        match s.live.get_mut(&id) {
            Some(q) if q.receives == receives => {
                q.visible_at = Instant::now() + wait;
                true
            }
            _ => false,
        }
    }

    pub fn delete(&self, ids: &[u64]) {
        let mut s = self.state.lock().expect("queue");
        for id in ids {
            s.live.remove(id);
        }
    }

    /// The operator's redrive, as `webhook-ops dlq redrive` makes it: every DLQ message the
    /// processor did not refuse back on the queue, sent again by the operator (its `SenderId`),
    /// its receive count reset. Refused ones stay.
    pub fn redrive(&self, operator: &str) -> usize {
        let now = Instant::now();
        let n = {
            let mut s = self.state.lock().expect("queue");
            let (refused, moved): (Vec<Queued>, Vec<Queued>) = std::mem::take(&mut s.dlq)
                .into_iter()
                .partition(|q| q.refused.is_some());
            s.dlq = refused;
            let n = moved.len();
            for mut q in moved {
                q.receives = 0;
                q.visible_at = now;
                q.sender = operator.to_owned();
                s.live.insert(q.id, q);
            }
            n
        };
        self.world.log(|l| l.redriven += n as u64);
        self.world
            .note(|| format!("operator redrove {n} message(s)"));
        self.arrived.notify_waiters();
        n
    }

    /// Messages on the queue, and in the DLQ without those the processor refused.
    pub fn depth(&self) -> (usize, usize) {
        let s = self.state.lock().expect("queue");
        (
            s.live.len(),
            s.dlq.iter().filter(|q| q.refused.is_none()).count(),
        )
    }

    /// The processor's move of a message to the DLQ (the service side of its send): refused
    /// (with its reason), or rejected.
    pub fn park(&self, body: String, sender: String, refused: Option<String>) {
        let mut s = self.state.lock().expect("queue");
        s.next_id += 1;
        let id = s.next_id;
        let sent_ms = self.world.clock.now_ms();
        s.dlq.push(Queued {
            id,
            message: Message {
                body,
                provider: String::new(),
                event_type: String::new(),
            },
            sent_ms,
            visible_at: Instant::now(),
            receives: 0,
            sender,
            refused,
        });
    }

    /// The bodies the processor refused into the DLQ, once each.
    pub fn refused_bodies(&self) -> BTreeSet<String> {
        let s = self.state.lock().expect("queue");
        s.dlq
            .iter()
            .filter(|q| q.refused.is_some())
            .map(|q| q.message.body.clone())
            .collect()
    }

    /// A message on the queue now that no bucket holds (its content in the body), not
    /// `provider`'s: what a rogue sender copies.
    pub fn sample_inline(&self, not: &str, pick: usize) -> Option<String> {
        let s = self.state.lock().expect("queue");
        let candidates: Vec<&Queued> = s
            .live
            .values()
            .filter(|q| q.message.provider != not && !q.message.body.contains("\"payload_ref\""))
            .filter(|q| q.refused.is_none())
            .collect();
        (!candidates.is_empty()).then(|| candidates[pick % candidates.len()].message.body.clone())
    }
}

/// The processor's side of the dead-letter queue: a remote call that puts a message there with
/// its marks.
pub struct SimDeadLetters {
    pub sqs: Arc<Sqs>,
    pub world: Arc<World>,
}

#[async_trait]
impl shared::queue::DeadLetters for SimDeadLetters {
    async fn park(
        &self,
        record: &aws_lambda_events::event::sqs::SqsMessage,
        marks: Vec<(String, String)>,
    ) -> Result<(), QueueError> {
        let body = record.body.clone().unwrap_or_default();
        let sender = shared::trust::sender_id(record)
            .unwrap_or("none")
            .to_owned();
        // Refused ones stay in the DLQ; rejected ones are the operator's to redrive.
        let refused = marks
            .iter()
            .find(|(name, _)| name == shared::trust::REFUSED)
            .map(|(_, reason)| reason.clone());
        let sqs = self.sqs.clone();
        self.world
            .remote("SendMessage dlq", &sender.clone(), async move {
                sqs.park(body, sender, refused);
            })
            .await
            .map_err(QueueError)
    }
}

/// The receipt handle of message `id` at its `receives`-th receive.
pub fn receipt_handle(id: u64, receives: u32) -> String {
    format!("rh-{id}-{receives}")
}

/// The processor's ChangeMessageVisibilityBatch: one remote call for the batch's entries.
pub struct SimVisibility {
    pub sqs: Arc<Sqs>,
    pub world: Arc<World>,
}

#[async_trait]
impl shared::queue::Visibility for SimVisibility {
    async fn hide(&self, entries: &[(String, Duration)]) -> Vec<Result<(), QueueError>> {
        let parsed: Vec<Option<(u64, u32, Duration)>> = entries
            .iter()
            .map(|(handle, wait)| {
                let (id, receives) = handle.strip_prefix("rh-")?.split_once('-')?;
                Some((id.parse().ok()?, receives.parse().ok()?, *wait))
            })
            .collect();
        let sqs = self.sqs.clone();
        let subject = format!("{entries:?}");
        let applied = self
            .world
            .remote("ChangeMessageVisibilityBatch", &subject, async move {
                parsed
                    .into_iter()
                    .map(|p| {
                        p.is_some_and(|(id, receives, wait)| {
                            sqs.change_visibility(id, receives, wait)
                        })
                    })
                    .collect::<Vec<bool>>()
            })
            .await;
        match applied {
            Ok(each) => each
                .into_iter()
                .map(|ok| {
                    ok.then_some(())
                        .ok_or_else(|| QueueError("ReceiptHandleIsInvalid".into()))
                })
                .collect(),
            Err(e) => entries.iter().map(|_| Err(QueueError(e.clone()))).collect(),
        }
    }
}

/// The receivers' side of the queue: sends through remote calls; now and then one entry of a
/// batch fails alone.
pub struct SimQueue {
    pub sqs: Arc<Sqs>,
    world: Arc<World>,
    /// The role it sends as: each receiver its own.
    sender: String,
}

impl SimQueue {
    pub fn new(world: Arc<World>, sqs: Arc<Sqs>, sender: &str) -> Self {
        SimQueue {
            sqs,
            world,
            sender: sender.to_owned(),
        }
    }
}

#[async_trait]
impl EventQueue for SimQueue {
    async fn send(&self, messages: &[Message]) -> Vec<Result<String, QueueError>> {
        let fault_rate = self.world.weather().map_or(0.0, |w| w.fault_rate);
        let refused: Vec<bool> = messages
            .iter()
            .map(|_| self.world.rng(|r| r.chance(fault_rate / 4.0)))
            .collect();
        let accepted: Vec<Message> = messages
            .iter()
            .zip(&refused)
            .filter(|(_, no)| !**no)
            .map(|(m, _)| m.clone())
            .collect();
        let sqs = self.sqs.clone();
        let world = self.world.clone();
        let sender = self.sender.clone();
        // A scripted fault names an event: its dedup key, read from the bodies.
        let subject = if self.world.has_forced() {
            messages
                .iter()
                .filter_map(|m| serde_json::from_str::<serde_json::Value>(&m.body).ok())
                .filter_map(|v| v["dedup_key"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            format!("{} message(s)", messages.len())
        };
        let sent = self
            .world
            .remote("SendMessageBatch", &subject, async move {
                let ids = sqs.enqueue(&accepted, &sender);
                world.note(|| format!("SendMessageBatch applied: {ids:?}"));
                ids
            })
            .await;
        match sent {
            Err(e) => messages
                .iter()
                .map(|_| Err(QueueError(e.clone())))
                .collect(),
            Ok(ids) => {
                let mut ids = ids.into_iter();
                refused
                    .iter()
                    .map(|no| match no {
                        true => Err(QueueError("injected: entry refused".into())),
                        false => Ok(ids.next().expect("one id per accepted entry")),
                    })
                    .collect()
            }
        }
    }
}

//! Send: the claim check's objects, then the messages; beside them, the archive's record of the
//! request.

use futures::stream::{self, StreamExt};
use tracing::error;

use super::deliver::Progress;
use super::prepare::Prepared;
use super::state::ClaimState;
use super::Ready;
use crate::envelope::describe_json_error;
use crate::metrics;
use crate::objects::{self, ObjectError};
use crate::provider::{Inbound, Provider};
use crate::queue::Message;

impl<P: Provider> Ready<P> {
    /// Writes the objects of the claim-checked events among `fresh`, a bounded number at a time.
    /// `false` when any write failed (nothing of theirs may then be sent).
    pub(super) async fn check_in(&self, fresh: &[&Prepared]) -> bool {
        let Some(store) = &self.payloads else {
            return true;
        };
        let puts: Vec<_> = fresh
            .iter()
            .filter_map(|p| p.offload.as_ref().map(|o| (*p, o)))
            .map(|(p, object)| async move {
                // A `Bytes` clone: the object is not copied.
                let put = store
                    .put(&object.key, object.bytes.clone(), "application/json")
                    .await;
                if let Err(e) = &put {
                    error!(provider = self.provider.name(), event_id = %p.envelope.event_id, error = %e,
                        "payload object not written");
                }
                put.is_ok()
            })
            .collect();
        stream::iter(puts)
            .buffer_unordered(self.settings.max_concurrent_calls)
            .collect::<Vec<bool>>()
            .await
            .into_iter()
            .all(|ok| ok)
    }

    /// Sends the messages of `fresh` in one call (the adapter batches them); what went is on the
    /// queue (`Sent`, counted in `progress`), what did not is returned, to be given back.
    pub(super) async fn send<'p>(
        &self,
        fresh: &[&'p Prepared],
        progress: &mut Progress<'_>,
    ) -> Vec<&'p Prepared> {
        if fresh.is_empty() {
            return Vec::new();
        }
        let messages: Vec<Message> = fresh
            .iter()
            .map(|p| {
                let mut slot = p.message.lock().unwrap_or_else(|e| e.into_inner());
                slot.take().expect("each event is sent once")
            })
            .collect();
        let started = std::time::Instant::now();
        let sent = self.queue.send(&messages).await;
        progress.send_ms = Some(metrics::millis(started.elapsed()));
        let mut unsent = Vec::new();
        for (p, result) in fresh.iter().zip(sent) {
            match result {
                Ok(_) => {
                    p.state.become_(ClaimState::Sent);
                    progress.queued += 1;
                }
                Err(e) => {
                    error!(provider = self.provider.name(), event_id = %p.envelope.event_id, error = %e,
                        "queue send failed; claim released");
                    unsent.push(*p);
                }
            }
        }
        unsent
    }

    /// Writes the request to the archive when it is on: its body and the envelopes built from
    /// it, never its headers, path or query.
    pub(super) async fn archive(
        &self,
        inbound: &Inbound<'_>,
        prepared: &[Prepared],
    ) -> Result<(), ObjectError> {
        let Some(store) = &self.archive else {
            return Ok(());
        };
        let envelopes = prepared.iter().map(|p| &p.envelope).collect();
        let Some(record) = objects::archive_record(
            inbound.method.as_str(),
            inbound.header("content-type"),
            inbound.body,
            envelopes,
        ) else {
            return Ok(());
        };
        let key = objects::archive_key(
            self.provider.name(),
            inbound.now,
            &record.body_sha256,
            &objects::archive_request_id(),
        );
        let object = serde_json::to_vec(&record)
            .map_err(|e| ObjectError::Failed(describe_json_error(&e)))?;
        store
            .put(&key, object.into(), "application/json")
            .await
            .inspect_err(|e| {
                error!(provider = self.provider.name(), error = %e, "request not archived");
            })
    }
}

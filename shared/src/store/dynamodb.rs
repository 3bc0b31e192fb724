//! Claims in DynamoDB: one conditional PutItem per claim, with
//! `ReturnValuesOnConditionCheckFailure = ALL_OLD` so a refused claim costs no second read.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use time::OffsetDateTime;

use super::{
    granted, new_record, refused, Claim, ClaimOutcome, ClaimStore, Finish, Record, Status,
    StoreError,
};
use crate::clock::rfc3339;

const STILL_OURS: &str = "claim_token = :token";

#[derive(Debug, Clone)]
pub struct DynamoClaims {
    client: Client,
    table: String,
    /// [`super::condition_expression`], written once.
    condition: String,
}

impl DynamoClaims {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoClaims {
            client,
            table: table.into(),
            condition: super::condition_expression(),
        }
    }
}

pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(super) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(super) fn store_error<E: std::error::Error + 'static>(op: &str, e: E) -> StoreError {
    // DisplayErrorContext prints the whole chain (connection refused, throttled, ...) but never
    // item values: the SDK does not put them in errors.
    StoreError(format!(
        "{op}: {}",
        aws_sdk_dynamodb::error::DisplayErrorContext(e)
    ))
}

fn parse_record(item: &HashMap<String, AttributeValue>) -> Option<Record> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    Some(Record {
        status: Status::parse(&text("status")?)?,
        lease_until_ms: num("lease_until_ms").unwrap_or(0),
        expires_at: num("expires_at").unwrap_or(i64::MAX),
        fingerprint: text("body_sha256").unwrap_or_default(),
        token: text("claim_token").unwrap_or_default(),
    })
}

#[async_trait]
impl ClaimStore for DynamoClaims {
    async fn record(&self, pk: &str) -> Result<Option<Record>, StoreError> {
        self.read(pk).await
    }

    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        let record = new_record(claim);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&claim.pk))
            .item("status", s(record.status.as_str()))
            .item("lease_until_ms", n(record.lease_until_ms))
            .item("expires_at", n(record.expires_at))
            .item("received_at", s(rfc3339(claim.now)))
            .item("event_type", s(&claim.event_type))
            .item("body_sha256", s(&claim.fingerprint))
            .item("claim_token", s(&claim.token))
            .condition_expression(self.condition.as_str())
            .set_expression_attribute_names(self.used(&[("#status", "status".to_owned())]))
            .set_expression_attribute_values(self.used(&[
                (":now", n(claim.now.unix_timestamp())),
                (":now_ms", n(crate::clock::epoch_millis(claim.now))),
                (":pending", s(claim.pending.as_str())),
                (":token", s(&claim.token)),
            ]))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            // A takeover learns what it replaced (nothing comes back for a new item).
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => Ok(granted(out.attributes().and_then(parse_record), claim)),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), PutItemError::ConditionalCheckFailedException(_)) =>
            {
                let PutItemError::ConditionalCheckFailedException(failed) = e.into_err() else {
                    unreachable!("matched above")
                };
                let existing = match failed.item() {
                    Some(item) => parse_record(item),
                    // Older DynamoDB-compatible servers do not return ALL_OLD: read it instead.
                    None => self.read(&claim.pk).await?,
                };
                match existing {
                    Some(r) => Ok(refused(&r, claim)),
                    // Deleted between the two calls (released): the retry will find it free.
                    None => Ok(ClaimOutcome::InFlight {
                        retry_after: std::time::Duration::from_secs(1),
                        conflict: false,
                    }),
                }
            }
            Err(e) => Err(store_error("PutItem", e)),
        }
    }

    async fn release(&self, pk: &str, token: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .condition_expression(STILL_OURS)
            .expression_attribute_values(":token", s(token))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Not ours any more (taken over after the lease): nothing to release.
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                Ok(())
            }
            Err(e) => Err(store_error("DeleteItem", e)),
        }
    }

    async fn finish(
        &self,
        pk: &str,
        token: &str,
        finish: &Finish,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .condition_expression(STILL_OURS)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":token", s(token));
        let update = match finish {
            Finish::Enqueued { message_id, first } => {
                let mut set = vec!["#status = :status"];
                let mut update =
                    update.expression_attribute_values(":status", s(Status::Enqueued.as_str()));
                if let Some(id) = message_id {
                    set.push("message_id = :message_id");
                    update = update.expression_attribute_values(":message_id", s(id));
                }
                if let Some(first) = first {
                    set.push("expires_at = :expires_at");
                    set.push("body_sha256 = :body_sha256");
                    update = update
                        .expression_attribute_values(":expires_at", n(first.expires_at))
                        .expression_attribute_values(":body_sha256", s(&first.fingerprint));
                }
                update.update_expression(format!("SET {}", set.join(", ")))
            }
            // processed_at is written once, even if a redelivery finishes the same claim again.
            Finish::Processed => update
                .update_expression(
                    "SET #status = :status, processed_at = if_not_exists(processed_at, :now)",
                )
                .expression_attribute_values(":status", s(Status::Processed.as_str()))
                .expression_attribute_values(":now", s(rfc3339(now))),
        };
        match update.send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) if e.err().is_conditional_check_failed_exception() => {
                tracing::warn!(pk, "claim was taken over before it could be finished");
                Ok(())
            }
            Err(e) => Err(store_error("UpdateItem", e)),
        }
    }
}

impl DynamoClaims {
    /// The placeholders the claim condition uses (DynamoDB refuses unused ones), so that the
    /// condition is written from [`super::CLAIM_CONDITION`] alone.
    fn used<V: Clone>(&self, placeholders: &[(&str, V)]) -> Option<HashMap<String, V>> {
        let used: HashMap<String, V> = placeholders
            .iter()
            .filter(|(name, _)| self.condition.contains(name))
            .map(|(name, v)| ((*name).to_owned(), v.clone()))
            .collect();
        (!used.is_empty()).then_some(used)
    }

    /// The record under `pk` (a consistent read).
    pub async fn read(&self, pk: &str) -> Result<Option<Record>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        Ok(out.item().and_then(parse_record))
    }
}

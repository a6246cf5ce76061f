//! The deployed [`IdempotencyStore`] adapter: keys in one DynamoDB table.
//!
//! One item per key (hash key `key`, a string) with attributes `event_id`, `body_digest`,
//! `completed` (a boolean), `expires_at_ms` (Unix milliseconds: the end of the lease while
//! pending, of the TTL once completed; what the conditions compare) and `expires_at` (whole
//! seconds, rounded up, for DynamoDB's TTL). A claim is one conditional `PutItem`
//! (`attribute_not_exists(key) OR expires_at_ms < :now`) that returns the holder when the
//! condition fails; completing and releasing are conditional on the key still being the same
//! event's. TTL deletion is lazy, so the conditions treat an expired item as absent. All AWS types
//! stay inside this module.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use uuid::Uuid;

use super::{expiry_millis, Claim, Claimed, IdempotencyStore, StoreError};
use crate::clock::Clock;

/// Free or expired. (`key` is a reserved word, hence the `#k` placeholder.)
const CLAIM_CONDITION: &str = "attribute_not_exists(#k) OR #exp < :now";
/// Still this event's.
const COMPLETE_CONDITION: &str = "#event = :event";
/// Still this event's, and not completed.
const RELEASE_CONDITION: &str = "#event = :event AND #completed = :no";

/// A claim that fails on an item that is gone by the time it is read (released or expired in
/// between) is tried again, at most this many times in all.
const CLAIM_ATTEMPTS: usize = 3;

/// Creates the table this adapter expects (hash key `key`, on-demand billing), waits until it is
/// active, and turns on TTL on `expires_at`. For tests and tooling; deployments create it from the
/// template.
#[cfg(feature = "test-util")]
pub async fn create_table(client: &Client, name: &str) -> Result<(), StoreError> {
    crate::aws::create_table(client, name, "key", None).await?;
    crate::aws::enable_ttl(client, name, "expires_at").await
}

/// [`IdempotencyStore`] on one DynamoDB table laid out as described in the module documentation.
#[derive(Clone)]
pub struct DynamoIdempotencyStore {
    client: Client,
    table: String,
    clock: Clock,
}

impl DynamoIdempotencyStore {
    /// Uses `table`, which must exist with the layout of the template (or of `create_table`).
    pub fn new(client: Client, table: String) -> DynamoIdempotencyStore {
        DynamoIdempotencyStore {
            client,
            table,
            clock: Clock::system(),
        }
    }

    /// Reads the time from `clock` rather than the system clock (tests move it).
    pub fn with_clock(self, clock: Clock) -> DynamoIdempotencyStore {
        DynamoIdempotencyStore { clock, ..self }
    }

    /// One conditional put; `Ok(Ok(claimed))` when it wrote, the holder when the condition failed
    /// (read from the failure itself, or consistently afterwards where the back end does not
    /// return it).
    async fn try_claim(
        &self,
        key: &str,
        event_id: Uuid,
        body_digest: &str,
        at: i64,
        lease: Duration,
    ) -> Result<Result<Claimed, HashMap<String, AttributeValue>>, StoreError> {
        let now = self.clock.now_millis();
        let expires_at_ms = expiry_millis(now, lease);
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("key", string(key))
            .item("event_id", string(&event_id.to_string()))
            .item("body_digest", string(body_digest))
            .item("completed", AttributeValue::Bool(false))
            .item("at", number(at))
            .item("expires_at_ms", number(expires_at_ms))
            .item("expires_at", number(ttl_seconds(expires_at_ms)))
            .condition_expression(CLAIM_CONDITION)
            .expression_attribute_names("#k", "key")
            .expression_attribute_names("#exp", "expires_at_ms")
            .expression_attribute_values(":now", number(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            // The item replaced, if any: a claim never completed makes this one a reclaim.
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => match output.attributes.filter(|old| !old.is_empty()) {
                Some(old) if !completed(&old) => Ok(Ok(Claimed::Reclaimed(claim_of(&old)?))),
                _ => Ok(Ok(Claimed::New)),
            },
            Err(SdkError::ServiceError(failure))
                if failure.err().is_conditional_check_failed_exception() =>
            {
                let returned = match failure.into_err() {
                    PutItemError::ConditionalCheckFailedException(failed) => failed.item,
                    _ => None,
                };
                match returned {
                    Some(item) => Ok(Err(item)),
                    None => {
                        let key = HashMap::from([("key".to_owned(), string(key))]);
                        let item = crate::aws::read_item(&self.client, &self.table, key).await?;
                        // Gone (purged) since the put: empty, so the caller retries.
                        Ok(Err(item.unwrap_or_default()))
                    }
                }
            }
            Err(err) => Err(crate::aws::store_error(err)),
        }
    }
}

fn string(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn number(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// TTL wants whole seconds; rounding up never deletes an item before it expires.
fn ttl_seconds(expires_at_ms: i64) -> i64 {
    expires_at_ms.saturating_add(999) / 1000
}

/// The claim an item holds; an item missing a field is a storage failure.
fn claim_of(item: &HashMap<String, AttributeValue>) -> Result<Claim, StoreError> {
    let text = |name: &str| {
        item.get(name)
            .and_then(|value| value.as_s().ok())
            .ok_or_else(|| StoreError::backend(format!("idempotency item without {name}")))
    };
    Ok(Claim {
        event_id: text("event_id")?.parse().map_err(StoreError::backend)?,
        body_digest: text("body_digest")?.clone(),
        completed: completed(item),
        at: item
            .get("at")
            .and_then(|value| value.as_n().ok())
            .and_then(|n| n.parse().ok()),
    })
}

/// Whether an item's claim was completed.
fn completed(item: &HashMap<String, AttributeValue>) -> bool {
    item.get("completed")
        .and_then(|value| value.as_bool().ok())
        .copied()
        .unwrap_or(false)
}

#[async_trait]
impl IdempotencyStore for DynamoIdempotencyStore {
    async fn claim(
        &self,
        key: &str,
        event_id: Uuid,
        body_digest: &str,
        at: i64,
        lease: Duration,
    ) -> Result<Claimed, StoreError> {
        for _ in 0..CLAIM_ATTEMPTS {
            match self
                .try_claim(key, event_id, body_digest, at, lease)
                .await?
            {
                Ok(claimed) => return Ok(claimed),
                Err(item) if item.is_empty() => continue,
                Err(item) => return Ok(Claimed::Existing(claim_of(&item)?)),
            }
        }
        Err(StoreError::backend(
            "the idempotency key kept changing while being claimed",
        ))
    }

    async fn complete(&self, key: &str, event_id: Uuid, ttl: Duration) -> Result<(), StoreError> {
        let expires_at_ms = expiry_millis(self.clock.now_millis(), ttl);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key", string(key))
            .update_expression("SET #completed = :yes, #exp = :exp, expires_at = :ttl")
            .condition_expression(COMPLETE_CONDITION)
            .expression_attribute_names("#completed", "completed")
            .expression_attribute_names("#exp", "expires_at_ms")
            .expression_attribute_names("#event", "event_id")
            .expression_attribute_values(":yes", AttributeValue::Bool(true))
            .expression_attribute_values(":exp", number(expires_at_ms))
            .expression_attribute_values(":ttl", number(ttl_seconds(expires_at_ms)))
            .expression_attribute_values(":event", string(&event_id.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Another claim took the key after this one lapsed: nothing of ours to complete.
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(crate::aws::store_error(err)),
        }
    }

    async fn release(&self, key: &str, event_id: Uuid) -> Result<(), StoreError> {
        // Expired at once and kept (TTL deletes it after the lease), so that the next claim
        // knows an earlier one was never completed.
        let expired = self.clock.now_millis().saturating_sub(1);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key", string(key))
            .update_expression("SET #exp = :expired")
            .condition_expression(RELEASE_CONDITION)
            .expression_attribute_names("#event", "event_id")
            .expression_attribute_names("#completed", "completed")
            .expression_attribute_names("#exp", "expires_at_ms")
            .expression_attribute_values(":event", string(&event_id.to_string()))
            .expression_attribute_values(":no", AttributeValue::Bool(false))
            .expression_attribute_values(":expired", number(expired))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Not ours any more (or already gone): nothing to free.
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(crate::aws::store_error(err)),
        }
    }
}

//! The deployed [`WindowStore`] adapter: windows and digests in one DynamoDB table.
//!
//! One item per key (hash key `key`, a string) with attributes `claimant`, `digest` (on_change keys
//! only), `expires_at_ms` (milliseconds since the Unix epoch, what the conditions compare) and
//! `expires_at` (whole seconds, rounded up, for DynamoDB's TTL, which only understands seconds).
//! Each decision is one `PutItem` whose `ConditionExpression` is the rule itself, so DynamoDB
//! decides it atomically; `ConditionalCheckFailed` means "no". TTL deletion is lazy (up to days
//! late), so the conditions treat an expired item as absent rather than trusting it to be gone.
//! All AWS types stay inside this module.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use super::{expiry_millis, StoreError, WindowStore};
use crate::clock::Clock;

/// Free, expired, or already ours. (`key` is a reserved word, hence the `#k` placeholder.)
const CLAIM_CONDITION: &str = "attribute_not_exists(#k) OR #exp < :now OR #claimant = :me";
/// New, different, expired, or already ours.
const SWAP_CONDITION: &str =
    "attribute_not_exists(#k) OR #digest <> :d OR #exp < :now OR #claimant = :me";

/// Creates the table this adapter expects (hash key `key`, on-demand billing), waits until it is
/// active, and turns on TTL on `expires_at`. For tests and tooling; deployments create it from the
/// template.
#[cfg(feature = "test-util")]
pub async fn create_table(client: &Client, name: &str) -> Result<(), StoreError> {
    crate::aws::create_table(client, name, "key", None).await?;
    crate::aws::enable_ttl(client, name, "expires_at").await
}

/// [`WindowStore`] on one DynamoDB table laid out as described in the module documentation.
#[derive(Clone)]
pub struct DynamoWindowStore {
    client: Client,
    table: String,
    clock: Clock,
}

impl DynamoWindowStore {
    /// Uses `table`, which must exist with the layout of the template (or of `create_table`).
    pub fn new(client: Client, table: String) -> DynamoWindowStore {
        DynamoWindowStore {
            client,
            table,
            clock: Clock::system(),
        }
    }

    /// Reads the time from `clock` rather than the system clock (tests move it).
    pub fn with_clock(self, clock: Clock) -> DynamoWindowStore {
        DynamoWindowStore { clock, ..self }
    }

    /// Writes the item for `key` if `condition` holds; false when it does not.
    async fn put_if(
        &self,
        key: &str,
        claimant: &str,
        digest: Option<&str>,
        ttl: Duration,
        condition: &str,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now_millis();
        let expires_at_ms = expiry_millis(now, ttl);
        // TTL wants whole seconds; rounding up never deletes an item before it expires.
        let expires_at = expires_at_ms.saturating_add(999) / 1000;
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("key", AttributeValue::S(key.to_owned()))
            .item("claimant", AttributeValue::S(claimant.to_owned()))
            .item("expires_at_ms", number(expires_at_ms))
            .item("expires_at", number(expires_at))
            .condition_expression(condition)
            .expression_attribute_names("#k", "key")
            .expression_attribute_names("#exp", "expires_at_ms")
            .expression_attribute_names("#claimant", "claimant")
            .expression_attribute_values(":now", number(now))
            .expression_attribute_values(":me", AttributeValue::S(claimant.to_owned()));
        if let Some(digest) = digest {
            request = request
                .item("digest", AttributeValue::S(digest.to_owned()))
                .expression_attribute_names("#digest", "digest")
                .expression_attribute_values(":d", AttributeValue::S(digest.to_owned()));
        }
        match request.send().await {
            Ok(_) => Ok(true),
            Err(err) if is_condition_failure(&err) => Ok(false),
            Err(err) => Err(crate::aws::store_error(err)),
        }
    }
}

fn number(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn is_condition_failure(err: &SdkError<PutItemError>) -> bool {
    err.as_service_error()
        .is_some_and(PutItemError::is_conditional_check_failed_exception)
}

#[async_trait]
impl WindowStore for DynamoWindowStore {
    async fn claim_window(
        &self,
        key: &str,
        claimant: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.put_if(key, claimant, None, ttl, CLAIM_CONDITION).await
    }

    async fn swap_digest(
        &self,
        key: &str,
        digest: &str,
        claimant: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.put_if(key, claimant, Some(digest), ttl, SWAP_CONDITION)
            .await
    }
}

//! The deployed [`MonetizationStore`] adapter: one DynamoDB table (hash key `pk`, range key
//! `sk`, both strings).
//!
//! - a condition at `pk="condition#<org>", sk=<id>` with attribute `body` (its JSON);
//! - a reached threshold at `pk="reached#<key>", sk="-"` with attribute `claimant`. A claim is
//!   one conditional `PutItem` (`attribute_not_exists(pk) OR claimant = :c`): exactly one of
//!   concurrent claimants writes, the others learn it from the failed condition.
//!
//! All AWS types stay inside this module.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use uuid::Uuid;

use super::{Condition, MonetizationStore, StoreError, Threshold, MAX_CONDITIONS_PER_ORG};
use crate::events::now_millis;

const CLAIM_CONDITION: &str = "attribute_not_exists(pk) OR claimant = :c";

/// Creates the table this adapter expects and waits until it is active. For tests and tooling;
/// deployments create it from the template.
#[cfg(feature = "test-util")]
pub async fn create_table(client: &Client, name: &str) -> Result<(), StoreError> {
    crate::aws::create_table(client, name, "pk", Some("sk")).await
}

/// [`MonetizationStore`] on one DynamoDB table laid out as described in the module documentation.
#[derive(Clone)]
pub struct DynamoMonetizationStore {
    client: Client,
    table: String,
}

impl DynamoMonetizationStore {
    /// Uses `table`, which must exist with the layout of the template (or of `create_table`).
    pub fn new(client: Client, table: String) -> DynamoMonetizationStore {
        DynamoMonetizationStore { client, table }
    }
}

fn string(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

fn condition_pk(org: &str) -> String {
    format!("condition#{org}")
}

fn decode(item: &HashMap<String, AttributeValue>) -> Result<Condition, StoreError> {
    let body = item
        .get("body")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| StoreError::backend("condition item without body"))?;
    serde_json::from_str(body).map_err(StoreError::backend)
}

#[async_trait]
impl MonetizationStore for DynamoMonetizationStore {
    async fn put_condition(&self, condition: &Condition) -> Result<(), StoreError> {
        let body = serde_json::to_string(condition).map_err(StoreError::backend)?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", string(&condition_pk(&condition.org)))
            .item("sk", string(&condition.id.to_string()))
            .item("body", string(&body))
            .send()
            .await
            .map(|_| ())
            .map_err(crate::aws::store_error)
    }

    async fn get_condition(&self, org: &str, id: Uuid) -> Result<Option<Condition>, StoreError> {
        let key = HashMap::from([
            ("pk".to_owned(), string(&condition_pk(org))),
            ("sk".to_owned(), string(&id.to_string())),
        ]);
        let item = crate::aws::read_item(&self.client, &self.table, key).await?;
        item.as_ref().map(decode).transpose()
    }

    async fn list_conditions(&self, org: &str) -> Result<Vec<Condition>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", string(&condition_pk(org)))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(crate::aws::store_error)?;
            for item in output.items() {
                out.push(decode(item)?);
                if out.len() >= MAX_CONDITIONS_PER_ORG {
                    return Ok(out);
                }
            }
            match output.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(out),
            }
        }
    }

    /// One query of the organisation's partition (`condition#<org>`), filtered here: the rate
    /// plan is inside `body`, and an organisation has at most [`MAX_CONDITIONS_PER_ORG`].
    async fn conditions_on_rate_plan(
        &self,
        org: &str,
        rate_plan: &str,
    ) -> Result<Vec<Condition>, StoreError> {
        let mut conditions = self.list_conditions(org).await?;
        conditions.retain(|c| c.rate_plan == rate_plan);
        Ok(conditions)
    }

    async fn delete_condition(&self, org: &str, id: Uuid) -> Result<bool, StoreError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", string(&condition_pk(org)))
            .key("sk", string(&id.to_string()))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(crate::aws::store_error)?;
        Ok(output.attributes.is_some_and(|old| !old.is_empty()))
    }

    async fn claim(&self, threshold: &Threshold, claimant: Uuid) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", string(&format!("reached#{}", threshold.key())))
            .item("sk", string("-"))
            .item("claimant", string(&claimant.to_string()))
            .item("reached_at", AttributeValue::N(now_millis().to_string()))
            .condition_expression(CLAIM_CONDITION)
            .expression_attribute_values(":c", string(&claimant.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(crate::aws::store_error(err)),
        }
    }
}

//! The deployed [`HookStore`] adapter: hooks and custom events in one DynamoDB table.
//!
//! Single-table layout on a `pk` (hash) / `sk` (range) key, both strings:
//! - a hook at `pk="hook", sk=<id>`: its fields as native attributes (through `serde_dynamo`) plus
//!   a `version` number, so a Query on `pk="hook"` lists hooks in id order and pages for real;
//! - a name guard at `pk="name", sk=<name>` with attribute `hook_id`, which makes names unique;
//! - a custom event at `pk="custom_event", sk=<source>\u{1f}<event>`.
//!
//! Every write that touches a hook and its name guards is one `TransactWriteItems`, so a hook and
//! its name can never disagree and optimistic versioning never loses an update. All AWS types stay
//! inside this module.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, Put, ReturnValue, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use uuid::Uuid;

use super::{HookFilter, HookStore, Page, PageToken, Precondition, StoreError, TagFilter};
use crate::model::{CustomEvent, Hook, Versioned};

type Item = HashMap<String, AttributeValue>;

const HOOK_PK: &str = "hook";
const NAME_PK: &str = "name";
const CUSTOM_EVENT_PK: &str = "custom_event";
/// The change counter's item: `pk = meta`, `sk = version`, the count in `n`.
const META_PK: &str = "meta";
const VERSION_SK: &str = "version";
/// Joins source and event in a custom event's sort key; no printable name contains it.
const CUSTOM_EVENT_SEPARATOR: char = '\u{1f}';

/// How often a write is tried again when DynamoDB reports a clash between concurrent transactions
/// (which says nothing yet about whether the precondition holds).
const MAX_ATTEMPTS: u32 = 5;
/// Items read per Query when a filter may discard most of them: fewer round trips than reading
/// only as many as are still missing.
const FILTERED_BATCH: usize = 100;

/// Cancellation reason codes of `TransactionCanceledException`.
const CONDITION_FAILED: &str = "ConditionalCheckFailed";
const TRANSACTION_CONFLICT: &str = "TransactionConflict";

/// Creates the table this adapter expects (`pk`/`sk` string keys, on-demand billing) and waits
/// until it is active. For tests and tooling; deployments create it from the template.
#[cfg(feature = "test-util")]
pub async fn create_table(client: &Client, name: &str) -> Result<(), StoreError> {
    crate::aws::create_table(client, name, "pk", Some("sk")).await
}

/// [`HookStore`] on one DynamoDB table laid out as described in the module documentation.
#[derive(Clone)]
pub struct DynamoHookStore {
    client: Client,
    table: String,
}

impl DynamoHookStore {
    /// Uses `table`, which must exist with the layout of the template (or of `create_table`).
    pub fn new(client: Client, table: String) -> DynamoHookStore {
        DynamoHookStore { client, table }
    }

    /// One attempt at `put`.
    async fn try_put(
        &self,
        hook: &Hook,
        precondition: Precondition,
    ) -> Result<Attempt<u64>, StoreError> {
        // The old name must be known to free its guard. Reading it first is safe: the transaction
        // below only goes through if the hook is still at the version that was read.
        let (old_name, version) = match precondition {
            Precondition::Absent => (None, 1),
            Precondition::Version(expected) => match self.get(hook.id).await? {
                Some(current) if current.version == expected => (current.value.name, expected + 1),
                _ => return Err(StoreError::Conflict),
            },
        };
        let (items, guard_index) = self.put_items(hook, precondition, version, old_name)?;
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Attempt::Done(version)),
            Err(err) => self.cancelled(err, hook, precondition, guard_index).await,
        }
    }

    /// The items of one `put` transaction: the hook at `version` under its precondition first,
    /// then the guard of its name (whose index is returned) and the release of its old name.
    fn put_items(
        &self,
        hook: &Hook,
        precondition: Precondition,
        version: u64,
        old_name: Option<String>,
    ) -> Result<(Vec<TransactWriteItem>, Option<usize>), StoreError> {
        let id = hook.id.hyphenated().to_string();
        let mut hook_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(hook_item(hook, version)?));
        hook_put = match precondition {
            Precondition::Absent => hook_put.condition_expression("attribute_not_exists(pk)"),
            Precondition::Version(expected) => hook_put
                .condition_expression("#version = :expected")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":expected", number(expected)),
        };
        let mut items = vec![TransactWriteItem::builder()
            .put(hook_put.build().map_err(StoreError::backend)?)
            .build()];

        let guard_index = match &hook.name {
            Some(name) => {
                let guard = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(name_guard(name, &id)))
                    .condition_expression(GUARD_IS_OURS)
                    .expression_attribute_values(":id", string(&id))
                    .build()
                    .map_err(StoreError::backend)?;
                items.push(TransactWriteItem::builder().put(guard).build());
                Some(items.len() - 1)
            }
            None => None,
        };
        if let Some(old) = old_name.filter(|old| hook.name.as_ref() != Some(old)) {
            // Conditional so that a guard never frees a name some other hook holds.
            let release = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(NAME_PK, &old)))
                .condition_expression(GUARD_IS_OURS)
                .expression_attribute_values(":id", string(&id))
                .build()
                .map_err(StoreError::backend)?;
            items.push(TransactWriteItem::builder().delete(release).build());
        }
        items.push(self.bump()?);
        Ok((items, guard_index))
    }

    /// What a failed `put` transaction means, from its cancellation reasons: a stale precondition,
    /// a taken name, a race to retry, or (reasons unknown) whatever the stored state says.
    async fn cancelled(
        &self,
        err: SdkError<TransactWriteItemsError>,
        hook: &Hook,
        precondition: Precondition,
        guard_index: Option<usize>,
    ) -> Result<Attempt<u64>, StoreError> {
        let Some(codes) = cancellation_codes(&err) else {
            return Err(crate::aws::store_error(err));
        };
        let failed = |index: usize| codes.get(index).map(String::as_str) == Some(CONDITION_FAILED);
        // The precondition is checked first: a stale writer learns that, not that a name clashed.
        if failed(0) {
            return Err(StoreError::Conflict);
        }
        if let (Some(index), Some(name)) = (guard_index, &hook.name) {
            if failed(index) {
                return Err(StoreError::NameTaken(name.clone()));
            }
        }
        if codes.iter().any(|code| code == TRANSACTION_CONFLICT) {
            return Ok(Attempt::Retry);
        }
        if codes.is_empty() {
            // An emulator may cancel without saying why: find out by reading what is stored.
            return self.diagnose(hook, precondition).await;
        }
        if codes.iter().any(|code| code == "ThrottlingError") {
            // An item of the transaction was throttled: transient, whatever the status says.
            return Err(StoreError::Unavailable(
                aws_sdk_dynamodb::error::DisplayErrorContext(err)
                    .to_string()
                    .into(),
            ));
        }
        Err(crate::aws::store_error(err))
    }

    /// Why a `put` whose cancellation reasons are unknown failed, judged from the current state.
    async fn diagnose(
        &self,
        hook: &Hook,
        precondition: Precondition,
    ) -> Result<Attempt<u64>, StoreError> {
        let current = self.get(hook.id).await?.map(|stored| stored.version);
        let holds = match precondition {
            Precondition::Absent => current.is_none(),
            Precondition::Version(expected) => current == Some(expected),
        };
        if !holds {
            return Err(StoreError::Conflict);
        }
        if let Some(name) = &hook.name {
            let holder = self.read(key(NAME_PK, name.clone())).await?;
            let ours = string(hook.id.hyphenated().to_string());
            if holder.is_some_and(|guard| guard.get("hook_id") != Some(&ours)) {
                return Err(StoreError::NameTaken(name.clone()));
            }
        }
        Ok(Attempt::Retry)
    }

    /// One attempt at `delete`.
    async fn try_delete(&self, id: Uuid) -> Result<Attempt<Option<Hook>>, StoreError> {
        let Some(current) = self.get(id).await? else {
            return Ok(Attempt::Done(None));
        };
        let id_text = id.hyphenated().to_string();
        let hook_delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key(HOOK_PK, id_text.clone())))
            .condition_expression("#version = :expected")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":expected", number(current.version))
            .build()
            .map_err(StoreError::backend)?;
        let mut items = vec![TransactWriteItem::builder().delete(hook_delete).build()];
        if let Some(name) = &current.value.name {
            let release = Delete::builder()
                .table_name(&self.table)
                .set_key(Some(key(NAME_PK, name.clone())))
                .condition_expression(GUARD_IS_OURS)
                .expression_attribute_values(":id", string(&id_text))
                .build()
                .map_err(StoreError::backend)?;
            items.push(TransactWriteItem::builder().delete(release).build());
        }
        items.push(self.bump()?);
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(Attempt::Done(Some(current.value))),
            // Cancelled (the hook changed, or a concurrent transaction): read it again and retry.
            Err(err) if cancellation_codes(&err).is_some() => Ok(Attempt::Retry),
            Err(err) => Err(crate::aws::store_error(err)),
        }
    }

    /// The transaction item that bumps the change counter (unconditional, so it never cancels a
    /// transaction by itself).
    fn bump(&self) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(META_PK, VERSION_SK)))
            .update_expression("ADD n :one")
            .expression_attribute_values(":one", number(1))
            .build()
            .map_err(StoreError::backend)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// Bumps the change counter on its own, after a write that is not a transaction: readers
    /// that see the new count see the write too.
    async fn bump_alone(&self) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(META_PK, VERSION_SK)))
            .update_expression("ADD n :one")
            .expression_attribute_values(":one", number(1))
            .send()
            .await
            .map_err(crate::aws::store_error)?;
        Ok(())
    }

    async fn read(&self, key: Item) -> Result<Option<Item>, StoreError> {
        crate::aws::read_item(&self.client, &self.table, key).await
    }
}

/// The outcome of one try at a write.
enum Attempt<T> {
    Done(T),
    /// Concurrent transactions clashed; that says nothing yet about the precondition, so try again.
    Retry,
}

/// Condition on a name guard: free, or already held by the hook `:id`.
const GUARD_IS_OURS: &str = "attribute_not_exists(pk) OR hook_id = :id";

fn string(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn number(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn key(pk: &str, sk: impl Into<String>) -> Item {
    HashMap::from([("pk".to_owned(), string(pk)), ("sk".to_owned(), string(sk))])
}

fn name_guard(name: &str, hook_id: &str) -> Item {
    let mut item = key(NAME_PK, name);
    item.insert("hook_id".to_owned(), string(hook_id));
    item
}

fn custom_event_sk(source: &str, event: &str) -> String {
    format!("{source}{CUSTOM_EVENT_SEPARATOR}{event}")
}

fn hook_item(hook: &Hook, version: u64) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(hook).map_err(StoreError::backend)?;
    item.extend(key(HOOK_PK, hook.id.hyphenated().to_string()));
    item.insert("version".to_owned(), number(version));
    Ok(item)
}

fn hook_from_item(mut item: Item) -> Result<Versioned<Hook>, StoreError> {
    item.remove("pk");
    item.remove("sk");
    let version = match item.remove("version") {
        Some(AttributeValue::N(n)) => n.parse::<u64>().map_err(StoreError::backend)?,
        other => {
            return Err(StoreError::backend(format!(
                "hook item has no numeric version: {other:?}"
            )))
        }
    };
    let value = serde_dynamo::from_item(item).map_err(StoreError::backend)?;
    Ok(Versioned { value, version })
}

fn custom_event_from_item(mut item: Item) -> Result<CustomEvent, StoreError> {
    item.remove("pk");
    item.remove("sk");
    serde_dynamo::from_item(item).map_err(StoreError::backend)
}

/// The per-item reason codes when a transaction was cancelled ("None" for items that were fine);
/// `None` for any other error.
fn cancellation_codes(err: &SdkError<TransactWriteItemsError>) -> Option<Vec<String>> {
    match err.as_service_error()? {
        TransactWriteItemsError::TransactionCanceledException(cancelled) => Some(
            cancelled
                .cancellation_reasons()
                .iter()
                .map(|reason| reason.code().unwrap_or("None").to_owned())
                .collect(),
        ),
        _ => None,
    }
}

/// Waits a little longer after each clash, so that concurrent writers spread out.
async fn back_off(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt + 1))).await;
}

/// A listing filter as a DynamoDB FilterExpression with its names and values.
#[derive(Default)]
struct FilterExpression {
    clauses: Vec<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl FilterExpression {
    fn new(filter: &HookFilter) -> FilterExpression {
        // `source`, `event` and `name` are reserved words, hence the `#` names throughout.
        let mut expr = FilterExpression::default();
        if let Some(source) = &filter.source {
            expr.equals("source", source);
        }
        if let Some(event) = &filter.event {
            expr.equals("event", event);
        }
        let (tags, joiner) = match &filter.tags {
            Some(TagFilter::All(tags)) => (tags, " AND "),
            Some(TagFilter::Any(tags)) => (tags, " OR "),
            None => return expr,
        };
        if tags.is_empty() {
            return expr;
        }
        expr.names.insert("#tags".to_owned(), "tags".to_owned());
        let mut tests = Vec::with_capacity(tags.len());
        for (i, tag) in tags.iter().enumerate() {
            let placeholder = format!(":tag{i}");
            tests.push(format!("contains(#tags, {placeholder})"));
            expr.values.insert(placeholder, string(tag));
        }
        expr.clauses.push(format!("({})", tests.join(joiner)));
        expr
    }

    fn equals(&mut self, attribute: &str, value: &str) {
        self.clauses.push(format!("#{attribute} = :{attribute}"));
        self.names
            .insert(format!("#{attribute}"), attribute.to_owned());
        self.values.insert(format!(":{attribute}"), string(value));
    }
}

#[async_trait]
impl HookStore for DynamoHookStore {
    async fn get(&self, id: Uuid) -> Result<Option<Versioned<Hook>>, StoreError> {
        self.read(key(HOOK_PK, id.hyphenated().to_string()))
            .await?
            .map(hook_from_item)
            .transpose()
    }

    async fn list(
        &self,
        filter: &HookFilter,
        size: usize,
        after: Option<PageToken>,
    ) -> Result<Page<Hook>, StoreError> {
        if matches!(&filter.tags, Some(TagFilter::Any(tags)) if tags.is_empty()) {
            // "any of no tags" holds for no hook, and DynamoDB cannot express an empty OR.
            return Ok(Page {
                items: vec![],
                next: None,
            });
        }
        let expr = FilterExpression::new(filter);
        let filtered = !expr.clauses.is_empty();
        // One match more than the page tells whether another page exists.
        let wanted = size.saturating_add(1);
        let mut matched: Vec<Hook> = Vec::new();
        let mut start_key: Option<Item> = None;
        loop {
            let missing = wanted - matched.len();
            let limit = if filtered {
                missing.max(FILTERED_BATCH)
            } else {
                missing
            };
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_values(":pk", string(HOOK_PK))
                .limit(i32::try_from(limit).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start_key.take());
            // The page token bounds the sort key rather than serving as ExclusiveStartKey, which
            // keeps it valid even when the hook it names has been deleted since.
            query = match after {
                Some(PageToken(after)) => query
                    .key_condition_expression("pk = :pk AND sk > :after")
                    .expression_attribute_values(":after", string(after.hyphenated().to_string())),
                None => query.key_condition_expression("pk = :pk"),
            };
            if filtered {
                query = query
                    .filter_expression(expr.clauses.join(" AND "))
                    .set_expression_attribute_names(Some(expr.names.clone()));
                for (name, value) in &expr.values {
                    query = query.expression_attribute_values(name, value.clone());
                }
            }
            let output = query.send().await.map_err(crate::aws::store_error)?;
            for item in output.items.unwrap_or_default() {
                matched.push(hook_from_item(item)?.value);
            }
            start_key = output.last_evaluated_key;
            if matched.len() >= wanted || start_key.is_none() {
                break;
            }
        }
        let more = matched.len() > size;
        matched.truncate(size);
        let next = match matched.last() {
            Some(last) if more => Some(PageToken(last.id)),
            _ => None,
        };
        Ok(Page {
            items: matched,
            next,
        })
    }

    async fn put(&self, hook: &Hook, precondition: Precondition) -> Result<u64, StoreError> {
        for attempt in 0..MAX_ATTEMPTS {
            match self.try_put(hook, precondition).await? {
                Attempt::Done(version) => return Ok(version),
                Attempt::Retry => back_off(attempt).await,
            }
        }
        Err(StoreError::backend(
            "put gave up after repeated transaction conflicts",
        ))
    }

    async fn delete(&self, id: Uuid) -> Result<Option<Hook>, StoreError> {
        for attempt in 0..MAX_ATTEMPTS {
            match self.try_delete(id).await? {
                Attempt::Done(removed) => return Ok(removed),
                Attempt::Retry => back_off(attempt).await,
            }
        }
        Err(StoreError::backend(
            "delete gave up: the hook kept changing under it",
        ))
    }

    async fn put_custom_event(&self, event: &CustomEvent) -> Result<bool, StoreError> {
        let mut item: Item = serde_dynamo::to_item(event).map_err(StoreError::backend)?;
        item.extend(key(
            CUSTOM_EVENT_PK,
            custom_event_sk(&event.source, &event.event),
        ));
        let output = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(crate::aws::store_error)?;
        self.bump_alone().await?;
        Ok(output.attributes.is_none_or(|old| old.is_empty()))
    }

    async fn delete_custom_event(&self, source: &str, event: &str) -> Result<bool, StoreError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(CUSTOM_EVENT_PK, custom_event_sk(source, event))))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(crate::aws::store_error)?;
        let removed = output.attributes.is_some_and(|old| !old.is_empty());
        if removed {
            self.bump_alone().await?;
        }
        Ok(removed)
    }

    async fn version(&self) -> Result<u64, StoreError> {
        let item = self.read(key(META_PK, VERSION_SK)).await?;
        match item.as_ref().and_then(|item| item.get("n")) {
            None => Ok(0),
            Some(AttributeValue::N(n)) => n.parse().map_err(StoreError::backend),
            Some(other) => Err(StoreError::backend(format!(
                "the change counter is not a number: {other:?}"
            ))),
        }
    }

    async fn list_custom_events(&self) -> Result<Vec<CustomEvent>, StoreError> {
        let mut events = Vec::new();
        let mut start_key: Option<Item> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", string(CUSTOM_EVENT_PK))
                .set_exclusive_start_key(start_key.take())
                .send()
                .await
                .map_err(crate::aws::store_error)?;
            for item in output.items.unwrap_or_default() {
                events.push(custom_event_from_item(item)?);
            }
            start_key = output.last_evaluated_key;
            if start_key.is_none() {
                break;
            }
        }
        // The sort key orders by the joined string; sorting on the pair is exact whatever the names.
        events.sort_by(|a, b| (&a.source, &a.event).cmp(&(&b.source, &b.event)));
        Ok(events)
    }
}

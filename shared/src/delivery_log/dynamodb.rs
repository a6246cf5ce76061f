//! The deployed [`DeliveryLog`] adapter: delivery records in a DynamoDB table of their own.
//!
//! Layout on a `pk` (hash) / `sk` (range) key, both strings: one item per delivery, at
//! `pk="hook#<hook_id>", sk="<created_at, 13 digits>#<delivery_id>"`, so a Query on the hook's
//! partition, read backwards, lists its deliveries newest first and pages for real, and a
//! GetItem finds a delivery from its two ids alone, as its id carries `created_at`
//! ([`super::time_of`]). Attributes: `id`, `hook_id`, `status`, `created_at`, `updated_at`,
//! `attempts` (a list) through `serde_dynamo`, `claimed` (the highest attempt number handed out)
//! and `event` as JSON text: producers' data may nest deeper than DynamoDB's 32 levels and its
//! numbers must come back exactly as they were sent. An event of more than [`DEFLATE_ABOVE`] bytes is
//! stored deflated instead, as `event_z` (binary), when that makes it smaller: a write unit is 1 KB,
//! and the event is most of a typical record. An event too large for the item is stored as its
//! capped copy, with `event_size` and `event_sha256` beside it ([`super::logged_event`]).
//!
//! **One write per attempt**: for a retry, the attempt's `UpdateItem` also reserves the retry's
//! number in `claimed`. Only a copy that may not be the first claims before it sends
//! ([`DeliveryLog::claim_attempt`]): one more `UpdateItem` on the same item, which may create it
//! bare (a `claimed` alone, skipped by every read until an attempt is recorded).
//!
//! **Before delivery ids carried their time** (ids of another version than 8), a second item at
//! `pk="delivery#<delivery_id>", sk="hook#<hook_id>"` pointed from the id to the record's
//! `created_at`. Such pointers are no longer written; `get` still reads one for an id of the old
//! kind, until they expire with their records.
//!
//! Items carry `expires_at` (Unix seconds, the table's TTL attribute, rounded up so DynamoDB
//! never deletes early) and `expires_at_ms`, which reads compare with the clock: TTL deletion lags
//! by up to days, and an expired item must not be returned meanwhile.
//!
//! An attempt is appended by a single `UpdateItem` (`list_append`), so concurrent attempts never
//! lose each other without any read-modify-write. When the list grows past
//! [`MAX_ATTEMPTS_KEPT`](super::MAX_ATTEMPTS_KEPT), a second `UpdateItem` removes the oldest entries
//! on condition that the list is still the length just seen; if another write got in first, the
//! trim is skipped and the next append trims instead. All AWS types stay inside this module.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
#[cfg(feature = "test-util")]
use aws_sdk_dynamodb::error::ProvideErrorMetadata as _;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
#[cfg(feature = "test-util")]
use aws_sdk_dynamodb::types::TimeToLiveSpecification;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_dynamodb::Client;
use serde::Deserialize;
use uuid::Uuid;

use super::{
    check_created_at, expiry, json_len, logged_event, page_of, sort_key, summary_page_of, time_of,
    Admit, Attempt, AttemptSummary, DeliveryKey, DeliveryLog, DeliveryPage, DeliveryPageToken,
    DeliveryRecord, DeliveryStatus, DeliverySummary, DeliverySummaryPage, DeliveryWindow,
    PageBudget, Then, MAX_ATTEMPTS_KEPT,
};
use crate::clock::Clock;
use crate::events::Event;
use crate::store::StoreError;

type Item = HashMap<String, AttributeValue>;

/// The table's TTL attribute (Unix seconds).
const TTL_ATTRIBUTE: &str = "expires_at";

/// Creates the table this adapter expects (`pk`/`sk` string keys, on-demand billing, TTL on
/// `expires_at`) and waits until it is active. For tests and tooling; deployments create it from
/// the template.
///
/// An emulator that does not implement `UpdateTimeToLive` is tolerated: the table then never
/// purges, which the adapter does not rely on, since reads skip expired items themselves.
#[cfg(feature = "test-util")]
pub async fn create_table(client: &Client, name: &str) -> Result<(), StoreError> {
    crate::aws::create_table(client, name, "pk", Some("sk")).await?;
    let ttl = TimeToLiveSpecification::builder()
        .attribute_name(TTL_ATTRIBUTE)
        .enabled(true)
        .build()
        .map_err(StoreError::backend)?;
    match client
        .update_time_to_live()
        .table_name(name)
        .time_to_live_specification(ttl)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(err) if unsupported(err.code()) => {
            tracing::warn!(
                table = name,
                "the endpoint does not support TTL; expired deliveries stay stored"
            );
            Ok(())
        }
        Err(err) => Err(crate::aws::store_error(err)),
    }
}

/// Whether an error code says the operation is not implemented (as emulators answer).
#[cfg(feature = "test-util")]
fn unsupported(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("UnknownOperationException" | "NotImplementedError" | "NotImplemented")
    )
}

/// [`DeliveryLog`] on one DynamoDB table laid out as described in the module documentation.
#[derive(Clone)]
pub struct DynamoDeliveryLog {
    client: Client,
    table: String,
    clock: Clock,
}

impl DynamoDeliveryLog {
    /// Uses `table`, which must exist with the layout of the template (or of `create_table`).
    pub fn new(client: Client, table: String) -> DynamoDeliveryLog {
        DynamoDeliveryLog {
            client,
            table,
            clock: Clock::system(),
        }
    }

    /// Reads the time from `clock` rather than the system clock (tests move it).
    pub fn with_clock(self, clock: Clock) -> DynamoDeliveryLog {
        DynamoDeliveryLog { clock, ..self }
    }

    /// Appends `attempt` to the record and raises `claimed` as `then` says (see
    /// [`DeliveryLog::record_attempt`]); returns how many attempts the record now holds and, for
    /// a retry, the number reserved.
    async fn append(
        &self,
        key: DeliveryKey,
        event: &Event,
        attempt: Attempt,
        status: DeliveryStatus,
        (now, expires): (i64, Expiry),
        then: Then,
    ) -> Result<Appended, StoreError> {
        let (event, digest) = logged_event(event)?;
        let item = RecordWrite {
            key,
            event: StoredEvent::of(serde_json::to_string(&event).map_err(StoreError::backend)?),
            digest,
            attempt: to_value(std::slice::from_ref(&attempt))?,
            status: to_value(&status)?,
            now,
            expires,
        };
        // A number sent unclaimed is attempt 1 (handed out from the start) or one a record
        // reserved: only a retry's reservation needs writing.
        let claim = match then {
            Then::Retry => Claim::Reserve(attempt.number + 1),
            Then::Done => Claim::None,
        };
        match self.append_with(&item, claim).await? {
            Some(appended) => Ok(appended),
            // A copy claimed the retry's number (or one above): the retry takes the next.
            None => self.append_with(&item, Claim::Next).await?.ok_or_else(|| {
                StoreError::backend("UpdateItem refused an append that has no condition")
            }),
        }
    }

    /// One `UpdateItem` of [`DynamoDeliveryLog::append`]; `None` when a reservation's condition
    /// failed (nothing was written).
    async fn append_with(
        &self,
        item: &RecordWrite,
        claim: Claim,
    ) -> Result<Option<Appended>, StoreError> {
        let mut expression = String::from(
            "SET #attempts = list_append(if_not_exists(#attempts, :empty), :new), \
             #status = :status, #updated_at = :now, #expires_at = :exp, \
             #expires_at_ms = :exp_ms, #id = :id, #hook_id = :hook_id, \
             #event = if_not_exists(#event, :event), \
             #created_at = if_not_exists(#created_at, :created)",
        );
        if item.digest.is_some() {
            expression.push_str(
                ", #event_size = if_not_exists(#event_size, :event_size), \
                 #event_sha256 = if_not_exists(#event_sha256, :event_sha256)",
            );
        }
        expression.push_str(match claim {
            Claim::None => "",
            Claim::Reserve(_) => ", #claimed = :n",
            Claim::Next => ", #claimed = #claimed + :n",
        });
        let key = item.key;
        // `status` and `event` are reserved words; the other names are spelled out alike for
        // uniformity.
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(record_key(key)))
            .update_expression(expression);
        if let Some(digest) = &item.digest {
            request = request
                .expression_attribute_names("#event_size", "event_size")
                .expression_attribute_names("#event_sha256", "event_sha256")
                .expression_attribute_values(":event_size", number(digest.size))
                .expression_attribute_values(
                    ":event_sha256",
                    AttributeValue::S(digest.sha256.clone()),
                );
        }
        request = match claim {
            Claim::None => request,
            Claim::Reserve(n) => request
                .expression_attribute_values(":n", number(n))
                // Reserved only when no copy has claimed it, or one above it.
                .condition_expression("attribute_not_exists(#claimed) OR #claimed < :n"),
            Claim::Next => request.expression_attribute_values(":n", number(1)),
        };
        if claim != Claim::None {
            request = request.expression_attribute_names("#claimed", "claimed");
        }
        let result = request
            .expression_attribute_names("#attempts", "attempts")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#updated_at", "updated_at")
            .expression_attribute_names("#expires_at", TTL_ATTRIBUTE)
            .expression_attribute_names("#expires_at_ms", "expires_at_ms")
            .expression_attribute_names("#id", "id")
            .expression_attribute_names("#hook_id", "hook_id")
            .expression_attribute_names("#event", item.event.attribute().0)
            .expression_attribute_names("#created_at", "created_at")
            .expression_attribute_values(":empty", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":new", item.attempt.clone())
            .expression_attribute_values(":status", item.status.clone())
            .expression_attribute_values(":now", number(item.now))
            .expression_attribute_values(":exp", number(item.expires.seconds))
            .expression_attribute_values(":exp_ms", number(item.expires.millis))
            .expression_attribute_values(":id", to_value(&key.delivery_id)?)
            .expression_attribute_values(":hook_id", to_value(&key.hook_id)?)
            .expression_attribute_values(":event", item.event.attribute().1)
            .expression_attribute_values(":created", number(key.created_at))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        let attributes = match result {
            Ok(output) => output.attributes.unwrap_or_default(),
            Err(err) if conditional_check_failed(&err) => return Ok(None),
            Err(err) => return Err(crate::aws::store_error(err)),
        };
        let len = match attributes.get("attempts") {
            Some(AttributeValue::L(attempts)) => attempts.len(),
            other => {
                return Err(StoreError::backend(format!(
                    "UpdateItem returned no attempts list: {other:?}"
                )))
            }
        };
        let reserved = match claim {
            Claim::Reserve(_) | Claim::Next => Some(claimed_number(&attributes)?),
            Claim::None => None,
        };
        Ok(Some(Appended { len, reserved }))
    }

    /// Removes the oldest attempts of a record that holds `len`, down to [`MAX_ATTEMPTS_KEPT`].
    async fn trim(&self, key: DeliveryKey, len: usize) -> Result<(), StoreError> {
        let excess = len.saturating_sub(MAX_ATTEMPTS_KEPT);
        if excess == 0 {
            return Ok(());
        }
        let removals = (0..excess)
            .map(|i| format!("#attempts[{i}]"))
            .collect::<Vec<_>>()
            .join(", ");
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(record_key(key)))
            .update_expression(format!("REMOVE {removals}"))
            // Indexes are only right for the list as seen: a concurrent append or trim voids them.
            .condition_expression("size(#attempts) = :len")
            .expression_attribute_names("#attempts", "attempts")
            .expression_attribute_values(":len", number(len))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Someone else changed the list; the next append trims what is still over.
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(err) => Err(crate::aws::store_error(err)),
        }
    }

    async fn read(&self, key: Item) -> Result<Option<Item>, StoreError> {
        crate::aws::read_item(&self.client, &self.table, key).await
    }

    /// The window's items in `T`'s shape, oldest first: up to `size + 1` of them, which tells
    /// whether another page exists.
    async fn query_window<T: WindowItem>(
        &self,
        hook_id: Uuid,
        window: &DeliveryWindow,
        size: usize,
        after: Option<DeliveryPageToken>,
    ) -> Result<Vec<T>, StoreError> {
        let Some((from, to)) = window.sort_key_range() else {
            return Ok(Vec::new());
        };
        if window.statuses.is_empty() {
            return Ok(Vec::new());
        }
        // A key condition takes one range on the sort key: the lower bound moves up to the token,
        // inclusive, and the token's own position is skipped below.
        let after = after.map(|token| token.sort_key());
        let from = match &after {
            Some(after) if *after > from => after.clone(),
            _ => from,
        };
        let placeholders: Vec<String> = (0..window.statuses.len())
            .map(|i| format!(":s{i}"))
            .collect();
        let filter = format!(
            "expires_at_ms > :now AND #status IN ({})",
            placeholders.join(", ")
        );
        let projection = T::PROJECTION
            .iter()
            .map(|name| format!("#{name}"))
            .collect::<Vec<_>>()
            .join(", ");
        let now = self.clock.now_millis();
        let wanted = size.saturating_add(1);
        let mut matched: Vec<T> = Vec::new();
        let mut start_key: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .scan_index_forward(true)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .filter_expression(&filter)
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":pk", string(hook_pk(hook_id)))
                .expression_attribute_values(":from", string(from.clone()))
                .expression_attribute_values(":to", string(to.clone()))
                .expression_attribute_values(":now", number(now))
                .limit(
                    i32::try_from(wanted - matched.len())
                        .unwrap_or(i32::MAX)
                        .max(WINDOW_READ),
                )
                .set_exclusive_start_key(start_key.take());
            if !T::PROJECTION.is_empty() {
                query = query.projection_expression(&projection);
                for name in T::PROJECTION {
                    query = query.expression_attribute_names(format!("#{name}"), *name);
                }
            }
            for (placeholder, status) in placeholders.iter().zip(&window.statuses) {
                query = query.expression_attribute_values(placeholder, to_value(status)?);
            }
            let output = query.send().await.map_err(crate::aws::store_error)?;
            for item in output.items.unwrap_or_default() {
                let item = T::from_item(item)?;
                if after.as_deref() != Some(item.sort_key().as_str()) {
                    matched.push(item);
                }
            }
            start_key = output.last_evaluated_key;
            if matched.len() >= wanted || start_key.is_none() {
                break;
            }
        }
        // Reads past the page are dropped: the next page starts after its last item anyway.
        matched.truncate(wanted);
        Ok(matched)
    }
}

/// When an item expires, in both units it is stored in.
#[derive(Debug, Clone, Copy)]
struct Expiry {
    millis: i64,
    /// Rounded up, so that DynamoDB's TTL never deletes before `millis`.
    seconds: i64,
}

impl Expiry {
    fn at(millis: i64) -> Expiry {
        Expiry {
            millis,
            seconds: millis.div_euclid(1000) + i64::from(millis.rem_euclid(1000) != 0),
        }
    }
}

/// Events whose JSON text is longer than this are stored deflated when that saves bytes; shorter
/// ones rarely gain what the binary attribute's name costs.
const DEFLATE_ABOVE: usize = 256;

/// The event as stored: its JSON text, or that text deflated (see the module documentation).
#[derive(Clone)]
enum StoredEvent {
    Text(String),
    Deflated(Vec<u8>),
}

impl StoredEvent {
    fn of(text: String) -> StoredEvent {
        if text.len() > DEFLATE_ABOVE {
            if let Some(deflated) = deflate(text.as_bytes()).filter(|d| d.len() < text.len()) {
                return StoredEvent::Deflated(deflated);
            }
        }
        StoredEvent::Text(text)
    }

    /// The attribute it is stored in, and its value.
    fn attribute(&self) -> (&'static str, AttributeValue) {
        match self {
            StoredEvent::Text(text) => ("event", AttributeValue::S(text.clone())),
            StoredEvent::Deflated(bytes) => (
                "event_z",
                AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(bytes.clone())),
            ),
        }
    }
}

fn deflate(bytes: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok()
}

/// The JSON text of a deflated event; at most [`crate::limits::MAX_LOGGED_EVENT_BYTES`] of it
/// (what the log stores), so a corrupt item cannot inflate without end.
fn inflate(bytes: &[u8]) -> Result<String, StoreError> {
    use std::io::Read as _;
    let limit = crate::limits::MAX_LOGGED_EVENT_BYTES as u64 + 1;
    let mut text = String::new();
    flate2::read::DeflateDecoder::new(bytes)
        .take(limit)
        .read_to_string(&mut text)
        .map_err(|err| StoreError::backend(format!("a deflated event: {err}")))?;
    if text.len() as u64 >= limit {
        return Err(StoreError::backend(
            "a deflated event longer than the log keeps",
        ));
    }
    Ok(text)
}

/// What one append writes, built once for its retry with [`Claim::Next`].
struct RecordWrite {
    key: DeliveryKey,
    /// The event as stored: JSON text of the logged copy, deflated where it pays.
    event: StoredEvent,
    digest: Option<super::EventDigest>,
    /// The attempt as a one-element list, for `list_append`.
    attempt: AttributeValue,
    status: AttributeValue,
    now: i64,
    expires: Expiry,
}

/// What an append does to the record's `claimed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Nothing: no retry follows.
    None,
    /// Sets it to this number, the retry's, on condition that it is above every number handed out.
    Reserve(u32),
    /// Adds one: the retry's number when its reservation failed.
    Next,
}

/// What an append left: the attempts the record holds, and the number reserved for a retry.
struct Appended {
    len: usize,
    reserved: Option<u32>,
}

fn conditional_check_failed(err: &aws_sdk_dynamodb::error::SdkError<UpdateItemError>) -> bool {
    matches!(
        err.as_service_error(),
        Some(UpdateItemError::ConditionalCheckFailedException(_))
    )
}

/// The `claimed` number an `UpdateItem` returned.
fn claimed_number(attributes: &Item) -> Result<u32, StoreError> {
    match attributes.get("claimed") {
        Some(AttributeValue::N(claimed)) => claimed
            .parse::<u32>()
            .map_err(|err| StoreError::backend(format!("claimed {claimed}: {err}"))),
        other => Err(StoreError::backend(format!(
            "UpdateItem returned no claimed number: {other:?}"
        ))),
    }
}

/// A record item as stored; `event` is JSON text, or deflated in `event_z`, which
/// [`StoredRecord::from_item`] inflates into `event` (see the module documentation).
#[derive(Deserialize)]
struct StoredRecord {
    id: Uuid,
    hook_id: Uuid,
    event: String,
    /// Set with `event_sha256` when `event` is a capped copy.
    #[serde(default)]
    event_size: Option<u64>,
    #[serde(default)]
    event_sha256: Option<String>,
    status: DeliveryStatus,
    created_at: i64,
    updated_at: i64,
    attempts: Vec<Attempt>,
    expires_at_ms: i64,
}

impl StoredRecord {
    fn from_item(mut item: Item) -> Result<StoredRecord, StoreError> {
        if let Some(deflated) = item.remove("event_z") {
            let AttributeValue::B(bytes) = deflated else {
                return Err(StoreError::backend("event_z is not binary"));
            };
            item.insert("event".into(), AttributeValue::S(inflate(bytes.as_ref())?));
        }
        serde_dynamo::from_item(item).map_err(StoreError::backend)
    }

    fn into_record(self) -> Result<DeliveryRecord, StoreError> {
        Ok(DeliveryRecord {
            id: self.id,
            hook_id: self.hook_id,
            event: serde_json::from_str(&self.event).map_err(StoreError::backend)?,
            event_truncated: self.event_size.is_some(),
            event_size: self.event_size,
            event_sha256: self.event_sha256,
            status: self.status,
            created_at: self.created_at,
            updated_at: self.updated_at,
            attempts: self.attempts,
        })
    }
}

/// The projection of a record item that [`DeliveryLog::summarize_window`] reads.
#[derive(Deserialize)]
struct StoredSummary {
    id: Uuid,
    created_at: i64,
    status: DeliveryStatus,
    attempts: Vec<Attempt>,
}

/// The part of a pointer item (ids from before they carried their time) that `get` needs.
#[derive(Deserialize)]
struct StoredPointer {
    created_at: i64,
    expires_at_ms: i64,
}

fn string(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn number(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn to_value<T: serde::Serialize + ?Sized>(value: &T) -> Result<AttributeValue, StoreError> {
    serde_dynamo::to_attribute_value(value).map_err(StoreError::backend)
}

fn hook_pk(hook_id: Uuid) -> String {
    format!("hook#{}", hook_id.hyphenated())
}

fn record_key(key: DeliveryKey) -> Item {
    HashMap::from([
        ("pk".to_owned(), string(hook_pk(key.hook_id))),
        (
            "sk".to_owned(),
            string(sort_key(key.created_at, key.delivery_id)),
        ),
    ])
}

fn pointer_key(hook_id: Uuid, delivery_id: Uuid) -> Item {
    HashMap::from([
        (
            "pk".to_owned(),
            string(format!("delivery#{}", delivery_id.hyphenated())),
        ),
        ("sk".to_owned(), string(hook_pk(hook_id))),
    ])
}

#[async_trait]
impl DeliveryLog for DynamoDeliveryLog {
    async fn claim_attempt(
        &self,
        key: DeliveryKey,
        asked: u32,
        ttl: Duration,
    ) -> Result<u32, StoreError> {
        check_created_at(key.created_at)?;
        let expires = Expiry::at(expiry(self.clock.now_millis(), ttl));
        // On the record's item, which this may create bare. One conditional write takes the
        // number asked for; when a number at or above it was handed out, an increment takes the
        // next. Attempt 1 is the first copy's from the start: a claim never gets it.
        let update = |expression: &str| {
            self.client
                .update_item()
                .table_name(&self.table)
                .set_key(Some(record_key(key)))
                .update_expression(format!(
                    "SET #claimed = {expression}, \
                     expires_at = if_not_exists(expires_at, :exp), \
                     expires_at_ms = if_not_exists(expires_at_ms, :exp_ms)"
                ))
                .expression_attribute_names("#claimed", "claimed")
                .expression_attribute_values(":exp", number(expires.seconds))
                .expression_attribute_values(":exp_ms", number(expires.millis))
                .return_values(ReturnValue::UpdatedNew)
        };
        let first = update(":n")
            .condition_expression("attribute_not_exists(#claimed) OR #claimed < :n")
            .expression_attribute_values(":n", number(asked.max(2)))
            .send()
            .await;
        let attributes = match first {
            Ok(output) => output.attributes,
            Err(err) if conditional_check_failed(&err) => {
                update("#claimed + :one")
                    .expression_attribute_values(":one", number(1))
                    .send()
                    .await
                    .map_err(crate::aws::store_error)?
                    .attributes
            }
            Err(err) => return Err(crate::aws::store_error(err)),
        };
        claimed_number(&attributes.unwrap_or_default())
    }

    async fn claim_resend(&self, key: DeliveryKey, seen: i64) -> Result<bool, StoreError> {
        // Later than `seen` even within its millisecond, so that a second claim of the same read
        // fails its condition.
        let now = self.clock.now_millis().max(seen.saturating_add(1));
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(record_key(key)))
            .update_expression("SET #status = :pending, #updated_at = :now")
            .condition_expression(
                "attribute_exists(#id) AND #updated_at = :seen AND #status <> :pending",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#updated_at", "updated_at")
            .expression_attribute_names("#id", "id")
            .expression_attribute_values(":pending", to_value(&DeliveryStatus::Pending)?)
            .expression_attribute_values(":now", number(now))
            .expression_attribute_values(":seen", number(seen))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            // Claimed by another replay, or changed by an attempt since it was read.
            Err(err)
                if matches!(
                    err.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(err) => Err(crate::aws::store_error(err)),
        }
    }

    async fn record_attempt(
        &self,
        key: DeliveryKey,
        event: &Event,
        attempt: Attempt,
        status: DeliveryStatus,
        ttl: Duration,
        then: Then,
    ) -> Result<Option<u32>, StoreError> {
        check_created_at(key.created_at)?;
        let now = self.clock.now_millis();
        let expires = Expiry::at(expiry(now, ttl));
        let appended = self
            .append(key, event, attempt.capped(), status, (now, expires), then)
            .await?;
        self.trim(key, appended.len).await?;
        Ok(appended.reserved)
    }

    async fn get(
        &self,
        hook_id: Uuid,
        delivery_id: Uuid,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let now = self.clock.now_millis();
        let created_at = match time_of(delivery_id) {
            Some(created_at) => created_at,
            // An id from before ids carried their time: its pointer has it.
            None => {
                let Some(pointer) = self.read(pointer_key(hook_id, delivery_id)).await? else {
                    return Ok(None);
                };
                let pointer: StoredPointer =
                    serde_dynamo::from_item(pointer).map_err(StoreError::backend)?;
                if pointer.expires_at_ms <= now {
                    return Ok(None);
                }
                pointer.created_at
            }
        };
        let Some(item) = self
            .read(record_key(DeliveryKey {
                hook_id,
                delivery_id,
                created_at,
            }))
            .await?
        else {
            return Ok(None);
        };
        if !item.contains_key("attempts") {
            // A bare claim: nothing recorded yet.
            return Ok(None);
        }
        let stored = StoredRecord::from_item(item)?;
        if stored.expires_at_ms <= now {
            return Ok(None);
        }
        stored.into_record().map(Some)
    }

    async fn list(
        &self,
        hook_id: Uuid,
        size: usize,
        max_bytes: usize,
        after: Option<DeliveryPageToken>,
    ) -> Result<DeliveryPage, StoreError> {
        let now = self.clock.now_millis();
        // One match more than the page tells whether another page exists.
        let wanted = size.saturating_add(1);
        let mut budget = PageBudget::new(size, max_bytes);
        let mut matched: Vec<DeliveryRecord> = Vec::new();
        let mut start_key: Option<Item> = None;
        // Each Query returns at most 1 MB; what is past the page's budget is dropped as it comes.
        let stop = 'read: loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .scan_index_forward(false)
                .expression_attribute_values(":pk", string(hook_pk(hook_id)))
                // A bare claim has no attempts yet.
                .filter_expression("expires_at_ms > :now AND attribute_exists(attempts)")
                .expression_attribute_values(":now", number(now))
                .limit(i32::try_from(wanted - matched.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start_key.take());
            // The token bounds the sort key rather than serving as ExclusiveStartKey: the same
            // thing for a newest-first read, and it needs nothing from the token but its position.
            query = match after {
                Some(token) => query
                    .key_condition_expression("pk = :pk AND sk < :after")
                    .expression_attribute_values(":after", string(token.sort_key())),
                None => query.key_condition_expression("pk = :pk"),
            };
            let output = query.send().await.map_err(crate::aws::store_error)?;
            for item in output.items.unwrap_or_default() {
                let record = StoredRecord::from_item(item)?.into_record()?;
                match budget.admit(json_len(&record)?) {
                    Admit::Take => matched.push(record),
                    stop => break 'read Some(stop),
                }
            }
            start_key = output.last_evaluated_key;
            if start_key.is_none() {
                break None;
            }
        };
        Ok(PageBudget::page(matched, stop))
    }

    async fn list_window(
        &self,
        hook_id: Uuid,
        window: &DeliveryWindow,
        size: usize,
        after: Option<DeliveryPageToken>,
    ) -> Result<DeliveryPage, StoreError> {
        let items = self.query_window(hook_id, window, size, after).await?;
        Ok(page_of(items, size))
    }

    async fn summarize_window(
        &self,
        hook_id: Uuid,
        window: &DeliveryWindow,
        size: usize,
        after: Option<DeliveryPageToken>,
    ) -> Result<DeliverySummaryPage, StoreError> {
        let items = self.query_window(hook_id, window, size, after).await?;
        Ok(summary_page_of(items, size))
    }
}

/// What a window Query reads of each item: the whole record for [`DeliveryLog::list_window`]; for
/// [`DeliveryLog::summarize_window`] a projection, so that the event never leaves DynamoDB and
/// each item is cut down to its summary as it arrives (attempts come whole: a projection cannot
/// name the fields of every list element), a few dozen bytes per attempt.
trait WindowItem: Sized {
    /// The attributes to read; empty for all of them.
    const PROJECTION: &'static [&'static str];
    fn from_item(item: Item) -> Result<Self, StoreError>;
    /// Its place in the window, as `sort_key` spells it.
    fn sort_key(&self) -> String;
}

impl WindowItem for DeliveryRecord {
    const PROJECTION: &'static [&'static str] = &[];

    fn from_item(item: Item) -> Result<DeliveryRecord, StoreError> {
        StoredRecord::from_item(item)?.into_record()
    }

    fn sort_key(&self) -> String {
        sort_key(self.created_at, self.id)
    }
}

impl WindowItem for DeliverySummary {
    const PROJECTION: &'static [&'static str] = &["id", "created_at", "status", "attempts"];

    fn from_item(item: Item) -> Result<DeliverySummary, StoreError> {
        let stored: StoredSummary = serde_dynamo::from_item(item).map_err(StoreError::backend)?;
        Ok(DeliverySummary {
            id: stored.id,
            created_at: stored.created_at,
            status: stored.status,
            attempts: stored.attempts.iter().map(AttemptSummary::from).collect(),
        })
    }

    fn sort_key(&self) -> String {
        sort_key(self.created_at, self.id)
    }
}

/// Items a window Query evaluates per request at least: a filter may drop most of them, and asking
/// for just the few still wanted would then take many round trips.
const WINDOW_READ: i32 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_deflated_where_it_pays_and_come_back_whole() {
        let small = r#"{"source":"crud"}"#.to_owned();
        assert!(matches!(StoredEvent::of(small), StoredEvent::Text(_)));
        let kong = serde_json::json!({"source": "crud", "event": "consumers", "data": {
            "operation": "update",
            "entity": {"username": "ana", "custom_id": "c-1", "tags": ["gold", "eu"],
                       "created_at": 1_795_400_000, "updated_at": 1_795_400_100},
            "old_entity": {"username": "ana", "custom_id": "c-1", "tags": ["gold"],
                           "created_at": 1_795_400_000, "updated_at": 1_795_400_000}}})
        .to_string();
        let StoredEvent::Deflated(bytes) = StoredEvent::of(kong.clone()) else {
            panic!("a Kong event is worth deflating");
        };
        assert!(bytes.len() < kong.len());
        assert_eq!(inflate(&bytes).unwrap(), kong);
    }

    #[test]
    fn an_event_that_inflates_past_the_logs_limit_is_an_error() {
        let huge = "x".repeat(crate::limits::MAX_LOGGED_EVENT_BYTES + 10);
        let bomb = deflate(huge.as_bytes()).unwrap();
        assert!(inflate(&bomb).is_err());
    }

    #[test]
    fn ttl_seconds_never_come_before_the_expiry() {
        assert_eq!(Expiry::at(5_000).seconds, 5);
        assert_eq!(Expiry::at(5_001).seconds, 6);
        assert_eq!(Expiry::at(5_999).seconds, 6);
    }
}

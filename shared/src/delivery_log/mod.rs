//! The `DeliveryLog` port: every attempt to deliver an event to a hook, kept for a while (spec §8).
//!
//! A *delivery* is one (event, hook) pair with a stable id; each try at sending it is an
//! [`Attempt`] appended to its [`DeliveryRecord`]. Only attempted deliveries are recorded: an event
//! dropped by `snooze` or `on_change` never reaches a handler and leaves no record. Records expire a
//! configurable time after their last update, and an expired record is never returned, even before
//! the back end has purged it. Listings run newest first, keyed on the delivery's time
//! (`created_at`): its event's timestamp, which its id carries ([`timed_id`]), so that the log finds
//! a record from its id alone and a redelivered event gets the same id.
//!
//! **Attempt numbers** ([`DeliveryLog::claim_attempt`]): each record keeps the highest number
//! handed out. A delivery's first copy sends its number without asking (attempt 1, or the number
//! the previous attempt's record reserved for its retry), so a typical attempt costs one write,
//! its record; a copy that may not be the first (a message received again, or sent twice) claims
//! its number first and goes out above every number handed out.
//!
//! Two adapters implement the port: [`sqlite::SqliteDeliveryLog`] (embedded) and
//! [`dynamodb::DynamoDeliveryLog`] (deployed); both pass the same contract suite in `tests/`.

pub mod dynamodb;
pub mod sqlite;

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::events::Event;
use crate::limits::{LOGGED_EVENT_PREFIX_BYTES, MAX_LOGGED_EVENT_BYTES};
use crate::store::StoreError;

/// Attempts kept per record; older ones are dropped. Twenty attempts with capped bodies and errors
/// stay around 100 KB, which leaves room for the event under DynamoDB's 400 KB item limit.
pub const MAX_ATTEMPTS_KEPT: usize = 20;

/// Longest response body kept per attempt, in bytes. Callers cap what they read already; the log
/// caps again so that no caller can push a record past the back end's size limit.
pub const MAX_RESPONSE_BODY: usize = 4096;

/// Longest error message kept per attempt, in bytes.
pub(crate) const MAX_ERROR: usize = 1024;

/// The largest `created_at` whose sort key keeps 13 digits (the year 2286).
const MAX_CREATED_AT: i64 = 9_999_999_999_999;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// The last attempt failed and the delivery will be tried again.
    Pending,
    /// The target accepted it.
    Delivered,
    /// Given up: the failure was not retryable, or the retries ran out.
    Failed,
    /// Never sent: the hook was paused or disabled when the event came (the record's error says
    /// which); a replay sends it once the hook is enabled again.
    NotSent,
}

/// One try at sending a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first try, counting up across retries.
    pub number: u32,
    /// When the try started, in Unix milliseconds.
    pub at: i64,
    /// The HTTP status of the response, when there was one.
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// Why the try failed (transport error, timeout, refused target, …), when it did.
    pub error: Option<String>,
    /// The start of the response body; at most [`MAX_RESPONSE_BODY`] bytes are kept.
    pub response_body: Option<String>,
}

impl Attempt {
    /// This attempt with its body and error cut to [`MAX_RESPONSE_BODY`] and [`MAX_ERROR`] bytes.
    pub fn capped(mut self) -> Attempt {
        if let Some(body) = &mut self.response_body {
            truncate_at_char(body, MAX_RESPONSE_BODY);
        }
        if let Some(error) = &mut self.error {
            truncate_at_char(error, MAX_ERROR);
        }
        self
    }
}

/// Cuts `text` to at most `max` bytes without splitting a character.
fn truncate_at_char(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// What the log keeps of an event larger than [`MAX_LOGGED_EVENT_BYTES`] besides its capped copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventDigest {
    /// The whole event's size, as JSON text, in bytes.
    pub size: u64,
    /// The SHA-256 of that JSON text, lowercase hex.
    pub(crate) sha256: String,
}

/// The event as the log keeps it: whole when its JSON text is at most [`MAX_LOGGED_EVENT_BYTES`],
/// else a capped copy (id, source, event and timestamp as they were, `data` the first
/// [`LOGGED_EVENT_PREFIX_BYTES`] of the data's JSON text as a string) with the whole event's
/// [`EventDigest`].
pub(crate) fn logged_event(event: &Event) -> Result<(Event, Option<EventDigest>), StoreError> {
    use sha2::Digest as _;
    let text = serde_json::to_string(event).map_err(StoreError::backend)?;
    if text.len() <= MAX_LOGGED_EVENT_BYTES {
        return Ok((event.clone(), None));
    }
    let mut data = serde_json::to_string(&event.data).map_err(StoreError::backend)?;
    truncate_at_char(&mut data, LOGGED_EVENT_PREFIX_BYTES);
    let digest = EventDigest {
        size: text.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(text.as_bytes())),
    };
    let capped = Event {
        id: event.id,
        source: event.source.clone(),
        event: event.event.clone(),
        data: serde_json::Value::String(data),
        timestamp: event.timestamp,
    };
    Ok((capped, Some(digest)))
}

/// One delivery = one (event, hook) pair, with a stable id; attempts are appended as they happen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The delivery id, the same across retries.
    pub id: Uuid,
    pub hook_id: Uuid,
    /// The event as delivered, kept so that a failed delivery can be sent again; for an event
    /// over [`MAX_LOGGED_EVENT_BYTES`], only a capped copy (see [`logged_event`]).
    pub event: Event,
    /// True when `event` is a capped copy: its `data` is the start of the data's JSON text, and
    /// the delivery cannot be sent again from the log.
    #[serde(default)]
    pub event_truncated: bool,
    /// With `event_truncated`: the whole event's size as JSON text, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_size: Option<u64>,
    /// With `event_truncated`: the SHA-256 of the whole event's JSON text, lowercase hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_sha256: Option<String>,
    /// Set by the latest attempt recorded.
    pub status: DeliveryStatus,
    /// The delivery's time, in Unix milliseconds: [`time_of`] its id (the key's `created_at`).
    pub created_at: i64,
    /// When the last attempt was recorded, in Unix milliseconds.
    pub updated_at: i64,
    /// Oldest first; at most the last [`MAX_ATTEMPTS_KEPT`].
    pub attempts: Vec<Attempt>,
}

/// Which delivery an attempt belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryKey {
    pub hook_id: Uuid,
    /// Made by [`timed_id`] (ids of other versions were made before delivery ids carried their
    /// time; their records are still found, see the adapters).
    pub delivery_id: Uuid,
    /// The delivery's time in Unix milliseconds, between 0 and 9999999999999: [`time_of`] its id.
    /// It orders the listing and is part of the DynamoDB sort key.
    pub created_at: i64,
}

impl DeliveryKey {
    /// The key of the delivery `delivery_id` (made by [`timed_id`]) of the hook `hook_id`.
    pub fn new(hook_id: Uuid, delivery_id: Uuid) -> Result<DeliveryKey, StoreError> {
        let created_at = time_of(delivery_id).ok_or_else(|| {
            StoreError::backend(format!("{delivery_id} is not a delivery id with its time"))
        })?;
        Ok(DeliveryKey {
            hook_id,
            delivery_id,
            created_at,
        })
    }
}

/// The version of the UUIDs [`timed_id`] makes: 8, RFC 9562's custom layout.
const TIMED_VERSION: usize = 8;

/// The id `name` (any UUID, typically a version 5 of what the delivery is) with the time `at`
/// (Unix ms, clamped to what a sort key holds) in its first 48 bits, as a version 8 UUID: the
/// layout of version 7, so ids sort by time, with the name's bits where version 7 has random ones,
/// so the same name and time always give the same id. [`time_of`] reads the time back.
pub fn timed_id(name: Uuid, at: i64) -> Uuid {
    let at = at.clamp(0, MAX_CREATED_AT) as u64;
    let mut bytes = *name.as_bytes();
    bytes[..6].copy_from_slice(&at.to_be_bytes()[2..]);
    Uuid::new_v8(bytes)
}

/// The time [`timed_id`] put in `id`; `None` for ids it did not make.
pub fn time_of(id: Uuid) -> Option<i64> {
    if id.get_version_num() != TIMED_VERSION {
        return None;
    }
    let mut millis = [0u8; 8];
    millis[2..].copy_from_slice(&id.as_bytes()[..6]);
    Some(i64::from_be_bytes(millis)).filter(|at| *at <= MAX_CREATED_AT)
}

/// What follows an attempt that [`DeliveryLog::record_attempt`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// No other attempt, for now: delivered, given up, or never sent.
    Done,
    /// A retry: the record reserves its number.
    Retry,
}

/// One page of a hook's deliveries, newest first, and the token of the next page if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryRecord>,
    pub next: Option<DeliveryPageToken>,
    /// True when the page ended before its count because its records' JSON reached the byte
    /// budget of [`DeliveryLog::list`]; `next` then goes on from its last record.
    pub truncated_by_size: bool,
}

/// What the stats need of one delivery: no event, no response bodies, no error texts, so that
/// reading a window of them costs a few dozen bytes per attempt whatever the events weigh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySummary {
    pub id: Uuid,
    pub created_at: i64,
    pub status: DeliveryStatus,
    /// Oldest first, as in the record.
    pub attempts: Vec<AttemptSummary>,
}

/// What the stats need of one [`Attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct AttemptSummary {
    pub number: u32,
    pub at: i64,
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// The attempt has an error (its text is not read).
    pub errored: bool,
}

impl From<&Attempt> for AttemptSummary {
    fn from(attempt: &Attempt) -> AttemptSummary {
        AttemptSummary {
            number: attempt.number,
            at: attempt.at,
            status: attempt.status,
            latency_ms: attempt.latency_ms,
            errored: attempt.error.is_some(),
        }
    }
}

/// A page of [`DeliverySummary`]s of a window, oldest first, and the token of the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySummaryPage {
    pub items: Vec<DeliverySummary>,
    pub next: Option<DeliveryPageToken>,
}

/// Fills a listing page up to a count and a byte budget: a record is taken while the page holds
/// fewer than `size` and its JSON still fits the budget; the first record is always taken, so that
/// every page makes progress (one record is bounded anyway: a capped event, capped attempts).
#[derive(Debug)]
pub(crate) struct PageBudget {
    size: usize,
    max_bytes: usize,
    taken: usize,
    bytes: usize,
}

/// What [`PageBudget::admit`] says of the next record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    Take,
    /// The page holds `size` records; the record shows that another page follows.
    Full,
    /// The record would take the page past the byte budget: it starts the next page.
    OverBudget,
}

impl PageBudget {
    pub(crate) fn new(size: usize, max_bytes: usize) -> PageBudget {
        PageBudget {
            size,
            max_bytes,
            taken: 0,
            bytes: 0,
        }
    }

    /// Whether a record whose JSON is `len` bytes joins the page (counted if it does).
    pub(crate) fn admit(&mut self, len: usize) -> Admit {
        if self.taken >= self.size {
            return Admit::Full;
        }
        if self.taken > 0 && self.bytes.saturating_add(len) > self.max_bytes {
            return Admit::OverBudget;
        }
        self.taken += 1;
        self.bytes = self.bytes.saturating_add(len);
        Admit::Take
    }

    /// The page of `items` (those taken) once reading stopped on `stop`, or ran out (`None`).
    pub(crate) fn page(items: Vec<DeliveryRecord>, stop: Option<Admit>) -> DeliveryPage {
        let next = match (items.last(), stop) {
            (Some(last), Some(Admit::Full | Admit::OverBudget)) => {
                Some(DeliveryPageToken::after(last))
            }
            _ => None,
        };
        DeliveryPage {
            items,
            next,
            truncated_by_size: stop == Some(Admit::OverBudget),
        }
    }
}

/// The length of `record`'s JSON text, as the listing serialises it, without building the text.
pub(crate) fn json_len(record: &DeliveryRecord) -> Result<usize, StoreError> {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, record).map_err(StoreError::backend)?;
    Ok(count.0)
}

/// Which deliveries [`DeliveryLog::list_window`] returns: those of one hook whose time is in a
/// time range, whose status is one of a set (what a replay resends, spec §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryWindow {
    /// The earliest delivery time (`created_at`) included, in Unix ms.
    pub from: i64,
    /// The latest delivery time included, in Unix ms.
    pub to: i64,
    /// Only deliveries whose current status is one of these; none when empty.
    pub statuses: Vec<DeliveryStatus>,
}

impl DeliveryWindow {
    /// The window's bounds as sort keys, both inclusive, or `None` when it holds no sort key at
    /// all (`from > to`, or entirely outside what a sort key can hold).
    pub(crate) fn sort_key_range(&self) -> Option<(String, String)> {
        let from = self.from.max(0);
        let to = self.to.min(MAX_CREATED_AT);
        // The nil and max ids are the extremes of the id part: every id sorts between them.
        (from <= to).then(|| (sort_key(from, Uuid::nil()), sort_key(to, Uuid::max())))
    }
}

/// An opaque position in a listing (newest first) or a window (oldest first): the last delivery
/// of the previous page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryPageToken {
    pub created_at: i64,
    pub delivery_id: Uuid,
}

impl DeliveryPageToken {
    /// The position right after `record`.
    pub fn after(record: &DeliveryRecord) -> DeliveryPageToken {
        DeliveryPageToken {
            created_at: record.created_at,
            delivery_id: record.id,
        }
    }

    /// The token as URL-safe text: base64url of the sort key.
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sort_key(self.created_at, self.delivery_id))
    }

    /// Parses a token made by [`DeliveryPageToken::encode`]; anything else is an error message.
    pub fn decode(token: &str) -> Result<DeliveryPageToken, &'static str> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| "bad base64 encoding")?;
        let text = std::str::from_utf8(&bytes).map_err(|_| "malformed token")?;
        let (millis, id) = text.split_once('#').ok_or("malformed token")?;
        if millis.len() != 13 || !millis.bytes().all(|b| b.is_ascii_digit()) {
            return Err("malformed token");
        }
        let created_at = millis.parse::<i64>().map_err(|_| "malformed token")?;
        let delivery_id = Uuid::try_parse(id).map_err(|_| "malformed token")?;
        // Only the canonical spelling round-trips, so that a token names one position exactly.
        if sort_key(created_at, delivery_id) != text {
            return Err("malformed token");
        }
        Ok(DeliveryPageToken {
            created_at,
            delivery_id,
        })
    }

    /// The sort key this token stands for.
    pub(crate) fn sort_key(&self) -> String {
        sort_key(self.created_at, self.delivery_id)
    }
}

/// `<created_at, 13 digits>#<delivery id>`: sorts as text in (time, id) order, which is how both
/// adapters page (descending).
pub(crate) fn sort_key(created_at: i64, delivery_id: Uuid) -> String {
    format!("{created_at:013}#{}", delivery_id.hyphenated())
}

/// Checks what the sort key needs of `created_at`.
pub(crate) fn check_created_at(created_at: i64) -> Result<(), StoreError> {
    if (0..=MAX_CREATED_AT).contains(&created_at) {
        Ok(())
    } else {
        Err(StoreError::backend(format!(
            "created_at {created_at} is outside 0..={MAX_CREATED_AT}"
        )))
    }
}

/// When a record updated at `now` (Unix ms) expires, in Unix ms.
pub(crate) fn expiry(now: i64, ttl: Duration) -> i64 {
    now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

/// The page of the first `size` of `items`, which were fetched one past the page (`size + 1`) to
/// tell whether another page follows.
pub(crate) fn page_of(mut items: Vec<DeliveryRecord>, size: usize) -> DeliveryPage {
    let more = items.len() > size;
    items.truncate(size);
    let next = match items.last() {
        Some(last) if more => Some(DeliveryPageToken::after(last)),
        _ => None,
    };
    DeliveryPage {
        items,
        next,
        truncated_by_size: false,
    }
}

/// The summary page of the first `size` of `items`, fetched one past the page like [`page_of`].
pub(crate) fn summary_page_of(mut items: Vec<DeliverySummary>, size: usize) -> DeliverySummaryPage {
    let more = items.len() > size;
    items.truncate(size);
    let next = match items.last() {
        Some(last) if more => Some(DeliveryPageToken {
            created_at: last.created_at,
            delivery_id: last.id,
        }),
        _ => None,
    };
    DeliverySummaryPage { items, next }
}

/// Drops the oldest attempts beyond [`MAX_ATTEMPTS_KEPT`].
pub(crate) fn keep_latest(attempts: &mut Vec<Attempt>) {
    let excess = attempts.len().saturating_sub(MAX_ATTEMPTS_KEPT);
    attempts.drain(..excess);
}

/// The log of delivery attempts.
#[async_trait]
pub trait DeliveryLog: Send + Sync + 'static {
    /// Appends `attempt` to the delivery `key` (creating the record on its first attempt) and sets
    /// the delivery's status; the record expires `ttl` after this update. Concurrent calls for one
    /// delivery all land: none overwrites another's attempt. `event` is stored on the first call
    /// and ignored afterwards. With [`Then::Retry`] the same write reserves the retry's number
    /// and returns it: the attempt's number + 1 when no copy has claimed it, else the next above
    /// every number handed out (see [`DeliveryLog::claim_attempt`]). An entry that was never
    /// sent is numbered 0.
    async fn record_attempt(
        &self,
        key: DeliveryKey,
        event: &Event,
        attempt: Attempt,
        status: DeliveryStatus,
        ttl: Duration,
        then: Then,
    ) -> Result<Option<u32>, StoreError>;

    /// The delivery `delivery_id` of the hook `hook_id`, unless unknown or expired.
    async fn get(
        &self,
        hook_id: Uuid,
        delivery_id: Uuid,
    ) -> Result<Option<DeliveryRecord>, StoreError>;

    /// Up to `size` unexpired deliveries of the hook, newest first, after `after` when given, and
    /// no more than fit in `max_bytes` of their JSON (at least one, whatever its size): a page cut
    /// by the budget says `truncated_by_size` and its `next` goes on from its last record. Records
    /// past the page are not held in memory, so a page costs about `max_bytes` whatever `size`.
    async fn list(
        &self,
        hook_id: Uuid,
        size: usize,
        max_bytes: usize,
        after: Option<DeliveryPageToken>,
    ) -> Result<DeliveryPage, StoreError>;

    /// Up to `size` unexpired deliveries of the hook inside `window`, oldest first (the order in
    /// which they were first sent), after `after` when given. A token names a position, so one
    /// from a listing, or naming no stored delivery, pages on from there all the same.
    async fn list_window(
        &self,
        hook_id: Uuid,
        window: &DeliveryWindow,
        size: usize,
        after: Option<DeliveryPageToken>,
    ) -> Result<DeliveryPage, StoreError>;

    /// What [`DeliveryLog::list_window`] would return, as [`DeliverySummary`]s: the same
    /// deliveries, order and paging, without reading events, response bodies or error texts.
    async fn summarize_window(
        &self,
        hook_id: Uuid,
        window: &DeliveryWindow,
        size: usize,
        after: Option<DeliveryPageToken>,
    ) -> Result<DeliverySummaryPage, StoreError>;

    /// Claims attempt `number` of the delivery `key` for a copy of it that may not be the first:
    /// SQS hands a message out again while the first receive still runs (a visibility timeout
    /// shorter than a slow target) or after it died, a redelivered event fans out again, and a
    /// send whose reply was lost may have queued a message twice. The first copy sends its
    /// number unclaimed, so attempt 1 counts as handed out from the start: the claim gets
    /// `number` when it is above every number handed out, else the next one above them, so a
    /// copy goes out as a later attempt, never as one the target saw. The claim expires `ttl`
    /// after this call, as records do; it makes no record (listings skip a bare claim).
    async fn claim_attempt(
        &self,
        key: DeliveryKey,
        number: u32,
        ttl: Duration,
    ) -> Result<u32, StoreError>;

    /// Claims the settled delivery `key` for one resend: sets it [`DeliveryStatus::Pending`] if
    /// it is still as the caller read it (its `updated_at` is `seen` and it is not pending).
    /// True when this call claimed it; false when it changed meanwhile (another replay claimed
    /// it, or an attempt landed), in which case the caller must not queue it. So of concurrent
    /// replays, one queues each delivery, and the attempt number it sends (its last + 1) is not
    /// sent by another. The attempt the resend records settles the status again.
    async fn claim_resend(&self, key: DeliveryKey, seen: i64) -> Result<bool, StoreError> {
        let _ = (key, seen);
        Err(StoreError::backend(
            "this delivery log cannot claim resends",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timed_ids_carry_their_time_and_sort_by_it() {
        let name = Uuid::new_v4();
        let id = timed_id(name, 1_700_000_000_123);
        assert_eq!(time_of(id), Some(1_700_000_000_123));
        assert_eq!(id, timed_id(name, 1_700_000_000_123));
        assert_ne!(id, timed_id(Uuid::new_v4(), 1_700_000_000_123));
        assert!(id < timed_id(name, 1_700_000_000_124));
        assert_eq!(time_of(timed_id(name, -5)), Some(0));
        assert_eq!(time_of(timed_id(name, i64::MAX)), Some(MAX_CREATED_AT));
        assert_eq!(time_of(name), None);
        assert_eq!(time_of(Uuid::new_v5(&Uuid::nil(), b"x")), None);
    }

    #[test]
    fn tokens_round_trip_and_order_like_time() {
        let token = DeliveryPageToken {
            created_at: 1_700_000_000_123,
            delivery_id: Uuid::new_v4(),
        };
        assert_eq!(DeliveryPageToken::decode(&token.encode()), Ok(token));
        assert!(sort_key(999, Uuid::nil()) < sort_key(1_000, Uuid::nil()));
    }

    #[test]
    fn window_bounds_hold_every_id_of_their_times() {
        let window = DeliveryWindow {
            from: 1_000,
            to: 2_000,
            statuses: vec![DeliveryStatus::Failed],
        };
        let (lo, hi) = window.sort_key_range().unwrap();
        let id = Uuid::new_v4();
        assert!(lo <= sort_key(1_000, id) && sort_key(1_000, id) <= hi);
        assert!(lo <= sort_key(2_000, id) && sort_key(2_000, id) <= hi);
        assert!(sort_key(999, Uuid::max()) < lo && hi < sort_key(2_001, Uuid::nil()));
        let empty = DeliveryWindow {
            from: 2_001,
            ..window.clone()
        };
        assert_eq!(empty.sort_key_range(), None);
        let clamped = DeliveryWindow {
            from: -5,
            to: i64::MAX,
            ..window
        };
        assert_eq!(
            clamped.sort_key_range(),
            Some((
                sort_key(0, Uuid::nil()),
                sort_key(MAX_CREATED_AT, Uuid::max())
            ))
        );
    }

    #[test]
    fn forged_tokens_are_errors() {
        let encode = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        let id = Uuid::new_v4();
        for forged in [
            "!!!".to_owned(),
            encode(""),
            encode("no separator"),
            encode(&format!("12#{id}")),
            encode(&format!("+700000000000#{id}")),
            encode("1700000000000#not-a-uuid"),
            encode(&format!("1700000000000#{}", id.simple())),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
        ] {
            assert!(DeliveryPageToken::decode(&forged).is_err(), "{forged}");
        }
    }

    #[test]
    fn caps_cut_at_character_boundaries() {
        let attempt = Attempt {
            number: 1,
            at: 0,
            status: Some(500),
            latency_ms: 1,
            error: Some("é".repeat(MAX_ERROR)),
            response_body: Some("x".repeat(MAX_RESPONSE_BODY + 10)),
        }
        .capped();
        assert_eq!(attempt.response_body.unwrap().len(), MAX_RESPONSE_BODY);
        let error = attempt.error.unwrap();
        assert!(error.len() <= MAX_ERROR && error.chars().all(|c| c == 'é'));
    }

    #[test]
    fn keeps_the_latest_attempts() {
        let mut attempts: Vec<Attempt> = (1..=25)
            .map(|number| Attempt {
                number,
                at: 0,
                status: None,
                latency_ms: 0,
                error: None,
                response_body: None,
            })
            .collect();
        keep_latest(&mut attempts);
        assert_eq!(attempts.len(), MAX_ATTEMPTS_KEPT);
        assert_eq!(attempts[0].number, 6);
    }
}

//! The embedded [`DeliveryLog`] adapter: delivery records in a SQLite table.
//!
//! Each delivery is one row keyed on `(hook_id, id)`: the [`DeliveryRecord`] as JSON in `body`,
//! plus the sort key `sk` (`<created_at>#<id>`, see [`super::sort_key`]) that listings order and
//! page on, and `expires_at` (Unix ms). An attempt is appended in one `IMMEDIATE` transaction that
//! reads, extends and writes the row, so concurrent appends (even from several processes) queue up
//! rather than overwrite each other. Reads skip expired rows; writes purge them now and then.
//! A window query ([`DeliveryLog::list_window`]) is a range on the `(hook_id, sk)` index; the
//! status, kept only in the JSON, is filtered on within that range. Its summaries
//! ([`DeliveryLog::summarize_window`]) are projected by SQLite's JSON functions in the query, and a
//! listing checks each row's `octet_length(body)` against its byte budget before fetching the body.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use uuid::Uuid;

use super::{
    check_created_at, expiry, keep_latest, logged_event, page_of, sort_key, summary_page_of, Admit,
    Attempt, DeliveryKey, DeliveryLog, DeliveryPage, DeliveryPageToken, DeliveryRecord,
    DeliveryStatus, DeliverySummary, DeliverySummaryPage, DeliveryWindow, PageBudget, Then,
};
use crate::clock::Clock;
use crate::events::Event;
use crate::sqlite::Database;
use crate::store::StoreError;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS deliveries (
        hook_id    TEXT NOT NULL,
        id         TEXT NOT NULL,
        sk         TEXT NOT NULL,     -- <created_at, 13 digits>#<id>: the listing order
        expires_at INTEGER NOT NULL,  -- Unix ms
        body       TEXT NOT NULL,     -- the DeliveryRecord as JSON
        PRIMARY KEY (hook_id, id)
    );
    CREATE INDEX IF NOT EXISTS deliveries_by_time ON deliveries (hook_id, sk);
    CREATE INDEX IF NOT EXISTS deliveries_by_expiry ON deliveries (expires_at);
    -- The highest attempt number handed out (DeliveryLog::claim_attempt), written with each
    -- record and by each claim (a claim may come before the record). `created_at` is unused.
    CREATE TABLE IF NOT EXISTS delivery_claims (
        hook_id    TEXT NOT NULL,
        id         TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        claimed    INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,  -- Unix ms
        PRIMARY KEY (hook_id, id)
    );
    CREATE INDEX IF NOT EXISTS delivery_claims_by_expiry ON delivery_claims (expires_at);
";

/// Hands out `?4` when it is above every number handed out for the delivery, else the next one
/// above them; returns the number. Run under the write lock, one statement decides.
const HAND_OUT: &str = "
    INSERT INTO delivery_claims (hook_id, id, created_at, claimed, expires_at)
    VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT (hook_id, id) DO UPDATE SET
        claimed = CASE WHEN claimed < excluded.claimed THEN excluded.claimed ELSE claimed + 1 END,
        expires_at = max(expires_at, excluded.expires_at)
    RETURNING claimed";

/// How often, at most, a write also deletes expired rows: often enough to bound the table, rarely
/// enough that the delete costs nothing noticeable.
const PURGE_INTERVAL_MS: i64 = 60_000;

/// [`DeliveryLog`] on a SQLite [`Database`].
#[derive(Clone)]
pub struct SqliteDeliveryLog {
    db: Database,
    /// When expired rows were last purged (Unix ms), shared by clones.
    last_purge: Arc<AtomicI64>,
    clock: Clock,
}

impl SqliteDeliveryLog {
    /// Wraps `db`, creating the table if it does not exist yet.
    pub async fn new(db: Database) -> Result<SqliteDeliveryLog, StoreError> {
        db.call(|conn| conn.execute_batch(SCHEMA))
            .await
            .map_err(StoreError::backend)?;
        Ok(SqliteDeliveryLog {
            db,
            last_purge: Arc::new(AtomicI64::new(0)),
            clock: Clock::system(),
        })
    }

    /// Reads the time from `clock` rather than the system clock (tests move it).
    pub fn with_clock(self, clock: Clock) -> SqliteDeliveryLog {
        SqliteDeliveryLog { clock, ..self }
    }

    /// True at most once per [`PURGE_INTERVAL_MS`], for whichever caller claims the slot.
    fn purge_due(&self, now: i64) -> bool {
        let last = self.last_purge.load(Ordering::Relaxed);
        now.saturating_sub(last) >= PURGE_INTERVAL_MS
            && self
                .last_purge
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// The window's rows in `T`'s shape, oldest first: up to `size + 1` of them, which tells
    /// whether another page exists.
    async fn query_window<T: WindowRow>(
        &self,
        hook_id: Uuid,
        window: &DeliveryWindow,
        size: usize,
        after: Option<DeliveryPageToken>,
    ) -> Result<Vec<T>, StoreError> {
        let Some((from, to)) = window.sort_key_range() else {
            return Ok(Vec::new());
        };
        let now = self.clock.now_millis();
        let after = after.map(|token| token.sort_key());
        // The statuses as a JSON array of their serialised names, which `json_each` spreads.
        let statuses = serde_json::to_string(&window.statuses).map_err(StoreError::backend)?;
        let limit = i64::try_from(size.saturating_add(1)).unwrap_or(i64::MAX);
        let sql = format!(
            "SELECT {} FROM deliveries
             WHERE hook_id = ?1 AND sk >= ?2 AND sk <= ?3
               AND (?4 IS NULL OR sk > ?4) AND expires_at > ?5
               AND json_extract(body, '$.status') IN (SELECT value FROM json_each(?6))
             ORDER BY sk ASC
             LIMIT ?7",
            T::COLUMNS
        );
        let rows = self
            .db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(
                    params![id_text(hook_id), from, to, after, now, statuses, limit],
                    T::read,
                )?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .map_err(StoreError::backend)?;
        rows.into_iter().map(T::finish).collect()
    }
}

fn id_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

fn parse(body: &str) -> Result<DeliveryRecord, StoreError> {
    serde_json::from_str(body).map_err(StoreError::backend)
}

#[async_trait]
impl DeliveryLog for SqliteDeliveryLog {
    async fn claim_attempt(
        &self,
        key: DeliveryKey,
        number: u32,
        ttl: Duration,
    ) -> Result<u32, StoreError> {
        check_created_at(key.created_at)?;
        let now = self.clock.now_millis();
        let expires_at = expiry(now, ttl);
        let purge = self.purge_due(now);
        let (hook_id, id) = (id_text(key.hook_id), id_text(key.delivery_id));
        // Attempt 1 is the first copy's from the start: a claim never gets it.
        let asked = number.max(2);
        self.db
            .write_relaxed(move |tx| {
                if purge {
                    tx.execute("DELETE FROM delivery_claims WHERE expires_at <= ?1", [now])?;
                }
                tx.query_row(
                    HAND_OUT,
                    params![hook_id, id, key.created_at, asked, expires_at],
                    |row| row.get::<_, u32>(0),
                )
            })
            .await
            .map_err(StoreError::backend)
    }

    async fn claim_resend(&self, key: DeliveryKey, seen: i64) -> Result<bool, StoreError> {
        let (hook_id, id) = (id_text(key.hook_id), id_text(key.delivery_id));
        // Later than `seen` even within its millisecond, so that a second claim of the same read
        // fails.
        let now = self.clock.now_millis().max(seen.saturating_add(1));
        let result = self
            .db
            // One transaction reads and writes: of two claims of one read, the second sees the
            // first's `updated_at`.
            .write_relaxed(move |tx| {
                let stored: Option<String> = tx
                    .query_row(
                        "SELECT body FROM deliveries
                         WHERE hook_id = ?1 AND id = ?2 AND expires_at > ?3",
                        params![hook_id, id, now],
                        |row| row.get(0),
                    )
                    .optional()?;
                let mut record = match stored.as_deref().map(parse).transpose() {
                    Ok(Some(record)) => record,
                    Ok(None) => return Ok(Ok(false)),
                    Err(err) => return Ok(Err(err)),
                };
                if record.updated_at != seen || record.status == DeliveryStatus::Pending {
                    return Ok(Ok(false));
                }
                record.status = DeliveryStatus::Pending;
                record.updated_at = now;
                let body = match serde_json::to_string(&record) {
                    Ok(body) => body,
                    Err(err) => return Ok(Err(StoreError::backend(err))),
                };
                tx.execute(
                    "UPDATE deliveries SET body = ?3 WHERE hook_id = ?1 AND id = ?2",
                    params![hook_id, id, body],
                )?;
                Ok(Ok(true))
            })
            .await
            .map_err(StoreError::backend)?;
        result
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
        let attempt = attempt.capped();
        let number = attempt.number;
        let now = self.clock.now_millis();
        let expires_at = expiry(now, ttl);
        let purge = self.purge_due(now);
        // Built here rather than in the transaction only because `event` is borrowed; it is
        // written only when the delivery is new.
        let (event, digest) = logged_event(event)?;
        let fresh = DeliveryRecord {
            id: key.delivery_id,
            hook_id: key.hook_id,
            event,
            event_truncated: digest.is_some(),
            event_size: digest.as_ref().map(|d| d.size),
            event_sha256: digest.map(|d| d.sha256),
            status,
            created_at: key.created_at,
            updated_at: now,
            attempts: Vec::new(),
        };
        let (hook_id, id) = (id_text(key.hook_id), id_text(key.delivery_id));
        let sk = sort_key(key.created_at, key.delivery_id);
        let result = self
            .db
            // Group-committed: the writer holds the write lock across read and write, so no other
            // append slips in between. Relaxed: the log is for people, and an entry lost with the
            // machine costs no delivery.
            .write_relaxed(move |tx| {
                if purge {
                    tx.execute("DELETE FROM deliveries WHERE expires_at <= ?1", [now])?;
                }
                // Cached statements: every attempt runs these on the one writer thread.
                let stored: Option<String> = tx
                    .prepare_cached("SELECT body FROM deliveries WHERE hook_id = ?1 AND id = ?2")?
                    .query_row([&hook_id, &id], |row| row.get(0))
                    .optional()?;
                let mut record = match stored.as_deref().map(parse).transpose() {
                    Ok(record) => record.unwrap_or(fresh),
                    Err(err) => return Ok(Err(err)),
                };
                record.attempts.push(attempt);
                keep_latest(&mut record.attempts);
                record.status = status;
                record.updated_at = now;
                let body = match serde_json::to_string(&record) {
                    Ok(body) => body,
                    Err(err) => return Ok(Err(StoreError::backend(err))),
                };
                // The first attempt fixes `sk`: a later one's `created_at` cannot move the record.
                tx.prepare_cached(
                    "INSERT INTO deliveries (hook_id, id, sk, expires_at, body)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (hook_id, id) DO UPDATE SET
                        expires_at = excluded.expires_at, body = excluded.body",
                )?
                .execute(params![hook_id, id, sk, expires_at, body])?;
                // A number sent unclaimed is attempt 1 (handed out from the start) or one a
                // record reserved: only a retry's reservation needs writing.
                let reserved = match then {
                    Then::Retry => Some(tx.prepare_cached(HAND_OUT)?.query_row(
                        params![hook_id, id, key.created_at, number + 1, expires_at],
                        |row| row.get::<_, u32>(0),
                    )?),
                    Then::Done => None,
                };
                Ok(Ok(reserved))
            })
            .await
            .map_err(StoreError::backend)?;
        result
    }

    async fn get(
        &self,
        hook_id: Uuid,
        delivery_id: Uuid,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let now = self.clock.now_millis();
        let body = self
            .db
            .call(move |conn| {
                conn.query_row(
                    "SELECT body FROM deliveries
                     WHERE hook_id = ?1 AND id = ?2 AND expires_at > ?3",
                    params![id_text(hook_id), id_text(delivery_id), now],
                    |row| row.get::<_, String>(0),
                )
                .optional()
            })
            .await
            .map_err(StoreError::backend)?;
        body.as_deref().map(parse).transpose()
    }

    async fn list(
        &self,
        hook_id: Uuid,
        size: usize,
        max_bytes: usize,
        after: Option<DeliveryPageToken>,
    ) -> Result<DeliveryPage, StoreError> {
        let now = self.clock.now_millis();
        let after = after.map(|token| token.sort_key());
        // One row more than the page tells whether another page exists.
        let limit = i64::try_from(size.saturating_add(1)).unwrap_or(i64::MAX);
        let (bodies, stop) = self
            .db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT octet_length(body), body FROM deliveries
                     WHERE hook_id = ?1 AND (?2 IS NULL OR sk < ?2) AND expires_at > ?3
                     ORDER BY sk DESC
                     LIMIT ?4",
                )?;
                let mut rows = stmt.query(params![id_text(hook_id), after, now, limit])?;
                // The body is the record's JSON as the listing serialises it: its length is
                // checked before the text is fetched, so a row past the budget is never read.
                let mut budget = PageBudget::new(size, max_bytes);
                let mut bodies = Vec::new();
                while let Some(row) = rows.next()? {
                    let len = usize::try_from(row.get::<_, i64>(0)?).unwrap_or(usize::MAX);
                    match budget.admit(len) {
                        Admit::Take => bodies.push(row.get::<_, String>(1)?),
                        stop => return Ok((bodies, Some(stop))),
                    }
                }
                Ok((bodies, None))
            })
            .await
            .map_err(StoreError::backend)?;
        let mut items = Vec::with_capacity(bodies.len());
        for body in bodies {
            items.push(parse(&body)?);
        }
        Ok(PageBudget::page(items, stop))
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

/// What a window query reads of each row: the whole record for [`DeliveryLog::list_window`], a
/// projection made inside SQLite for [`DeliveryLog::summarize_window`].
trait WindowRow: Sized {
    /// The `SELECT` list.
    const COLUMNS: &'static str;
    /// The columns as read on the database's thread.
    type Raw: Send + 'static;
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self::Raw>;
    fn finish(raw: Self::Raw) -> Result<Self, StoreError>;
}

impl WindowRow for DeliveryRecord {
    const COLUMNS: &'static str = "body";
    type Raw = String;

    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<String> {
        row.get(0)
    }

    fn finish(body: String) -> Result<DeliveryRecord, StoreError> {
        parse(&body)
    }
}

impl WindowRow for DeliverySummary {
    // The fields the stats read: the event, response bodies and error texts never leave the
    // database.
    const COLUMNS: &'static str = "id, json_extract(body, '$.created_at'), \
        json_extract(body, '$.status'),
        (SELECT json_group_array(json_object(
             'number', json_extract(a.value, '$.number'),
             'at', json_extract(a.value, '$.at'),
             'status', json_extract(a.value, '$.status'),
             'latency_ms', json_extract(a.value, '$.latency_ms'),
             'errored', json(CASE WHEN json_extract(a.value, '$.error') IS NULL
                             THEN 'false' ELSE 'true' END)))
         FROM json_each(body, '$.attempts') AS a)";
    type Raw = (String, i64, String, String);

    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self::Raw> {
        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
    }

    fn finish((id, created_at, status, attempts): Self::Raw) -> Result<Self, StoreError> {
        Ok(DeliverySummary {
            id: Uuid::try_parse(&id).map_err(StoreError::backend)?,
            created_at,
            status: serde_json::from_value(serde_json::Value::String(status))
                .map_err(StoreError::backend)?,
            attempts: serde_json::from_str(&attempts).map_err(StoreError::backend)?,
        })
    }
}

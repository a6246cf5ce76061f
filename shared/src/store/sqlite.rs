//! The embedded [`HookStore`] adapter: hooks and custom events in one SQLite file.
//!
//! Each hook is one row: its JSON form in `body`, plus the columns that listing filters on
//! (`source`, `event`, `tags`) and the ones that writes check (`version`, `name`). Every write is a
//! single `IMMEDIATE` transaction, so the precondition and name checks see the same state as the
//! write, even with several processes on one file. Ids are stored as lower-case hyphenated text,
//! whose order is the order of the UUID's bytes, so listings page the same way as DynamoDB's.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use uuid::Uuid;

use super::{HookFilter, HookStore, Page, PageToken, Precondition, StoreError, TagFilter};
use crate::model::{CustomEvent, Hook, Versioned};
use crate::sqlite::Database;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS hooks (
        id      TEXT PRIMARY KEY,
        name    TEXT UNIQUE,
        source  TEXT NOT NULL,
        event   TEXT,
        tags    TEXT NOT NULL,    -- JSON array of strings
        version INTEGER NOT NULL,
        body    TEXT NOT NULL     -- the Hook as JSON
    );
    CREATE TABLE IF NOT EXISTS custom_events (
        source TEXT NOT NULL,
        event  TEXT NOT NULL,
        body   TEXT NOT NULL,     -- the CustomEvent as JSON
        PRIMARY KEY (source, event)
    );
    -- The change counter: bumped in the transaction of every write (HookStore::version).
    CREATE TABLE IF NOT EXISTS store_version (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        n  INTEGER NOT NULL
    );
    INSERT OR IGNORE INTO store_version (id, n) VALUES (1, 0);
";

/// Bumps the change counter, inside the caller's transaction.
const BUMP: &str = "UPDATE store_version SET n = n + 1 WHERE id = 1";

/// [`HookStore`] on a SQLite [`Database`].
#[derive(Clone)]
pub struct SqliteHookStore {
    db: Database,
}

impl SqliteHookStore {
    /// Wraps `db`, creating the tables if they do not exist yet.
    pub async fn new(db: Database) -> Result<SqliteHookStore, StoreError> {
        db.call(|conn| conn.execute_batch(SCHEMA))
            .await
            .map_err(StoreError::backend)?;
        Ok(SqliteHookStore { db })
    }
}

/// Why a `put` did not write, decided inside the transaction.
enum Rejection {
    Conflict,
    NameTaken(String),
}

fn id_text(id: Uuid) -> String {
    id.hyphenated().to_string()
}

fn parse<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, StoreError> {
    serde_json::from_str(body).map_err(StoreError::backend)
}

fn to_version(stored: i64) -> Result<u64, StoreError> {
    u64::try_from(stored).map_err(StoreError::backend)
}

#[async_trait]
impl HookStore for SqliteHookStore {
    async fn get(&self, id: Uuid) -> Result<Option<Versioned<Hook>>, StoreError> {
        let row = self
            .db
            .call(move |conn| {
                conn.query_row(
                    "SELECT body, version FROM hooks WHERE id = ?1",
                    [id_text(id)],
                    |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)),
                )
                .optional()
            })
            .await
            .map_err(StoreError::backend)?;
        row.map(|(body, version)| {
            Ok(Versioned {
                value: parse(&body)?,
                version: to_version(version)?,
            })
        })
        .transpose()
    }

    async fn list(
        &self,
        filter: &HookFilter,
        size: usize,
        after: Option<PageToken>,
    ) -> Result<Page<Hook>, StoreError> {
        let after = after.map(|token| id_text(token.0));
        let source = filter.source.clone();
        let event = filter.event.clone();
        let (tag_mode, wanted) = match &filter.tags {
            None => (None, None),
            Some(TagFilter::All(tags)) => (Some("all"), Some(tags)),
            Some(TagFilter::Any(tags)) => (Some("any"), Some(tags)),
        };
        let wanted = wanted
            .map(serde_json::to_string)
            .transpose()
            .map_err(StoreError::backend)?;
        // One row more than the page tells whether another page exists.
        let limit = i64::try_from(size.saturating_add(1)).unwrap_or(i64::MAX);
        let bodies = self
            .db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT body FROM hooks
                     WHERE (?1 IS NULL OR id > ?1)
                       AND (?2 IS NULL OR source = ?2)
                       AND (?3 IS NULL OR event = ?3)
                       AND (?4 IS NULL
                            OR (?4 = 'all' AND NOT EXISTS (
                                    SELECT 1 FROM json_each(?5) AS w
                                    WHERE w.value NOT IN (SELECT value FROM json_each(hooks.tags))))
                            OR (?4 = 'any' AND EXISTS (
                                    SELECT 1 FROM json_each(hooks.tags) AS t
                                    WHERE t.value IN (SELECT value FROM json_each(?5)))))
                     ORDER BY id
                     LIMIT ?6",
                )?;
                let rows = stmt.query_map(
                    params![after, source, event, tag_mode, wanted, limit],
                    |row| row.get::<_, String>(0),
                )?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
            })
            .await
            .map_err(StoreError::backend)?;
        let mut items = bodies
            .iter()
            .map(|body| parse::<Hook>(body))
            .collect::<Result<Vec<_>, _>>()?;
        let more = items.len() > size;
        items.truncate(size);
        let next = match items.last() {
            Some(last) if more => Some(PageToken(last.id)),
            _ => None,
        };
        Ok(Page { items, next })
    }

    async fn put(&self, hook: &Hook, precondition: Precondition) -> Result<u64, StoreError> {
        let body = serde_json::to_string(hook).map_err(StoreError::backend)?;
        let tags = serde_json::to_string(&hook.tags).map_err(StoreError::backend)?;
        let id = id_text(hook.id);
        let name = hook.name.clone();
        let source = hook.source.clone();
        let event = hook.event.clone();
        let outcome = self
            .db
            .call(move |conn| {
                // IMMEDIATE takes the write lock up front: the checks below and the write see one state.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let current: Option<i64> = tx
                    .query_row("SELECT version FROM hooks WHERE id = ?1", [&id], |row| {
                        row.get(0)
                    })
                    .optional()?;
                let holds = match (precondition, current) {
                    (Precondition::Absent, None) => true,
                    (Precondition::Version(v), Some(stored)) => u64::try_from(stored) == Ok(v),
                    _ => false,
                };
                if !holds {
                    return Ok(Err(Rejection::Conflict));
                }
                if let Some(name) = &name {
                    let holder: Option<String> = tx
                        .query_row(
                            "SELECT id FROM hooks WHERE name = ?1 AND id <> ?2",
                            [name, &id],
                            |row| row.get(0),
                        )
                        .optional()?;
                    if holder.is_some() {
                        return Ok(Err(Rejection::NameTaken(name.clone())));
                    }
                }
                let version = current.map_or(1, |v| v + 1);
                tx.execute(
                    "INSERT INTO hooks (id, name, source, event, tags, version, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (id) DO UPDATE SET
                        name = excluded.name, source = excluded.source, event = excluded.event,
                        tags = excluded.tags, version = excluded.version, body = excluded.body",
                    params![id, name, source, event, tags, version, body],
                )?;
                tx.execute(BUMP, [])?;
                tx.commit()?;
                Ok(Ok(version))
            })
            .await
            .map_err(StoreError::backend)?;
        match outcome {
            Ok(version) => to_version(version),
            Err(Rejection::Conflict) => Err(StoreError::Conflict),
            Err(Rejection::NameTaken(name)) => Err(StoreError::NameTaken(name)),
        }
    }

    async fn delete(&self, id: Uuid) -> Result<Option<Hook>, StoreError> {
        let body = self
            .db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let body = tx
                    .query_row(
                        "DELETE FROM hooks WHERE id = ?1 RETURNING body",
                        [id_text(id)],
                        |row| row.get::<_, String>(0),
                    )
                    .optional()?;
                if body.is_some() {
                    tx.execute(BUMP, [])?;
                }
                tx.commit()?;
                Ok(body)
            })
            .await
            .map_err(StoreError::backend)?;
        body.as_deref().map(parse).transpose()
    }

    async fn put_custom_event(&self, event: &CustomEvent) -> Result<bool, StoreError> {
        let body = serde_json::to_string(event).map_err(StoreError::backend)?;
        let (source, name) = (event.source.clone(), event.event.clone());
        self.db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let replaced = tx.execute(
                    "UPDATE custom_events SET body = ?3 WHERE source = ?1 AND event = ?2",
                    params![source, name, body],
                )?;
                if replaced == 0 {
                    tx.execute(
                        "INSERT INTO custom_events (source, event, body) VALUES (?1, ?2, ?3)",
                        params![source, name, body],
                    )?;
                }
                tx.execute(BUMP, [])?;
                tx.commit()?;
                Ok(replaced == 0)
            })
            .await
            .map_err(StoreError::backend)
    }

    async fn delete_custom_event(&self, source: &str, event: &str) -> Result<bool, StoreError> {
        let (source, event) = (source.to_owned(), event.to_owned());
        let removed = self
            .db
            .call(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let removed = tx.execute(
                    "DELETE FROM custom_events WHERE source = ?1 AND event = ?2",
                    [source, event],
                )?;
                if removed > 0 {
                    tx.execute(BUMP, [])?;
                }
                tx.commit()?;
                Ok(removed)
            })
            .await
            .map_err(StoreError::backend)?;
        Ok(removed > 0)
    }

    async fn version(&self) -> Result<u64, StoreError> {
        let n = self
            .db
            .call(|conn| {
                conn.query_row("SELECT n FROM store_version WHERE id = 1", [], |row| {
                    row.get::<_, i64>(0)
                })
            })
            .await
            .map_err(StoreError::backend)?;
        to_version(n)
    }

    async fn list_custom_events(&self) -> Result<Vec<CustomEvent>, StoreError> {
        let bodies = self
            .db
            .call(|conn| {
                // SQLite compares text byte-wise, which is Rust's `str` order.
                let mut stmt =
                    conn.prepare_cached("SELECT body FROM custom_events ORDER BY source, event")?;
                let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
                rows.collect::<rusqlite::Result<Vec<String>>>()
            })
            .await
            .map_err(StoreError::backend)?;
        bodies.iter().map(|body| parse(body)).collect()
    }
}

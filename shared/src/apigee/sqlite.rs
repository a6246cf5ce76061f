//! The embedded [`MonetizationStore`] adapter: two SQLite tables.
//!
//! `mint_conditions` holds each condition as JSON by (org, id). `mint_reached` holds one row per
//! reached threshold (its key) with the claimant; a claim is `INSERT … ON CONFLICT DO NOTHING`
//! then a read of the claimant, in one write transaction, so concurrent claimants (connections,
//! processes on the file) see exactly one winner.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension as _};
use uuid::Uuid;

use super::{Condition, MonetizationStore, StoreError, Threshold, MAX_CONDITIONS_PER_ORG};
use crate::events::now_millis;
use crate::sqlite::Database;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS mint_conditions (
        org  TEXT NOT NULL,
        id   TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (org, id)
    );
    CREATE TABLE IF NOT EXISTS mint_reached (
        key        TEXT PRIMARY KEY,
        claimant   TEXT NOT NULL,
        reached_at INTEGER NOT NULL  -- milliseconds since the Unix epoch
    );
";

/// [`MonetizationStore`] on a SQLite [`Database`].
#[derive(Clone)]
pub struct SqliteMonetizationStore {
    db: Database,
}

impl SqliteMonetizationStore {
    /// Wraps `db`, creating the tables if they do not exist yet.
    pub async fn new(db: Database) -> Result<SqliteMonetizationStore, StoreError> {
        db.call(|conn| conn.execute_batch(SCHEMA))
            .await
            .map_err(StoreError::backend)?;
        Ok(SqliteMonetizationStore { db })
    }
}

fn decode(body: &str) -> Result<Condition, StoreError> {
    serde_json::from_str(body).map_err(StoreError::backend)
}

#[async_trait]
impl MonetizationStore for SqliteMonetizationStore {
    async fn put_condition(&self, condition: &Condition) -> Result<(), StoreError> {
        let body = serde_json::to_string(condition).map_err(StoreError::backend)?;
        let (org, id) = (condition.org.clone(), condition.id.to_string());
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO mint_conditions (org, id, body) VALUES (?1, ?2, ?3)
                     ON CONFLICT (org, id) DO UPDATE SET body = excluded.body",
                    params![org, id, body],
                )
            })
            .await
            .map(|_| ())
            .map_err(StoreError::backend)
    }

    async fn get_condition(&self, org: &str, id: Uuid) -> Result<Option<Condition>, StoreError> {
        let (org, id) = (org.to_owned(), id.to_string());
        let body: Option<String> = self
            .db
            .call(move |conn| {
                conn.query_row(
                    "SELECT body FROM mint_conditions WHERE org = ?1 AND id = ?2",
                    params![org, id],
                    |row| row.get(0),
                )
                .optional()
            })
            .await
            .map_err(StoreError::backend)?;
        body.as_deref().map(decode).transpose()
    }

    async fn list_conditions(&self, org: &str) -> Result<Vec<Condition>, StoreError> {
        let org = org.to_owned();
        let bodies: Vec<String> = self
            .db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT body FROM mint_conditions WHERE org = ?1 ORDER BY id LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![org, MAX_CONDITIONS_PER_ORG as i64], |row| {
                    row.get(0)
                })?;
                rows.collect()
            })
            .await
            .map_err(StoreError::backend)?;
        bodies.iter().map(|b| decode(b)).collect()
    }

    async fn conditions_on_rate_plan(
        &self,
        org: &str,
        rate_plan: &str,
    ) -> Result<Vec<Condition>, StoreError> {
        let (org, rate_plan) = (org.to_owned(), rate_plan.to_owned());
        let bodies: Vec<String> = self
            .db
            .call(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT body FROM mint_conditions
                     WHERE org = ?1 AND json_extract(body, '$.rate_plan') = ?2
                     ORDER BY id LIMIT ?3",
                )?;
                let rows = stmt.query_map(
                    params![org, rate_plan, MAX_CONDITIONS_PER_ORG as i64],
                    |row| row.get(0),
                )?;
                rows.collect()
            })
            .await
            .map_err(StoreError::backend)?;
        bodies.iter().map(|b| decode(b)).collect()
    }

    async fn delete_condition(&self, org: &str, id: Uuid) -> Result<bool, StoreError> {
        let (org, id) = (org.to_owned(), id.to_string());
        self.db
            .write(move |tx| {
                tx.execute(
                    "DELETE FROM mint_conditions WHERE org = ?1 AND id = ?2",
                    params![org, id],
                )
            })
            .await
            .map(|n| n > 0)
            .map_err(StoreError::backend)
    }

    async fn claim(&self, threshold: &Threshold, claimant: Uuid) -> Result<bool, StoreError> {
        let key = threshold.key();
        let claimant = claimant.to_string();
        let now = now_millis();
        self.db
            // Durable: a claim must be on disk before its notification is sent.
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO mint_reached (key, claimant, reached_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO NOTHING",
                    params![key, claimant, now],
                )?;
                let holder: String = tx.query_row(
                    "SELECT claimant FROM mint_reached WHERE key = ?1",
                    params![key],
                    |row| row.get(0),
                )?;
                Ok(holder == claimant)
            })
            .await
            .map_err(StoreError::backend)
    }
}

//! The embedded [`IdempotencyStore`] adapter: keys in one SQLite table.
//!
//! One row per key: the event it was claimed for, the body's digest, whether the event is queued
//! (`completed`) and when the row lapses (`expires_at`, Unix milliseconds: the end of the lease
//! while pending, of the TTL once completed). A claim is one `INSERT … ON CONFLICT(key) DO UPDATE
//! … WHERE expires_at < now` followed, when it wrote nothing, by a read of the holder, both in
//! the same write transaction, so concurrent claimants (other connections, other processes on
//! the file) see exactly one winner. Expired rows are purged a few at a time by the claims.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension as _};
use uuid::Uuid;

use super::{expiry_millis, Claim, Claimed, IdempotencyStore, StoreError};
use crate::clock::Clock;
use crate::sqlite::Database;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS idempotency_keys (
        key         TEXT PRIMARY KEY,
        event_id    TEXT NOT NULL,
        body_digest TEXT NOT NULL,
        completed   INTEGER NOT NULL,  -- 0 while the event is being queued, 1 once it is
        expires_at  INTEGER NOT NULL,  -- milliseconds since the Unix epoch
        at          INTEGER            -- the events' stamp (ms); NULL in rows of older versions
    );
    CREATE INDEX IF NOT EXISTS idempotency_keys_expires_at ON idempotency_keys (expires_at);
";

/// Takes a key that is free or expired.
const CLAIM: &str = "
    INSERT INTO idempotency_keys (key, event_id, body_digest, completed, expires_at, at)
    VALUES (?1, ?2, ?3, 0, ?4, ?6)
    ON CONFLICT (key) DO UPDATE
        SET event_id = excluded.event_id, body_digest = excluded.body_digest, completed = 0,
            expires_at = excluded.expires_at, at = excluded.at
        WHERE idempotency_keys.expires_at < ?5
";

const HOLDER: &str =
    "SELECT event_id, body_digest, completed, at FROM idempotency_keys WHERE key = ?1";

/// The `at` column, for tables created before it.
const ADD_AT: &str = "ALTER TABLE idempotency_keys ADD COLUMN at INTEGER";

const COMPLETE: &str = "
    UPDATE idempotency_keys SET completed = 1, expires_at = ?3 WHERE key = ?1 AND event_id = ?2
";

/// Expires the claim at once, and keeps it, so that the next claim knows of it.
const RELEASE: &str = "
    UPDATE idempotency_keys SET expires_at = ?3 WHERE key = ?1 AND event_id = ?2 AND completed = 0
";

/// Removes a bounded batch of rows expired before `?1`, so purging never makes one claim slow.
const PURGE: &str = "
    DELETE FROM idempotency_keys WHERE rowid IN (
        SELECT rowid FROM idempotency_keys WHERE expires_at < ?1 LIMIT 32
    )
";

/// [`IdempotencyStore`] on a SQLite [`Database`].
#[derive(Clone)]
pub struct SqliteIdempotencyStore {
    db: Database,
    clock: Clock,
}

impl SqliteIdempotencyStore {
    /// Wraps `db`, creating the table if it does not exist yet.
    pub async fn new(db: Database) -> Result<SqliteIdempotencyStore, StoreError> {
        db.call(|conn| {
            conn.execute_batch(SCHEMA)?;
            let has_at: bool = conn.query_row(
                "SELECT count(*) FROM pragma_table_info('idempotency_keys') WHERE name = 'at'",
                [],
                |row| row.get(0),
            )?;
            if !has_at {
                conn.execute_batch(ADD_AT)?;
            }
            Ok(())
        })
        .await
        .map_err(StoreError::backend)?;
        Ok(SqliteIdempotencyStore {
            db,
            clock: Clock::system(),
        })
    }

    /// Reads the time from `clock` rather than the system clock (tests move it).
    pub fn with_clock(self, clock: Clock) -> SqliteIdempotencyStore {
        SqliteIdempotencyStore { clock, ..self }
    }
}

#[async_trait]
impl IdempotencyStore for SqliteIdempotencyStore {
    async fn claim(
        &self,
        key: &str,
        event_id: Uuid,
        body_digest: &str,
        at: i64,
        lease: Duration,
    ) -> Result<Claimed, StoreError> {
        let (key, body_digest) = (key.to_owned(), body_digest.to_owned());
        let now = self.clock.now_millis();
        let expires_at = expiry_millis(now, lease);
        let holder = self
            .db
            // Durable: the claim must be on disk before its event is queued, or a crash could
            // forget a key whose event was delivered.
            .write(move |tx| {
                let id = event_id.to_string();
                let holder = |tx: &rusqlite::Connection| {
                    tx.query_row(HOLDER, params![key], |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, bool>(2)?,
                            row.get::<_, Option<i64>>(3)?,
                        ))
                    })
                    .optional()
                };
                let before = holder(tx)?;
                let written =
                    tx.execute(CLAIM, params![key, id, body_digest, expires_at, now, at])?;
                // Released and lapsed claims are kept a lease longer, for the next claim to see.
                let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
                tx.execute(PURGE, params![now.saturating_sub(lease_ms)])?;
                if written == 1 {
                    // Replaced: a claim never completed makes this one a reclaim.
                    return Ok(Err(before.filter(|(_, _, completed, _)| !completed)));
                }
                // Gone between the two statements cannot happen under the write lock.
                holder(tx).map(Ok)
            })
            .await
            .map_err(StoreError::backend)?;
        let claim =
            |(event_id, body_digest, completed, at): (String, String, bool, Option<i64>)| {
                Ok::<_, StoreError>(Claim {
                    event_id: event_id.parse().map_err(StoreError::backend)?,
                    body_digest,
                    completed,
                    at,
                })
            };
        match holder {
            Ok(Some(held)) => Ok(Claimed::Existing(claim(held)?)),
            Err(Some(earlier)) => Ok(Claimed::Reclaimed(claim(earlier)?)),
            Ok(None) | Err(None) => Ok(Claimed::New),
        }
    }

    async fn complete(&self, key: &str, event_id: Uuid, ttl: Duration) -> Result<(), StoreError> {
        let key = key.to_owned();
        let expires_at = expiry_millis(self.clock.now_millis(), ttl);
        self.db
            // Relaxed: losing it only leaves the key pending until its lease lapses.
            .write_relaxed(move |tx| {
                tx.execute(COMPLETE, params![key, event_id.to_string(), expires_at])
            })
            .await
            .map(|_| ())
            .map_err(StoreError::backend)
    }

    async fn release(&self, key: &str, event_id: Uuid) -> Result<(), StoreError> {
        let key = key.to_owned();
        let expired = self.clock.now_millis().saturating_sub(1);
        self.db
            // Relaxed: losing it only keeps the key pending until its lease lapses.
            .write_relaxed(move |tx| {
                tx.execute(RELEASE, params![key, event_id.to_string(), expired])
            })
            .await
            .map(|_| ())
            .map_err(StoreError::backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_table_from_before_stamps_gets_the_column_and_its_claims_none() {
        // given: a table as older versions made it, holding a released claim
        let db = Database::in_memory().unwrap();
        db.call(|conn| {
            conn.execute_batch(
                "CREATE TABLE idempotency_keys (key TEXT PRIMARY KEY, event_id TEXT NOT NULL,
                     body_digest TEXT NOT NULL, completed INTEGER NOT NULL,
                     expires_at INTEGER NOT NULL);
                 INSERT INTO idempotency_keys
                     VALUES ('k', '5b1d6a70-3c4e-4f8a-9b2c-1d0e7f6a5b4c', 'd', 0, 0);",
            )
        })
        .await
        .unwrap();

        // when: the store opens it, and the key is claimed again
        let store = SqliteIdempotencyStore::new(db).await.unwrap();
        let claimed = store
            .claim("k", Uuid::new_v4(), "d", 42, Duration::from_secs(60))
            .await
            .unwrap();

        // then: the earlier claim comes back without a stamp
        let Claimed::Reclaimed(earlier) = claimed else {
            panic!("{claimed:?}")
        };
        assert_eq!(earlier.at, None);
        assert_eq!(
            earlier.event_id.to_string(),
            "5b1d6a70-3c4e-4f8a-9b2c-1d0e7f6a5b4c"
        );
    }
}

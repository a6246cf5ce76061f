//! The embedded [`WindowStore`] adapter: windows and digests in one SQLite table.
//!
//! One row per key: who holds it (`claimant`), the recorded digest for on_change keys, and when it
//! expires (`expires_at`, milliseconds since the Unix epoch). Each decision is a single
//! `INSERT … ON CONFLICT(key) DO UPDATE … WHERE <condition>`: SQLite applies it atomically under its
//! write lock, so the condition and the write see the same row even with several processes on one
//! file, and `changes() == 1` says whether the condition held. Expired rows count as absent (the
//! condition says so) and are purged a few at a time by the writes themselves.

use std::time::Duration;

use async_trait::async_trait;
use rusqlite::params;

use super::{expiry_millis, StoreError, WindowStore};
use crate::clock::Clock;
use crate::sqlite::Database;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS windows (
        key        TEXT PRIMARY KEY,
        claimant   TEXT NOT NULL,
        digest     TEXT,             -- on_change keys only
        expires_at INTEGER NOT NULL  -- milliseconds since the Unix epoch
    );
    CREATE INDEX IF NOT EXISTS windows_expires_at ON windows (expires_at);
";

/// Takes a window when it is free, expired, or already ours.
const CLAIM: &str = "
    INSERT INTO windows (key, claimant, digest, expires_at) VALUES (?1, ?2, NULL, ?3)
    ON CONFLICT (key) DO UPDATE
        SET claimant = excluded.claimant, digest = NULL, expires_at = excluded.expires_at
        WHERE windows.expires_at < ?4 OR windows.claimant = excluded.claimant
";

/// Records a digest when it is new, different, expired, or already ours.
const SWAP: &str = "
    INSERT INTO windows (key, claimant, digest, expires_at) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (key) DO UPDATE
        SET claimant = excluded.claimant, digest = excluded.digest,
            expires_at = excluded.expires_at
        WHERE windows.expires_at < ?5
           OR windows.digest IS NOT excluded.digest
           OR windows.claimant = excluded.claimant
";

/// Removes a bounded batch of expired rows, so purging never makes one decision slow.
const PURGE: &str = "
    DELETE FROM windows WHERE rowid IN (
        SELECT rowid FROM windows WHERE expires_at < ?1 LIMIT 32
    )
";

/// [`WindowStore`] on a SQLite [`Database`].
#[derive(Clone)]
pub struct SqliteWindowStore {
    db: Database,
    clock: Clock,
}

impl SqliteWindowStore {
    /// Wraps `db`, creating the table if it does not exist yet.
    pub async fn new(db: Database) -> Result<SqliteWindowStore, StoreError> {
        db.call(|conn| conn.execute_batch(SCHEMA))
            .await
            .map_err(StoreError::backend)?;
        Ok(SqliteWindowStore {
            db,
            clock: Clock::system(),
        })
    }

    /// Reads the time from `clock` rather than the system clock (tests move it).
    pub fn with_clock(self, clock: Clock) -> SqliteWindowStore {
        SqliteWindowStore { clock, ..self }
    }

    /// Runs `upsert` (one conditional statement, returning how many rows it wrote) and purges
    /// some rows expired before `now`, in one transaction; true when the upsert wrote.
    async fn write<F>(&self, now: i64, upsert: F) -> Result<bool, StoreError>
    where
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<usize> + Send + 'static,
    {
        self.db
            // Group-committed in an IMMEDIATE transaction: the write lock is taken up front
            // (waiting on the busy timeout), so a writer on another connection cannot make the
            // upsert fail with a stale snapshot.
            .write(move |tx| {
                let changed = upsert(tx)?;
                tx.execute(PURGE, params![now])?;
                Ok(changed == 1)
            })
            .await
            .map_err(StoreError::backend)
    }
}

#[async_trait]
impl WindowStore for SqliteWindowStore {
    async fn claim_window(
        &self,
        key: &str,
        claimant: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let (key, claimant) = (key.to_owned(), claimant.to_owned());
        let now = self.clock.now_millis();
        let expires_at = expiry_millis(now, ttl);
        self.write(now, move |tx| {
            tx.execute(CLAIM, params![key, claimant, expires_at, now])
        })
        .await
    }

    async fn swap_digest(
        &self,
        key: &str,
        digest: &str,
        claimant: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let (key, digest, claimant) = (key.to_owned(), digest.to_owned(), claimant.to_owned());
        let now = self.clock.now_millis();
        let expires_at = expiry_millis(now, ttl);
        self.write(now, move |tx| {
            tx.execute(SWAP, params![key, claimant, digest, expires_at, now])
        })
        .await
    }
}

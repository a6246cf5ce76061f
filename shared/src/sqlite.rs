//! A shared SQLite connection for the embedded adapters, run off the async executor.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

/// One SQLite database file, opened in WAL mode with full fsync on commit.
#[derive(Clone)]
pub struct Database {
    conn: Arc<Mutex<Connection>>,
}

impl Database {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Database> {
        let conn = Connection::open(path)?;
        Self::configure(conn)
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> rusqlite::Result<Database> {
        Self::configure(Connection::open_in_memory()?)
    }

    fn configure(conn: Connection) -> rusqlite::Result<Database> {
        // First, so that even the pragmas below wait for another process's lock.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // WAL lets readers run beside the writer; synchronous=FULL makes every commit durable.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(Database {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn call<F, R>(&self, f: F) -> rusqlite::Result<R>
    where
        F: FnOnce(&mut Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic in another call poisons the lock; the connection itself is still sound.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        // A panic inside `f` is a bug: let it surface where the call was made.
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
    }
}

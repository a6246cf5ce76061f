//! A shared SQLite connection for the embedded adapters, run off the async executor, with group
//! commit for writes.
//!
//! Every commit is fsynced (`synchronous=FULL`), which bounds a database to a few hundred commits a
//! second on ordinary disks. [`Database::write`] therefore hands writes to one writer thread, which
//! runs every write waiting at that moment in a single transaction (each in its own savepoint, so
//! one failing write does not undo the others) and answers them all after the one commit: under
//! load, many writes share an fsync; alone, a write commits at once.

use std::any::Any;
use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::oneshot;

/// Writes run together in one transaction, at most this many.
const MAX_GROUP: usize = 512;

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 128;

type Boxed = Box<dyn Any + Send>;

/// A write, type-erased so writes of every adapter share one writer.
type Op = Box<dyn FnOnce(&Connection) -> rusqlite::Result<Boxed> + Send>;

struct WriteOp {
    run: Op,
    /// Must be on disk before it is answered; other writes may wait for the next fsync.
    durable: bool,
    reply: oneshot::Sender<rusqlite::Result<Boxed>>,
}

/// One SQLite database file, opened in WAL mode with full fsync on commit.
#[derive(Clone)]
pub struct Database {
    conn: Arc<Mutex<Connection>>,
    writer: mpsc::Sender<WriteOp>,
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
        // Room for every adapter's cached statements (rusqlite keeps 16 by default), so the
        // writer's hot statements are not evicted by each other.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let conn = Arc::new(Mutex::new(conn));
        let (writer, writes) = mpsc::channel();
        let for_writer = conn.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(&for_writer, &writes))
            .map_err(|err| rusqlite::Error::ToSqlConversionFailure(Box::new(err)))?;
        Ok(Database { conn, writer })
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

    /// Runs `f` inside a transaction shared with the other writes waiting at the same moment, and
    /// answers once that transaction is committed (durably). `f` must not begin or end
    /// transactions itself; if it fails, only its own changes are rolled back.
    pub async fn write<F, R>(&self, f: F) -> rusqlite::Result<R>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.submit(f, true).await
    }

    /// Like [`Database::write`], but answered once committed, before it is fsynced: it becomes
    /// durable with the next durable write, and survives a crash of the process (not of the
    /// machine) in between. For writes whose loss only repeats work: a received message's
    /// invisibility, a deletion, a delivery-log entry.
    pub(crate) async fn write_relaxed<F, R>(&self, f: F) -> rusqlite::Result<R>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.submit(f, false).await
    }

    async fn submit<F, R>(&self, f: F, durable: bool) -> rusqlite::Result<R>
    where
        F: FnOnce(&Connection) -> rusqlite::Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let op = WriteOp {
            run: Box::new(move |conn| f(conn).map(|r| Box::new(r) as Boxed)),
            durable,
            reply,
        };
        let stopped = || rusqlite::Error::InvalidQuery;
        self.writer.send(op).map_err(|_| stopped())?;
        let result = answer.await.map_err(|_| stopped())??;
        Ok(*result
            .downcast::<R>()
            .expect("the writer answers with the value its op produced"))
    }
}

/// The writer thread: takes whatever writes are waiting, commits them together, answers them.
fn write_loop(conn: &Mutex<Connection>, writes: &mpsc::Receiver<WriteOp>) {
    let mut synchronous_full = true;
    while let Ok(first) = writes.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match writes.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // In WAL mode a FULL commit fsyncs the log, and with it every relaxed commit before it.
        let durable = group.iter().any(|op| op.durable);
        if durable != synchronous_full {
            let mode = if durable { "FULL" } else { "NORMAL" };
            if guard.pragma_update(None, "synchronous", mode).is_ok() {
                synchronous_full = durable;
            }
        }
        if let Err(err) = guard.execute_batch("BEGIN IMMEDIATE") {
            for op in group {
                let _ = op.reply.send(Err(clone_error(&err)));
            }
            continue;
        }
        let mut done = Vec::with_capacity(group.len());
        for op in group {
            let result = run_in_savepoint(&guard, op.run);
            done.push((op.reply, result));
        }
        match guard.execute_batch("COMMIT") {
            Ok(()) => {
                for (reply, result) in done {
                    let _ = reply.send(result);
                }
            }
            Err(err) => {
                let _ = guard.execute_batch("ROLLBACK");
                for (reply, _) in done {
                    let _ = reply.send(Err(clone_error(&err)));
                }
            }
        }
    }
}

fn run_in_savepoint(conn: &Connection, run: Op) -> rusqlite::Result<Boxed> {
    // Cached: every write of every adapter passes here, on the one writer thread.
    conn.prepare_cached("SAVEPOINT write_op")?.execute([])?;
    // A panicking op must not take the writer (and every later write) down with it.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(conn)))
        .unwrap_or_else(|_| Err(rusqlite::Error::InvalidQuery));
    match &result {
        Ok(_) => {
            conn.prepare_cached("RELEASE write_op")?.execute([])?;
        }
        Err(_) => conn.execute_batch("ROLLBACK TO write_op; RELEASE write_op")?,
    }
    result
}

/// rusqlite errors are not `Clone`; every op of a failed commit gets an equivalent one.
fn clone_error(err: &rusqlite::Error) -> rusqlite::Error {
    match err {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::ToSqlConversionFailure(other.to_string().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn table() -> Database {
        let db = Database::in_memory().unwrap();
        db.call(|c| c.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)"))
            .await
            .unwrap();
        db
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_all_land_and_a_failing_one_undoes_only_itself() {
        let db = table().await;
        let mut tasks = Vec::new();
        for i in 0..200 {
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                db.write(move |c| {
                    c.execute("INSERT INTO t VALUES (?1, ?2)", (format!("k{i}"), i))?;
                    if i % 50 == 0 {
                        // Fails after writing: its insert must be rolled back, the others kept.
                        c.execute("INSERT INTO missing_table VALUES (1)", ())?;
                    }
                    Ok(i)
                })
                .await
            }));
        }
        let mut failures = 0;
        for (i, task) in tasks.into_iter().enumerate() {
            match task.await.unwrap() {
                Ok(value) => assert_eq!(value, i),
                Err(_) => failures += 1,
            }
        }
        assert_eq!(failures, 4);
        let count: i64 = db
            .call(|c| c.query_row("SELECT COUNT(*) FROM t", (), |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(count, 196);
    }

    #[tokio::test]
    async fn a_panicking_write_does_not_stop_the_writer() {
        let db = table().await;
        let result: rusqlite::Result<()> = db.write(|_| panic!("bug")).await;
        assert!(result.is_err());
        db.write(|c| c.execute("INSERT INTO t VALUES ('a', 1)", ()).map(|_| ()))
            .await
            .unwrap();
    }
}

//! What every port's contract suite needs besides its cases: a fresh SQLite file or moto table per
//! test, adapter instances opened on it at will, the clock those adapters read, and the
//! [`contract!`](crate::contract) macro that turns each case into one test per adapter.
//!
//! A suite says how to build its two adapters by implementing [`Adapters`], names
//! `Backend<ItsAdapters>` as its `Backend`, writes each case as an async function of `&Backend`,
//! and lists the cases in `contract!`. Any number of instances can be opened on one backend, each
//! with its own connection (SQLite) or client (DynamoDB), as separate processes would have: the
//! racing cases give every racer its own.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use event_hooks::clock::{Clock, ManualClock};
use event_hooks::sqlite::Database;
use event_hooks::store::StoreError;

/// A SQLite file in the temp directory, removed (with its WAL files) when dropped.
pub struct TempFile(PathBuf);

impl TempFile {
    /// A file name no other test uses, starting with `prefix`.
    pub fn new(prefix: &str) -> TempFile {
        let name = format!("{prefix}-{}.sqlite", uuid::Uuid::new_v4().simple());
        TempFile(std::env::temp_dir().join(name))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            // Best effort: a leftover file in the temp directory harms nothing.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// How one port's suite builds its SQLite and DynamoDB adapters.
#[async_trait]
pub trait Adapters: 'static {
    /// The port as the cases use it, e.g. `dyn WindowStore`.
    type Port: ?Sized + Send + Sync;
    /// The start of every SQLite file and DynamoDB table name of the suite.
    const NAME: &'static str;
    /// Creates a table laid out for the DynamoDB adapter.
    async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str)
        -> Result<(), StoreError>;
    /// The SQLite adapter on `db`, reading the time from `clock`.
    async fn sqlite(db: Database, clock: Clock) -> Arc<Self::Port>;
    /// The DynamoDB adapter on `table`, reading the time from `clock`.
    fn dynamodb(client: aws_sdk_dynamodb::Client, table: String, clock: Clock) -> Arc<Self::Port>;
}

/// One fresh file or table, the instances of `A`'s adapters opened on it, and their clock.
pub struct Backend<A: Adapters> {
    storage: Storage,
    clock: ManualClock,
    adapters: PhantomData<fn() -> A>,
}

enum Storage {
    Sqlite(TempFile),
    Moto {
        // Boxed: an SdkConfig is large and the enum would otherwise be as large for SQLite.
        config: Box<aws_config::SdkConfig>,
        table: String,
    },
}

impl<A: Adapters> Backend<A> {
    /// A fresh SQLite file.
    pub fn sqlite() -> Backend<A> {
        Backend::on(Storage::Sqlite(TempFile::new(A::NAME)))
    }

    /// A fresh table on moto, or `None` when no moto server is running (see [`crate::moto`]).
    pub async fn moto() -> Option<Backend<A>> {
        let config = crate::moto::config()?;
        let table = crate::moto::unique_name(A::NAME);
        A::create_table(&aws_sdk_dynamodb::Client::new(&config), &table)
            .await
            .expect("create the table on moto");
        Some(Backend::on(Storage::Moto {
            config: Box::new(config),
            table,
        }))
    }

    fn on(storage: Storage) -> Backend<A> {
        Backend {
            storage,
            clock: ManualClock::starting_now(),
            adapters: PhantomData,
        }
    }

    /// A new adapter instance with its own connection (SQLite) or client (DynamoDB).
    pub async fn open(&self) -> Arc<A::Port> {
        match &self.storage {
            Storage::Sqlite(file) => {
                let db = Database::open(file.path()).expect("open the SQLite file");
                A::sqlite(db, self.clock.clock()).await
            }
            Storage::Moto { config, table } => A::dynamodb(
                aws_sdk_dynamodb::Client::new(config),
                table.clone(),
                self.clock.clock(),
            ),
        }
    }

    /// Moves the time every adapter of this backend reads forward, as if `by` had passed. Only
    /// what the adapters compare themselves moves: a timer the backend keeps does not.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// The time the adapters read now, in Unix milliseconds.
    pub fn now_millis(&self) -> i64 {
        self.clock.clock().now_millis()
    }

    /// Whether the backend applies a conditional write atomically. DynamoDB and SQLite do; moto
    /// (5.2.5) does not: `Table.put_item` evaluates the condition against the current item and
    /// then stores the new one with no lock, on a threaded server, so two racers can both pass.
    ///
    /// So on moto the racing cases assert what moto does guarantee: no errors, at least one
    /// winner, and afterwards (asked one at a time, where moto is exact) exactly one holder, who
    /// is one of the winners. Exactly one winner is asserted on SQLite, and on DynamoDB rests on
    /// its documented atomicity of conditional writes.
    pub fn conditional_writes_are_atomic(&self) -> bool {
        matches!(self.storage, Storage::Sqlite(_))
    }
}

/// Generates, for every case (an async function of `&Backend` in the invoking module),
/// `sqlite::<case>` and `moto::<case>`, each on a fresh file or table; the moto half returns early
/// when no moto server is running. Cases listed under `not_on_moto` get a moto test too, ignored
/// with the reason given, so that the gap shows in every test run.
#[macro_export]
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        $crate::contract! { both: [$($case),*], not_on_moto(""): [] }
    };
    (
        both: [$($case:ident),* $(,)?],
        not_on_moto($reason:literal): [$($sqlite_case:ident),* $(,)?] $(,)?
    ) => {
        mod sqlite {
            $(
                // Several workers, so that the racing cases really run in parallel.
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(&super::Backend::sqlite()).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $sqlite_case() {
                    super::$sqlite_case(&super::Backend::sqlite()).await;
                }
            )*
        }

        mod moto {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(backend) = super::Backend::moto().await else {
                        return;
                    };
                    super::$case(&backend).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[ignore = $reason]
                async fn $sqlite_case() {
                    let Some(backend) = super::Backend::moto().await else {
                        return;
                    };
                    super::$sqlite_case(&backend).await;
                }
            )*
        }
    };
}

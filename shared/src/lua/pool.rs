//! The bounded pool of threads where user code compiles and runs (spec §6), off the async
//! runtime's threads.
//!
//! User Lua may hold a thread for its whole CPU budget; on a runtime thread that would stall
//! every other request and delivery of the process. So compiles, template renders and lambda
//! chains are jobs for a fixed number of plain OS threads, with a bounded number of jobs waiting.
//! The threads are not the runtime's blocking pool: a job still running when the process shuts
//! down does not hold the shutdown (a stuck job is a bug, but it must not also make the process
//! deaf to SIGTERM). Each job runs under `catch_unwind`, so a panic fails that job only.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::{oneshot, Semaphore};

/// Stack of each pool thread: generous, so the few recursive walks over user data that remain
/// (each depth-capped) are nowhere near its end.
const STACK_SIZE: usize = 16 * 1024 * 1024;

/// Jobs that may wait for a thread, per thread, before callers wait to submit.
const QUEUED_PER_THREAD: usize = 64;

type Job = Box<dyn FnOnce() + Send>;

/// Why a job did not produce its result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// The job panicked; the message is the panic's.
    #[error("the Lua runner failed: {0}")]
    Panicked(String),
    /// The pool's threads are gone (the process is shutting down).
    #[error("the Lua runner is shut down")]
    Stopped,
}

/// A fixed set of threads for user code. Cheap to clone; the threads end when the last clone
/// is dropped and the queue is empty.
#[derive(Clone)]
pub(crate) struct LuaPool {
    jobs: mpsc::Sender<Job>,
    slots: Arc<Semaphore>,
    threads: usize,
}

impl std::fmt::Debug for LuaPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LuaPool")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl LuaPool {
    /// A pool of `threads` threads (at least one).
    pub(crate) fn new(threads: usize) -> std::io::Result<LuaPool> {
        let threads = threads.max(1);
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("lua-{index}"))
                .stack_size(STACK_SIZE)
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job, never while one runs.
                    let job = receiver
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })?;
        }
        Ok(LuaPool {
            jobs: sender,
            slots: Arc::new(Semaphore::new(threads * QUEUED_PER_THREAD)),
            threads,
        })
    }

    /// A pool with one thread per available core (at least two, so one long job never leaves
    /// the process without a runner).
    pub(crate) fn per_core() -> std::io::Result<LuaPool> {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        LuaPool::new(cores.max(2))
    }

    /// The process's pool, started on first use: one bound on user code for everything the
    /// process does (deliveries, `test`, validation of new hooks).
    pub(crate) fn shared() -> &'static LuaPool {
        static SHARED: OnceLock<LuaPool> = OnceLock::new();
        SHARED.get_or_init(|| {
            // Without threads the process cannot run user code at all: fail loudly at start.
            LuaPool::per_core().expect("cannot start the Lua runner threads")
        })
    }

    /// Runs `job` on a pool thread and waits for its result without blocking the caller's
    /// thread. Waits for a queue slot first when the pool is saturated.
    pub(crate) async fn run<R, F>(&self, job: F) -> Result<R, PoolError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolError::Stopped)?;
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let outcome = catch_unwind(AssertUnwindSafe(job)).map_err(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                PoolError::Panicked(message)
            });
            drop(slot);
            // The caller may have gone away (a cancelled request); nothing to tell it then.
            let _ = done.send(outcome);
        });
        self.jobs.send(job).map_err(|_| PoolError::Stopped)?;
        result.await.map_err(|_| PoolError::Stopped)?
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn runs_jobs_off_the_callers_thread() {
        let pool = LuaPool::new(2).unwrap();
        let caller = std::thread::current().id();
        let runner = pool.run(|| std::thread::current().id()).await.unwrap();
        assert_ne!(caller, runner);
        let name = pool
            .run(|| std::thread::current().name().map(str::to_string))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("lua-"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_job_fails_alone() {
        let pool = LuaPool::new(1).unwrap();
        let failed = pool.run(|| -> u32 { panic!("boom") }).await;
        assert_eq!(failed, Err(PoolError::Panicked("boom".into())));
        assert_eq!(pool.run(|| 7).await, Ok(7));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_busy_pool_does_not_block_the_runtime() {
        // Given a pool whose only thread is busy
        let pool = LuaPool::new(1).unwrap();
        let busy = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run(|| std::thread::sleep(Duration::from_millis(300)))
                    .await
            }
        });
        // When the runtime (one thread) has other work meanwhile
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ticks = tokio::time::timeout(Duration::from_secs(5), async {
            let mut ticks = 0;
            while !busy.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks += 1;
            }
            ticks
        })
        .await
        .unwrap();
        // Then it kept running while the job did
        assert!(ticks > 5, "the runtime stalled: {ticks} ticks");
    }
}

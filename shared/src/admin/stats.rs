//! `GET /event-hooks/stats` (beyond Kong, for the console's overview, spec §11): attempts,
//! failures, retries and p50/p99 latency per minute over the last hour.
//!
//! The series is computed on each call from the delivery log (SQLite `deliveries.db` in the
//! local server, the DynamoDB deliveries table in the deployed stack), through the log's window
//! query per hook: no second store to keep in step, and it expires with the log. It is bounded
//! ([`MAX_HOOKS`] hooks, [`MAX_RECORDS`] deliveries read); past a bound the answer says
//! `"truncated": true`. It is bounded in time too: the reads are sequential (one query per page
//! of each hook's log), so no read starts later than [`DEADLINE`] after the call; an answer cut
//! there covers the hooks read so far and says `"partial": true` (`hooks_read` of `hooks`), well
//! within the admin function's timeout (`scripts/check-build-inputs.py` checks the template
//! against [`DEADLINE`] and the SDK's operation timeout). Only deliveries of the hour (by their
//! event's time) are read, so retries of older deliveries are not counted. The log is read through
//! [`DeliveryLog::summarize_window`], a projection without events, response bodies or error
//! texts, so a call holds a few dozen bytes per attempt however large the logged events are.

use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::error::ApiError;
use super::AdminState;
use crate::delivery_log::{AttemptSummary, DeliveryLog, DeliveryStatus, DeliveryWindow};
use crate::events::now_millis;
use crate::store::{HookFilter, HookStore, StoreError};

/// Length of one bucket, in ms.
pub(crate) const BUCKET_MS: i64 = 60_000;
/// Buckets in the series: one hour of minutes.
pub(crate) const BUCKETS: usize = 60;
/// Most hooks whose deliveries are read.
pub(crate) const MAX_HOOKS: usize = 1000;
/// Most delivery records read in all.
pub(crate) const MAX_RECORDS: usize = 20_000;
/// Records read per call to the log.
const PAGE: usize = 500;
/// No read of the hooks or the log starts later than this after the call came in: the answer is
/// then `"partial": true`. The last read may still take the SDK's whole operation timeout
/// ([`crate::aws::OPERATION_TIMEOUT`]), which the admin function's timeout covers.
pub(crate) const DEADLINE: Duration = Duration::from_secs(4);

/// How many messages wait in the dead-letter queues, where the process can tell (the local
/// server's SQLite queues); the admin function has none and answers `"dead_letters": null`.
#[async_trait]
pub trait DeadLetterCount: Send + Sync + 'static {
    async fn count(&self) -> Result<u64, crate::queue::QueueError>;
}

/// `GET /event-hooks/stats`
pub(super) async fn get(State(state): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let deadline = Instant::now() + DEADLINE;
    let read = read_log(&*state.store, &*state.delivery_log, now_millis(), deadline).await?;
    let mut body = read.series.into_json();
    body["hooks"] = json!(read.hooks);
    body["hooks_read"] = json!(read.hooks_read);
    body["truncated"] = json!(read.truncated);
    body["partial"] = json!(read.partial);
    body["dead_letters"] = match &state.dead_letters {
        Some(dead_letters) => json!(dead_letters.count().await.map_err(ApiError::internal)?),
        None => Value::Null,
    };
    Ok(Json(body))
}

/// What [`read_log`] found.
#[derive(Debug)]
struct LogRead {
    series: Series,
    /// Hooks listed (at most [`MAX_HOOKS`]).
    hooks: usize,
    /// Hooks whose deliveries were all read (or up to [`MAX_RECORDS`]).
    hooks_read: usize,
    /// A bound on hooks or records was hit.
    truncated: bool,
    /// The [`DEADLINE`] came before every listed hook was read.
    partial: bool,
}

/// Reads the last hour of the delivery log as of `now` (Unix ms), starting no read after
/// `deadline`.
async fn read_log(
    store: &dyn HookStore,
    log: &dyn DeliveryLog,
    now: i64,
    deadline: Instant,
) -> Result<LogRead, StoreError> {
    // Buckets end at the end of the current minute.
    let end = (now / BUCKET_MS + 1) * BUCKET_MS;
    let start = end - BUCKET_MS * BUCKETS as i64;
    let mut read = LogRead {
        series: Series::new(start),
        hooks: 0,
        hooks_read: 0,
        truncated: false,
        partial: false,
    };
    let mut hooks = Vec::new();
    let mut after = None;
    loop {
        if Instant::now() >= deadline {
            read.partial = true;
            break;
        }
        let page = store
            .list(&HookFilter::default(), PAGE.min(MAX_HOOKS), after)
            .await?;
        hooks.extend(page.items.into_iter().map(|hook| hook.id));
        after = page.next;
        if after.is_none() {
            break;
        }
        if hooks.len() >= MAX_HOOKS {
            read.truncated = true;
            break;
        }
    }
    hooks.truncate(MAX_HOOKS);
    read.hooks = hooks.len();
    let window = DeliveryWindow {
        from: start,
        to: now,
        statuses: vec![
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
        ],
    };
    let mut records = 0usize;
    'hooks: for (index, hook) in hooks.iter().enumerate() {
        let mut after = None;
        loop {
            if Instant::now() >= deadline {
                read.partial = true;
                break 'hooks;
            }
            let page = log.summarize_window(*hook, &window, PAGE, after).await?;
            for record in &page.items {
                records += 1;
                read.series.add_delivery(record.status);
                for attempt in &record.attempts {
                    read.series.add_attempt(attempt);
                }
            }
            after = page.next;
            if records >= MAX_RECORDS {
                read.truncated = after.is_some() || index + 1 < hooks.len();
                read.hooks_read = index + 1;
                break 'hooks;
            }
            if after.is_none() {
                break;
            }
        }
        read.hooks_read = index + 1;
    }
    Ok(read)
}

/// Per-minute counts and latencies, from `start` (Unix ms) on.
#[derive(Debug)]
struct Series {
    start: i64,
    attempts: Vec<u64>,
    failures: Vec<u64>,
    retries: Vec<u64>,
    latencies: Vec<Vec<u64>>,
    /// Deliveries read, by their current status.
    delivered: u64,
    failed: u64,
    pending: u64,
}

impl Series {
    fn new(start: i64) -> Series {
        Series {
            start,
            attempts: vec![0; BUCKETS],
            failures: vec![0; BUCKETS],
            retries: vec![0; BUCKETS],
            latencies: vec![Vec::new(); BUCKETS],
            delivered: 0,
            failed: 0,
            pending: 0,
        }
    }

    fn add_delivery(&mut self, status: DeliveryStatus) {
        match status {
            DeliveryStatus::Delivered => self.delivered += 1,
            DeliveryStatus::Failed => self.failed += 1,
            DeliveryStatus::Pending => self.pending += 1,
            // Not read: the window asks for deliveries that were attempted.
            DeliveryStatus::NotSent => {}
        }
    }

    /// Counts an attempt in its minute; attempts outside the hour are left out.
    fn add_attempt(&mut self, attempt: &AttemptSummary) {
        let offset = attempt.at - self.start;
        if offset < 0 {
            return;
        }
        let Ok(index) = usize::try_from(offset / BUCKET_MS) else {
            return;
        };
        if index >= BUCKETS {
            return;
        }
        self.attempts[index] += 1;
        let ok = !attempt.errored
            && attempt
                .status
                .is_none_or(|status| (200..300).contains(&status));
        if !ok {
            self.failures[index] += 1;
        }
        if attempt.number > 1 {
            self.retries[index] += 1;
        }
        self.latencies[index].push(attempt.latency_ms);
    }

    fn into_json(mut self) -> Value {
        let buckets: Vec<Value> = (0..BUCKETS)
            .map(|i| {
                let latencies = &mut self.latencies[i];
                latencies.sort_unstable();
                json!({
                    "at": self.start + BUCKET_MS * i as i64,
                    "attempts": self.attempts[i],
                    "failures": self.failures[i],
                    "retries": self.retries[i],
                    "p50_ms": percentile(latencies, 50),
                    "p99_ms": percentile(latencies, 99),
                })
            })
            .collect();
        let mut all: Vec<u64> = self.latencies.concat();
        all.sort_unstable();
        json!({
            "bucket_seconds": BUCKET_MS / 1000,
            "from": self.start,
            "buckets": buckets,
            "totals": {
                "attempts": self.attempts.iter().sum::<u64>(),
                "failures": self.failures.iter().sum::<u64>(),
                "retries": self.retries.iter().sum::<u64>(),
                "p50_ms": percentile(&all, 50),
                "p99_ms": percentile(&all, 99),
                "delivered": self.delivered,
                "failed": self.failed,
                "pending": self.pending,
            },
        })
    }
}

/// The nearest-rank `p`th percentile of `sorted`, or `None` when it is empty.
fn percentile(sorted: &[u64], p: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(number: u32, at: i64, status: Option<u16>, latency_ms: u64) -> AttemptSummary {
        AttemptSummary {
            number,
            at,
            status,
            latency_ms,
            errored: false,
        }
    }

    /// The SQLite log, each window read taking `delay`: a slow back end.
    struct SlowLog {
        inner: crate::delivery_log::sqlite::SqliteDeliveryLog,
        delay: Duration,
    }

    #[async_trait]
    impl DeliveryLog for SlowLog {
        async fn claim_attempt(
            &self,
            key: crate::delivery_log::DeliveryKey,
            number: u32,
            ttl: Duration,
        ) -> Result<u32, StoreError> {
            self.inner.claim_attempt(key, number, ttl).await
        }
        async fn record_attempt(
            &self,
            key: crate::delivery_log::DeliveryKey,
            event: &crate::events::Event,
            attempt: crate::delivery_log::Attempt,
            status: DeliveryStatus,
            ttl: Duration,
            then: crate::delivery_log::Then,
        ) -> Result<Option<u32>, StoreError> {
            self.inner
                .record_attempt(key, event, attempt, status, ttl, then)
                .await
        }
        async fn get(
            &self,
            hook_id: uuid::Uuid,
            delivery_id: uuid::Uuid,
        ) -> Result<Option<crate::delivery_log::DeliveryRecord>, StoreError> {
            self.inner.get(hook_id, delivery_id).await
        }
        async fn list(
            &self,
            hook_id: uuid::Uuid,
            size: usize,
            max_bytes: usize,
            after: Option<crate::delivery_log::DeliveryPageToken>,
        ) -> Result<crate::delivery_log::DeliveryPage, StoreError> {
            self.inner.list(hook_id, size, max_bytes, after).await
        }
        async fn list_window(
            &self,
            hook_id: uuid::Uuid,
            window: &DeliveryWindow,
            size: usize,
            after: Option<crate::delivery_log::DeliveryPageToken>,
        ) -> Result<crate::delivery_log::DeliveryPage, StoreError> {
            self.inner.list_window(hook_id, window, size, after).await
        }
        async fn summarize_window(
            &self,
            hook_id: uuid::Uuid,
            window: &DeliveryWindow,
            size: usize,
            after: Option<crate::delivery_log::DeliveryPageToken>,
        ) -> Result<crate::delivery_log::DeliverySummaryPage, StoreError> {
            tokio::time::sleep(self.delay).await;
            self.inner
                .summarize_window(hook_id, window, size, after)
                .await
        }
    }

    #[tokio::test]
    async fn a_slow_log_is_answered_at_the_deadline_with_what_was_read() {
        use crate::sqlite::Database;
        use crate::store::sqlite::SqliteHookStore;
        use crate::store::Precondition;

        // Given ten hooks and a log taking 40 ms per read (400 ms in all)...
        let store = SqliteHookStore::new(Database::in_memory().unwrap())
            .await
            .unwrap();
        for _ in 0..10 {
            let hook = crate::model::Hook::log_on("crud");
            store.put(&hook, Precondition::Absent).await.unwrap();
        }
        let log = SlowLog {
            inner: crate::delivery_log::sqlite::SqliteDeliveryLog::new(
                Database::in_memory().unwrap(),
            )
            .await
            .unwrap(),
            delay: Duration::from_millis(40),
        };
        // ...when the deadline is 100 ms away, the answer comes by then and says it is partial...
        let started = Instant::now();
        let read = read_log(
            &store,
            &log,
            now_millis(),
            started + Duration::from_millis(100),
        )
        .await
        .unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
        assert!(read.partial, "{read:?}");
        assert_eq!(read.hooks, 10);
        assert!(read.hooks_read >= 1 && read.hooks_read < 10, "{read:?}");
        // ...and with time enough, every hook is read.
        let read = read_log(
            &store,
            &log,
            now_millis(),
            Instant::now() + Duration::from_secs(60),
        )
        .await
        .unwrap();
        assert!(!read.partial, "{read:?}");
        assert_eq!((read.hooks, read.hooks_read), (10, 10));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 99), Some(7));
        let hundred: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&hundred, 50), Some(50));
        assert_eq!(percentile(&hundred, 99), Some(99));
        assert_eq!(percentile(&[1, 2, 3], 50), Some(2));
    }

    #[test]
    fn attempts_land_in_their_minute_with_failures_and_retries() {
        let start = 1_000 * BUCKET_MS;
        let mut series = Series::new(start);
        series.add_attempt(&attempt(1, start + 5, Some(200), 10));
        series.add_attempt(&attempt(1, start + 30_000, Some(500), 30));
        series.add_attempt(&attempt(2, start + BUCKET_MS + 1, Some(204), 20));
        series.add_attempt(&AttemptSummary {
            errored: true,
            ..attempt(3, start + 59 * BUCKET_MS, None, 1)
        });
        // Outside the hour on either side: not counted.
        series.add_attempt(&attempt(1, start - 1, Some(200), 1));
        series.add_attempt(&attempt(1, start + 60 * BUCKET_MS, Some(200), 1));
        series.add_delivery(DeliveryStatus::Delivered);
        let json = series.into_json();
        let buckets = json["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), BUCKETS);
        assert_eq!(buckets[0]["attempts"], 2);
        assert_eq!(buckets[0]["failures"], 1);
        assert_eq!(buckets[0]["retries"], 0);
        assert_eq!(buckets[0]["p50_ms"], 10);
        assert_eq!(buckets[0]["p99_ms"], 30);
        assert_eq!(buckets[1]["retries"], 1);
        assert_eq!(buckets[2]["p50_ms"], Value::Null);
        assert_eq!(buckets[59]["failures"], 1);
        assert_eq!(buckets[59]["at"], start + 59 * BUCKET_MS);
        assert_eq!(json["totals"]["attempts"], 4);
        assert_eq!(json["totals"]["failures"], 2);
        assert_eq!(json["totals"]["retries"], 2);
        assert_eq!(json["totals"]["delivered"], 1);
        assert_eq!(json["totals"]["p50_ms"], 10);
    }
}

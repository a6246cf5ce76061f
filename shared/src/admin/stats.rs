//! `GET /event-hooks/stats` (beyond Kong, for the console's overview, spec §11): attempts,
//! failures, retries and p50/p99 latency per minute over the last hour.
//!
//! The series is computed on each call from the delivery log (SQLite `deliveries.db` in the
//! local server, the DynamoDB deliveries table in the deployed stack), through the log's window
//! query per hook: no second store to keep in step, and it expires with the log. It is bounded
//! ([`MAX_HOOKS`] hooks, [`MAX_RECORDS`] deliveries read); past a bound the answer says
//! `"truncated": true`. Only deliveries first attempted within the hour are read, so retries of
//! older deliveries are not counted.

use async_trait::async_trait;
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AdminState;
use crate::deliveries::{Attempt, DeliveryStatus, DeliveryWindow};
use crate::events::now_millis;
use crate::store::HookFilter;

/// Length of one bucket, in ms.
pub const BUCKET_MS: i64 = 60_000;
/// Buckets in the series: one hour of minutes.
pub const BUCKETS: usize = 60;
/// Most hooks whose deliveries are read.
pub const MAX_HOOKS: usize = 1000;
/// Most delivery records read in all.
pub const MAX_RECORDS: usize = 20_000;
/// Records read per call to the log.
const PAGE: usize = 500;

/// How many messages wait in the dead-letter queues, where the process can tell (the local
/// server's SQLite queues); the admin function has none and answers `"dead_letters": null`.
#[async_trait]
pub trait DeadLetterCount: Send + Sync + 'static {
    async fn count(&self) -> Result<u64, crate::queue::QueueError>;
}

/// `GET /event-hooks/stats`
pub async fn get(State(state): State<AdminState>) -> Result<Json<Value>, ApiError> {
    let now = now_millis();
    // Buckets end at the end of the current minute.
    let end = (now / BUCKET_MS + 1) * BUCKET_MS;
    let start = end - BUCKET_MS * BUCKETS as i64;
    let mut series = Series::new(start);
    let mut truncated = false;
    let mut hooks = Vec::new();
    let mut after = None;
    loop {
        let page = state
            .store
            .list(&HookFilter::default(), PAGE.min(MAX_HOOKS), after)
            .await?;
        hooks.extend(page.items.into_iter().map(|hook| hook.id));
        after = page.next;
        if after.is_none() {
            break;
        }
        if hooks.len() >= MAX_HOOKS {
            truncated = true;
            break;
        }
    }
    hooks.truncate(MAX_HOOKS);
    let window = DeliveryWindow {
        from: start,
        to: now,
        statuses: vec![
            DeliveryStatus::Pending,
            DeliveryStatus::Delivered,
            DeliveryStatus::Failed,
        ],
    };
    let mut read = 0usize;
    'hooks: for hook in &hooks {
        let mut after = None;
        loop {
            let page = state
                .delivery_log
                .list_window(*hook, &window, PAGE, after)
                .await?;
            for record in &page.items {
                read += 1;
                series.add_delivery(record.status);
                for attempt in &record.attempts {
                    series.add_attempt(attempt);
                }
            }
            after = page.next;
            if read >= MAX_RECORDS {
                truncated = after.is_some() || *hook != hooks[hooks.len() - 1];
                break 'hooks;
            }
            if after.is_none() {
                break;
            }
        }
    }
    let mut body = series.into_json();
    body["hooks"] = json!(hooks.len());
    body["truncated"] = json!(truncated);
    body["dead_letters"] = match &state.dead_letters {
        Some(dead_letters) => json!(dead_letters.count().await.map_err(ApiError::internal)?),
        None => Value::Null,
    };
    Ok(Json(body))
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
    fn add_attempt(&mut self, attempt: &Attempt) {
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
        let ok = attempt.error.is_none()
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

    fn attempt(number: u32, at: i64, status: Option<u16>, latency_ms: u64) -> Attempt {
        Attempt {
            number,
            at,
            status,
            latency_ms,
            error: None,
            response_body: None,
        }
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
        series.add_attempt(&Attempt {
            error: Some("connection refused".into()),
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

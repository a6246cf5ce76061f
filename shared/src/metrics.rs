//! Dispatch metrics as CloudWatch Embedded Metric Format: one JSON log line that CloudWatch turns
//! into metrics (events in, deliveries ok/failed/retried/dead-lettered, snoozed, unchanged,
//! latency) without any API call from the function. The counters themselves ([`Stats`], read as
//! [`Counts`]) are kept here too: the dispatcher bumps them, hosts read and report them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};

/// Counters of what the dispatcher did, for operators and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub events: AtomicU64,
    pub rejected: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub snoozed: AtomicU64,
    pub unchanged: AtomicU64,
    /// Attempts put back on the deliveries queue to keep their hook's `max_rate`.
    pub rate_limited: AtomicU64,
    /// Hooks disabled by endpoint protection (a `410 Gone`, or failing for too long).
    pub(crate) hooks_disabled: AtomicU64,
    /// Attempts parked because the invocation's deadline was too near to start them.
    pub(crate) deadline_parked: AtomicU64,
    /// Attempts handed back to the deliveries queue because their hook's lane held them (full,
    /// slow or its circuit open) or the dispatcher was at its limit.
    pub deferred: AtomicU64,
    /// Copies of a delivery dropped because the same delivery id was in flight already.
    pub(crate) in_flight_skipped: AtomicU64,
    /// Attempts of deliveries that may be copies, claimed before they were sent (see
    /// `DeliveryLog::claim_attempt`): each costs the log one more write.
    pub(crate) claimed: AtomicU64,
    /// Of those, the ones sent as a later attempt than their message said, because the number
    /// had gone out already.
    pub(crate) renumbered: AtomicU64,
    /// Deliveries to paused or disabled hooks, logged as not sent.
    pub not_sent: AtomicU64,
    /// Attempts inside an event's processing cut at the inline budget, sent again from the
    /// deliveries queue.
    pub cut: AtomicU64,
    /// Milliseconds of each attempt since the last [`Stats::take_latencies`].
    latencies: std::sync::Mutex<Vec<u64>>,
}

/// The counters of [`Stats`] at one moment; subtract two to get what happened in between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub events: u64,
    pub rejected: u64,
    pub delivered: u64,
    pub failed: u64,
    pub retried: u64,
    pub dead_lettered: u64,
    pub snoozed: u64,
    pub unchanged: u64,
    /// Attempts sent back to wait for their hook's `max_rate` slot (once each).
    pub rate_limited: u64,
    /// Attempts handed back to the deliveries queue by their hook's lane.
    pub deferred: u64,
    /// Deliveries to paused or disabled hooks, logged as not sent.
    pub not_sent: u64,
}

impl std::ops::Sub for Counts {
    type Output = Counts;

    fn sub(self, earlier: Counts) -> Counts {
        Counts {
            events: self.events - earlier.events,
            rejected: self.rejected - earlier.rejected,
            delivered: self.delivered - earlier.delivered,
            failed: self.failed - earlier.failed,
            retried: self.retried - earlier.retried,
            dead_lettered: self.dead_lettered - earlier.dead_lettered,
            snoozed: self.snoozed - earlier.snoozed,
            unchanged: self.unchanged - earlier.unchanged,
            rate_limited: self.rate_limited - earlier.rate_limited,
            deferred: self.deferred - earlier.deferred,
            not_sent: self.not_sent - earlier.not_sent,
        }
    }
}

impl Stats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn counts(&self) -> Counts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counts {
            events: get(&self.events),
            rejected: get(&self.rejected),
            delivered: get(&self.delivered),
            failed: get(&self.failed),
            retried: get(&self.retried),
            dead_lettered: get(&self.dead_lettered),
            snoozed: get(&self.snoozed),
            unchanged: get(&self.unchanged),
            rate_limited: get(&self.rate_limited),
            deferred: get(&self.deferred),
            not_sent: get(&self.not_sent),
        }
    }

    pub(crate) fn record_latency(&self, latency: Duration) {
        let mut latencies = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: a host that never takes them keeps only the latest.
        if latencies.len() >= 10_000 {
            latencies.clear();
        }
        latencies.push(latency.as_millis() as u64);
    }

    /// The attempt latencies recorded since the last call, in milliseconds.
    pub fn take_latencies(&self) -> Vec<u64> {
        std::mem::take(&mut *self.latencies.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The CloudWatch namespace of the metrics.
pub(crate) const NAMESPACE: &str = "EventHooks";

/// The one dimension of every metric: the stack that emits it, so that two stacks in one account
/// (and region) never add up in one metric, nor share an alarm.
pub const STACK_DIMENSION: &str = "Stack";

/// The metrics' names, as alarms in `template.yaml` name them (`scripts/check-build-inputs.py`
/// checks every alarm on [`NAMESPACE`] against this module and the dimension above).
pub mod names {
    pub(crate) const EVENTS_IN: &str = "EventsIn";
    pub(crate) const EVENTS_REJECTED: &str = "EventsRejected";
    pub(crate) const DELIVERED: &str = "Delivered";
    /// Deliveries given up on (their last attempt failed for good), each dead-lettered.
    pub(crate) const DELIVERY_FAILED: &str = "DeliveryFailed";
    /// Failed attempts whose delivery is tried again later.
    pub(crate) const DELIVERY_RETRIED: &str = "DeliveryRetried";
    /// Deliveries the dispatcher sent to the deliveries dead-letter queue.
    pub(crate) const DEAD_LETTERED: &str = "DeadLettered";
    pub(crate) const SNOOZED: &str = "Snoozed";
    pub(crate) const UNCHANGED: &str = "Unchanged";
    pub(crate) const RATE_LIMITED: &str = "RateLimited";
    pub(crate) const DEFERRED: &str = "Deferred";
    pub(crate) const NOT_SENT: &str = "NotSent";
    pub(crate) const DELIVERY_LATENCY: &str = "DeliveryLatency";
}

/// The EMF line for what happened since the last one in the stack `stack`: `counts` are the
/// differences, `latencies_ms` the attempt latencies. `None` when nothing happened.
pub fn emf_line(
    counts: Counts,
    latencies_ms: &[u64],
    timestamp_ms: i64,
    stack: &str,
) -> Option<String> {
    use names::*;
    let named = [
        (EVENTS_IN, counts.events),
        (EVENTS_REJECTED, counts.rejected),
        (DELIVERED, counts.delivered),
        (DELIVERY_FAILED, counts.failed),
        (DELIVERY_RETRIED, counts.retried),
        (DEAD_LETTERED, counts.dead_lettered),
        (SNOOZED, counts.snoozed),
        (UNCHANGED, counts.unchanged),
        (RATE_LIMITED, counts.rate_limited),
        (DEFERRED, counts.deferred),
        (NOT_SENT, counts.not_sent),
    ];
    if named.iter().all(|(_, n)| *n == 0) && latencies_ms.is_empty() {
        return None;
    }
    let mut line = Map::new();
    let mut definitions = Vec::new();
    for (name, value) in named {
        definitions.push(json!({ "Name": name, "Unit": "Count" }));
        line.insert(name.into(), json!(value));
    }
    if !latencies_ms.is_empty() {
        definitions.push(json!({ "Name": DELIVERY_LATENCY, "Unit": "Milliseconds" }));
        line.insert(DELIVERY_LATENCY.into(), json!(latencies_ms));
    }
    line.insert(STACK_DIMENSION.into(), json!(stack));
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[STACK_DIMENSION]],
                "Metrics": definitions,
            }],
        }),
    );
    Some(Value::Object(line).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_each_metric_it_carries() {
        let counts = Counts {
            events: 3,
            delivered: 2,
            retried: 1,
            ..Counts::default()
        };
        let line: Value =
            serde_json::from_str(&emf_line(counts, &[12, 40], 1000, "hooks-prod").unwrap())
                .unwrap();
        assert_eq!(line["EventsIn"], 3);
        assert_eq!(line["Delivered"], 2);
        assert_eq!(line["DeliveryLatency"], json!([12, 40]));
        let metrics = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(metrics["Namespace"], "EventHooks");
        // Per stack: the dimension is declared and its value is on the line.
        assert_eq!(metrics["Dimensions"], json!([["Stack"]]));
        assert_eq!(line["Stack"], "hooks-prod");
        let names: Vec<&str> = metrics["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        for name in [
            "EventsIn",
            "Delivered",
            "DeadLettered",
            "Snoozed",
            "DeliveryLatency",
        ] {
            assert!(names.contains(&name), "{name}");
            assert!(line.get(name).is_some(), "{name}");
        }
    }

    #[test]
    fn nothing_to_say_is_no_line() {
        assert_eq!(emf_line(Counts::default(), &[], 0, "s"), None);
    }

    /// Every name alarms may use (the `names` module) is on a line, so an alarm the build check
    /// accepts watches a metric that exists.
    #[test]
    fn every_named_metric_is_emitted() {
        let source = include_str!("metrics.rs");
        let block = &source[source.find("pub mod names {").unwrap()..];
        let block = &block[..block.find("\n}").unwrap()];
        let declared: Vec<&str> = block
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                l.strip_prefix("pub(crate) const ")
                    .or_else(|| l.strip_prefix("pub const "))
            })
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        let counts = Counts {
            events: 1,
            ..Counts::default()
        };
        let line: Value = serde_json::from_str(&emf_line(counts, &[1], 0, "s").unwrap()).unwrap();
        let emitted: Vec<&str> = line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(declared.len(), 12);
        for name in declared {
            assert!(
                emitted.contains(&name),
                "{name} is declared but not emitted"
            );
        }
    }
}

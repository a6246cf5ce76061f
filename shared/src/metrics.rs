//! Dispatch metrics as CloudWatch Embedded Metric Format: one JSON log line that CloudWatch turns
//! into metrics (events in, deliveries ok/failed/retried/dead-lettered, snoozed, unchanged,
//! latency) without any API call from the function.

use serde_json::{json, Map, Value};

use crate::dispatch::Counts;

/// The CloudWatch namespace of the metrics.
pub const NAMESPACE: &str = "EventHooks";

/// The EMF line for what happened since the last one: `counts` are the differences, `latencies_ms`
/// the attempt latencies. `None` when nothing happened.
pub fn emf_line(counts: Counts, latencies_ms: &[u64], timestamp_ms: i64) -> Option<String> {
    let named = [
        ("EventsIn", counts.events),
        ("EventsRejected", counts.rejected),
        ("Delivered", counts.delivered),
        ("DeliveryFailed", counts.failed),
        ("DeliveryRetried", counts.retried),
        ("DeadLettered", counts.dead_lettered),
        ("Snoozed", counts.snoozed),
        ("Unchanged", counts.unchanged),
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
        definitions.push(json!({ "Name": "DeliveryLatency", "Unit": "Milliseconds" }));
        line.insert("DeliveryLatency".into(), json!(latencies_ms));
    }
    line.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[]],
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
            serde_json::from_str(&emf_line(counts, &[12, 40], 1000).unwrap()).unwrap();
        assert_eq!(line["EventsIn"], 3);
        assert_eq!(line["Delivered"], 2);
        assert_eq!(line["DeliveryLatency"], json!([12, 40]));
        let metrics = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(metrics["Namespace"], "EventHooks");
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
        assert_eq!(emf_line(Counts::default(), &[], 0), None);
    }
}

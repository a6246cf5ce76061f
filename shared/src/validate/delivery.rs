//! A hook's own delivery rules (spec §8, §12): `retry` (its delays and which failures are
//! retried), `timeouts` and `max_in_flight`, each bounded by [`crate::limits`] so that an attempt
//! stays within its message's lease.

use serde_json::{Map, Value};

use super::fields::{at_most, integer, present, record_at};
use super::problems::{Errors, PathSegment};
use crate::limits;
use crate::model::{RetryOn, RetryPolicy, Timeouts};

/// `retry`: `{"delays": [seconds…], "on": "default"|"5xx"}`, both optional (absent or null
/// `delays`: the deployment's schedule), at most [`limits::MAX_RETRY_DELAYS`] delays of at most
/// [`limits::MAX_RETRY_DELAY_SECONDS`] each.
pub(super) fn optional_retry(map: &Map<String, Value>, errors: &mut Errors) -> Option<RetryPolicy> {
    let fields = record_at(map, "retry", &["delays", "on"], errors)?;
    let before = errors.count();
    let delays = match present(fields, "delays") {
        None => None,
        Some(Value::Array(items)) => {
            if items.len() > limits::MAX_RETRY_DELAYS {
                errors.add(&["retry", "delays"], at_most(limits::MAX_RETRY_DELAYS));
            }
            let mut delays = Vec::new();
            for (i, item) in items.iter().take(limits::MAX_RETRY_DELAYS).enumerate() {
                let path = vec![
                    PathSegment::Key("retry".into()),
                    PathSegment::Key("delays".into()),
                    PathSegment::Index(i),
                ];
                match integer(item) {
                    Some(n) if (0..=i64::from(limits::MAX_RETRY_DELAY_SECONDS)).contains(&n) => {
                        delays.push(n as u32)
                    }
                    Some(_) => errors.add_at(
                        path,
                        format!(
                            "value should be between 0 and {}",
                            limits::MAX_RETRY_DELAY_SECONDS
                        ),
                    ),
                    None => errors.add_at(path, "expected an integer"),
                }
            }
            Some(delays)
        }
        Some(_) => {
            errors.add(&["retry", "delays"], "expected an array");
            None
        }
    };
    let on = match present(fields, "on") {
        None => RetryOn::Default,
        Some(Value::String(s)) if s == "default" => RetryOn::Default,
        Some(Value::String(s)) if s == "5xx" => RetryOn::ServerErrors,
        Some(_) => {
            errors.add(&["retry", "on"], "expected one of: default, 5xx");
            RetryOn::Default
        }
    };
    (errors.count() == before).then_some(RetryPolicy { delays, on })
}

/// `timeouts`: `{"connect_ms": n, "read_ms": n}`, each optional (absent or null: the
/// deployment's), at most [`limits::MAX_CONNECT_TIMEOUT_MS`] and [`limits::MAX_READ_TIMEOUT_MS`]:
/// together they keep an attempt within [`limits::MAX_ATTEMPT`], below its message's lease.
pub(super) fn optional_timeouts(map: &Map<String, Value>, errors: &mut Errors) -> Option<Timeouts> {
    let fields = record_at(map, "timeouts", &["connect_ms", "read_ms"], errors)?;
    let before = errors.count();
    let mut millis = |key: &str, max: u32| match present(fields, key) {
        None => None,
        Some(value) => match integer(value) {
            Some(n) if (1..=i64::from(max)).contains(&n) => Some(n as u32),
            Some(_) => {
                errors.add(
                    &["timeouts", key],
                    format!("value should be between 1 and {max}"),
                );
                None
            }
            None => {
                errors.add(&["timeouts", key], "expected an integer");
                None
            }
        },
    };
    let connect_ms = millis("connect_ms", limits::MAX_CONNECT_TIMEOUT_MS);
    let read_ms = millis("read_ms", limits::MAX_READ_TIMEOUT_MS);
    (errors.count() == before).then_some(Timeouts {
        connect_ms,
        read_ms,
    })
}

/// `max_in_flight`: attempts of the hook in flight at once, 1 to [`limits::MAX_HOOK_IN_FLIGHT`].
pub(super) fn optional_max_in_flight(map: &Map<String, Value>, errors: &mut Errors) -> Option<u32> {
    let value = present(map, "max_in_flight")?;
    match integer(value) {
        Some(n) if (1..=i64::from(limits::MAX_HOOK_IN_FLIGHT)).contains(&n) => Some(n as u32),
        Some(_) => {
            errors.add(
                &["max_in_flight"],
                format!(
                    "value should be between 1 and {}",
                    limits::MAX_HOOK_IN_FLIGHT
                ),
            );
            None
        }
        None => {
            errors.add(&["max_in_flight"], "expected an integer");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{DeliveryPolicy, Hook, HookView, RetryOn, RetryPolicy, Timeouts};
    use crate::validate::hook;
    use crate::validate::test_support::{ctx, violation};
    use serde_json::{json, Value};

    #[test]
    fn a_hook_may_carry_its_own_retry_schedule_and_timeouts() {
        let base = json!({"source":"s","handler":"log"});
        let plain = hook(&base, &ctx()).unwrap();
        assert_eq!(plain.delivery, DeliveryPolicy::default());
        let shown = HookView::from(&plain).into_json();
        assert_eq!(
            (&shown["retry"], &shown["timeouts"]),
            (&Value::Null, &Value::Null)
        );

        let mut input = base.clone();
        input["retry"] = json!({"delays": [300, 300, 300.0], "on": "5xx"});
        input["timeouts"] = json!({"connect_ms": 3000, "read_ms": 3000});
        input["max_in_flight"] = json!(2);
        let own = hook(&input, &ctx()).unwrap();
        assert_eq!(
            own.delivery,
            DeliveryPolicy {
                retry: Some(RetryPolicy {
                    delays: Some(vec![300; 3]),
                    on: RetryOn::ServerErrors
                }),
                timeouts: Some(Timeouts {
                    connect_ms: Some(3000),
                    read_ms: Some(3000)
                }),
                max_in_flight: Some(2),
            }
        );
        // Read back as written, and `on` defaults to the spec's rules.
        let shown = HookView::from(&own).into_json();
        assert_eq!(
            shown["retry"],
            json!({"delays": [300, 300, 300], "on": "5xx"})
        );
        assert_eq!(serde_json::from_value::<Hook>(shown).unwrap(), own);
        input["retry"] = json!({"delays": []});
        assert_eq!(
            hook(&input, &ctx()).unwrap().delivery.retry.unwrap().on,
            RetryOn::Default
        );
        // Each part is optional: the deployment's schedule with Edge's rule, Edge's read timeout.
        input["retry"] = json!({"on": "5xx"});
        input["timeouts"] = json!({"read_ms": 3000, "connect_ms": null});
        let partial = hook(&input, &ctx()).unwrap();
        assert_eq!(partial.delivery.retry.as_ref().unwrap().delays, None);
        assert_eq!(
            HookView::from(&partial).into_json()["timeouts"],
            json!({"connect_ms": null, "read_ms": 3000})
        );

        let cases = [
            (json!({"retry": 5}), json!({"retry": "expected a record"})),
            (
                json!({"retry": {"delays": [1], "x": 1}}),
                json!({"retry": {"x": "unknown field"}}),
            ),
            (
                json!({"retry": {"delays": "5"}}),
                json!({"retry": {"delays": "expected an array"}}),
            ),
            (
                json!({"retry": {"delays": [1, -1, 1.5, 86401]}}),
                json!({"retry": {"delays": [null, "value should be between 0 and 86400",
                    "expected an integer", "value should be between 0 and 86400"]}}),
            ),
            (
                json!({"retry": {"delays": vec![1; 17]}}),
                json!({"retry": {"delays": "length must be at most 16"}}),
            ),
            (
                json!({"retry": {"delays": [], "on": "4xx"}}),
                json!({"retry": {"on": "expected one of: default, 5xx"}}),
            ),
            (
                json!({"timeouts": {"connect_ms": 0, "read_ms": 20001}}),
                json!({"timeouts": {"connect_ms": "value should be between 1 and 10000",
                    "read_ms": "value should be between 1 and 20000"}}),
            ),
            (
                json!({"timeouts": {"connect_ms": 10001}, "max_in_flight": 0}),
                json!({"timeouts": {"connect_ms": "value should be between 1 and 10000"},
                    "max_in_flight": "value should be between 1 and 64"}),
            ),
            (
                json!({"max_in_flight": 2.5}),
                json!({"max_in_flight": "expected an integer"}),
            ),
            (
                json!({"timeouts": {"connect_ms": "3", "read_ms": 3}}),
                json!({"timeouts": {"connect_ms": "expected an integer"}}),
            ),
        ];
        for (extra, fields) in cases {
            let mut input = base.clone();
            for (k, v) in extra.as_object().unwrap() {
                input[k] = v.clone();
            }
            assert_eq!(violation(input).fields(), fields, "{extra}");
        }
    }
}

//! The hook's own top-level fields besides its handler and delivery rules: `snooze`, `name`,
//! `tags`, `max_rate`, and the protection state the dispatcher keeps (`disabled_reason`,
//! `failing_since`), which a hook read back may carry.

use serde_json::{Map, Value};

use super::fields::{at_most, integral, optional_string, present};
use super::problems::{Errors, PathSegment};
use crate::limits;
use crate::model::DisabledReason;

/// The largest `snooze` accepted, as Kong's integer fields allow.
const MAX_SNOOZE: u64 = i32::MAX as u64;

/// `max_rate`: deliveries per second, a number above 0 (fractions allowed: 0.5 is one every 2 s).
pub(super) fn optional_rate(map: &Map<String, Value>, errors: &mut Errors) -> Option<f64> {
    match present(map, "max_rate")? {
        Value::Number(n) => match n.as_f64() {
            Some(rate) if rate > 0.0 && rate.is_finite() => Some(rate),
            _ => {
                errors.add(&["max_rate"], "value must be greater than 0");
                None
            }
        },
        _ => {
            errors.add(&["max_rate"], "expected a number");
            None
        }
    }
}

/// `disabled_reason` and `failing_since` are kept by the dispatcher (spec §8 "Beyond"): a request
/// may carry them back as it read them (a PATCH merges the stored hook, a PUT may send a hook as
/// `GET` returned it), and they are type-checked, but an enabled hook has no `disabled_reason`,
/// and re-enabling a hook the dispatcher disabled starts its failure count afresh.
pub(super) fn protection_state(
    map: &Map<String, Value>,
    enabled: bool,
    errors: &mut Errors,
) -> (Option<DisabledReason>, Option<i64>) {
    let reason = match present(map, "disabled_reason") {
        None => None,
        Some(value) => match disabled_reason(value) {
            Some(reason) => Some(reason),
            None => {
                errors.add(
                    &["disabled_reason"],
                    "expected a record with an integer 'at' and a string 'reason'",
                );
                None
            }
        },
    };
    let failing_since = match present(map, "failing_since") {
        None => None,
        Some(value) => match integral(value) {
            Some(at) => Some(at),
            None => {
                errors.add(&["failing_since"], "expected an integer");
                None
            }
        },
    };
    if enabled {
        // Re-enabled after the dispatcher disabled it: the target is given a fresh start.
        let failing_since = if reason.is_some() {
            None
        } else {
            failing_since
        };
        (None, failing_since)
    } else {
        (reason, failing_since)
    }
}

/// A `disabled_reason` as read back: exactly `at` (an integer) and `reason` (a string).
fn disabled_reason(value: &Value) -> Option<DisabledReason> {
    let fields = value.as_object()?;
    if fields.len() != 2 {
        return None;
    }
    Some(DisabledReason {
        at: integral(fields.get("at")?)?,
        reason: fields.get("reason")?.as_str()?.to_owned(),
    })
}

pub(super) fn optional_snooze(map: &Map<String, Value>, errors: &mut Errors) -> Option<u32> {
    let value = present(map, "snooze")?;
    let integer = match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => n.as_i64().unwrap_or(i64::MAX),
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
            n.as_f64().unwrap_or_default() as i64
        }
        _ => {
            errors.add(&["snooze"], "expected an integer");
            return None;
        }
    };
    match u64::try_from(integer) {
        Ok(n) if n <= MAX_SNOOZE => Some(n as u32),
        _ => {
            errors.add(
                &["snooze"],
                format!("value should be between 0 and {MAX_SNOOZE}"),
            );
            None
        }
    }
}

/// Names are used in URLs and logs: keep them to Kong's `utf8_name` alphabet.
pub(super) fn optional_name(map: &Map<String, Value>, errors: &mut Errors) -> Option<String> {
    let name = optional_string(map, "name", errors)?;
    if name.len() > limits::MAX_NAME_BYTES {
        errors.add(&["name"], at_most(limits::MAX_NAME_BYTES));
        return None;
    }
    let valid = name
        .chars()
        .all(|c| !c.is_ascii() || c.is_ascii_alphanumeric() || ".-_~".contains(c));
    if !valid {
        errors.add(
            &["name"],
            format!(
                "invalid value '{name}': the only accepted ascii characters are alphanumerics or ., -, _, and ~"
            ),
        );
        return None;
    }
    Some(name)
}

pub(super) fn tags(map: &Map<String, Value>, errors: &mut Errors) -> Vec<String> {
    let Some(value) = present(map, "tags") else {
        return Vec::new();
    };
    let Some(items) = value.as_array() else {
        errors.add(&["tags"], "expected an array");
        return Vec::new();
    };
    if items.len() > limits::MAX_TAGS {
        errors.add(&["tags"], at_most(limits::MAX_TAGS));
        return Vec::new();
    }
    let mut tags = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let path = vec![PathSegment::Key("tags".into()), PathSegment::Index(index)];
        match item {
            Value::String(tag) if tag.len() > limits::MAX_TAG_BYTES => {
                errors.add_at(path, at_most(limits::MAX_TAG_BYTES))
            }
            Value::String(tag) if is_valid_tag(tag) => {
                if !tags.contains(tag) {
                    tags.push(tag.clone());
                }
            }
            Value::String(tag) => errors.add_at(
                path,
                format!(
                    "invalid tag '{tag}': expected printable ascii (except `,` and `/`) or valid utf-8 sequences"
                ),
            ),
            _ => errors.add_at(path, "expected a string"),
        }
    }
    tags
}

fn is_valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag
            .chars()
            .all(|c| !(c.is_ascii_control() || c == ',' || c == '/' || c == ' '))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::hook;
    use crate::validate::test_support::{ctx, limit_holds, violation};
    use serde_json::json;

    #[test]
    fn read_back_protection_state_is_checked_exactly() {
        assert_eq!(integral(&json!(1e300)), None);
        assert_eq!(
            disabled_reason(&json!({"at": 7.0, "reason": "gone"})),
            Some(DisabledReason {
                at: 7,
                reason: "gone".into()
            })
        );
        assert_eq!(
            disabled_reason(&json!({"at": 7, "reason": "gone", "x": 1})),
            None
        );
        assert_eq!(disabled_reason(&json!({"at": "7", "reason": "gone"})), None);
    }

    #[test]
    fn tags_and_names() {
        let v = violation(json!({"source":"s","handler":"log","name":"a b","tags":["ok","a,b",3]}));
        let fields = v.fields();
        assert!(fields["name"]
            .as_str()
            .unwrap()
            .starts_with("invalid value 'a b'"));
        assert!(fields["tags"][0].is_null());
        assert!(fields["tags"][1]
            .as_str()
            .unwrap()
            .starts_with("invalid tag 'a,b'"));
        assert_eq!(fields["tags"][2], "expected a string");
    }

    #[test]
    fn limit_on_tags() {
        let tagged = |tags: Vec<String>| json!({"source":"s","handler":"log","tags":tags});
        limit_holds(
            32,
            |n| tagged((0..n).map(|i| format!("t{i}")).collect()),
            json!({"tags":"length must be at most 32"}),
        );
        limit_holds(
            128,
            |n| tagged(vec!["t".repeat(n)]),
            json!({"tags":["length must be at most 128"]}),
        );
    }

    #[test]
    fn limit_on_name() {
        limit_holds(
            128,
            |n| json!({"source":"s","handler":"log","name":"n".repeat(n)}),
            json!({"name":"length must be at most 128"}),
        );
    }

    #[test]
    fn protection_fields_default_to_null_and_max_rate_is_checked() {
        let log = json!({"source":"crud","handler":"log"});
        let value = serde_json::to_value(hook(&log, &ctx()).unwrap()).unwrap();
        for field in ["disabled_reason", "failing_since", "max_rate"] {
            assert_eq!(value[field], Value::Null, "{field} in {value}");
        }
        let with_rate = |rate: Value| {
            let mut input = log.clone();
            input["max_rate"] = rate;
            hook(&input, &ctx())
        };
        assert_eq!(with_rate(json!(0.5)).unwrap().max_rate, Some(0.5));
        assert_eq!(with_rate(json!(20)).unwrap().max_rate, Some(20.0));
        assert_eq!(with_rate(Value::Null).unwrap().max_rate, None);
        for (rate, message) in [
            (json!(0), "value must be greater than 0"),
            (json!(-3), "value must be greater than 0"),
            (json!("fast"), "expected a number"),
        ] {
            let v = with_rate(rate.clone()).expect_err("rejected");
            assert_eq!(v.fields(), json!({"max_rate": message}), "{rate}");
            assert_eq!(
                v.message(),
                format!("schema violation (max_rate: {message})")
            );
        }
    }

    #[test]
    fn re_enabling_a_disabled_hook_clears_its_reason_and_failure_time() {
        // A hook as GET shows it after the dispatcher paused it
        let mut paused = json!({"source":"crud","handler":"log","enabled":false,
            "disabled_reason":{"at":5,"reason":"target answered 410 Gone"},"failing_since":3});
        let kept = hook(&paused, &ctx()).unwrap();
        assert_eq!(kept.disabled_reason.unwrap().at, 5);
        assert_eq!(kept.failing_since, Some(3));
        // PATCH {"enabled": true} merges into it
        paused["enabled"] = json!(true);
        let enabled = hook(&paused, &ctx()).unwrap();
        assert_eq!(
            (enabled.disabled_reason, enabled.failing_since),
            (None, None)
        );
        // A mistyped reason is reported like any field
        let v = violation(
            json!({"source":"crud","handler":"log","disabled_reason":"gone",
            "failing_since":"x"}),
        );
        assert_eq!(
            v.fields(),
            json!({"disabled_reason":"expected a record with an integer 'at' and a string 'reason'",
                "failing_since":"expected an integer"})
        );
    }
}

//! Kong's form conventions: dotted keys nest (`config.headers.x=1`), `a[1]=`, `a[]=` and repeated
//! keys make arrays, and string values are coerced by the hook schema (spec §2), so the curl
//! commands of Kong's docs (`--data config.url=…`, `-F config.functions=@fn.lua`) work unchanged.
//!
//! Decoding is iterative and a key nests at most [`MAX_BODY_DEPTH`] levels, so no key, however
//! deep, can exhaust the stack here or in the recursive walks of the decoded value later.

use serde_json::{Map, Value};

use crate::limits::{MAX_BODY_DEPTH, MAX_BODY_KEYS};

/// Most values a decoded form may hold, counting the holes that `a[1000]=` leaves. Each key makes
/// at most [`MAX_BODY_DEPTH`] values of its own, but an index pads its array: without this
/// budget 1,000 keys like `a1[1000][1000]…` would make some 30 million values from 200 KB.
pub(crate) const MAX_FORM_VALUES: usize = MAX_BODY_KEYS * MAX_BODY_DEPTH;

/// Why a form body cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// A key that cannot be turned into a path (e.g. `a..b` or `a[x]`).
    #[error("invalid form key '{0}'")]
    BadKey(String),
    /// A key of more than [`MAX_BODY_DEPTH`] steps; holds the key's first characters.
    #[error("Cannot parse form body: key '{0}…' is nested deeper than {MAX_BODY_DEPTH} levels")]
    TooDeep(String),
    /// Array indexes that would make more than [`MAX_FORM_VALUES`] values.
    #[error("Cannot parse form body: its array indexes make more than {MAX_FORM_VALUES} values")]
    TooManyValues,
}

enum Step {
    Key(String),
    /// 1-based, as in Kong (Lua) form arrays.
    Index(usize),
    Append,
}

fn parse_key(key: &str) -> Result<Vec<Step>, FormError> {
    // Every `.` and every `[` starts a step: counted before anything is allocated.
    let depth = 1 + key.bytes().filter(|b| matches!(b, b'.' | b'[')).count();
    if depth > MAX_BODY_DEPTH {
        let shown: String = key.chars().take(32).collect();
        return Err(FormError::TooDeep(shown));
    }
    let bad = || FormError::BadKey(key.to_string());
    let mut steps = Vec::new();
    for part in key.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if name.is_empty() {
            return Err(bad());
        }
        steps.push(Step::Key(name.to_string()));
        while !rest.is_empty() {
            let close = rest.find(']').ok_or_else(bad)?;
            let inside = &rest[1..close];
            if inside.is_empty() {
                steps.push(Step::Append);
            } else {
                let index: usize = inside.parse().map_err(|_| bad())?;
                if index == 0 || index > 1000 {
                    return Err(bad());
                }
                steps.push(Step::Index(index));
            }
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(bad());
            }
        }
    }
    Ok(steps)
}

/// Builds the nested object described by form `pairs`; every leaf is a string.
pub(crate) fn decode_pairs<I, K, V>(pairs: I) -> Result<Value, FormError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: Into<String>,
{
    let mut root = Value::Object(Map::new());
    let mut budget = MAX_FORM_VALUES;
    for (key, value) in pairs {
        let steps = parse_key(key.as_ref())?;
        match insert(&mut root, &steps, Value::String(value.into()), &mut budget) {
            Ok(()) => {}
            Err(Conflict::Shape) => return Err(FormError::BadKey(key.as_ref().to_string())),
            Err(Conflict::Budget) => return Err(FormError::TooManyValues),
        }
    }
    Ok(root)
}

/// Why a pair cannot be inserted.
enum Conflict {
    /// The key uses a value as an object or array, or an object as a value.
    Shape,
    /// The form would hold more than [`MAX_FORM_VALUES`] values.
    Budget,
}

/// Walks (creating as needed) the path of `steps` from `node` and puts `value` at its end.
/// A loop rather than recursion: the stack stays flat whatever the depth.
fn insert(
    mut node: &mut Value,
    steps: &[Step],
    value: Value,
    budget: &mut usize,
) -> Result<(), Conflict> {
    let mut spend = |count: usize| -> Result<(), Conflict> {
        *budget = budget.checked_sub(count).ok_or(Conflict::Budget)?;
        Ok(())
    };
    for step in steps {
        node = match step {
            Step::Key(key) => {
                if node.is_null() {
                    *node = Value::Object(Map::new());
                }
                let map = node.as_object_mut().ok_or(Conflict::Shape)?;
                if !map.contains_key(key) {
                    spend(1)?;
                }
                map.entry(key.clone()).or_insert(Value::Null)
            }
            Step::Index(index) => {
                if node.is_null() {
                    *node = Value::Array(Vec::new());
                }
                let items = node.as_array_mut().ok_or(Conflict::Shape)?;
                if items.len() < *index {
                    spend(index - items.len())?;
                    items.resize(*index, Value::Null);
                }
                &mut items[index - 1]
            }
            Step::Append => {
                if node.is_null() {
                    *node = Value::Array(Vec::new());
                }
                let items = node.as_array_mut().ok_or(Conflict::Shape)?;
                spend(1)?;
                items.push(Value::Null);
                items.last_mut().expect("just pushed")
            }
        };
    }
    // A repeated key turns the value into an array.
    match node {
        Value::Null => *node = value,
        Value::Array(items) => items.push(value),
        Value::String(_) => {
            let first = node.take();
            *node = Value::Array(vec![first, value]);
        }
        Value::Object(_) | Value::Bool(_) | Value::Number(_) => return Err(Conflict::Shape),
    }
    Ok(())
}

/// What the hook schema says a field holds, for coercing form strings.
#[derive(Clone, Copy)]
enum Kind {
    Boolean,
    Integer,
    /// A number, fractions allowed (`max_rate`).
    Number,
    Array,
    /// An array of integers (`retry.delays`).
    IntegerArray,
    /// Map of strings: entries stay as given.
    Map,
    Scalar,
}

fn top_level_kind(key: &str) -> Kind {
    match key {
        "on_change" | "enabled" => Kind::Boolean,
        "snooze" | "created_at" | "updated_at" | "failing_since" | "max_in_flight" => Kind::Integer,
        "max_rate" => Kind::Number,
        "tags" => Kind::Array,
        _ => Kind::Scalar,
    }
}

fn config_kind(key: &str) -> Kind {
    match key {
        "ssl_verify" | "payload_format" | "body_format" | "headers_format" => Kind::Boolean,
        "functions" => Kind::Array,
        "headers" | "payload" => Kind::Map,
        _ => Kind::Scalar,
    }
}

/// Coerces the string leaves of a decoded hook form by the hook schema: `"true"`/`"false"` to
/// booleans, digits to integers, `""` to null, a lone scalar for an array field to an array.
/// Values that do not fit stay strings, so validation reports them with the usual message.
pub(crate) fn coerce_hook(value: &mut Value) {
    let Some(map) = value.as_object_mut() else {
        return;
    };
    for (key, field) in map.iter_mut() {
        if key == "config" {
            if let Some(config) = field.as_object_mut() {
                for (key, field) in config.iter_mut() {
                    coerce(field, config_kind(key));
                }
            } else {
                coerce(field, Kind::Scalar);
            }
        } else if key == "retry" || key == "timeouts" {
            // The hook's own delivery rules: `retry.delays[1]=300`, `timeouts.read_ms=3000`.
            if let Some(fields) = field.as_object_mut() {
                for (key, field) in fields.iter_mut() {
                    coerce(field, delivery_kind(key));
                }
            } else {
                coerce(field, Kind::Scalar);
            }
        } else {
            coerce(field, top_level_kind(key));
        }
    }
}

/// The kinds of the fields of `retry` and `timeouts`.
fn delivery_kind(key: &str) -> Kind {
    match key {
        "delays" => Kind::IntegerArray,
        "connect_ms" | "read_ms" => Kind::Integer,
        _ => Kind::Scalar,
    }
}

fn coerce(value: &mut Value, kind: Kind) {
    if value.as_str() == Some("") {
        *value = Value::Null;
        return;
    }
    match kind {
        Kind::Boolean => match value.as_str() {
            Some("true") => *value = Value::Bool(true),
            Some("false") => *value = Value::Bool(false),
            _ => {}
        },
        Kind::Integer => {
            if let Some(n) = value.as_str().and_then(|s| s.parse::<i64>().ok()) {
                *value = Value::from(n);
            }
        }
        Kind::Number => {
            let number = value.as_str().and_then(|s| s.parse::<f64>().ok());
            if let Some(n) = number.and_then(serde_json::Number::from_f64) {
                *value = Value::Number(n);
            }
        }
        Kind::Array => {
            if value.is_string() {
                *value = Value::Array(vec![value.take()]);
            } else if let Some(items) = value.as_array_mut() {
                // `a[2]=x` alone leaves a hole at 1; holes are dropped as Kong does.
                items.retain(|item| !item.is_null());
            }
        }
        Kind::IntegerArray => {
            coerce(value, Kind::Array);
            if let Some(items) = value.as_array_mut() {
                for item in items {
                    coerce(item, Kind::Integer);
                }
            }
        }
        Kind::Map | Kind::Scalar => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(pairs: &[(&str, &str)]) -> Value {
        decode_pairs(pairs.iter().map(|(k, v)| (*k, v.to_string()))).unwrap()
    }

    #[test]
    fn nests_dotted_keys() {
        assert_eq!(
            decode(&[
                ("source", "crud"),
                ("config.url", "https://x.test"),
                ("config.headers.content-type", "application/json"),
            ]),
            json!({"source":"crud","config":{"url":"https://x.test","headers":{"content-type":"application/json"}}})
        );
    }

    #[test]
    fn builds_arrays_three_ways() {
        assert_eq!(
            decode(&[("tags", "a"), ("tags", "b")]),
            json!({"tags":["a","b"]})
        );
        assert_eq!(
            decode(&[("tags[]", "a"), ("tags[]", "b")]),
            json!({"tags":["a","b"]})
        );
        assert_eq!(
            decode(&[("config.functions[2]", "b"), ("config.functions[1]", "a")]),
            json!({"config":{"functions":["a","b"]}})
        );
    }

    #[test]
    fn rejects_malformed_keys() {
        for key in ["a..b", ".a", "a[x]", "a[0]", "a[1", "a[1]b"] {
            assert!(decode_pairs([(key, "v")]).is_err(), "{key}");
        }
        // A key used both as a value and as an object cannot be represented.
        assert!(decode_pairs([("config", "x"), ("config.url", "y")]).is_err());
    }

    #[test]
    fn keys_nest_at_most_32_levels() {
        let at_limit = vec!["a"; 32].join(".");
        let mut expected = json!("v");
        for _ in 0..32 {
            expected = json!({ "a": expected });
        }
        assert_eq!(decode(&[(at_limit.as_str(), "v")]), expected);
        // Brackets count as levels too.
        let brackets = format!("{}[]", vec!["a"; 31].join("."));
        assert!(decode_pairs([(brackets.as_str(), "v")]).is_ok());

        let over = format!("{at_limit}.a");
        let shown = vec!["a"; 17].join(".");
        assert_eq!(
            decode_pairs([(over.as_str(), "v")]).unwrap_err(),
            FormError::TooDeep(shown[..32].to_string())
        );
        assert_eq!(
            FormError::TooDeep("a.a".into()).to_string(),
            "Cannot parse form body: key 'a.a…' is nested deeper than 32 levels"
        );
        let brackets = format!("{at_limit}[1]");
        assert!(matches!(
            decode_pairs([(brackets.as_str(), "v")]),
            Err(FormError::TooDeep(_))
        ));
    }

    #[test]
    fn a_key_10000_levels_deep_is_refused_without_overflowing() {
        let key = vec!["a"; 10_000].join(".");
        assert!(matches!(
            decode_pairs([(key.as_str(), "1")]),
            Err(FormError::TooDeep(_))
        ));
    }

    #[test]
    fn array_holes_count_against_a_budget() {
        // One index of 1000 is fine: Kong allows it.
        assert!(decode_pairs([("a[1000]", "v")]).is_ok());
        let deep = "[1000]".repeat(31);
        let keys: Vec<String> = (0..2).map(|i| format!("k{i}{deep}")).collect();
        assert_eq!(
            decode_pairs(keys.iter().map(|k| (k.as_str(), "v"))).unwrap_err(),
            FormError::TooManyValues
        );
        // Just within the budget: 32 arrays padded to 1,000 values, minus the key entries.
        let keys: Vec<String> = (0..31).map(|i| format!("k{i}[999]")).collect();
        assert!(decode_pairs(keys.iter().map(|k| (k.as_str(), "v"))).is_ok());
    }

    #[test]
    fn coerces_by_schema() {
        let mut value = decode(&[
            ("snooze", "60"),
            ("on_change", "true"),
            ("enabled", "false"),
            ("event", ""),
            ("tags", "one"),
            ("config.ssl_verify", "true"),
            ("config.secret", ""),
            ("config.functions", "return function() end"),
            ("config.headers.x-empty", ""),
            ("config.url", "https://x.test"),
        ]);
        coerce_hook(&mut value);
        assert_eq!(
            value,
            json!({"snooze":60,"on_change":true,"enabled":false,"event":null,"tags":["one"],
                   "config":{"ssl_verify":true,"secret":null,"functions":["return function() end"],
                             "headers":{"x-empty":""},"url":"https://x.test"}})
        );
    }

    #[test]
    fn retry_and_timeouts_are_coerced_from_forms() {
        let mut value = decode(&[
            ("retry.delays[1]", "300"),
            ("retry.delays[2]", "5"),
            ("retry.on", "5xx"),
            ("timeouts.connect_ms", "3000"),
            ("timeouts.read_ms", "x"),
        ]);
        coerce_hook(&mut value);
        assert_eq!(
            value,
            json!({"retry": {"delays": [300, 5], "on": "5xx"},
                   "timeouts": {"connect_ms": 3000, "read_ms": "x"}})
        );
        let mut value = decode(&[("retry.delays", "60")]);
        coerce_hook(&mut value);
        assert_eq!(value, json!({"retry": {"delays": [60]}}));
    }

    #[test]
    fn max_rate_takes_fractions_from_forms() {
        let mut value = decode(&[("max_rate", "0.5"), ("failing_since", "12")]);
        coerce_hook(&mut value);
        assert_eq!(value, json!({"max_rate":0.5,"failing_since":12}));
        let mut value = decode(&[("max_rate", "fast")]);
        coerce_hook(&mut value);
        assert_eq!(value, json!({"max_rate":"fast"}));
    }

    #[test]
    fn leaves_unfit_values_for_validation_to_report() {
        let mut value = decode(&[("snooze", "abc"), ("on_change", "maybe"), ("snooze2", "1")]);
        coerce_hook(&mut value);
        assert_eq!(
            value,
            json!({"snooze":"abc","on_change":"maybe","snooze2":"1"})
        );
    }
}

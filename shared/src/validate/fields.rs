//! Readers of one field each, shared by every part of a hook: strings, booleans, integers,
//! records, maps of strings and URLs. Each reads its field from a JSON object, records Kong's
//! message for a problem in [`Errors`] and answers `None`, so that the caller goes on reading
//! and every problem of an input is reported at once.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::problems::Errors;
use super::url_syntax;
use crate::limits;

/// An object at top-level `key` whose keys are all in `known` (others are reported), or `None`
/// when absent, null or not an object (reported).
pub(super) fn record_at<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    known: &[&str],
    errors: &mut Errors,
) -> Option<&'a Map<String, Value>> {
    match present(map, key)? {
        Value::Object(fields) => {
            let mut ok = true;
            for name in fields.keys() {
                if !known.contains(&name.as_str()) {
                    errors.add(&[key, name], "unknown field");
                    ok = false;
                }
            }
            ok.then_some(fields)
        }
        _ => {
            errors.add(&[key], "expected a record");
            None
        }
    }
}

/// An integral JSON number (`3` or `3.0`), or `None`.
pub(super) fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        _ => None,
    }
}

/// An integer, also when written as an integral float (`5.0`): JSON does not tell them apart.
pub(super) fn integral(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        let x = value.as_f64()?;
        // i64::MAX as f64 rounds up to 2^63, which does not fit: the bound is exclusive.
        // Both bounds exclusive: a float at ±2^63 may be a rounded integer beyond the range.
        (x.fract() == 0.0 && x > i64::MIN as f64 && x < i64::MAX as f64).then_some(x as i64)
    })
}

/// The value of `key` unless it is absent or null (Kong treats both as "not given").
pub(super) fn present<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

pub(super) fn required_string(
    map: &Map<String, Value>,
    key: &str,
    errors: &mut Errors,
) -> Option<String> {
    if present(map, key).is_none() {
        errors.add(&[key], "required field missing");
        return None;
    }
    optional_string(map, key, errors)
}

pub(super) fn optional_string(
    map: &Map<String, Value>,
    key: &str,
    errors: &mut Errors,
) -> Option<String> {
    string_at(map, &[key], errors)
}

/// A string at `path` (relative to `map`, the last element being the key): non-empty when given.
pub(super) fn string_at(
    map: &Map<String, Value>,
    path: &[&str],
    errors: &mut Errors,
) -> Option<String> {
    let key = path.last().expect("a path names a key");
    match present(map, key)? {
        Value::String(s) if s.is_empty() => {
            errors.add(path, "length must be at least 1");
            None
        }
        Value::String(s) => Some(s.clone()),
        _ => {
            errors.add(path, "expected a string");
            None
        }
    }
}

pub(super) fn bool_at(
    map: &Map<String, Value>,
    path: &[&str],
    errors: &mut Errors,
) -> Option<bool> {
    let key = path.last().expect("a path names a key");
    match present(map, key)? {
        Value::Bool(b) => Some(*b),
        _ => {
            errors.add(path, "expected a boolean");
            None
        }
    }
}

pub(super) fn optional_bool(
    map: &Map<String, Value>,
    key: &str,
    errors: &mut Errors,
) -> Option<bool> {
    bool_at(map, &[key], errors)
}

/// Why a `config.url` with `user:password@` is refused.
pub const URL_CREDENTIALS: &str =
    "credentials in url are not allowed: send them in config.headers (e.g. Authorization)";

/// Why a URL that WHATWG parsing takes is still refused (see [`url_syntax`]).
pub(super) const URL_SYNTAX: &str =
    "invalid url: expected http(s)://host[:port][/path][?query][#fragment], \
     the host a DNS name or an IPv4 or [IPv6] address, other characters percent-encoded";

/// `config.url`: an absolute http(s) URL with a host and no credentials, with Kong's messages.
pub(super) fn url(map: &Map<String, Value>, errors: &mut Errors) -> Option<String> {
    let path = ["config", "url"];
    if present(map, "url").is_none() {
        errors.add(&path, "required field missing");
        return None;
    }
    let raw = string_at(map, &path, errors)?;
    if raw.len() > limits::MAX_URL_BYTES {
        errors.add(&path, at_most(limits::MAX_URL_BYTES));
        return None;
    }
    match url::Url::parse(&raw) {
        Ok(parsed) if !matches!(parsed.scheme(), "http" | "https") => {
            errors.add(
                &path,
                format!(
                    "unsupported scheme '{}' in url: expected http or https",
                    parsed.scheme()
                ),
            );
            None
        }
        // WHATWG parsing forgives `http:///x` and `http:x`; Kong (and most clients) do not.
        Ok(parsed)
            if parsed.host_str().is_none_or(str::is_empty)
                || !raw[parsed.scheme().len()..].starts_with("://")
                || raw[parsed.scheme().len() + 3..].starts_with('/') =>
        {
            errors.add(&path, "missing host in url");
            None
        }
        // Credentials in the URL would travel with every view of the hook (events, pings,
        // logs), where only `secret` is redacted: they belong in `config.headers`.
        Ok(parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            errors.add(&path, URL_CREDENTIALS);
            None
        }
        Ok(_) if !url_syntax::is_well_formed(&raw) => {
            errors.add(&path, URL_SYNTAX);
            None
        }
        Ok(_) => Some(raw),
        Err(url::ParseError::RelativeUrlWithoutBase) => {
            errors.add(&path, "missing scheme in url");
            None
        }
        Err(url::ParseError::EmptyHost) => {
            errors.add(&path, "missing host in url");
            None
        }
        Err(err) => {
            errors.add(&path, format!("invalid url: {err}"));
            None
        }
    }
}

/// The limits and entry check of one map of strings under `config`.
pub(super) struct MapRules {
    pub(super) max_entries: usize,
    pub(super) max_name_bytes: Option<usize>,
    pub(super) max_value_bytes: usize,
    /// May reject an entry with a message.
    pub(super) check: fn(&str, &str) -> Option<&'static str>,
}

/// A map of strings under `config.<key>`, within `rules`.
pub(super) fn string_map(
    map: &Map<String, Value>,
    key: &str,
    rules: MapRules,
    errors: &mut Errors,
) -> Option<BTreeMap<String, String>> {
    let value = present(map, key)?;
    let Some(entries) = value.as_object() else {
        errors.add(&["config", key], "expected a map");
        return None;
    };
    // One error for the whole map, not one per entry: 5,000 entries give a short answer.
    if entries.len() > rules.max_entries {
        errors.add(&["config", key], at_most(rules.max_entries));
        return None;
    }
    let mut result = BTreeMap::new();
    for (name, value) in entries {
        if let Some(max) = rules.max_name_bytes.filter(|max| name.len() > *max) {
            // The name itself is the problem, so it is not used as the error's path.
            errors.add(
                &["config", key],
                format!("name '{}…' is longer than {max} bytes", prefix(name, 32)),
            );
            continue;
        }
        match value {
            Value::String(s) if s.len() > rules.max_value_bytes => {
                errors.add(&["config", key, name], at_most(rules.max_value_bytes))
            }
            Value::String(s) => match (rules.check)(name, s) {
                Some(problem) => errors.add(&["config", key, name], problem),
                None => {
                    result.insert(name.clone(), s.clone());
                }
            },
            _ => errors.add(&["config", key, name], "expected a string"),
        }
    }
    Some(result)
}

/// Kong's message for a string, array or map over its maximum length.
pub(super) fn at_most(max: usize) -> String {
    format!("length must be at most {max}")
}

/// The first `chars` characters of `text`, for quoting long input in a message.
pub(super) fn prefix(text: &str, chars: usize) -> &str {
    match text.char_indices().nth(chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::test_support::{limit_holds, violation};
    use serde_json::json;

    #[test]
    fn missing_url_is_kongs_message() {
        let v = violation(json!({"source":"crud","handler":"webhook","config":{}}));
        assert_eq!(
            v.message(),
            "schema violation (config.url: required field missing)"
        );
        assert_eq!(
            v.fields(),
            json!({"config":{"url":"required field missing"}})
        );
    }

    #[test]
    fn url_problems() {
        for (url, message) in [
            ("example.com/x", "missing scheme in url"),
            ("http://", "missing host in url"),
            ("http:///x", "missing host in url"),
            ("http:x.test", "missing host in url"),
            ("https://user:pass@x.test/", URL_CREDENTIALS),
            ("https://user@x.test/", URL_CREDENTIALS),
            ("https://:pass@x.test/", URL_CREDENTIALS),
            (
                "ftp://example.com",
                "unsupported scheme 'ftp' in url: expected http or https",
            ),
            ("https://g.mmnlm*", URL_SYNTAX),
            ("http://0x7f.1/", URL_SYNTAX),
            ("http://a.b/{id}", URL_SYNTAX),
        ] {
            let v = violation(json!({"source":"crud","handler":"webhook","config":{"url":url}}));
            assert_eq!(v.fields()["config"]["url"], message, "{url}");
        }
    }

    #[test]
    fn mistyped_fields() {
        let v = violation(
            json!({"source":1,"handler":"webhook","snooze":"abc","on_change":"yes",
            "config":{"url":"https://a.b","ssl_verify":"no","headers":{"x":1}}}),
        );
        assert_eq!(
            v.fields(),
            json!({"source":"expected a string","snooze":"expected an integer",
                   "on_change":"expected a boolean",
                   "config":{"ssl_verify":"expected a boolean","headers":{"x":"expected a string"}}})
        );
    }

    #[test]
    fn limit_on_url() {
        let base = "https://a.b/";
        limit_holds(
            2048,
            |n| {
                json!({"source":"s","handler":"webhook","config":{
                    "url":format!("{base}{}", "p".repeat(n - base.len()))}})
            },
            json!({"config":{"url":"length must be at most 2048"}}),
        );
    }

    #[test]
    fn integers_written_as_floats_are_read_exactly() {
        assert_eq!(integral(&json!(5.0)), Some(5));
        assert_eq!(integral(&json!(-3)), Some(-3));
        assert_eq!(integral(&json!(0.5)), None);
        assert_eq!(integral(&json!(1e300)), None);
    }
}

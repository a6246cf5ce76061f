//! Turns untrusted input into a checked [`Hook`] (spec §1), or into Kong's schema-violation errors.
//!
//! The input is a JSON object, from a JSON body or a decoded form (see [`crate::form`]). Every
//! problem is collected, not just the first, so one answer tells the user everything to fix.
//! Lambda functions are compiled (and their chunk run) in the Lua sandbox here, at create/update
//! time, so a broken function is a 400 and never a delivery failure later.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};
use uuid::Uuid;

use crate::limits;
use crate::lua::{self, LuaPolicy};
use crate::model::{
    payload_encoding, DeliveryPolicy, DisabledReason, Handler, HandlerKind, Hook, HttpMethod,
    LambdaConfig, LogConfig, RetryOn, RetryPolicy, SignatureScheme, Timeouts, WebhookConfig,
    WebhookCustomConfig,
};
use crate::outbound::signing::standard_key;
use crate::template::Template;

/// One step of the path to a field: an object key or a 0-based array index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldError {
    pub path: Vec<PathSegment>,
    pub message: String,
}

impl FieldError {
    /// Kong's dotted form of the path; array positions are 1-based as in Lua.
    pub fn dotted_path(&self) -> String {
        let parts: Vec<String> = self
            .path
            .iter()
            .map(|seg| match seg {
                PathSegment::Key(k) => k.clone(),
                PathSegment::Index(i) => (i + 1).to_string(),
            })
            .collect();
        parts.join(".")
    }
}

/// Every problem found in one input; rendered as Kong's `schema violation` error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchemaViolation {
    errors: Vec<FieldError>,
}

impl SchemaViolation {
    /// A violation with a single field error, e.g. for checks made outside this module.
    pub fn single(path: &[&str], message: impl Into<String>) -> SchemaViolation {
        SchemaViolation {
            errors: vec![FieldError {
                path: path
                    .iter()
                    .map(|k| PathSegment::Key(k.to_string()))
                    .collect(),
                message: message.into(),
            }],
        }
    }

    /// A violation from top-level field problems, or `None` when there are none.
    pub fn from_fields(problems: Vec<(String, String)>) -> Option<SchemaViolation> {
        if problems.is_empty() {
            return None;
        }
        Some(SchemaViolation {
            errors: problems
                .into_iter()
                .map(|(key, message)| FieldError {
                    path: vec![PathSegment::Key(key)],
                    message,
                })
                .collect(),
        })
    }

    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    /// The same problems for an input found under `key` of a larger one (`config.url` →
    /// `hook.config.url`).
    pub fn under(mut self, key: &str) -> SchemaViolation {
        for error in &mut self.errors {
            error.path.insert(0, PathSegment::Key(key.to_owned()));
        }
        self
    }

    /// `schema violation (a: x)` or `N schema violations (a: x; b.c: y)`, sorted by path.
    pub fn message(&self) -> String {
        let mut parts: Vec<String> = self
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.dotted_path(), e.message))
            .collect();
        parts.sort();
        match parts.len() {
            1 => format!("schema violation ({})", parts[0]),
            n => format!("{n} schema violations ({})", parts.join("; ")),
        }
    }

    /// The errors as a nested object mirroring the input (`{"config":{"url":"…"}}`).
    pub fn fields(&self) -> Value {
        let mut root = Value::Object(Map::new());
        for error in &self.errors {
            insert_error(&mut root, &error.path, &error.message);
        }
        root
    }
}

impl fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for SchemaViolation {}

fn insert_error(node: &mut Value, path: &[PathSegment], message: &str) {
    let Some((first, rest)) = path.split_first() else {
        // A message on a node that also has nested errors keeps the nested ones.
        if !node.is_object() && !node.is_array() || node.as_object().is_some_and(Map::is_empty) {
            *node = Value::String(message.to_string());
        }
        return;
    };
    match first {
        PathSegment::Key(key) => {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            let child = node
                .as_object_mut()
                .expect("just made an object")
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            insert_error(child, rest, message);
        }
        PathSegment::Index(index) => {
            if !node.is_array() {
                *node = Value::Array(Vec::new());
            }
            let items = node.as_array_mut().expect("just made an array");
            if items.len() <= *index {
                items.resize(index + 1, Value::Null);
            }
            if items[*index].is_null() && !rest.is_empty() {
                items[*index] = Value::Object(Map::new());
            }
            insert_error(&mut items[*index], rest, message);
        }
    }
}

/// What validation needs besides the input.
#[derive(Debug, Clone)]
pub struct Context {
    /// The id the hook gets (from the path, the body, or freshly generated).
    pub id: Uuid,
    /// Unix seconds; kept from the stored hook on updates.
    pub created_at: i64,
    /// Unix seconds.
    pub now: i64,
    /// Whether and how user Lua may run.
    pub lua: LuaPolicy,
}

const TOP_LEVEL_FIELDS: &[&str] = &[
    "id",
    "created_at",
    "updated_at",
    "source",
    "event",
    "handler",
    "snooze",
    "on_change",
    "config",
    "enabled",
    "name",
    "tags",
    "disabled_reason",
    "failing_since",
    "max_rate",
    "max_in_flight",
    "retry",
    "timeouts",
    // Shown by `GET` beside the entity (the hook's lane in the local dispatcher), accepted and
    // ignored so that a hook read can be written back as it is.
    "lane",
];

/// The largest `snooze` accepted, as Kong's integer fields allow.
const MAX_SNOOZE: u64 = i32::MAX as u64;

/// Checks `input` as a whole hook and builds it, or reports every problem found.
pub fn hook(input: &Value, ctx: &Context) -> Result<Hook, SchemaViolation> {
    let mut errors = Errors::default();
    let Some(map) = input.as_object() else {
        return Err(SchemaViolation {
            errors: vec![FieldError {
                path: vec![PathSegment::Key("@entity".into())],
                message: "expected a record".into(),
            }],
        });
    };
    for key in map.keys() {
        if !TOP_LEVEL_FIELDS.contains(&key.as_str()) {
            errors.add(&[key], "unknown field");
        }
    }
    if let Some(id) = present(map, "id") {
        if id.as_str().and_then(|s| Uuid::parse_str(s).ok()).is_none() {
            errors.add(&["id"], "expected a valid UUID");
        }
    }

    let source = required_string(map, "source", &mut errors);
    let event = optional_string(map, "event", &mut errors);
    let snooze = optional_snooze(map, &mut errors);
    let on_change = optional_bool(map, "on_change", &mut errors);
    let enabled = optional_bool(map, "enabled", &mut errors).unwrap_or(true);
    let name = optional_name(map, &mut errors);
    let tags = tags(map, &mut errors);
    let max_rate = optional_rate(map, &mut errors);
    let delivery = DeliveryPolicy {
        retry: optional_retry(map, &mut errors),
        timeouts: optional_timeouts(map, &mut errors),
        max_in_flight: optional_max_in_flight(map, &mut errors),
    };
    let (disabled_reason, failing_since) = protection_state(map, enabled, &mut errors);

    let handler = match present(map, "handler") {
        None => {
            errors.add(&["handler"], "required field missing");
            None
        }
        Some(Value::String(name)) => match HandlerKind::parse(name) {
            Some(kind) => config(kind, map.get("config"), ctx, &mut errors),
            None => {
                errors.add(&["handler"], format!("unknown type: {name}"));
                None
            }
        },
        Some(_) => {
            errors.add(&["handler"], "expected a string");
            None
        }
    };

    if !errors.0.is_empty() {
        return Err(SchemaViolation { errors: errors.0 });
    }
    let (Some(source), Some(handler)) = (source, handler) else {
        unreachable!("a missing required field is always reported as an error")
    };
    Ok(Hook {
        id: ctx.id,
        created_at: ctx.created_at,
        updated_at: ctx.now,
        source,
        event,
        handler,
        snooze,
        on_change,
        enabled,
        name,
        tags,
        disabled_reason,
        failing_since,
        max_rate,
        delivery,
    })
}

/// `retry`: `{"delays": [seconds…], "on": "default"|"5xx"}`, both optional (absent or null
/// `delays`: the deployment's schedule), at most [`limits::MAX_RETRY_DELAYS`] delays of at most
/// [`limits::MAX_RETRY_DELAY_SECONDS`] each.
fn optional_retry(map: &Map<String, Value>, errors: &mut Errors) -> Option<RetryPolicy> {
    let fields = record_at(map, "retry", &["delays", "on"], errors)?;
    let before = errors.0.len();
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
    (errors.0.len() == before).then_some(RetryPolicy { delays, on })
}

/// `timeouts`: `{"connect_ms": n, "read_ms": n}`, each optional (absent or null: the
/// deployment's), at most [`limits::MAX_CONNECT_TIMEOUT_MS`] and [`limits::MAX_READ_TIMEOUT_MS`]:
/// together they keep an attempt within [`limits::MAX_ATTEMPT`], below its message's lease.
fn optional_timeouts(map: &Map<String, Value>, errors: &mut Errors) -> Option<Timeouts> {
    let fields = record_at(map, "timeouts", &["connect_ms", "read_ms"], errors)?;
    let before = errors.0.len();
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
    (errors.0.len() == before).then_some(Timeouts {
        connect_ms,
        read_ms,
    })
}

/// An object at top-level `key` whose keys are all in `known` (others are reported), or `None`
/// when absent, null or not an object (reported).
fn record_at<'a>(
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
fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        _ => None,
    }
}

/// `max_in_flight`: attempts of the hook in flight at once, 1 to [`limits::MAX_HOOK_IN_FLIGHT`].
fn optional_max_in_flight(map: &Map<String, Value>, errors: &mut Errors) -> Option<u32> {
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

/// `max_rate`: deliveries per second, a number above 0 (fractions allowed: 0.5 is one every 2 s).
fn optional_rate(map: &Map<String, Value>, errors: &mut Errors) -> Option<f64> {
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
fn protection_state(
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

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: &[&str], message: impl Into<String>) {
        self.add_at(
            path.iter()
                .map(|k| PathSegment::Key(k.to_string()))
                .collect(),
            message,
        );
    }

    fn add_at(&mut self, path: Vec<PathSegment>, message: impl Into<String>) {
        self.0.push(FieldError {
            path,
            message: message.into(),
        });
    }
}

/// The value of `key` unless it is absent or null (Kong treats both as "not given").
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

/// An integer, also when written as an integral float (`5.0`): JSON does not tell them apart.
fn integral(value: &Value) -> Option<i64> {
    value.as_i64().or_else(|| {
        let x = value.as_f64()?;
        // i64::MAX as f64 rounds up to 2^63, which does not fit: the bound is exclusive.
        // Both bounds exclusive: a float at ±2^63 may be a rounded integer beyond the range.
        (x.fract() == 0.0 && x > i64::MIN as f64 && x < i64::MAX as f64).then_some(x as i64)
    })
}

fn present<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

fn required_string(map: &Map<String, Value>, key: &str, errors: &mut Errors) -> Option<String> {
    if present(map, key).is_none() {
        errors.add(&[key], "required field missing");
        return None;
    }
    optional_string(map, key, errors)
}

fn optional_string(map: &Map<String, Value>, key: &str, errors: &mut Errors) -> Option<String> {
    string_at(map, &[key], errors)
}

/// A string at `path` (relative to `map`, the last element being the key): non-empty when given.
fn string_at(map: &Map<String, Value>, path: &[&str], errors: &mut Errors) -> Option<String> {
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

fn bool_at(map: &Map<String, Value>, path: &[&str], errors: &mut Errors) -> Option<bool> {
    let key = path.last().expect("a path names a key");
    match present(map, key)? {
        Value::Bool(b) => Some(*b),
        _ => {
            errors.add(path, "expected a boolean");
            None
        }
    }
}

fn optional_bool(map: &Map<String, Value>, key: &str, errors: &mut Errors) -> Option<bool> {
    bool_at(map, &[key], errors)
}

fn optional_snooze(map: &Map<String, Value>, errors: &mut Errors) -> Option<u32> {
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
fn optional_name(map: &Map<String, Value>, errors: &mut Errors) -> Option<String> {
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

fn tags(map: &Map<String, Value>, errors: &mut Errors) -> Vec<String> {
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

/// The handler's configuration with defaults filled in.
fn config(
    kind: HandlerKind,
    value: Option<&Value>,
    ctx: &Context,
    errors: &mut Errors,
) -> Option<Handler> {
    let empty = Map::new();
    let map = match value {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => {
            errors.add(&["config"], "expected a record");
            return None;
        }
    };
    let allowed = allowed_fields(kind);
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.add(&["config", key], "unknown field");
        }
    }
    let before = errors.0.len();
    // Every field is read (so every problem is reported) before the handler is built; a field
    // that is `None` here has recorded its error, and the handler is dropped below.
    let handler = match kind {
        HandlerKind::Webhook => webhook(map, errors),
        HandlerKind::WebhookCustom => webhook_custom(map, errors),
        HandlerKind::Log => Some(Handler::Log(LogConfig {})),
        HandlerKind::Lambda => Some(Handler::Lambda(LambdaConfig {
            functions: functions(map, ctx, errors),
        })),
    };
    // Templates are parsed only once every limit has held, so an oversized hook costs no parsing.
    if errors.0.len() == before {
        if let Some(Handler::WebhookCustom(config)) = &handler {
            check_custom(config, &ctx.lua, errors);
        }
    }
    handler.filter(|_| errors.0.len() == before)
}

/// The fields `config` may have for a handler of `kind`.
fn allowed_fields(kind: HandlerKind) -> &'static [&'static str] {
    match kind {
        HandlerKind::Webhook => &["url", "headers", "secret", "ssl_verify", "signature"],
        HandlerKind::WebhookCustom => &[
            "url",
            "method",
            "payload",
            "payload_format",
            "body",
            "body_format",
            "headers",
            "headers_format",
            "secret",
            "ssl_verify",
            "signature",
        ],
        HandlerKind::Log => &[],
        HandlerKind::Lambda => &["functions"],
    }
}

/// A `webhook` config; `None` when a field is wrong (its error is recorded).
fn webhook(map: &Map<String, Value>, errors: &mut Errors) -> Option<Handler> {
    let url = url(map, errors);
    let headers = string_map(map, "headers", HEADERS, errors);
    let (signature, secret) = signing(map, errors);
    let ssl_verify = bool_at(map, &["config", "ssl_verify"], errors).unwrap_or(false);
    url.map(|url| {
        Handler::Webhook(WebhookConfig {
            url,
            headers: headers.unwrap_or_default(),
            secret,
            ssl_verify,
            signature,
            previous_secret: None,
        })
    })
}

/// A `webhook-custom` config; `None` when a field is wrong (its error is recorded). Every field
/// is read, so every problem is reported.
fn webhook_custom(map: &Map<String, Value>, errors: &mut Errors) -> Option<Handler> {
    let url = url(map, errors);
    let method = method(map, errors);
    let payload = string_map(map, "payload", PAYLOAD, errors);
    let payload_format = bool_at(map, &["config", "payload_format"], errors).unwrap_or(true);
    let body = custom_body(map, errors);
    let body_format = bool_at(map, &["config", "body_format"], errors).unwrap_or(true);
    let headers = string_map(map, "headers", HEADERS, errors);
    let headers_format = bool_at(map, &["config", "headers_format"], errors).unwrap_or(false);
    let (signature, secret) = signing(map, errors);
    let ssl_verify = bool_at(map, &["config", "ssl_verify"], errors).unwrap_or(false);
    url.zip(method).map(|(url, method)| {
        Handler::WebhookCustom(WebhookCustomConfig {
            url,
            method,
            payload,
            payload_format,
            body,
            body_format,
            headers: headers.unwrap_or_default(),
            headers_format,
            secret,
            ssl_verify,
            signature,
            previous_secret: None,
        })
    })
}

/// `config.signature` (`kong` by default, or `standard`) and `config.secret`, which a `standard`
/// hook needs as a `whsec_` secret. A `standard` hook without one is valid: the admin API
/// generates its secret (see [`crate::admin`]), since validation has no business with randomness.
fn signing(map: &Map<String, Value>, errors: &mut Errors) -> (SignatureScheme, Option<String>) {
    let secret = string_at(map, &["config", "secret"], errors);
    let scheme = match present(map, "signature") {
        None => SignatureScheme::Kong,
        Some(Value::String(s)) if s == "kong" => SignatureScheme::Kong,
        Some(Value::String(s)) if s == "standard" => SignatureScheme::Standard,
        Some(_) => {
            errors.add(&["config", "signature"], "expected one of: kong, standard");
            return (SignatureScheme::Kong, secret);
        }
    };
    if let (SignatureScheme::Standard, Some(given)) = (scheme, &secret) {
        if let Err(invalid) = standard_key(given) {
            errors.add(&["config", "secret"], invalid.to_string());
        }
    }
    (scheme, secret)
}

/// `config.body`: a string, at most [`limits::MAX_TEMPLATE_BYTES`] long.
fn custom_body(map: &Map<String, Value>, errors: &mut Errors) -> Option<String> {
    match map.get("body")? {
        Value::Null => None,
        Value::String(s) if s.len() > limits::MAX_TEMPLATE_BYTES => {
            errors.add(&["config", "body"], at_most(limits::MAX_TEMPLATE_BYTES));
            None
        }
        Value::String(s) => Some(s.clone()),
        _ => {
            errors.add(&["config", "body"], "expected a string");
            None
        }
    }
}

/// `webhook-custom`: every template must parse (and may use Lua only when the deployment allows
/// it), and a payload must have a content type that can carry it (spec §1, §6).
fn check_custom(config: &WebhookCustomConfig, lua: &LuaPolicy, errors: &mut Errors) {
    let mut check = |path: Vec<&str>, source: &str| match Template::parse(source) {
        Ok(template) if template.needs_lua() && *lua == LuaPolicy::Off => errors.add(
            &path,
            "template code needs Lua, which is disabled in this deployment (untrusted_lua = off)",
        ),
        Ok(_) => {}
        Err(err) => errors.add(&path, format!("invalid template: {err}")),
    };
    if config.payload_format {
        for (name, value) in config.payload.iter().flatten() {
            check(vec!["config", "payload", name], value);
        }
    }
    if config.body_format {
        if let Some(body) = &config.body {
            check(vec!["config", "body"], body);
        }
    }
    if config.headers_format {
        for (name, value) in &config.headers {
            check(vec!["config", "headers", name], value);
        }
    }
    let content_type = config
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.as_str());
    if config.payload.is_some() && payload_encoding(&config.method, content_type).is_none() {
        errors.add(
            &["config", "headers"],
            format!(
                "content-type '{}' cannot carry a payload: use application/json, \
                 application/x-www-form-urlencoded or multipart/form-data, or send a body",
                content_type.unwrap_or_default()
            ),
        );
    }
}

/// Why a `config.url` with `user:password@` is refused.
pub const URL_CREDENTIALS: &str =
    "credentials in url are not allowed: send them in config.headers (e.g. Authorization)";

/// `config.url`: an absolute http(s) URL with a host and no credentials, with Kong's messages.
fn url(map: &Map<String, Value>, errors: &mut Errors) -> Option<String> {
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

/// `config.method`: an upper-case HTTP token such as `POST`.
fn method(map: &Map<String, Value>, errors: &mut Errors) -> Option<HttpMethod> {
    let path = ["config", "method"];
    if present(map, "method").is_none() {
        errors.add(&path, "required field missing");
        return None;
    }
    let method = string_at(map, &path, errors)?;
    match HttpMethod::parse(&method) {
        Ok(method) => Some(method),
        Err(invalid) => {
            errors.add(&path, invalid.to_string());
            None
        }
    }
}

/// The limits and entry check of one map of strings under `config`.
struct MapRules {
    max_entries: usize,
    max_name_bytes: Option<usize>,
    max_value_bytes: usize,
    /// May reject an entry with a message.
    check: fn(&str, &str) -> Option<&'static str>,
}

const HEADERS: MapRules = MapRules {
    max_entries: limits::MAX_HEADERS,
    max_name_bytes: Some(limits::MAX_HEADER_NAME_BYTES),
    max_value_bytes: limits::MAX_HEADER_VALUE_BYTES,
    check: check_header,
};

const PAYLOAD: MapRules = MapRules {
    max_entries: limits::MAX_PAYLOAD_ENTRIES,
    max_name_bytes: None,
    max_value_bytes: limits::MAX_TEMPLATE_BYTES,
    check: |_, _| None,
};

/// A map of strings under `config.<key>`, within `rules`.
fn string_map(
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
fn at_most(max: usize) -> String {
    format!("length must be at most {max}")
}

/// The first `chars` characters of `text`, for quoting long input in a message.
fn prefix(text: &str, chars: usize) -> &str {
    match text.char_indices().nth(chars) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Header names must be HTTP tokens and values must not break the header block.
fn check_header(name: &str, value: &str) -> Option<&'static str> {
    const TOKEN_PUNCTUATION: &str = "!#$%&'*+-.^_`|~";
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || TOKEN_PUNCTUATION.contains(c))
    {
        return Some("invalid header name");
    }
    if value.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
        return Some("invalid header value");
    }
    None
}

/// `config.functions`: a non-empty array of Lua sources, each returning a function.
fn functions(map: &Map<String, Value>, ctx: &Context, errors: &mut Errors) -> Vec<String> {
    let path = ["config", "functions"];
    let Some(value) = present(map, "functions") else {
        errors.add(&path, "required field missing");
        return Vec::new();
    };
    let Some(items) = value.as_array() else {
        errors.add(&path, "expected an array");
        return Vec::new();
    };
    if items.is_empty() {
        errors.add(&path, "length must be at least 1");
        return Vec::new();
    }
    // Sizes first: compiling is the expensive part, and a hook over the limits compiles nothing.
    if items.len() > limits::MAX_FUNCTIONS {
        errors.add(&path, at_most(limits::MAX_FUNCTIONS));
        return Vec::new();
    }
    let total: usize = items.iter().filter_map(Value::as_str).map(str::len).sum();
    if total > limits::MAX_FUNCTIONS_BYTES {
        errors.add(
            &path,
            format!(
                "the functions must total at most {} bytes of Lua",
                limits::MAX_FUNCTIONS_BYTES
            ),
        );
        return Vec::new();
    }
    if let LuaPolicy::Off = ctx.lua {
        errors.add(
            &path,
            "lambda functions are disabled in this deployment (untrusted_lua = off)",
        );
        return Vec::new();
    }
    // The chunks of one hook share one CPU budget, as its deliveries do.
    let deadline = match &ctx.lua {
        LuaPolicy::Sandbox(limits) => std::time::Instant::now() + limits.cpu_time,
        LuaPolicy::Off => std::time::Instant::now(),
    };
    let mut sources = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let at = || {
            vec![
                PathSegment::Key("config".into()),
                PathSegment::Key("functions".into()),
                PathSegment::Index(index),
            ]
        };
        let Some(source) = item.as_str() else {
            errors.add_at(at(), "expected a string");
            continue;
        };
        if let LuaPolicy::Sandbox(limits) = &ctx.lua {
            if let Err(problem) = lua::check_function_until(source, limits, deadline) {
                errors.add_at(at(), problem);
                continue;
            }
        }
        sources.push(source.to_string());
    }
    sources
}

#[cfg(test)]
mod tests {

    #[test]
    fn read_back_protection_state_is_checked_exactly() {
        assert_eq!(integral(&json!(5.0)), Some(5));
        assert_eq!(integral(&json!(-3)), Some(-3));
        assert_eq!(integral(&json!(0.5)), None);
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

    use super::*;
    use crate::lua::Limits;
    use serde_json::json;

    fn ctx() -> Context {
        Context {
            id: Uuid::nil(),
            created_at: 10,
            now: 20,
            lua: LuaPolicy::Sandbox(Limits::default()),
        }
    }

    fn violation(input: Value) -> SchemaViolation {
        hook(&input, &ctx()).expect_err("input should be rejected")
    }

    #[test]
    fn a_hook_may_carry_its_own_retry_schedule_and_timeouts() {
        let base = json!({"source":"s","handler":"log"});
        let plain = hook(&base, &ctx()).unwrap();
        assert_eq!(plain.delivery, DeliveryPolicy::default());
        let shown = plain.shown();
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
        let shown = own.shown();
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
            partial.shown()["timeouts"],
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

    #[test]
    fn fills_in_webhook_defaults() {
        let hook = hook(
            &json!({"source":"crud","event":"consumers","handler":"webhook","config":{"url":"https://example.com/h"}}),
            &ctx(),
        )
        .unwrap();
        let value = serde_json::to_value(&hook).unwrap();
        assert_eq!(
            value["config"],
            json!({"url":"https://example.com/h","headers":{},"secret":null,"ssl_verify":false,
                   "signature":"kong"})
        );
        assert_eq!(value["enabled"], true);
        assert_eq!(value["tags"], json!([]));
        assert_eq!(value["created_at"], 10);
        assert_eq!(value["updated_at"], 20);
    }

    #[test]
    fn fills_in_webhook_custom_defaults() {
        let hook = hook(
            &json!({"source":"crud","handler":"webhook-custom","config":{"url":"http://x.test","method":"POST"}}),
            &ctx(),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&hook).unwrap()["config"],
            json!({"url":"http://x.test","method":"POST","payload":null,"payload_format":true,
                   "body":null,"body_format":true,"headers":{},"headers_format":false,
                   "secret":null,"ssl_verify":false,"signature":"kong"})
        );
    }

    #[test]
    fn a_standard_signature_needs_a_whsec_secret() {
        let input = |extra: Value| {
            let mut config = json!({"url":"https://example.com/h","signature":"standard"});
            let fields = config.as_object_mut().unwrap();
            fields.extend(extra.as_object().unwrap().clone());
            json!({"source":"crud","handler":"webhook","config":config})
        };
        // No secret: valid, the admin API generates one.
        let hook = hook(&input(json!({})), &ctx()).unwrap();
        assert_eq!(
            hook.handler.signing().unwrap().scheme,
            SignatureScheme::Standard
        );
        let ok = json!({"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"});
        assert!(super::hook(&input(ok), &ctx()).is_ok());
        let err = super::hook(&input(json!({"secret":"hunter2"})), &ctx()).unwrap_err();
        assert_eq!(
            err.message(),
            "schema violation (config.secret: a standard signature secret must start with 'whsec_')"
        );
        let err = super::hook(&input(json!({"signature":"hmac"})), &ctx()).unwrap_err();
        assert_eq!(
            err.fields(),
            json!({"config":{"signature":"expected one of: kong, standard"}})
        );
        // Kong's scheme takes any secret, as before.
        let kong = json!({"signature":"kong","secret":"hunter2"});
        assert!(super::hook(&input(kong), &ctx()).is_ok());
    }

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
    fn several_errors_are_counted_and_sorted() {
        let v = violation(json!({"handler":"webhook","snooze":-1,"config":{"url":"nope"}}));
        assert_eq!(
            v.message(),
            "3 schema violations (config.url: missing scheme in url; snooze: value should be between 0 and 2147483647; source: required field missing)"
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
        ] {
            let v = violation(json!({"source":"crud","handler":"webhook","config":{"url":url}}));
            assert_eq!(v.fields()["config"]["url"], message, "{url}");
        }
    }

    #[test]
    fn unknown_handler_and_unknown_fields() {
        let v = violation(json!({"source":"crud","handler":"email"}));
        assert_eq!(v.fields(), json!({"handler":"unknown type: email"}));
        let v = violation(
            json!({"source":"crud","handler":"log","color":"red","config":{"level":"debug"}}),
        );
        assert_eq!(
            v.fields(),
            json!({"color":"unknown field","config":{"level":"unknown field"}})
        );
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
    fn method_must_be_upper_case() {
        let v = violation(
            json!({"source":"s","handler":"webhook-custom","config":{"url":"https://a.b","method":"post"}}),
        );
        assert_eq!(
            v.fields(),
            json!({"config":{"method":"invalid value: post"}})
        );
    }

    #[test]
    fn lambda_functions_must_compile_and_return_a_function() {
        let v = violation(
            json!({"source":"s","handler":"lambda","config":{"functions":[
            "return function() end", "return function(", "return 42"]}}),
        );
        let fields = v.fields();
        let items = fields["config"]["functions"].as_array().unwrap();
        assert!(items[0].is_null());
        assert!(
            items[1]
                .as_str()
                .unwrap()
                .starts_with("Error parsing function: "),
            "{fields}"
        );
        assert_eq!(
            items[2],
            "Bad return value from function, expected function type, got number"
        );
        assert!(v.message().contains("config.functions.3: Bad return value"));
    }

    #[test]
    fn custom_templates_are_checked_at_create_time() {
        let v = violation(json!({"source":"s","handler":"webhook-custom","config":{
            "url":"https://a.b","method":"POST",
            "payload":{"ok":"{{a.b}}","bad":"{{ a.b"},
            "body":"{% if x then %}",
            "headers":{"content-type":"text/plain","x-t":"{*"},"headers_format":true}}));
        let fields = v.fields();
        assert!(
            fields["config"]["payload"]["bad"]
                .as_str()
                .unwrap()
                .starts_with("invalid template"),
            "{fields}"
        );
        assert!(fields["config"]["payload"].get("ok").is_none());
        assert!(
            fields["config"]["body"]
                .as_str()
                .unwrap()
                .starts_with("invalid template"),
            "{fields}"
        );
        assert!(
            fields["config"]["headers"]["x-t"]
                .as_str()
                .unwrap()
                .starts_with("invalid template"),
            "{fields}"
        );
    }

    #[test]
    fn a_payload_needs_a_content_type_that_can_carry_it() {
        let v = violation(json!({"source":"s","handler":"webhook-custom","config":{
            "url":"https://a.b","method":"POST","payload":{"a":"b"},
            "headers":{"Content-Type":"text/plain"}}}));
        assert!(v.fields()["config"]["headers"]
            .as_str()
            .unwrap()
            .contains("cannot carry a payload"));
        // A GET sends the payload as a query string, whatever the content type.
        hook(
            &json!({"source":"s","handler":"webhook-custom","config":{
            "url":"https://a.b","method":"GET","payload":{"a":"b"},
            "headers":{"Content-Type":"text/plain"}}}),
            &ctx(),
        )
        .unwrap();
    }

    #[test]
    fn template_code_is_refused_when_untrusted_lua_is_off() {
        let ctx = Context {
            lua: LuaPolicy::Off,
            ..ctx()
        };
        let config = |text: &str| {
            json!({"source":"s","handler":"webhook-custom","config":{
            "url":"https://a.b","method":"POST","body":text}})
        };
        assert!(hook(&config("plain {{a.b}}"), &ctx).is_ok());
        let err = hook(&config("{% for i=1,3 do %}x{% end %}"), &ctx).unwrap_err();
        assert!(
            err.message().contains("untrusted_lua = off"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn lambda_rejected_when_untrusted_lua_is_off() {
        let ctx = Context {
            lua: LuaPolicy::Off,
            ..ctx()
        };
        let err = hook(
            &json!({"source":"s","handler":"lambda","config":{"functions":["return function() end"]}}),
            &ctx,
        )
        .unwrap_err();
        assert!(err.message().contains("untrusted_lua = off"));
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
    fn header_injection_is_refused() {
        let v = violation(json!({"source":"s","handler":"webhook","config":{
            "url":"https://a.b","headers":{"x-a":"1\r\nx-b: 2","bad name":"v"}}}));
        assert_eq!(
            v.fields(),
            json!({"config":{"headers":{"x-a":"invalid header value","bad name":"invalid header name"}}})
        );
    }

    /// `build(n)` at `limit` is accepted; at `limit + 1` it is refused with exactly `fields`.
    fn limit_holds(limit: usize, build: impl Fn(usize) -> Value, fields: Value) {
        if let Err(v) = hook(&build(limit), &ctx()) {
            panic!("at the limit ({limit}): {}", v.message());
        }
        let v = violation(build(limit + 1));
        assert_eq!(v.fields(), fields);
        assert_eq!(v.errors().len(), 1, "{}", v.message());
    }

    fn webhook_custom(config: Value) -> Value {
        let mut config = config;
        config["url"] = json!("https://a.b");
        config["method"] = json!("POST");
        json!({"source":"s","handler":"webhook-custom","config":config})
    }

    fn entries(n: usize, value: &str) -> Value {
        (0..n)
            .map(|i| (format!("x-{i}"), json!(value)))
            .collect::<Map<_, _>>()
            .into()
    }

    #[test]
    fn limit_on_header_count() {
        limit_holds(
            64,
            |n| webhook_custom(json!({"headers": entries(n, "v")})),
            json!({"config":{"headers":"length must be at most 64"}}),
        );
        let v = violation(webhook_custom(json!({"headers": entries(5000, "v")})));
        assert_eq!(
            v.message(),
            "schema violation (config.headers: length must be at most 64)"
        );
    }

    #[test]
    fn limit_on_header_name_and_value() {
        let named = |n: usize| {
            json!({"source":"s","handler":"webhook","config":{
                "url":"https://a.b","headers":{"x".repeat(n): "v"}}})
        };
        let prefix = "x".repeat(32);
        limit_holds(
            256,
            named,
            json!({"config":{"headers":format!("name '{prefix}…' is longer than 256 bytes")}}),
        );
        limit_holds(
            8192,
            |n| webhook_custom(json!({"headers":{"x-a":"v".repeat(n)}})),
            json!({"config":{"headers":{"x-a":"length must be at most 8192"}}}),
        );
    }

    #[test]
    fn limit_on_payload_entries_and_templates() {
        limit_holds(
            64,
            |n| webhook_custom(json!({"payload": entries(n, "{{ a }}")})),
            json!({"config":{"payload":"length must be at most 64"}}),
        );
        limit_holds(
            65536,
            |n| webhook_custom(json!({"payload":{"a":"v".repeat(n)}})),
            json!({"config":{"payload":{"a":"length must be at most 65536"}}}),
        );
        limit_holds(
            65536,
            |n| webhook_custom(json!({"body":"v".repeat(n)})),
            json!({"config":{"body":"length must be at most 65536"}}),
        );
    }

    fn lambda(functions: Vec<String>) -> Value {
        json!({"source":"s","handler":"lambda","config":{"functions":functions}})
    }

    #[test]
    fn limit_on_function_count_checked_before_compiling() {
        limit_holds(
            16,
            |n| lambda(vec!["return function() end".to_string(); n]),
            json!({"config":{"functions":"length must be at most 16"}}),
        );
        // Broken sources over the limit: had they been compiled, each would have its own error.
        let v = violation(lambda(vec!["return function(".to_string(); 1000]));
        assert_eq!(
            v.message(),
            "schema violation (config.functions: length must be at most 16)"
        );
    }

    #[test]
    fn limit_on_total_lua_checked_before_compiling() {
        let padded = |n: usize| {
            let code = "return function() end --";
            format!("{code}{}", "x".repeat(n - code.len()))
        };
        limit_holds(
            65536,
            |n| lambda(vec![padded(n / 2), padded(n - n / 2)]),
            json!({"config":{"functions":"the functions must total at most 65536 bytes of Lua"}}),
        );
        let v = violation(lambda(vec![format!(
            "return function( {}",
            "x".repeat(70_000)
        )]));
        assert_eq!(v.errors().len(), 1, "{}", v.message());
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
    fn limit_on_name_and_url() {
        limit_holds(
            128,
            |n| json!({"source":"s","handler":"log","name":"n".repeat(n)}),
            json!({"name":"length must be at most 128"}),
        );
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

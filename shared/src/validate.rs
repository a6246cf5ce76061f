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

use crate::dispatch::handlers::payload_encoding;
use crate::lua::{self, LuaPolicy};
use crate::model::{
    Handler, HandlerKind, Hook, LambdaConfig, LogConfig, WebhookConfig, WebhookCustomConfig,
};
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
    })
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
    let mut tags = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let path = vec![PathSegment::Key("tags".into()), PathSegment::Index(index)];
        match item {
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
    let allowed: &[&str] = match kind {
        HandlerKind::Webhook => &["url", "headers", "secret", "ssl_verify"],
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
        ],
        HandlerKind::Log => &[],
        HandlerKind::Lambda => &["functions"],
    };
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.add(&["config", key], "unknown field");
        }
    }
    let before = errors.0.len();
    let handler = match kind {
        HandlerKind::Webhook => Handler::Webhook(WebhookConfig {
            url: url(map, errors).unwrap_or_default(),
            headers: string_map(map, "headers", errors, check_header).unwrap_or_default(),
            secret: string_at(map, &["config", "secret"], errors),
            ssl_verify: bool_at(map, &["config", "ssl_verify"], errors).unwrap_or(false),
        }),
        HandlerKind::WebhookCustom => Handler::WebhookCustom(WebhookCustomConfig {
            url: url(map, errors).unwrap_or_default(),
            method: method(map, errors).unwrap_or_default(),
            payload: string_map(map, "payload", errors, |_, _| None),
            payload_format: bool_at(map, &["config", "payload_format"], errors).unwrap_or(true),
            body: map.get("body").and_then(|body| match body {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                _ => {
                    errors.add(&["config", "body"], "expected a string");
                    None
                }
            }),
            body_format: bool_at(map, &["config", "body_format"], errors).unwrap_or(true),
            headers: string_map(map, "headers", errors, check_header).unwrap_or_default(),
            headers_format: bool_at(map, &["config", "headers_format"], errors).unwrap_or(false),
            secret: string_at(map, &["config", "secret"], errors),
            ssl_verify: bool_at(map, &["config", "ssl_verify"], errors).unwrap_or(false),
        }),
        HandlerKind::Log => Handler::Log(LogConfig {}),
        HandlerKind::Lambda => Handler::Lambda(LambdaConfig {
            functions: functions(map, ctx, errors),
        }),
    };
    if errors.0.len() == before {
        if let Handler::WebhookCustom(config) = &handler {
            check_custom(config, &ctx.lua, errors);
        }
    }
    (errors.0.len() == before).then_some(handler)
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

/// `config.url`: an absolute http(s) URL with a host, with Kong's messages.
fn url(map: &Map<String, Value>, errors: &mut Errors) -> Option<String> {
    let path = ["config", "url"];
    if present(map, "url").is_none() {
        errors.add(&path, "required field missing");
        return None;
    }
    let raw = string_at(map, &path, errors)?;
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
fn method(map: &Map<String, Value>, errors: &mut Errors) -> Option<String> {
    let path = ["config", "method"];
    if present(map, "method").is_none() {
        errors.add(&path, "required field missing");
        return None;
    }
    let method = string_at(map, &path, errors)?;
    if !method.bytes().all(|b| b.is_ascii_uppercase()) {
        errors.add(&path, format!("invalid value: {method}"));
        return None;
    }
    Some(method)
}

/// A map of strings under `config.<key>`; `check` may reject an entry with a message.
fn string_map(
    map: &Map<String, Value>,
    key: &str,
    errors: &mut Errors,
    check: impl Fn(&str, &str) -> Option<&'static str>,
) -> Option<BTreeMap<String, String>> {
    let value = present(map, key)?;
    let Some(entries) = value.as_object() else {
        errors.add(&["config", key], "expected a map");
        return None;
    };
    let mut result = BTreeMap::new();
    for (name, value) in entries {
        match value {
            Value::String(s) => match check(name, s) {
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
    if let LuaPolicy::Off = ctx.lua {
        errors.add(
            &path,
            "lambda functions are disabled in this deployment (untrusted_lua = off)",
        );
        return Vec::new();
    }
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
            if let Err(problem) = lua::check_function(source, limits) {
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
    fn fills_in_webhook_defaults() {
        let hook = hook(
            &json!({"source":"crud","event":"consumers","handler":"webhook","config":{"url":"https://example.com/h"}}),
            &ctx(),
        )
        .unwrap();
        let value = serde_json::to_value(&hook).unwrap();
        assert_eq!(
            value["config"],
            json!({"url":"https://example.com/h","headers":{},"secret":null,"ssl_verify":false})
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
                   "secret":null,"ssl_verify":false})
        );
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
}

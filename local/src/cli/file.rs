//! The hooks file (`hooks.yaml`): the hooks and custom events a service must hold, read,
//! checked and put in the form the admin API answers, so that it compares field for field.
//!
//! Secrets are never written in the file: `config.secret` and credential headers (by the
//! service's own rule, [`event_hooks::model::redact_hook_value`]) hold references to environment
//! variables, decK-style: `${{ env "HOOK_SECRET" }}`. References are resolved only there, so a
//! value that only looks like one (in a template, say) is never touched elsewhere.

use std::collections::BTreeMap;

use event_hooks::lua::LuaPolicy;
use event_hooks::model::{HookView, REDACTED};
use event_hooks::sources::Catalogue;
use event_hooks::validate::{self, Context};
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::client::{flatten_fields, CliError};

/// The `_format_version` this command line reads and writes.
pub(crate) const FORMAT_VERSION: &str = "1";

/// Fields the server sets; the file cannot hold them, and comparisons leave them out.
pub(crate) const SERVER_FIELDS: &[&str] = &[
    "id",
    "created_at",
    "updated_at",
    "disabled_reason",
    "failing_since",
    "lane",
];

/// What the file says of a hook's signing secret.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Secret {
    /// A value, read from the environment.
    Given(String),
    /// No secret: a `kong` hook is unsigned; a `standard` hook keeps the secret the service
    /// holds (generated when the hook was created, or rotated since).
    Unset,
}

/// One hook of the file, in the form the admin API answers, without [`SERVER_FIELDS`] and
/// without its secret (held apart in `secret`).
pub(crate) struct DesiredHook {
    pub(crate) name: String,
    pub(crate) body: Value,
    pub(crate) secret: Secret,
}

/// One custom event: `{fields, unique?, description?}`, `unique` and `description` only when
/// set (as the catalogue shows them).
pub(crate) type EventSpec = Value;

/// The whole file.
pub(crate) struct HooksFile {
    pub(crate) hooks: Vec<DesiredHook>,
    pub(crate) events: BTreeMap<(String, String), EventSpec>,
}

/// An environment reference, `${{ env "NAME" }}`: the variable's name, if `value` is one.
/// `Err` when it starts like one but is not well formed.
pub(crate) fn env_reference(value: &str) -> Result<Option<&str>, String> {
    let trimmed = value.trim();
    let Some(inner) = trimmed
        .strip_prefix("${{")
        .and_then(|rest| rest.strip_suffix("}}"))
    else {
        if trimmed.contains("${{") {
            return Err(
                "an environment reference must be the whole value: ${{ env \"NAME\" }}".into(),
            );
        }
        return Ok(None);
    };
    let malformed = || "expected ${{ env \"NAME\" }}".to_string();
    let rest = inner.trim().strip_prefix("env").ok_or_else(malformed)?;
    let name = rest
        .trim()
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .ok_or_else(malformed)?;
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "'{name}' is not an environment variable name (letters, digits and _)"
        ));
    }
    Ok(Some(name))
}

/// `${{ env "NAME" }}`
pub(crate) fn reference_to(name: &str) -> String {
    format!("${{{{ env \"{name}\" }}}}")
}

/// Whether the header `name` carries a credential, by the service's own redaction rule.
pub(crate) fn is_credential_header(name: &str) -> bool {
    let mut probe = json!({ "config": { "headers": { name: "-" } } });
    event_hooks::model::redact_hook_value(&mut probe);
    probe["config"]["headers"][name] == REDACTED
}

/// Whether the field at `path` (`config.secret`, a credential header) holds a secret, whose
/// value is never shown.
pub(crate) fn is_secret_path(path: &[&str]) -> bool {
    match path {
        ["config", "secret"] | ["config", "previous_secret", ..] => true,
        ["config", "headers", name, ..] => is_credential_header(name),
        _ => false,
    }
}

/// `hook "name"`, or the hook's place in the file when it has no usable name.
fn label(index: usize, hook: &Value) -> String {
    match hook.get("name").and_then(Value::as_str) {
        Some(name) => format!("hook \"{name}\""),
        None => format!("hooks[{}]", index + 1),
    }
}

/// Reads and checks `text` (YAML or JSON); `file` names it in errors. Every problem is
/// reported, each with the hook and the field. `env` looks variables up (the process's
/// environment outside tests).
pub(crate) fn parse(
    file: &str,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HooksFile, CliError> {
    let invalid = |problems: Vec<String>| CliError::Invalid {
        file: file.to_owned(),
        problems,
    };
    let root: Value =
        serde_yaml::from_str(text).map_err(|err| invalid(vec![format!("not YAML: {err}")]))?;
    let root = match root {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        _ => {
            return Err(invalid(vec![
                "expected a mapping with `hooks` and `custom_events`".into(),
            ]))
        }
    };
    let mut problems = Vec::new();
    for key in root.keys() {
        if !matches!(key.as_str(), "_format_version" | "hooks" | "custom_events") {
            problems.push(format!(
                "{key}: unknown field (expected _format_version, hooks, custom_events)"
            ));
        }
    }
    match root.get("_format_version") {
        None => {}
        Some(Value::String(v)) if v == FORMAT_VERSION => {}
        Some(other) => problems.push(format!(
            "_format_version: must be \"{FORMAT_VERSION}\", not {other}"
        )),
    }
    let hooks = match root.get("hooks") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => {
            problems.push("hooks: expected a list of hooks".into());
            Vec::new()
        }
    };
    let mut desired = Vec::new();
    let mut names = BTreeMap::new();
    for (index, hook) in hooks.iter().enumerate() {
        let what = label(index, hook);
        match hook_from_file(hook, env) {
            Ok(parsed) => {
                if let Some(first) = names.insert(parsed.name.clone(), index) {
                    problems.push(format!(
                        "{what}: name: also the name of hooks[{}]; names must be unique",
                        first + 1
                    ));
                }
                desired.push(parsed);
            }
            Err(found) => problems.extend(found.into_iter().map(|p| format!("{what}: {p}"))),
        }
    }
    let events = custom_events(root.get("custom_events"), &mut problems);
    if problems.is_empty() {
        Ok(HooksFile {
            hooks: desired,
            events,
        })
    } else {
        Err(invalid(problems))
    }
}

/// One hook of the file: its references resolved, checked by the service's own validation,
/// in the admin API's form. Problems are `field: message`.
fn hook_from_file(
    hook: &Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<DesiredHook, Vec<String>> {
    let Some(map) = hook.as_object() else {
        return Err(vec!["expected a mapping".into()]);
    };
    let mut problems = Vec::new();
    let name = match map.get("name") {
        Some(Value::String(name)) if !name.is_empty() => name.clone(),
        _ => {
            problems.push("name: required: hooks are matched by name".into());
            String::new()
        }
    };
    for field in SERVER_FIELDS {
        if map.contains_key(*field) {
            problems.push(format!(
                "{field}: set by the server; leave it out of the file"
            ));
        }
    }
    let mut value = hook.clone();
    resolve_references(&mut value, &mut Vec::new(), env, &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    let secret = match value.pointer("/config/secret") {
        Some(Value::String(secret)) => Secret::Given(secret.clone()),
        _ => Secret::Unset,
    };
    let ctx = Context {
        id: Uuid::nil(),
        created_at: 0,
        now: 0,
        lua: LuaPolicy::default(),
    };
    let checked = validate::hook(&value, &ctx).map_err(|violation| {
        flatten_fields(&violation.fields())
            .into_iter()
            .map(|(path, message)| format!("{path}: {message}"))
            .collect::<Vec<_>>()
    })?;
    let body = serde_json::to_value(HookView::from(&checked))
        .map_err(|err| vec![format!("cannot be shown: {err}")])?;
    Ok(DesiredHook {
        name,
        body: comparable(&body),
        secret,
    })
}

/// A hook as the admin API answers it, without [`SERVER_FIELDS`] and `config.secret`: the part
/// a file states and a comparison compares.
pub(crate) fn comparable(hook: &Value) -> Value {
    let mut hook = hook.clone();
    if let Some(map) = hook.as_object_mut() {
        for field in SERVER_FIELDS {
            map.shift_remove(*field);
        }
    }
    if let Some(config) = hook.get_mut("config").and_then(Value::as_object_mut) {
        config.shift_remove("secret");
    }
    hook
}

/// Replaces every reference with its variable's value, where secrets live; a reference
/// anywhere else, or to a variable that is not set, is a problem (named by path, never valued).
fn resolve_references(
    value: &mut Value,
    path: &mut Vec<String>,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                path.push(key.clone());
                resolve_references(child, path, env, problems);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                path.push((i + 1).to_string());
                resolve_references(child, path, env, problems);
                path.pop();
            }
        }
        Value::String(text) => {
            let dotted = path.join(".");
            let name = match env_reference(text) {
                Ok(Some(name)) => name.to_owned(),
                Ok(None) => return,
                Err(message) => {
                    problems.push(format!("{dotted}: {message}"));
                    return;
                }
            };
            let parts: Vec<&str> = path.iter().map(String::as_str).collect();
            let allowed = matches!(
                parts.as_slice(),
                ["config", "secret"] | ["config", "headers", _]
            );
            if !allowed {
                problems.push(format!(
                    "{dotted}: environment references are read only in config.secret and config.headers"
                ));
                return;
            }
            match env(&name) {
                Some(resolved) if !resolved.is_empty() => *text = resolved,
                _ => problems.push(format!("{dotted}: environment variable {name} is not set")),
            }
        }
        _ => {}
    }
}

/// `custom_events: {source: {event: {fields, unique, description}}}`, each normalised as the
/// catalogue shows it.
fn custom_events(
    value: Option<&Value>,
    problems: &mut Vec<String>,
) -> BTreeMap<(String, String), EventSpec> {
    let mut events = BTreeMap::new();
    let sources = match value {
        None | Some(Value::Null) => return events,
        Some(Value::Object(sources)) => sources,
        Some(_) => {
            problems.push("custom_events: expected a mapping of sources to events".into());
            return events;
        }
    };
    for (source, source_events) in sources {
        if Catalogue::is_builtin_source(source) {
            problems.push(format!(
                "custom_events.{source}: a built-in source; its events cannot be changed"
            ));
            continue;
        }
        let Some(source_events) = source_events.as_object() else {
            problems.push(format!(
                "custom_events.{source}: expected a mapping of events"
            ));
            continue;
        };
        for (event, spec) in source_events {
            let what = format!("custom event {source}/{event}");
            match event_spec(spec) {
                Ok(spec) => {
                    events.insert((source.clone(), event.clone()), spec);
                }
                Err(found) => problems.extend(found.into_iter().map(|p| format!("{what}: {p}"))),
            }
        }
    }
    events
}

/// One custom event as the catalogue answers it: `fields` always, `unique` when not empty,
/// `description` when not empty.
pub(crate) fn event_spec(spec: &Value) -> Result<EventSpec, Vec<String>> {
    let empty = Map::new();
    let map = match spec {
        Value::Null => &empty,
        Value::Object(map) => map,
        _ => {
            return Err(vec![
                "expected a mapping with fields, unique, description".into()
            ])
        }
    };
    let mut problems = Vec::new();
    for key in map.keys() {
        if !matches!(key.as_str(), "fields" | "unique" | "description") {
            problems.push(format!("{key}: unknown field"));
        }
    }
    let list = |key: &str, problems: &mut Vec<String>| -> Vec<Value> {
        match map.get(key) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.iter().all(Value::is_string) => items.clone(),
            Some(_) => {
                problems.push(format!("{key}: expected a list of strings"));
                Vec::new()
            }
        }
    };
    let fields = list("fields", &mut problems);
    let unique = list("unique", &mut problems);
    let mut out = Map::new();
    out.insert("fields".into(), Value::Array(fields));
    if !unique.is_empty() {
        out.insert("unique".into(), Value::Array(unique));
    }
    match map.get("description") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) if text.is_empty() => {}
        Some(Value::String(text)) => {
            out.insert("description".into(), Value::String(text.clone()));
        }
        Some(_) => problems.push("description: expected a string".into()),
    }
    if problems.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_read_whole_and_only_where_secrets_live() {
        assert_eq!(env_reference("${{ env \"A_1\" }}"), Ok(Some("A_1")));
        assert_eq!(env_reference("${{env \"B\"}}"), Ok(Some("B")));
        assert_eq!(env_reference("plain"), Ok(None));
        assert!(env_reference("x ${{ env \"A\" }}").is_err());
        assert!(env_reference("${{ env \"1A\" }}").is_err());
        assert!(env_reference("${{ file \"A\" }}").is_err());
        assert_eq!(reference_to("A"), "${{ env \"A\" }}");
    }

    #[test]
    fn a_file_resolves_its_secret_and_names_each_problem() {
        let env = |name: &str| (name == "S").then(|| "s3cret".to_string());
        let text = r#"
hooks:
  - name: ok
    source: crud
    handler: webhook
    config: { url: "https://a.test/h", secret: '${{ env "S" }}' }
  - name: bad
    source: crud
    handler: webhook
    config: { url: "nope", secret: '${{ env "MISSING" }}' }
  - name: worse
    source: crud
    handler: webhook
    config: { url: "ftp//x" }
"#;
        let Err(CliError::Invalid { problems, .. }) = parse("hooks.yaml", text, &env) else {
            panic!("invalid file accepted");
        };
        assert_eq!(
            problems,
            vec![
                "hook \"bad\": config.secret: environment variable MISSING is not set",
                "hook \"worse\": config.url: missing scheme in url",
            ]
        );
        let good = &text[..text.find("  - name: bad").unwrap()];
        let file = parse("hooks.yaml", good, &env).unwrap_or_else(|err| panic!("{err}"));
        assert!(file.hooks[0].secret == Secret::Given("s3cret".into()));
        assert!(file.hooks[0].body["config"].get("secret").is_none());
        assert_eq!(file.hooks[0].body["config"]["ssl_verify"], false);
    }
}

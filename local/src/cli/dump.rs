//! `dump`: the service's hooks and custom events as a hooks file, secrets as references.
//!
//! A `kong` hook's secret becomes `${{ env "EVENT_HOOKS_SECRET_<NAME>" }}` and a credential
//! header `${{ env "EVENT_HOOKS_HEADER_<NAME>_<HEADER>" }}`; a `standard` hook's secret is left
//! out, since a `standard` hook the file gives no secret keeps the one the service holds. Hooks
//! without a name cannot be matched, so they are left out and listed on stderr.

use std::collections::BTreeSet;

use event_hooks::sources::Catalogue;
use serde_json::{json, Map, Value};

use super::client::{CliError, Client};
use super::file::{comparable, event_spec, is_credential_header, reference_to, FORMAT_VERSION};

/// `EVENT_HOOKS_<KIND>_<NAME>[_<HEADER>]`: upper case, anything but letters and digits as `_`.
pub(crate) fn variable(kind: &str, parts: &[&str]) -> String {
    let mut name = format!("EVENT_HOOKS_{kind}");
    for part in parts {
        name.push('_');
        name.extend(part.chars().map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        }));
    }
    name
}

/// One hook as the file writes it: without server fields, nulls and defaults that say nothing,
/// its secrets as references.
/// `name`, or `name_2`, `name_3`… when another reference of the dump has it already: hooks
/// `a-b` and `a_b` must not share a variable.
fn unused(name: String, used: &mut BTreeSet<String>) -> String {
    let mut candidate = name.clone();
    let mut n = 2;
    while !used.insert(candidate.clone()) {
        candidate = format!("{name}_{n}");
        n += 1;
    }
    candidate
}

pub(crate) fn file_hook(hook: &Value, name: &str, used: &mut BTreeSet<String>) -> Value {
    let secret = hook["config"]["secret"].clone();
    let standard = hook["config"]["signature"] == "standard";
    let mut out = comparable(hook);
    let Some(map) = out.as_object_mut() else {
        return out;
    };
    map.retain(|_, value| !value.is_null());
    if map
        .get("tags")
        .is_some_and(|t| t.as_array().is_some_and(Vec::is_empty))
    {
        map.shift_remove("tags");
    }
    if map.get("enabled") == Some(&Value::Bool(true)) {
        map.shift_remove("enabled");
    }
    if map.get("handler").and_then(Value::as_str) == Some("log") {
        map.shift_remove("config");
    }
    // The name first, as people look for it.
    let mut ordered = Map::new();
    ordered.insert("name".into(), json!(name));
    for (key, value) in map.iter() {
        if key != "name" {
            ordered.insert(key.clone(), value.clone());
        }
    }
    if let Some(config) = ordered.get_mut("config").and_then(Value::as_object_mut) {
        config.retain(|_, value| !value.is_null());
        if let Some(headers) = config.get_mut("headers").and_then(Value::as_object_mut) {
            for (header, value) in headers.iter_mut() {
                if is_credential_header(header) {
                    let variable = unused(variable("HEADER", &[name, header]), used);
                    *value = json!(reference_to(&variable));
                }
            }
        }
        if config
            .get("headers")
            .is_some_and(|h| h.as_object().is_some_and(Map::is_empty))
        {
            config.shift_remove("headers");
        }
        if !secret.is_null() && !standard {
            let variable = unused(variable("SECRET", &[name]), used);
            config.insert("secret".into(), json!(reference_to(&variable)));
        }
    }
    Value::Object(ordered)
}

/// The hooks file of what the service holds, as YAML; and the hooks left out for want of a name.
pub(crate) async fn dump(client: &Client) -> Result<(String, Vec<String>), CliError> {
    let hooks = client.all_hooks().await?;
    let catalogue = client
        .get("/event-hooks/sources", "reading the sources")
        .await?;
    let mut hooks: Vec<&Value> = hooks.iter().collect();
    // By name, so that the file and its variables come out the same on every dump.
    hooks.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let mut named = Vec::new();
    let mut left_out = Vec::new();
    let mut used = BTreeSet::new();
    for hook in hooks {
        match hook["name"].as_str() {
            Some(name) => named.push(file_hook(hook, name, &mut used)),
            None => left_out.push(hook["id"].as_str().unwrap_or("?").to_owned()),
        }
    }
    let mut events = Map::new();
    for (source, source_events) in catalogue["data"].as_object().into_iter().flatten() {
        if Catalogue::is_builtin_source(source) {
            continue;
        }
        let mut specs = Map::new();
        for (event, spec) in source_events.as_object().into_iter().flatten() {
            specs.insert(
                event.clone(),
                event_spec(spec).unwrap_or_else(|_| spec.clone()),
            );
        }
        events.insert(source.clone(), Value::Object(specs));
    }
    let mut file = Map::new();
    file.insert("_format_version".into(), json!(FORMAT_VERSION));
    file.insert("hooks".into(), Value::Array(named));
    if !events.is_empty() {
        file.insert("custom_events".into(), Value::Object(events));
    }
    let yaml = serde_yaml::to_string(&Value::Object(file))
        .map_err(|err| CliError::Other(format!("cannot write YAML: {err}")))?;
    Ok((yaml, left_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_become_references_and_defaults_go() {
        let hook = json!({
            "id": "x", "created_at": 1, "updated_at": 1, "source": "crud", "event": null,
            "handler": "webhook", "enabled": true, "name": "Billing hook", "tags": [],
            "snooze": null, "on_change": null, "disabled_reason": null, "failing_since": null,
            "max_rate": null, "retry": null, "timeouts": null, "max_in_flight": null,
            "config": { "url": "https://a.test", "secret": "s3cret", "ssl_verify": false,
                        "signature": "kong",
                        "headers": { "Authorization": "Bearer t0ken", "x-team": "a" } }
        });
        let mut used = BTreeSet::new();
        let written = file_hook(&hook, "Billing hook", &mut used);
        let text = written.to_string();
        assert!(
            !text.contains("s3cret") && !text.contains("t0ken"),
            "{text}"
        );
        assert_eq!(
            written["config"]["secret"],
            "${{ env \"EVENT_HOOKS_SECRET_BILLING_HOOK\" }}"
        );
        assert_eq!(
            written["config"]["headers"]["Authorization"],
            "${{ env \"EVENT_HOOKS_HEADER_BILLING_HOOK_AUTHORIZATION\" }}"
        );
        assert_eq!(written["config"]["headers"]["x-team"], "a");
        assert_eq!(
            written.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["name", "source", "handler", "config"]
        );
        // Another hook whose name reads the same as a variable gets variables of its own.
        let twin = file_hook(&hook, "billing-hook", &mut used);
        assert_eq!(
            twin["config"]["secret"],
            "${{ env \"EVENT_HOOKS_SECRET_BILLING_HOOK_2\" }}"
        );
    }
}

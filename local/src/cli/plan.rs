//! What `diff` shows and `apply` does: the hooks file against what the service holds, as a list
//! of changes, each with the fields that change, secrets shown only as "changed".
//!
//! Hooks are matched by `name`; hooks without one are never touched, only listed. A signing
//! secret is compared with the one the admin API answers (it shows the current secret to the
//! admin, as Kong does), so a second `apply` finds nothing to do; a `standard` hook whose file
//! sets no secret keeps the one the service holds. A changed secret of a hook that keeps its
//! scheme goes through `POST /event-hooks/{id}/secret/rotate`, so a `standard` hook's receivers
//! get the old signature beside the new one for the rotation's grace period.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use event_hooks::sources::Catalogue;
use reqwest::Method;
use serde_json::{json, Value};

use super::client::{CliError, Client};
use super::file::{
    comparable, event_spec, is_secret_path, DesiredHook, EventSpec, HooksFile, Secret,
};

/// One field that changes: its dotted path, and its values before and after.
pub(crate) struct FieldChange {
    path: Vec<String>,
    before: Option<Value>,
    after: Option<Value>,
}

/// One hook to create, change or delete.
pub(crate) enum HookChange {
    Create {
        name: String,
        body: Value,
    },
    Update {
        name: String,
        id: String,
        /// The whole hook to `PUT`, with the secret it must keep until the rotation.
        body: Value,
        /// Whether anything but the secret changes (else only the rotation is sent).
        put: bool,
        /// The new secret, sent by rotation.
        rotate: Option<String>,
        fields: Vec<FieldChange>,
    },
    Delete {
        name: String,
        id: String,
    },
}

/// One custom event to register, change or remove.
pub(crate) enum EventChange {
    Put {
        source: String,
        event: String,
        spec: EventSpec,
        fields: Option<Vec<FieldChange>>,
    },
    Delete {
        source: String,
        event: String,
    },
}

/// Everything `apply` would do, and the hooks it leaves alone.
pub(crate) struct Plan {
    pub(crate) hooks: Vec<HookChange>,
    pub(crate) events: Vec<EventChange>,
    /// Hooks without a name: `id`, what they listen to, their handler.
    pub(crate) unnamed: Vec<String>,
}

impl Plan {
    pub(crate) fn is_empty(&self) -> bool {
        self.hooks.is_empty() && self.events.is_empty()
    }
}

/// Compares the file with the service's hooks and custom events.
pub(crate) async fn plan(client: &Client, file: &HooksFile) -> Result<Plan, CliError> {
    let current = client.all_hooks().await?;
    let catalogue = client
        .get("/event-hooks/sources", "reading the sources")
        .await?;
    Ok(compare(file, &current, &catalogue["data"]))
}

/// The plan, from the service's hooks and its catalogue as the admin API answers them.
pub(crate) fn compare(file: &HooksFile, current: &[Value], catalogue: &Value) -> Plan {
    let mut by_name: BTreeMap<&str, &Value> = BTreeMap::new();
    let mut unnamed = Vec::new();
    for hook in current {
        match hook["name"].as_str() {
            Some(name) => {
                by_name.insert(name, hook);
            }
            None => unnamed.push(describe(hook)),
        }
    }
    let mut hooks = Vec::new();
    let declared: BTreeMap<&str, &DesiredHook> =
        file.hooks.iter().map(|h| (h.name.as_str(), h)).collect();
    for (name, hook) in &by_name {
        if !declared.contains_key(name) {
            hooks.push(HookChange::Delete {
                name: (*name).to_owned(),
                id: hook["id"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }
    for desired in &file.hooks {
        match by_name.get(desired.name.as_str()) {
            None => {
                let mut body = desired.body.clone();
                if let Secret::Given(secret) = &desired.secret {
                    body["config"]["secret"] = Value::String(secret.clone());
                }
                hooks.push(HookChange::Create {
                    name: desired.name.clone(),
                    body,
                });
            }
            Some(server) => {
                if let Some(change) = update(desired, server) {
                    hooks.push(change);
                }
            }
        }
    }
    Plan {
        hooks,
        events: event_changes(file, catalogue),
        unnamed,
    }
}

/// The change of a hook the service holds under the file's name, if any.
fn update(desired: &DesiredHook, server: &Value) -> Option<HookChange> {
    let id = server["id"].as_str().unwrap_or_default().to_owned();
    let held = server["config"]["secret"].as_str().map(str::to_owned);
    let signs = desired.body["config"].get("signature").is_some();
    let standard = desired.body["config"]["signature"] == "standard";
    let same_scheme = server["config"]["signature"] == desired.body["config"]["signature"];
    let wanted = match &desired.secret {
        Secret::Given(secret) => Some(secret.clone()),
        // Kept only if it is already a `standard` secret; else none, and the service generates one.
        Secret::Unset if standard && same_scheme => held.clone(),
        Secret::Unset => None,
    };
    let mut fields = Vec::new();
    diff_values(
        &comparable(server),
        &desired.body,
        &mut Vec::new(),
        &mut fields,
    );
    let put = !fields.is_empty();
    let mut rotate = None;
    let mut body = desired.body.clone();
    if signs && wanted != held {
        fields.push(FieldChange {
            path: vec!["config".into(), "secret".into()],
            before: held.clone().map(Value::String),
            after: wanted.clone().map(Value::String),
        });
        match (&held, &wanted) {
            // Rotated, after the PUT (which keeps the held secret) if anything else changes.
            (Some(_), Some(new)) if same_scheme => rotate = Some(new.clone()),
            _ => {}
        }
    }
    if signs {
        let sent = if rotate.is_some() { &held } else { &wanted };
        body["config"]["secret"] = sent.clone().map_or(Value::Null, Value::String);
    }
    if fields.is_empty() {
        return None;
    }
    Some(HookChange::Update {
        name: desired.name.clone(),
        id,
        body,
        put: put || rotate.is_none(),
        rotate,
        fields,
    })
}

/// Adds the fields where `before` and `after` differ: objects key by key, anything else whole.
fn diff_values(before: &Value, after: &Value, path: &mut Vec<String>, out: &mut Vec<FieldChange>) {
    match (before, after) {
        (Value::Object(old), Value::Object(new)) => {
            let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
            for key in keys {
                path.push(key.clone());
                match (old.get(key), new.get(key)) {
                    (Some(a), Some(b)) => diff_values(a, b, path, out),
                    (a, b) => out.push(FieldChange {
                        path: path.clone(),
                        before: a.cloned(),
                        after: b.cloned(),
                    }),
                }
                path.pop();
            }
        }
        (a, b) if a != b => out.push(FieldChange {
            path: path.clone(),
            before: Some(a.clone()),
            after: Some(b.clone()),
        }),
        _ => {}
    }
}

/// The custom events to register, change and remove: exactly those of the file remain.
fn event_changes(file: &HooksFile, catalogue: &Value) -> Vec<EventChange> {
    let mut held = BTreeMap::new();
    if let Some(sources) = catalogue.as_object() {
        for (source, events) in sources {
            if Catalogue::is_builtin_source(source) {
                continue;
            }
            for (event, spec) in events.as_object().into_iter().flatten() {
                let spec = event_spec(spec).unwrap_or_else(|_| spec.clone());
                held.insert((source.clone(), event.clone()), spec);
            }
        }
    }
    let mut changes = Vec::new();
    for ((source, event), spec) in &file.events {
        let fields = match held.get(&(source.clone(), event.clone())) {
            Some(current) if current == spec => continue,
            Some(current) => {
                let mut fields = Vec::new();
                diff_values(current, spec, &mut Vec::new(), &mut fields);
                Some(fields)
            }
            None => None,
        };
        changes.push(EventChange::Put {
            source: source.clone(),
            event: event.clone(),
            spec: spec.clone(),
            fields,
        });
    }
    for (source, event) in held.keys() {
        if !file.events.contains_key(&(source.clone(), event.clone())) {
            changes.push(EventChange::Delete {
                source: source.clone(),
                event: event.clone(),
            });
        }
    }
    changes
}

/// `<id> (source/event, handler)` of a hook without a name.
fn describe(hook: &Value) -> String {
    format!(
        "{} ({}/{}, {})",
        hook["id"].as_str().unwrap_or("?"),
        hook["source"].as_str().unwrap_or("?"),
        hook["event"].as_str().unwrap_or("*"),
        hook["handler"].as_str().unwrap_or("?"),
    )
}

/// A value for display, with every secret in it replaced by `(hidden)`.
fn shown(path: &mut Vec<String>, value: Option<&Value>) -> String {
    let Some(value) = value else {
        return "(absent)".into();
    };
    let parts: Vec<&str> = path.iter().map(String::as_str).collect();
    if is_secret_path(&parts) {
        return if value.is_null() {
            "null".into()
        } else {
            "(hidden)".into()
        };
    }
    let mut masked = value.clone();
    mask(path, &mut masked);
    let text = masked.to_string();
    if text.chars().count() > 120 {
        format!("{}…", text.chars().take(119).collect::<String>())
    } else {
        text
    }
}

fn mask(path: &mut Vec<String>, value: &mut Value) {
    if let Value::Object(map) = value {
        for (key, child) in map.iter_mut() {
            path.push(key.clone());
            let parts: Vec<&str> = path.iter().map(String::as_str).collect();
            if is_secret_path(&parts) && !child.is_null() {
                *child = Value::String("(hidden)".into());
            } else {
                mask(path, child);
            }
            path.pop();
        }
    }
}

fn render_fields(out: &mut String, fields: &[FieldChange]) {
    for field in fields {
        let mut path = field.path.clone();
        let dotted = path.join(".");
        let parts: Vec<&str> = path.iter().map(String::as_str).collect();
        if is_secret_path(&parts) {
            let _ = writeln!(out, "    ~ {dotted}: changed (value hidden)");
            continue;
        }
        let before = shown(&mut path, field.before.as_ref());
        let after = shown(&mut path, field.after.as_ref());
        let _ = writeln!(out, "    ~ {dotted}: {before} -> {after}");
    }
}

/// The plan for people: one line per change, the fields of each change below it, then a
/// summary. Secrets show only as changed.
pub(crate) fn render(plan: &Plan, source: &str) -> String {
    let mut out = String::new();
    let (mut added, mut changed, mut deleted) = (0, 0, 0);
    for change in &plan.events {
        match change {
            EventChange::Put {
                source,
                event,
                fields: None,
                ..
            } => {
                added += 1;
                let _ = writeln!(out, "+ custom event {source}/{event}");
            }
            EventChange::Put {
                source,
                event,
                fields: Some(fields),
                ..
            } => {
                changed += 1;
                let _ = writeln!(out, "~ custom event {source}/{event}");
                render_fields(&mut out, fields);
            }
            EventChange::Delete { source, event } => {
                deleted += 1;
                let _ = writeln!(out, "- custom event {source}/{event}");
            }
        }
    }
    for change in &plan.hooks {
        match change {
            HookChange::Create { name, .. } => {
                added += 1;
                let _ = writeln!(out, "+ hook \"{name}\"");
            }
            HookChange::Update {
                name, id, fields, ..
            } => {
                changed += 1;
                let _ = writeln!(out, "~ hook \"{name}\" ({id})");
                render_fields(&mut out, fields);
            }
            HookChange::Delete { name, id } => {
                deleted += 1;
                let _ = writeln!(out, "- hook \"{name}\" ({id})");
            }
        }
    }
    for hook in &plan.unnamed {
        let _ = writeln!(out, "= hook without a name, left alone: {hook}");
    }
    if plan.is_empty() {
        let _ = writeln!(out, "No changes: the service holds what {source} declares.");
    } else {
        let _ = writeln!(
            out,
            "{added} to add, {changed} to change, {deleted} to delete."
        );
    }
    out
}

/// Carries the plan out: custom events first (hooks may name them), deletions of hooks before
/// creations (a name freed by one can be taken by another), custom events removed last. Stops
/// at the first refusal, naming the hook and the fields the service refused.
pub(crate) async fn apply(client: &Client, plan: &Plan) -> Result<(), CliError> {
    for change in &plan.events {
        if let EventChange::Put {
            source,
            event,
            spec,
            ..
        } = change
        {
            let path = format!("/event-hooks/sources/{}/{}", encode(source), encode(event));
            let what = format!("custom event {source}/{event}");
            client
                .send(Method::PUT, &path, Some(spec), &[], &what)
                .await?;
        }
    }
    for change in &plan.hooks {
        if let HookChange::Delete { name, id } = change {
            let what = format!("hook \"{name}\"");
            client
                .send(
                    Method::DELETE,
                    &format!("/event-hooks/{id}"),
                    None,
                    &[],
                    &what,
                )
                .await?;
        }
    }
    for change in &plan.hooks {
        match change {
            HookChange::Update {
                name,
                id,
                body,
                put,
                rotate,
                ..
            } => {
                let what = format!("hook \"{name}\"");
                if *put {
                    client
                        .send(
                            Method::PUT,
                            &format!("/event-hooks/{id}"),
                            Some(body),
                            &[],
                            &what,
                        )
                        .await?;
                }
                if let Some(secret) = rotate {
                    client
                        .send(
                            Method::POST,
                            &format!("/event-hooks/{id}/secret/rotate"),
                            Some(&json!({ "secret": secret })),
                            &[],
                            &what,
                        )
                        .await?;
                }
            }
            HookChange::Create { name, body } => {
                let what = format!("hook \"{name}\"");
                client
                    .send(Method::POST, "/event-hooks", Some(body), &[], &what)
                    .await?;
            }
            HookChange::Delete { .. } => {}
        }
    }
    for change in &plan.events {
        if let EventChange::Delete { source, event } = change {
            let path = format!("/event-hooks/sources/{}/{}", encode(source), encode(event));
            let what = format!("custom event {source}/{event}");
            client.send(Method::DELETE, &path, None, &[], &what).await?;
        }
    }
    Ok(())
}

/// A path segment, percent-encoded.
pub(crate) fn encode(segment: &str) -> String {
    let mut out = String::new();
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::file::parse;

    /// The file's one hook against `server`, the service's one hook.
    fn change_of(file_hook: &str, server: Value) -> Option<HookChange> {
        let text = format!("hooks:\n  - {file_hook}\n");
        let env = |name: &str| (name == "S").then(|| "new-secret".to_string());
        let file = parse("hooks.yaml", &text, &env).unwrap_or_else(|err| panic!("{err}"));
        let mut plan = compare(&file, &[server], &json!({}));
        assert!(plan.hooks.len() <= 1);
        plan.hooks.pop()
    }

    fn server(signature: &str, secret: Option<&str>) -> Value {
        json!({
            "id": "00000000-0000-0000-0000-000000000001", "created_at": 1, "updated_at": 1,
            "source": "crud", "event": null, "handler": "webhook",
            "config": {"url": "https://a.example.com/", "headers": {}, "secret": secret,
                       "ssl_verify": false, "signature": signature},
            "snooze": null, "on_change": null, "enabled": true, "name": "h", "tags": [],
            "disabled_reason": null, "failing_since": null, "max_rate": null,
            "retry": null, "timeouts": null, "max_in_flight": null
        })
    }

    const STANDARD: &str = "{name: h, source: crud, handler: webhook, config: {url: 'https://a.example.com/', signature: standard}}";
    const KONG: &str =
        "{name: h, source: crud, handler: webhook, config: {url: 'https://a.example.com/'}}";
    const KONG_SECRET: &str = "{name: h, source: crud, handler: webhook, config: {url: 'https://a.example.com/', secret: '${{ env \"S\" }}'}}";
    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    #[test]
    fn a_standard_hook_without_a_secret_in_the_file_keeps_the_services() {
        assert!(change_of(STANDARD, server("standard", Some(WHSEC))).is_none());
    }

    #[test]
    fn a_kong_hook_without_a_secret_in_the_file_is_unsigned() {
        let Some(HookChange::Update { body, rotate, .. }) =
            change_of(KONG, server("kong", Some("old")))
        else {
            panic!("the secret must go");
        };
        assert_eq!(body["config"]["secret"], Value::Null);
        assert!(rotate.is_none());
    }

    #[test]
    fn a_new_secret_is_rotated_in_and_the_put_keeps_the_old_one() {
        let Some(HookChange::Update {
            body, rotate, put, ..
        }) = change_of(KONG_SECRET, server("kong", Some("old")))
        else {
            panic!("a changed secret is a change");
        };
        assert_eq!(rotate.as_deref(), Some("new-secret"));
        assert!(!put, "nothing else changes");
        assert_eq!(body["config"]["secret"], "old");
        assert!(change_of(KONG_SECRET, server("kong", Some("new-secret"))).is_none());
    }

    #[test]
    fn a_hook_turning_standard_gets_a_generated_secret_not_its_kong_one() {
        let Some(HookChange::Update { body, rotate, .. }) =
            change_of(STANDARD, server("kong", Some("kong-secret")))
        else {
            panic!("the scheme changes");
        };
        assert_eq!(body["config"]["secret"], Value::Null);
        assert!(rotate.is_none());
    }
}

//! Handlers of `/event-hooks` and `/event-hooks/{id}`: list, create, read, update, upsert, delete.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::body::Input;
use super::error::ApiError;
use super::query::Query;
use super::secret::fill_in_secret;
use super::AdminState;
use crate::events::{now_seconds, Operation};
use crate::form;
use crate::lua::pool::LuaPool;
use crate::model::{Hook, HookView, Versioned};
use crate::store::{HookFilter, PageToken, Precondition, StoreError, TagFilter};
use crate::validate::{self, Context};

/// Default of `?size=`, as Kong's.
const DEFAULT_PAGE_SIZE: usize = 100;

/// How often a write that lost a race with another writer is redone on fresh data.
pub(super) const WRITE_ATTEMPTS: usize = 5;

/// `GET /event-hooks?size=&offset=&source=&event=&tags=&handler=&enabled=`
pub(super) async fn list(
    State(state): State<AdminState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let query = Query::parse(query);
    let size = query.size(DEFAULT_PAGE_SIZE)?;
    let after = query.offset(PageToken::decode)?;
    let filter = HookFilter {
        source: query
            .get("source")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        event: query
            .get("event")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        tags: query.get("tags").filter(|s| !s.is_empty()).map(parse_tags),
    };

    // Beyond Kong: `handler` and `enabled` narrow each page the store returns, so a filtered page
    // may hold fewer than `size` hooks (or none) and still have a `next`. Unlike the string filters
    // above, an empty value is not "no filter": it names no handler, so it is a 400 like any other.
    let handler = match query.get("handler") {
        None => None,
        Some(name) => Some(crate::model::HandlerKind::parse(name).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "handler filter must be webhook, webhook-custom, log or lambda, not '{name}'"
            ))
        })?),
    };
    let enabled = match query.get("enabled") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "enabled filter must be true or false, not '{other}'"
            )))
        }
    };
    let page = state.store.list(&filter, size, after).await?;
    let items: Vec<HookView> = page
        .items
        .iter()
        .filter(|hook| handler.is_none_or(|kind| hook.handler.kind() == kind))
        .filter(|hook| enabled.is_none_or(|on| hook.enabled == on))
        .map(HookView::from)
        .collect();
    let mut body = json!({ "data": items, "next": Value::Null });
    if let Some(token) = page.next {
        let offset = token.encode();
        // Keep the caller's size and filters so following `next` walks the same listing.
        let mut next = form_urlencoded::Serializer::new(String::new());
        next.append_pair("offset", &offset);
        for (name, value) in query.pairs() {
            if matches!(
                name.as_str(),
                "size" | "source" | "event" | "tags" | "handler" | "enabled"
            ) {
                next.append_pair(name, value);
            }
        }
        body["offset"] = Value::String(offset);
        body["next"] = Value::String(format!("/event-hooks?{}", next.finish()));
    }
    Ok(Json(body))
}

/// Kong's tag filter syntax: `a,b` (all of them) or `a/b` (any of them).
fn parse_tags(raw: &str) -> TagFilter {
    let split = |sep: char| raw.split(sep).map(str::to_string).collect();
    if raw.contains('/') {
        TagFilter::Any(split('/'))
    } else {
        TagFilter::All(split(','))
    }
}

/// The id in the path; anything but a UUID is Kong's invalid primary key error.
pub(super) fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::InvalidPrimaryKey)
}

/// Coerces form strings by the hook schema; JSON bodies are taken as they are.
fn into_value(input: Input) -> Value {
    let mut value = Value::Object(input.fields);
    if input.from_form {
        form::coerce_hook(&mut value);
    }
    value
}

/// Validates on the Lua pool, off the async runtime's threads: lambda functions and templates
/// compile (and chunks run) in the sandbox.
pub(super) async fn validate_hook(
    state: &AdminState,
    value: Value,
    id: Uuid,
    created_at: i64,
) -> Result<Hook, ApiError> {
    let ctx = Context {
        id,
        created_at,
        now: now_seconds(),
        lua: state.settings.lua.clone(),
    };
    let mut hook = LuaPool::shared()
        .run(move || validate::hook(&value, &ctx))
        .await
        .map_err(ApiError::internal)??;
    fill_in_secret(&mut hook)?;
    Ok(hook)
}

fn created(hook: &Hook) -> Response {
    (StatusCode::CREATED, Json(HookView::from(hook))).into_response()
}

/// `POST /event-hooks`
pub(super) async fn create(
    State(state): State<AdminState>,
    input: Input,
) -> Result<Response, ApiError> {
    let value = into_value(input);
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .and_then(|s| Uuid::parse_str(s).ok())
        .unwrap_or_else(Uuid::new_v4);
    let hook = validate_hook(&state, value, id, now_seconds()).await?;
    match state.store.put(&hook, Precondition::Absent).await {
        Ok(_) => {}
        Err(StoreError::Conflict) => return Err(ApiError::PrimaryKeyViolation(id)),
        Err(err) => return Err(err.into()),
    }
    state.emit_change(Operation::Create, &hook, None).await?;
    Ok(created(&hook))
}

/// `GET /event-hooks/{id}`
pub(super) async fn read(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let stored = state.store.get(id).await?.ok_or(ApiError::NotFound)?;
    let mut shown = HookView::from(&stored.value).into_json();
    // The hook's lane in this process's dispatcher, when it has one (the local server).
    if let Some(lane) = state.lanes.as_ref().and_then(|lanes| lanes.lane(id)) {
        shown["lane"] = serde_json::to_value(lane).map_err(ApiError::internal)?;
    }
    Ok(Json(shown))
}

/// `PATCH /event-hooks/{id}`: records (`config`) deep-merged, maps replaced whole, then the
/// result validated as a whole hook.
pub(super) async fn update(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    input: Input,
) -> Result<Json<HookView>, ApiError> {
    let id = parse_id(&id)?;
    let Value::Object(patch) = into_value(input) else {
        unreachable!("bodies are objects")
    };
    for _ in 0..WRITE_ATTEMPTS {
        let Versioned {
            value: old,
            version,
        } = state.store.get(id).await?.ok_or(ApiError::NotFound)?;
        let merged = merge_patch(&old, &patch);
        let mut hook = validate_hook(&state, merged, id, old.created_at).await?;
        hook.handler.keep_rotation(&old.handler);
        match state.store.put(&hook, Precondition::Version(version)).await {
            Ok(_) => {
                state
                    .emit_change(Operation::Update, &hook, Some(&old))
                    .await?;
                return Ok(Json(HookView::from(&hook)));
            }
            // Someone else changed the hook meanwhile: merge into their version.
            Err(StoreError::Conflict) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(ApiError::internal("hook kept changing during the update"))
}

/// `PUT /event-hooks/{id}`: create or replace the whole hook (Kong answers 405; we upsert).
pub(crate) async fn upsert(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    input: Input,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let mut value = into_value(input);
    if let Some(fields) = value.as_object_mut() {
        // The path names the hook; an id in the body cannot move it.
        fields.remove("id");
    }
    for _ in 0..WRITE_ATTEMPTS {
        let existing = state.store.get(id).await?;
        let created_at = existing
            .as_ref()
            .map_or_else(now_seconds, |e| e.value.created_at);
        let mut hook = validate_hook(&state, value.clone(), id, created_at).await?;
        if let Some(old) = &existing {
            hook.handler.keep_rotation(&old.value.handler);
        }
        let precondition = existing
            .as_ref()
            .map_or(Precondition::Absent, |e| Precondition::Version(e.version));
        match state.store.put(&hook, precondition).await {
            Ok(_) => {
                return Ok(match existing {
                    Some(old) => {
                        state
                            .emit_change(Operation::Update, &hook, Some(&old.value))
                            .await?;
                        Json(HookView::from(&hook)).into_response()
                    }
                    None => {
                        state.emit_change(Operation::Create, &hook, None).await?;
                        created(&hook)
                    }
                });
            }
            Err(StoreError::Conflict) => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(ApiError::internal("hook kept changing during the upsert"))
}

/// `DELETE /event-hooks/{id}`: 204 whether or not it existed.
pub(super) async fn remove(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    if let Some(old) = state.store.delete(id).await? {
        state
            .emit_change(Operation::Delete, &old, Some(&old))
            .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Applies a PATCH body to a stored hook: top-level fields and `config` keys are replaced one by
/// one; values inside `config` (such as the `headers` map) are replaced whole. A new handler
/// starts from an empty config, since the old one belongs to another schema.
fn merge_patch(old: &Hook, patch: &Map<String, Value>) -> Value {
    // Without the rotated-out secret, which users may not set: a rotation in progress is
    // carried over after validation.
    let Value::Object(mut merged) = HookView::from(old).into_json() else {
        unreachable!("a hook serializes to an object")
    };
    let handler_changes = patch
        .get("handler")
        .is_some_and(|handler| Some(handler) != merged.get("handler"));
    if handler_changes {
        merged.remove("config");
    }
    for (key, value) in patch {
        match (key.as_str(), merged.get_mut(key), value) {
            ("config", Some(Value::Object(config)), Value::Object(changes)) => {
                for (name, value) in changes {
                    config.insert(name.clone(), value.clone());
                }
            }
            _ => {
                merged.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Handler, WebhookConfig};
    use std::collections::BTreeMap;

    fn webhook() -> Hook {
        Hook {
            id: Uuid::nil(),
            created_at: 1,
            updated_at: 1,
            source: "crud".into(),
            event: Some("consumers".into()),
            handler: Handler::Webhook(WebhookConfig {
                url: "https://a.test".into(),
                headers: BTreeMap::from([("x-a".into(), "1".into())]),
                secret: Some("s".into()),
                ssl_verify: false,
                signature: Default::default(),
                previous_secret: None,
            }),
            snooze: None,
            on_change: None,
            enabled: true,
            name: None,
            tags: vec![],
            delivery: Default::default(),
            disabled_reason: None,
            failing_since: None,
            max_rate: None,
        }
    }

    #[test]
    fn merge_keeps_config_keys_and_replaces_maps() {
        let patch = json!({"config":{"headers":{"x-b":"2"}},"snooze":5});
        let merged = merge_patch(&webhook(), patch.as_object().unwrap());
        assert_eq!(merged["config"]["url"], "https://a.test");
        assert_eq!(merged["config"]["secret"], "s");
        assert_eq!(merged["config"]["headers"], json!({"x-b":"2"}));
        assert_eq!(merged["snooze"], 5);
    }

    #[test]
    fn merge_with_a_new_handler_drops_the_old_config() {
        let patch = json!({"handler":"log"});
        let merged = merge_patch(&webhook(), patch.as_object().unwrap());
        assert!(merged.get("config").is_none());
    }

    #[test]
    fn tag_filters() {
        assert_eq!(
            parse_tags("a,b"),
            TagFilter::All(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            parse_tags("a/b"),
            TagFilter::Any(vec!["a".into(), "b".into()])
        );
    }
}

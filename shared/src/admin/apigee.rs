//! Apigee Edge's Management API routes for monetization webhooks and notification conditions
//! (spec §12), also under `/v1`: Edge's shapes (`postURL` in, `postUrl` out, `totalRecords`,
//! Unix ms), HTTP Basic auth with the admin token as password (the user is recorded as
//! `createdBy`/`updatedBy`), errors as `{"code","message"}`. Each webhook is a hook (see
//! [`crate::apigee::webhook`]), so everything `/event-hooks` offers works on it.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::body::Input;
use super::error::ApiError;
use super::hooks::{validate_hook, WRITE_ATTEMPTS};
use super::query::Query;
use super::AdminState;
use crate::apigee::webhook::{self, MAX_USER_BYTES, MAX_WEBHOOK_NAME_BYTES};
use crate::apigee::{parse_condition, Condition, MonetizationStore};
use crate::events::{now_millis, now_seconds, Operation};
use crate::model::{Handler, Hook, HookView, Versioned};
use crate::store::{HookFilter, Precondition, StoreError, TagFilter};
use crate::validate::SchemaViolation;

/// Most webhooks one organisation lists.
const MAX_WEBHOOKS_PER_ORG: usize = 10_000;

/// Whether `path` is one of Edge's routes (with or without `/v1`).
pub(crate) fn is_edge_path(path: &str) -> bool {
    let path = path.strip_prefix("/v1").unwrap_or(path);
    path.starts_with("/mint/")
}

/// The user and password of an `Authorization: Basic …` header.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::edge(StatusCode::BAD_REQUEST, "mint.invalidRequest", message)
}

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::edge(
        StatusCode::NOT_FOUND,
        "mint.resourceDoesNotExist",
        format!("{what} with id {id} does not exist"),
    )
}

/// The user of the Basic credentials, recorded as `createdBy`/`updatedBy`; none with only a
/// `Kong-Admin-Token`.
fn user_of(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some((user, _)) = basic_credentials(headers) else {
        return Ok(None);
    };
    if user.is_empty() {
        return Ok(None);
    }
    if user.len() > MAX_USER_BYTES
        || user
            .chars()
            .any(|c| c.is_control() || matches!(c, ',' | '/' | ' '))
    {
        return Err(bad(format!(
            "the user name must be at most {MAX_USER_BYTES} bytes without spaces, ',' or '/'"
        )));
    }
    Ok(Some(user))
}

fn name_too_long(name: &str) -> ApiError {
    bad(format!(
        "name {name:?} is too long for this organization: letters, digits, '.', '-' and '_' \
         count once, other bytes three times, {} in all with the organization name",
        crate::limits::MAX_NAME_BYTES - 8
    ))
}

fn check_org(org: &str) -> Result<(), ApiError> {
    if webhook::valid_org(org) {
        Ok(())
    } else {
        Err(bad(format!(
            "invalid organization name {org:?}: 1 to {} letters, digits, '.', '_' or '-'",
            webhook::MAX_ORG_BYTES
        )))
    }
}

fn check_name(name: &Value) -> Result<String, ApiError> {
    match name {
        Value::String(s)
            if !s.trim().is_empty()
                && s.len() <= MAX_WEBHOOK_NAME_BYTES
                && !s.chars().any(char::is_control) =>
        {
            Ok(s.clone())
        }
        Value::String(_) => Err(bad(format!(
            "name must be 1 to {MAX_WEBHOOK_NAME_BYTES} bytes without control characters"
        ))),
        _ => Err(bad("name must be a string")),
    }
}

fn check_url(url: &Value) -> Result<String, ApiError> {
    match url {
        Value::String(s) => Ok(s.clone()),
        _ => Err(bad("postURL must be a string")),
    }
}

/// `enabled` as Edge sends it: `"true"`/`"false"` or a boolean.
fn check_enabled(value: &Value) -> Result<bool, ApiError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(bad("enabled must be true or false")),
    }
}

/// A schema violation of the underlying hook in Edge's words (`config.url` is `postURL`).
fn schema_to_edge(violation: &SchemaViolation) -> ApiError {
    let messages: Vec<String> = violation
        .errors()
        .iter()
        .map(|e| {
            let field = match e.dotted_path().as_str() {
                "config.url" => "postURL".to_string(),
                other => other.to_string(),
            };
            format!("{field}: {}", e.message)
        })
        .collect();
    bad(messages.join("; "))
}

fn hook_error(err: ApiError, org: &str, name: &str) -> ApiError {
    match err {
        ApiError::Schema(violation) => schema_to_edge(&violation),
        // A unique violation is a conflict (409), as Kong answers it, in Edge's shape.
        ApiError::UniqueViolation(_) => ApiError::edge(
            StatusCode::CONFLICT,
            "mint.resourceAlreadyExists",
            format!("a webhook named {name:?} already exists in organization {org}"),
        ),
        other => other.into_edge(),
    }
}

fn body(input: Result<Input, ApiError>) -> Result<Map<String, Value>, ApiError> {
    let input = input.map_err(ApiError::into_edge)?;
    Ok(input.fields)
}

/// The webhook `id` of `org`, with its version; 404 when it is not one.
async fn find(state: &AdminState, org: &str, id: &str) -> Result<Versioned<Hook>, ApiError> {
    let missing = || not_found("Webhook", id);
    let uuid = Uuid::parse_str(id).map_err(|_| missing())?;
    let stored = state
        .store
        .get(uuid)
        .await
        .map_err(|e| ApiError::from(e).into_edge())?
        .ok_or_else(missing)?;
    if webhook::is_edge_webhook(&stored.value) != Some(org) {
        return Err(missing());
    }
    Ok(stored)
}

/// `GET /mint/organizations/{org}/webhooks`
pub(crate) async fn list_webhooks(
    State(state): State<AdminState>,
    Path(org): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_org(&org)?;
    let webhooks = org_webhooks(&state, &org).await?;
    let shown: Vec<Value> = webhooks.iter().map(|h| webhook::shown(h, &org)).collect();
    Ok(Json(
        json!({"totalRecords": shown.len(), "webhooks": shown}),
    ))
}

async fn org_webhooks(state: &AdminState, org: &str) -> Result<Vec<Hook>, ApiError> {
    let filter = HookFilter {
        source: Some(webhook::SOURCE.into()),
        event: None,
        tags: Some(TagFilter::All(vec![format!("{}{org}", webhook::ORG_TAG)])),
    };
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = state
            .store
            .list(&filter, 1000, after)
            .await
            .map_err(|e| ApiError::from(e).into_edge())?;
        out.extend(
            page.items
                .into_iter()
                .filter(|h| webhook::is_edge_webhook(h) == Some(org)),
        );
        match page.next {
            Some(token) if out.len() < MAX_WEBHOOKS_PER_ORG => after = Some(token),
            _ => return Ok(out),
        }
    }
}

/// `GET /mint/organizations/{org}/webhooks/{id}`
pub(crate) async fn get_webhook(
    State(state): State<AdminState>,
    Path((org, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_org(&org)?;
    let stored = find(&state, &org, &id).await?;
    Ok(Json(webhook::shown(&stored.value, &org)))
}

/// `POST /mint/organizations/{org}/webhooks` with `name` and `postURL`: created disabled.
pub(crate) async fn create_webhook(
    State(state): State<AdminState>,
    Path(org): Path<String>,
    headers: HeaderMap,
    input: Result<Input, ApiError>,
) -> Result<Response, ApiError> {
    check_org(&org)?;
    let fields = body(input)?;
    for key in fields.keys() {
        if !matches!(key.as_str(), "name" | "postURL") {
            return Err(bad(format!("unknown field {key:?}: send name and postURL")));
        }
    }
    let name = check_name(fields.get("name").ok_or_else(|| bad("name is required"))?)?;
    let url = check_url(
        fields
            .get("postURL")
            .ok_or_else(|| bad("postURL is required"))?,
    )?;
    let user = user_of(&headers)?;
    let input = webhook::hook_input(&org, &name, &url, false, user.as_deref(), user.as_deref())
        .ok_or_else(|| name_too_long(&name))?;
    let hook = validate_hook(&state, input, Uuid::new_v4(), now_seconds())
        .await
        .map_err(|e| hook_error(e, &org, &name))?;
    match state.store.put(&hook, Precondition::Absent).await {
        Ok(_) => {}
        Err(err) => return Err(hook_error(err.into(), &org, &name)),
    }
    state
        .emit_change(Operation::Create, &hook, None)
        .await
        .map_err(ApiError::into_edge)?;
    Ok((StatusCode::CREATED, Json(webhook::shown(&hook, &org))).into_response())
}

/// What a change of a webhook sets; `None` keeps the stored value.
#[derive(Default)]
struct Change {
    name: Option<String>,
    url: Option<String>,
    enabled: Option<bool>,
}

async fn change_webhook(
    state: &AdminState,
    org: &str,
    id: &str,
    user: Option<String>,
    change: Change,
) -> Result<Json<Value>, ApiError> {
    for _ in 0..WRITE_ATTEMPTS {
        let Versioned {
            value: old,
            version,
        } = find(state, org, id).await?;
        let shown = webhook::shown(&old, org);
        let name = change
            .name
            .clone()
            .unwrap_or_else(|| shown["name"].as_str().unwrap_or_default().to_string());
        let url = change.url.clone().unwrap_or_else(|| match &old.handler {
            Handler::Webhook(c) => c.url.clone(),
            _ => String::new(),
        });
        let created_by = shown["createdBy"].as_str();
        let updated_by = user.as_deref().or(shown["updatedBy"].as_str());
        let mut input = webhook::hook_input(
            org,
            &name,
            &url,
            change.enabled.unwrap_or(old.enabled),
            created_by,
            updated_by,
        )
        .ok_or_else(|| name_too_long(&name))?;
        // Whatever else was set on the hook through `/event-hooks` is kept.
        let kept = HookView::from(&old).into_json();
        for field in [
            "snooze",
            "on_change",
            "max_rate",
            "max_in_flight",
            "retry",
            "timeouts",
        ] {
            input[field] = kept[field].clone();
        }
        for field in ["headers", "secret", "ssl_verify", "signature"] {
            input["config"][field] = kept["config"][field].clone();
        }
        let extra_tags = old.tags.iter().filter(|t| {
            ![
                webhook::ORG_TAG,
                webhook::CREATED_BY_TAG,
                webhook::UPDATED_BY_TAG,
            ]
            .iter()
            .any(|p| t.starts_with(p))
        });
        if let Some(tags) = input["tags"].as_array_mut() {
            tags.extend(extra_tags.map(|t| Value::String(t.clone())));
        }
        // Enabling clears what endpoint protection recorded; a hook that stays disabled keeps
        // its reason.
        input["disabled_reason"] = if change.enabled.unwrap_or(old.enabled) {
            Value::Null
        } else {
            kept["disabled_reason"].clone()
        };
        let mut hook = validate_hook(state, input, old.id, old.created_at)
            .await
            .map_err(|e| hook_error(e, org, &name))?;
        hook.handler.keep_rotation(&old.handler);
        match state.store.put(&hook, Precondition::Version(version)).await {
            Ok(_) => {
                state
                    .emit_change(Operation::Update, &hook, Some(&old))
                    .await
                    .map_err(ApiError::into_edge)?;
                return Ok(Json(webhook::shown(&hook, org)));
            }
            Err(StoreError::Conflict) => continue,
            Err(err) => return Err(hook_error(err.into(), org, &name)),
        }
    }
    Err(ApiError::internal("webhook kept changing during the update").into_edge())
}

/// Fields of a webhook as Edge shows them, which a `PUT` may send back unchanged.
const READ_ONLY: [&str; 7] = [
    "id",
    "orgId",
    "created",
    "createdBy",
    "updated",
    "updatedBy",
    "postUrl",
];

/// `PUT /mint/organizations/{org}/webhooks/{id}` with the fields to change.
pub(crate) async fn edit_webhook(
    State(state): State<AdminState>,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
    input: Result<Input, ApiError>,
) -> Result<Json<Value>, ApiError> {
    check_org(&org)?;
    let fields = body(input)?;
    let mut change = Change::default();
    for (key, value) in &fields {
        match key.as_str() {
            "name" => change.name = Some(check_name(value)?),
            "postURL" => change.url = Some(check_url(value)?),
            "enabled" => change.enabled = Some(check_enabled(value)?),
            key if READ_ONLY.contains(&key) => {}
            other => {
                return Err(bad(format!(
                    "unknown field {other:?}: send name, postURL or enabled"
                )))
            }
        }
    }
    let user = user_of(&headers)?;
    change_webhook(&state, &org, &id, user, change).await
}

/// `POST /mint/organizations/{org}/webhooks/{id}` with `{"enabled": "true"|"false"}`.
pub(crate) async fn enable_webhook(
    State(state): State<AdminState>,
    Path((org, id)): Path<(String, String)>,
    headers: HeaderMap,
    input: Result<Input, ApiError>,
) -> Result<Json<Value>, ApiError> {
    check_org(&org)?;
    let fields = body(input)?;
    if let Some(other) = fields.keys().find(|k| k.as_str() != "enabled") {
        return Err(bad(format!("unknown field {other:?}: send enabled")));
    }
    let enabled = check_enabled(
        fields
            .get("enabled")
            .ok_or_else(|| bad("enabled is required"))?,
    )?;
    let user = user_of(&headers)?;
    let change = Change {
        enabled: Some(enabled),
        ..Change::default()
    };
    change_webhook(&state, &org, &id, user, change).await
}

/// `DELETE /mint/organizations/{org}/webhooks/{id}?forceDelete=true|false`: 204; 404 when it
/// does not exist. Nothing here is "in progress" in Edge's sense (deliveries already queued end
/// as a deleted hook's), so `forceDelete` is checked and accepted either way.
pub(crate) async fn delete_webhook(
    State(state): State<AdminState>,
    Path((org, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<StatusCode, ApiError> {
    check_org(&org)?;
    let query = Query::parse(query);
    if let Some(force) = query.get("forceDelete") {
        if !force.eq_ignore_ascii_case("true") && !force.eq_ignore_ascii_case("false") {
            return Err(bad("forceDelete must be true or false"));
        }
    }
    let stored = find(&state, &org, &id).await?;
    if let Some(old) = state
        .store
        .delete(stored.value.id)
        .await
        .map_err(|e| ApiError::from(e).into_edge())?
    {
        state
            .emit_change(Operation::Delete, &old, Some(&old))
            .await
            .map_err(ApiError::into_edge)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

fn conditions_store(state: &AdminState) -> Result<&dyn MonetizationStore, ApiError> {
    state.monetization.as_deref().ok_or_else(|| {
        ApiError::edge(
            StatusCode::NOT_IMPLEMENTED,
            "mint.notImplemented",
            "notification conditions are not configured in this deployment",
        )
    })
}

fn store_error(err: StoreError) -> ApiError {
    ApiError::from(err).into_edge()
}

/// A condition from a request body, its webhooks checked to be this organisation's.
async fn condition_from(
    state: &AdminState,
    org: &str,
    fields: &Map<String, Value>,
    id: Uuid,
    created: i64,
) -> Result<Condition, ApiError> {
    let input = parse_condition(fields).map_err(|err| bad(err.to_string()))?;
    for webhook in &input.webhooks {
        let exists = match state.store.get(*webhook).await.map_err(store_error)? {
            Some(stored) => webhook::is_edge_webhook(&stored.value) == Some(org),
            None => false,
        };
        if !exists {
            return Err(bad(format!(
                "webhook {webhook} does not exist in organization {org}"
            )));
        }
    }
    Ok(Condition {
        id,
        org: org.to_string(),
        rate_plan: input.rate_plan,
        published: input.published,
        usage_target: input.usage_target,
        targets: input.targets,
        webhooks: input.webhooks,
        created,
        updated: now_millis(),
    })
}

/// `GET /mint/organizations/{org}/notification-conditions`
pub(super) async fn list_conditions(
    State(state): State<AdminState>,
    Path(org): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_org(&org)?;
    let conditions = conditions_store(&state)?
        .list_conditions(&org)
        .await
        .map_err(store_error)?;
    let shown: Vec<Value> = conditions.iter().map(Condition::shown).collect();
    Ok(Json(
        json!({"totalRecords": shown.len(), "notificationConditions": shown}),
    ))
}

/// `POST /mint/organizations/{org}/notification-conditions`
pub(crate) async fn create_condition(
    State(state): State<AdminState>,
    Path(org): Path<String>,
    input: Result<Input, ApiError>,
) -> Result<Response, ApiError> {
    check_org(&org)?;
    let store = conditions_store(&state)?;
    let fields = body(input)?;
    if store
        .list_conditions(&org)
        .await
        .map_err(store_error)?
        .len()
        >= crate::apigee::MAX_CONDITIONS_PER_ORG
    {
        return Err(bad(format!(
            "organization {org} has the most notification conditions allowed ({})",
            crate::apigee::MAX_CONDITIONS_PER_ORG
        )));
    }
    let condition = condition_from(&state, &org, &fields, Uuid::new_v4(), now_millis()).await?;
    store.put_condition(&condition).await.map_err(store_error)?;
    Ok((StatusCode::CREATED, Json(condition.shown())).into_response())
}

async fn find_condition(
    store: &dyn MonetizationStore,
    org: &str,
    id: &str,
) -> Result<Condition, ApiError> {
    let missing = || not_found("Notification condition", id);
    let uuid = Uuid::parse_str(id).map_err(|_| missing())?;
    store
        .get_condition(org, uuid)
        .await
        .map_err(store_error)?
        .ok_or_else(missing)
}

/// `GET /mint/organizations/{org}/notification-conditions/{id}`
pub(super) async fn get_condition(
    State(state): State<AdminState>,
    Path((org, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_org(&org)?;
    let condition = find_condition(conditions_store(&state)?, &org, &id).await?;
    Ok(Json(condition.shown()))
}

/// `PUT /mint/organizations/{org}/notification-conditions/{id}`: replaces it whole.
pub(super) async fn put_condition(
    State(state): State<AdminState>,
    Path((org, id)): Path<(String, String)>,
    input: Result<Input, ApiError>,
) -> Result<Json<Value>, ApiError> {
    check_org(&org)?;
    let store = conditions_store(&state)?;
    let fields = body(input)?;
    let old = find_condition(store, &org, &id).await?;
    let condition = condition_from(&state, &org, &fields, old.id, old.created).await?;
    store.put_condition(&condition).await.map_err(store_error)?;
    Ok(Json(condition.shown()))
}

/// `DELETE /mint/organizations/{org}/notification-conditions/{id}`: 204, or 404.
pub(super) async fn delete_condition(
    State(state): State<AdminState>,
    Path((org, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    check_org(&org)?;
    let store = conditions_store(&state)?;
    let condition = find_condition(store, &org, &id).await?;
    if store
        .delete_condition(&org, condition.id)
        .await
        .map_err(store_error)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found("Notification condition", &id))
    }
}

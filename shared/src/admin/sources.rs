//! Handlers of `/event-hooks/sources…`: the catalogue (spec §3) and custom event registration.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::body::Input;
use super::error::ApiError;
use super::AdminState;
use crate::model::CustomEvent;
use crate::sources::{check_custom_event, Catalogue};
use crate::validate::SchemaViolation;

async fn catalogue(state: &AdminState) -> Result<Catalogue, ApiError> {
    let custom = state.store.list_custom_events().await?;
    Ok(Catalogue::with_custom(&custom))
}

/// `GET /event-hooks/sources`
pub(super) async fn list_all(State(state): State<AdminState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "data": catalogue(&state).await? })))
}

/// `GET /event-hooks/sources/{source}`
pub(crate) async fn list_source(
    State(state): State<AdminState>,
    Path(source): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let catalogue = catalogue(&state).await?;
    let events = catalogue.source(&source).ok_or(ApiError::NotFound)?;
    Ok(Json(json!({ "data": events })))
}

/// `GET /event-hooks/sources/{source}/{event}`
pub(crate) async fn get_event(
    State(state): State<AdminState>,
    Path((source, event)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let catalogue = catalogue(&state).await?;
    let spec = catalogue.event(&source, &event).ok_or(ApiError::NotFound)?;
    Ok(Json(json!({ "data": spec })))
}

/// `PUT /event-hooks/sources/{source}/{event}`: registers or replaces a custom event.
pub(super) async fn put_event(
    State(state): State<AdminState>,
    Path((source, event)): Path<(String, String)>,
    input: Input,
) -> Result<Response, ApiError> {
    if Catalogue::is_builtin_source(&source) {
        return Err(ApiError::MethodNotAllowed);
    }
    let custom = custom_event(source, event, input)?;
    let created = state.store.put_custom_event(&custom).await?;
    state.snapshot.invalidate();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = json!({
        "data": {
            "fields": custom.fields,
            "unique": custom.unique,
            "description": custom.description,
        }
    });
    Ok((status, Json(strip_nulls(body))).into_response())
}

/// `DELETE /event-hooks/sources/{source}/{event}`: 204 whether or not it existed.
pub(crate) async fn delete_event(
    State(state): State<AdminState>,
    Path((source, event)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    if Catalogue::is_builtin_source(&source) {
        return Err(ApiError::MethodNotAllowed);
    }
    state.store.delete_custom_event(&source, &event).await?;
    state.snapshot.invalidate();
    Ok(StatusCode::NO_CONTENT)
}

/// Reads `{fields?, unique?, description?}`, from JSON or a form.
fn custom_event(source: String, event: String, input: Input) -> Result<CustomEvent, ApiError> {
    let mut problems: Vec<(String, String)> = Vec::new();
    let mut fields = input.fields;
    let list =
        |fields: &mut Map<String, Value>, key: &str, problems: &mut Vec<(String, String)>| {
            match fields.remove(key) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if input.from_form && s.is_empty() => None,
                // A form sends a lone value for a one-element list.
                Some(Value::String(s)) if input.from_form => Some(vec![s]),
                Some(Value::Array(items)) => {
                    let strings: Option<Vec<String>> = items
                        .into_iter()
                        .map(|item| item.as_str().map(str::to_string))
                        .collect();
                    if strings.is_none() {
                        problems.push((key.to_string(), "expected an array of strings".into()));
                    }
                    strings
                }
                Some(_) => {
                    problems.push((key.to_string(), "expected an array".into()));
                    None
                }
            }
        };
    let field_names = list(&mut fields, "fields", &mut problems).unwrap_or_default();
    let unique = list(&mut fields, "unique", &mut problems);
    let description = match fields.remove("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            problems.push(("description".into(), "expected a string".into()));
            None
        }
    };
    for key in fields.keys() {
        problems.push((key.clone(), "unknown field".into()));
    }
    let custom = CustomEvent {
        source,
        event,
        fields: field_names,
        unique,
        description,
    };
    problems.extend(
        check_custom_event(&custom)
            .into_iter()
            .map(|(key, message)| (key.to_string(), message)),
    );
    match SchemaViolation::from_fields(problems) {
        Some(violation) => Err(violation.into()),
        None => Ok(custom),
    }
}

fn strip_nulls(mut value: Value) -> Value {
    if let Some(data) = value.get_mut("data").and_then(Value::as_object_mut) {
        data.retain(|_, v| !v.is_null());
    }
    value
}

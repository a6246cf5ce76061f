//! `POST /events` (beyond Kong, spec §4): emit an event over HTTP. The event is checked against
//! the catalogue and answered 202 only once it is on the events queue.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::body::Input;
use super::error::ApiError;
use super::AdminState;
use crate::events::{check_registered, event_from_value};
use crate::queue::Outgoing;

pub async fn emit(State(state): State<AdminState>, input: Input) -> Result<Response, ApiError> {
    let event = event_from_value(Value::Object(input.fields)).map_err(ApiError::BadRequest)?;
    let snapshot = state.snapshot.get().await?;
    check_registered(&snapshot.catalogue, &event).map_err(ApiError::BadRequest)?;
    let body = serde_json::to_string(&event).map_err(ApiError::internal)?;
    state
        .events
        .send(Outgoing::now(body))
        .await
        .map_err(ApiError::internal)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": event.id }))).into_response())
}

//! `GET /event-hooks/{id}/deliveries` and `POST /event-hooks/{id}/deliveries/{delivery}/retry`
//! (beyond Kong, spec §8): what happened to each delivery of a hook, and sending one again.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::ApiError;
use super::hooks::parse_id;
use super::query::Query;
use super::AdminState;
use crate::deliveries::DeliveryPageToken;
use crate::dispatch::Delivery;
use crate::queue::Outgoing;

/// Default page size of the delivery listing.
const DEFAULT_PAGE_SIZE: usize = 20;

/// `GET /event-hooks/{id}/deliveries?size=&offset=`: newest first.
pub async fn list(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let hook_id = parse_id(&id)?;
    let query = Query::parse(query);
    let size = query.size(DEFAULT_PAGE_SIZE)?;
    let after = query.offset(DeliveryPageToken::decode)?;
    state.store.get(hook_id).await?.ok_or(ApiError::NotFound)?;
    let page = state.delivery_log.list(hook_id, size, after).await?;
    let mut body = json!({ "data": page.items, "next": Value::Null });
    if let Some(token) = page.next {
        let offset = token.encode();
        body["offset"] = Value::String(offset.clone());
        body["next"] = Value::String(format!(
            "/event-hooks/{hook_id}/deliveries?offset={offset}&size={size}"
        ));
    }
    Ok(Json(body))
}

/// `POST /event-hooks/{id}/deliveries/{delivery}/retry`: queues the delivery again, with the same
/// delivery id and the next attempt number; no snooze/on_change applies. 202.
pub async fn retry(
    State(state): State<AdminState>,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let hook_id = parse_id(&id)?;
    let delivery_id = Uuid::parse_str(&delivery).map_err(|_| ApiError::NotFound)?;
    state.store.get(hook_id).await?.ok_or(ApiError::NotFound)?;
    let record = state
        .delivery_log
        .get(hook_id, delivery_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let attempt = record.attempts.last().map_or(1, |a| a.number + 1);
    let retry = Delivery {
        id: record.id,
        hook_id,
        attempt,
        created_at: record.created_at,
        not_before: 0,
        event: record.event,
        hook: None,
        step: Default::default(),
    };
    let body = serde_json::to_string(&retry).map_err(ApiError::internal)?;
    state
        .retries
        .send(Outgoing::now(body))
        .await
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": retry.id, "attempt": attempt })),
    )
        .into_response())
}

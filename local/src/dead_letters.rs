//! The dead letters of the local server (spec §11, the console's Dead letters page): list them
//! with their reasons, inspect their bodies, and redrive one or all back to the queue they came
//! from. Local only: in the deployed stack dead letters are in SQS, redriven with SQS's own
//! redrive. The routes sit behind the same admin token as the admin API.
//!
//! `GET /dead-letters?size=&offset=` → `{"data":[…],"total":n,"next":…,"offset":…}`, newest
//! first, paged as the admin API's lists; `POST /dead-letters/{id}/redrive` and
//! `POST /dead-letters/redrive` → `{"redriven":n}`. Bodies are shown with a hook's secrets
//! redacted, answers are `Cache-Control: no-store`, as the admin API's.

use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use event_hooks::admin::{ApiError, DeadLetterCount};
use event_hooks::model::redact_hook_value;
use event_hooks::queue::sqlite::{PeekPosition, SqliteQueue};
use event_hooks::queue::{QueueError, REASON_ATTRIBUTE};
use serde_json::{json, Value};

/// Default and largest `size` of the listing (a page of both queues, merged newest first).
const DEFAULT_SIZE: usize = 100;
const MAX_SIZE: usize = 1000;

/// Each dead-letter queue with the queue its messages came from.
#[derive(Clone)]
pub struct DeadLetters {
    queues: Arc<Vec<(SqliteQueue, String)>>,
}

impl DeadLetters {
    /// `queues`: (dead-letter queue, the name of the queue it serves).
    pub fn new(queues: Vec<(SqliteQueue, String)>) -> DeadLetters {
        DeadLetters {
            queues: Arc::new(queues),
        }
    }

    pub fn routes(&self) -> Router {
        Router::new()
            .route("/dead-letters", get(list))
            .route("/dead-letters/redrive", post(redrive_all))
            .route("/dead-letters/{id}/redrive", post(redrive_one))
            .with_state(self.clone())
            .layer(axum::middleware::map_response(event_hooks::admin::no_store))
    }
}

#[async_trait]
impl DeadLetterCount for DeadLetters {
    async fn count(&self) -> Result<u64, QueueError> {
        let mut total = 0;
        for (queue, _) in self.queues.iter() {
            total += queue.peek(0).await?.1;
        }
        Ok(total)
    }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    size: Option<String>,
    /// The cursor of the page to show: the `offset` of the page before.
    offset: Option<String>,
}

async fn list(
    State(dead): State<DeadLetters>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let size = match query.size.as_deref() {
        None => DEFAULT_SIZE,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_SIZE).contains(&n) => n,
            Ok(_) => {
                return Err(ApiError::InvalidSize(
                    "size must be an integer between 1 and 1000",
                ))
            }
            Err(_) => return Err(ApiError::InvalidSize("size must be a number")),
        },
    };
    let before = match query.offset.as_deref() {
        None | Some("") => None,
        Some(offset) => {
            Some(
                PeekPosition::decode(offset).map_err(|err| ApiError::InvalidOffset {
                    offset: offset.to_owned(),
                    reason: err.reason(),
                })?,
            )
        }
    };
    // The newest `size + 1` of each queue, merged: the page, and whether another follows.
    let mut newest = Vec::new();
    let mut total = 0;
    for (queue, source) in dead.queues.iter() {
        let (messages, count) = queue
            .peek_newest(before, size + 1)
            .await
            .map_err(ApiError::internal)?;
        total += count;
        newest.extend(messages.into_iter().map(|message| (message, source)));
    }
    newest.sort_by_key(|(message, _)| std::cmp::Reverse(message.position()));
    let more = newest.len() > size;
    newest.truncate(size);
    let offset = newest
        .last()
        .filter(|_| more)
        .map(|(message, _)| message.position().encode());
    let mut data = Vec::new();
    for (message, source) in newest {
        let mut body = serde_json::from_str::<Value>(&message.body)
            .unwrap_or(Value::String(message.body.clone()));
        // A change ping carries its whole hook, secrets included, to sign with; the queued
        // message keeps them for a redrive, the listing shows them redacted.
        if let Some(hook) = body.get_mut("hook") {
            redact_hook_value(hook);
        }
        data.push(json!({
            "id": message.id,
            "queue": source,
            "reason": message.attributes.get(REASON_ATTRIBUTE),
            "sent_at": message.sent_at,
            "dead_lettered_at": message.moved_at,
            "receive_count": message.receive_count,
            "body": body,
        }));
    }
    let mut page = json!({ "data": data, "total": total, "next": Value::Null });
    if let Some(offset) = offset {
        page["next"] = Value::String(format!("/dead-letters?offset={offset}&size={size}"));
        page["offset"] = Value::String(offset);
    }
    Ok(Json(page))
}

async fn redrive(dead: &DeadLetters, id: Option<String>) -> Result<u64, ApiError> {
    let mut moved = 0;
    for (queue, source) in dead.queues.iter() {
        moved += queue
            .move_to(id.clone(), source)
            .await
            .map_err(ApiError::internal)?;
    }
    Ok(moved)
}

async fn redrive_all(State(dead): State<DeadLetters>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "redriven": redrive(&dead, None).await? })))
}

async fn redrive_one(
    State(dead): State<DeadLetters>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    match redrive(&dead, Some(id)).await? {
        0 => Err(ApiError::NotFound),
        moved => Ok(Json(json!({ "redriven": moved }))),
    }
}

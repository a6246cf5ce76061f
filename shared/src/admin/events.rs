//! `POST /events` (beyond Kong, spec §4): emit an event over HTTP. The event is checked against
//! the catalogue and answered 202 only once it is on the events queue.
//!
//! With an `Idempotency-Key` header (spec §8), the same key within [`KEY_TTL`] answers the first
//! event's id and queues nothing new. The key is claimed before the event is queued and completed
//! after, so the id answered for a key always names a queued event:
//! - same key, same body, event queued: 202 with the first id;
//! - same key, different body: 422 (the body's digest is stored with the key);
//! - same key while its first request is still queuing the event: 409, retry later;
//! - the enqueue fails: the claim is released, so a retry with the key queues the event.
//!
//! What remains: if the process dies between the claim and the enqueue, or cannot release a
//! failed claim, the key answers 409 until its [`CLAIM_LEASE`] lapses, then can be claimed again;
//! if it dies after the enqueue but before completing the key, a retry after the lease queues a
//! second event (at-least-once, as everywhere else).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::body::Input;
use super::error::ApiError;
use super::AdminState;
use crate::apigee::webhook;
use crate::events::{check_registered, event_from_value, Event};
use crate::idempotency::{check_key, Claimed, IdempotencyStore, CLAIM_LEASE, KEY_TTL};
use crate::queue::{Outgoing, RESENT_ATTRIBUTE};
use crate::windows::event_key;

/// The request header that makes `POST /events` idempotent.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub(super) async fn emit(
    State(state): State<AdminState>,
    headers: HeaderMap,
    input: Input,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let mut fields = input.fields;
    integral_timestamp(&mut fields);
    // The digest of the body as sent (before an id and a timestamp are filled in), independent
    // of key order, so a retry of the same request matches whatever its JSON looks like.
    let mut fields = Value::Object(fields);
    let keyed = key.map(|key| (key, event_key(&fields, None)));
    if let (Some((key, digest)), Value::Object(map)) = (&keyed, &mut fields) {
        // Without an id of its own, a keyed event's id follows from its key and body: a retry
        // after its first request died (the claim lapsed) or lost its answer (a failed enqueue
        // that did queue) queues the same event again, which the dispatcher sees as one.
        map.entry("id")
            .or_insert_with(|| Value::from(keyed_event_id(key, digest).to_string()));
    }
    let event = event_from_value(fields).map_err(|err| ApiError::BadRequest(err.to_string()))?;
    check_event(&state, &event).await?;
    let Some((key, body_digest)) = keyed else {
        enqueue(&state, &event).await?;
        return Ok(accepted(event.id));
    };
    let Some(store) = state.idempotency.as_deref() else {
        return Err(ApiError::IdempotencyUnsupported);
    };
    emit_once(&state, store, (key, KEY_TTL), &body_digest, &event).await
}

/// Checks `event` against the catalogue (Kong's 400 messages) and Apigee's usage rules: what
/// `POST /events` and the Kong relay both require before queuing it.
pub(super) async fn check_event(state: &AdminState, event: &Event) -> Result<(), ApiError> {
    let mut snapshot = state.snapshot.get().await?;
    if check_registered(&snapshot.catalogue, event).is_err()
        && state.snapshot.refresh_if_changed().await.unwrap_or(true)
    {
        // Perhaps registered since the catalogue was cached (by another instance): a custom
        // event applies to every request after its registration's 2xx (spec §10).
        snapshot = state.snapshot.get().await?;
    }
    check_registered(&snapshot.catalogue, event)
        .map_err(|err| ApiError::BadRequest(err.to_string()))?;
    webhook::check_usage(event).map_err(|err| ApiError::BadRequest(err.to_string()))
}

/// Namespace of the ids of keyed events (UUID v5 of key and body digest).
const KEYED_EVENT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x3b1f_52c4_9e07_4d2a_8c55_6f0e_91d3_a7b8);

/// The id of an event sent with `key` whose body has `digest`, the same on every retry.
fn keyed_event_id(key: &str, digest: &str) -> uuid::Uuid {
    uuid::Uuid::new_v5(
        &KEYED_EVENT_NAMESPACE,
        format!("{key}\n{digest}").as_bytes(),
    )
}

/// The checked `Idempotency-Key` of the request, if it has one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(bad_key(crate::idempotency::KeyError::Repeated));
    }
    check_key(value.as_bytes()).map(Some).map_err(bad_key)
}

fn bad_key(err: crate::idempotency::KeyError) -> ApiError {
    ApiError::BadRequest(err.to_string())
}

/// Claims `key` for `event`, queues it, completes the key (kept for `ttl`); or answers what the
/// key holds.
pub(super) async fn emit_once(
    state: &AdminState,
    store: &dyn IdempotencyStore,
    (key, ttl): (&str, std::time::Duration),
    body_digest: &str,
    event: &Event,
) -> Result<Response, ApiError> {
    match store.claim(key, event.id, body_digest, CLAIM_LEASE).await? {
        Claimed::Existing(claim) if claim.body_digest != body_digest => {
            Err(ApiError::IdempotencyKeyReused)
        }
        Claimed::Existing(claim) if !claim.completed => Err(ApiError::IdempotencyKeyInProgress),
        Claimed::Existing(claim) => Ok(accepted(claim.event_id)),
        claimed @ (Claimed::New | Claimed::Reclaimed) => {
            // A reclaimed key's first request may have queued this event (same id) already:
            // this copy says so, and the dispatcher numbers its attempts above the other's.
            let resent = claimed == Claimed::Reclaimed;
            if let Err(err) = enqueue_marked(state, event, resent).await {
                // Freed so that a retry queues the event instead of being answered with an id
                // that was never queued; if even that fails, the lease frees it later.
                if let Err(release) = store.release(key, event.id).await {
                    tracing::error!(error = %release, "could not release an idempotency key after a failed enqueue");
                }
                return Err(err);
            }
            if let Err(err) = store.complete(key, event.id, ttl).await {
                // The event is queued: the request succeeded. The key stays pending until its
                // lease lapses (retries get 409 meanwhile, and may queue it again after, under the
                // same id).
                tracing::warn!(error = %err, event_id = %event.id, "could not complete an idempotency key");
            }
            Ok(accepted(event.id))
        }
    }
}

/// Puts `event` on the events queue; returns once the queue holds it durably.
pub(super) async fn enqueue(state: &AdminState, event: &Event) -> Result<(), ApiError> {
    enqueue_marked(state, event, false).await
}

/// [`enqueue`], with [`RESENT_ATTRIBUTE`] when `resent`: the event may be queued already.
async fn enqueue_marked(state: &AdminState, event: &Event, resent: bool) -> Result<(), ApiError> {
    let body = serde_json::to_string(event).map_err(ApiError::internal)?;
    let mut message = Outgoing::now(body);
    if resent {
        message
            .attributes
            .insert(RESENT_ATTRIBUTE.to_owned(), "1".to_owned());
    }
    state
        .events
        .send(message)
        .await
        .map_err(ApiError::internal)?;
    Ok(())
}

pub(super) fn accepted(id: uuid::Uuid) -> Response {
    (StatusCode::ACCEPTED, Json(json!({ "id": id }))).into_response()
}

/// Takes a `timestamp` such as `5.0` as the integer it is: JSON (and JSON Schema, which the
/// OpenAPI document uses) does not tell `5.0` from `5`, and `snooze` is read the same way.
fn integral_timestamp(fields: &mut Map<String, Value>) {
    let Some(Value::Number(number)) = fields.get("timestamp") else {
        return;
    };
    if number.is_i64() {
        return;
    }
    // Strict bounds: `i64::MAX as f64` rounds up to 2^63, out of range, and a number just below
    // `i64::MIN` (which serde reads as a float) rounds to `i64::MIN as f64`; `i64::MIN` itself is
    // an `i64` above.
    let integral = number
        .as_f64()
        .filter(|f| f.fract() == 0.0 && *f > i64::MIN as f64 && *f < i64::MAX as f64);
    if let Some(value) = integral {
        fields.insert("timestamp".into(), Value::from(value as i64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timestamp_of(body: Value) -> Value {
        let Value::Object(mut fields) = body else {
            unreachable!("test bodies are objects")
        };
        integral_timestamp(&mut fields);
        fields.get("timestamp").cloned().unwrap_or(Value::Null)
    }

    #[test]
    fn integral_float_timestamps_are_integers() {
        assert_eq!(timestamp_of(json!({"timestamp": -34684.0})), json!(-34684));
        assert!(timestamp_of(json!({"timestamp": 1.0})).is_i64());
        assert_eq!(timestamp_of(json!({"timestamp": 7})), json!(7));
        // Anything else is left for `event_from_value` to refuse.
        assert_eq!(timestamp_of(json!({"timestamp": 1.5})), json!(1.5));
        assert_eq!(timestamp_of(json!({"timestamp": 1e300})), json!(1e300));
        assert_eq!(timestamp_of(json!({"timestamp": "5"})), json!("5"));
        let below_min: Value =
            serde_json::from_str(r#"{"timestamp": -9223372036854775809}"#).unwrap();
        assert!(timestamp_of(below_min).is_f64(), "not rounded to i64::MIN");
        let event = event_from_value(json!({"source":"crud","event":"consumers","timestamp": 5}));
        assert_eq!(event.map(|e| e.timestamp), Ok(5));
    }
}

#[cfg(test)]
mod idempotent_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::http::HeaderValue;
    use serde_json::Map;

    use super::*;
    use crate::admin::tests::{flaky, state};
    use crate::idempotency::sqlite::SqliteIdempotencyStore;
    use crate::queue::Queue as _;
    use crate::sqlite::Database;

    fn event() -> Map<String, Value> {
        let value = json!({"source":"crud","event":"consumers","data":{"operation":"create"}});
        value.as_object().cloned().unwrap_or_default()
    }

    fn keyed(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(IDEMPOTENCY_KEY, HeaderValue::from_str(key).unwrap());
        headers
    }

    async fn post(state: &AdminState, headers: HeaderMap) -> Result<Response, ApiError> {
        let input = Input {
            fields: event(),
            from_form: false,
        };
        emit(State(state.clone()), headers, input).await
    }

    async fn store() -> Arc<SqliteIdempotencyStore> {
        let db = Database::in_memory().unwrap();
        Arc::new(SqliteIdempotencyStore::new(db).await.unwrap())
    }

    async fn id_of(response: Response) -> Value {
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        serde_json::from_slice::<Value>(&body).unwrap()["id"].clone()
    }

    #[tokio::test]
    async fn a_retry_after_its_first_request_died_queues_the_same_event_id() {
        // given: a request that queued its event and died before completing its key, whose
        // claim then lapsed (here: a store that no longer holds the key)
        let events = flaky(0).await;
        let first = state(events.clone(), flaky(0).await)
            .await
            .with_idempotency(store().await);
        let id = id_of(post(&first, keyed("k")).await.unwrap()).await;
        let retry = state(events.clone(), flaky(0).await)
            .await
            .with_idempotency(store().await);

        // when: the client retries with the same key and body
        let again = id_of(post(&retry, keyed("k")).await.unwrap()).await;

        // then: the event is queued again under the same id (the dispatcher sees one event);
        // another key is another event
        assert_eq!(again, id);
        let other = id_of(post(&retry, keyed("k2")).await.unwrap()).await;
        assert_ne!(other, id);
        let queued = events
            .inner
            .receive(10, Duration::from_secs(30), Duration::ZERO)
            .await
            .unwrap();
        let ids: Vec<Value> = queued
            .iter()
            .map(|m| serde_json::from_str::<Value>(&m.body).unwrap()["id"].clone())
            .collect();
        assert_eq!(ids, [id.clone(), id, other]);
    }

    #[tokio::test]
    async fn a_failed_enqueue_frees_the_key_so_the_retry_queues_the_event() {
        // given: an events queue whose first send fails
        let events = flaky(1).await;
        let state = state(events.clone(), flaky(0).await)
            .await
            .with_idempotency(store().await);

        // when: the request fails, and the client retries with the same key
        let failed = post(&state, keyed("k")).await;
        let retried = post(&state, keyed("k")).await.unwrap();

        // then: the retry is accepted with the id of the one event that is queued
        assert!(matches!(failed, Err(ApiError::Internal(_))));
        assert_eq!(retried.status(), StatusCode::ACCEPTED);
        let id = id_of(retried).await;
        let queued = events
            .inner
            .receive(10, Duration::from_secs(30), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(queued.len(), 1);
        let body: Value = serde_json::from_str(&queued[0].body).unwrap();
        assert_eq!(body["id"], id);
        // and: marked as possibly a second copy (on SQS a failed send may have queued it)
        assert_eq!(queued[0].possible_receives(), 2);
    }

    #[tokio::test]
    async fn a_key_whose_event_is_still_being_queued_is_a_409() {
        // given: the key claimed by a request that has not queued its event yet
        let store = store().await;
        let digest = event_key(&Value::Object(event()), None);
        let claimed = store
            .claim("k", uuid::Uuid::new_v4(), &digest, CLAIM_LEASE)
            .await
            .unwrap();
        assert_eq!(claimed, Claimed::New);
        let events = flaky(0).await;
        let state = state(events.clone(), flaky(0).await)
            .await
            .with_idempotency(store);

        // when / then: the same request is told to retry, and nothing is queued
        let answer = post(&state, keyed("k")).await;
        let Err(err) = answer else {
            panic!("{answer:?}")
        };
        assert!(matches!(err, ApiError::IdempotencyKeyInProgress), "{err:?}");
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert!(response.headers().contains_key("retry-after"));
        let queued = events
            .inner
            .receive(10, Duration::from_secs(30), Duration::ZERO)
            .await
            .unwrap();
        assert!(queued.is_empty());
    }

    #[tokio::test]
    async fn without_a_store_a_key_is_refused_rather_than_ignored() {
        let state = state(flaky(0).await, flaky(0).await).await;
        let answer = post(&state, keyed("k")).await;
        assert!(
            matches!(answer, Err(ApiError::IdempotencyUnsupported)),
            "{answer:?}"
        );
        // No key: as before.
        let answer = post(&state, HeaderMap::new()).await.unwrap();
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
    }

    #[tokio::test]
    async fn a_repeated_header_is_a_400() {
        let mut headers = keyed("a");
        headers.append(IDEMPOTENCY_KEY, HeaderValue::from_static("b"));
        let state = state(flaky(0).await, flaky(0).await)
            .await
            .with_idempotency(store().await);
        let answer = post(&state, headers).await;
        assert!(matches!(answer, Err(ApiError::BadRequest(_))), "{answer:?}");
    }
}

//! `POST /events` (beyond Kong, spec §4): emit an event over HTTP. The event is checked against
//! the catalogue and answered 202 only once it is on the events queue.
//!
//! A JSON array of up to [`MAX_EVENTS_PER_REQUEST`] events is a batch: every event checked, then
//! all queued at once (one SQS request), answered with their ids in order; with a key, the whole
//! batch is what the key stands for.
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

use super::body::EventsBody;
use super::error::ApiError;
use super::AdminState;
use crate::apigee::webhook;
use crate::events::{check_registered, event_from_value, now_millis, Event};
use crate::idempotency::{check_key, Claimed, IdempotencyStore, CLAIM_LEASE, KEY_TTL};
use crate::limits::MAX_EVENTS_PER_REQUEST;
use crate::queue::{Outgoing, RESENT_ATTRIBUTE};
use crate::windows::event_key;

/// The request header that makes `POST /events` idempotent.
pub(crate) const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub(super) async fn emit(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: EventsBody,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let (list, batch) = match body {
        EventsBody::One(input) => (vec![input.fields], false),
        EventsBody::Batch(list) => (list, true),
    };
    if batch && (list.is_empty() || list.len() > MAX_EVENTS_PER_REQUEST) {
        return Err(ApiError::BadRequest(format!(
            "a batch holds 1 to {MAX_EVENTS_PER_REQUEST} events, not {}",
            list.len()
        )));
    }
    let mut list: Vec<Value> = list
        .into_iter()
        .map(|mut fields| {
            integral_timestamp(&mut fields);
            Value::Object(fields)
        })
        .collect();
    // The digest of the body as sent (before ids and timestamps are filled in), independent of
    // key order, so a retry of the same request matches whatever its JSON looks like.
    let keyed = key.map(|key| {
        let digest = match &list[..] {
            [one] if !batch => event_key(one, None),
            _ => event_key(&Value::Array(list.clone()), None),
        };
        (key, digest)
    });
    if let Some((key, digest)) = &keyed {
        // Without an id of its own, a keyed event's id follows from its key and body (and its
        // place in a batch): a retry after its first request died (the claim lapsed) or lost its
        // answer (a failed enqueue that did queue) queues the same events again, which the
        // dispatcher sees as the same.
        for (index, value) in list.iter_mut().enumerate() {
            if let Value::Object(map) = value {
                let seed = if batch {
                    format!("{digest}\n{index}")
                } else {
                    digest.clone()
                };
                map.entry("id")
                    .or_insert_with(|| Value::from(keyed_event_id(key, &seed).to_string()));
            }
        }
    }
    // One stamp for the events without a timestamp of their own (their deliveries' ids carry it).
    let at = now_millis();
    let stamped: Vec<bool> = list
        .iter_mut()
        .map(|value| {
            let Value::Object(map) = value else {
                return false;
            };
            let missing = map.get("timestamp").is_none_or(Value::is_null);
            if missing {
                map.insert("timestamp".into(), Value::from(at));
            }
            missing
        })
        .collect();
    let events = checked_events(&state, list, batch).await?;
    let request = Emitted {
        events,
        batch,
        stamped,
        at,
    };
    let Some((key, body_digest)) = keyed else {
        enqueue_marked(&state, &request.events, false).await?;
        return Ok(request.answer());
    };
    let Some(store) = state.idempotency.as_deref() else {
        return Err(ApiError::IdempotencyUnsupported);
    };
    emit_once(&state, store, (key, KEY_TTL), &body_digest, request).await
}

/// What one request queues: its events, answered as a batch (ids in `data`) or as one event,
/// and which of them the service stamped (they came without a `timestamp`), with what.
pub(super) struct Emitted {
    pub(super) events: Vec<Event>,
    pub(super) batch: bool,
    pub(super) stamped: Vec<bool>,
    pub(super) at: i64,
}

impl Emitted {
    /// Stamps the events this request stamped with `at` instead: an earlier request with the
    /// same key stamped its copies so, and their deliveries' ids carry that time.
    fn restamp(&mut self, at: i64) {
        for (event, stamped) in self.events.iter_mut().zip(&self.stamped) {
            if *stamped {
                event.timestamp = at;
            }
        }
        self.at = at;
    }

    /// 202 with the event's id, or a batch's ids in order.
    fn answer(&self) -> Response {
        match &self.events[..] {
            [one] if !self.batch => accepted(one.id),
            events => {
                let ids: Vec<Value> = events.iter().map(|e| json!({ "id": e.id })).collect();
                (StatusCode::ACCEPTED, Json(json!({ "data": ids }))).into_response()
            }
        }
    }
}

/// The events of a request, each checked as [`check_event`] does; in a batch, a refused event's
/// 400 names it (counting from 0), and two events with one id are refused (they would be
/// delivered as copies of one another).
async fn checked_events(
    state: &AdminState,
    list: Vec<Value>,
    batch: bool,
) -> Result<Vec<Event>, ApiError> {
    let in_event = |index: usize| {
        move |err: ApiError| match err {
            ApiError::BadRequest(message) if batch => {
                ApiError::BadRequest(format!("event {index}: {message}"))
            }
            other => other,
        }
    };
    let mut events: Vec<Event> = Vec::with_capacity(list.len());
    for (index, value) in list.into_iter().enumerate() {
        let event = event_from_value(value)
            .map_err(|err| in_event(index)(ApiError::BadRequest(err.to_string())))?;
        check_event(state, &event).await.map_err(in_event(index))?;
        if let Some(first) = events.iter().position(|e| e.id == event.id) {
            return Err(in_event(index)(ApiError::BadRequest(format!(
                "id '{}' is event {first}'s too",
                event.id
            ))));
        }
        events.push(event);
    }
    Ok(events)
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

/// Claims `key` for the request's events, queues them, completes the key (kept
/// for `ttl`); or answers what the key holds. The key's record names the first event; the
/// others' ids follow from the body.
pub(super) async fn emit_once(
    state: &AdminState,
    store: &dyn IdempotencyStore,
    (key, ttl): (&str, std::time::Duration),
    body_digest: &str,
    mut request: Emitted,
) -> Result<Response, ApiError> {
    let first = request
        .events
        .first()
        .map(|event| event.id)
        .ok_or_else(|| ApiError::internal("no event to queue"))?;
    let resent = match store
        .claim(key, first, body_digest, request.at, CLAIM_LEASE)
        .await?
    {
        Claimed::Existing(claim) if claim.body_digest != body_digest => {
            return Err(ApiError::IdempotencyKeyReused)
        }
        Claimed::Existing(claim) if !claim.completed => {
            return Err(ApiError::IdempotencyKeyInProgress)
        }
        // The same body gives the same ids: given in it, or following from key and body.
        Claimed::Existing(_) if request.batch => return Ok(request.answer()),
        Claimed::Existing(claim) => return Ok(accepted(claim.event_id)),
        Claimed::New => false,
        // The earlier request may have queued these events (same ids) already: stamped as it
        // stamped them, they are the same deliveries, and this copy says it may be one, so the
        // dispatcher numbers its attempts above the other's.
        Claimed::Reclaimed(earlier) => {
            if let Some(at) = earlier.at {
                request.restamp(at);
            }
            true
        }
    };
    if let Err(err) = enqueue_marked(state, &request.events, resent).await {
        // Freed so that a retry queues the events instead of being answered with ids that were
        // never queued; if even that fails, the lease frees it later.
        if let Err(release) = store.release(key, first).await {
            tracing::error!(error = %release, "could not release an idempotency key after a failed enqueue");
        }
        return Err(err);
    }
    if let Err(err) = store.complete(key, first, ttl).await {
        // The events are queued: the request succeeded. The key stays pending until its lease
        // lapses (retries get 409 meanwhile, and may queue them again after, under the same
        // ids and stamp).
        tracing::warn!(error = %err, event_id = %first, "could not complete an idempotency key");
    }
    Ok(request.answer())
}

/// Puts `event` on the events queue; returns once the queue holds it durably.
pub(super) async fn enqueue(state: &AdminState, event: &Event) -> Result<(), ApiError> {
    enqueue_marked(state, std::slice::from_ref(event), false).await
}

/// [`enqueue`] for one event or several (one batch request), with [`RESENT_ATTRIBUTE`] when
/// `resent`: they may be queued already.
async fn enqueue_marked(
    state: &AdminState,
    events: &[Event],
    resent: bool,
) -> Result<(), ApiError> {
    let mut messages = Vec::with_capacity(events.len());
    for event in events {
        let body = serde_json::to_string(event).map_err(ApiError::internal)?;
        let mut message = Outgoing::now(body);
        if resent {
            message
                .attributes
                .insert(RESENT_ATTRIBUTE.to_owned(), "1".to_owned());
        }
        messages.push(message);
    }
    let sent = match <[Outgoing; 1]>::try_from(messages) {
        Ok([one]) => state.events.send(one).await.map(drop),
        Err(messages) => state.events.send_batch(messages).await.map(drop),
    };
    sent.map_err(ApiError::internal)
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
    use crate::admin::body::Input;
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
        emit(State(state.clone()), headers, EventsBody::One(input)).await
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
        assert_eq!(queued_ids(&events).await, [id.clone(), id, other]);
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
            .claim("k", uuid::Uuid::new_v4(), &digest, 0, CLAIM_LEASE)
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

    async fn post_batch(
        state: &AdminState,
        headers: HeaderMap,
        list: Vec<Value>,
    ) -> Result<Response, ApiError> {
        let list = list
            .into_iter()
            .map(|v| v.as_object().cloned().unwrap())
            .collect();
        emit(State(state.clone()), headers, EventsBody::Batch(list)).await
    }

    /// The ids a batch's 202 answered, in order.
    fn batch_ids(body: &[u8]) -> Vec<Value> {
        let body: Value = serde_json::from_slice(body).unwrap();
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].clone())
            .collect()
    }

    async fn queued_ids(events: &crate::admin::tests::Flaky) -> Vec<Value> {
        let queued = events
            .inner
            .receive(10, Duration::from_secs(30), Duration::ZERO)
            .await
            .unwrap();
        queued
            .iter()
            .map(|m| serde_json::from_str::<Value>(&m.body).unwrap()["id"].clone())
            .collect()
    }

    #[tokio::test]
    async fn a_batch_is_queued_whole_and_answered_with_its_ids_in_order() {
        // given: three events, the second with an id of its own
        let events = flaky(0).await;
        let state = state(events.clone(), flaky(0).await).await;
        let own = "5b1d6a70-3c4e-4f8a-9b2c-1d0e7f6a5b4c";
        let mut second = Value::Object(event());
        second["id"] = json!(own);
        let list = vec![Value::Object(event()), second, Value::Object(event())];

        // when
        let answer = post_batch(&state, HeaderMap::new(), list).await.unwrap();

        // then: 202 with the three ids, the given one kept, and the queue holds them in order
        assert_eq!(answer.status(), StatusCode::ACCEPTED);
        let body = axum::body::to_bytes(answer.into_body(), 1 << 16)
            .await
            .unwrap();
        let ids = batch_ids(&body);
        assert_eq!(ids.len(), 3, "{ids:?}");
        assert_eq!(ids[1], json!(own));
        assert_ne!(ids[0], ids[2]);
        assert_eq!(queued_ids(&events).await, ids);
    }

    #[tokio::test]
    async fn a_batch_with_a_refused_event_queues_none_and_names_it() {
        let events = flaky(0).await;
        let state = state(events.clone(), flaky(0).await).await;
        let unregistered = json!({"source": "nowhere", "event": "x", "data": {}});
        let same_id = json!({"id": "5b1d6a70-3c4e-4f8a-9b2c-1d0e7f6a5b4c", "source": "crud",
                             "event": "consumers", "data": {"operation": "create"}});
        let cases = [
            (
                vec![Value::Object(event()), unregistered],
                "event 1: source 'nowhere' is not registered",
            ),
            (
                vec![same_id.clone(), Value::Object(event()), same_id],
                "event 2: id '5b1d6a70-3c4e-4f8a-9b2c-1d0e7f6a5b4c' is event 0's too",
            ),
            (vec![], "a batch holds 1 to 10 events, not 0"),
            (
                vec![Value::Object(event()); 11],
                "a batch holds 1 to 10 events, not 11",
            ),
        ];
        for (list, expected) in cases {
            let answer = post_batch(&state, HeaderMap::new(), list).await;
            let Err(ApiError::BadRequest(message)) = answer else {
                panic!("{answer:?}")
            };
            assert_eq!(message, expected);
        }
        assert!(queued_ids(&events).await.is_empty());
    }

    #[tokio::test]
    async fn a_keyed_batch_is_queued_once_and_answered_with_the_same_ids() {
        // given: a batch of two events without ids, sent with a key
        let events = flaky(0).await;
        let state = state(events.clone(), flaky(0).await)
            .await
            .with_idempotency(store().await);
        let batch = || vec![Value::Object(event()), Value::Object(event())];
        let first = post_batch(&state, keyed("k"), batch()).await.unwrap();
        let first = axum::body::to_bytes(first.into_body(), 1 << 16)
            .await
            .unwrap();

        // when: it is sent again with the same key, then a different batch with that key
        let again = post_batch(&state, keyed("k"), batch()).await.unwrap();
        let again = axum::body::to_bytes(again.into_body(), 1 << 16)
            .await
            .unwrap();
        let other = post_batch(&state, keyed("k"), vec![Value::Object(event())]).await;

        // then: the same two ids, distinct, queued once; the other batch is refused
        assert_eq!(again, first);
        let ids = batch_ids(&first);
        assert_eq!(ids.len(), 2);
        assert_ne!(ids[0], ids[1]);
        assert_eq!(queued_ids(&events).await, ids);
        assert!(
            matches!(other, Err(ApiError::IdempotencyKeyReused)),
            "{other:?}"
        );
    }

    #[tokio::test]
    async fn a_keyed_batch_sent_again_after_its_first_request_died_keeps_its_ids() {
        // given: a keyed batch whose first request queued it and died before completing its key
        // (here: another store, which no longer holds the key)
        let events = flaky(0).await;
        let batch = || vec![Value::Object(event()), Value::Object(event())];
        let first = state(events.clone(), flaky(0).await)
            .await
            .with_idempotency(store().await);
        post_batch(&first, keyed("k"), batch()).await.unwrap();
        let retry = state(events.clone(), flaky(0).await)
            .await
            .with_idempotency(store().await);

        // when
        post_batch(&retry, keyed("k"), batch()).await.unwrap();

        // then: the same two events are queued again, under the same ids
        let ids = queued_ids(&events).await;
        assert_eq!(ids.len(), 4);
        assert_eq!(ids[..2], ids[2..]);
        assert_ne!(ids[0], ids[1]);
    }

    #[tokio::test]
    async fn an_event_queued_again_after_its_first_request_died_keeps_its_stamp() {
        // given: a key claimed by a request that stamped its event (no timestamp of its own)
        // long ago, then died before completing it; its lease has lapsed
        let clock = crate::clock::ManualClock::starting_now();
        let db = Database::in_memory().unwrap();
        let store = Arc::new(
            SqliteIdempotencyStore::new(db)
                .await
                .unwrap()
                .with_clock(clock.clock()),
        );
        let digest = event_key(&Value::Object(event()), None);
        let id = keyed_event_id("k", &digest);
        let stamp = 1_700_000_000_123;
        let first = store.claim("k", id, &digest, stamp, CLAIM_LEASE).await;
        assert_eq!(first.unwrap(), Claimed::New);
        clock.advance(CLAIM_LEASE + Duration::from_secs(1));
        let events = flaky(0).await;
        let state = state(events.clone(), flaky(0).await)
            .await
            .with_idempotency(store);

        // when: the client retries
        let answer = post(&state, keyed("k")).await.unwrap();
        assert_eq!(answer.status(), StatusCode::ACCEPTED);

        // then: the event is queued as the first request queued it, same id and same stamp (so
        // its deliveries keep their ids, which carry it), marked as possibly a second copy
        let queued = events
            .inner
            .receive(10, Duration::from_secs(30), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(queued.len(), 1);
        let body: Value = serde_json::from_str(&queued[0].body).unwrap();
        assert_eq!(body["id"], json!(id.to_string()));
        assert_eq!(body["timestamp"], json!(stamp));
        assert_eq!(queued[0].possible_receives(), 2);
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

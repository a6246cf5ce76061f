//! `GET /event-hooks/{id}/deliveries`, `POST /event-hooks/{id}/deliveries/{delivery}/retry` and
//! `POST /event-hooks/{id}/deliveries/replay` (beyond Kong, spec §8): what happened to each
//! delivery of a hook, sending one again, and sending again those of a time window.
//!
//! Retry and replay share one path ([`resend`]): the delivery goes back on the deliveries queue
//! with its own id (receivers de-duplicate on it) and the next attempt number, and its new
//! attempts land on the same log record. A delivery whose event the log keeps only as a capped
//! copy (`event_truncated`, an event over [`crate::limits::MAX_LOGGED_EVENT_BYTES`]) is never
//! sent from it: retry answers 409, replay lists it under `skipped`.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use uuid::Uuid;

use super::body::Input;
use super::error::ApiError;
use super::hooks::parse_id;
use super::query::Query;
use super::AdminState;
use crate::delivery_log::{
    DeliveryKey, DeliveryPageToken, DeliveryRecord, DeliveryStatus, DeliveryWindow,
};
use crate::dispatch::Delivery;
use crate::events::now_millis;
use crate::limits::MAX_DELIVERY_PAGE_BYTES;
use crate::queue::Outgoing;
use crate::validate::SchemaViolation;

/// Default page size of the delivery listing.
const DEFAULT_PAGE_SIZE: usize = 20;

/// A page of the listing as answered: serialised straight from the records, without a copy.
#[derive(serde::Serialize)]
pub(crate) struct ListPage {
    data: Vec<DeliveryRecord>,
    next: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<String>,
    truncated_by_size: bool,
}

/// `GET /event-hooks/{id}/deliveries?size=&offset=`: newest first, at most `size` records and
/// [`MAX_DELIVERY_PAGE_BYTES`] of them.
pub(super) async fn list(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<ListPage>, ApiError> {
    let hook_id = parse_id(&id)?;
    let query = Query::parse(query);
    let size = query.size(DEFAULT_PAGE_SIZE)?;
    let after = query.offset(DeliveryPageToken::decode)?;
    state.store.get(hook_id).await?.ok_or(ApiError::NotFound)?;
    let page = state
        .delivery_log
        .list(hook_id, size, MAX_DELIVERY_PAGE_BYTES, after)
        .await?;
    let offset = page.next.map(|token| token.encode());
    Ok(Json(ListPage {
        data: page.items,
        next: offset
            .as_ref()
            .map(|offset| format!("/event-hooks/{hook_id}/deliveries?offset={offset}&size={size}")),
        offset,
        truncated_by_size: page.truncated_by_size,
    }))
}

/// `POST /event-hooks/{id}/deliveries/{delivery}/retry`: queues the delivery again, with the same
/// delivery id and the next attempt number; no snooze/on_change applies. 202.
pub(super) async fn retry(
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
    if record.event_truncated {
        return Err(ApiError::EventNotKept {
            delivery: record.id,
            size: record.event_size.unwrap_or_default(),
        });
    }
    let retry = resend(record);
    let body = serde_json::to_string(&retry).map_err(ApiError::internal)?;
    state
        .retries
        .send(Outgoing::now(body))
        .await
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": retry.id, "attempt": retry.attempt })),
    )
        .into_response())
}

/// The delivery message that sends `record` again: the same delivery id and time
/// (so its attempts join the same log record), the next attempt number, due now, with no
/// snooze/on_change (those decided already, when the delivery was first made).
fn resend(record: DeliveryRecord) -> Delivery {
    Delivery {
        id: record.id,
        hook_id: record.hook_id,
        attempt: record
            .attempts
            .last()
            .map_or(1, |a| a.number.saturating_add(1)),
        created_at: record.created_at,
        not_before: 0,
        event: record.event,
        hook: None,
        step: Default::default(),
        rate_slot: false,
        // Nothing reserved this number: a retry of the delivery may be on its way meanwhile.
        claim: true,
        received: None,
    }
}

/// Most deliveries one replay call queues (and its `size` at most); the rest is left to the next
/// call, named by the answer's `offset`.
pub(crate) const MAX_REPLAY: usize = 1000;

/// Deliveries read from the log and queued at a time: a replay holds at most this many events in
/// memory, whatever its size.
const REPLAY_CHUNK: usize = 50;

/// The default window of a replay, in seconds: the day before `until`.
const DEFAULT_WINDOW_SECONDS: i64 = 86_400;

/// The latest time a replay window may name, in Unix seconds: the log's sort keys hold delivery
/// times up to 9999999999999 ms.
const MAX_SECONDS: i64 = 9_999_999_999;

/// Which deliveries a replay resends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplayStatus {
    /// Those given up on (not retryable, or out of retries), and those never sent because the
    /// hook was paused or disabled.
    Failed,
    /// Those settled either way, delivered or failed. Pending deliveries are left out by both:
    /// their next retry is already queued, and a replay would send them twice at once.
    All,
}

impl ReplayStatus {
    fn as_str(self) -> &'static str {
        match self {
            ReplayStatus::Failed => "failed",
            ReplayStatus::All => "all",
        }
    }

    fn statuses(self) -> Vec<DeliveryStatus> {
        match self {
            ReplayStatus::Failed => vec![DeliveryStatus::Failed, DeliveryStatus::NotSent],
            ReplayStatus::All => vec![
                DeliveryStatus::Delivered,
                DeliveryStatus::Failed,
                DeliveryStatus::NotSent,
            ],
        }
    }
}

/// The parameters of a replay, checked, with their defaults filled in.
#[derive(Debug, Clone, PartialEq)]
struct ReplayParams {
    /// Unix seconds, inclusive.
    since: i64,
    /// Unix seconds, inclusive (the whole second).
    until: i64,
    status: ReplayStatus,
    size: usize,
    offset: Option<DeliveryPageToken>,
}

impl ReplayParams {
    /// Reads the body of a replay; `now` (Unix seconds) is `until`'s default. Every bad field is
    /// reported, in Kong's schema-violation shape.
    fn parse(input: Input, now: i64) -> Result<ReplayParams, SchemaViolation> {
        let mut problems = Vec::new();
        let mut fields = input.fields;
        let mut take = |key: &str| match fields.remove(key) {
            None | Some(Value::Null) => None,
            // A form sends an empty value for "not given".
            Some(Value::String(text)) if input.from_form && text.is_empty() => None,
            Some(value) => Some(value),
        };
        let (since, until, status, size, offset) = (
            take("since"),
            take("until"),
            take("status"),
            take("size"),
            take("offset"),
        );
        for key in fields.keys() {
            problems.push((key.clone(), "unknown field".to_owned()));
        }
        let mut bounded = |key: &str, value: Option<Value>, min: i64, max: i64| {
            let value = value?;
            let number = match &value {
                Value::Number(n) => n.as_i64(),
                // Form values are all text: digits are the integer they spell.
                Value::String(text) if input.from_form => text.parse::<i64>().ok(),
                _ => None,
            };
            match number {
                Some(n) if (min..=max).contains(&n) => Some(n),
                Some(_) => {
                    problems.push((
                        key.to_owned(),
                        format!("value should be between {min} and {max}"),
                    ));
                    None
                }
                None => {
                    problems.push((key.to_owned(), "expected an integer".to_owned()));
                    None
                }
            }
        };
        let since_given = bounded("since", since, 0, MAX_SECONDS);
        let until_given = bounded("until", until, 0, MAX_SECONDS);
        let max_size = i64::try_from(MAX_REPLAY).unwrap_or(i64::MAX);
        let size = bounded("size", size, 1, max_size);
        let status = match status.as_ref().map(|v| v.as_str()) {
            None => Some(ReplayStatus::Failed),
            Some(Some("failed")) => Some(ReplayStatus::Failed),
            Some(Some("all")) => Some(ReplayStatus::All),
            Some(_) => {
                problems.push((
                    "status".to_owned(),
                    "expected one of: failed, all".to_owned(),
                ));
                None
            }
        };
        let offset = match offset {
            None => None,
            Some(Value::String(token)) => match DeliveryPageToken::decode(&token) {
                Ok(token) => Some(token),
                Err(reason) => {
                    problems.push(("offset".to_owned(), format!("invalid offset: {reason}")));
                    None
                }
            },
            Some(_) => {
                problems.push(("offset".to_owned(), "expected a string".to_owned()));
                None
            }
        };
        let until = until_given.unwrap_or(now);
        let since =
            since_given.unwrap_or_else(|| until.saturating_sub(DEFAULT_WINDOW_SECONDS).max(0));
        if since > until {
            problems.push((
                "since".to_owned(),
                format!("should not be after until ({until})"),
            ));
        }
        if let Some(violation) = SchemaViolation::from_fields(problems) {
            return Err(violation);
        }
        Ok(ReplayParams {
            since,
            until,
            status: status.unwrap_or(ReplayStatus::Failed),
            size: size.map_or(MAX_REPLAY, |n| usize::try_from(n).unwrap_or(MAX_REPLAY)),
            offset,
        })
    }

    /// The log window: delivery times from the start of `since` to the end of `until`.
    fn window(&self) -> DeliveryWindow {
        DeliveryWindow {
            from: self.since.saturating_mul(1000),
            to: self.until.saturating_mul(1000).saturating_add(999),
            statuses: self.status.statuses(),
        }
    }

    /// The body that continues this replay from `offset`.
    fn to_body(&self, offset: &str) -> Value {
        json!({
            "since": self.since,
            "until": self.until,
            "status": self.status.as_str(),
            "size": self.size,
            "offset": offset,
        })
    }
}

/// `POST /event-hooks/{id}/deliveries/replay` (`since`, `until`, `status`, `size`, `offset`, all
/// optional, in a JSON or form body): sends again, oldest first, the hook's logged deliveries first
/// attempted in the window whose status matches, each as [`retry`] would, at most `size` (default
/// and cap [`MAX_REPLAY`]) per call. 202 with how many were queued, their ids, the window as
/// resolved, and `offset`/`next` to continue when more match. Idempotent under overlap: a
/// delivery is claimed in the log (set pending) before it is queued, so overlapping calls split
/// the matches, each queued once (`already_queued` names those another call took), and a call
/// made again later finds them pending, not failed. A disabled hook answers 409.
pub(super) async fn replay(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    input: Input,
) -> Result<Response, ApiError> {
    let hook_id = parse_id(&id)?;
    let params = ReplayParams::parse(input, now_millis().div_euclid(1000))?;
    let hook = state.store.get(hook_id).await?.ok_or(ApiError::NotFound)?;
    // Its deliveries would only be dead-lettered, one per call.
    if !hook.value.enabled {
        return Err(ApiError::HookDisabled(hook_id));
    }
    let window = params.window();
    let mut queued: Vec<Uuid> = Vec::new();
    // Deliveries whose event the log keeps only as a capped copy: not sent, named in the answer.
    let mut skipped: Vec<Uuid> = Vec::new();
    let mut after = params.offset;
    // Deliveries that matched but were claimed by an overlapping replay (or attempted meanwhile):
    // queued once, by that one.
    let mut claimed_elsewhere: Vec<Uuid> = Vec::new();
    // Chunk by chunk, so that a replay holds at most REPLAY_CHUNK events in memory. Each delivery
    // is claimed in the log before it is queued ([`DeliveryLog::claim_resend`]): overlapping
    // replays each queue only what they claimed, so every delivery goes out once, under its
    // last logged attempt + 1.
    let more = loop {
        let wanted = (params.size - queued.len() - skipped.len() - claimed_elsewhere.len())
            .min(REPLAY_CHUNK);
        let page = state
            .delivery_log
            .list_window(hook_id, &window, wanted, after)
            .await?;
        let mut messages = Vec::with_capacity(page.items.len());
        let mut ids = Vec::with_capacity(page.items.len());
        for record in page.items {
            if record.event_truncated {
                skipped.push(record.id);
                continue;
            }
            let key = DeliveryKey {
                hook_id,
                delivery_id: record.id,
                created_at: record.created_at,
            };
            if !state
                .delivery_log
                .claim_resend(key, record.updated_at)
                .await?
            {
                claimed_elsewhere.push(record.id);
                continue;
            }
            let delivery = resend(record);
            ids.push(delivery.id);
            messages.push(Outgoing::now(
                serde_json::to_string(&delivery).map_err(ApiError::internal)?,
            ));
        }
        if !messages.is_empty() {
            state
                .retries
                .send_batch(messages)
                .await
                .map_err(ApiError::internal)?;
        }
        queued.extend(ids);
        after = page.next;
        match after {
            None => break None,
            Some(token)
                if queued.len() + skipped.len() + claimed_elsewhere.len() >= params.size =>
            {
                break Some(token)
            }
            Some(_) => {}
        }
    };
    let offset = more.map(|token| token.encode());
    let body = json!({
        "queued": queued.len(),
        "deliveries": queued,
        "skipped": skipped,
        "already_queued": claimed_elsewhere,
        "since": params.since,
        "until": params.until,
        "status": params.status.as_str(),
        "offset": offset,
        "next": offset.as_deref().map(|offset| params.to_body(offset)),
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn parse(body: Value, from_form: bool) -> Result<ReplayParams, Value> {
        let Value::Object(fields) = body else {
            panic!("an object")
        };
        ReplayParams::parse(Input { fields, from_form }, NOW)
            .map_err(|v| json!({"message": v.message(), "fields": v.fields()}))
    }

    #[test]
    fn defaults_are_the_failed_deliveries_of_the_last_day() {
        let params = parse(Value::Object(Map::new()), false).unwrap();
        assert_eq!(
            params,
            ReplayParams {
                since: NOW - 86_400,
                until: NOW,
                status: ReplayStatus::Failed,
                size: MAX_REPLAY,
                offset: None,
            }
        );
        assert_eq!(params.window().from, (NOW - 86_400) * 1000);
        assert_eq!(params.window().to, NOW * 1000 + 999);
        // A day before a given `until`; null is the same as absent.
        let params = parse(json!({"until": 5_000_000, "since": null}), false).unwrap();
        assert_eq!(
            (params.since, params.until),
            (5_000_000 - 86_400, 5_000_000)
        );
    }

    #[test]
    fn form_values_are_coerced_and_empty_ones_are_absent() {
        let params = parse(
            json!({"since": "10", "until": "20", "status": "all", "size": "3", "offset": ""}),
            true,
        )
        .unwrap();
        assert_eq!((params.since, params.until, params.size), (10, 20, 3));
        assert_eq!(params.status, ReplayStatus::All);
        assert_eq!(params.offset, None);
    }

    #[test]
    fn bad_parameters_are_schema_violations_naming_each_field() {
        let error = parse(
            json!({"since": "10", "until": -1, "status": "pending", "size": 1001,
                   "offset": "zzz", "colour": 1}),
            false,
        )
        .unwrap_err();
        assert_eq!(
            error["fields"],
            json!({
                "since": "expected an integer",
                "until": "value should be between 0 and 9999999999",
                "status": "expected one of: failed, all",
                "size": "value should be between 1 and 1000",
                "offset": "invalid offset: bad base64 encoding",
                "colour": "unknown field",
            })
        );
        assert!(error["message"]
            .as_str()
            .unwrap()
            .starts_with("6 schema violations ("));
        let error = parse(json!({"since": 20, "until": 10}), false).unwrap_err();
        assert_eq!(
            error["fields"],
            json!({"since": "should not be after until (10)"})
        );
        let error = parse(json!({"since": NOW + 1}), false).unwrap_err();
        assert_eq!(
            error["fields"]["since"],
            format!("should not be after until ({NOW})")
        );
    }

    #[test]
    fn a_resend_keeps_the_id_and_takes_the_next_attempt() {
        let record = DeliveryRecord {
            id: Uuid::new_v4(),
            hook_id: Uuid::new_v4(),
            event: crate::events::Event {
                id: Uuid::new_v4(),
                source: "crud".into(),
                event: "consumers".into(),
                data: json!({}),
                timestamp: 1,
            },
            event_truncated: false,
            event_size: None,
            event_sha256: None,
            status: DeliveryStatus::Failed,
            created_at: 42,
            updated_at: 43,
            attempts: Vec::new(),
        };
        let never_tried = resend(record.clone());
        assert_eq!(never_tried.attempt, 1);
        let tried = resend(DeliveryRecord {
            attempts: vec![crate::delivery_log::Attempt {
                number: 3,
                at: 0,
                status: Some(400),
                latency_ms: 1,
                error: None,
                response_body: None,
            }],
            ..record.clone()
        });
        assert_eq!(
            (tried.id, tried.hook_id, tried.attempt, tried.created_at),
            (record.id, record.hook_id, 4, 42)
        );
    }
}

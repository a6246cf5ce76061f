//! `POST /events` (beyond Kong, spec §4): emit an event over HTTP. The event is checked against
//! the catalogue and answered 202 only once it is on the events queue.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::body::Input;
use super::error::ApiError;
use super::AdminState;
use crate::events::{check_registered, event_from_value};
use crate::queue::Outgoing;

pub async fn emit(State(state): State<AdminState>, input: Input) -> Result<Response, ApiError> {
    let mut fields = input.fields;
    integral_timestamp(&mut fields);
    let event = event_from_value(Value::Object(fields)).map_err(ApiError::BadRequest)?;
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

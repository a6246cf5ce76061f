//! `POST /events/kong`, the Kong relay (spec §13): takes exactly what Kong's `webhook` event-hook
//! handler posts (the event's data with `event` and `source` added, signed with
//! `X-Kong-Signature`) and queues it as the event it is, so that everything a Kong emits gets this
//! service's durable, retried, logged and fanned-out deliveries.
//!
//! The route is outside the admin token check (Kong cannot send our token): the signature is its
//! authentication. Secrets are checked before the body is even parsed, so an unsigned caller
//! learns nothing about the catalogue. Kong's ping (`kong:event_hooks` / `ping`, sent when a Kong
//! hook is created or changed) is answered 200 and never dispatched. Anything else goes the way
//! of `POST /events`: the same catalogue check with Kong's messages, the same enqueue, and a 2xx
//! only once the event is on the events queue (fsync'd locally, SQS deployed): Kong tries once.
//! The second copy of a `crud` change that Kong posts for hooks without an event is recognised
//! and not queued again (see [`kong_duplicate_key`]).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::auth::{TokenCheck, Verdict};
use super::body::{json_object, MAX_BODY_BYTES};
use super::error::ApiError;
use super::events::{accepted, check_event, emit_once, enqueue, Emitted};
use super::AdminState;
use crate::events::{event_from_value, Event};
use crate::outbound::signing::{self, SIGNATURE_HEADER};
use crate::windows::event_key;

/// How long the first post of a `crud` change makes a second one a duplicate: Kong sends its two
/// at once; a longer window would swallow a genuine repeat, such as the same `/test` data.
const DUPLICATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// The source and event of Kong's ping.
const PING: (&str, &str) = ("kong:event_hooks", "ping");

/// Who may post to the relay.
#[derive(Debug, Clone, Default)]
pub struct RelaySettings {
    /// The relay secrets, one a line (blank lines ignored), read through a cache so that a
    /// rotation needs no restart: list the new secret beside the old one, switch Kong's hooks,
    /// then drop the old one. `None`: no secret, so only unsigned events, if allowed.
    pub secrets: Option<Arc<TokenCheck>>,
    /// Whether an event without `X-Kong-Signature` is taken. A signature that is present is
    /// always checked, and refused when no secret can check it.
    pub allow_unsigned: bool,
}

pub(super) async fn relay(
    State(state): State<AdminState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    check_content(&parts.headers)?;
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    authenticate(&state.settings.relay, &parts.headers, &bytes).await?;
    let fields = json_object(&bytes)?;
    if is_ping(&fields) {
        return Ok((StatusCode::OK, Json(json!({ "message": "pong" }))).into_response());
    }
    let event = relayed_event(fields)?;
    check_event(&state, &event).await?;
    match (state.idempotency.as_deref(), kong_duplicate_key(&event)) {
        (Some(store), Some(key)) => {
            let request = Emitted {
                at: event.timestamp,
                events: vec![event],
                batch: false,
                stamped: vec![true],
            };
            emit_once(&state, store, (&key, DUPLICATE_WINDOW), &key, request).await
        }
        _ => {
            enqueue(&state, &event).await?;
            Ok(accepted(event.id))
        }
    }
}

/// The key under which a `crud` event is queued once: Kong fires a hook with no `event` twice
/// for every change (on `E` and on `E:op`, with the same data; spec §4), and its webhook posts
/// both. Both give this key (the entity without the operation, and the data, whose entity
/// carries its timestamps), so the second, within [`DUPLICATE_WINDOW`], is answered with the
/// first's id and queues nothing.
fn kong_duplicate_key(event: &Event) -> Option<String> {
    if event.source != "crud" {
        return None;
    }
    let entity = event.event.split(':').next().unwrap_or_default();
    let digest = event_key(
        &json!({ "source": event.source, "event": entity, "data": event.data }),
        None,
    );
    Some(format!("kong-relay:{digest}"))
}

/// Refuses a body declared over the limit before reading it, and anything but JSON (Kong's
/// `webhook` handler always sends `application/json`).
fn check_content(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES) {
        return Err(ApiError::PayloadTooLarge);
    }
    let json = headers.get(CONTENT_TYPE).is_none_or(|value| {
        value.to_str().is_ok_and(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
    });
    if json {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Checks `X-Kong-Signature` of `body` against the relay secrets (any of them, for rotation).
async fn authenticate(
    relay: &RelaySettings,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), ApiError> {
    let mut values = headers.get_all(SIGNATURE_HEADER).iter();
    let (signature, repeated) = (values.next(), values.next().is_some());
    let Some(signature) = signature else {
        return match (&relay.secrets, relay.allow_unsigned) {
            (_, true) => Ok(()),
            (Some(_), false) => Err(ApiError::RelaySignatureMissing),
            (None, false) => Err(ApiError::RelayNotConfigured),
        };
    };
    let Some(check) = &relay.secrets else {
        // A signature nothing can check is not taken as if it were absent: a Kong hook with a
        // secret expects it to be checked.
        return Err(if relay.allow_unsigned {
            ApiError::RelaySignatureWrong
        } else {
            ApiError::RelayNotConfigured
        });
    };
    let Ok(signature) = signature.to_str() else {
        return Err(ApiError::RelaySignatureWrong);
    };
    if repeated {
        return Err(ApiError::RelaySignatureWrong);
    }
    let verdict = check
        .check_with(|secrets| {
            secret_lines(secrets).any(|secret| signing::verify(secret.as_bytes(), body, signature))
        })
        .await
        .map_err(|err| ApiError::CredentialsUnavailable(err.0))?;
    match verdict {
        Verdict::Accepted => Ok(()),
        Verdict::Refused => Err(ApiError::RelaySignatureWrong),
    }
}

/// The secrets of a stored value: one a line, surrounding blanks ignored.
pub fn secret_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|line| !line.is_empty())
}

fn is_ping(fields: &Map<String, Value>) -> bool {
    fields.get("source").and_then(Value::as_str) == Some(PING.0)
        && fields.get("event").and_then(Value::as_str) == Some(PING.1)
}

/// The event Kong's body carries: `source` and `event` taken out, the rest as its data (keys
/// such as `id` or `timestamp` stay data: they are the entity's, not the event's).
fn relayed_event(mut fields: Map<String, Value>) -> Result<Event, ApiError> {
    let mut event = Map::new();
    for key in ["source", "event"] {
        if let Some(value) = fields.remove(key) {
            event.insert(key.into(), value);
        }
    }
    event.insert("data".into(), Value::Object(fields));
    event_from_value(Value::Object(event)).map_err(|err| ApiError::BadRequest(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn kongs_body_becomes_the_event_it_carries() {
        let event = relayed_event(fields(json!({
            "source": "crud", "event": "consumers", "operation": "create",
            "entity": {"id": "e1", "username": "jane"}, "id": "not the event's",
        })))
        .unwrap();
        assert_eq!(
            (event.source.as_str(), event.event.as_str()),
            ("crud", "consumers")
        );
        assert_eq!(
            event.data,
            json!({"operation": "create", "entity": {"id": "e1", "username": "jane"}, "id": "not the event's"})
        );
        assert!(!event.id.is_nil());
    }

    #[test]
    fn a_body_without_source_or_event_is_a_400_naming_it() {
        let missing = relayed_event(fields(json!({"event": "health"}))).unwrap_err();
        assert_eq!(missing.to_string(), "'source' is required");
        let wrong = relayed_event(fields(json!({"source": "balancer", "event": 3}))).unwrap_err();
        assert_eq!(wrong.to_string(), "'event' must be a non-empty string");
    }

    #[test]
    fn only_kongs_ping_is_a_ping() {
        assert!(is_ping(&fields(
            json!({"source": "kong:event_hooks", "event": "ping"})
        )));
        assert!(!is_ping(&fields(
            json!({"source": "kong:event_hooks", "event": "pong"})
        )));
        assert!(!is_ping(&fields(
            json!({"source": "crud", "event": "ping"})
        )));
    }

    #[test]
    fn kongs_two_posts_of_one_crud_change_share_a_key() {
        let post = |event: &str, op: &str| {
            relayed_event(fields(
                json!({"source": "crud", "event": event, "operation": op,
                                         "entity": {"id": "e1", "updated_at": 5}}),
            ))
            .unwrap()
        };
        let key = kong_duplicate_key(&post("consumers", "create")).unwrap();
        assert_eq!(
            kong_duplicate_key(&post("consumers:create", "create")),
            Some(key.clone())
        );
        assert_ne!(
            kong_duplicate_key(&post("consumers", "update")),
            Some(key.clone())
        );
        assert_ne!(kong_duplicate_key(&post("routes", "create")), Some(key));
        let health =
            relayed_event(fields(json!({"source": "balancer", "event": "health"}))).unwrap();
        assert_eq!(
            kong_duplicate_key(&health),
            None,
            "only crud is fired twice"
        );
    }

    #[test]
    fn secrets_are_lines() {
        let lines: Vec<&str> = secret_lines(" new \n\n old\r\n").collect();
        assert_eq!(lines, ["new", "old"]);
    }

    #[tokio::test]
    async fn signatures_are_checked_against_every_secret() {
        let body = br#"{"source":"crud","event":"consumers"}"#;
        let relay = RelaySettings {
            secrets: Some(Arc::new(TokenCheck::fixed("new\nold"))),
            allow_unsigned: false,
        };
        let signed = |secret: &[u8]| {
            let mut headers = HeaderMap::new();
            let value = signing::signature(secret, body);
            headers.insert(SIGNATURE_HEADER, value.parse().unwrap());
            headers
        };
        for secret in [b"new".as_slice(), b"old"] {
            assert!(authenticate(&relay, &signed(secret), body).await.is_ok());
        }
        let wrong = authenticate(&relay, &signed(b"other"), body).await;
        assert!(
            matches!(wrong, Err(ApiError::RelaySignatureWrong)),
            "{wrong:?}"
        );
        let tampered = authenticate(&relay, &signed(b"new"), b"{}").await;
        assert!(matches!(tampered, Err(ApiError::RelaySignatureWrong)));
        let unsigned = authenticate(&relay, &HeaderMap::new(), body).await;
        assert!(matches!(unsigned, Err(ApiError::RelaySignatureMissing)));
    }

    #[tokio::test]
    async fn without_secrets_only_an_explicit_flag_takes_unsigned_events() {
        let closed = RelaySettings::default();
        let open = RelaySettings {
            secrets: None,
            allow_unsigned: true,
        };
        let unsigned = HeaderMap::new();
        let mut signed = HeaderMap::new();
        signed.insert(
            SIGNATURE_HEADER,
            signing::signature(b"s", b"{}").parse().unwrap(),
        );
        assert!(matches!(
            authenticate(&closed, &unsigned, b"{}").await,
            Err(ApiError::RelayNotConfigured)
        ));
        assert!(authenticate(&open, &unsigned, b"{}").await.is_ok());
        // A signature nobody can check is refused, not ignored.
        assert!(matches!(
            authenticate(&open, &signed, b"{}").await,
            Err(ApiError::RelaySignatureWrong)
        ));
    }
}

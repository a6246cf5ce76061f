//! The event envelope that producers put on the events queue (spec §4), and the `crud` /
//! `dao:crud` events that every change to a hook emits (spec §2).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::model::Hook;
use crate::sources::Catalogue;

/// One event: `{"source":…,"event":…,"data":{…}}` plus an id and a timestamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Added by the system when the producer leaves it out.
    #[serde(default = "Uuid::new_v4")]
    pub id: Uuid,
    pub source: String,
    pub event: String,
    #[serde(default = "empty_object")]
    pub data: Value,
    /// Unix milliseconds; added by the system when the producer leaves it out.
    #[serde(default = "now_millis")]
    pub timestamp: i64,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// The current wall-clock time in Unix milliseconds, the one clock of the crate: event
/// timestamps, window expiries and queue visibility are all stored, so they must survive a
/// restart, and whole seconds would make a one-second window anywhere between zero and two
/// seconds long. Saturates instead of wrapping.
pub fn now_millis() -> i64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// The current time in Unix seconds.
pub fn now_seconds() -> i64 {
    now_millis() / 1000
}

/// What happened to an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

/// The entity name under which hooks appear in `crud` events.
pub(crate) const HOOK_ENTITY: &str = "event_hooks";

/// The two events Kong emits for a change to an event hook: `crud`/`event_hooks` and
/// `dao:crud`/`<operation>`, both carrying operation, entity, old_entity and schema. Unlike
/// Kong's, the entities carry their secrets redacted ([`Hook::redacted`]): these events reach
/// any handler, not only the admin.
pub(crate) fn hook_change_events(
    operation: Operation,
    entity: &Hook,
    old: Option<&Hook>,
) -> [Event; 2] {
    let data = json!({
        "operation": operation.as_str(),
        "entity": entity.redacted(),
        "old_entity": old.map(Hook::redacted),
        "schema": HOOK_ENTITY,
    });
    let timestamp = now_millis();
    [
        Event {
            id: Uuid::new_v4(),
            source: "crud".into(),
            event: HOOK_ENTITY.into(),
            data: data.clone(),
            timestamp,
        },
        Event {
            id: Uuid::new_v4(),
            source: "dao:crud".into(),
            event: operation.as_str().into(),
            data,
            timestamp,
        },
    ]
}

/// Why a message body is not an event; the text is what producers are told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    /// The parser's own message, as producers read it.
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("an event must be a JSON object")]
    NotAnObject,
    #[error("'{0}' is required")]
    Missing(&'static str),
    #[error("'{0}' must be a non-empty string")]
    NotANonEmptyString(&'static str),
    #[error("'data' must be a JSON object")]
    DataNotAnObject,
    /// The shape was right but a field is not (e.g. a timestamp that is not an integer).
    #[error("not a valid event: {0}")]
    Malformed(String),
}

/// An event outside the catalogue, in Kong's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unregistered {
    #[error("source '{name}' is not registered")]
    Source { name: String },
    #[error("event '{event}' is not registered for source '{source_name}'")]
    Event { source_name: String, event: String },
}

/// Reads an event from a message body; id and timestamp are added when missing.
pub fn parse_event(body: &str) -> Result<Event, InvalidEvent> {
    event_from_value(json_body(body)?)
}

fn json_body(body: &str) -> Result<Value, InvalidEvent> {
    serde_json::from_str(body).map_err(|err| InvalidEvent::NotJson(err.to_string()))
}

/// Namespace of the ids given to queued events that came without one (UUID v5 of the queue's
/// message id).
const QUEUED_EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x2b8f_51d4_7c3e_4a09_8e6d_93f0_1a57_c4b2);

/// [`parse_event`] for a queue message: an event without an id gets one derived from the
/// message's id, and one without a timestamp the time the queue took the message (`sent_at`, when
/// known), the same at every receive of that message (random or current ones would give each
/// redelivery new delivery ids, which receivers could not de-duplicate).
pub(crate) fn parse_event_from_message(
    body: &str,
    message_id: &str,
    sent_at: Option<i64>,
) -> Result<Event, InvalidEvent> {
    let mut value = json_body(body)?;
    if let Some(fields) = value.as_object_mut() {
        if fields.get("id").is_none_or(Value::is_null) {
            let id = Uuid::new_v5(&QUEUED_EVENT_NAMESPACE, message_id.as_bytes());
            fields.insert("id".into(), Value::String(id.to_string()));
        }
        if let Some(sent_at) = sent_at {
            if fields.get("timestamp").is_none_or(Value::is_null) {
                fields.insert("timestamp".into(), Value::from(sent_at));
            }
        }
    }
    event_from_value(value)
}

/// Checks the shape of an event: `source` and `event` strings, `data` an object when present.
pub(crate) fn event_from_value(mut value: Value) -> Result<Event, InvalidEvent> {
    let Some(fields) = value.as_object_mut() else {
        return Err(InvalidEvent::NotAnObject);
    };
    for key in ["source", "event"] {
        match fields.get(key) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(_) => return Err(InvalidEvent::NotANonEmptyString(key)),
            None => return Err(InvalidEvent::Missing(key)),
        }
    }
    match fields.get("data") {
        None | Some(Value::Object(_)) => {}
        Some(Value::Null) => {
            fields.remove("data");
        }
        Some(_) => return Err(InvalidEvent::DataNotAnObject),
    }
    if fields.get("id").is_some_and(Value::is_null) {
        fields.remove("id");
    }
    if fields.get("timestamp").is_some_and(Value::is_null) {
        fields.remove("timestamp");
    }
    serde_json::from_value(value).map_err(|err| InvalidEvent::Malformed(err.to_string()))
}

/// Kong's messages for events outside the catalogue.
pub(crate) fn check_registered(catalogue: &Catalogue, event: &Event) -> Result<(), Unregistered> {
    let Some(events) = catalogue.source(&event.source) else {
        return Err(Unregistered::Source {
            name: event.source.clone(),
        });
    };
    if !events.contains_key(&event.event) {
        return Err(Unregistered::Event {
            source_name: event.source.clone(),
            event: event.event.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_queued_event_without_an_id_or_time_gets_the_same_ones_at_every_receive() {
        let body = r#"{"source":"crud","event":"consumers"}"#;
        let first = parse_event_from_message(body, "message-1", Some(1_700_000_000_000)).unwrap();
        let again = parse_event_from_message(body, "message-1", Some(1_700_000_000_000)).unwrap();
        let other = parse_event_from_message(body, "message-2", Some(1_700_000_000_000)).unwrap();
        assert_eq!((first.id, first.timestamp), (again.id, again.timestamp));
        assert_eq!(first.timestamp, 1_700_000_000_000);
        assert_ne!(first.id, other.id);
        let own =
            r#"{"source":"crud","event":"consumers","id":"6f1c3c1e-8d3b-4a43-9f0e-6f1b1f8a0b11"}"#;
        assert_eq!(
            parse_event_from_message(own, "message-1", None)
                .unwrap()
                .id
                .to_string(),
            "6f1c3c1e-8d3b-4a43-9f0e-6f1b1f8a0b11"
        );
    }

    use super::*;

    #[test]
    fn fills_in_id_and_timestamp() {
        let event: Event = serde_json::from_str(
            r#"{"source":"balancer","event":"health","data":{"ip":"1.2.3.4"}}"#,
        )
        .unwrap();
        assert!(!event.id.is_nil());
        assert!(event.timestamp > 1_700_000_000_000);
        assert_eq!(event.data["ip"], "1.2.3.4");
    }
    #[test]
    fn events_are_checked_with_kongs_messages() {
        let catalogue = Catalogue::builtin();
        let event = parse_event(r#"{"source":"nope","event":"x"}"#).unwrap();
        assert_eq!(
            check_registered(&catalogue, &event)
                .unwrap_err()
                .to_string(),
            "source 'nope' is not registered"
        );
        let event = parse_event(r#"{"source":"balancer","event":"x"}"#).unwrap();
        assert_eq!(
            check_registered(&catalogue, &event)
                .unwrap_err()
                .to_string(),
            "event 'x' is not registered for source 'balancer'"
        );
        let event = parse_event(r#"{"source":"crud","event":"consumers:create"}"#).unwrap();
        assert!(check_registered(&catalogue, &event).is_ok());
    }

    #[test]
    fn hook_change_events_carry_the_hook_redacted_before_and_after() {
        use crate::model::{Handler, PreviousSecret, SignatureScheme, WebhookConfig, REDACTED};
        let hook = |secret: &str, previous: Option<&str>| Hook {
            id: Uuid::nil(),
            created_at: 1,
            updated_at: 2,
            source: "crud".into(),
            event: None,
            handler: Handler::Webhook(WebhookConfig {
                url: "https://example.com/h".into(),
                headers: Default::default(),
                secret: Some(secret.into()),
                ssl_verify: false,
                signature: SignatureScheme::Standard,
                previous_secret: previous.map(|p| PreviousSecret {
                    secret: p.into(),
                    expires_at: i64::MAX,
                }),
            }),
            snooze: None,
            on_change: None,
            enabled: true,
            name: None,
            tags: vec![],
            delivery: Default::default(),
            disabled_reason: None,
            failing_since: None,
            max_rate: None,
        };
        let old = hook("whsec_old", None);
        let rotated = hook("whsec_new", Some("whsec_old"));
        for event in hook_change_events(Operation::Update, &rotated, Some(&old)) {
            let text = event.data.to_string();
            assert!(!text.contains("whsec_"), "{text}");
            assert_eq!(event.data["entity"]["config"]["secret"], REDACTED);
            assert_eq!(event.data["old_entity"]["config"]["secret"], REDACTED);
        }
    }

    #[test]
    fn malformed_events_are_explained() {
        let message = |body: &str| parse_event(body).unwrap_err().to_string();
        assert!(message("{").starts_with("the body is not JSON: "));
        assert_eq!(message("[]"), "an event must be a JSON object");
        assert_eq!(message(r#"{"event":"x"}"#), "'source' is required");
        assert_eq!(
            message(r#"{"source":"","event":"x"}"#),
            "'source' must be a non-empty string"
        );
        assert_eq!(
            message(r#"{"source":"a","event":"b","data":[1]}"#),
            "'data' must be a JSON object"
        );
        assert!(message(r#"{"source":"a","event":"b","timestamp":"x"}"#)
            .starts_with("not a valid event: "));
        let event = parse_event(r#"{"source":"a","event":"b","id":null,"data":null}"#).unwrap();
        assert!(!event.id.is_nil());
        assert!(event.data.as_object().unwrap().is_empty());
    }
}

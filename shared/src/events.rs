//! The event envelope that producers put on the events queue (spec §4), and the `crud` /
//! `dao:crud` events that every change to a hook emits (spec §2).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::model::Hook;

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

/// The current time in Unix milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The current time in Unix seconds.
pub fn now_seconds() -> i64 {
    now_millis() / 1000
}

/// What happened to an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

/// The entity name under which hooks appear in `crud` events.
pub const HOOK_ENTITY: &str = "event_hooks";

/// The two events Kong emits for a change to an event hook: `crud`/`event_hooks` and
/// `dao:crud`/`<operation>`, both carrying operation, entity, old_entity and schema.
pub fn hook_change_events(operation: Operation, entity: &Hook, old: Option<&Hook>) -> [Event; 2] {
    let data = json!({
        "operation": operation.as_str(),
        "entity": entity,
        "old_entity": old,
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

#[cfg(test)]
mod tests {
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
}

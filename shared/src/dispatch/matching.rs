//! Which hooks an event reaches, and under which event name (spec §4).
//!
//! A hook matches when its source equals the event's and its event is unset or equal. `crud`
//! events name the entity as their event and the operation in their data, or `entity:operation`
//! as their event: a hook on `E` or on no event gets `E`, a hook on `E:op` gets `E:op`, and each
//! hook gets the event once (Kong fires a hook without event twice).

use crate::events::Event;
use crate::model::Hook;

/// An event as hooks see it: for `crud`, the entity and operation split apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventName<'a> {
    pub source: &'a str,
    /// The event (for `crud`: the entity).
    pub name: &'a str,
    /// The `crud` operation, from `entity:operation` or from `data.operation`.
    pub operation: Option<&'a str>,
}

impl<'a> EventName<'a> {
    pub fn of(event: &'a Event) -> EventName<'a> {
        if event.source == "crud" {
            if let Some((entity, operation)) = event.event.split_once(':') {
                return EventName {
                    source: &event.source,
                    name: entity,
                    operation: Some(operation),
                };
            }
            return EventName {
                source: &event.source,
                name: &event.event,
                operation: event.data.get("operation").and_then(|op| op.as_str()),
            };
        }
        EventName {
            source: &event.source,
            name: &event.event,
            operation: None,
        }
    }

    /// The event name a matching `hook` receives, or `None` when the hook does not match.
    pub fn delivered_as(&self, hook: &Hook) -> Option<String> {
        if hook.source != self.source {
            return None;
        }
        let Some(wanted) = hook.event.as_deref() else {
            return Some(self.name.to_string());
        };
        if wanted == self.name {
            return Some(self.name.to_string());
        }
        if self.source == "crud" {
            if let (Some((entity, op)), Some(operation)) = (wanted.split_once(':'), self.operation)
            {
                if entity == self.name && op == operation {
                    return Some(wanted.to_string());
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    fn hook(source: &str, event: Option<&str>) -> Hook {
        Hook {
            event: event.map(str::to_string),
            ..Hook::log_on(source)
        }
    }

    fn event(source: &str, name: &str, data: serde_json::Value) -> Event {
        Event {
            id: Uuid::new_v4(),
            source: source.into(),
            event: name.into(),
            data,
            timestamp: 0,
        }
    }

    #[test]
    fn crud_entity_event_reaches_entity_operation_and_catch_all_hooks_once() {
        let e = event("crud", "consumers", json!({"operation":"create"}));
        let name = EventName::of(&e);
        assert_eq!(
            name.delivered_as(&hook("crud", None)).as_deref(),
            Some("consumers")
        );
        assert_eq!(
            name.delivered_as(&hook("crud", Some("consumers")))
                .as_deref(),
            Some("consumers")
        );
        assert_eq!(
            name.delivered_as(&hook("crud", Some("consumers:create")))
                .as_deref(),
            Some("consumers:create")
        );
        assert_eq!(
            name.delivered_as(&hook("crud", Some("consumers:delete"))),
            None
        );
        assert_eq!(name.delivered_as(&hook("crud", Some("routes"))), None);
        assert_eq!(name.delivered_as(&hook("dao:crud", None)), None);
    }

    #[test]
    fn crud_entity_operation_event_means_the_same() {
        let e = event("crud", "consumers:update", json!({}));
        let name = EventName::of(&e);
        assert_eq!(
            name.delivered_as(&hook("crud", None)).as_deref(),
            Some("consumers")
        );
        assert_eq!(
            name.delivered_as(&hook("crud", Some("consumers")))
                .as_deref(),
            Some("consumers")
        );
        assert_eq!(
            name.delivered_as(&hook("crud", Some("consumers:update")))
                .as_deref(),
            Some("consumers:update")
        );
        assert_eq!(
            name.delivered_as(&hook("crud", Some("consumers:create"))),
            None
        );
    }

    #[test]
    fn other_sources_match_on_equal_or_absent_event() {
        let e = event("balancer", "health", json!({}));
        let name = EventName::of(&e);
        assert_eq!(
            name.delivered_as(&hook("balancer", None)).as_deref(),
            Some("health")
        );
        assert_eq!(
            name.delivered_as(&hook("balancer", Some("health")))
                .as_deref(),
            Some("health")
        );
        assert_eq!(name.delivered_as(&hook("balancer", Some("other"))), None);
        // `:` means nothing special outside crud
        let e = event("dao:crud", "create", json!({"operation":"create"}));
        assert_eq!(
            EventName::of(&e).delivered_as(&hook("dao:crud", Some("create:create"))),
            None
        );
    }
}

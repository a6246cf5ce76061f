//! Turns untrusted input into a checked [`Hook`] (spec §1), or into Kong's schema-violation errors.
//!
//! The input is a JSON object, from a JSON body or a decoded form (see [`crate::form`]). Every
//! problem is collected, not just the first, so one answer tells the user everything to fix.
//! Lambda functions are compiled (and their chunk run) in the Lua sandbox here, at create/update
//! time, so a broken function is a 400 and never a delivery failure later.
//!
//! The rules live beside what they check: `problems` collects what is wrong, `fields` reads
//! one field of any kind, `hook_fields` and `delivery` check the hook's own fields and
//! `handlers` each handler's `config`; the numbers they enforce are in [`crate::limits`].

mod delivery;
mod fields;
mod handlers;
mod hook_fields;
mod problems;
mod url_syntax;

use serde_json::Value;
use uuid::Uuid;

use crate::lua::LuaPolicy;
use crate::model::{DeliveryPolicy, HandlerKind, Hook};
use delivery::{optional_max_in_flight, optional_retry, optional_timeouts};
use fields::{optional_bool, optional_string, present, required_string};
use handlers::config;
use hook_fields::{optional_name, optional_rate, optional_snooze, protection_state, tags};
use problems::Errors;

pub use fields::URL_CREDENTIALS;
pub use problems::{FieldError, PathSegment, SchemaViolation};

/// What validation needs besides the input.
#[derive(Debug, Clone)]
pub struct Context {
    /// The id the hook gets (from the path, the body, or freshly generated).
    pub id: Uuid,
    /// Unix seconds; kept from the stored hook on updates.
    pub created_at: i64,
    /// Unix seconds.
    pub now: i64,
    /// Whether and how user Lua may run.
    pub lua: LuaPolicy,
}

/// The fields a hook may have; any other is reported as an unknown field.
const TOP_LEVEL_FIELDS: &[&str] = &[
    "id",
    "created_at",
    "updated_at",
    "source",
    "event",
    "handler",
    "snooze",
    "on_change",
    "config",
    "enabled",
    "name",
    "tags",
    "disabled_reason",
    "failing_since",
    "max_rate",
    "max_in_flight",
    "retry",
    "timeouts",
    // Shown by `GET` beside the entity (the hook's lane in the local dispatcher), accepted and
    // ignored so that a hook read can be written back as it is.
    "lane",
];

/// Checks `input` as a whole hook and builds it, or reports every problem found.
pub fn hook(input: &Value, ctx: &Context) -> Result<Hook, SchemaViolation> {
    let mut errors = Errors::default();
    let Some(map) = input.as_object() else {
        return Err(SchemaViolation::single(&["@entity"], "expected a record"));
    };
    for key in map.keys() {
        if !TOP_LEVEL_FIELDS.contains(&key.as_str()) {
            errors.add(&[key], "unknown field");
        }
    }
    if let Some(id) = present(map, "id") {
        if id.as_str().and_then(|s| Uuid::parse_str(s).ok()).is_none() {
            errors.add(&["id"], "expected a valid UUID");
        }
    }

    let source = required_string(map, "source", &mut errors);
    let event = optional_string(map, "event", &mut errors);
    let snooze = optional_snooze(map, &mut errors);
    let on_change = optional_bool(map, "on_change", &mut errors);
    let enabled = optional_bool(map, "enabled", &mut errors).unwrap_or(true);
    let name = optional_name(map, &mut errors);
    let tags = tags(map, &mut errors);
    let max_rate = optional_rate(map, &mut errors);
    let delivery = DeliveryPolicy {
        retry: optional_retry(map, &mut errors),
        timeouts: optional_timeouts(map, &mut errors),
        max_in_flight: optional_max_in_flight(map, &mut errors),
    };
    let (disabled_reason, failing_since) = protection_state(map, enabled, &mut errors);

    let handler = match present(map, "handler") {
        None => {
            errors.add(&["handler"], "required field missing");
            None
        }
        Some(Value::String(name)) => match HandlerKind::parse(name) {
            Some(kind) => config(kind, map.get("config"), ctx, &mut errors),
            None => {
                errors.add(&["handler"], format!("unknown type: {name}"));
                None
            }
        },
        Some(_) => {
            errors.add(&["handler"], "expected a string");
            None
        }
    };

    if let Some(violation) = errors.into_violation() {
        return Err(violation);
    }
    let (Some(source), Some(handler)) = (source, handler) else {
        unreachable!("a missing required field is always reported as an error")
    };
    Ok(Hook {
        id: ctx.id,
        created_at: ctx.created_at,
        updated_at: ctx.now,
        source,
        event,
        handler,
        snooze,
        on_change,
        enabled,
        name,
        tags,
        disabled_reason,
        failing_since,
        max_rate,
        delivery,
    })
}

/// What the tests of every part share: a context, and inputs that must be refused.
#[cfg(test)]
mod test_support {
    use serde_json::Value;
    use uuid::Uuid;

    use super::{hook, Context, SchemaViolation};
    use crate::lua::{Limits, LuaPolicy};

    pub(super) fn ctx() -> Context {
        Context {
            id: Uuid::nil(),
            created_at: 10,
            now: 20,
            lua: LuaPolicy::Sandbox(Limits::default()),
        }
    }

    pub(super) fn violation(input: Value) -> SchemaViolation {
        hook(&input, &ctx()).expect_err("input should be rejected")
    }

    /// `build(n)` at `limit` is accepted; at `limit + 1` it is refused with exactly `fields`.
    pub(super) fn limit_holds(limit: usize, build: impl Fn(usize) -> Value, fields: Value) {
        if let Err(v) = hook(&build(limit), &ctx()) {
            panic!("at the limit ({limit}): {}", v.message());
        }
        let v = violation(build(limit + 1));
        assert_eq!(v.fields(), fields);
        assert_eq!(v.errors().len(), 1, "{}", v.message());
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::violation;
    use serde_json::json;

    #[test]
    fn unknown_handler_and_unknown_fields() {
        let v = violation(json!({"source":"crud","handler":"email"}));
        assert_eq!(v.fields(), json!({"handler":"unknown type: email"}));
        let v = violation(
            json!({"source":"crud","handler":"log","color":"red","config":{"level":"debug"}}),
        );
        assert_eq!(
            v.fields(),
            json!({"color":"unknown field","config":{"level":"unknown field"}})
        );
    }
}

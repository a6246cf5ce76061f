//! How an Apigee Edge webhook is a hook of this system (spec §12).
//!
//! A webhook of organisation `org` named `n` is a `webhook` hook on `monetization`/`usage` with
//! - `name` `apigee~<org>~<n>` (in `n`, bytes other than letters, digits, `.`, `-` and `_` are
//!   written `~XX` in hex, as hook names allow no more), so the store's unique names make webhook
//!   names unique per organisation, atomically, and names in `/event-hooks` stay unique;
//! - tags `apigee-org:<org>` (what the Edge routes list by), `apigee-created-by:<user>` and
//!   `apigee-updated-by:<user>` (the Basic auth user of the last change, when known);
//! - Edge's delivery rules as its own `retry` (5xx only, 3 retries 5 minutes apart) and
//!   `timeouts` (3 s to connect, 3 s to read);
//! - a callback body that is the notification exactly ([`is_edge_webhook`] tells the executor).
//!
//! Editing those fields through `/event-hooks` is possible, and then the hook is what it says:
//! removing the `apigee-org:` tag takes it out of the Edge routes.

use serde_json::{json, Map, Value};

use crate::events::Event;
use crate::model::{Handler, Hook};

pub(crate) const SOURCE: &str = "monetization";
pub(crate) const EVENT: &str = "usage";
pub(crate) const ORG_TAG: &str = "apigee-org:";
pub(crate) const CREATED_BY_TAG: &str = "apigee-created-by:";
pub(crate) const UPDATED_BY_TAG: &str = "apigee-updated-by:";
const NAME_PREFIX: &str = "apigee~";

/// Longest organisation name, in bytes (letters, digits, `.`, `_`, `-`).
pub(crate) const MAX_ORG_BYTES: usize = 48;
/// Longest webhook name, in bytes.
pub(crate) const MAX_WEBHOOK_NAME_BYTES: usize = 64;
/// Longest Basic auth user name recorded as `createdBy`/`updatedBy`, in bytes.
pub(crate) const MAX_USER_BYTES: usize = 100;

/// Edge's callback fields, in Edge's order (the `monetization`/`usage` catalogue entry).
pub(crate) const CALLBACK_FIELDS: [&str; 21] = [
    "orgName",
    "developerEmail",
    "developerFirstName",
    "developerLastName",
    "companyName",
    "applicationName",
    "packageName",
    "packageId",
    "ratePlanId",
    "ratePlanName",
    "ratePlanType",
    "developerRatePlanQuotaTarget",
    "quotaPercentUsed",
    "ratePlanStartDate",
    "ratePlanEndDate",
    "nextBillingCycleStartDate",
    "products",
    "developerCustomAttributes",
    "triggerTime",
    "triggerReason",
    "developerQuotaResetDate",
];

/// Why a `monetization`/`usage` event is refused (see [`check_usage`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum UsageError {
    #[error(
        "'data.orgName' must be an organisation name (1 to {} letters, digits, '.', '_' or '-')",
        MAX_ORG_BYTES
    )]
    InvalidOrg,
    #[error(
        "'data.orgName' is required: a {}/{} event notifies only the webhooks of its organisation",
        SOURCE,
        EVENT
    )]
    MissingOrg,
}

/// What a `monetization`/`usage` event must carry beyond the catalogue's checks: `orgName`, a
/// usable organisation name, as the usage is matched only against that organisation's conditions
/// (rate plan ids of different organisations may be equal). Other events pass. Checked where
/// events come in: `POST /events` answers 400, the dispatcher dead-letters the message.
pub(crate) fn check_usage(event: &Event) -> Result<(), UsageError> {
    if event.source != SOURCE || event.event != EVENT {
        return Ok(());
    }
    match event.data.get("orgName") {
        Some(Value::String(org)) if valid_org(org) => Ok(()),
        Some(_) => Err(UsageError::InvalidOrg),
        None => Err(UsageError::MissingOrg),
    }
}

/// Whether `org` is a usable organisation name.
pub(crate) fn valid_org(org: &str) -> bool {
    !org.is_empty()
        && org.len() <= MAX_ORG_BYTES
        && org
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The `/event-hooks` name of webhook `name` of `org`, or `None` when it would be longer than
/// hook names may be.
pub(crate) fn hook_name(org: &str, name: &str) -> Option<String> {
    let mut out = format!("{NAME_PREFIX}{org}~");
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("~{byte:02X}"));
        }
    }
    (out.len() <= crate::limits::MAX_NAME_BYTES).then_some(out)
}

/// The webhook name in a hook name made by [`hook_name`] for `org`.
fn webhook_name(hook_name: &str, org: &str) -> Option<String> {
    let escaped = hook_name
        .strip_prefix(NAME_PREFIX)?
        .strip_prefix(org)?
        .strip_prefix('~')?;
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut rest = escaped.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'~' && tail.len() >= 2 {
            let hex = std::str::from_utf8(&tail[..2]).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

/// The organisation of an Apigee webhook, or `None` for any other hook.
pub(crate) fn is_edge_webhook(hook: &Hook) -> Option<&str> {
    if hook.source != SOURCE || !matches!(hook.handler, Handler::Webhook(_)) {
        return None;
    }
    hook.tags.iter().find_map(|t| t.strip_prefix(ORG_TAG))
}

fn tag_value<'a>(hook: &'a Hook, prefix: &str) -> Option<&'a str> {
    hook.tags.iter().find_map(|t| t.strip_prefix(prefix))
}

/// The webhook in Edge's shape: `postUrl` out, times in Unix ms.
pub fn shown(hook: &Hook, org: &str) -> Value {
    let url = match &hook.handler {
        Handler::Webhook(config) => config.url.as_str(),
        _ => "",
    };
    let name = hook
        .name
        .as_deref()
        .map(|n| webhook_name(n, org).unwrap_or_else(|| n.to_string()))
        .unwrap_or_default();
    let mut out = json!({
        "id": hook.id,
        "name": name,
        "postUrl": url,
        "enabled": hook.enabled,
        "orgId": org,
        "created": hook.created_at.saturating_mul(1000),
        "updated": hook.updated_at.saturating_mul(1000),
    });
    if let Some(user) = tag_value(hook, CREATED_BY_TAG) {
        out["createdBy"] = json!(user);
    }
    if let Some(user) = tag_value(hook, UPDATED_BY_TAG) {
        out["updatedBy"] = json!(user);
    }
    out
}

/// The `/event-hooks` input of a webhook: Edge's delivery rules, source and event, its tags;
/// `None` when the name is too long once escaped.
pub fn hook_input(
    org: &str,
    name: &str,
    post_url: &str,
    enabled: bool,
    created_by: Option<&str>,
    updated_by: Option<&str>,
) -> Option<Value> {
    let mut tags = vec![format!("{ORG_TAG}{org}")];
    if let Some(user) = created_by {
        tags.push(format!("{CREATED_BY_TAG}{user}"));
    }
    if let Some(user) = updated_by {
        tags.push(format!("{UPDATED_BY_TAG}{user}"));
    }
    Some(json!({
        "source": SOURCE,
        "event": EVENT,
        "handler": "webhook",
        "name": hook_name(org, name)?,
        "enabled": enabled,
        "tags": tags,
        "config": {"url": post_url, "ssl_verify": true},
        "retry": {"delays": [300, 300, 300], "on": "5xx"},
        "timeouts": {"connect_ms": 3000, "read_ms": 3000},
    }))
}

/// The notification for one reached threshold: Edge's callback fields from the usage data, with
/// `triggerTime` (Unix ms) and `triggerReason` naming the threshold.
pub fn notification(
    usage: &Map<String, Value>,
    percent: u32,
    usage_target: &str,
    now_ms: i64,
) -> Value {
    let mut out = Map::new();
    for field in CALLBACK_FIELDS {
        out.insert(
            field.into(),
            usage.get(field).cloned().unwrap_or(Value::Null),
        );
    }
    out.insert("triggerTime".into(), json!(now_ms));
    out.insert(
        "triggerReason".into(),
        json!(format!("UsageTarget {percent}% reached ({usage_target})")),
    );
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_names_round_trip_through_hook_names_and_stay_apart_per_org() {
        for name in ["webhook3", "My hook: ~50%/x", "día", "a~41"] {
            let hook = hook_name("myorg", name).unwrap();
            assert!(hook
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-~".contains(&b)));
            assert_eq!(webhook_name(&hook, "myorg").as_deref(), Some(name));
            assert_eq!(webhook_name(&hook, "myor"), None);
        }
        assert_ne!(hook_name("a", "b~c"), hook_name("a~b", "c"));
        assert_ne!(hook_name("a", "~41"), hook_name("a", "A"));
        assert_eq!(hook_name("o", &"x".repeat(200)), None);
        assert!(!valid_org("a~b") && !valid_org("") && valid_org("my-org.1_x"));
    }

    #[test]
    fn a_usage_event_must_name_its_organisation() {
        let check = |body: &str| check_usage(&crate::events::parse_event(body).unwrap());
        let usage =
            |data: &str| format!(r#"{{"source":"monetization","event":"usage","data":{data}}}"#);
        assert_eq!(
            check(&usage(r#"{"orgName":"orgA","ratePlanId":"p"}"#)),
            Ok(())
        );
        for data in [r#"{"ratePlanId":"p"}"#, "{}"] {
            assert_eq!(check(&usage(data)), Err(UsageError::MissingOrg));
        }
        for data in [
            r#"{"orgName":""}"#,
            r#"{"orgName":7}"#,
            r#"{"orgName":"a/b"}"#,
        ] {
            assert_eq!(check(&usage(data)), Err(UsageError::InvalidOrg));
        }
        assert!(check(r#"{"source":"monetization","event":"usage"}"#).is_err());
        // The messages `POST /events` answers with and dead letters carry, word for word.
        assert_eq!(
            UsageError::MissingOrg.to_string(),
            "'data.orgName' is required: a monetization/usage event notifies only the webhooks \
             of its organisation"
        );
        assert_eq!(
            UsageError::InvalidOrg.to_string(),
            "'data.orgName' must be an organisation name (1 to 48 letters, digits, '.', '_' or \
             '-')"
        );
        // Other events are not the monetization module's to check.
        assert_eq!(check(r#"{"source":"crud","event":"consumers"}"#), Ok(()));
    }
}

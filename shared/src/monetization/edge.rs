//! How an Apigee Edge webhook is a hook of this system (spec §12).
//!
//! A webhook of organisation `org` named `n` is a `webhook` hook on `monetization`/`usage` with
//! - `name` `apigee:<org>:<n>`, so the store's unique names make webhook names unique per
//!   organisation, atomically, and names in `/event-hooks` stay unique;
//! - tags `apigee-org:<org>` (what the Edge routes list by), `apigee-created-by:<user>` and
//!   `apigee-updated-by:<user>` (the Basic auth user of the last change, when known);
//! - Edge's delivery rules as its own `retry` (5xx only, 3 retries 5 minutes apart) and
//!   `timeouts` (3 s to connect, 3 s to read);
//! - a callback body that is the notification exactly ([`is_edge_webhook`] tells the executor).
//!
//! Editing those fields through `/event-hooks` is possible, and then the hook is what it says:
//! removing the `apigee-org:` tag takes it out of the Edge routes.

use serde_json::{json, Map, Value};

use crate::model::{Handler, Hook};

pub const SOURCE: &str = "monetization";
pub const EVENT: &str = "usage";
pub const ORG_TAG: &str = "apigee-org:";
pub const CREATED_BY_TAG: &str = "apigee-created-by:";
pub const UPDATED_BY_TAG: &str = "apigee-updated-by:";
const NAME_PREFIX: &str = "apigee:";

/// Longest organisation name, in bytes (letters, digits, `.`, `_`, `-`).
pub const MAX_ORG_BYTES: usize = 48;
/// Longest webhook name, in bytes.
pub const MAX_WEBHOOK_NAME_BYTES: usize = 64;
/// Longest Basic auth user name recorded as `createdBy`/`updatedBy`, in bytes.
pub const MAX_USER_BYTES: usize = 100;

/// Edge's callback fields, in Edge's order (the `monetization`/`usage` catalogue entry).
pub const CALLBACK_FIELDS: [&str; 21] = [
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

/// Whether `org` is a usable organisation name.
pub fn valid_org(org: &str) -> bool {
    !org.is_empty()
        && org.len() <= MAX_ORG_BYTES
        && org
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The `/event-hooks` name of webhook `name` of `org`.
pub fn hook_name(org: &str, name: &str) -> String {
    format!("{NAME_PREFIX}{org}:{name}")
}

/// The organisation of an Apigee webhook, or `None` for any other hook.
pub fn is_edge_webhook(hook: &Hook) -> Option<&str> {
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
    let prefix = hook_name(org, "");
    let name = hook
        .name
        .as_deref()
        .map(|n| n.strip_prefix(&prefix).unwrap_or(n))
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

/// The `/event-hooks` input of a webhook: Edge's delivery rules, source and event, its tags.
pub fn hook_input(
    org: &str,
    name: &str,
    post_url: &str,
    enabled: bool,
    created_by: Option<&str>,
    updated_by: Option<&str>,
) -> Value {
    let mut tags = vec![format!("{ORG_TAG}{org}")];
    if let Some(user) = created_by {
        tags.push(format!("{CREATED_BY_TAG}{user}"));
    }
    if let Some(user) = updated_by {
        tags.push(format!("{UPDATED_BY_TAG}{user}"));
    }
    json!({
        "source": SOURCE,
        "event": EVENT,
        "handler": "webhook",
        "name": hook_name(org, name),
        "enabled": enabled,
        "tags": tags,
        "config": {"url": post_url, "ssl_verify": true},
        "retry": {"delays": [300, 300, 300], "on": "5xx"},
        "timeouts": {"connect_ms": 3000, "read_ms": 3000},
    })
}

/// The notification for one reached threshold: Edge's callback fields from the usage data, with
/// `triggerTime` (Unix ms) and `triggerReason` naming the threshold.
pub fn notification(usage: &Map<String, Value>, percent: u32, usage_target: &str, now_ms: i64) -> Value {
    let mut out = Map::new();
    for field in CALLBACK_FIELDS {
        out.insert(field.into(), usage.get(field).cloned().unwrap_or(Value::Null));
    }
    out.insert("triggerTime".into(), json!(now_ms));
    out.insert(
        "triggerReason".into(),
        json!(format!("UsageTarget {percent}% reached ({usage_target})")),
    );
    Value::Object(out)
}

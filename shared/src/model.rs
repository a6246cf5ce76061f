//! The hook entity as stored and as served by the admin API (spec §1).
//!
//! Values of these types have passed validation (see [`crate::validate`]); nothing else builds them
//! from user input. The JSON form is Kong's: `handler` and `config` side by side, defaults filled in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One event hook: which events it listens to and what it does with them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hook {
    pub id: Uuid,
    /// Unix seconds, set by the server.
    pub created_at: i64,
    /// Unix seconds, set by the server.
    pub updated_at: i64,
    pub source: String,
    /// `None` means every event of the source.
    pub event: Option<String>,
    #[serde(flatten)]
    pub handler: Handler,
    /// Seconds during which at most one event is delivered (spec §5).
    pub snooze: Option<u32>,
    /// Deliver only when the payload changed since the last delivery (spec §5).
    pub on_change: Option<bool>,
    /// A disabled hook is never dispatched.
    pub enabled: bool,
    /// Optional unique name.
    pub name: Option<String>,
    pub tags: Vec<String>,
}

/// The handler of a hook with its configuration; serialized as `"handler": …, "config": {…}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "handler", content = "config", rename_all = "kebab-case")]
pub enum Handler {
    Webhook(WebhookConfig),
    WebhookCustom(WebhookCustomConfig),
    Log(LogConfig),
    Lambda(LambdaConfig),
}

impl Handler {
    /// The handler's name as it appears on the wire.
    pub fn kind(&self) -> HandlerKind {
        match self {
            Handler::Webhook(_) => HandlerKind::Webhook,
            Handler::WebhookCustom(_) => HandlerKind::WebhookCustom,
            Handler::Log(_) => HandlerKind::Log,
            Handler::Lambda(_) => HandlerKind::Lambda,
        }
    }
}

/// The four handler names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandlerKind {
    Webhook,
    WebhookCustom,
    Log,
    Lambda,
}

impl HandlerKind {
    pub const ALL: [HandlerKind; 4] = [
        HandlerKind::Webhook,
        HandlerKind::WebhookCustom,
        HandlerKind::Log,
        HandlerKind::Lambda,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandlerKind::Webhook => "webhook",
            HandlerKind::WebhookCustom => "webhook-custom",
            HandlerKind::Log => "log",
            HandlerKind::Lambda => "lambda",
        }
    }

    pub fn parse(name: &str) -> Option<HandlerKind> {
        HandlerKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// `webhook`: POST the event as JSON, signed when `secret` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookConfig {
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub secret: Option<String>,
    pub ssl_verify: bool,
}

/// `webhook-custom`: method, templated payload, body and headers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookCustomConfig {
    pub url: String,
    pub method: String,
    pub payload: Option<BTreeMap<String, String>>,
    pub payload_format: bool,
    pub body: Option<String>,
    pub body_format: bool,
    pub headers: BTreeMap<String, String>,
    pub headers_format: bool,
    pub secret: Option<String>,
    pub ssl_verify: bool,
}

/// `log`: one structured log line per event; no settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogConfig {}

/// `lambda`: a chain of user Lua functions, each given as source that returns a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LambdaConfig {
    pub functions: Vec<String>,
}

/// A hook together with the store's version counter, used for optimistic concurrency.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

/// A custom event registered through `PUT /event-hooks/sources/{source}/{event}` (spec §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomEvent {
    pub source: String,
    pub event: String,
    pub fields: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serializes_handler_and_config_side_by_side() {
        let hook = Hook {
            id: Uuid::nil(),
            created_at: 1,
            updated_at: 2,
            source: "crud".into(),
            event: None,
            handler: Handler::Log(LogConfig {}),
            snooze: None,
            on_change: None,
            enabled: true,
            name: None,
            tags: vec![],
        };
        let value = serde_json::to_value(&hook).unwrap();
        assert_eq!(value["handler"], "log");
        assert_eq!(value["config"], json!({}));
        let back: Hook = serde_json::from_value(value).unwrap();
        assert_eq!(back, hook);
    }
}

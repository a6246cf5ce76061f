//! The admin function's settings, read from the environment once at a cold start: a missing or
//! malformed variable fails the cold start, named, instead of the first request.

use event_hooks::env::{optional_text, required, AdminConfig, RelaySetting, SettingError};

/// Everything the admin function reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HOOKS_TABLE`.
    pub hooks_table: String,
    /// `EVENTS_QUEUE_URL`: `POST /events` and the `crud` events of hook changes.
    pub events_queue_url: String,
    /// `DELIVERIES_TABLE`: the delivery log.
    pub deliveries_table: String,
    /// `DELIVERIES_QUEUE_URL`: retried and replayed deliveries.
    pub deliveries_queue_url: String,
    /// `IDEMPOTENCY_TABLE`, optional so that a stack without the table still serves;
    /// `Idempotency-Key` then gets 501.
    pub idempotency_table: Option<String>,
    /// `MONETIZATION_TABLE`, optional too: without it the Apigee notification-condition routes
    /// answer 501.
    pub monetization_table: Option<String>,
    /// The admin authentication, `UNTRUSTED_LUA` and `CORS_ALLOWED_ORIGINS`.
    pub admin: AdminConfig,
    /// The Kong relay: `RELAY_SECRETS_SECRET_ARN` and `RELAY_ALLOW_UNSIGNED`.
    pub relay: RelaySetting,
}

impl Config {
    /// Reads every variable once. Fails, naming the settings, when no admin authentication is
    /// configured.
    pub fn from_env() -> Result<Config, SettingError> {
        Ok(Config {
            hooks_table: required("HOOKS_TABLE")?,
            events_queue_url: required("EVENTS_QUEUE_URL")?,
            deliveries_table: required("DELIVERIES_TABLE")?,
            deliveries_queue_url: required("DELIVERIES_QUEUE_URL")?,
            admin: AdminConfig::from_env()?,
            relay: RelaySetting::from_env()?,
            idempotency_table: optional_text("IDEMPOTENCY_TABLE")?,
            monetization_table: optional_text("MONETIZATION_TABLE")?,
        })
    }
}

//! The probe function's settings, read from the environment once at a cold start: a missing or
//! malformed variable fails the cold start, named, instead of the first request.

use event_hooks::env::{self, required, AdminConfig, SettingError};
use event_hooks::outbound::http::HttpSettings;

/// Everything the probe function reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HOOKS_TABLE`: the hooks tested and pinged.
    pub hooks_table: String,
    /// The admin authentication, `UNTRUSTED_LUA` and `CORS_ALLOWED_ORIGINS`.
    pub admin: AdminConfig,
    /// See [`env::http_settings`].
    pub http: HttpSettings,
}

impl Config {
    /// Reads every variable once. Fails, naming the settings, when no admin authentication is
    /// configured.
    pub fn from_env() -> Result<Config, SettingError> {
        Ok(Config {
            hooks_table: required("HOOKS_TABLE")?,
            admin: AdminConfig::from_env()?,
            http: env::http_settings()?,
        })
    }
}

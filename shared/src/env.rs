//! Settings read once at a Lambda cold start: environment variables with errors that name them,
//! and JSON logs for CloudWatch. A bad setting fails the cold start instead of the first request.

use std::time::Duration;

use crate::admin::AdminSettings;
use crate::deliver::http::HttpSettings;
use crate::lua::LuaPolicy;

/// A setting that is missing or malformed.
#[derive(Debug, thiserror::Error)]
pub enum SettingError {
    #[error("environment variable {0} is not set")]
    Missing(String),
    #[error("environment variable {name}: {problem}")]
    Malformed { name: String, problem: String },
}

/// A required environment variable.
pub fn required(name: &str) -> Result<String, SettingError> {
    std::env::var(name).map_err(|_| SettingError::Missing(name.to_string()))
}

/// An optional environment variable parsed with `parse`; unset or blank is `None`.
pub fn optional<T>(
    name: &str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, SettingError> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            parse(value.trim())
                .map(Some)
                .map_err(|problem| SettingError::Malformed {
                    name: name.to_string(),
                    problem,
                })
        }
        _ => Ok(None),
    }
}

/// A positive number of seconds, such as `5` or `0.5`.
pub fn seconds(value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("'{value}' is not a number of seconds"))
}

/// `true` or `false`.
pub fn boolean(value: &str) -> Result<bool, String> {
    value
        .parse::<bool>()
        .map_err(|_| format!("'{value}' is not true or false"))
}

/// JSON log lines on stdout, filtered by `RUST_LOG` (default `info`), without a time stamp:
/// CloudWatch stamps each line. The Lambda runtime's span (with the request id) is in every line.
pub fn init_lambda_logs() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(false)
        .without_time()
        .init();
}

/// `ADMIN_TOKEN` (empty means no token auth) and `UNTRUSTED_LUA` (`sandbox` or `off`).
pub fn admin_settings() -> Result<AdminSettings, SettingError> {
    Ok(AdminSettings {
        admin_token: std::env::var("ADMIN_TOKEN").ok().filter(|t| !t.is_empty()),
        lua: optional("UNTRUSTED_LUA", |v| v.parse::<LuaPolicy>())?.unwrap_or_default(),
    })
}

/// `CONNECT_TIMEOUT_SECONDS`, `REQUEST_TIMEOUT_SECONDS` and `ALLOW_PRIVATE_TARGETS` over the
/// defaults of [`HttpSettings`].
pub fn http_settings() -> Result<HttpSettings, SettingError> {
    let mut http = HttpSettings::default();
    if let Some(connect) = optional("CONNECT_TIMEOUT_SECONDS", seconds)? {
        http.connect_timeout = connect;
    }
    if let Some(total) = optional("REQUEST_TIMEOUT_SECONDS", seconds)? {
        http.total_timeout = total;
    }
    http.allow_private_targets = optional("ALLOW_PRIVATE_TARGETS", boolean)?.unwrap_or(false);
    Ok(http)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_explains() {
        assert_eq!(seconds("0.5").unwrap(), Duration::from_millis(500));
        assert!(seconds("-1").is_err());
        assert!(seconds("soon").unwrap_err().contains("soon"));
        assert!(boolean("true").unwrap());
        assert!(boolean("yes").is_err());
        let missing = required("EVENT_HOOKS_SURELY_UNSET_VARIABLE").unwrap_err();
        assert_eq!(
            missing.to_string(),
            "environment variable EVENT_HOOKS_SURELY_UNSET_VARIABLE is not set"
        );
    }
}

//! Settings read once at a Lambda cold start: environment variables with errors that name them,
//! and JSON logs for CloudWatch. A bad setting fails the cold start instead of the first request.
//!
//! The parsers of setting values ([`Seconds`], [`hook_max_in_flight`]) serve the local server's
//! flags too, so a value means the same in both.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::admin::{AdminAuth, AdminSettings, CorsOrigins};
use crate::lua::LuaPolicy;
use crate::outbound::http::HttpSettings;

/// A setting that is missing or malformed.
#[derive(thiserror::Error)]
pub enum SettingError {
    #[error("environment variable {0} is not set")]
    Missing(String),
    #[error("environment variable {name}: {problem}")]
    Malformed {
        name: String,
        problem: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A function whose cold start fails returns the error from `main`, which prints it with `{:?}`:
/// the problem is shown as its message there, as it reads in the init error.
impl fmt::Debug for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingError::Missing(name) => f.debug_tuple("Missing").field(name).finish(),
            SettingError::Malformed { name, problem } => f
                .debug_struct("Malformed")
                .field("name", name)
                .field("problem", &problem.to_string())
                .finish(),
        }
    }
}

/// Why the text of a setting is not a value it may take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadValue {
    #[error("'{0}' is not a number of seconds")]
    NotSeconds(String),
    #[error("'{0}' is not true or false")]
    NotBoolean(String),
    #[error("'{value}' is longer than an attempt may take ({max_secs} s)")]
    LongerThanAnAttempt { value: String, max_secs: u64 },
    #[error("'{value}' is not a whole number from {min} to {max}")]
    NotWholeNumberIn { value: String, min: u64, max: u64 },
    #[error("'{value}' is not a whole number of seconds from {min} to {max}")]
    NotWholeSecondsIn { value: String, min: u64, max: u64 },
}

/// Why the admin authentication settings cannot be used (see [`admin_auth_setting`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadAdminAuth {
    #[error(
        "a plaintext token in the environment is not accepted; store it in Secrets Manager \
         (ADMIN_TOKEN_SECRET_ARN) or an SSM SecureString (ADMIN_TOKEN_PARAMETER)"
    )]
    PlaintextToken,
    #[error("'{0}' is neither token nor iam")]
    UnknownMode(String),
    #[error("iam excludes ADMIN_TOKEN_SECRET_ARN and ADMIN_TOKEN_PARAMETER")]
    IamWithTokenSource,
    #[error("set either it or ADMIN_TOKEN_PARAMETER, not both")]
    BothTokenSources,
}

/// A required environment variable.
pub fn required(name: &str) -> Result<String, SettingError> {
    std::env::var(name).map_err(|_| SettingError::Missing(name.to_string()))
}

/// An optional environment variable parsed with `parse`; unset or blank is `None`.
pub fn optional<T, E>(
    name: &str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Option<T>, SettingError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => {
            parse(value.trim())
                .map(Some)
                .map_err(|problem| SettingError::Malformed {
                    name: name.to_string(),
                    problem: problem.into(),
                })
        }
        _ => Ok(None),
    }
}

/// An optional environment variable taken as it is (a table name); unset or blank is `None`.
pub fn optional_text(name: &str) -> Result<Option<String>, SettingError> {
    optional(name, |text| Ok::<_, BadValue>(text.to_owned()))
}

/// A number of seconds, zero or more, such as `5` or `0.5`: the one reading of a duration
/// setting, for the functions' variables and the local server's flags. Shown as it is written
/// (`86400`, `0.5`), so a flag's default in `--help` reads as a value it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = BadValue;

    fn from_str(value: &str) -> Result<Seconds, BadValue> {
        value
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            // Fallible: a number of seconds too large for a `Duration` is refused, not a panic.
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .map(Seconds)
            .ok_or_else(|| BadValue::NotSeconds(value.to_owned()))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

impl From<Seconds> for Duration {
    fn from(seconds: Seconds) -> Duration {
        seconds.0
    }
}

/// [`Seconds`] as a `Duration`.
pub fn seconds(value: &str) -> Result<Duration, BadValue> {
    value.parse::<Seconds>().map(Duration::from)
}

/// `true` or `false`.
pub fn boolean(value: &str) -> Result<bool, BadValue> {
    value
        .parse::<bool>()
        .map_err(|_| BadValue::NotBoolean(value.to_owned()))
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

/// How long the admin token read from its store is trusted, unless `ADMIN_TOKEN_CACHE_SECONDS`
/// says otherwise: a rotated-out token is refused within this time.
pub(crate) const DEFAULT_TOKEN_CACHE: Duration = Duration::from_secs(300);

/// The least time between two reads of the admin token caused by wrong tokens.
pub(crate) const TOKEN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Where a deployed function gets its admin authentication from (spec §10). There is no "off":
/// a function with none of these refuses to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminAuthSetting {
    /// `ADMIN_AUTH=iam`: API Gateway checks SigV4 signatures (the route's `AWS_IAM` authorizer),
    /// so the function checks nothing more.
    Iam,
    /// `ADMIN_TOKEN_SECRET_ARN`: a Secrets Manager secret (its `SecretString`).
    SecretsManager { secret_id: String, cache: Duration },
    /// `ADMIN_TOKEN_PARAMETER`: an SSM parameter (a `SecureString`, decrypted).
    SsmParameter { name: String, cache: Duration },
}

/// The admin authentication named by `ADMIN_AUTH` (`token`, the default, or `iam`),
/// `ADMIN_TOKEN_SECRET_ARN` / `ADMIN_TOKEN_PARAMETER` and `ADMIN_TOKEN_CACHE_SECONDS`. Fails
/// closed: no token source and no IAM auth, both token sources, or a token in the plaintext
/// `ADMIN_TOKEN` variable is an error naming the settings.
pub(crate) fn admin_auth_setting() -> Result<AdminAuthSetting, SettingError> {
    admin_auth_from(|name| std::env::var(name).ok())
}

/// [`admin_auth_setting`] over any variable lookup (tests).
pub(crate) fn admin_auth_from(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<AdminAuthSetting, SettingError> {
    let text = |name: &str| -> Result<Option<String>, SettingError> {
        Ok(lookup(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty()))
    };
    if text("ADMIN_TOKEN")?.is_some() {
        return Err(malformed("ADMIN_TOKEN", BadAdminAuth::PlaintextToken));
    }
    let mode = text("ADMIN_AUTH")?;
    if let Some(mode) = mode.as_deref().filter(|m| !matches!(*m, "token" | "iam")) {
        return Err(malformed(
            "ADMIN_AUTH",
            BadAdminAuth::UnknownMode(mode.to_owned()),
        ));
    }
    let secret = text("ADMIN_TOKEN_SECRET_ARN")?;
    let parameter = text("ADMIN_TOKEN_PARAMETER")?;
    let cache = match text("ADMIN_TOKEN_CACHE_SECONDS")? {
        Some(value) => {
            seconds(&value).map_err(|problem| malformed("ADMIN_TOKEN_CACHE_SECONDS", problem))?
        }
        None => DEFAULT_TOKEN_CACHE,
    };
    match (mode.as_deref(), secret, parameter) {
        (Some("iam"), None, None) => Ok(AdminAuthSetting::Iam),
        (Some("iam"), _, _) => Err(malformed("ADMIN_AUTH", BadAdminAuth::IamWithTokenSource)),
        (_, Some(_), Some(_)) => Err(malformed(
            "ADMIN_TOKEN_SECRET_ARN",
            BadAdminAuth::BothTokenSources,
        )),
        (_, Some(secret_id), None) => Ok(AdminAuthSetting::SecretsManager { secret_id, cache }),
        (_, None, Some(name)) => Ok(AdminAuthSetting::SsmParameter { name, cache }),
        (_, None, None) => Err(SettingError::Missing(
            "ADMIN_TOKEN_SECRET_ARN (or ADMIN_TOKEN_PARAMETER, or ADMIN_AUTH=iam): the admin \
             API refuses to run unauthenticated"
                .into(),
        )),
    }
}

/// `name` is malformed: `problem`.
fn malformed(
    name: &str,
    problem: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> SettingError {
    SettingError::Malformed {
        name: name.to_owned(),
        problem: problem.into(),
    }
}

/// What the admin function reads for the Kong relay (spec §13): `RELAY_SECRETS_SECRET_ARN`, a
/// Secrets Manager secret whose `SecretString` holds the relay secrets one a line, cached as
/// long as the admin token (`ADMIN_TOKEN_CACHE_SECONDS`); and `RELAY_ALLOW_UNSIGNED` (`false`
/// unless set). Neither set: the relay refuses every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySetting {
    pub secret_id: Option<String>,
    pub cache: Duration,
    pub allow_unsigned: bool,
}

impl RelaySetting {
    /// Reads the variables once.
    pub fn from_env() -> Result<RelaySetting, SettingError> {
        Ok(RelaySetting {
            secret_id: optional_text("RELAY_SECRETS_SECRET_ARN")?,
            cache: optional("ADMIN_TOKEN_CACHE_SECONDS", seconds)?.unwrap_or(DEFAULT_TOKEN_CACHE),
            allow_unsigned: optional("RELAY_ALLOW_UNSIGNED", boolean)?.unwrap_or(false),
        })
    }
}

/// What the admin and the probe function read for the admin API: its authentication
/// ([`admin_auth_setting`]), `UNTRUSTED_LUA` (`sandbox` or `off`) and `CORS_ALLOWED_ORIGINS`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub auth: AdminAuthSetting,
    pub lua: LuaPolicy,
    pub cors: CorsOrigins,
}

impl AdminConfig {
    /// Reads the variables once; fails, naming the settings, when no admin authentication is
    /// configured.
    pub fn from_env() -> Result<AdminConfig, SettingError> {
        Ok(AdminConfig {
            auth: admin_auth_setting()?,
            lua: optional("UNTRUSTED_LUA", |v| v.parse::<LuaPolicy>())?.unwrap_or_default(),
            cors: cors_allowed_origins()?,
        })
    }

    /// The admin API's settings, with `auth` built from [`AdminConfig::auth`].
    pub fn settings(self, auth: AdminAuth) -> AdminSettings {
        AdminSettings {
            auth,
            lua: self.lua,
            cors: self.cors,
            relay: Default::default(),
        }
    }
}

/// `CORS_ALLOWED_ORIGINS`: the comma-separated origins whose web pages may call the API; unset or
/// empty for none.
pub fn cors_allowed_origins() -> Result<CorsOrigins, SettingError> {
    Ok(optional("CORS_ALLOWED_ORIGINS", CorsOrigins::parse)?.unwrap_or_default())
}

/// A request timeout: seconds, at most [`crate::limits::MAX_ATTEMPT`] (an attempt must end
/// within its message's lease).
pub fn attempt_seconds(value: &str) -> Result<Duration, BadValue> {
    let max = crate::limits::MAX_ATTEMPT;
    let duration = seconds(value)?;
    if duration <= max {
        Ok(duration)
    } else {
        Err(BadValue::LongerThanAnAttempt {
            value: value.to_owned(),
            max_secs: max.as_secs(),
        })
    }
}

/// A hook lane's default capacity: a whole number from 1 to [`crate::limits::MAX_HOOK_IN_FLIGHT`].
pub fn hook_max_in_flight(value: &str) -> Result<u32, BadValue> {
    let max = crate::limits::MAX_HOOK_IN_FLIGHT;
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| BadValue::NotWholeNumberIn {
            value: value.to_owned(),
            min: 1,
            max: u64::from(max),
        })
}

/// `CONNECT_TIMEOUT_SECONDS`, `REQUEST_TIMEOUT_SECONDS` and `ALLOW_PRIVATE_TARGETS` over the
/// defaults of [`HttpSettings`].
pub fn http_settings() -> Result<HttpSettings, SettingError> {
    let mut http = HttpSettings::default();
    if let Some(connect) = optional("CONNECT_TIMEOUT_SECONDS", seconds)? {
        http.connect_timeout = connect;
    }
    if let Some(total) = optional("REQUEST_TIMEOUT_SECONDS", attempt_seconds)? {
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
        assert!(seconds("soon").unwrap_err().to_string().contains("soon"));
        // Too many seconds for a duration is an error, not a panic.
        assert!(seconds("1e30").is_err());
        // Shown as written, so a flag's default reads as a value it accepts.
        assert_eq!(Seconds(Duration::from_secs(86_400)).to_string(), "86400");
        assert_eq!(Seconds(Duration::from_millis(500)).to_string(), "0.5");
        assert_eq!(
            "86400".parse::<Seconds>().unwrap().0,
            Duration::from_secs(86_400)
        );
        assert!(boolean("true").unwrap());
        assert!(boolean("yes").is_err());
        let auth = |vars: &[(&str, &str)]| {
            let vars: std::collections::HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            admin_auth_from(|name| vars.get(name).cloned())
        };
        // Fail closed: nothing configured names the settings; a plaintext token is refused.
        let none = auth(&[]).unwrap_err().to_string();
        assert!(none.contains("ADMIN_TOKEN_SECRET_ARN"), "{none}");
        assert!(none.contains("ADMIN_AUTH=iam"), "{none}");
        assert!(auth(&[("ADMIN_AUTH", "token")]).is_err());
        assert!(auth(&[("ADMIN_AUTH", "")]).is_err());
        let plain = auth(&[("ADMIN_TOKEN", "t"), ("ADMIN_TOKEN_SECRET_ARN", "arn")]);
        let plain = plain.unwrap_err();
        assert!(plain.to_string().contains("ADMIN_TOKEN"));
        // What a failed cold start prints names where the token must come from.
        assert!(
            format!("{plain:?}").contains("ADMIN_TOKEN_SECRET_ARN"),
            "{plain:?}"
        );
        assert!(auth(&[("ADMIN_AUTH", "none")]).is_err());
        assert!(auth(&[("ADMIN_AUTH", "iam"), ("ADMIN_TOKEN_PARAMETER", "/p")]).is_err());
        let both = [
            ("ADMIN_TOKEN_SECRET_ARN", "a"),
            ("ADMIN_TOKEN_PARAMETER", "/p"),
        ];
        assert!(auth(&both).is_err());
        assert_eq!(
            auth(&[("ADMIN_AUTH", "iam")]).unwrap(),
            AdminAuthSetting::Iam
        );
        assert_eq!(
            auth(&[("ADMIN_TOKEN_SECRET_ARN", "arn:x")]).unwrap(),
            AdminAuthSetting::SecretsManager {
                secret_id: "arn:x".into(),
                cache: DEFAULT_TOKEN_CACHE
            }
        );
        assert_eq!(
            auth(&[
                ("ADMIN_TOKEN_PARAMETER", "/p"),
                ("ADMIN_TOKEN_CACHE_SECONDS", "60")
            ])
            .unwrap(),
            AdminAuthSetting::SsmParameter {
                name: "/p".into(),
                cache: Duration::from_secs(60)
            }
        );
        let missing = required("EVENT_HOOKS_SURELY_UNSET_VARIABLE").unwrap_err();
        assert_eq!(
            missing.to_string(),
            "environment variable EVENT_HOOKS_SURELY_UNSET_VARIABLE is not set"
        );
    }
}

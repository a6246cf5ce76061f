//! Settings read once at a Lambda cold start: environment variables with errors that name them,
//! and JSON logs for CloudWatch. A bad setting fails the cold start instead of the first request.

use std::time::Duration;

use crate::admin::{AdminAuth, AdminSettings, CorsOrigins};
use crate::lua::LuaPolicy;
use crate::outbound::http::HttpSettings;

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

/// How long the admin token read from its store is trusted, unless `ADMIN_TOKEN_CACHE_SECONDS`
/// says otherwise: a rotated-out token is refused within this time.
pub const DEFAULT_TOKEN_CACHE: Duration = Duration::from_secs(300);

/// The least time between two reads of the admin token caused by wrong tokens.
pub const TOKEN_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

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
pub fn admin_auth_setting() -> Result<AdminAuthSetting, SettingError> {
    admin_auth_from(|name| std::env::var(name).ok())
}

/// [`admin_auth_setting`] over any variable lookup (tests).
pub fn admin_auth_from(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<AdminAuthSetting, SettingError> {
    let text = |name: &str| -> Result<Option<String>, SettingError> {
        Ok(lookup(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty()))
    };
    if text("ADMIN_TOKEN")?.is_some() {
        return Err(SettingError::Malformed {
            name: "ADMIN_TOKEN".into(),
            problem: "a plaintext token in the environment is not accepted; store it in \
                      Secrets Manager (ADMIN_TOKEN_SECRET_ARN) or an SSM SecureString \
                      (ADMIN_TOKEN_PARAMETER)"
                .into(),
        });
    }
    let mode = text("ADMIN_AUTH")?;
    if let Some(mode) = mode.as_deref().filter(|m| !matches!(*m, "token" | "iam")) {
        return Err(SettingError::Malformed {
            name: "ADMIN_AUTH".into(),
            problem: format!("'{mode}' is neither token nor iam"),
        });
    }
    let secret = text("ADMIN_TOKEN_SECRET_ARN")?;
    let parameter = text("ADMIN_TOKEN_PARAMETER")?;
    let cache = match text("ADMIN_TOKEN_CACHE_SECONDS")? {
        Some(value) => seconds(&value).map_err(|problem| SettingError::Malformed {
            name: "ADMIN_TOKEN_CACHE_SECONDS".into(),
            problem,
        })?,
        None => DEFAULT_TOKEN_CACHE,
    };
    match (mode.as_deref(), secret, parameter) {
        (Some("iam"), None, None) => Ok(AdminAuthSetting::Iam),
        (Some("iam"), _, _) => Err(SettingError::Malformed {
            name: "ADMIN_AUTH".into(),
            problem: "iam excludes ADMIN_TOKEN_SECRET_ARN and ADMIN_TOKEN_PARAMETER".into(),
        }),
        (_, Some(_), Some(_)) => Err(SettingError::Malformed {
            name: "ADMIN_TOKEN_SECRET_ARN".into(),
            problem: "set either it or ADMIN_TOKEN_PARAMETER, not both".into(),
        }),
        (_, Some(secret_id), None) => Ok(AdminAuthSetting::SecretsManager { secret_id, cache }),
        (_, None, Some(name)) => Ok(AdminAuthSetting::SsmParameter { name, cache }),
        (_, None, None) => Err(SettingError::Missing(
            "ADMIN_TOKEN_SECRET_ARN (or ADMIN_TOKEN_PARAMETER, or ADMIN_AUTH=iam): the admin \
             API refuses to run unauthenticated"
                .into(),
        )),
    }
}

/// `UNTRUSTED_LUA` (`sandbox` or `off`) and `CORS_ALLOWED_ORIGINS` with `auth`: the settings of
/// the admin and the probe function.
pub fn admin_settings(auth: AdminAuth) -> Result<AdminSettings, SettingError> {
    Ok(AdminSettings {
        auth,
        lua: optional("UNTRUSTED_LUA", |v| v.parse::<LuaPolicy>())?.unwrap_or_default(),
        cors: cors_allowed_origins()?,
    })
}

/// `CORS_ALLOWED_ORIGINS`: the comma-separated origins whose web pages may call the API; unset or
/// empty for none.
pub fn cors_allowed_origins() -> Result<CorsOrigins, SettingError> {
    Ok(optional("CORS_ALLOWED_ORIGINS", CorsOrigins::parse)?.unwrap_or_default())
}

/// `CONNECT_TIMEOUT_SECONDS`, `REQUEST_TIMEOUT_SECONDS` and `ALLOW_PRIVATE_TARGETS` over the
/// defaults of [`HttpSettings`].
/// A request timeout: seconds, at most [`crate::limits::MAX_ATTEMPT`] (an attempt must end
/// within its message's lease).
pub fn attempt_seconds(value: &str) -> Result<Duration, String> {
    let max = crate::limits::MAX_ATTEMPT;
    seconds(value).and_then(|d| {
        if d <= max {
            Ok(d)
        } else {
            Err(format!(
                "'{value}' is longer than an attempt may take ({} s)",
                max.as_secs()
            ))
        }
    })
}

/// A hook lane's default capacity: a whole number from 1 to [`crate::limits::MAX_HOOK_IN_FLIGHT`].
pub fn hook_max_in_flight(value: &str) -> Result<u32, String> {
    let max = crate::limits::MAX_HOOK_IN_FLIGHT;
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| format!("'{value}' is not a whole number from 1 to {max}"))
}

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
        assert!(seconds("soon").unwrap_err().contains("soon"));
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
        assert!(plain.unwrap_err().to_string().contains("ADMIN_TOKEN"));
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

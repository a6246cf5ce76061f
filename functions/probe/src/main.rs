//! Lambda entry point of test and ping (spec §7): reads its settings once, builds the hook store and
//! the handler executor once, and serves the two routes through `lambda_http`.

use std::sync::Arc;
use std::time::Duration;

use event_hooks::admin::{self, AdminSettings, ProbeState};
use event_hooks::deliver::http::{HttpSender, HttpSettings};
use event_hooks::dispatch::Executor;
use event_hooks::lua::{Limits, LuaPolicy};
use event_hooks::store::dynamodb::DynamoHookStore;
use lambda_http::{run, Error};

fn required(name: &str) -> Result<String, Error> {
    std::env::var(name).map_err(|_| format!("environment variable {name} is not set").into())
}

/// An optional number of seconds from the environment; a malformed value fails the cold start.
fn seconds(name: &str) -> Result<Option<Duration>, Error> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| Some(Duration::from_secs_f64(s)))
            .ok_or_else(|| {
                format!("environment variable {name}: '{value}' is not a number of seconds").into()
            }),
        _ => Ok(None),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(false)
        .without_time() // CloudWatch stamps each line
        .init();

    let table = required("HOOKS_TABLE")?;
    let settings = AdminSettings {
        admin_token: std::env::var("ADMIN_TOKEN").ok().filter(|t| !t.is_empty()),
        lua: std::env::var("UNTRUSTED_LUA")
            .ok()
            .map(|v| v.parse::<LuaPolicy>())
            .transpose()?
            .unwrap_or_default(),
    };
    let mut http = HttpSettings::default();
    if let Some(connect) = seconds("CONNECT_TIMEOUT_SECONDS")? {
        http.connect_timeout = connect;
    }
    if let Some(total) = seconds("REQUEST_TIMEOUT_SECONDS")? {
        http.total_timeout = total;
    }
    http.allow_private_targets = std::env::var("ALLOW_PRIVATE_TARGETS").is_ok_and(|v| v == "true");

    let config = event_hooks::aws::load_config(None).await;
    let store = Arc::new(DynamoHookStore::new(
        aws_sdk_dynamodb::Client::new(&config),
        table,
    ));
    let executor = Arc::new(Executor::new(HttpSender::new(http)?, Limits::default()));
    run(admin::probe_router(ProbeState::new(
        store, executor, settings,
    )))
    .await
}

//! Lambda entry point of test and ping (spec §7): reads its settings once, builds the hook store and
//! the handler executor once, and serves the two routes through `lambda_http`.

use std::sync::Arc;

use event_hooks::admin::{self, AdminSettings, ProbeState};
use event_hooks::deliver::http::{HttpSender, HttpSettings};
use event_hooks::dispatch::Executor;
use event_hooks::env::{boolean, optional, required, seconds};
use event_hooks::lua::{Limits, LuaPolicy};
use event_hooks::store::dynamodb::DynamoHookStore;
use lambda_http::{run, Error};

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
    if let Some(connect) = optional("CONNECT_TIMEOUT_SECONDS", seconds)? {
        http.connect_timeout = connect;
    }
    if let Some(total) = optional("REQUEST_TIMEOUT_SECONDS", seconds)? {
        http.total_timeout = total;
    }
    http.allow_private_targets = optional("ALLOW_PRIVATE_TARGETS", boolean)?.unwrap_or(false);

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

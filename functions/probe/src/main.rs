//! Lambda entry point of test and ping (spec §7): reads its settings once, builds the hook store and
//! the handler executor once, and serves the two routes through `lambda_http`.

mod config;

use std::sync::Arc;

use event_hooks::admin::{self, ProbeState};
use event_hooks::dispatch::Executor;
use event_hooks::env;
use event_hooks::lambda::signed_by_iam;
use event_hooks::lua::Limits;
use event_hooks::outbound::http::HttpSender;
use event_hooks::store::dynamodb::DynamoHookStore;
use lambda_http::{run, Error};

use config::Config;

#[tokio::main]
async fn main() -> Result<(), Error> {
    env::init_lambda_logs();
    let config = Config::from_env()?;

    let aws = event_hooks::aws::load_config().await;
    let auth =
        event_hooks::aws::admin_auth(&aws, config.admin.auth.clone(), Arc::new(signed_by_iam));
    let settings = config.admin.settings(auth);
    let store = Arc::new(DynamoHookStore::new(
        aws_sdk_dynamodb::Client::new(&aws),
        config.hooks_table,
    ));
    let executor = Arc::new(Executor::new(
        HttpSender::new(config.http)?,
        Limits::default(),
    ));
    run(admin::probe_router(ProbeState::new(
        store, executor, settings,
    )))
    .await
}

//! Lambda entry point of test and ping (spec §7): reads its settings once, builds the hook store and
//! the handler executor once, and serves the two routes through `lambda_http`.

use std::sync::Arc;

use event_hooks::admin::{self, ProbeState};
use event_hooks::dispatch::Executor;
use event_hooks::env::{self, required};
use event_hooks::lua::Limits;
use event_hooks::outbound::http::HttpSender;
use event_hooks::store::dynamodb::DynamoHookStore;
use lambda_http::request::RequestContext;
use lambda_http::{run, Error};

/// With `ADMIN_AUTH=iam`: API Gateway's IAM authorizer put the caller's identity in the request
/// context (an API deployed without the authorizer has none, and every request is refused).
fn signed_by_iam(extensions: &lambda_http::http::Extensions) -> bool {
    matches!(
        extensions.get::<RequestContext>(),
        Some(RequestContext::ApiGatewayV2(context))
            if context.authorizer.as_ref().is_some_and(|a| a.iam.is_some())
    )
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    env::init_lambda_logs();

    let table = required("HOOKS_TABLE")?;
    // Fails the cold start, naming the settings, when no admin authentication is configured.
    let auth = env::admin_auth_setting()?;
    let http = env::http_settings()?;

    let config = event_hooks::aws::load_config().await;
    let settings = env::admin_settings(event_hooks::aws::admin_auth(
        &config,
        auth,
        Arc::new(signed_by_iam),
    ))?;
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

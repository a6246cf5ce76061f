//! Lambda entry point of the admin API: reads its settings once, builds the DynamoDB and SQS
//! adapters once, and serves the shared axum router through `lambda_http`.

use std::sync::Arc;
use std::time::Duration;

use event_hooks::admin::{self, AdminPorts, AdminState};
use event_hooks::apigee::dynamodb::DynamoMonetizationStore;
use event_hooks::delivery_log::dynamodb::DynamoDeliveryLog;
use event_hooks::env::{self, required};
use event_hooks::idempotency::dynamodb::DynamoIdempotencyStore;
use event_hooks::queue::sqs::SqsQueue;
use event_hooks::snapshot::SnapshotCache;
use event_hooks::store::dynamodb::DynamoHookStore;
use event_hooks::store::HookStore;
use lambda_http::request::RequestContext;
use lambda_http::{run, Error};

/// Longest the cached hooks and catalogue are kept, whatever the change counter says (a backstop,
/// as the dispatcher's `HooksCacheSeconds`).
const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(300);

/// How often, at most, a warm instance asks the change counter whether its cache is current: a
/// custom event registered or removed through another instance is seen within this.
const SNAPSHOT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

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
    let events_queue_url = required("EVENTS_QUEUE_URL")?;
    let deliveries_table = required("DELIVERIES_TABLE")?;
    let deliveries_queue_url = required("DELIVERIES_QUEUE_URL")?;
    // Fails the cold start, naming the settings, when no admin authentication is configured.
    let auth = env::admin_auth_setting()?;
    // Optional so that a stack without the table still serves; `Idempotency-Key` then gets 501.
    let idempotency_table = env::optional("IDEMPOTENCY_TABLE", |name| Ok(name.to_owned()))?;
    // Optional too: without it the Apigee notification-condition routes answer 501.
    let monetization_table = env::optional("MONETIZATION_TABLE", |name| Ok(name.to_owned()))?;

    // The SDK reads AWS_ENDPOINT_URL itself, which points the function at a local server in tests.
    let config = event_hooks::aws::load_config().await;
    let settings = env::admin_settings(event_hooks::aws::admin_auth(
        &config,
        auth,
        Arc::new(signed_by_iam),
    ))?;
    let store: Arc<dyn HookStore> = Arc::new(DynamoHookStore::new(
        aws_sdk_dynamodb::Client::new(&config),
        table,
    ));
    let sqs = aws_sdk_sqs::Client::new(&config);
    let ports = AdminPorts {
        events: Arc::new(SqsQueue::new(sqs.clone(), events_queue_url)),
        // `POST /events` checks events against the catalogue: cached, and confirmed through the
        // hooks table's change counter (one consistent read, as the dispatcher does per batch)
        // once a second; the hooks are read again only when the counter moved.
        snapshot: Arc::new(
            SnapshotCache::new(store.clone(), SNAPSHOT_MAX_AGE)
                .checking_counter_every(SNAPSHOT_CHECK_INTERVAL),
        ),
        delivery_log: Arc::new(DynamoDeliveryLog::new(
            aws_sdk_dynamodb::Client::new(&config),
            deliveries_table,
        )),
        retries: Arc::new(SqsQueue::new(sqs, deliveries_queue_url)),
        store,
    };
    let mut state = AdminState::new(ports, settings);
    if let Some(table) = idempotency_table {
        let client = aws_sdk_dynamodb::Client::new(&config);
        state = state.with_idempotency(Arc::new(DynamoIdempotencyStore::new(client, table)));
    }
    if let Some(table) = monetization_table {
        let client = aws_sdk_dynamodb::Client::new(&config);
        state = state.with_monetization(Arc::new(DynamoMonetizationStore::new(client, table)));
    }
    let router = admin::router(state);
    run(router).await
}

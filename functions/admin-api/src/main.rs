//! Lambda entry point of the admin API: reads its settings once, builds the DynamoDB and SQS
//! adapters once, and serves the shared axum router through `lambda_http`.

mod config;

use std::sync::Arc;
use std::time::Duration;

use event_hooks::admin::{self, AdminPorts, AdminState};
use event_hooks::apigee::dynamodb::DynamoMonetizationStore;
use event_hooks::delivery_log::dynamodb::DynamoDeliveryLog;
use event_hooks::env;
use event_hooks::idempotency::dynamodb::DynamoIdempotencyStore;
use event_hooks::lambda::signed_by_iam;
use event_hooks::queue::sqs::SqsQueue;
use event_hooks::snapshot::SnapshotCache;
use event_hooks::store::dynamodb::DynamoHookStore;
use event_hooks::store::HookStore;
use lambda_http::{run, Error};

use config::Config;

/// Longest the cached hooks and catalogue are kept, whatever the change counter says (a backstop,
/// as the dispatcher's `HooksCacheSeconds`).
const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(300);

/// How often, at most, a warm instance asks the change counter whether its cache is current: a
/// custom event registered or removed through another instance is seen within this.
const SNAPSHOT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

#[tokio::main]
async fn main() -> Result<(), Error> {
    env::init_lambda_logs();
    let config = Config::from_env()?;

    // The SDK reads AWS_ENDPOINT_URL itself, which points the function at a local server in tests.
    let aws = event_hooks::aws::load_config().await;
    let auth =
        event_hooks::aws::admin_auth(&aws, config.admin.auth.clone(), Arc::new(signed_by_iam));
    let mut settings = config.admin.settings(auth);
    settings.relay = event_hooks::aws::relay_settings(&aws, config.relay);
    let store: Arc<dyn HookStore> = Arc::new(DynamoHookStore::new(
        aws_sdk_dynamodb::Client::new(&aws),
        config.hooks_table,
    ));
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let ports = AdminPorts {
        events: Arc::new(SqsQueue::new(sqs.clone(), config.events_queue_url)),
        // `POST /events` checks events against the catalogue: cached, and confirmed through the
        // hooks table's change counter (one consistent read, as the dispatcher does per batch)
        // once a second; the hooks are read again only when the counter moved.
        snapshot: Arc::new(
            SnapshotCache::new(store.clone(), SNAPSHOT_MAX_AGE)
                .checking_counter_every(SNAPSHOT_CHECK_INTERVAL),
        ),
        delivery_log: Arc::new(DynamoDeliveryLog::new(
            aws_sdk_dynamodb::Client::new(&aws),
            config.deliveries_table,
        )),
        retries: Arc::new(SqsQueue::new(sqs, config.deliveries_queue_url)),
        store,
    };
    let mut state = AdminState::new(ports, settings);
    if let Some(table) = config.idempotency_table {
        let client = aws_sdk_dynamodb::Client::new(&aws);
        state = state.with_idempotency(Arc::new(DynamoIdempotencyStore::new(client, table)));
    }
    if let Some(table) = config.monetization_table {
        let client = aws_sdk_dynamodb::Client::new(&aws);
        state = state.with_monetization(Arc::new(DynamoMonetizationStore::new(client, table)));
    }
    let router = admin::router(state);
    run(router).await
}

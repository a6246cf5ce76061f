//! Lambda entry point of the dispatcher, triggered by the events queue and the deliveries queue.
//! It reads its settings once, builds the AWS clients and adapters once, and hands each SQS batch
//! to [`handler::handle_batch`].

mod handler;

use std::sync::Arc;
use std::time::Duration;

use event_hooks::deliver::http::HttpSender;
use event_hooks::deliveries::dynamodb::DynamoDeliveryLog;
use event_hooks::dispatch::{DispatchPorts, DispatchSettings, Dispatcher, Executor};
use event_hooks::env::{self, optional, required, seconds};
use event_hooks::lua::Limits;
use event_hooks::queue::sqs::SqsQueue;
use event_hooks::snapshot::SnapshotCache;
use event_hooks::store::dynamodb::DynamoHookStore;
use event_hooks::store::HookStore;
use event_hooks::windows::dynamodb::DynamoWindowStore;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

use handler::{handle_batch, Queues};

/// Receives of one message before it is dead-lettered, unless `MAX_RECEIVES` says otherwise.
const DEFAULT_MAX_RECEIVES: u32 = 5;

#[tokio::main]
async fn main() -> Result<(), Error> {
    env::init_lambda_logs();

    let mut settings = DispatchSettings::default();
    if let Some(retry) = optional("RETRY_SCHEDULE", |v| v.parse().map_err(|e| format!("{e}")))? {
        settings.retry = retry;
    }
    let http = env::http_settings()?;
    let cache_age = optional("HOOKS_CACHE_SECONDS", seconds)?.unwrap_or(Duration::from_secs(5));

    let config = event_hooks::aws::load_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let store: Arc<dyn HookStore> = Arc::new(DynamoHookStore::new(
        dynamodb.clone(),
        required("HOOKS_TABLE")?,
    ));
    // Receives after which a message is dead-lettered with its reason; the queues' redrive
    // policies allow one more (template.yaml), as a backstop.
    let max_receives = optional("MAX_RECEIVES", |v| {
        v.parse::<u32>().map_err(|e| e.to_string())
    })?
    .unwrap_or(DEFAULT_MAX_RECEIVES);
    let events = SqsQueue::new(sqs.clone(), required("EVENTS_QUEUE_URL")?)
        .with_redrive(required("EVENTS_DEAD_LETTER_QUEUE_URL")?, max_receives);
    let deliveries = SqsQueue::new(sqs.clone(), required("DELIVERIES_QUEUE_URL")?)
        .with_redrive(required("DELIVERIES_DEAD_LETTER_QUEUE_URL")?, max_receives);
    let delivery_dead_letters =
        SqsQueue::new(sqs.clone(), required("DELIVERIES_DEAD_LETTER_QUEUE_URL")?);
    let dispatcher = Dispatcher::new(
        DispatchPorts {
            snapshot: Arc::new(SnapshotCache::new(store, cache_age)),
            windows: Arc::new(DynamoWindowStore::new(
                dynamodb.clone(),
                required("WINDOWS_TABLE")?,
            )),
            log: Arc::new(DynamoDeliveryLog::new(
                dynamodb,
                required("DELIVERIES_TABLE")?,
            )),
            deliveries: Arc::new(deliveries.clone()),
            dead_letters: Arc::new(delivery_dead_letters),
            executor: Arc::new(Executor::new(HttpSender::new(http)?, Limits::default())),
        },
        settings,
    );
    let queues = Queues::new(events, deliveries);
    let (dispatcher, queues) = (&dispatcher, &queues);
    run(service_fn(move |event: LambdaEvent<_>| async move {
        handle_batch(dispatcher, queues, event.payload).await
    }))
    .await
}

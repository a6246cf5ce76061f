//! Lambda entry point of the dispatcher, triggered by the events queue and the deliveries queue.
//! It reads its settings once, builds the AWS clients and adapters once, and hands each SQS batch
//! to [`handler::handle_batch`].

mod config;
mod handler;

use std::sync::Arc;

use event_hooks::apigee::dynamodb::DynamoMonetizationStore;
use event_hooks::delivery_log::dynamodb::DynamoDeliveryLog;
use event_hooks::dispatch::{DispatchPorts, Dispatcher, Executor};
use event_hooks::env;
use event_hooks::lua::Limits;
use event_hooks::outbound::http::HttpSender;
use event_hooks::queue::sqs::SqsQueue;
use event_hooks::snapshot::SnapshotCache;
use event_hooks::store::dynamodb::DynamoHookStore;
use event_hooks::store::HookStore;
use event_hooks::windows::dynamodb::DynamoWindowStore;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

use config::Config;
use event_hooks::dispatch::Deadline;

/// The invocation's deadline (Unix ms, from the runtime API) as an `Instant`.
fn deadline_instant(deadline_ms: u64) -> std::time::Instant {
    let now_ms = event_hooks::events::now_millis().max(0) as u64;
    std::time::Instant::now() + std::time::Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}
use handler::{handle_batch, MetricsReporter, Queues};

#[tokio::main]
async fn main() -> Result<(), Error> {
    env::init_lambda_logs();
    let config = Config::from_env()?;
    let reserve = config.attempt_reserve();

    let aws = event_hooks::aws::load_config().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&aws);
    let dynamodb_for_monetization = dynamodb.clone();
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let store: Arc<dyn HookStore> =
        Arc::new(DynamoHookStore::new(dynamodb.clone(), config.hooks_table));
    let events = SqsQueue::new(sqs.clone(), config.events_queue_url)
        .with_redrive(config.events_dead_letter_queue_url, config.max_receives);
    let deliveries = SqsQueue::new(sqs.clone(), config.deliveries_queue_url).with_redrive(
        config.deliveries_dead_letter_queue_url.clone(),
        config.max_receives,
    );
    let delivery_dead_letters = SqsQueue::new(sqs, config.deliveries_dead_letter_queue_url);
    let mut dispatcher = Dispatcher::new(
        DispatchPorts {
            snapshot: Arc::new(SnapshotCache::new(store.clone(), config.cache_age)),
            windows: Arc::new(DynamoWindowStore::new(
                dynamodb.clone(),
                config.windows_table,
            )),
            log: Arc::new(DynamoDeliveryLog::new(dynamodb, config.deliveries_table)),
            deliveries: Arc::new(deliveries.clone()),
            dead_letters: Arc::new(delivery_dead_letters),
            executor: Arc::new(Executor::new(
                HttpSender::new(config.http)?,
                Limits::default(),
            )),
            hooks: store.clone(),
            events: Arc::new(events.clone()),
        },
        config.dispatch,
    );
    if let Some(table) = config.monetization_table {
        dispatcher = dispatcher.with_monetization(Arc::new(DynamoMonetizationStore::new(
            dynamodb_for_monetization,
            table,
        )));
    }
    let queues = Queues::new(events, deliveries);
    let metrics = MetricsReporter::new(config.stack_name);
    let (dispatcher, queues, metrics) = (&dispatcher, &queues, &metrics);
    run(service_fn(move |event: LambdaEvent<_>| async move {
        let deadline = Deadline {
            at: deadline_instant(event.context.deadline),
            reserve,
        };
        handle_batch(dispatcher, queues, metrics, event.payload, Some(deadline)).await
    }))
    .await
}

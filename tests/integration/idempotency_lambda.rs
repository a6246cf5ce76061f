//! `Idempotency-Key` through the real `admin-api` Lambda binary on moto: the function reads
//! `IDEMPOTENCY_TABLE`, and the same key queues one event on SQS whatever the number of retries.

use std::time::Duration;

use event_hooks::queue::sqs::{create_queue_with_dlq, SqsQueue};
use event_hooks::queue::Queue;
use event_hooks_tests::api_gateway::ApiResponse;
use event_hooks_tests::lambda_runtime::{function_binary, FunctionProcess};
use event_hooks_tests::moto::{self, unique_name};
use event_hooks_tests::samples::Samples;
use serde_json::{json, Value};

/// The `POST /events` sample with `body` and, when given, an `Idempotency-Key`.
fn emit(sample: &Value, key: Option<&str>, body: &Value) -> Value {
    let mut event = sample.clone();
    let text = body.to_string();
    event["headers"]["content-length"] = json!(text.len().to_string());
    if let Some(key) = key {
        event["headers"]["idempotency-key"] = json!(key);
    }
    event["body"] = json!(text);
    event["isBase64Encoded"] = json!(false);
    event
}

/// Invokes the function; answers the status and the JSON body.
async fn call(function: &mut FunctionProcess, event: Value) -> (u64, Value) {
    let raw = function
        .invoke(event)
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    let response = ApiResponse::parse(&raw);
    assert!(!response.body.is_null(), "a JSON body: {raw}");
    (u64::from(response.status), response.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_queues_one_event_per_key() {
    let Some(config) = moto::config() else {
        return;
    };
    let endpoint = std::env::var("MOTO_ENDPOINT").expect("MOTO_ENDPOINT");

    // Given: the function on fresh tables and queues, with an idempotency table.
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let (hooks, deliveries, keys) = (
        unique_name("idem-hooks"),
        unique_name("idem-deliveries"),
        unique_name("idem-keys"),
    );
    event_hooks::store::dynamodb::create_table(&dynamodb, &hooks)
        .await
        .expect("create the hooks table");
    event_hooks::delivery_log::dynamodb::create_table(&dynamodb, &deliveries)
        .await
        .expect("create the deliveries table");
    event_hooks::idempotency::dynamodb::create_table(&dynamodb, &keys)
        .await
        .expect("create the idempotency table");
    let sqs = aws_sdk_sqs::Client::new(&config);
    let (events_url, _) = create_queue_with_dlq(&sqs, &unique_name("idem-events"), 5)
        .await
        .expect("create the events queue");
    let (deliveries_url, _) = create_queue_with_dlq(&sqs, &unique_name("idem-retries"), 5)
        .await
        .expect("create the deliveries queue");
    // The admin token in Secrets Manager, as the template creates it.
    let (secret_arn, token) = moto::create_admin_token(&config).await;
    let mut function = FunctionProcess::start(
        &function_binary("admin-api"),
        &moto::process_env(
            &endpoint,
            &[
                ("HOOKS_TABLE", &hooks),
                ("EVENTS_QUEUE_URL", &events_url),
                ("DELIVERIES_TABLE", &deliveries),
                ("DELIVERIES_QUEUE_URL", &deliveries_url),
                ("IDEMPOTENCY_TABLE", &keys),
                ("ADMIN_TOKEN_SECRET_ARN", &secret_arn),
            ],
        ),
    )
    .await
    .with_admin_token(&token);
    let sample = Samples::new().load("admin-emit-event.json");
    let bob = json!({"source":"crud","event":"consumers","data":{"entity":{"username":"bob"}}});
    let eve = json!({"source":"crud","event":"consumers","data":{"entity":{"username":"eve"}}});

    // When: bob is emitted twice under one key, then eve under the same key.
    let (status, first) = call(&mut function, emit(&sample, Some("k-1"), &bob)).await;
    let (again_status, again) = call(&mut function, emit(&sample, Some("k-1"), &bob)).await;
    let (conflict, refused) = call(&mut function, emit(&sample, Some("k-1"), &eve)).await;

    // Then: the retry gets the first id, eve a 422, and the queue holds bob once.
    assert_eq!(status, 202, "{first}");
    assert_eq!(again_status, 202, "{again}");
    assert_eq!(again, first);
    assert_eq!(conflict, 422, "{refused}");
    assert_eq!(
        refused["message"],
        "Idempotency-Key reused with a different body"
    );
    // Every send was answered before this point, so the queue holds all it ever will.
    let queue = SqsQueue::new(sqs, events_url);
    let mut queued = Vec::new();
    loop {
        let batch = queue
            .receive(10, Duration::from_secs(60), Duration::from_secs(1))
            .await
            .expect("receive from the events queue");
        if batch.is_empty() {
            break;
        }
        queued.extend(batch);
    }
    assert_eq!(queued.len(), 1, "{queued:?}");
    let event: Value = serde_json::from_str(&queued[0].body).unwrap();
    assert_eq!(event["id"], first["id"]);
}

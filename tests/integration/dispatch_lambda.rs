//! The real `dispatch` Lambda binary, end to end: the `events/dispatch-*.json` samples (the events
//! `sam local invoke` uses) are fed to it through a fake Lambda Runtime API, against DynamoDB and
//! SQS on moto, and what a loopback HTTP receiver gets, what the delivery log says and what lands
//! on the queues are checked.
//!
//! The test plays the part of Lambda's SQS event source mapping: each record's body is first sent
//! to the queue the record names and received from it, and the record is handed to the function
//! with that message's id, receipt handle and queue ARN. The function settles its messages on the
//! queue (delete, or dead-letter with the reason), so the receipt handles must be real ones.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use event_hooks::delivery_log::dynamodb::DynamoDeliveryLog;
use event_hooks::delivery_log::{DeliveryLog, DeliveryRecord, DeliveryStatus};
use event_hooks::model::{Handler, Hook, LogConfig, WebhookConfig};
use event_hooks::outbound::signing::signature;
use event_hooks::queue::sqs::{create_queue_with_dlq, SqsQueue};
use event_hooks::queue::{Queue, Received};
use event_hooks::store::dynamodb::DynamoHookStore;
use event_hooks::store::{HookStore, Precondition};
use event_hooks_tests::lambda_runtime::{function_binary, Failure, FunctionProcess};
use event_hooks_tests::moto::{self, unique_name};
use serde_json::{json, Value};
use uuid::Uuid;

/// The hook the delivery-retry sample names.
const SAMPLE_HOOK_ID: &str = "4a0c4f41-6b8b-4a42-9d37-0c6b8d1f8f0e";
/// The delivery id in the delivery-retry sample.
const SAMPLE_DELIVERY_ID: &str = "b94bb2c1-e179-5b2a-8b2d-5b9eaa3c8d5c";
/// The secret of the `crud`/`consumers` webhook.
const SECRET: &str = "s3cr3t-for-the-dispatch-test";

/// How long a received message stays invisible while the function handles it.
const VISIBILITY: Duration = Duration::from_secs(60);

/// The sample event `events/<name>`.
fn sample(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("{name} is not JSON: {err}"))
}

/// The records of an SQS event.
fn records(event: &Value) -> Vec<Value> {
    event["Records"]
        .as_array()
        .unwrap_or_else(|| panic!("no Records array in {event}"))
        .clone()
}

/// An SQS record carrying `body`, shaped like the samples; the ids are filled in by
/// [`Queues::through`].
pub(crate) fn record(body: &str) -> Value {
    json!({
        "messageId": Uuid::new_v4().to_string(),
        "receiptHandle": "not-received-yet",
        "body": body,
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1795400000000",
            "SenderId": "AROAEXAMPLEROLEID0001:event-hooks-test",
            "ApproximateFirstReceiveTimestamp": "1795400000012"
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:not-set-yet",
        "awsRegion": "us-east-1"
    })
}

/// The message ids a batch response reports as failed.
pub(crate) fn failed_ids(response: &Value) -> Vec<String> {
    response["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("no batchItemFailures array in {response}"))
        .iter()
        .map(|failure| {
            failure["itemIdentifier"]
                .as_str()
                .unwrap_or_else(|| panic!("no itemIdentifier in {response}"))
                .to_owned()
        })
        .collect()
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Request {
    method: Method,
    path: String,
    /// Lower-case names.
    headers: BTreeMap<String, String>,
    body: String,
    /// What the receiver answered.
    answered: u16,
}

impl Request {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {name} header in {self:#?}"))
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("the body is not JSON ({err}): {:?}", self.body))
    }
}

#[derive(Default)]
struct ReceiverState {
    requests: Vec<Request>,
    /// Statuses to answer, per path, before going back to 200.
    scripted: BTreeMap<String, VecDeque<u16>>,
}

/// A loopback HTTP server that records every request and answers 200 unless told otherwise.
struct Receiver {
    port: u16,
    state: Arc<Mutex<ReceiverState>>,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let port = listener.local_addr().expect("receiver address").port();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("receiver server");
        });
        Receiver {
            port,
            state,
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The next request to `path` is answered with `status`.
    fn answer_next(&self, path: &str, status: u16) {
        self.state
            .lock()
            .unwrap()
            .scripted
            .entry(path.to_owned())
            .or_default()
            .push_back(status);
    }

    /// Every request received since the last call.
    fn take(&self) -> Vec<Request> {
        std::mem::take(&mut self.state.lock().unwrap().requests)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut state = state.lock().unwrap();
    let path = uri.path().to_owned();
    let answered = state
        .scripted
        .get_mut(&path)
        .and_then(VecDeque::pop_front)
        .unwrap_or(200);
    state.requests.push(Request {
        method,
        path,
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        answered,
    });
    StatusCode::from_u16(answered).expect("a valid status")
}

/// A queue on moto with its dead-letter queue, as the function is configured with them.
pub(crate) struct QueuePair {
    url: String,
    dead_letter_url: String,
    arn: String,
    queue: SqsQueue,
    pub(crate) dead_letters: SqsQueue,
}

impl QueuePair {
    async fn create(sqs: &aws_sdk_sqs::Client, prefix: &str) -> QueuePair {
        let (url, dead_letter_url) = create_queue_with_dlq(sqs, &unique_name(prefix), 5)
            .await
            .unwrap_or_else(|err| panic!("create the {prefix} queue: {err}"));
        let arn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("GetQueueAttributes")
            .attributes()
            .and_then(|attributes| attributes.get(&QueueAttributeName::QueueArn).cloned())
            .expect("a QueueArn");
        QueuePair {
            queue: SqsQueue::new(sqs.clone(), url.clone()),
            dead_letters: SqsQueue::new(sqs.clone(), dead_letter_url.clone()),
            url,
            dead_letter_url,
            arn,
        }
    }

    /// What Lambda's event source mapping does: `records` go through this queue (sent, then
    /// received), and come back with the received messages' ids, receipt handles and this queue's
    /// ARN.
    pub(crate) async fn through(&self, records: Vec<Value>) -> Value {
        for record in &records {
            let body = record["body"].as_str().expect("a record body").to_owned();
            self.queue
                .send(event_hooks::queue::Outgoing::now(body))
                .await
                .expect("send a record's body");
        }
        let mut pending = records;
        let mut out = Vec::new();
        for message in receive_all(&self.queue, pending.len(), Duration::from_secs(10)).await {
            let index = pending
                .iter()
                .position(|record| record["body"] == message.body.as_str())
                .unwrap_or_else(|| panic!("a message nobody sent: {message:?}"));
            out.push(as_record(pending.remove(index), &message, &self.arn));
        }
        assert!(pending.is_empty(), "never received: {pending:#?}");
        json!({ "Records": out })
    }
}

/// `record` re-addressed to the received `message` on the queue `arn`.
fn as_record(mut record: Value, message: &Received, arn: &str) -> Value {
    record["messageId"] = json!(message.id);
    record["receiptHandle"] = json!(message.receipt);
    record["body"] = json!(message.body);
    record["eventSourceARN"] = json!(arn);
    record["attributes"]["ApproximateReceiveCount"] = json!(message.receive_count.to_string());
    record
}

/// Receives until `count` messages arrived or `wait` passed.
pub(crate) async fn receive_all(queue: &SqsQueue, count: usize, wait: Duration) -> Vec<Received> {
    let deadline = Instant::now() + wait;
    let mut messages = Vec::new();
    while messages.len() < count && Instant::now() < deadline {
        let batch = queue
            .receive(10, VISIBILITY, Duration::from_secs(1))
            .await
            .expect("receive");
        messages.extend(batch);
    }
    messages
}

/// Tables and queues on moto, fresh for one test.
pub(crate) struct Resources {
    endpoint: String,
    hooks_table: String,
    windows_table: String,
    deliveries_table: String,
    pub(crate) events: QueuePair,
    deliveries: QueuePair,
    pub(crate) store: DynamoHookStore,
    log: DynamoDeliveryLog,
}

impl Resources {
    pub(crate) async fn create(config: &aws_config::SdkConfig) -> Resources {
        let endpoint = std::env::var("MOTO_ENDPOINT").expect("MOTO_ENDPOINT");
        let dynamodb = aws_sdk_dynamodb::Client::new(config);
        let sqs = aws_sdk_sqs::Client::new(config);
        let hooks_table = unique_name("dispatch-lambda-hooks");
        let windows_table = unique_name("dispatch-lambda-windows");
        let deliveries_table = unique_name("dispatch-lambda-deliveries");
        event_hooks::store::dynamodb::create_table(&dynamodb, &hooks_table)
            .await
            .expect("create the hooks table");
        event_hooks::windows::dynamodb::create_table(&dynamodb, &windows_table)
            .await
            .expect("create the windows table");
        event_hooks::delivery_log::dynamodb::create_table(&dynamodb, &deliveries_table)
            .await
            .expect("create the deliveries table");
        Resources {
            endpoint,
            store: DynamoHookStore::new(dynamodb.clone(), hooks_table.clone()),
            log: DynamoDeliveryLog::new(dynamodb, deliveries_table.clone()),
            hooks_table,
            windows_table,
            deliveries_table,
            events: QueuePair::create(&sqs, "dispatch-lambda-events").await,
            deliveries: QueuePair::create(&sqs, "dispatch-lambda-deliveries").await,
        }
    }

    /// The environment of the deployed function, pointed at these resources.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("HOOKS_TABLE", self.hooks_table.clone()),
            ("WINDOWS_TABLE", self.windows_table.clone()),
            ("DELIVERIES_TABLE", self.deliveries_table.clone()),
            ("EVENTS_QUEUE_URL", self.events.url.clone()),
            (
                "EVENTS_DEAD_LETTER_QUEUE_URL",
                self.events.dead_letter_url.clone(),
            ),
            ("DELIVERIES_QUEUE_URL", self.deliveries.url.clone()),
            (
                "DELIVERIES_DEAD_LETTER_QUEUE_URL",
                self.deliveries.dead_letter_url.clone(),
            ),
            // The receiver listens on loopback.
            ("ALLOW_PRIVATE_TARGETS", "true".into()),
            ("RETRY_SCHEDULE", "1s,1s".into()),
            ("HOOKS_CACHE_SECONDS", "0".into()),
            ("STACK_NAME", "event-hooks-test".into()),
        ]
    }

    async fn put(&self, hook: &Hook) {
        self.store
            .put(hook, Precondition::Absent)
            .await
            .unwrap_or_else(|err| panic!("put hook {}: {err}", hook.id));
    }

    /// The only delivery the log holds for `hook_id`.
    async fn only_delivery(&self, hook_id: Uuid) -> DeliveryRecord {
        let page = self
            .log
            .list(hook_id, 10, usize::MAX, None)
            .await
            .expect("list deliveries");
        assert_eq!(page.items.len(), 1, "{page:#?}");
        page.items.into_iter().next().expect("one delivery")
    }
}

/// Starts the dispatch binary with `env`.
pub(crate) async fn start(env: &[(&'static str, String)]) -> FunctionProcess {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    FunctionProcess::start(&function_binary("dispatch"), &env).await
}

/// Invokes the function; any failure to answer ends the test with what the function reported.
pub(crate) async fn invoke(function: &mut FunctionProcess, event: Value) -> Value {
    function
        .invoke(event)
        .await
        .unwrap_or_else(|failure| panic!("{failure}"))
}

fn hook(id: Uuid, source: &str, event: Option<&str>, handler: Handler) -> Hook {
    Hook {
        id,
        created_at: 1_795_400_000,
        updated_at: 1_795_400_000,
        source: source.to_owned(),
        event: event.map(str::to_owned),
        handler,
        snooze: None,
        on_change: None,
        enabled: true,
        name: None,
        tags: Vec::new(),
        delivery: Default::default(),
        disabled_reason: None,
        failing_since: None,
        max_rate: None,
    }
}

fn webhook(url: String, secret: Option<&str>) -> Handler {
    Handler::Webhook(WebhookConfig {
        url,
        headers: BTreeMap::new(),
        secret: secret.map(str::to_owned),
        ssl_verify: true,
        signature: Default::default(),
        previous_secret: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatch_samples_run_through_the_lambda_binary_on_moto() {
    let Some(config) = moto::config() else {
        return;
    };
    // Given fresh tables and queues, a receiver, and hooks put straight into the store: a signed
    // webhook on crud consumers, a log hook on balancer, the sample delivery's hook (on
    // `consumers:update`, so the create event of the batch does not reach it), and a webhook on
    // crud services for the fault path.
    let resources = Resources::create(&config).await;
    let receiver = Receiver::start().await;
    let consumers_hook = hook(
        Uuid::new_v4(),
        "crud",
        Some("consumers"),
        webhook(receiver.url("/hook"), Some(SECRET)),
    );
    let log_hook = hook(Uuid::new_v4(), "balancer", None, Handler::Log(LogConfig {}));
    let sample_hook = hook(
        SAMPLE_HOOK_ID.parse().unwrap(),
        "crud",
        Some("consumers:update"),
        webhook(receiver.url("/sample"), None),
    );
    let flaky_hook = hook(
        Uuid::new_v4(),
        "crud",
        Some("services"),
        webhook(receiver.url("/flaky"), None),
    );
    for hook in [&consumers_hook, &log_hook, &sample_hook, &flaky_hook] {
        resources.put(hook).await;
    }
    let mut function = start(&resources.env()).await;

    // When the events batch sample is handled, then nothing is reported as failed…
    let batch = resources
        .events
        .through(records(&sample("dispatch-events-batch.json")))
        .await;
    let response = invoke(&mut function, batch).await;
    assert_eq!(response, json!({"batchItemFailures": []}));

    // …the receiver got exactly one POST, the crud event, signed, with the delivery headers…
    let requests = receiver.take();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let request = &requests[0];
    assert_eq!(request.method, Method::POST);
    assert_eq!(request.path, "/hook");
    assert_eq!(
        request.header("x-kong-signature"),
        signature(SECRET.as_bytes(), request.body.as_bytes())
    );
    assert_eq!(request.header("x-event-hook-attempt"), "1");
    assert_eq!(request.header("content-type"), "application/json");
    assert!(
        request
            .body
            .contains(r#""event":"consumers","source":"crud""#),
        "{request:#?}"
    );
    let body = request.json();
    assert_eq!(body["operation"], "create");
    assert_eq!(
        body["entity"],
        json!({"id": "8f3c2a1e-4b5d-4e6f-9a7b-0c1d2e3f4a5b", "username": "bob"})
    );
    let delivery_id: Uuid = request
        .header("x-event-hook-delivery")
        .parse()
        .expect("the delivery header is a UUID");

    // …the log holds it as delivered, and the log hook's delivery too, with its line written…
    let delivered = resources.only_delivery(consumers_hook.id).await;
    assert_eq!(delivered.id, delivery_id);
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    assert_eq!(delivered.attempts.len(), 1, "{delivered:#?}");
    assert_eq!(delivered.attempts[0].status, Some(200));
    assert_eq!(delivered.event.source, "crud");
    let fetched = resources
        .log
        .get(consumers_hook.id, delivery_id)
        .await
        .expect("get the delivery");
    assert_eq!(fetched.as_ref(), Some(&delivered));
    let logged = resources.only_delivery(log_hook.id).await;
    assert_eq!(logged.status, DeliveryStatus::Delivered);
    assert_eq!(logged.event.source, "balancer");
    let output = function.output();
    assert!(
        output
            .lines()
            .any(|line| line.contains("event hook log") && line.contains(&log_hook.id.to_string())),
        "no log hook line in the function's output:\n{output}"
    );
    // …and both messages are gone from the events queue.
    assert_eq!(
        receive_all(&resources.events.queue, 1, Duration::from_secs(2)).await,
        Vec::new()
    );

    // When an event of an unregistered source is handled, then it is not reported as failed but
    // parked in the events dead-letter queue with the reason.
    let unknown = sample("dispatch-unknown-source.json");
    let unknown_body = records(&unknown)[0]["body"].clone();
    let batch = resources.events.through(records(&unknown)).await;
    let response = invoke(&mut function, batch).await;
    assert_eq!(response, json!({"batchItemFailures": []}));
    let dead = receive_all(&resources.events.dead_letters, 1, Duration::from_secs(10)).await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0].body, unknown_body.as_str().unwrap());
    assert_eq!(
        dead[0].attributes.get("reason").map(String::as_str),
        Some("source 'nope' is not registered"),
        "{dead:#?}"
    );
    assert_eq!(receiver.take().len(), 0);

    // When the delivery-retry sample is handled, then its hook gets attempt 2 of that delivery.
    let batch = resources
        .deliveries
        .through(records(&sample("dispatch-delivery-retry.json")))
        .await;
    let response = invoke(&mut function, batch).await;
    assert_eq!(response, json!({"batchItemFailures": []}));
    let requests = receiver.take();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].path, "/sample");
    assert_eq!(requests[0].header("x-event-hook-attempt"), "2");
    assert_eq!(
        requests[0].header("x-event-hook-delivery"),
        SAMPLE_DELIVERY_ID
    );
    assert_eq!(requests[0].json()["event"], "consumers:update");
    assert_eq!(requests[0].json()["entity"], json!({"username": "bob"}));
    let retried = resources.only_delivery(sample_hook.id).await;
    assert_eq!(retried.id.to_string(), SAMPLE_DELIVERY_ID);
    assert_eq!(retried.status, DeliveryStatus::Delivered);
    assert_eq!(retried.attempts[0].number, 2);

    // Given the services hook's target fails its next request, when a services event is handled,
    // then the batch still succeeds, the attempt is logged as pending, and a retry is queued.
    receiver.answer_next("/flaky", 500);
    let event = json!({
        "source": "crud",
        "event": "services",
        "data": {"operation": "create", "entity": {"name": "billing"}, "old_entity": null},
    });
    let batch = resources
        .events
        .through(vec![record(&event.to_string())])
        .await;
    let response = invoke(&mut function, batch).await;
    assert_eq!(response, json!({"batchItemFailures": []}));
    let requests = receiver.take();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].path, "/flaky");
    assert_eq!(requests[0].answered, 500);
    assert_eq!(requests[0].header("x-event-hook-attempt"), "1");
    let flaky_delivery = requests[0].header("x-event-hook-delivery").to_owned();
    let pending = resources.only_delivery(flaky_hook.id).await;
    assert_eq!(pending.status, DeliveryStatus::Pending);
    assert_eq!(pending.attempts.len(), 1, "{pending:#?}");
    assert_eq!(pending.attempts[0].status, Some(500));
    // The retry is delayed by about a second (RETRY_SCHEDULE=1s,1s, with jitter).
    let retries = receive_all(&resources.deliveries.queue, 1, Duration::from_secs(10)).await;
    assert_eq!(retries.len(), 1, "{retries:#?}");
    let retry: Value = serde_json::from_str(&retries[0].body).expect("a delivery message");
    assert_eq!(retry["id"], flaky_delivery.as_str());
    assert_eq!(retry["hook_id"], flaky_hook.id.to_string());
    assert_eq!(retry["attempt"], 2);

    // When that retry comes back from the deliveries queue, then the target gets attempt 2 of the
    // same delivery, answers 200, and the log shows it delivered after two attempts.
    let batch = json!({
        "Records": [as_record(record(""), &retries[0], &resources.deliveries.arn)]
    });
    let response = invoke(&mut function, batch).await;
    assert_eq!(response, json!({"batchItemFailures": []}));
    let requests = receiver.take();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].path, "/flaky");
    assert_eq!(requests[0].answered, 200);
    assert_eq!(requests[0].header("x-event-hook-attempt"), "2");
    assert_eq!(requests[0].header("x-event-hook-delivery"), flaky_delivery);
    let delivered = resources.only_delivery(flaky_hook.id).await;
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    let attempts: Vec<(u32, Option<u16>)> = delivered
        .attempts
        .iter()
        .map(|attempt| (attempt.number, attempt.status))
        .collect();
    assert_eq!(attempts, vec![(1, Some(500)), (2, Some(200))]);
    assert_eq!(
        receive_all(&resources.deliveries.queue, 1, Duration::from_secs(3)).await,
        Vec::new(),
        "nothing more to retry"
    );

    // When an event's message comes for the second time (the first handling crashed), then the
    // target sees attempt 2 of the delivery.
    let again = json!({
        "id": Uuid::new_v4(),
        "source": "crud",
        "event": "services",
        "data": {"operation": "create", "entity": {"name": "search"}, "old_entity": null},
    });
    let mut batch = resources
        .events
        .through(vec![record(&again.to_string())])
        .await;
    batch["Records"][0]["attributes"]["ApproximateReceiveCount"] = json!("2");
    let response = invoke(&mut function, batch).await;
    assert_eq!(response, json!({"batchItemFailures": []}));
    let requests = receiver.take();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].header("x-event-hook-attempt"), "2");

    // When a message comes back more often than the queue allows (5), then it is not handled but
    // dead-lettered with the reason, and not reported as failed.
    let mut batch = resources
        .events
        .through(vec![record(&event.to_string())])
        .await;
    batch["Records"][0]["attributes"]["ApproximateReceiveCount"] = json!("6");
    let response = invoke(&mut function, batch).await;
    assert_eq!(response, json!({"batchItemFailures": []}));
    assert_eq!(receiver.take().len(), 0);
    let dead = receive_all(&resources.events.dead_letters, 1, Duration::from_secs(10)).await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0].body, event.to_string());
    assert_eq!(
        dead[0].attributes.get("reason").map(String::as_str),
        Some("received more than 5 times without being handled (the queue's limit)"),
        "{dead:#?}"
    );

    // When a record comes from a queue the function does not know, then it is reported as failed.
    let mut stray = record(&event.to_string());
    stray["eventSourceARN"] = json!("arn:aws:sqs:us-east-1:123456789012:some-other-queue");
    let stray_id = stray["messageId"].as_str().unwrap().to_owned();
    let response = invoke(&mut function, json!({ "Records": [stray] })).await;
    assert_eq!(failed_ids(&response), vec![stray_id]);
    assert_eq!(receiver.take().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_cannot_be_handled_now_is_reported_for_retry() {
    let Some(config) = moto::config() else {
        return;
    };
    // Given the function configured with a hooks table that does not exist.
    let resources = Resources::create(&config).await;
    let mut env = resources.env();
    for (name, value) in &mut env {
        if *name == "HOOKS_TABLE" {
            *value = unique_name("dispatch-lambda-missing");
        }
    }
    let mut function = start(&env).await;

    // When an events batch is handled, then every record is reported as failed, so SQS brings
    // them back.
    let batch = resources
        .events
        .through(records(&sample("dispatch-events-batch.json")))
        .await;
    let mut expected: Vec<String> = records(&batch)
        .iter()
        .map(|record| record["messageId"].as_str().unwrap().to_owned())
        .collect();
    let response = invoke(&mut function, batch).await;
    let mut failed = failed_ids(&response);
    failed.sort();
    expected.sort();
    assert_eq!(failed, expected, "{response}");
    let output = function.output();
    assert!(
        output.contains("message handling failed"),
        "the failure is not logged:\n{output}"
    );
    assert_eq!(
        receive_all(&resources.events.dead_letters, 1, Duration::from_secs(2)).await,
        Vec::new(),
        "an infrastructure failure is not a dead letter"
    );
}

#[tokio::test]
async fn a_missing_windows_table_fails_the_cold_start_naming_the_variable() {
    // Given the function without WINDOWS_TABLE (it fails before touching AWS, so no moto needed).
    let queue = |name: &str| format!("http://127.0.0.1:9/123456789012/{name}");
    let env = vec![
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9".to_owned()),
        ("HOOKS_TABLE", "hooks".to_owned()),
        ("DELIVERIES_TABLE", "deliveries".to_owned()),
        ("EVENTS_QUEUE_URL", queue("events")),
        ("EVENTS_DEAD_LETTER_QUEUE_URL", queue("events-dlq")),
        ("DELIVERIES_QUEUE_URL", queue("deliveries")),
        ("DELIVERIES_DEAD_LETTER_QUEUE_URL", queue("deliveries-dlq")),
    ];
    let mut function = start(&env).await;

    // When it starts, then it fails its init with a message naming the variable.
    let message = match function.init_failure(Duration::from_secs(20)).await {
        Failure::Init { body, .. } => body,
        Failure::Exited { log, .. } => log,
        other => panic!("unexpected failure: {other}"),
    };
    assert!(
        message.contains("WINDOWS_TABLE"),
        "the init failure does not name WINDOWS_TABLE: {message}"
    );
}

/// Endpoint protection in the deployed mode: the dispatch binary disables the hook in DynamoDB
/// and emits the change on the events queue (spec §8 "Beyond").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_hook_in_dynamodb_and_a_failing_hook_is_paused() {
    let Some(config) = moto::config() else {
        return;
    };
    // Given the function with a pause time of 0 s (the second failed attempt pauses), a hook
    // whose target is gone and one whose target fails
    let resources = Resources::create(&config).await;
    let mut env = resources.env();
    env.push(("PAUSE_FAILING_HOOKS_AFTER", "0".into()));
    let mut function = start(&env).await;
    let receiver = Receiver::start().await;
    let gone = hook(
        Uuid::new_v4(),
        "balancer",
        None,
        webhook(receiver.url("/gone"), None),
    );
    let failing = hook(
        Uuid::new_v4(),
        "crud",
        None,
        webhook(receiver.url("/failing"), None),
    );
    resources.put(&gone).await;
    resources.put(&failing).await;
    receiver.answer_next("/gone", 410);
    receiver.answer_next("/failing", 400);
    receiver.answer_next("/failing", 400);

    // When an event reaches each, and then a second one the failing hook
    let body = |source: &str, event: &str| {
        format!(r#"{{"source":"{source}","event":"{event}","data":{{"n":1}}}}"#)
    };
    let batch = resources
        .events
        .through(vec![
            record(&body("balancer", "health")),
            record(&body("crud", "consumers")),
        ])
        .await;
    let response = invoke(&mut function, batch).await;
    assert!(failed_ids(&response).is_empty(), "{response}");
    let stored = resources
        .store
        .get(failing.id)
        .await
        .unwrap()
        .unwrap()
        .value;
    assert!(
        stored.failing_since.is_some() && stored.enabled,
        "{stored:?}"
    );
    // (the change events the first batch emitted, taken off the queue before the next batch)
    let mut changes = receive_all(&resources.events.queue, 2, Duration::from_secs(5)).await;
    let batch = resources
        .events
        .through(vec![record(&body("crud", "consumers"))])
        .await;
    let response = invoke(&mut function, batch).await;
    assert!(failed_ids(&response).is_empty(), "{response}");

    // Then both are disabled in the table, each with its reason
    let reason = |hook: Hook| hook.disabled_reason.expect("a disabled_reason").reason;
    let stored = resources.store.get(gone.id).await.unwrap().unwrap().value;
    assert!(!stored.enabled);
    assert_eq!(reason(stored), "target answered 410 Gone");
    let stored = resources
        .store
        .get(failing.id)
        .await
        .unwrap()
        .unwrap()
        .value;
    assert!(!stored.enabled);
    assert!(reason(stored).starts_with("paused: "));
    // And each change is on the events queue as crud and dao:crud update events
    changes.extend(receive_all(&resources.events.queue, 2, Duration::from_secs(5)).await);
    let updates: Vec<Value> = changes
        .iter()
        .map(|message| serde_json::from_str::<Value>(&message.body).unwrap())
        .filter(|event| event["source"] == "crud" && event["data"]["operation"] == "update")
        .collect();
    assert_eq!(updates.len(), 2, "{changes:#?}");
    // And the delivery that disabled each is dead-lettered with the reason, the log saying so
    let dead = receive_all(
        &resources.deliveries.dead_letters,
        3,
        Duration::from_secs(5),
    )
    .await;
    let reasons: Vec<&str> = dead
        .iter()
        .map(|message| message.attributes["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"the hook was disabled: target answered 410 Gone"),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|reason| reason.starts_with("the hook was disabled: paused: ")),
        "{reasons:?}"
    );
    let record = resources.only_delivery(gone.id).await;
    assert_eq!(record.status, DeliveryStatus::Failed);
    let error = record.attempts[0].error.clone().unwrap_or_default();
    assert!(error.contains("the hook was disabled"), "{error}");
}

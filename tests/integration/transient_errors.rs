//! A dependency that is throttling or unavailable (a transient failure) is a 503 with
//! `Retry-After`, in Kong's shape on Kong routes and Edge's on the Apigee routes; a failure that
//! retrying will not fix (a client error from AWS: our bug) stays a 500.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use event_hooks::admin::{self, AdminPorts, AdminState};
use event_hooks::delivery_log::sqlite::SqliteDeliveryLog;
use event_hooks::model::{CustomEvent, Hook, Versioned};
use event_hooks::queue::sqlite::SqliteQueue;
use event_hooks::queue::{DeadLetterReason, Outgoing, Queue, QueueError, Received};
use event_hooks::snapshot::SnapshotCache;
use event_hooks::sqlite::Database;
use event_hooks::store::sqlite::SqliteHookStore;
use event_hooks::store::{HookFilter, HookStore, Page, PageToken, Precondition, StoreError};
use serde_json::{json, Value};
use uuid::Uuid;

/// When the queue took the events these tests hand the dispatcher (Unix ms).
const SENT_AT: i64 = 1_700_000_000_000;

/// How a fake dependency fails.
#[derive(Clone, Copy)]
enum Failure {
    /// Throttling, a 5xx, a timeout.
    Transient,
    /// A client error: a bug of ours.
    Client,
}

impl Failure {
    fn store(self) -> StoreError {
        match self {
            Failure::Transient => StoreError::Unavailable("ProvisionedThroughputExceeded".into()),
            Failure::Client => StoreError::backend("ValidationException"),
        }
    }

    fn queue(self) -> QueueError {
        match self {
            Failure::Transient => QueueError::Unavailable("ThrottlingException".into()),
            Failure::Client => QueueError::backend("InvalidParameterValue"),
        }
    }
}

/// A hook store whose every call fails.
struct FailingStore(Failure);

#[async_trait]
impl HookStore for FailingStore {
    async fn get(&self, _id: Uuid) -> Result<Option<Versioned<Hook>>, StoreError> {
        Err(self.0.store())
    }
    async fn list(
        &self,
        _filter: &HookFilter,
        _size: usize,
        _after: Option<PageToken>,
    ) -> Result<Page<Hook>, StoreError> {
        Err(self.0.store())
    }
    async fn put(&self, _hook: &Hook, _precondition: Precondition) -> Result<u64, StoreError> {
        Err(self.0.store())
    }
    async fn delete(&self, _id: Uuid) -> Result<Option<Hook>, StoreError> {
        Err(self.0.store())
    }
    async fn put_custom_event(&self, _event: &CustomEvent) -> Result<bool, StoreError> {
        Err(self.0.store())
    }
    async fn delete_custom_event(&self, _source: &str, _event: &str) -> Result<bool, StoreError> {
        Err(self.0.store())
    }
    async fn list_custom_events(&self) -> Result<Vec<CustomEvent>, StoreError> {
        Err(self.0.store())
    }
    async fn version(&self) -> Result<u64, StoreError> {
        Err(self.0.store())
    }
}

/// A queue whose every call fails.
struct FailingQueue(Failure);

#[async_trait]
impl Queue for FailingQueue {
    async fn send(&self, _message: Outgoing) -> Result<String, QueueError> {
        Err(self.0.queue())
    }
    async fn send_batch(&self, _messages: Vec<Outgoing>) -> Result<Vec<String>, QueueError> {
        Err(self.0.queue())
    }
    async fn receive(
        &self,
        _max: u32,
        _visibility: Duration,
        _wait: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        Err(self.0.queue())
    }
    async fn delete(&self, _receipt: &str) -> Result<(), QueueError> {
        Err(self.0.queue())
    }
    async fn dead_letter(
        &self,
        _message: &Received,
        _reason: &DeadLetterReason,
    ) -> Result<(), QueueError> {
        Err(self.0.queue())
    }
}

/// The admin router over `store` and `events`, served on a local port; returns its base URL.
async fn serve(store: Arc<dyn HookStore>, events: Arc<dyn Queue>) -> String {
    let db = Database::in_memory().unwrap();
    let ports = AdminPorts {
        snapshot: Arc::new(SnapshotCache::new(store.clone(), Duration::from_secs(5))),
        store,
        events,
        delivery_log: Arc::new(SqliteDeliveryLog::new(db.clone()).await.unwrap()),
        retries: Arc::new(SqliteQueue::open(db, "deliveries").await.unwrap()),
    };
    let router = admin::router(AdminState::new(ports, Default::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

async fn failing_store(failure: Failure) -> String {
    let db = Database::in_memory().unwrap();
    serve(
        Arc::new(FailingStore(failure)),
        Arc::new(SqliteQueue::open(db, "events").await.unwrap()),
    )
    .await
}

/// Status, `Retry-After` and body of a request.
async fn call(
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Option<String>, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_string());
    (status, retry_after, response.json().await.unwrap())
}

fn assert_kong_unavailable((status, retry_after, body): (u16, Option<String>, Value)) {
    assert_eq!(status, 503, "{body}");
    let seconds: u64 = retry_after.expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&seconds), "{seconds}");
    let object = body.as_object().unwrap();
    assert_eq!(object.len(), 1, "Kong's shape is {{\"message\"}}: {body}");
    assert!(body["message"].as_str().unwrap().contains("retry later"));
}

#[tokio::test]
async fn a_throttled_hook_store_is_a_503_with_retry_after_on_kong_routes() {
    let base = failing_store(Failure::Transient).await;
    let id = Uuid::new_v4();
    assert_kong_unavailable(call(reqwest::Method::GET, format!("{base}/event-hooks"), None).await);
    assert_kong_unavailable(
        call(
            reqwest::Method::GET,
            format!("{base}/event-hooks/{id}"),
            None,
        )
        .await,
    );
    assert_kong_unavailable(
        call(
            reqwest::Method::POST,
            format!("{base}/event-hooks"),
            Some(json!({"source": "crud", "handler": "log"})),
        )
        .await,
    );
    assert_kong_unavailable(
        call(
            reqwest::Method::DELETE,
            format!("{base}/event-hooks/{id}"),
            None,
        )
        .await,
    );
}

#[tokio::test]
async fn a_throttled_hook_store_is_a_503_in_edge_shape_on_apigee_routes() {
    let base = failing_store(Failure::Transient).await;
    let (status, retry_after, body) = call(
        reqwest::Method::GET,
        format!("{base}/v1/mint/organizations/acme/webhooks"),
        None,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(retry_after.is_some(), "Retry-After on the Apigee route too");
    assert_eq!(body["code"], "mint.serviceUnavailable", "{body}");
    assert!(body["message"].is_string(), "{body}");
}

#[tokio::test]
async fn a_client_error_of_the_hook_store_stays_a_500() {
    let base = failing_store(Failure::Client).await;
    let (status, retry_after, body) =
        call(reqwest::Method::GET, format!("{base}/event-hooks"), None).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(retry_after, None);
    assert_eq!(body, json!({"message": "An unexpected error occurred"}));
    let (status, _, body) = call(
        reqwest::Method::GET,
        format!("{base}/v1/mint/organizations/acme/webhooks"),
        None,
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["code"], "mint.internalError", "{body}");
}

#[tokio::test]
async fn a_throttled_events_queue_is_a_503_on_post_events_and_a_client_error_a_500() {
    for (failure, expected) in [(Failure::Transient, 503), (Failure::Client, 500)] {
        let db = Database::in_memory().unwrap();
        let store = Arc::new(SqliteHookStore::new(db).await.unwrap());
        let base = serve(store, Arc::new(FailingQueue(failure))).await;
        let response = call(
            reqwest::Method::POST,
            format!("{base}/events"),
            Some(json!({"source": "crud", "event": "consumers", "operation": "create", "entity": {"id": "1"}})),
        )
        .await;
        if expected == 503 {
            assert_kong_unavailable(response);
        } else {
            assert_eq!(response.0, 500, "{}", response.2);
            assert_eq!(response.1, None);
        }
    }
}

/// A dispatcher whose hook store (its catalogue) fails with `failure`.
async fn dispatcher_over_failing_store(
    failure: Failure,
    db: Database,
) -> event_hooks::dispatch::Dispatcher {
    use event_hooks::dispatch::{DispatchPorts, Dispatcher, Executor};
    use event_hooks::outbound::http::{HttpSender, HttpSettings};
    use event_hooks::windows::sqlite::SqliteWindowStore;
    {
        let store: Arc<dyn HookStore> = Arc::new(FailingStore(failure));
        Dispatcher::new(
            DispatchPorts {
                snapshot: Arc::new(SnapshotCache::new(store.clone(), Duration::ZERO)),
                windows: Arc::new(SqliteWindowStore::new(db.clone()).await.unwrap()),
                log: Arc::new(SqliteDeliveryLog::new(db.clone()).await.unwrap()),
                deliveries: Arc::new(SqliteQueue::open(db.clone(), "deliveries").await.unwrap()),
                dead_letters: Arc::new(SqliteQueue::open(db.clone(), "dead").await.unwrap()),
                executor: Arc::new(Executor::new(
                    HttpSender::new(HttpSettings::default()).unwrap(),
                    event_hooks::lua::Limits::default(),
                )),
                hooks: store,
                events: Arc::new(SqliteQueue::open(db, "events").await.unwrap()),
            },
            Default::default(),
        )
    }
}

#[tokio::test]
async fn a_throttled_hook_store_fails_the_dispatch_record_so_the_queue_brings_it_back() {
    // A record that fails is neither deleted (Done) nor dead-lettered (Reject): SQS delivers it
    // again after its visibility timeout, until the queue's receive bound.
    for failure in [Failure::Transient, Failure::Client] {
        let dispatcher =
            dispatcher_over_failing_store(failure, Database::in_memory().unwrap()).await;
        let body = format!(
            r#"{{"id":"{}","source":"balancer","event":"health","data":{{"ip":"10.0.0.1"}}}}"#,
            Uuid::new_v4()
        );
        let outcome = dispatcher
            .handle_event_message(&body, "message-1", SENT_AT, 1)
            .await;
        match (failure, outcome) {
            (
                Failure::Transient,
                Err(event_hooks::dispatch::DispatchError::Store(StoreError::Unavailable(_))),
            ) => {}
            (
                Failure::Client,
                Err(event_hooks::dispatch::DispatchError::Store(StoreError::Backend(_))),
            ) => {}
            (_, other) => panic!("the record must fail, not {other:?}"),
        }
    }
}

//! One SQS batch as the dispatch function handles it (spec §10), in-process on SQLite: the
//! snooze/on_change decisions for one hook in queue order, the bounded number of attempts in
//! flight, and the invocation deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use event_hooks::delivery_log::sqlite::SqliteDeliveryLog;
use event_hooks::dispatch::batch::{self, Deadline, RecordContext};
use event_hooks::dispatch::{
    worker, worker::Feed, Delivery, DispatchPorts, DispatchSettings, Dispatcher, Executor, Step,
};
use event_hooks::lua::Limits;
use event_hooks::model::Hook;
use event_hooks::outbound::http::{HttpSender, HttpSettings};
use event_hooks::queue::sqlite::SqliteQueue;
use event_hooks::queue::{Queue, Received};
use event_hooks::snapshot::SnapshotCache;
use event_hooks::sqlite::Database;
use event_hooks::store::sqlite::SqliteHookStore;
use event_hooks::store::{HookStore, Precondition, StoreError};
use event_hooks::windows::sqlite::SqliteWindowStore;
use event_hooks::windows::WindowStore;
use event_hooks_tests::receiver::Receiver;
use uuid::Uuid;

/// A window store that holds back the decisions of one claimant (a delivery id) for a while, as
/// a slow network round trip would: without ordering, later events overtake it.
struct HoldBack {
    inner: SqliteWindowStore,
    claimant: Mutex<Option<String>>,
}

#[async_trait]
impl WindowStore for HoldBack {
    async fn claim_window(
        &self,
        key: &str,
        claimant: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.hold(claimant).await;
        self.inner.claim_window(key, claimant, ttl).await
    }

    async fn swap_digest(
        &self,
        key: &str,
        digest: &str,
        claimant: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.hold(claimant).await;
        self.inner.swap_digest(key, digest, claimant, ttl).await
    }
}

impl HoldBack {
    async fn hold(&self, claimant: &str) {
        let held = self.claimant.lock().unwrap().as_deref() == Some(claimant);
        if held {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

struct Fixture {
    dispatcher: Dispatcher,
    store: Arc<dyn HookStore>,
    windows: Arc<HoldBack>,
    deliveries: Arc<SqliteQueue>,
}

async fn fixture(max_in_flight: usize) -> Fixture {
    let db = Database::in_memory().unwrap();
    let store: Arc<dyn HookStore> = Arc::new(SqliteHookStore::new(db.clone()).await.unwrap());
    let deliveries = Arc::new(SqliteQueue::open(db.clone(), "deliveries").await.unwrap());
    let windows = Arc::new(HoldBack {
        inner: SqliteWindowStore::new(db.clone()).await.unwrap(),
        claimant: Mutex::new(None),
    });
    let dispatcher = Dispatcher::new(
        DispatchPorts {
            // Cached for an hour: only the version check can make a change visible.
            snapshot: Arc::new(SnapshotCache::new(store.clone(), Duration::from_secs(3600))),
            windows: windows.clone(),
            log: Arc::new(SqliteDeliveryLog::new(db.clone()).await.unwrap()),
            deliveries: deliveries.clone(),
            dead_letters: Arc::new(SqliteQueue::open(db.clone(), "dead").await.unwrap()),
            executor: Arc::new(Executor::new(
                HttpSender::new(HttpSettings {
                    allow_private_targets: true,
                    ..HttpSettings::default()
                })
                .unwrap(),
                Limits::default(),
            )),
            hooks: store.clone(),
            events: Arc::new(SqliteQueue::open(db, "events").await.unwrap()),
        },
        DispatchSettings {
            max_in_flight,
            park_delay: Duration::from_millis(100),
            ..DispatchSettings::default()
        },
    );
    Fixture {
        dispatcher,
        store,
        windows,
        deliveries,
    }
}

async fn webhook(fixture: &Fixture, url: String, on_change: Option<bool>) -> Hook {
    let hook = Hook {
        on_change,
        ..crate::dispatcher::balancer_webhook(url)
    };
    fixture
        .store
        .put(&hook, Precondition::Absent)
        .await
        .unwrap();
    hook
}

/// An events-queue message carrying a balancer event with this id and target ip.
fn message(id: Uuid, ip: &str) -> Received {
    Received {
        sent_at: 1_700_000_000_000,
        id: id.to_string(),
        receipt: id.to_string(),
        body: format!(
            r#"{{"id":"{id}","source":"balancer","event":"health","data":{{"ip":"{ip}"}}}}"#
        ),
        receive_count: 1,
        attributes: Default::default(),
        group: None,
    }
}

/// Handles `messages` as one batch of the events queue, as the dispatch function does.
async fn handle(fixture: &Fixture, messages: &[Received], deadline: Option<Deadline>) -> Vec<bool> {
    fixture.dispatcher.refresh_hooks().await;
    batch::run(messages.len(), deadline, |position, context| async move {
        worker::outcome_in(
            &fixture.dispatcher,
            Feed::Events,
            &messages[position],
            &context,
        )
        .await
        .is_ok()
    })
    .await
}

#[tokio::test]
async fn on_change_decisions_in_one_batch_follow_queue_order() {
    // Given an on_change hook, and a batch X, X' (same data as X), Y, where X' is slow to decide
    let fixture = fixture(32).await;
    let receiver = Receiver::start().await;
    let hook = webhook(&fixture, receiver.url("/change"), Some(true)).await;
    let (x, x_again, y) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let event =
        |id: Uuid, ip: &str| event_hooks::events::parse_event(&message(id, ip).body).unwrap();
    let held = Delivery::new(&event(x_again, "10.0.0.1"), hook.id).id;
    *fixture.windows.claimant.lock().unwrap() = Some(held.to_string());
    let batch = [
        message(x, "10.0.0.1"),
        message(x_again, "10.0.0.1"),
        message(y, "10.0.0.2"),
    ];

    // When the batch is handled
    let handled = handle(&fixture, &batch, None).await;

    // Then X and Y are delivered, in that order, and X' is dropped as unchanged: 2, not 3
    // (decided out of order, Y before X' makes X' a change again)
    assert_eq!(handled, vec![true; 3]);
    let got = receiver
        .wait_for("/change", 2, Duration::from_secs(5))
        .await;
    let ips: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.json()["ip"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(got.len(), 2, "{ips:?}");
    assert_eq!(ips, ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(fixture.dispatcher.stats.counts().unchanged, 1);
}

#[tokio::test]
async fn a_hook_created_before_the_batch_gets_its_events_despite_the_cache() {
    // Given a dispatcher that loaded its (empty) hooks, cached for an hour
    let fixture = fixture(32).await;
    let receiver = Receiver::start().await;
    handle(&fixture, &[message(Uuid::new_v4(), "10.0.0.9")], None).await;

    // When a hook is created, and then an event comes
    webhook(&fixture, receiver.url("/new"), None).await;
    let handled = handle(&fixture, &[message(Uuid::new_v4(), "10.0.0.1")], None).await;

    // Then the new hook gets it (read-your-writes), with no wait for the cache to age
    assert_eq!(handled, vec![true]);
    let got = receiver.wait_for("/new", 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1);
}

/// A target that answers after a pause, counting how many requests it holds at once.
async fn counting_target() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (n, m) = (now.clone(), most.clone());
    let app = axum::Router::new().fallback(move || {
        let (n, m) = (n.clone(), m.clone());
        async move {
            let inside = n.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(inside, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
            n.fetch_sub(1, Ordering::SeqCst);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, now, most)
}

#[tokio::test]
async fn attempts_in_flight_are_bounded() {
    // Given 8 hooks on one target and at most 3 attempts in flight
    let fixture = fixture(3).await;
    let (url, _, most) = counting_target().await;
    for _ in 0..8 {
        webhook(&fixture, url.clone(), None).await;
    }

    // When a batch of 2 events fans out to them (16 attempts)
    let batch = [
        message(Uuid::new_v4(), "10.0.0.1"),
        message(Uuid::new_v4(), "10.0.0.2"),
    ];
    let handled = handle(&fixture, &batch, None).await;

    // Then all were delivered, never more than 3 at once
    assert_eq!(handled, vec![true; 2]);
    assert_eq!(fixture.dispatcher.stats.counts().delivered, 16);
    let most = most.load(Ordering::SeqCst);
    assert!((1..=3).contains(&most), "{most} attempts in flight at once");
}

#[tokio::test]
async fn attempts_too_close_to_the_deadline_are_parked_not_started() {
    // Given a hook, and a record whose invocation has 5 s left while an attempt needs 15
    let fixture = fixture(32).await;
    let receiver = Receiver::start().await;
    let hook = webhook(&fixture, receiver.url("/late"), None).await;
    let deadline = Deadline {
        at: Instant::now() + Duration::from_secs(5),
        reserve: Duration::from_secs(15),
    };
    let message = message(Uuid::new_v4(), "10.0.0.1");

    // When the record is handled (started, as a record whose batch began in time)
    let outcome = worker::outcome_in(
        &fixture.dispatcher,
        Feed::Events,
        &message,
        &RecordContext {
            turn: None,
            deadline: Some(deadline),
            received: Instant::now(),
        },
    )
    .await
    .unwrap();

    // Then no request was made, and the delivery waits on the deliveries queue for its attempt
    assert_eq!(outcome, event_hooks::dispatch::MessageOutcome::Done);
    assert!(receiver.requests().is_empty());
    let parked = fixture
        .deliveries
        .receive(10, Duration::from_secs(60), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    let delivery: Delivery = serde_json::from_str(&parked[0].body).unwrap();
    assert_eq!(delivery.hook_id, hook.id);
    assert_eq!(delivery.step, Step::Attempt);

    // And a whole batch that starts too late starts nothing: every record is a failure
    let handled = handle(&fixture, std::slice::from_ref(&message), Some(deadline)).await;
    assert_eq!(handled, vec![false]);
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn post_events_accepts_a_custom_event_registered_by_another_instance_at_once() {
    // Given an admin API instance whose catalogue is cached for an hour, and already loaded
    let db = Database::in_memory().unwrap();
    let store: Arc<dyn HookStore> = Arc::new(SqliteHookStore::new(db.clone()).await.unwrap());
    let ports = event_hooks::admin::AdminPorts {
        snapshot: Arc::new(SnapshotCache::new(store.clone(), Duration::from_secs(3600))),
        store: store.clone(),
        events: Arc::new(SqliteQueue::open(db.clone(), "events").await.unwrap()),
        delivery_log: Arc::new(SqliteDeliveryLog::new(db.clone()).await.unwrap()),
        retries: Arc::new(SqliteQueue::open(db, "deliveries").await.unwrap()),
    };
    let state = event_hooks::admin::AdminState::new(ports, Default::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = event_hooks::admin::router(state);
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let http = reqwest::Client::new();
    let emit = || {
        http.post(format!("{base}/events"))
            .json(&serde_json::json!({"source": "shop", "event": "order", "data": {"id": 1}}))
            .send()
    };
    assert_eq!(emit().await.unwrap().status(), 400, "not registered yet");

    // When another instance registers the event (it writes the shared store)
    store
        .put_custom_event(&event_hooks::model::CustomEvent {
            source: "shop".into(),
            event: "order".into(),
            fields: vec!["id".into()],
            unique: None,
            description: None,
        })
        .await
        .unwrap();

    // Then this instance accepts it at once
    assert_eq!(emit().await.unwrap().status(), 202);
}

#[tokio::test]
async fn the_local_worker_decides_in_queue_order_as_the_dispatch_function_does() {
    // Given the batch of `on_change_decisions_in_one_batch_follow_queue_order` (X, X' with X's
    // data and slow to decide, Y) on a queue that the local server's worker consumes
    let Fixture {
        dispatcher,
        store,
        windows,
        deliveries: _,
    } = fixture(32).await;
    let receiver = Receiver::start().await;
    let hook = Hook {
        on_change: Some(true),
        ..crate::dispatcher::balancer_webhook(receiver.url("/change"))
    };
    store.put(&hook, Precondition::Absent).await.unwrap();
    let (x, x_again, y) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let event =
        |id: Uuid, ip: &str| event_hooks::events::parse_event(&message(id, ip).body).unwrap();
    let held = Delivery::new(&event(x_again, "10.0.0.1"), hook.id).id;
    *windows.claimant.lock().unwrap() = Some(held.to_string());
    let incoming = Arc::new(
        SqliteQueue::open(Database::in_memory().unwrap(), "incoming")
            .await
            .unwrap(),
    );
    for (id, ip) in [(x, "10.0.0.1"), (x_again, "10.0.0.1"), (y, "10.0.0.2")] {
        incoming
            .send(event_hooks::queue::Outgoing::now(message(id, ip).body))
            .await
            .unwrap();
    }

    // When the worker runs
    let dispatcher = Arc::new(dispatcher);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(worker::run(
        dispatcher.clone(),
        incoming.clone(),
        Feed::Events,
        worker::WorkerSettings::default(),
        shutdown,
    ));

    // Then, as on AWS, X and Y are delivered in that order and X' is dropped as unchanged
    receiver
        .wait_for("/change", 2, Duration::from_secs(5))
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while dispatcher.stats.counts().unchanged == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    worker.await.unwrap();
    let ips: Vec<String> = receiver
        .requests()
        .iter()
        .map(|r| r.json()["ip"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(ips, ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(dispatcher.stats.counts().unchanged, 1);
}

#[tokio::test]
async fn a_first_copy_that_sends_late_claims_its_number_above_a_copy_already_sent() {
    // Given a hook, and an event message received twice: the second receive (after the first
    // one's visibility lapsed) is handled at once, and sends its claimed number
    let fixture = fixture(32).await;
    let receiver = Receiver::start().await;
    webhook(&fixture, receiver.url("/late-copy"), None).await;
    let first = message(Uuid::new_v4(), "10.0.0.9");
    let second = Received {
        receive_count: 2,
        ..first.clone()
    };
    let fresh = RecordContext {
        turn: None,
        deadline: None,
        received: Instant::now(),
    };
    worker::outcome_in(&fixture.dispatcher, Feed::Events, &second, &fresh)
        .await
        .unwrap();
    receiver
        .wait_for("/late-copy", 1, Duration::from_secs(10))
        .await;

    // When the first receive, which held its message longer than its unclaimed window, sends
    // only now
    let window = DispatchSettings::default().unclaimed_window;
    let late = RecordContext {
        turn: None,
        deadline: None,
        received: Instant::now() - window - Duration::from_secs(1),
    };
    worker::outcome_in(&fixture.dispatcher, Feed::Events, &first, &late)
        .await
        .unwrap();

    // Then it goes out as a later attempt, never below the copy already sent
    let sent = receiver
        .wait_for("/late-copy", 2, Duration::from_secs(10))
        .await;
    let attempts: Vec<u32> = sent
        .iter()
        .map(|r| r.headers["x-event-hook-attempt"].parse().unwrap())
        .collect();
    assert!(attempts[1] > attempts[0], "{attempts:?}");
    assert_eq!(
        sent[0].headers["x-event-hook-delivery"],
        sent[1].headers["x-event-hook-delivery"]
    );
}

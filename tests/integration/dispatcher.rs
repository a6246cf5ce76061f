//! The dispatcher in-process on the embedded adapters: the parts of delivery that are about time,
//! which the HTTP tests cannot wait for.

use std::sync::Arc;
use std::time::Duration;

use event_hooks::deliver::http::{HttpSender, HttpSettings};
use event_hooks::deliveries::sqlite::SqliteDeliveryLog;
use event_hooks::dispatch::{Delivery, DispatchSettings, Dispatcher, Executor, MessageOutcome};
use event_hooks::events::{now_millis, parse_event};
use event_hooks::lua::Limits;
use event_hooks::model::{Handler, Hook, WebhookConfig};
use event_hooks::queue::sqlite::SqliteQueue;
use event_hooks::queue::Queue;
use event_hooks::snapshot::SnapshotCache;
use event_hooks::sqlite::Database;
use event_hooks::store::sqlite::SqliteHookStore;
use event_hooks::store::{HookStore, Precondition};
use event_hooks::windows::sqlite::SqliteWindowStore;
use event_hooks_tests::receiver::Receiver;
use uuid::Uuid;

struct Fixture {
    dispatcher: Dispatcher,
    deliveries: SqliteQueue,
    store: Arc<dyn HookStore>,
}

async fn fixture() -> Fixture {
    let db = Database::in_memory().unwrap();
    let store: Arc<dyn HookStore> = Arc::new(SqliteHookStore::new(db.clone()).await.unwrap());
    let deliveries = SqliteQueue::open(db.clone(), "deliveries").await.unwrap();
    let dead_letters = SqliteQueue::open(db.clone(), "dead").await.unwrap();
    let dispatcher = Dispatcher::new(
        Arc::new(SnapshotCache::new(store.clone(), Duration::ZERO)),
        Arc::new(SqliteWindowStore::new(db.clone()).await.unwrap()),
        Arc::new(SqliteDeliveryLog::new(db).await.unwrap()),
        Arc::new(deliveries.clone()),
        Arc::new(dead_letters),
        Arc::new(Executor::new(
            HttpSender::new(HttpSettings {
                allow_private_targets: true,
                ..HttpSettings::default()
            })
            .unwrap(),
            Limits::default(),
        )),
        DispatchSettings::default(),
    );
    Fixture {
        dispatcher,
        deliveries,
        store,
    }
}

#[tokio::test]
async fn a_retry_due_after_the_queues_longest_delay_is_chained_not_sent_early() {
    // Given a hook and a retry due in 40 minutes (SQS delays stop at 15)
    let fixture = fixture().await;
    let receiver = Receiver::start().await;
    let hook = Hook {
        id: Uuid::new_v4(),
        created_at: 0,
        updated_at: 0,
        source: "balancer".into(),
        event: None,
        handler: Handler::Webhook(WebhookConfig {
            url: receiver.url("/late"),
            headers: Default::default(),
            secret: None,
            ssl_verify: false,
        }),
        snooze: None,
        on_change: None,
        enabled: true,
        name: None,
        tags: vec![],
    };
    fixture
        .store
        .put(&hook, Precondition::Absent)
        .await
        .unwrap();
    let event =
        parse_event(r#"{"source":"balancer","event":"health","data":{"ip":"10.0.0.1"}}"#).unwrap();
    let mut delivery = Delivery::new(&event, hook.id);
    delivery.attempt = 6;
    delivery.not_before = now_millis() + 40 * 60 * 1000;

    // When its message is handled
    let outcome = fixture
        .dispatcher
        .handle_delivery_message(&serde_json::to_string(&delivery).unwrap())
        .await
        .unwrap();

    // Then nothing is sent; the same delivery is back on the queue, not visible yet
    assert_eq!(outcome, MessageOutcome::Done);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(receiver.requests().is_empty());
    let visible = fixture
        .deliveries
        .receive(10, Duration::from_secs(1), Duration::ZERO)
        .await
        .unwrap();
    assert!(visible.is_empty(), "a chained retry must wait: {visible:?}");

    // And once due, it is delivered as the same delivery and attempt
    delivery.not_before = now_millis();
    fixture
        .dispatcher
        .handle_delivery_message(&serde_json::to_string(&delivery).unwrap())
        .await
        .unwrap();
    let sent = receiver.wait_for("/late", 1, Duration::from_secs(5)).await;
    assert_eq!(sent[0].headers["x-event-hook-attempt"], "6");
    assert_eq!(
        sent[0].headers["x-event-hook-delivery"],
        delivery.id.to_string()
    );
}

#[tokio::test]
async fn events_outside_the_catalogue_and_broken_messages_are_rejected_with_a_reason() {
    let fixture = fixture().await;
    for (body, reason) in [
        (
            r#"{"source":"nope","event":"x"}"#,
            "source 'nope' is not registered",
        ),
        ("not json", "the body is not JSON"),
    ] {
        let outcome = fixture.dispatcher.handle_event_message(body).await.unwrap();
        match outcome {
            MessageOutcome::Reject(why) => assert!(why.starts_with(reason), "{why}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    let outcome = fixture
        .dispatcher
        .handle_delivery_message("{}")
        .await
        .unwrap();
    assert!(matches!(outcome, MessageOutcome::Reject(why) if why.starts_with("not a delivery")));
}

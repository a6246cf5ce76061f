//! Endpoint protection (spec §8 "Beyond"): a `410 Gone` disables a hook, a hook failing every
//! attempt for the pause time is paused, and `max_rate` makes deliveries wait, never drops them.
//!
//! The dispatcher cases run in process on the embedded adapters (the fixture of
//! [`crate::dispatcher`]); the stored state (`failing_since`, `enabled`, `disabled_reason`) is
//! checked against both hook-store adapters by the `contract!` cases at the end.

use std::time::{Duration, Instant};

use event_hooks::delivery_log::{DeliveryLog, DeliveryStatus};
use event_hooks::dispatch::protection::{self, Change, Outcome};
use event_hooks::dispatch::{Delivery, MessageOutcome};
use event_hooks::events::now_millis;
use event_hooks::model::{Handler, Hook, LogConfig};
use event_hooks::queue::{Queue, REASON_ATTRIBUTE};
use event_hooks::store::dynamodb::{create_table, DynamoHookStore};
use event_hooks::store::sqlite::SqliteHookStore;
use event_hooks::store::{HookStore, Precondition};
use event_hooks_tests::queues::drain_json;
use event_hooks_tests::receiver::{Receiver, Reply};
use serde_json::Value;
use uuid::Uuid;

use crate::dispatcher::{balancer_event, fixture, webhook_hook, Fixture};

const DAY: i64 = 24 * 3600;

/// Changes the stored hook with `change`, keeping its version check.
async fn change(fixture: &Fixture, id: Uuid, change: impl FnOnce(&mut Hook)) -> Hook {
    let stored = fixture.store.get(id).await.unwrap().unwrap();
    let mut hook = stored.value;
    change(&mut hook);
    fixture
        .store
        .put(&hook, Precondition::Version(stored.version))
        .await
        .unwrap();
    hook
}

async fn stored(fixture: &Fixture, id: Uuid) -> Hook {
    fixture.store.get(id).await.unwrap().unwrap().value
}

/// The crud and dao:crud events on the events queue, as JSON.
async fn change_events(fixture: &Fixture) -> Vec<Value> {
    drain_json(fixture.events.as_ref(), 2, Duration::from_secs(5)).await
}

fn assert_disabled_update(events: &[Value], id: Uuid) {
    assert_eq!(events.len(), 2, "{events:?}");
    let crud = events.iter().find(|e| e["source"] == "crud").unwrap();
    assert_eq!(crud["event"], "event_hooks");
    assert_eq!(crud["data"]["operation"], "update");
    assert_eq!(crud["data"]["entity"]["id"], id.to_string());
    assert_eq!(crud["data"]["entity"]["enabled"], false);
    assert!(crud["data"]["entity"]["disabled_reason"]["at"].is_i64());
    assert_eq!(crud["data"]["old_entity"]["enabled"], true);
    let dao = events.iter().find(|e| e["source"] == "dao:crud").unwrap();
    assert_eq!(dao["event"], "update");
}

#[tokio::test]
async fn a_410_disables_the_hook_and_dead_letters_the_delivery_with_that_reason() {
    // Given a webhook whose target is gone
    let fixture = fixture().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(410)]);
    let hook = webhook_hook(&fixture, receiver.url("/gone"), None).await;
    let (event, _) = balancer_event();
    let delivery_id = Delivery::new(&event, hook.id).id;

    // When an event is dispatched to it
    fixture.dispatcher.dispatch(event, 1).await.unwrap();

    // Then the hook is disabled, saying when and why
    let after = stored(&fixture, hook.id).await;
    assert!(!after.enabled);
    let why = after.disabled_reason.expect("a disabled_reason");
    assert_eq!(why.reason, "target answered 410 Gone");
    assert!((why.at - now_millis() / 1000).abs() < 60, "{}", why.at);
    // And the change is emitted like an admin change
    assert_disabled_update(&change_events(&fixture).await, hook.id);
    // And the delivery is dead-lettered with that reason, not retried
    let dead = fixture.dead_letters.sent();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0].attributes[REASON_ATTRIBUTE],
        "the hook was disabled: target answered 410 Gone"
    );
    assert!(fixture.deliveries.sent().is_empty());
    // And the delivery log shows it
    let record = fixture
        .log
        .get(hook.id, delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.status, DeliveryStatus::Failed);
    let error = record.attempts[0].error.clone().unwrap();
    assert!(error.contains("the hook was disabled"), "{error}");
    assert_eq!(record.attempts[0].status, Some(410));
}

#[tokio::test]
async fn a_hook_failing_every_attempt_for_the_pause_time_is_paused_and_nothing_is_dropped() {
    // Given a hook that has failed every attempt for two days (the default pause time is one)
    let fixture = fixture().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(503)]);
    let hook = webhook_hook(&fixture, receiver.url("/down"), None).await;
    let since = now_millis() / 1000 - 2 * DAY;
    change(&fixture, hook.id, |hook| hook.failing_since = Some(since)).await;
    // And another delivery of it waiting for its retry
    let (waiting_event, _) = balancer_event();
    let mut waiting = Delivery::new(&waiting_event, hook.id);
    waiting.attempt = 3;

    // When its next attempt fails too
    let (event, _) = balancer_event();
    fixture.dispatcher.dispatch(event, 1).await.unwrap();

    // Then the hook is paused, saying so
    let after = stored(&fixture, hook.id).await;
    assert!(!after.enabled);
    let reason = after.disabled_reason.unwrap().reason;
    assert!(
        reason.starts_with("paused: every attempt failed"),
        "{reason}"
    );
    assert_disabled_update(&change_events(&fixture).await, hook.id);
    // And the failed delivery is dead-lettered with that reason instead of retried
    assert!(fixture.deliveries.sent().is_empty());
    let dead = fixture.dead_letters.sent();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let expected = format!("the hook was disabled: {reason}");
    assert_eq!(dead[0].attributes[REASON_ATTRIBUTE], expected);

    // And when the waiting delivery comes back, it is dead-lettered with the same reason
    let outcome = fixture
        .dispatcher
        .handle_delivery_message(&serde_json::to_string(&waiting).unwrap(), 1)
        .await
        .unwrap();
    assert_eq!(outcome, MessageOutcome::Done);
    let dead = fixture.dead_letters.sent();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!(dead[1].attributes[REASON_ATTRIBUTE], expected);
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn the_first_failure_is_remembered_and_a_success_forgets_it() {
    // Given a healthy hook
    let fixture = fixture().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(503), Reply::Status(200)]);
    let hook = webhook_hook(&fixture, receiver.url("/flaky"), None).await;

    // When an attempt fails, the time of the first failure is kept on the hook
    let (event, _) = balancer_event();
    fixture.dispatcher.dispatch(event, 1).await.unwrap();
    let failing = stored(&fixture, hook.id).await;
    let since = failing
        .failing_since
        .expect("failing_since after a failure");
    assert!((since - now_millis() / 1000).abs() < 60);
    assert!(failing.enabled);
    assert_eq!(fixture.deliveries.sent().len(), 1, "retried as usual");

    // And when the next one succeeds, it is forgotten
    let (event, _) = balancer_event();
    fixture.dispatcher.dispatch(event, 1).await.unwrap();
    let healthy = stored(&fixture, hook.id).await;
    assert_eq!(healthy.failing_since, None);
    assert!(healthy.enabled);
    // Bookkeeping is no change worth an event
    assert!(fixture
        .events
        .receive(10, Duration::from_secs(1), Duration::ZERO)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn deliveries_over_max_rate_wait_on_the_queue_and_are_not_dropped() {
    // Given a hook allowed one delivery every 100 s
    let fixture = fixture().await;
    let receiver = Receiver::start().await;
    let hook = webhook_hook(&fixture, receiver.url("/slow"), None).await;
    change(&fixture, hook.id, |hook| hook.max_rate = Some(0.01)).await;

    // When two events come at once
    let (first, _) = balancer_event();
    let (second, _) = balancer_event();
    fixture.dispatcher.dispatch(first, 1).await.unwrap();
    fixture
        .dispatcher
        .dispatch(second.clone(), 1)
        .await
        .unwrap();

    // Then the first is delivered and the second waits on the deliveries queue for its slot,
    // as the same delivery with its first attempt still to make
    receiver.wait_for("/slow", 1, Duration::from_secs(5)).await;
    let waiting = fixture.deliveries.sent();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    let back: Delivery = serde_json::from_str(&waiting[0].body).unwrap();
    assert_eq!(back.id, Delivery::new(&second, hook.id).id);
    assert_eq!(back.attempt, 1);
    assert!(waiting[0].delay >= Duration::from_secs(90), "{waiting:?}");
    assert!(back.not_before >= now_millis() + 90_000);
    assert!(fixture.dead_letters.sent().is_empty());
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn deliveries_over_the_rate_wait_on_the_queue_for_their_own_slot_once() {
    // Given a hook allowed 5 deliveries a second
    let fixture = fixture().await;
    let receiver = Receiver::start().await;
    let hook = webhook_hook(&fixture, receiver.url("/spaced"), None).await;
    change(&fixture, hook.id, |hook| hook.max_rate = Some(5.0)).await;

    // When four events come at once
    let [a, b, c, d] = [(); 4].map(|_| balancer_event().0);
    let dispatcher = &fixture.dispatcher;
    let results = tokio::join!(
        dispatcher.dispatch(a, 1),
        dispatcher.dispatch(b, 1),
        dispatcher.dispatch(c, 1),
        dispatcher.dispatch(d, 1),
    );
    for result in [results.0, results.1, results.2, results.3] {
        result.unwrap();
    }

    // Then the first is delivered at once, and the others wait on the deliveries queue, in
    // their hook's group, for the slots reserved for them: 200, 400 and 600 ms on (less the
    // time since they were reserved); nothing sleeps in process holding a slot
    assert_eq!(receiver.requests().len(), 1);
    let waiting = fixture.deliveries.sent();
    assert_eq!(waiting.len(), 3, "{waiting:?}");
    let mut delays: Vec<Duration> = waiting.iter().map(|m| m.delay).collect();
    delays.sort();
    for (n, delay) in delays.iter().enumerate() {
        let slot = Duration::from_millis(200 * (n as u64 + 1));
        assert!(
            *delay <= slot && *delay + Duration::from_millis(150) >= slot,
            "{delays:?}"
        );
    }
    let hook_group = hook.id.to_string();
    assert!(waiting
        .iter()
        .all(|m| m.group.as_deref() == Some(hook_group.as_str())));

    // And when they come back, each takes its slot without asking the limiter again: delivered,
    // none sent back a second time
    for message in &waiting {
        let back: Delivery = serde_json::from_str(&message.body).unwrap();
        assert!(back.rate_slot);
        assert_eq!(back.attempt, 1);
        let outcome = dispatcher
            .handle_delivery_message(&message.body, 1)
            .await
            .unwrap();
        assert_eq!(outcome, MessageOutcome::Done);
    }
    assert_eq!(receiver.requests().len(), 4);
    assert_eq!(fixture.deliveries.sent().len(), 3);
}

// ---------------------------------------------------------------------------------------------
// The stored state, on both hook-store adapters
// ---------------------------------------------------------------------------------------------

async fn moto_store() -> Option<DynamoHookStore> {
    let config = event_hooks_tests::moto::config()?;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = event_hooks_tests::moto::unique_name("hooks");
    create_table(&client, &table)
        .await
        .expect("create the table on moto");
    Some(DynamoHookStore::new(client, table))
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let db = event_hooks::sqlite::Database::in_memory().unwrap();
                    let store = super::SqliteHookStore::new(db).await.unwrap();
                    super::$case(&store).await;
                }
            )*
        }

        mod moto {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(store) = super::moto_store().await else {
                        return;
                    };
                    super::$case(&store).await;
                }
            )*
        }
    };
}

contract!(
    failing_since_is_stored_and_cleared,
    a_disabled_hook_is_stored_with_its_reason,
    protection_leaves_deleted_and_disabled_hooks_alone,
);

fn log_hook() -> Hook {
    Hook {
        id: Uuid::new_v4(),
        created_at: 1,
        updated_at: 1,
        source: "crud".into(),
        event: None,
        handler: Handler::Log(LogConfig {}),
        snooze: None,
        on_change: None,
        enabled: true,
        name: Some(format!("protected-{}", Uuid::new_v4())),
        tags: vec![],
        delivery: Default::default(),
        disabled_reason: None,
        failing_since: None,
        max_rate: Some(2.5),
    }
}

const PAUSE: Duration = Duration::from_secs(DAY as u64);

async fn failing_since_is_stored_and_cleared(store: &dyn HookStore) {
    let hook = log_hook();
    store.put(&hook, Precondition::Absent).await.unwrap();
    let change = protection::record(store, hook.id, Outcome::Failed, 1_000, PAUSE).await;
    assert_eq!(change.unwrap(), Change::Tracked);
    let failing = store.get(hook.id).await.unwrap().unwrap().value;
    assert_eq!(failing.failing_since, Some(1_000));
    assert_eq!(failing.max_rate, Some(2.5));
    // A later failure within the pause time keeps the first time
    let change = protection::record(store, hook.id, Outcome::Failed, 2_000, PAUSE).await;
    assert_eq!(change.unwrap(), Change::None);
    let change = protection::record(store, hook.id, Outcome::Delivered, 3_000, PAUSE).await;
    assert_eq!(change.unwrap(), Change::Tracked);
    let healthy = store.get(hook.id).await.unwrap().unwrap().value;
    assert_eq!(healthy, hook);
}

async fn a_disabled_hook_is_stored_with_its_reason(store: &dyn HookStore) {
    let hook = log_hook();
    store.put(&hook, Precondition::Absent).await.unwrap();
    let change = protection::record(store, hook.id, Outcome::Gone, 5_000, PAUSE)
        .await
        .unwrap();
    let Change::Disabled { old, new } = change else {
        panic!("{change:?}");
    };
    assert_eq!(*old, hook);
    let stored = store.get(hook.id).await.unwrap().unwrap().value;
    assert_eq!(stored, *new);
    assert!(!stored.enabled);
    let why = stored.disabled_reason.unwrap();
    assert_eq!(
        (why.at, why.reason.as_str()),
        (5_000, "target answered 410 Gone")
    );
}

async fn protection_leaves_deleted_and_disabled_hooks_alone(store: &dyn HookStore) {
    let change = protection::record(store, Uuid::new_v4(), Outcome::Gone, 1, PAUSE).await;
    assert_eq!(change.unwrap(), Change::None);
    let mut hook = log_hook();
    hook.enabled = false;
    store.put(&hook, Precondition::Absent).await.unwrap();
    let change = protection::record(store, hook.id, Outcome::Gone, 1, PAUSE).await;
    assert_eq!(change.unwrap(), Change::None);
    assert_eq!(store.get(hook.id).await.unwrap().unwrap().value, hook);
}

// ---------------------------------------------------------------------------------------------
// Over HTTP, on the local server
// ---------------------------------------------------------------------------------------------

async fn call(method: reqwest::Method, url: String, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_local_server_disables_a_gone_hook_and_shows_why() {
    use event_hooks_tests::server::LocalServer;
    use reqwest::Method;
    let server = LocalServer::in_process(&[]);
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(410)]);

    // A bad max_rate is a Kong-shaped schema violation, nothing stored
    let (status, body) = call(
        Method::POST,
        server.url("/event-hooks"),
        Some(serde_json::json!({"source":"balancer","handler":"log","max_rate":0})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"code":2,"name":"schema violation",
            "message":"schema violation (max_rate: value must be greater than 0)",
            "fields":{"max_rate":"value must be greater than 0"}})
    );

    // Given a webhook hook (the new fields are served, null by default, max_rate as given)
    let (status, hook) = call(
        Method::POST,
        server.url("/event-hooks"),
        Some(
            serde_json::json!({"source":"balancer","handler":"webhook","max_rate":50,
            "config":{"url": receiver.url("/gone")}}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    assert_eq!(hook["disabled_reason"], Value::Null);
    assert_eq!(hook["failing_since"], Value::Null);
    assert_eq!(hook["max_rate"], 50.0);
    let url = server.url(&format!("/event-hooks/{}", hook["id"].as_str().unwrap()));

    // When its target answers 410 to an event
    let (status, _) = call(
        Method::POST,
        server.url("/events"),
        Some(serde_json::json!({"source":"balancer","event":"health","data":{"ip":"10.0.0.1"}})),
    )
    .await;
    assert_eq!(status, 202);
    receiver.wait_for("/gone", 1, Duration::from_secs(10)).await;

    // Then GET shows it disabled, with when and why (within the time the dispatcher takes)
    let deadline = Instant::now() + Duration::from_secs(10);
    let disabled = loop {
        let (_, hook) = call(Method::GET, url.clone(), None).await;
        if hook["enabled"] == false || Instant::now() > deadline {
            break hook;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(disabled["enabled"], false, "{disabled}");
    assert_eq!(
        disabled["disabled_reason"]["reason"],
        "target answered 410 Gone"
    );
    assert!(disabled["disabled_reason"]["at"].is_i64());

    // And re-enabling it clears the reason
    let (status, enabled) = call(
        Method::PATCH,
        url.clone(),
        Some(serde_json::json!({"enabled": true})),
    )
    .await;
    assert_eq!(status, 200, "{enabled}");
    assert_eq!(enabled["disabled_reason"], Value::Null);
    assert_eq!(enabled["max_rate"], 50.0);
}

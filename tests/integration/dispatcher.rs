//! The dispatcher in-process on the embedded adapters: the parts of delivery that are about time,
//! which the HTTP tests cannot wait for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use event_hooks::delivery_log::sqlite::SqliteDeliveryLog;
use event_hooks::dispatch::{
    DeadLetterReason, Delivery, DispatchError, DispatchPorts, DispatchSettings, Dispatcher,
    Executor, MessageOutcome, Step,
};
use event_hooks::events::{now_millis, parse_event, Event};
use event_hooks::lua::Limits;
use event_hooks::model::{Handler, Hook, WebhookConfig};
use event_hooks::outbound::http::{HttpSender, HttpSettings};
use event_hooks::outbound::retry::REQUEUES_PER_ATTEMPT;
use event_hooks::queue::sqlite::SqliteQueue;
use event_hooks::queue::{Outgoing, Queue, QueueError, Received, MAX_DELAY, REASON_ATTRIBUTE};
use event_hooks::snapshot::SnapshotCache;
use event_hooks::sqlite::Database;
use event_hooks::store::sqlite::SqliteHookStore;
use event_hooks::store::{HookStore, Precondition, StoreError};
use event_hooks::windows::sqlite::SqliteWindowStore;
use event_hooks::windows::WindowStore;
use event_hooks_tests::queues::drain;
use event_hooks_tests::receiver::{Receiver, Reply};
use uuid::Uuid;

/// When the queue took the events these tests hand the dispatcher (Unix ms).
const SENT_AT: i64 = 1_700_000_000_000;

const WAIT: Duration = Duration::from_secs(5);

/// A window store that fails every write about one hook (its keys name the hook), while the
/// others pass through: an infrastructure failure that hits one hook only.
struct FailingFor {
    inner: SqliteWindowStore,
    hook: Mutex<Option<Uuid>>,
}

impl FailingFor {
    fn check(&self, key: &str) -> Result<(), StoreError> {
        match *self.hook.lock().unwrap() {
            Some(hook) if key.contains(&hook.to_string()) => Err(StoreError::backend(
                "the window store is down for this hook",
            )),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl WindowStore for FailingFor {
    async fn claim_window(
        &self,
        key: &str,
        claimant: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.check(key)?;
        self.inner.claim_window(key, claimant, ttl).await
    }

    async fn swap_digest(
        &self,
        key: &str,
        digest: &str,
        claimant: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.check(key)?;
        self.inner.swap_digest(key, digest, claimant, ttl).await
    }
}

/// A queue whose sends fail while it is down; everything else passes through. It keeps a copy
/// of every message it accepted, so a test can see a delayed message before it is visible.
pub(crate) struct Switched {
    inner: SqliteQueue,
    down: AtomicBool,
    sent: Mutex<Vec<Outgoing>>,
}

impl Switched {
    fn new(inner: SqliteQueue) -> Switched {
        Switched {
            inner,
            down: AtomicBool::new(false),
            sent: Mutex::new(Vec::new()),
        }
    }

    fn check(&self) -> Result<(), QueueError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(QueueError::backend("the queue is down"));
        }
        Ok(())
    }

    /// Every message sent so far, oldest first.
    pub(crate) fn sent(&self) -> Vec<Outgoing> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait]
impl Queue for Switched {
    async fn send(&self, message: Outgoing) -> Result<String, QueueError> {
        self.check()?;
        let id = self.inner.send(message.clone()).await?;
        self.sent.lock().unwrap().push(message);
        Ok(id)
    }

    async fn send_batch(&self, messages: Vec<Outgoing>) -> Result<Vec<String>, QueueError> {
        self.check()?;
        let ids = self.inner.send_batch(messages.clone()).await?;
        self.sent.lock().unwrap().extend(messages);
        Ok(ids)
    }

    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        self.inner.receive(max, visibility, wait).await
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.inner.delete(receipt).await
    }

    async fn dead_letter(
        &self,
        message: &Received,
        reason: &DeadLetterReason,
    ) -> Result<(), QueueError> {
        self.inner.dead_letter(message, reason).await
    }
}

/// The dispatcher on in-memory SQLite, with handles on everything it writes to (also used by
/// the endpoint-protection tests).
pub(crate) struct Fixture {
    pub(crate) dispatcher: Dispatcher,
    windows: Arc<FailingFor>,
    pub(crate) deliveries: Arc<Switched>,
    pub(crate) dead_letters: Arc<Switched>,
    pub(crate) store: Arc<dyn HookStore>,
    pub(crate) events: Arc<SqliteQueue>,
    pub(crate) log: Arc<SqliteDeliveryLog>,
}

pub(crate) async fn fixture() -> Fixture {
    fixture_with(DispatchSettings {
        park_delay: Duration::from_millis(100),
        ..DispatchSettings::default()
    })
    .await
}

/// [`fixture`] with these settings.
pub(crate) async fn fixture_with(settings: DispatchSettings) -> Fixture {
    let db = Database::in_memory().unwrap();
    let store: Arc<dyn HookStore> = Arc::new(SqliteHookStore::new(db.clone()).await.unwrap());
    let deliveries = Arc::new(Switched::new(
        SqliteQueue::open(db.clone(), "deliveries").await.unwrap(),
    ));
    let dead_letters = Arc::new(Switched::new(
        SqliteQueue::open(db.clone(), "dead").await.unwrap(),
    ));
    let events = Arc::new(SqliteQueue::open(db.clone(), "events").await.unwrap());
    let log = Arc::new(SqliteDeliveryLog::new(db.clone()).await.unwrap());
    let windows = Arc::new(FailingFor {
        inner: SqliteWindowStore::new(db.clone()).await.unwrap(),
        hook: Mutex::new(None),
    });
    let dispatcher = Dispatcher::new(
        DispatchPorts {
            snapshot: Arc::new(SnapshotCache::new(store.clone(), Duration::ZERO)),
            windows: windows.clone(),
            log: log.clone(),
            deliveries: deliveries.clone(),
            dead_letters: dead_letters.clone(),
            executor: Arc::new(Executor::new(
                HttpSender::new(HttpSettings {
                    allow_private_targets: true,
                    ..HttpSettings::default()
                })
                .unwrap(),
                Limits::default(),
            )),
            hooks: store.clone(),
            events: events.clone(),
        },
        settings,
    );
    Fixture {
        dispatcher,
        windows,
        deliveries,
        dead_letters,
        store,
        events,
        log,
    }
}

/// A webhook hook on `balancer` events posting to `url`, not stored yet.
pub(crate) fn balancer_webhook(url: String) -> Hook {
    Hook {
        id: Uuid::new_v4(),
        created_at: 0,
        updated_at: 0,
        source: "balancer".into(),
        event: None,
        handler: Handler::Webhook(WebhookConfig {
            url,
            headers: Default::default(),
            secret: None,
            ssl_verify: false,
            signature: Default::default(),
            previous_secret: None,
        }),
        snooze: None,
        on_change: None,
        enabled: true,
        name: None,
        tags: vec![],
        delivery: Default::default(),
        disabled_reason: None,
        failing_since: None,
        max_rate: None,
    }
}

/// A webhook hook on `balancer` events posting to `url`, stored.
pub(crate) async fn webhook_hook(fixture: &Fixture, url: String, snooze: Option<u32>) -> Hook {
    let hook = Hook {
        snooze,
        ..balancer_webhook(url)
    };
    fixture
        .store
        .put(&hook, Precondition::Absent)
        .await
        .unwrap();
    hook
}

/// A balancer event with its own id, so that its delivery ids are known in advance, and no
/// timestamp: the dispatcher gives it the message's, `SENT_AT`, as the returned event has.
pub(crate) fn balancer_event() -> (Event, String) {
    let body = format!(
        r#"{{"id":"{}","source":"balancer","event":"health","data":{{"ip":"10.0.0.1"}}}}"#,
        Uuid::new_v4()
    );
    let event = Event {
        timestamp: SENT_AT,
        ..parse_event(&body).unwrap()
    };
    (event, body)
}

#[tokio::test]
async fn a_retry_due_after_the_queues_longest_delay_is_chained_not_sent_early() {
    // Given a hook and a retry due in 40 minutes (SQS delays stop at 15)
    let fixture = fixture().await;
    let receiver = Receiver::start().await;
    let hook = webhook_hook(&fixture, receiver.url("/late"), None).await;
    let event =
        parse_event(r#"{"source":"balancer","event":"health","data":{"ip":"10.0.0.1"}}"#).unwrap();
    let mut delivery = Delivery::new(&event, hook.id);
    delivery.attempt = 6;
    delivery.not_before = now_millis() + 40 * 60 * 1000;

    // When its message is handled
    let outcome = fixture
        .dispatcher
        .handle_delivery_message(&serde_json::to_string(&delivery).unwrap(), 1)
        .await
        .unwrap();

    // Then nothing is sent to the hook
    assert_eq!(outcome, MessageOutcome::Done);
    // Handling has returned, and it awaits every attempt it makes until answered: the
    // targets have seen all they will.
    assert!(receiver.requests().is_empty());
    // And the same delivery (id, attempt, due time) is back on the deliveries queue, delayed as
    // long as the queue allows, so it is handled again in 15 minutes and chained once more
    let requeued = fixture.deliveries.sent();
    assert_eq!(
        requeued.len(),
        1,
        "the delivery must be re-queued, not dropped: {requeued:?}"
    );
    assert_eq!(requeued[0].delay, MAX_DELAY);
    let back: Delivery = serde_json::from_str(&requeued[0].body).unwrap();
    assert_eq!(back, delivery);
    let visible = fixture
        .deliveries
        .inner
        .receive(10, Duration::from_secs(1), Duration::ZERO)
        .await
        .unwrap();
    assert!(visible.is_empty(), "a chained retry must wait: {visible:?}");

    // And when the re-queued message is handled once due, it is delivered as the same delivery
    // and attempt (the queue's delays are not waited out here: its due time is moved instead)
    let mut due = back;
    due.not_before = now_millis();
    fixture
        .dispatcher
        .handle_delivery_message(&serde_json::to_string(&due).unwrap(), 1)
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
        let outcome = fixture
            .dispatcher
            .handle_event_message(body, "message-1", SENT_AT, 1)
            .await
            .unwrap();
        match outcome {
            MessageOutcome::Reject(why) => {
                assert!(why.to_string().starts_with(reason), "{why}")
            }
            other => panic!("{body}: {other:?}"),
        }
    }
    let outcome = fixture
        .dispatcher
        .handle_delivery_message("{}", 1)
        .await
        .unwrap();
    assert!(
        matches!(outcome, MessageOutcome::Reject(DeadLetterReason::Unparseable(why)) if why.starts_with("not a delivery"))
    );
}

#[tokio::test]
async fn a_window_store_failing_for_one_hook_parks_its_delivery_and_spares_the_other() {
    // Given two snoozed hooks on one event, and a window store that fails for hook B only
    let fixture = fixture().await;
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    webhook_hook(&fixture, a.url("/a"), Some(60)).await;
    let hook_b = webhook_hook(&fixture, b.url("/b"), Some(60)).await;
    *fixture.windows.hook.lock().unwrap() = Some(hook_b.id);
    let (event, body) = balancer_event();

    // When the event's message is handled
    let outcome = fixture
        .dispatcher
        .handle_event_message(&body, "message-1", SENT_AT, 1)
        .await;

    // Then the event completes, A is served once, B is not served but parked on the deliveries
    // queue, at the attempt it was at, with its window decision still to make
    assert_eq!(outcome.unwrap(), MessageOutcome::Done);
    assert_eq!(a.wait_for("/a", 1, WAIT).await.len(), 1);
    assert!(b.requests().is_empty());
    let parked = drain(&fixture.deliveries.inner, 1, WAIT).await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    let delivery: Delivery = serde_json::from_str(&parked[0].body).unwrap();
    assert_eq!(delivery.id, Delivery::new(&event, hook_b.id).id);
    assert_eq!((delivery.attempt, &delivery.step), (1, &Step::Decide));

    // And once the store works again, the parked delivery is decided and delivered, to B only
    *fixture.windows.hook.lock().unwrap() = None;
    let outcome = fixture
        .dispatcher
        .handle_delivery_message(&parked[0].body, parked[0].receive_count)
        .await;
    assert_eq!(outcome.unwrap(), MessageOutcome::Done);
    let sent = b.wait_for("/b", 1, WAIT).await;
    assert_eq!(
        sent[0].headers["x-event-hook-delivery"],
        delivery.id.to_string()
    );
    // Parked before its first attempt, it claimed its number (its event may have been fanned
    // out again meanwhile), and a claim never gets 1.
    assert_eq!(sent[0].headers["x-event-hook-attempt"], "2");
    // Handling has returned, and it awaits every attempt it makes until answered: the
    // targets have seen all they will.
    assert_eq!(a.requests().len(), 1, "A was served again");
    let left = fixture
        .deliveries
        .inner
        .receive(10, Duration::from_secs(60), Duration::from_millis(300))
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn a_dead_letter_send_failing_parks_the_dead_letter_not_another_attempt() {
    // Given two hooks on one event, B's target answering 404 (a failure not retried), and the dead-letter queue down
    let fixture = fixture().await;
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    webhook_hook(&fixture, a.url("/a"), None).await;
    let hook_b = webhook_hook(&fixture, b.url("/b"), None).await;
    b.script([Reply::Status(404)]);
    fixture.dead_letters.down.store(true, Ordering::SeqCst);
    let (_, body) = balancer_event();

    // When the event's message is handled
    let outcome = fixture
        .dispatcher
        .handle_event_message(&body, "message-1", SENT_AT, 1)
        .await;

    // Then the event completes, each target got one request, and B's dead letter is parked
    assert_eq!(outcome.unwrap(), MessageOutcome::Done);
    assert_eq!(a.wait_for("/a", 1, WAIT).await.len(), 1);
    assert_eq!(b.wait_for("/b", 1, WAIT).await.len(), 1);
    let parked = drain(&fixture.deliveries.inner, 1, WAIT).await;
    assert_eq!(parked.len(), 1, "{parked:?}");
    let delivery: Delivery = serde_json::from_str(&parked[0].body).unwrap();
    assert_eq!(delivery.hook_id, hook_b.id);
    assert!(
        matches!(&delivery.step, Step::DeadLetter { reason: DeadLetterReason::Failed(why) } if why.contains("404")),
        "{delivery:?}"
    );

    // And once the dead-letter queue is back, the parked message lands there with its reason,
    // in the one dead-letter format, and B's target is not called again
    fixture.dead_letters.down.store(false, Ordering::SeqCst);
    let outcome = fixture
        .dispatcher
        .handle_delivery_message(&parked[0].body, 1)
        .await;
    assert_eq!(outcome.unwrap(), MessageOutcome::Done);
    let dead = drain(&fixture.dead_letters.inner, 1, WAIT).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let letter: Delivery = serde_json::from_str(&dead[0].body).unwrap();
    assert_eq!((letter.id, &letter.step), (delivery.id, &Step::Attempt));
    assert_eq!(
        letter.attempt, 2,
        "a dead letter carries the attempt to make next"
    );
    assert_eq!(
        dead[0].attributes.get(REASON_ATTRIBUTE).map(String::as_str),
        Some("target answered 404 Not Found")
    );
    // Handling has returned, and it awaits every attempt it makes until answered: the
    // targets have seen all they will.
    assert_eq!(b.requests().len(), 1);
    assert_eq!(a.requests().len(), 1);
}

#[tokio::test]
async fn when_parking_fails_too_the_event_comes_back_and_skips_the_hooks_already_served() {
    // Given two snoozed hooks, a window store failing for B, and the deliveries queue down
    let fixture = fixture().await;
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    let hook_a = webhook_hook(&fixture, a.url("/a"), Some(60)).await;
    let hook_b = webhook_hook(&fixture, b.url("/b"), Some(60)).await;
    *fixture.windows.hook.lock().unwrap() = Some(hook_b.id);
    fixture.deliveries.down.store(true, Ordering::SeqCst);
    let (event, body) = balancer_event();

    // When the event's message is handled, then it fails, naming B: the message stays queued
    let outcome = fixture
        .dispatcher
        .handle_event_message(&body, "message-1", SENT_AT, 1)
        .await;
    assert!(
        matches!(outcome, Err(DispatchError::Parking { hook_id, .. }) if hook_id == hook_b.id),
        "{outcome:?}"
    );
    assert_eq!(a.wait_for("/a", 1, WAIT).await.len(), 1);

    // When it comes back (received a second time) with everything working again
    *fixture.windows.hook.lock().unwrap() = None;
    fixture.deliveries.down.store(false, Ordering::SeqCst);
    let outcome = fixture
        .dispatcher
        .handle_event_message(&body, "message-1", SENT_AT, 2)
        .await;

    // Then B gets it as attempt 2 of its delivery, and A, already served, is skipped
    assert_eq!(outcome.unwrap(), MessageOutcome::Done);
    let sent = b.wait_for("/b", 1, WAIT).await;
    assert_eq!(sent[0].headers["x-event-hook-attempt"], "2");
    assert_eq!(
        sent[0].headers["x-event-hook-delivery"],
        Delivery::new(&event, hook_b.id).id.to_string()
    );
    // Handling has returned, and it awaits every attempt it makes until answered: the
    // targets have seen all they will.
    assert_eq!(a.requests().len(), 1, "hook {} served twice", hook_a.id);
}

#[tokio::test]
async fn attempt_numbers_count_the_receives_of_the_message() {
    // Given a hook and an event whose message is received for the second time (the first
    // handling crashed before anything was logged)
    let fixture = fixture().await;
    let receiver = Receiver::start().await;
    let hook = webhook_hook(&fixture, receiver.url("/h"), None).await;
    let (event, body) = balancer_event();

    // When it is handled
    let outcome = fixture
        .dispatcher
        .handle_event_message(&body, "message-1", SENT_AT, 2)
        .await;

    // Then the target sees attempt 2 of the same delivery
    assert_eq!(outcome.unwrap(), MessageOutcome::Done);
    let sent = receiver.wait_for("/h", 1, WAIT).await;
    assert_eq!(sent[0].headers["x-event-hook-attempt"], "2");
    let id = Delivery::new(&event, hook.id).id.to_string();
    assert_eq!(sent[0].headers["x-event-hook-delivery"], id);

    // And a retry message for attempt 3, received for the third time, is sent as attempt 5
    let mut retry = Delivery::new(&event, hook.id);
    retry.attempt = 3;
    retry.not_before = now_millis();
    let outcome = fixture
        .dispatcher
        .handle_delivery_message(&serde_json::to_string(&retry).unwrap(), 3)
        .await;
    assert_eq!(outcome.unwrap(), MessageOutcome::Done);
    let sent = receiver.wait_for("/h", 2, WAIT).await;
    assert_eq!(sent[1].headers["x-event-hook-attempt"], "5");
    assert_eq!(sent[1].headers["x-event-hook-delivery"], id);
}

#[tokio::test]
async fn a_second_copy_of_a_delivery_goes_out_as_a_later_attempt_never_the_same() {
    // Given a hook whose target fails once, and an event whose first attempt fails: its record
    // reserves attempt 2 for the retry it queues
    let fixture = fixture().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500)]);
    let hook = webhook_hook(&fixture, receiver.url("/h"), None).await;
    let (event, body) = balancer_event();
    let first = fixture
        .dispatcher
        .handle_event_message(&body, "message-1", SENT_AT, 1)
        .await;
    assert_eq!(first.unwrap(), MessageOutcome::Done);
    let retry = drain(&fixture.deliveries.inner, 1, WAIT).await;

    // When a second copy of the event comes while the retry waits (its message handed out again,
    // or sent again after a lost reply: either way it may have been handled before)
    let copy = fixture
        .dispatcher
        .handle_event_message(&body, "message-1", SENT_AT, 2)
        .await;
    assert_eq!(copy.unwrap(), MessageOutcome::Done);
    // And the retry runs
    let outcome = fixture
        .dispatcher
        .handle_delivery_message(&retry[0].body, 1)
        .await;
    assert_eq!(outcome.unwrap(), MessageOutcome::Done);

    // Then the target sees the one delivery three times, as attempts 1, 2 and 3: the copy
    // claimed the number above the retry's
    let sent = receiver.wait_for("/h", 3, WAIT).await;
    let id = Delivery::new(&event, hook.id).id.to_string();
    let mut attempts: Vec<&str> = sent
        .iter()
        .map(|r| {
            assert_eq!(r.headers["x-event-hook-delivery"], id);
            r.headers["x-event-hook-attempt"].as_str()
        })
        .collect();
    attempts.sort_unstable();
    assert_eq!(attempts, ["1", "2", "3"]);
}

#[tokio::test]
async fn a_delivery_parked_before_its_attempt_goes_out_above_a_copy_fanned_out_meanwhile() {
    // Given a snoozed hook whose window store is down: the event's delivery is parked
    let fixture = fixture().await;
    let receiver = Receiver::start().await;
    let hook = webhook_hook(&fixture, receiver.url("/parked"), Some(60)).await;
    *fixture.windows.hook.lock().unwrap() = Some(hook.id);
    let (_, body) = balancer_event();
    let first = fixture
        .dispatcher
        .handle_event_message(&body, "message-1", SENT_AT, 1)
        .await;
    assert_eq!(first.unwrap(), MessageOutcome::Done);
    let parked = fixture.deliveries.sent()[0].body.clone();

    // When the store is back, the event message comes back (its invocation died before it was
    // deleted) and is fanned out again, and then the parked delivery comes back too
    *fixture.windows.hook.lock().unwrap() = None;
    let again = fixture
        .dispatcher
        .handle_event_message(&body, "message-1", SENT_AT, 2)
        .await;
    assert_eq!(again.unwrap(), MessageOutcome::Done);
    receiver.wait_for("/parked", 1, WAIT).await;
    let outcome = fixture.dispatcher.handle_delivery_message(&parked, 1).await;
    assert_eq!(outcome.unwrap(), MessageOutcome::Done);

    // Then the parked copy goes out above the one sent meanwhile, never below it
    let sent = receiver.wait_for("/parked", 2, WAIT).await;
    let attempts: Vec<u32> = sent
        .iter()
        .map(|r| r.headers["x-event-hook-attempt"].parse().unwrap())
        .collect();
    assert!(attempts[1] > attempts[0], "{attempts:?}");
}

/// The hop count of a deliveries-queue message body.
fn hops_of(body: &str) -> u64 {
    let value: serde_json::Value = serde_json::from_str(body).unwrap();
    value.get("hops").and_then(|h| h.as_u64()).unwrap_or(0)
}

#[tokio::test]
async fn every_requeue_counts_a_hop_and_a_delivery_past_its_schedules_bound_is_dead_lettered() {
    // Given a hook whose target fails, and a delivery of it due in 40 minutes, in a message sent
    // before hops were counted
    let fixture = fixture().await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500)]);
    let hook = webhook_hook(&fixture, receiver.url("/loop"), None).await;
    let (event, _) = balancer_event();
    let mut delivery = Delivery::new(&event, hook.id);
    delivery.not_before = now_millis() + 40 * 60 * 1000;
    let old = serde_json::to_string(&delivery).unwrap();
    assert_eq!(hops_of(&old), 0);

    // When it is chained twice, then made due and attempted (a 500: a retry)
    let dispatcher = &fixture.dispatcher;
    dispatcher.handle_delivery_message(&old, 1).await.unwrap();
    let first = fixture.deliveries.sent()[0].body.clone();
    dispatcher.handle_delivery_message(&first, 1).await.unwrap();
    let mut due: serde_json::Value =
        serde_json::from_str(&fixture.deliveries.sent()[1].body).unwrap();
    due["not_before"] = now_millis().into();
    dispatcher
        .handle_delivery_message(&due.to_string(), 1)
        .await
        .unwrap();
    receiver.wait_for("/loop", 1, WAIT).await;

    // Then each message sent counts one more hop: the chained legs and the retry alike
    let sent: Vec<u64> = fixture
        .deliveries
        .sent()
        .iter()
        .map(|m| hops_of(&m.body))
        .collect();
    assert_eq!(sent, [1, 2, 3]);

    // And when a message of it arrives queued more often than the schedule can need (a loop)
    let limit = DispatchSettings::default().retry.max_requeues(MAX_DELAY);
    let mut looping: serde_json::Value =
        serde_json::from_str(&fixture.deliveries.sent()[2].body).unwrap();
    looping["hops"] = (limit + 1).into();
    let outcome = dispatcher
        .handle_delivery_message(&looping.to_string(), 1)
        .await
        .unwrap();

    // Then it is not attempted nor queued again, but dead-lettered with the reason, without
    // its hop count (a redrive starts a new chain)
    assert_eq!(outcome, MessageOutcome::Done);
    // Handling has returned, and it awaits every attempt it makes until answered: the
    // targets have seen all they will.
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(fixture.deliveries.sent().len(), 3);
    let letters = fixture.dead_letters.sent();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let reason = DeadLetterReason::TooManyRequeues {
        hops: limit + 1,
        limit,
    };
    assert_eq!(letters[0].attributes[REASON_ATTRIBUTE], reason.to_string());
    assert!(reason.to_string().contains("stopped as a loop"), "{reason}");
    assert_eq!(hops_of(&letters[0].body), 0, "{}", letters[0].body);
    let back: Delivery = serde_json::from_str(&letters[0].body).unwrap();
    assert_eq!((back.id, back.attempt), (delivery.id, 2));

    // And a message at the bound is still handled as usual
    looping["hops"] = limit.into();
    dispatcher
        .handle_delivery_message(&looping.to_string(), 1)
        .await
        .unwrap();
    assert_eq!(fixture.dead_letters.sent().len(), 1);
    assert_eq!(
        hops_of(&fixture.deliveries.sent()[3].body),
        u64::from(limit) + 1
    );
}

/// The `requeues_in_row` of a deliveries-queue message body (0 when it carries none).
fn in_row_of(body: &str) -> u64 {
    let value: serde_json::Value = serde_json::from_str(body).unwrap();
    value
        .get("requeues_in_row")
        .and_then(|n| n.as_u64())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_outage_of_hours_parks_a_delivery_less_and_less_often_and_it_is_delivered_after() {
    // Given a snoozed hook (its deliveries need the window store), its target failing once, the
    // window store down for it, and the default settings: parks after 5 s, the 15-minute queue
    let settings = DispatchSettings::default();
    let (park_delay, limit) = (settings.park_delay, settings.retry.max_requeues(MAX_DELAY));
    let fixture = fixture_with(settings).await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(503)]);
    let hook = webhook_hook(&fixture, receiver.url("/storm"), Some(60)).await;
    *fixture.windows.hook.lock().unwrap() = Some(hook.id);
    let (event, body) = balancer_event();
    // Three hours of parks every 5 s would be more than eight times the loop guard's bound.
    const OUTAGE: Duration = Duration::from_secs(3 * 3600);
    assert!(OUTAGE.as_secs() / park_delay.as_secs() > 8 * u64::from(limit));

    // When the event comes, and the parked delivery is handled each time it comes back until
    // three hours have passed (the queue's delays are added up, not waited out)
    let outcome = fixture
        .dispatcher
        .handle_event_message(&body, "message-1", SENT_AT, 1)
        .await;
    assert_eq!(outcome.unwrap(), MessageOutcome::Done);
    let mut parks: Vec<Outgoing> = Vec::new();
    loop {
        let sent = fixture.deliveries.sent();
        assert_eq!(sent.len(), parks.len() + 1, "each return is parked once");
        parks.push(sent.last().unwrap().clone());
        let waited: Duration = parks.iter().map(|park| park.delay).sum();
        if waited >= OUTAGE {
            break;
        }
        let outcome = fixture
            .dispatcher
            .handle_delivery_message(&parks.last().unwrap().body, 1)
            .await;
        assert_eq!(outcome.unwrap(), MessageOutcome::Done);
        let letters = fixture.dead_letters.sent();
        assert!(
            letters.is_empty(),
            "dead-lettered after {} parks, {} s into the outage: {:?}",
            parks.len(),
            waited.as_secs(),
            letters[0].attributes
        );
    }

    // Then it was never attempted nor dead-lettered, and the k-th park in a row waited twice the
    // one before, from the park delay up to the queue's longest delay: few parks, well within
    // the margin of one attempt
    assert!(receiver.requests().is_empty());
    let delays: Vec<u64> = parks.iter().map(|park| park.delay.as_secs()).collect();
    assert_eq!(
        delays[..9],
        [5, 10, 20, 40, 80, 160, 320, 640, 900],
        "{delays:?}"
    );
    assert!(delays[8..].iter().all(|&d| d == 900), "{delays:?}");
    assert_eq!(delays.len(), 19, "{delays:?}");
    assert!(delays.len() <= REQUEUES_PER_ATTEMPT as usize);
    for (k, park) in parks.iter().enumerate() {
        let counts = (hops_of(&park.body), in_row_of(&park.body));
        assert_eq!(counts, (k as u64 + 1, k as u64 + 1), "park {k}");
    }

    // And when the store is back, the delivery is decided and attempted, as attempt 2 of the same
    // delivery (parked before its first attempt, it claims its number, and a claim never gets 1:
    // its event may have been fanned out again meanwhile); its failure queues a retry on the
    // schedule's time for that attempt (not backed off), with no re-queues in a row any more
    *fixture.windows.hook.lock().unwrap() = None;
    let outcome = fixture
        .dispatcher
        .handle_delivery_message(&parks.last().unwrap().body, 1)
        .await;
    assert_eq!(outcome.unwrap(), MessageOutcome::Done);
    let sent = receiver.wait_for("/storm", 1, WAIT).await;
    let id = Delivery::new(&event, hook.id).id.to_string();
    assert_eq!(sent[0].headers["x-event-hook-delivery"], id);
    assert_eq!(sent[0].headers["x-event-hook-attempt"], "2");
    let retry = fixture.deliveries.sent().last().unwrap().clone();
    assert_eq!(fixture.deliveries.sent().len(), parks.len() + 1);
    assert_eq!(hops_of(&retry.body), parks.len() as u64 + 1);
    assert_eq!(in_row_of(&retry.body), 0, "{}", retry.body);
    assert!(
        (24..=36).contains(&retry.delay.as_secs()),
        "the schedule's delay after attempt 2, 30 s ±20 %: {:?}",
        retry.delay
    );

    // And the retry, once due, delivers it
    let mut due: serde_json::Value = serde_json::from_str(&retry.body).unwrap();
    due["not_before"] = now_millis().into();
    let outcome = fixture
        .dispatcher
        .handle_delivery_message(&due.to_string(), 1)
        .await;
    assert_eq!(outcome.unwrap(), MessageOutcome::Done);
    let sent = receiver.wait_for("/storm", 2, WAIT).await;
    assert_eq!(sent[1].headers["x-event-hook-attempt"], "3");
    assert_eq!(sent[1].headers["x-event-hook-delivery"], id);
    assert!(fixture.dead_letters.sent().is_empty());
    assert_eq!(fixture.deliveries.sent().len(), parks.len() + 1);
}

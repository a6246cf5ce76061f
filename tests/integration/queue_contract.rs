//! The `Queue` contract: one suite, run against the embedded SQLite adapter and against SQS (moto).
//!
//! Each case is an async function of a [`Backend`]; `contract_suite!` turns every case into one
//! test per backend (`queue_contract::sqlite::<case>`, `queue_contract::moto::<case>`). The moto
//! half returns early when no moto server is running (see `event_hooks_tests::moto`). Timings are
//! whole seconds because SQS counts delays and visibility timeouts in seconds; the cases run in
//! parallel, so the suite takes about as long as its slowest case.

use std::time::{Duration, Instant, SystemTime};

use event_hooks::queue::sqlite::SqliteQueue;
use event_hooks::queue::sqs::{create_queue_with_dlq, SqsQueue};
use event_hooks::queue::{
    DeadLetterReason, Outgoing, Queue, QueueError, Received, REASON_ATTRIBUTE,
};
use event_hooks::sqlite::Database;
use event_hooks_tests::contract::TempFile;

const NO_WAIT: Duration = Duration::ZERO;
const LONG: Duration = Duration::from_secs(30);
const SECOND: Duration = Duration::from_secs(1);
/// Enough for a message that is there to be found by a long poll, even on a busy moto.
const FIND: Duration = Duration::from_secs(10);

/// Which adapter a case runs against.
enum Backend {
    Sqlite,
    Moto(aws_sdk_sqs::Client),
}

/// A fresh queue with a redrive policy, a reader of its dead-letter queue, and what the backend
/// is known to do differently.
struct Fixture {
    queue: Box<dyn Queue>,
    dead_letters: Box<dyn Queue>,
    /// Real SQS (and the SQLite adapter) ignore a delete with a receipt that is no longer current;
    /// moto 5.x deletes the message for any receipt it ever had.
    ignores_stale_receipts: bool,
    /// The SQLite adapter moves a message received too often to the dead-letter queue as it is,
    /// id included, as SQS's own redrive does; the SQS adapter sends a copy with the reason.
    dead_letter_keeps_id: bool,
    _file: Option<TempFile>,
}

impl Backend {
    async fn fixture(self, max_receives: u32) -> Fixture {
        match self {
            Backend::Sqlite => {
                let file = TempFile::new("queue-contract");
                let db = Database::open(file.path()).unwrap();
                let queue = SqliteQueue::open(db, "events")
                    .await
                    .unwrap()
                    .with_redrive("events-dlq", max_receives);
                Fixture {
                    dead_letters: Box::new(queue.dead_letter_queue().unwrap()),
                    queue: Box::new(queue),
                    ignores_stale_receipts: true,
                    dead_letter_keeps_id: true,
                    _file: Some(file),
                }
            }
            Backend::Moto(client) => {
                let name = event_hooks_tests::moto::unique_name("contract");
                let (url, dlq_url) = create_queue_with_dlq(&client, &name, max_receives)
                    .await
                    .unwrap();
                Fixture {
                    queue: Box::new(
                        SqsQueue::new(client.clone(), url).with_redrive(&dlq_url, max_receives),
                    ),
                    dead_letters: Box::new(SqsQueue::new(client, dlq_url)),
                    ignores_stale_receipts: false,
                    dead_letter_keeps_id: false,
                    _file: None,
                }
            }
        }
    }
}

fn delayed(body: &str, delay: Duration) -> Outgoing {
    Outgoing::delayed(body, delay)
}

/// Receives exactly one message, waiting for it if needed.
async fn receive_one(queue: &dyn Queue, visibility: Duration) -> Received {
    let mut got = queue.receive(1, visibility, FIND).await.unwrap();
    assert_eq!(got.len(), 1, "expected one message, got {got:?}");
    got.remove(0)
}

async fn assert_empty(queue: &dyn Queue) {
    let got = queue.receive(10, LONG, NO_WAIT).await.unwrap();
    assert!(got.is_empty(), "expected no visible message, got {got:?}");
}

// ---- the cases ----

async fn a_sent_message_is_received_and_deleted(backend: Backend) {
    // Given an empty queue
    let f = backend.fixture(5).await;

    // When a message is sent and received
    let id = f.queue.send(Outgoing::now("hello")).await.unwrap();
    let got = receive_one(&*f.queue, LONG).await;

    // Then it is the message sent, received once, with no attributes
    assert_eq!(got.id, id);
    assert_eq!(got.body, "hello");
    assert_eq!(got.receive_count, 1);
    assert!(got.attributes.is_empty());
    f.queue.delete(&got.receipt).await.unwrap();
}

async fn a_deleted_message_is_gone(backend: Backend) {
    // Given a received message that would be visible again at once
    let f = backend.fixture(5).await;
    f.queue.send(Outgoing::now("done")).await.unwrap();
    let got = receive_one(&*f.queue, Duration::ZERO).await;

    // When it is deleted
    f.queue.delete(&got.receipt).await.unwrap();

    // Then it is never received again
    assert_empty(&*f.queue).await;
    assert!(f.queue.receive(10, LONG, SECOND).await.unwrap().is_empty());
}

async fn a_batch_of_25_returns_ids_in_order(backend: Backend) {
    // Given a batch larger than one SQS call takes
    let f = backend.fixture(5).await;
    let bodies: Vec<String> = (0..25).map(|n| format!("m{n:02}")).collect();

    // When it is sent
    let ids = f
        .queue
        .send_batch(bodies.iter().map(Outgoing::now).collect())
        .await
        .unwrap();

    // Then every message arrives, and the n-th id is the n-th message's
    assert_eq!(ids.len(), 25);
    let mut received = Vec::new();
    for _ in 0..10 {
        if received.len() == 25 {
            break;
        }
        received.extend(f.queue.receive(10, LONG, FIND).await.unwrap());
    }
    assert_eq!(received.len(), 25);
    for message in &received {
        let index = ids.iter().position(|id| *id == message.id).unwrap();
        assert_eq!(message.body, bodies[index]);
    }
}

async fn a_delayed_message_is_invisible_until_its_delay_ends(backend: Backend) {
    // Given a message sent with a delay of one second
    let f = backend.fixture(5).await;
    // Queues (SQS, moto, SQLite) time delays by the wall clock, which may be slewed against the
    // monotonic one (0.5% here): the delay is checked on the clock the queue keeps.
    let sent = SystemTime::now();
    f.queue.send(delayed("later", SECOND)).await.unwrap();

    // When receivers look before and after the delay
    let early = f.queue.receive(10, LONG, NO_WAIT).await.unwrap();
    let late = receive_one(&*f.queue, LONG).await;

    // Then it is only handed out after the delay
    assert!(early.is_empty(), "received before its delay: {early:?}");
    assert_eq!(late.body, "later");
    assert!(sent.elapsed().unwrap() >= SECOND);
}

async fn a_message_not_deleted_in_time_comes_back(backend: Backend) {
    // Given a message received with a visibility timeout of one second
    let f = backend.fixture(5).await;
    let id = f.queue.send(Outgoing::now("retry me")).await.unwrap();
    let first = receive_one(&*f.queue, SECOND).await;
    assert_empty(&*f.queue).await;

    // When the timeout passes without a delete
    let second = receive_one(&*f.queue, SECOND).await;

    // Then it comes back, counted twice, with a new receipt
    assert_eq!(second.id, id);
    assert_eq!(second.receive_count, 2);
    assert_ne!(second.receipt, first.receipt);

    // And a delete with the stale receipt is accepted but leaves the message in the queue
    f.queue.delete(&first.receipt).await.unwrap();
    if f.ignores_stale_receipts {
        let third = receive_one(&*f.queue, LONG).await;
        assert_eq!((third.id.as_str(), third.receive_count), (id.as_str(), 3));
    }
}

async fn a_message_received_too_often_moves_to_the_dead_letter_queue(backend: Backend) {
    // Given a queue that allows two receives, and a message received twice
    let f = backend.fixture(2).await;
    let id = f.queue.send(Outgoing::now("poison")).await.unwrap();
    for count in 1..=2 {
        let got = receive_one(&*f.queue, Duration::ZERO).await;
        assert_eq!(got.receive_count, count);
    }

    // When a receiver asks again
    let third = f.queue.receive(10, LONG, NO_WAIT).await.unwrap();

    // Then the message is not handed out but waits in the dead-letter queue, in the one
    // dead-letter format: its body, and why (SQS's own redrive would give no reason)
    assert!(third.is_empty(), "handed out past max_receives: {third:?}");
    let dead = receive_one(&*f.dead_letters, LONG).await;
    if f.dead_letter_keeps_id {
        assert_eq!(dead.id, id);
    }
    assert_eq!(dead.body, "poison");
    assert_eq!(
        dead.attributes.get(REASON_ATTRIBUTE).map(String::as_str),
        Some(
            DeadLetterReason::TooManyReceives { limit: 2 }
                .to_string()
                .as_str()
        )
    );
    assert_empty(&*f.queue).await;
}

async fn attributes_travel_with_a_message(backend: Backend) {
    // Given a message sent as a dead letter is, with a reason attribute
    let f = backend.fixture(5).await;
    let reason = DeadLetterReason::HookDeleted;

    // When it is sent and received
    f.queue
        .send(Outgoing::dead_letter("letter", &reason))
        .await
        .unwrap();
    let got = receive_one(&*f.queue, LONG).await;

    // Then the attribute came with it
    assert_eq!(got.body, "letter");
    assert_eq!(
        got.attributes.get(REASON_ATTRIBUTE),
        Some(&reason.to_string())
    );
}

async fn a_dead_lettered_message_carries_its_reason(backend: Backend) {
    // Given a received message that would be visible again at once
    let f = backend.fixture(5).await;
    f.queue.send(Outgoing::now("unknown source")).await.unwrap();
    let got = receive_one(&*f.queue, Duration::ZERO).await;

    // When it is dead-lettered with a reason
    let reason = DeadLetterReason::Unregistered("source 'nope' is not registered".into());
    f.queue.dead_letter(&got, &reason).await.unwrap();

    // Then it has left the queue and waits in the dead-letter queue with the reason attached
    assert_empty(&*f.queue).await;
    let dead = receive_one(&*f.dead_letters, LONG).await;
    assert_eq!(dead.body, "unknown source");
    assert_eq!(
        dead.attributes.get(REASON_ATTRIBUTE).map(String::as_str),
        Some("source 'nope' is not registered")
    );
}

async fn a_long_poll_wakes_up_for_a_message_sent_while_waiting(backend: Backend) {
    // Given a receiver waiting as long as SQS allows (20 s) on an empty queue
    let f = backend.fixture(5).await;
    let started = Instant::now();

    // When a message is sent while it waits
    let (got, ()) = tokio::join!(f.queue.receive(1, LONG, Duration::from_secs(20)), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        f.queue.send(Outgoing::now("wake up")).await.unwrap();
    });

    // Then the receiver gets it rather than an empty answer at the end of its wait. The bound is
    // generous on purpose (half the wait, not "promptly"): it only tells "woken" from "waited it
    // out" and must not flake on a busy machine.
    assert_eq!(got.unwrap()[0].body, "wake up");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

async fn a_delay_over_15_minutes_is_rejected(backend: Backend) {
    // Given an empty queue
    let f = backend.fixture(5).await;
    let too_long = Duration::from_secs(15 * 60 + 1);

    // When a message, or a batch holding one, asks for a longer delay than SQS allows
    let single = f.queue.send(delayed("x", too_long)).await;
    let batch = f
        .queue
        .send_batch(vec![Outgoing::now("fine"), delayed("x", too_long)])
        .await;

    // Then both are rejected and nothing was sent
    assert!(matches!(single, Err(QueueError::DelayTooLong(d)) if d == too_long));
    assert!(matches!(batch, Err(QueueError::DelayTooLong(_))));
    assert_empty(&*f.queue).await;
}

async fn a_group_travels_with_a_message(backend: Backend) {
    // Given messages sent in a group, alone and in a batch, and one without a group
    let f = backend.fixture(5).await;
    f.queue
        .send(Outgoing::now("alone").in_group("hook-1"))
        .await
        .unwrap();
    f.queue
        .send_batch(vec![
            Outgoing::now("batched").in_group("hook-2"),
            Outgoing::now("ungrouped"),
        ])
        .await
        .unwrap();

    // When they are received
    let mut got = Vec::new();
    for _ in 0..10 {
        if got.len() == 3 {
            break;
        }
        got.extend(f.queue.receive(10, LONG, FIND).await.unwrap());
    }

    // Then each comes with the group it was sent in
    let mut got: Vec<_> = got
        .iter()
        .map(|m| (m.body.as_str(), m.group.as_deref()))
        .collect();
    got.sort_unstable();
    assert_eq!(
        got,
        [
            ("alone", Some("hook-1")),
            ("batched", Some("hook-2")),
            ("ungrouped", None)
        ]
    );
}

/// Fair receiving across groups is the service's behaviour (SQS fair queues), which moto does not
/// implement: it hands out a standard queue's messages whatever their group. So this case holds
/// the SQLite adapter to it only.
async fn a_noisy_group_does_not_starve_a_quiet_one(backend: Backend) {
    // Given a group with a backlog and ten messages in flight
    let f = backend.fixture(5).await;
    let noisy = |n: usize| Outgoing::now(format!("noisy {n}")).in_group("noisy");
    f.queue
        .send_batch((0..50).map(noisy).collect())
        .await
        .unwrap();
    for _ in 0..10 {
        receive_one(&*f.queue, LONG).await;
    }

    // When it sends 40 more, then another group sends one
    f.queue
        .send_batch((50..90).map(noisy).collect())
        .await
        .unwrap();
    f.queue
        .send(Outgoing::now("quiet").in_group("quiet"))
        .await
        .unwrap();

    // Then the quiet group's message is served next, ahead of the 80 older ones
    let got = receive_one(&*f.queue, LONG).await;
    assert_eq!(
        (got.body.as_str(), got.group.as_deref()),
        ("quiet", Some("quiet"))
    );
}

/// Cases that hold only for the SQLite adapter, with the reason at each case.
mod sqlite_only {
    #[tokio::test]
    async fn a_noisy_group_does_not_starve_a_quiet_one() {
        super::a_noisy_group_does_not_starve_a_quiet_one(super::Backend::Sqlite).await;
    }
}

/// One test per case and backend.
macro_rules! contract_suite {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::Sqlite).await;
                }
            )+
        }

        mod moto {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(config) = event_hooks_tests::moto::config() else {
                        return;
                    };
                    super::$case(super::Backend::Moto(aws_sdk_sqs::Client::new(&config))).await;
                }
            )+
        }
    };
}

contract_suite!(
    a_sent_message_is_received_and_deleted,
    a_deleted_message_is_gone,
    a_batch_of_25_returns_ids_in_order,
    a_delayed_message_is_invisible_until_its_delay_ends,
    a_message_not_deleted_in_time_comes_back,
    a_message_received_too_often_moves_to_the_dead_letter_queue,
    attributes_travel_with_a_message,
    a_dead_lettered_message_carries_its_reason,
    a_long_poll_wakes_up_for_a_message_sent_while_waiting,
    a_delay_over_15_minutes_is_rejected,
    a_group_travels_with_a_message,
);

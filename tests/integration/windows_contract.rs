//! The `WindowStore` contract, written once and run against both adapters: SQLite on a temporary
//! file, and DynamoDB on moto (skipped when `MOTO_ENDPOINT` is unset, see `event_hooks_tests::moto`).
//!
//! Each case is an async function of a [`Backend`], which can open any number of independent
//! adapter instances on the same file or table: the concurrency cases give every racer its own
//! connection or client, as separate dispatchers would have. The `contract!` macro turns every case
//! into one test per adapter, each on a fresh file or table (see `event_hooks_tests::contract`).
//! Expiry is tested by advancing the clock the adapters read, not by sleeping: both adapters
//! compare expiries with that clock, and DynamoDB's own TTL deletion is never relied on.

use std::sync::Arc;
use std::time::Duration;

use event_hooks::clock::Clock;
use event_hooks::sqlite::Database;
use event_hooks::store::StoreError;
use event_hooks::windows::dynamodb::{create_table, DynamoWindowStore};
use event_hooks::windows::sqlite::SqliteWindowStore;
use event_hooks::windows::{decide, event_key, Decision, Dropped, WindowStore, CHANGE_TTL};
use event_hooks_tests::contract::Adapters;
use serde_json::json;
use uuid::Uuid;

const MINUTE: Duration = Duration::from_secs(60);
/// Comfortably past a one-second window or digest.
const PAST_A_SECOND: Duration = Duration::from_millis(1200);
const RACERS: usize = 8;
const ROUNDS: usize = 10;

/// The two [`WindowStore`] adapters, for [`event_hooks_tests::contract`].
struct Windows;

#[async_trait::async_trait]
impl Adapters for Windows {
    type Port = dyn WindowStore;
    const NAME: &'static str = "windows";

    async fn create_table(
        client: &aws_sdk_dynamodb::Client,
        table: &str,
    ) -> Result<(), StoreError> {
        create_table(client, table).await
    }

    async fn sqlite(db: Database, clock: Clock) -> Arc<dyn WindowStore> {
        let store = SqliteWindowStore::new(db).await.expect("create the schema");
        Arc::new(store.with_clock(clock))
    }

    fn dynamodb(
        client: aws_sdk_dynamodb::Client,
        table: String,
        clock: Clock,
    ) -> Arc<dyn WindowStore> {
        Arc::new(DynamoWindowStore::new(client, table).with_clock(clock))
    }
}

type Backend = event_hooks_tests::contract::Backend<Windows>;

event_hooks_tests::contract!(
    a_window_admits_its_first_claimant_and_its_retries_only,
    an_expired_window_admits_a_new_claimant,
    windows_are_independent_per_key,
    on_change_delivers_a_a_b_b_a_three_times,
    on_change_lets_the_same_claimant_retry,
    an_expired_digest_counts_as_absent,
    decide_applies_every_combination_of_settings,
    concurrent_claimants_of_one_window_let_exactly_one_in,
    concurrent_swaps_of_one_new_digest_let_exactly_one_in,
);

fn fresh_key(prefix: &str) -> String {
    format!("{prefix}:{}", Uuid::new_v4())
}

/// `swap_digest` with the on_change TTL, failing the test on a store error.
async fn swap(store: &dyn WindowStore, key: &str, digest: &str, claimant: &str) -> bool {
    store
        .swap_digest(key, digest, claimant, CHANGE_TTL)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// snooze windows
// ---------------------------------------------------------------------------------------------

async fn a_window_admits_its_first_claimant_and_its_retries_only(backend: &Backend) {
    // given: a fresh window
    let store = backend.open().await;
    let key = fresh_key("snooze");

    // when / then: the first claimant gets it, another does not, and the first may retry
    assert!(store.claim_window(&key, "d1", MINUTE).await.unwrap());
    assert!(!store.claim_window(&key, "d2", MINUTE).await.unwrap());
    assert!(store.claim_window(&key, "d1", MINUTE).await.unwrap());
    assert!(!store.claim_window(&key, "d3", MINUTE).await.unwrap());
}

async fn an_expired_window_admits_a_new_claimant(backend: &Backend) {
    // given: a one-second window held by d1
    let store = backend.open().await;
    let key = fresh_key("snooze");
    assert!(store
        .claim_window(&key, "d1", Duration::from_secs(1))
        .await
        .unwrap());
    assert!(!store.claim_window(&key, "d2", MINUTE).await.unwrap());

    // when: it expires
    backend.advance(PAST_A_SECOND);

    // then: a new claimant gets it, and holds it for its own ttl
    assert!(store.claim_window(&key, "d2", MINUTE).await.unwrap());
    assert!(!store.claim_window(&key, "d1", MINUTE).await.unwrap());
}

async fn windows_are_independent_per_key(backend: &Backend) {
    let store = backend.open().await;
    let (a, b) = (fresh_key("snooze"), fresh_key("snooze"));
    assert!(store.claim_window(&a, "d1", MINUTE).await.unwrap());
    assert!(store.claim_window(&b, "d2", MINUTE).await.unwrap());
    assert!(!store.claim_window(&a, "d2", MINUTE).await.unwrap());
    assert!(!store.claim_window(&b, "d1", MINUTE).await.unwrap());
}

// ---------------------------------------------------------------------------------------------
// on_change digests
// ---------------------------------------------------------------------------------------------

async fn on_change_delivers_a_a_b_b_a_three_times(backend: &Backend) {
    // given: a fresh digest key
    let store = backend.open().await;
    let key = fresh_key("change");

    // when: digests A, A, B, B, A arrive as five distinct deliveries
    let mut passed = Vec::new();
    for (i, digest) in ["A", "A", "B", "B", "A"].into_iter().enumerate() {
        let claimant = format!("d{i}");
        passed.push(swap(&*store, &key, digest, &claimant).await);
    }

    // then: each change passes, each repeat is dropped
    assert_eq!(passed, [true, false, true, false, true]);
}

async fn on_change_lets_the_same_claimant_retry(backend: &Backend) {
    let store = backend.open().await;
    let key = fresh_key("change");
    assert!(swap(&*store, &key, "A", "d1").await);
    // A retry of the delivery that recorded A passes again; anyone else with A does not.
    assert!(swap(&*store, &key, "A", "d1").await);
    assert!(!swap(&*store, &key, "A", "d2").await);
}

async fn an_expired_digest_counts_as_absent(backend: &Backend) {
    // given: digest A recorded for one second
    let store = backend.open().await;
    let key = fresh_key("change");
    let second = Duration::from_secs(1);
    assert!(store.swap_digest(&key, "A", "d1", second).await.unwrap());
    assert!(!swap(&*store, &key, "A", "d2").await);

    // when: the record expires
    backend.advance(PAST_A_SECOND);

    // then: A counts as a change again
    assert!(swap(&*store, &key, "A", "d3").await);
    assert!(!swap(&*store, &key, "A", "d4").await);
}

// ---------------------------------------------------------------------------------------------
// decide
// ---------------------------------------------------------------------------------------------

async fn decide_applies_every_combination_of_settings(backend: &Backend) {
    let store = backend.open().await;
    let store = store.as_ref();
    let a = event_key(&json!({"consumer": "c1", "rate": 10}), None);
    let b = event_key(&json!({"consumer": "c2", "rate": 10}), None);
    let mut ids = (0..).map(|i| format!("delivery-{i}"));
    let mut run = |snooze, on_change, keys: &[&String]| {
        let hook = Uuid::new_v4();
        let deliveries: Vec<(String, String)> = keys
            .iter()
            .map(|key| ((*key).clone(), ids.next().unwrap()))
            .collect();
        async move {
            let mut decisions = Vec::new();
            for (key, delivery) in &deliveries {
                decisions.push(
                    decide(store, hook, snooze, on_change, key, delivery)
                        .await
                        .unwrap(),
                );
            }
            decisions
        }
    };
    use Decision::{Deliver, Drop};

    // neither: everything passes
    assert_eq!(run(None, None, &[&a, &a, &a]).await, [Deliver; 3]);
    assert_eq!(run(Some(0), Some(false), &[&a, &a]).await, [Deliver; 2]);

    // snooze only: the first event of the hook passes, every other is snoozed, whatever its key
    assert_eq!(
        run(Some(60), None, &[&a, &b, &a]).await,
        [Deliver, Drop(Dropped::Snoozed), Drop(Dropped::Snoozed)]
    );

    // on_change only: A, A, B, B, A → three deliveries
    assert_eq!(
        run(None, Some(true), &[&a, &a, &b, &b, &a]).await,
        [
            Deliver,
            Drop(Dropped::Unchanged),
            Deliver,
            Drop(Dropped::Unchanged),
            Deliver
        ]
    );

    // both: each distinct payload at most once per window
    assert_eq!(
        run(Some(60), Some(true), &[&a, &b, &a, &b]).await,
        [
            Deliver,
            Deliver,
            Drop(Dropped::Snoozed),
            Drop(Dropped::Snoozed)
        ]
    );

    // a retry of a delivery that passed passes again
    let hook = Uuid::new_v4();
    for _ in 0..2 {
        let decision = decide(store, hook, Some(60), None, &a, "retried").await;
        assert_eq!(decision.unwrap(), Deliver);
    }
}

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

/// Runs `RACERS` tasks at once, each with its own adapter instance, as claimants `racer-0`,
/// `racer-1`, …; returns the claimants whose write returned `true`.
async fn race<F, Fut>(backend: &Backend, attempt: F) -> Vec<String>
where
    F: Fn(Arc<dyn WindowStore>, String) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let mut stores = Vec::with_capacity(RACERS);
    for _ in 0..RACERS {
        stores.push(backend.open().await);
    }
    // Every racer waits at the barrier so that the writes really overlap.
    let start = Arc::new(tokio::sync::Barrier::new(RACERS));
    let tasks: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(i, store)| {
            let start = start.clone();
            let claimant = racer(i);
            let write = attempt(store, claimant.clone());
            tokio::spawn(async move {
                start.wait().await;
                write.await.then_some(claimant)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for task in tasks {
        winners.extend(task.await.expect("racer panicked"));
    }
    winners
}

fn racer(i: usize) -> String {
    format!("racer-{i}")
}

/// The racers that hold `key` now, asked one at a time: a holder's retry passes (`attempt` with
/// its own name), anyone else's does not. Exactly one, and a winner, on every backend.
async fn assert_one_holder_among_winners<F, Fut>(
    backend: &Backend,
    winners: &[String],
    round: usize,
    attempt: F,
) where
    F: Fn(Arc<dyn WindowStore>, String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let store = backend.open().await;
    let mut holders = Vec::new();
    for i in 0..RACERS {
        if attempt(store.clone(), racer(i)).await {
            holders.push(racer(i));
        }
    }
    assert_eq!(holders.len(), 1, "round {round}: holders {holders:?}");
    assert!(
        winners.contains(&holders[0]),
        "round {round}: {holders:?} holds it but the winners were {winners:?}"
    );
}

async fn concurrent_claimants_of_one_window_let_exactly_one_in(backend: &Backend) {
    for round in 0..ROUNDS {
        let key = fresh_key("snooze");
        let claim = |store: Arc<dyn WindowStore>, claimant: String| {
            let key = key.clone();
            async move { store.claim_window(&key, &claimant, MINUTE).await.unwrap() }
        };
        let winners = race(backend, claim).await;
        assert_one_winner(backend, &winners, round);
        // ...one of them holds the window...
        assert_one_holder_among_winners(backend, &winners, round, claim).await;
        // ...and it stays taken for everyone else.
        let store = backend.open().await;
        assert!(!store.claim_window(&key, "late", MINUTE).await.unwrap());
    }
}

/// Exactly one winner where the backend can promise it, at least one (and no errors) on moto;
/// see `Backend::conditional_writes_are_atomic`.
fn assert_one_winner(backend: &Backend, winners: &[String], round: usize) {
    if backend.conditional_writes_are_atomic() {
        assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
    } else {
        assert!(!winners.is_empty(), "round {round}: no winner");
        if winners.len() > 1 {
            eprintln!(
                "round {round}: {} winners; moto's conditional writes are not atomic",
                winners.len()
            );
        }
    }
}

async fn concurrent_swaps_of_one_new_digest_let_exactly_one_in(backend: &Backend) {
    for round in 0..ROUNDS {
        // given: a key whose recorded digest is A
        let key = fresh_key("change");
        let store = backend.open().await;
        assert!(swap(&*store, &key, "A", "first").await);

        // when: every racer brings the same new digest B at once
        let bring_b = |store: Arc<dyn WindowStore>, claimant: String| {
            let key = key.clone();
            async move { swap(&*store, &key, "B", &claimant).await }
        };
        let winners = race(backend, bring_b).await;

        // then: exactly one of them delivers it, B is recorded under one of the winners, and
        // for everyone else B is no change
        assert_one_winner(backend, &winners, round);
        assert_one_holder_among_winners(backend, &winners, round, bring_b).await;
        assert!(!swap(&*store, &key, "B", "late").await);
    }
}

//! The `IdempotencyStore` contract, written once and run against both adapters: SQLite on a
//! temporary file, and DynamoDB on moto (skipped when `MOTO_ENDPOINT` is unset, see
//! `event_hooks_tests::moto`).
//!
//! Each case is an async function of a [`Backend`], which can open any number of independent
//! adapter instances on the same file or table: the race gives every racer its own connection or
//! client, as separate admin processes would have. The `contract!` macro turns every case into
//! one test per adapter, each on a fresh file or table (see `event_hooks_tests::contract`). Leases
//! and TTLs lapse by advancing the clock the adapters read, not by sleeping: both adapters compare
//! expiries with that clock, and DynamoDB's own TTL deletion is never relied on. On moto a race
//! may have several winners: see `Backend::conditional_writes_are_atomic`.

use std::sync::Arc;
use std::time::Duration;

use event_hooks::clock::Clock;
use event_hooks::idempotency::dynamodb::{create_table, DynamoIdempotencyStore};
use event_hooks::idempotency::sqlite::SqliteIdempotencyStore;
use event_hooks::idempotency::{Claim, Claimed, IdempotencyStore, MAX_KEY_BYTES};
use event_hooks::sqlite::Database;
use event_hooks::store::StoreError;
use event_hooks_tests::contract::Adapters;
use uuid::Uuid;

const MINUTE: Duration = Duration::from_secs(60);
const SECOND: Duration = Duration::from_secs(1);
/// Comfortably past a one-second lease or TTL.
const PAST_A_SECOND: Duration = Duration::from_millis(1200);
const RACERS: usize = 8;
const ROUNDS: usize = 10;

/// The two [`IdempotencyStore`] adapters, for [`event_hooks_tests::contract`].
struct Idempotency;

#[async_trait::async_trait]
impl Adapters for Idempotency {
    type Port = dyn IdempotencyStore;
    const NAME: &'static str = "idempotency";

    async fn create_table(
        client: &aws_sdk_dynamodb::Client,
        table: &str,
    ) -> Result<(), StoreError> {
        create_table(client, table).await
    }

    async fn sqlite(db: Database, clock: Clock) -> Arc<dyn IdempotencyStore> {
        let store = SqliteIdempotencyStore::new(db)
            .await
            .expect("create the schema");
        Arc::new(store.with_clock(clock))
    }

    fn dynamodb(
        client: aws_sdk_dynamodb::Client,
        table: String,
        clock: Clock,
    ) -> Arc<dyn IdempotencyStore> {
        Arc::new(DynamoIdempotencyStore::new(client, table).with_clock(clock))
    }
}

type Backend = event_hooks_tests::contract::Backend<Idempotency>;

event_hooks_tests::contract!(
    the_first_claim_is_new_and_later_ones_find_it,
    a_completed_key_answers_until_its_ttl_expires,
    a_released_key_can_be_claimed_again,
    only_the_claiming_event_can_complete_or_release_a_key,
    a_lapsed_lease_makes_the_key_claimable,
    keys_are_independent_and_may_be_255_visible_bytes,
    concurrent_claims_of_one_key_give_exactly_one_new,
);

fn fresh_key() -> String {
    format!("key-{}", Uuid::new_v4())
}

/// The stamp each test event's claim is made with: one of its own, so that a claim returned can
/// be told by it.
fn stamp_of(event: Uuid) -> i64 {
    (event.as_u128() % 1_000_000_007) as i64
}

async fn claim(store: &dyn IdempotencyStore, key: &str, event: Uuid, digest: &str) -> Claimed {
    store
        .claim(key, event, digest, stamp_of(event), MINUTE)
        .await
        .unwrap()
}

fn held(event_id: Uuid, body_digest: &str, completed: bool) -> Claim {
    Claim {
        event_id,
        body_digest: body_digest.to_owned(),
        completed,
        at: Some(stamp_of(event_id)),
    }
}

fn existing(event_id: Uuid, body_digest: &str, completed: bool) -> Claimed {
    Claimed::Existing(held(event_id, body_digest, completed))
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

async fn the_first_claim_is_new_and_later_ones_find_it(backend: &Backend) {
    // given: a fresh key
    let store = backend.open().await;
    let key = fresh_key();
    let (first, second, third) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    // when / then: the first claim takes it; a second finds it pending, with the first's id and
    // digest, whatever it brings itself
    assert_eq!(claim(&*store, &key, first, "d1").await, Claimed::New);
    assert_eq!(
        claim(&*store, &key, second, "d1").await,
        existing(first, "d1", false)
    );
    assert_eq!(
        claim(&*store, &key, third, "d2").await,
        existing(first, "d1", false)
    );

    // when: the first completes, then: later claims find it completed
    store
        .complete(&key, first, Duration::from_secs(86_400))
        .await
        .unwrap();
    assert_eq!(
        claim(&*store, &key, second, "d1").await,
        existing(first, "d1", true)
    );
}

async fn a_completed_key_answers_until_its_ttl_expires(backend: &Backend) {
    // given: a key completed for one second
    let store = backend.open().await;
    let key = fresh_key();
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(claim(&*store, &key, first, "d").await, Claimed::New);
    store.complete(&key, first, SECOND).await.unwrap();
    assert_eq!(
        claim(&*store, &key, second, "d").await,
        existing(first, "d", true)
    );

    // when: it expires
    backend.advance(PAST_A_SECOND);

    // then: it can be claimed again, and the new claim holds it
    assert_eq!(claim(&*store, &key, second, "d").await, Claimed::New);
    assert_eq!(
        claim(&*store, &key, first, "d").await,
        existing(second, "d", false)
    );
}

async fn a_released_key_can_be_claimed_again(backend: &Backend) {
    // given: a claimed key whose event could not be queued
    let store = backend.open().await;
    let key = fresh_key();
    let (first, retry) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(claim(&*store, &key, first, "d").await, Claimed::New);

    // when: it is released
    store.release(&key, first).await.unwrap();

    // then: the retry claims it, told of the earlier claim that was never completed, with its
    // stamp (its event may be queued all the same: a send whose reply was lost)
    assert_eq!(
        claim(&*store, &key, retry, "d").await,
        Claimed::Reclaimed(held(first, "d", false))
    );
    assert_eq!(
        claim(&*store, &key, first, "d").await,
        existing(retry, "d", false)
    );
}

async fn only_the_claiming_event_can_complete_or_release_a_key(backend: &Backend) {
    let store = backend.open().await;
    let key = fresh_key();
    let (holder, other) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(claim(&*store, &key, holder, "d").await, Claimed::New);

    // Another event's release or completion changes nothing...
    store.release(&key, other).await.unwrap();
    store.complete(&key, other, MINUTE).await.unwrap();
    assert_eq!(
        claim(&*store, &key, other, "d").await,
        existing(holder, "d", false)
    );

    // ...and once completed, not even the holder's release frees the key: its event is queued.
    store.complete(&key, holder, MINUTE).await.unwrap();
    store.release(&key, holder).await.unwrap();
    assert_eq!(
        claim(&*store, &key, other, "d").await,
        existing(holder, "d", true)
    );
}

async fn a_lapsed_lease_makes_the_key_claimable(backend: &Backend) {
    // given: a key claimed with a one-second lease, by a request that then died
    let store = backend.open().await;
    let key = fresh_key();
    let (dead, retry) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(
        store
            .claim(&key, dead, "d", stamp_of(dead), SECOND)
            .await
            .unwrap(),
        Claimed::New
    );

    // when: the lease lapses
    backend.advance(PAST_A_SECOND);

    // then: a retry claims it, told of the earlier claim, and the dead request's late
    // completion cannot take it back
    assert_eq!(
        claim(&*store, &key, retry, "d").await,
        Claimed::Reclaimed(held(dead, "d", false))
    );
    store.complete(&key, dead, MINUTE).await.unwrap();
    assert_eq!(
        claim(&*store, &key, dead, "d").await,
        existing(retry, "d", false)
    );
}

async fn keys_are_independent_and_may_be_255_visible_bytes(backend: &Backend) {
    let store = backend.open().await;
    // Every visible ASCII character, repeated to the limit.
    let long: String = ('!'..='~').cycle().take(MAX_KEY_BYTES).collect();
    let short = fresh_key();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(claim(&*store, &long, a, "d").await, Claimed::New);
    assert_eq!(claim(&*store, &short, b, "d").await, Claimed::New);
    assert_eq!(claim(&*store, &long, b, "d").await, existing(a, "d", false));
    assert_eq!(
        claim(&*store, &short, a, "d").await,
        existing(b, "d", false)
    );
}

async fn concurrent_claims_of_one_key_give_exactly_one_new(backend: &Backend) {
    for round in 0..ROUNDS {
        // given: a fresh key and racers with their own adapter instances and event ids
        let key = fresh_key();
        let mut racers = Vec::with_capacity(RACERS);
        for _ in 0..RACERS {
            racers.push((backend.open().await, Uuid::new_v4()));
        }
        let start = Arc::new(tokio::sync::Barrier::new(RACERS));

        // when: they all claim it at once
        let tasks: Vec<_> = racers
            .into_iter()
            .map(|(store, event)| {
                let (key, start) = (key.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    let claimed = store
                        .claim(&key, event, "d", stamp_of(event), MINUTE)
                        .await
                        .unwrap();
                    (claimed == Claimed::New).then_some(event)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            winners.extend(task.await.expect("racer panicked"));
        }

        // then: one New (at least one on moto), and the key is held by a winner
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
        let store = backend.open().await;
        match claim(&*store, &key, Uuid::new_v4(), "d").await {
            Claimed::Existing(held) => assert!(
                winners.contains(&held.event_id),
                "round {round}: {held:?} holds it but the winners were {winners:?}"
            ),
            Claimed::New | Claimed::Reclaimed(_) => {
                panic!("round {round}: the key was free after the race")
            }
        }
    }
}

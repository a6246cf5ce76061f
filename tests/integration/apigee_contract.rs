//! The `MonetizationStore` contract (spec §12), written once and run against both adapters:
//! SQLite on a temporary file, and DynamoDB on moto (skipped when `MOTO_ENDPOINT` is unset).
//!
//! Each case is an async function of a [`Backend`], which opens any number of independent adapter
//! instances on the same file or table, so racers each have their own connection or client, as
//! separate dispatchers would.

use std::sync::Arc;

use event_hooks::apigee::dynamodb::{create_table, DynamoMonetizationStore};
use event_hooks::apigee::sqlite::SqliteMonetizationStore;
use event_hooks::apigee::{Condition, MonetizationStore, Threshold};
use event_hooks::clock::Clock;
use event_hooks::sqlite::Database;
use event_hooks::store::StoreError;
use event_hooks_tests::contract::Adapters;
use uuid::Uuid;

const RACERS: usize = 8;
const ROUNDS: usize = 10;

/// The two [`MonetizationStore`] adapters, for [`event_hooks_tests::contract`]. Neither reads the
/// clock for a decision (a threshold, once reached, stays reached), so the clock goes unused.
struct Monetization;

#[async_trait::async_trait]
impl Adapters for Monetization {
    type Port = dyn MonetizationStore;
    const NAME: &'static str = "monetization";

    async fn create_table(
        client: &aws_sdk_dynamodb::Client,
        table: &str,
    ) -> Result<(), StoreError> {
        create_table(client, table).await
    }

    async fn sqlite(db: Database, _clock: Clock) -> Arc<dyn MonetizationStore> {
        Arc::new(SqliteMonetizationStore::new(db).await.expect("schema"))
    }

    fn dynamodb(
        client: aws_sdk_dynamodb::Client,
        table: String,
        _clock: Clock,
    ) -> Arc<dyn MonetizationStore> {
        Arc::new(DynamoMonetizationStore::new(client, table))
    }
}

type Backend = event_hooks_tests::contract::Backend<Monetization>;

event_hooks_tests::contract!(
    conditions_are_stored_listed_replaced_and_deleted_per_organisation,
    conditions_on_a_rate_plan_are_only_the_organisations_own,
    a_threshold_is_claimed_once_and_again_only_by_its_claimant,
    thresholds_differ_by_every_part_of_their_key,
    eight_concurrent_claimers_get_each_threshold_exactly_once,
);

fn condition(org: &str, rate_plan: &str) -> Condition {
    Condition {
        id: Uuid::new_v4(),
        org: org.into(),
        rate_plan: rate_plan.into(),
        published: true,
        usage_target: "%= 80 to 120 by 10".into(),
        targets: vec![80, 90, 100, 110, 120],
        webhooks: vec![Uuid::new_v4()],
        created: 1_460_385_534_555,
        updated: 1_460_385_534_555,
    }
}

fn threshold(percent: u32) -> Threshold {
    Threshold {
        webhook: Uuid::from_u128(7),
        developer: "dev@example.com".into(),
        rate_plan: "123456".into(),
        cycle: "1467331200000".into(),
        percent,
    }
}

async fn conditions_are_stored_listed_replaced_and_deleted_per_organisation(backend: &Backend) {
    let store = backend.open().await;
    let other = backend.open().await;
    let (a, b) = (condition("myorg", "p1"), condition("myorg", "p2"));
    let elsewhere = condition("otherorg", "p1");
    for c in [&a, &b, &elsewhere] {
        store.put_condition(c).await.unwrap();
    }
    // Read through another instance: stored, not cached.
    assert_eq!(
        other.get_condition("myorg", a.id).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(other.get_condition("otherorg", a.id).await.unwrap(), None);
    let mut listed = other.list_conditions("myorg").await.unwrap();
    listed.sort_by_key(|c| c.id);
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort_by_key(|c| c.id);
    assert_eq!(listed, expected);

    let mut replaced = a.clone();
    replaced.targets = vec![95];
    replaced.usage_target = "%= 95".into();
    store.put_condition(&replaced).await.unwrap();
    assert_eq!(
        other.get_condition("myorg", a.id).await.unwrap(),
        Some(replaced)
    );
    assert_eq!(other.list_conditions("myorg").await.unwrap().len(), 2);

    assert!(store.delete_condition("myorg", a.id).await.unwrap());
    assert!(!store.delete_condition("myorg", a.id).await.unwrap());
    assert!(!store.delete_condition("myorg", elsewhere.id).await.unwrap());
    assert_eq!(other.get_condition("myorg", a.id).await.unwrap(), None);
    assert_eq!(other.list_conditions("myorg").await.unwrap(), vec![b]);
    assert_eq!(
        other.list_conditions("otherorg").await.unwrap(),
        vec![elsewhere]
    );
    assert_eq!(other.list_conditions("nobody").await.unwrap(), vec![]);
}

/// Issue 19: two organisations with conditions on the same rate plan id; a lookup by rate plan
/// answers only the asking organisation's.
async fn conditions_on_a_rate_plan_are_only_the_organisations_own(backend: &Backend) {
    let store = backend.open().await;
    let other = backend.open().await;
    let (a1, a2) = (condition("orgA", "123456"), condition("orgA", "123456"));
    let a_other_plan = condition("orgA", "999");
    let b = condition("orgB", "123456");
    for c in [&a1, &a2, &a_other_plan, &b] {
        store.put_condition(c).await.unwrap();
    }
    let mut expected = vec![a1.clone(), a2.clone()];
    expected.sort_by_key(|c| c.id);
    let mut found = other
        .conditions_on_rate_plan("orgA", "123456")
        .await
        .unwrap();
    found.sort_by_key(|c| c.id);
    assert_eq!(found, expected);
    assert_eq!(
        other
            .conditions_on_rate_plan("orgB", "123456")
            .await
            .unwrap(),
        vec![b.clone()]
    );
    assert_eq!(
        other.conditions_on_rate_plan("orgB", "999").await.unwrap(),
        vec![]
    );
    assert_eq!(
        other
            .conditions_on_rate_plan("orgC", "123456")
            .await
            .unwrap(),
        vec![]
    );
    // A rate plan id that is a prefix of another, or differs in case, is another rate plan.
    assert_eq!(
        other
            .conditions_on_rate_plan("orgA", "12345")
            .await
            .unwrap(),
        vec![]
    );
    // A deleted condition no longer matches.
    assert!(store.delete_condition("orgB", b.id).await.unwrap());
    assert_eq!(
        other
            .conditions_on_rate_plan("orgB", "123456")
            .await
            .unwrap(),
        vec![]
    );
}

async fn a_threshold_is_claimed_once_and_again_only_by_its_claimant(backend: &Backend) {
    let store = backend.open().await;
    let other = backend.open().await;
    let (first, second) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(store.claim(&threshold(80), first).await.unwrap());
    // Another event (through another instance) finds it reached.
    assert!(!other.claim(&threshold(80), second).await.unwrap());
    // The same event again (a redelivery) still holds it.
    assert!(other.claim(&threshold(80), first).await.unwrap());
    assert!(!store.claim(&threshold(80), second).await.unwrap());
}

async fn thresholds_differ_by_every_part_of_their_key(backend: &Backend) {
    let store = backend.open().await;
    let claimant = Uuid::new_v4();
    assert!(store.claim(&threshold(80), claimant).await.unwrap());
    let later = Uuid::new_v4();
    let variants = [
        Threshold {
            percent: 90,
            ..threshold(80)
        },
        Threshold {
            webhook: Uuid::from_u128(8),
            ..threshold(80)
        },
        Threshold {
            developer: "other@example.com".into(),
            ..threshold(80)
        },
        Threshold {
            rate_plan: "654321".into(),
            ..threshold(80)
        },
        // A new billing cycle: the same percentage is reached afresh.
        Threshold {
            cycle: "1469923200000".into(),
            ..threshold(80)
        },
    ];
    for variant in &variants {
        assert!(store.claim(variant, later).await.unwrap(), "{variant:?}");
    }
    // Parts are not simply concatenated: moving text between fields is another key.
    let a = Threshold {
        developer: "a|b".into(),
        rate_plan: "c".into(),
        ..threshold(80)
    };
    let b = Threshold {
        developer: "a".into(),
        rate_plan: "b|c".into(),
        ..threshold(80)
    };
    assert!(store.claim(&a, later).await.unwrap());
    assert!(store.claim(&b, later).await.unwrap());
    assert_ne!(a.key(), b.key());
}

async fn eight_concurrent_claimers_get_each_threshold_exactly_once(backend: &Backend) {
    let mut stores = Vec::new();
    for _ in 0..RACERS {
        stores.push(backend.open().await);
    }
    for round in 0..ROUNDS {
        let percent = 80 + round as u32;
        let claimants: Vec<Uuid> = (0..RACERS).map(|_| Uuid::new_v4()).collect();
        let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
        let mut racers = Vec::new();
        for (store, claimant) in stores.iter().cloned().zip(claimants.clone()) {
            let barrier = barrier.clone();
            racers.push(tokio::spawn(async move {
                barrier.wait().await;
                (
                    claimant,
                    store.claim(&threshold(percent), claimant).await.unwrap(),
                )
            }));
        }
        let mut winners = Vec::new();
        for racer in racers {
            let (claimant, won) = racer.await.unwrap();
            if won {
                winners.push(claimant);
            }
        }
        if backend.conditional_writes_are_atomic() {
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
        } else {
            assert!(!winners.is_empty(), "round {round}: nobody won");
        }
        // Afterwards exactly one claimant holds it, and it is one of the winners.
        let mut holders = Vec::new();
        for claimant in &claimants {
            if stores[0]
                .claim(&threshold(percent), *claimant)
                .await
                .unwrap()
            {
                holders.push(*claimant);
            }
        }
        assert_eq!(holders.len(), 1, "round {round}: {holders:?}");
        assert!(winners.contains(&holders[0]), "round {round}");
    }
}

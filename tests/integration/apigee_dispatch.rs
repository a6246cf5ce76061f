//! Apigee usage targets under concurrent dispatchers (spec §12): eight dispatchers, each with its
//! own connections to one SQLite file (as separate processes would have), handle eight usage
//! events of one developer and rate plan at once; every reached target is notified exactly once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use event_hooks::apigee::sqlite::SqliteMonetizationStore;
use event_hooks::apigee::webhook::hook_input;
use event_hooks::apigee::{parse_usage_target, Condition, MonetizationStore};
use event_hooks::delivery_log::sqlite::SqliteDeliveryLog;
use event_hooks::dispatch::{
    DispatchPorts, DispatchSettings, Dispatcher, Executor, MessageOutcome,
};
use event_hooks::events::parse_event;
use event_hooks::lua::{Limits, LuaPolicy};
use event_hooks::outbound::http::{HttpSender, HttpSettings};
use event_hooks::queue::sqlite::SqliteQueue;
use event_hooks::queue::DeadLetterReason;
use event_hooks::snapshot::SnapshotCache;
use event_hooks::sqlite::Database;
use event_hooks::store::sqlite::SqliteHookStore;
use event_hooks::store::{HookStore, Precondition};
use event_hooks::validate::{self, Context};
use event_hooks::windows::sqlite::SqliteWindowStore;
use event_hooks_tests::receiver::Receiver;
use serde_json::json;
use uuid::Uuid;

/// When the queue took the events these tests hand the dispatcher (Unix ms).
const SENT_AT: i64 = 1_700_000_000_000;

const DISPATCHERS: usize = 8;
const CYCLES: i64 = 5;

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A dispatcher on its own connection to `file`.
async fn dispatcher(file: &TempFile) -> Dispatcher {
    let db = Database::open(&file.0).unwrap();
    let store: Arc<dyn HookStore> = Arc::new(SqliteHookStore::new(db.clone()).await.unwrap());
    let queue = |name: &'static str| {
        let db = db.clone();
        async move { Arc::new(SqliteQueue::open(db, name).await.unwrap()) }
    };
    Dispatcher::new(
        DispatchPorts {
            snapshot: Arc::new(SnapshotCache::new(store.clone(), Duration::ZERO)),
            windows: Arc::new(SqliteWindowStore::new(db.clone()).await.unwrap()),
            log: Arc::new(SqliteDeliveryLog::new(db.clone()).await.unwrap()),
            deliveries: queue("deliveries").await,
            dead_letters: queue("dead").await,
            executor: Arc::new(Executor::new(
                HttpSender::new(HttpSettings {
                    allow_private_targets: true,
                    ..HttpSettings::default()
                })
                .unwrap(),
                Limits::default(),
            )),
            hooks: store,
            events: queue("events").await,
        },
        DispatchSettings::default(),
    )
    .with_monetization(Arc::new(SqliteMonetizationStore::new(db).await.unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_dispatchers_notify_each_reached_target_exactly_once() {
    let file = TempFile(std::env::temp_dir().join(format!("apigee-{}.sqlite", Uuid::new_v4())));
    let receiver = Receiver::start().await;

    // Given an enabled Apigee webhook with a condition `%= 80 to 120 by 10`.
    let db = Database::open(&file.0).unwrap();
    let store = SqliteHookStore::new(db.clone()).await.unwrap();
    let mut input = hook_input("myorg", "w", &receiver.url("/w"), true, None, None).unwrap();
    input["retry"] = json!({"delays": [], "on": "5xx"});
    let ctx = Context {
        id: Uuid::new_v4(),
        created_at: 0,
        now: 0,
        lua: LuaPolicy::default(),
    };
    let hook = validate::hook(&input, &ctx).unwrap();
    store.put(&hook, Precondition::Absent).await.unwrap();
    let conditions = SqliteMonetizationStore::new(db).await.unwrap();
    conditions
        .put_condition(&Condition {
            id: Uuid::new_v4(),
            org: "myorg".into(),
            rate_plan: "123456".into(),
            published: true,
            usage_target: "%= 80 to 120 by 10".into(),
            targets: parse_usage_target("%= 80 to 120 by 10").unwrap(),
            webhooks: vec![hook.id],
            created: 0,
            updated: 0,
        })
        .await
        .unwrap();
    let mut dispatchers = Vec::new();
    for _ in 0..DISPATCHERS {
        dispatchers.push(Arc::new(dispatcher(&file).await));
    }

    for cycle in 0..CYCLES {
        // When eight usage events of one billing cycle reach the dispatchers at once.
        let usages = [81.0, 85.0, 95.0, 130.0, 101.0, 119.0, 88.0, 125.0];
        let before = receiver.requests().len();
        let mut runs = Vec::new();
        let barrier = Arc::new(tokio::sync::Barrier::new(DISPATCHERS));
        let mut events = Vec::new();
        for (dispatcher, percent) in dispatchers.iter().cloned().zip(usages) {
            let event = parse_event(
                &json!({
                    "source": "monetization",
                    "event": "usage",
                    "data": {
                        "orgName": "myorg",
                        "developerEmail": "dev@example.com",
                        "ratePlanId": "123456",
                        "quotaPercentUsed": percent,
                        "nextBillingCycleStartDate": 1_467_331_200_000_i64 + cycle,
                    }
                })
                .to_string(),
            )
            .unwrap();
            events.push(event.clone());
            let barrier = barrier.clone();
            runs.push(tokio::spawn(async move {
                barrier.wait().await;
                dispatcher.dispatch(event, 1).await
            }));
        }
        for run in runs {
            run.await.unwrap().unwrap();
        }
        // Then (every attempt is made inside `dispatch`) each target was notified exactly once.
        let requests = receiver.requests();
        let mut percents: Vec<String> = requests[before..]
            .iter()
            .map(|r| r.json()["triggerReason"].as_str().unwrap().to_string())
            .collect();
        percents.sort();
        let mut expected: Vec<String> = [80, 90, 100, 110, 120]
            .iter()
            .map(|p| format!("UsageTarget {p}% reached (%= 80 to 120 by 10)"))
            .collect();
        expected.sort();
        assert_eq!(percents, expected, "cycle {cycle}");

        // And a redelivery of one of those events (its message received again) sends nothing
        // that was delivered already.
        let seen = receiver.requests().len();
        for (dispatcher, event) in dispatchers.iter().zip(events) {
            dispatcher.dispatch(event, 2).await.unwrap();
        }
        assert_eq!(receiver.requests().len(), seen, "cycle {cycle}");
    }
}

/// Issue 19, as the events queue (SQS) brings it: two organisations' webhooks with conditions on
/// the same rate plan id; a usage of orgA notifies only orgA's webhook, one of orgB only orgB's,
/// and a usage without `orgName` is dead-lettered with the reason, notifying nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_notifies_only_its_organisations_webhooks() {
    let file = TempFile(std::env::temp_dir().join(format!("apigee-{}.sqlite", Uuid::new_v4())));
    let receiver = Receiver::start().await;

    // Given an enabled webhook in orgA and one in orgB, each with a condition on rate plan 123456.
    let db = Database::open(&file.0).unwrap();
    let store = SqliteHookStore::new(db.clone()).await.unwrap();
    let conditions = SqliteMonetizationStore::new(db).await.unwrap();
    for org in ["orgA", "orgB"] {
        let input = hook_input(
            org,
            "w",
            &receiver.url(&format!("/{org}")),
            true,
            None,
            None,
        )
        .unwrap();
        let ctx = Context {
            id: Uuid::new_v4(),
            created_at: 0,
            now: 0,
            lua: LuaPolicy::default(),
        };
        let hook = validate::hook(&input, &ctx).unwrap();
        store.put(&hook, Precondition::Absent).await.unwrap();
        conditions
            .put_condition(&Condition {
                id: Uuid::new_v4(),
                org: org.into(),
                rate_plan: "123456".into(),
                published: true,
                usage_target: "%= 90".into(),
                targets: vec![90],
                webhooks: vec![hook.id],
                created: 0,
                updated: 0,
            })
            .await
            .unwrap();
    }
    let dispatcher = dispatcher(&file).await;
    let usage = |org: Option<&str>, developer: &str| {
        let mut data = json!({
            "developerEmail": developer,
            "ratePlanId": "123456",
            "quotaPercentUsed": 95.0,
            "nextBillingCycleStartDate": 1_467_331_200_000_i64,
        });
        if let Some(org) = org {
            data["orgName"] = json!(org);
        }
        json!({"source": "monetization", "event": "usage", "data": data}).to_string()
    };

    // When a usage of orgA comes off the events queue, then only orgA's webhook is notified.
    let outcome = dispatcher
        .handle_event_message(&usage(Some("orgA"), "a@example.com"), "m-1", SENT_AT, 1)
        .await
        .unwrap();
    assert!(matches!(outcome, MessageOutcome::Done), "{outcome:?}");
    let paths: Vec<String> = receiver.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/orgA"]);
    assert_eq!(receiver.requests()[0].json()["orgName"], "orgA");

    // And a usage of orgB, only orgB's.
    dispatcher
        .handle_event_message(&usage(Some("orgB"), "b@example.com"), "m-2", SENT_AT, 1)
        .await
        .unwrap();
    let paths: Vec<String> = receiver.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/orgA", "/orgB"]);

    // When a usage without orgName comes, then it is rejected (dead-lettered) saying why, and
    // no webhook of either organisation hears of it.
    let outcome = dispatcher
        .handle_event_message(&usage(None, "c@example.com"), "m-3", SENT_AT, 1)
        .await
        .unwrap();
    match outcome {
        MessageOutcome::Reject(DeadLetterReason::Invalid(why)) => {
            assert!(why.contains("'data.orgName' is required"), "{why}")
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }
    assert_eq!(receiver.requests().len(), 2);
}

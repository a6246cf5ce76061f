//! The `HookStore` contract, written once and run against both adapters: SQLite on a temporary
//! file, and DynamoDB on moto (skipped when `MOTO_ENDPOINT` is unset, see `event_hooks_tests::moto`).
//!
//! Each case is a plain async function over `&dyn HookStore`; the `contract!` macro turns every
//! case into one test per adapter, each on a fresh database or table.

use std::collections::{BTreeMap, HashSet};

use event_hooks::model::{
    CustomEvent, Handler, Hook, LambdaConfig, LogConfig, WebhookConfig, WebhookCustomConfig,
};
use event_hooks::sqlite::Database;
use event_hooks::store::dynamodb::{create_table, DynamoHookStore};
use event_hooks::store::sqlite::SqliteHookStore;
use event_hooks::store::{HookFilter, HookStore, Precondition, StoreError, TagFilter};
use event_hooks_tests::contract::TempFile;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

async fn sqlite_store(file: &TempFile) -> SqliteHookStore {
    let db = Database::open(file.path()).expect("open the SQLite file");
    SqliteHookStore::new(db).await.expect("create the schema")
}

async fn moto_store() -> Option<DynamoHookStore> {
    let config = event_hooks_tests::moto::config()?;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let table = event_hooks_tests::moto::unique_name("hooks");
    create_table(&client, &table)
        .await
        .expect("create the table on moto");
    Some(DynamoHookStore::new(client, table))
}

/// Generates, for every case, `sqlite::<case>` and `moto::<case>`.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let file = super::TempFile::new("hook-store");
                    let store = super::sqlite_store(&file).await;
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
    every_field_and_handler_survives_a_round_trip,
    put_returns_increasing_versions,
    creating_an_existing_id_conflicts,
    updating_from_a_stale_version_conflicts,
    concurrent_updates_from_one_version_let_exactly_one_win,
    names_are_unique_on_create,
    names_are_unique_on_rename_and_renaming_frees_the_old_name,
    deleting_frees_the_name,
    hooks_without_a_name_never_clash,
    the_precondition_is_checked_before_the_name,
    delete_returns_the_removed_hook,
    list_pages_through_every_hook_in_id_order,
    list_filters_combine_with_pagination,
    custom_events_are_registered_listed_and_removed,
    every_write_changes_the_version_and_reads_do_not,
    a_counter_checked_snapshot_reloads_only_after_a_change,
);

/// A `log` hook on `source`, with a fresh id and every optional field empty.
fn hook(source: &str, event: Option<&str>) -> Hook {
    Hook {
        id: Uuid::new_v4(),
        created_at: 1_700_000_000,
        updated_at: 1_700_000_000,
        source: source.to_owned(),
        event: event.map(str::to_owned),
        handler: Handler::Log(LogConfig {}),
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

fn named(name: &str) -> Hook {
    Hook {
        name: Some(name.to_owned()),
        ..hook("crud", None)
    }
}

fn tagged(source: &str, event: Option<&str>, tags: &[&str]) -> Hook {
    Hook {
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        ..hook(source, event)
    }
}

async fn create(store: &dyn HookStore, hook: &Hook) {
    let version = store
        .put(hook, Precondition::Absent)
        .await
        .expect("create the hook");
    assert_eq!(version, 1);
}

/// Every page of a listing, checking the page sizes and tokens along the way.
async fn list_all(store: &dyn HookStore, filter: &HookFilter, size: usize) -> Vec<Vec<Hook>> {
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(filter, size, after).await.expect("list hooks");
        assert!(page.items.len() <= size, "a page never exceeds its size");
        if let Some(token) = page.next {
            assert_eq!(page.items.len(), size, "only a full page has a next page");
            assert_eq!(Some(token.0), page.items.last().map(|h| h.id));
        }
        after = page.next;
        pages.push(page.items);
        if after.is_none() {
            return pages;
        }
    }
}

fn ids(hooks: &[Hook]) -> Vec<Uuid> {
    hooks.iter().map(|h| h.id).collect()
}

fn sorted_by_id(mut hooks: Vec<Hook>) -> Vec<Hook> {
    hooks.sort_by_key(|h| h.id);
    hooks
}

fn custom_event(source: &str, event: &str) -> CustomEvent {
    CustomEvent {
        source: source.to_owned(),
        event: event.to_owned(),
        fields: vec!["user".to_owned(), "ip".to_owned()],
        unique: None,
        description: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

async fn every_field_and_handler_survives_a_round_trip(store: &dyn HookStore) {
    // given: one hook per handler variant, between them every optional field both empty and set
    let webhook = Hook {
        handler: Handler::Webhook(WebhookConfig {
            url: "https://example.com/hook".to_owned(),
            headers: BTreeMap::new(),
            secret: None,
            ssl_verify: false,
            signature: Default::default(),
            previous_secret: None,
        }),
        ..hook("crud", None)
    };
    let custom = Hook {
        created_at: 1,
        updated_at: 2,
        event: Some("consumers:create".to_owned()),
        handler: Handler::WebhookCustom(WebhookCustomConfig {
            url: "http://example.com:8080/x?y=z".to_owned(),
            method: "PUT".parse().unwrap(),
            payload: Some(BTreeMap::from([
                ("text".to_owned(), "{{ entity.username }} ✓".to_owned()),
                ("empty".to_owned(), String::new()),
            ])),
            payload_format: false,
            body: Some("{* data *}".to_owned()),
            body_format: true,
            headers: BTreeMap::from([("content-type".to_owned(), "application/json".to_owned())]),
            headers_format: true,
            secret: Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
            ssl_verify: true,
            signature: event_hooks::model::SignatureScheme::Standard,
            previous_secret: Some(event_hooks::model::PreviousSecret {
                secret: "whsec_c2Vjb25kIGtleSBvZiB0d2VudHktZm91ciBi".to_owned(),
                expires_at: 1_900_000_000,
            }),
        }),
        snooze: Some(0),
        on_change: Some(false),
        enabled: false,
        name: Some("notify-crm".to_owned()),
        tags: vec!["prod".to_owned(), "team:a".to_owned()],
        ..hook("crud", None)
    };
    let custom_without_payload = Hook {
        handler: Handler::WebhookCustom(WebhookCustomConfig {
            url: "https://example.com".to_owned(),
            method: "GET".parse().unwrap(),
            payload: None,
            payload_format: true,
            body: None,
            body_format: false,
            headers: BTreeMap::new(),
            headers_format: false,
            secret: None,
            ssl_verify: false,
            signature: Default::default(),
            previous_secret: None,
        }),
        ..hook("balancer", Some("health"))
    };
    let log = Hook {
        snooze: Some(60),
        on_change: Some(true),
        ..hook("rate-limiting-advanced", Some("rate-limit-exceeded"))
    };
    let lambda = Hook {
        handler: Handler::Lambda(LambdaConfig {
            functions: vec![
                "return function(data) return data end".to_owned(),
                "return function(data, event, source, pid)\n  return nil, \"no\"\nend".to_owned(),
            ],
        }),
        ..hook("dao:crud", Some("update"))
    };
    let hooks = [webhook, custom, custom_without_payload, log, lambda];

    // when: each is stored
    for hook in &hooks {
        create(store, hook).await;
    }

    // then: each reads back exactly as written, at version 1
    for hook in &hooks {
        let stored = store.get(hook.id).await.unwrap().expect("stored hook");
        assert_eq!(&stored.value, hook);
        assert_eq!(stored.version, 1);
    }
    assert!(store.get(Uuid::new_v4()).await.unwrap().is_none());
}

async fn put_returns_increasing_versions(store: &dyn HookStore) {
    // given: a stored hook
    let mut hook = hook("crud", None);
    create(store, &hook).await;

    // when: it is updated twice from the version just read
    hook.source = "balancer".to_owned();
    let second = store.put(&hook, Precondition::Version(1)).await.unwrap();
    hook.event = Some("health".to_owned());
    let third = store.put(&hook, Precondition::Version(2)).await.unwrap();

    // then: versions count up and the last write is what is stored
    assert_eq!((second, third), (2, 3));
    let stored = store.get(hook.id).await.unwrap().unwrap();
    assert_eq!(stored.version, 3);
    assert_eq!(stored.value, hook);
}

async fn creating_an_existing_id_conflicts(store: &dyn HookStore) {
    // given: a stored hook
    let original = hook("crud", None);
    create(store, &original).await;

    // when: another hook with the same id is created
    let again = Hook {
        source: "balancer".to_owned(),
        ..original.clone()
    };
    let result = store.put(&again, Precondition::Absent).await;

    // then: it conflicts and the original is untouched
    assert!(matches!(result, Err(StoreError::Conflict)), "{result:?}");
    let stored = store.get(original.id).await.unwrap().unwrap();
    assert_eq!((stored.value, stored.version), (original, 1));
}

async fn updating_from_a_stale_version_conflicts(store: &dyn HookStore) {
    // given: a hook updated once, so it is at version 2
    let mut current = hook("crud", None);
    create(store, &current).await;
    current.tags = vec!["first".to_owned()];
    store.put(&current, Precondition::Version(1)).await.unwrap();

    // when: a writer that read version 1 updates it, and another updates a hook that does not exist
    let stale = Hook {
        tags: vec!["stale".to_owned()],
        ..current.clone()
    };
    let stale_result = store.put(&stale, Precondition::Version(1)).await;
    let missing_result = store
        .put(&hook("crud", None), Precondition::Version(1))
        .await;

    // then: both conflict and the stored hook keeps the first update
    assert!(
        matches!(stale_result, Err(StoreError::Conflict)),
        "{stale_result:?}"
    );
    assert!(
        matches!(missing_result, Err(StoreError::Conflict)),
        "{missing_result:?}"
    );
    let stored = store.get(current.id).await.unwrap().unwrap();
    assert_eq!((stored.value, stored.version), (current, 2));
}

async fn concurrent_updates_from_one_version_let_exactly_one_win(store: &dyn HookStore) {
    // given: a stored hook at version 1
    let original = hook("crud", None);
    create(store, &original).await;

    // when: two writers update it from version 1 at the same time
    let a = Hook {
        tags: vec!["a".to_owned()],
        ..original.clone()
    };
    let b = Hook {
        tags: vec!["b".to_owned()],
        ..original.clone()
    };
    let (result_a, result_b) = tokio::join!(
        store.put(&a, Precondition::Version(1)),
        store.put(&b, Precondition::Version(1)),
    );

    // then: exactly one wins, the other conflicts, and the winner's write is stored
    let winner = match (result_a, result_b) {
        (Ok(2), Err(StoreError::Conflict)) => a,
        (Err(StoreError::Conflict), Ok(2)) => b,
        other => panic!("expected exactly one winner, got {other:?}"),
    };
    let stored = store.get(original.id).await.unwrap().unwrap();
    assert_eq!((stored.value, stored.version), (winner, 2));
}

async fn names_are_unique_on_create(store: &dyn HookStore) {
    // given: a hook named "audit"
    create(store, &named("audit")).await;

    // when: another hook is created with the same name
    let clash = named("audit");
    let result = store.put(&clash, Precondition::Absent).await;

    // then: the name is taken and nothing was written
    assert!(
        matches!(&result, Err(StoreError::NameTaken(name)) if name == "audit"),
        "{result:?}"
    );
    assert!(store.get(clash.id).await.unwrap().is_none());
}

async fn names_are_unique_on_rename_and_renaming_frees_the_old_name(store: &dyn HookStore) {
    // given: hooks named "first" and "second"
    let mut first = named("first");
    let mut second = named("second");
    create(store, &first).await;
    create(store, &second).await;

    // when: "second" is renamed to "first"
    second.name = Some("first".to_owned());
    let clash = store.put(&second, Precondition::Version(1)).await;

    // then: the name is taken and "second" keeps its name
    assert!(
        matches!(&clash, Err(StoreError::NameTaken(name)) if name == "first"),
        "{clash:?}"
    );
    let stored = store.get(second.id).await.unwrap().unwrap();
    assert_eq!(stored.value.name.as_deref(), Some("second"));
    assert_eq!(stored.version, 1);

    // when: "first" is renamed to "third", keeping its name on a later update works too
    first.name = Some("third".to_owned());
    assert_eq!(
        store.put(&first, Precondition::Version(1)).await.unwrap(),
        2
    );
    first.tags = vec!["kept".to_owned()];
    assert_eq!(
        store.put(&first, Precondition::Version(2)).await.unwrap(),
        3
    );

    // then: "first" is free for the other hook, and "second" is free for a new one
    assert_eq!(
        store.put(&second, Precondition::Version(1)).await.unwrap(),
        2
    );
    create(store, &named("second")).await;
    // and: "third" is still held
    let third = store.put(&named("third"), Precondition::Absent).await;
    assert!(matches!(third, Err(StoreError::NameTaken(_))), "{third:?}");

    // when: a hook drops its name
    first.name = None;
    assert_eq!(
        store.put(&first, Precondition::Version(3)).await.unwrap(),
        4
    );

    // then: its old name is free
    create(store, &named("third")).await;
}

async fn deleting_frees_the_name(store: &dyn HookStore) {
    // given: a hook named "audit"
    let hook = named("audit");
    create(store, &hook).await;

    // when: it is deleted
    store.delete(hook.id).await.unwrap();

    // then: a new hook can take the name
    create(store, &named("audit")).await;
}

async fn hooks_without_a_name_never_clash(store: &dyn HookStore) {
    // given: a hook without a name
    let mut first = hook("crud", None);
    create(store, &first).await;

    // when: other unnamed hooks are created and the first is updated
    create(store, &hook("crud", None)).await;
    create(store, &hook("balancer", None)).await;
    first.enabled = false;

    // then: every write succeeds
    assert_eq!(
        store.put(&first, Precondition::Version(1)).await.unwrap(),
        2
    );
}

async fn the_precondition_is_checked_before_the_name(store: &dyn HookStore) {
    // given: a hook named "taken" and another hook at version 2
    create(store, &named("taken")).await;
    let mut other = hook("crud", None);
    create(store, &other).await;
    store.put(&other, Precondition::Version(1)).await.unwrap();

    // when: a stale writer of the other hook also takes the name, and so does a create on its id
    other.name = Some("taken".to_owned());
    let stale = store.put(&other, Precondition::Version(1)).await;
    let recreate = store.put(&other, Precondition::Absent).await;

    // then: both report the conflict, not the name
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    assert!(
        matches!(recreate, Err(StoreError::Conflict)),
        "{recreate:?}"
    );
}

async fn delete_returns_the_removed_hook(store: &dyn HookStore) {
    // given: a stored, updated hook
    let mut hook = named("to-delete");
    create(store, &hook).await;
    hook.tags = vec!["x".to_owned()];
    store.put(&hook, Precondition::Version(1)).await.unwrap();

    // when: it is deleted twice
    let first = store.delete(hook.id).await.unwrap();
    let second = store.delete(hook.id).await.unwrap();

    // then: the first returns it as stored, the second finds nothing, and it is gone
    assert_eq!(first, Some(hook.clone()));
    assert_eq!(second, None);
    assert!(store.get(hook.id).await.unwrap().is_none());
    assert_eq!(store.delete(Uuid::new_v4()).await.unwrap(), None);
    // and: its id can be used again from scratch
    create(store, &hook).await;
}

async fn list_pages_through_every_hook_in_id_order(store: &dyn HookStore) {
    // given: seven hooks
    let hooks: Vec<Hook> = (0..7).map(|_| hook("crud", None)).collect();
    for hook in &hooks {
        create(store, hook).await;
    }

    // when: they are listed three at a time
    let pages = list_all(store, &HookFilter::default(), 3).await;

    // then: pages of 3, 3 and 1 hold every hook once, in id order
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3, 1]);
    let listed: Vec<Hook> = pages.concat();
    assert_eq!(ids(&listed), ids(&sorted_by_id(hooks.clone())));
    assert_eq!(listed, sorted_by_id(hooks.clone()));

    // and: an exact multiple of the page size ends without an empty page
    let pages = list_all(store, &HookFilter::default(), 7).await;
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].len(), 7);

    // and: the token of a deleted hook still marks a position
    let sorted = sorted_by_id(hooks);
    let first = store.list(&HookFilter::default(), 3, None).await.unwrap();
    let token = first.next.expect("a second page");
    store.delete(sorted[2].id).await.unwrap();
    let second = store
        .list(&HookFilter::default(), 3, Some(token))
        .await
        .unwrap();
    assert_eq!(ids(&second.items), ids(&sorted[3..6]));
}

async fn list_filters_combine_with_pagination(store: &dyn HookStore) {
    // given: hooks over two sources, with and without events, and various tags
    let mut hooks = Vec::new();
    for i in 0..12 {
        let source = if i % 2 == 0 { "crud" } else { "balancer" };
        let event = if i % 3 == 0 { None } else { Some("consumers") };
        let mut tags = Vec::new();
        if i % 2 == 0 {
            tags.push("a");
        }
        if i % 3 == 0 {
            tags.push("b");
        }
        if i % 5 == 0 {
            tags.push("c");
        }
        hooks.push(tagged(source, event, &tags));
    }
    for hook in &hooks {
        create(store, hook).await;
    }
    let sorted = sorted_by_id(hooks);
    let tags = |names: &[&str]| names.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>();
    let filters = [
        HookFilter {
            source: Some("crud".to_owned()),
            ..HookFilter::default()
        },
        HookFilter {
            event: Some("consumers".to_owned()),
            ..HookFilter::default()
        },
        HookFilter {
            tags: Some(TagFilter::All(tags(&["a", "b"]))),
            ..HookFilter::default()
        },
        HookFilter {
            tags: Some(TagFilter::Any(tags(&["b", "c"]))),
            ..HookFilter::default()
        },
        HookFilter {
            source: Some("balancer".to_owned()),
            event: Some("consumers".to_owned()),
            tags: Some(TagFilter::Any(tags(&["c", "none"]))),
        },
        HookFilter {
            source: Some("crud".to_owned()),
            tags: Some(TagFilter::All(tags(&["a"]))),
            ..HookFilter::default()
        },
        HookFilter {
            source: Some("nobody".to_owned()),
            ..HookFilter::default()
        },
        HookFilter {
            tags: Some(TagFilter::All(vec![])),
            ..HookFilter::default()
        },
        HookFilter {
            tags: Some(TagFilter::Any(vec![])),
            ..HookFilter::default()
        },
    ];

    for filter in &filters {
        // when: the hooks are listed two at a time with the filter
        let pages = list_all(store, filter, 2).await;

        // then: exactly the matching hooks come back, once each, in id order
        let expected: Vec<Uuid> = sorted
            .iter()
            .filter(|h| filter.matches(h))
            .map(|h| h.id)
            .collect();
        let listed = ids(&pages.concat());
        assert_eq!(listed, expected, "filter {filter:?}");
        let unique: HashSet<Uuid> = listed.iter().copied().collect();
        assert_eq!(unique.len(), listed.len(), "no duplicates for {filter:?}");
    }
}

async fn custom_events_are_registered_listed_and_removed(store: &dyn HookStore) {
    // given: no custom events
    assert!(store.list_custom_events().await.unwrap().is_empty());

    // when: three are registered out of order, and one is then replaced
    let zeta = custom_event("zeta", "a");
    let alpha_b = CustomEvent {
        unique: Some(vec!["user".to_owned()]),
        description: Some("Run an event when a user signs up".to_owned()),
        ..custom_event("alpha", "b")
    };
    let alpha_a = CustomEvent {
        fields: vec![],
        ..custom_event("alpha", "a")
    };
    assert!(store.put_custom_event(&zeta).await.unwrap());
    assert!(store.put_custom_event(&alpha_b).await.unwrap());
    assert!(store.put_custom_event(&alpha_a).await.unwrap());
    let replaced = CustomEvent {
        description: Some("replaced".to_owned()),
        ..zeta.clone()
    };
    let new = store.put_custom_event(&replaced).await.unwrap();

    // then: the replacement is not new, and the list is sorted by source then event
    assert!(!new);
    let listed = store.list_custom_events().await.unwrap();
    assert_eq!(listed, [alpha_a.clone(), alpha_b.clone(), replaced]);

    // when: one is deleted twice
    let first = store.delete_custom_event("zeta", "a").await.unwrap();
    let second = store.delete_custom_event("zeta", "a").await.unwrap();

    // then: only the first found it, and it is gone from the list
    assert!(first);
    assert!(!second);
    assert_eq!(
        store.list_custom_events().await.unwrap(),
        [alpha_a, alpha_b]
    );
}

async fn every_write_changes_the_version_and_reads_do_not(store: &dyn HookStore) {
    let start = store.version().await.unwrap();
    // Reads leave it alone.
    let first = hook("crud", None);
    store.list(&HookFilter::default(), 10, None).await.unwrap();
    store.get(first.id).await.unwrap();
    assert_eq!(store.version().await.unwrap(), start, "a read changed it");

    let mut seen = vec![start];
    let mut changed = |now: u64, what: &str| {
        assert!(
            !seen.contains(&now),
            "{what} did not change the version: {seen:?} then {now}"
        );
        seen.push(now);
    };

    // Each kind of write changes it.
    store.put(&first, Precondition::Absent).await.unwrap();
    changed(store.version().await.unwrap(), "a create");
    let renamed = Hook {
        name: Some("renamed".into()),
        ..first.clone()
    };
    store.put(&renamed, Precondition::Version(1)).await.unwrap();
    changed(store.version().await.unwrap(), "an update");
    store
        .put_custom_event(&custom_event("s", "e"))
        .await
        .unwrap();
    changed(store.version().await.unwrap(), "a custom event");
    store.delete_custom_event("s", "e").await.unwrap();
    changed(store.version().await.unwrap(), "a custom event's removal");
    store.delete(first.id).await.unwrap();
    changed(store.version().await.unwrap(), "a delete");

    // A write that was refused changes nothing.
    let before = store.version().await.unwrap();
    let stale = store.put(&renamed, Precondition::Version(7)).await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    assert_eq!(store.version().await.unwrap(), before, "a refused write");
}

/// The dispatcher's read-your-writes (spec §10): a snapshot cached for an hour still sees a
/// hook created after it was loaded, as soon as the version is checked (the adapters' half is
/// `every_write_changes_the_version_and_reads_do_not`).
#[tokio::test]
async fn a_snapshot_cache_reloads_when_the_version_changed() {
    let file = TempFile::new("hook-store");
    let store = std::sync::Arc::new(sqlite_store(&file).await);
    let cache = event_hooks::snapshot::SnapshotCache::new(
        store.clone(),
        std::time::Duration::from_secs(3600),
    );
    let before = cache.get().await.unwrap().len();
    // Unchanged: no reload.
    assert!(!cache.refresh_if_changed().await.unwrap());

    let created = hook("crud", None);
    store.put(&created, Precondition::Absent).await.unwrap();
    assert_eq!(cache.get().await.unwrap().len(), before, "cached, as asked");
    assert!(cache.refresh_if_changed().await.unwrap());
    let snapshot = cache.get().await.unwrap();
    assert!(snapshot.hook(created.id).is_some(), "the new hook is seen");
    assert!(!cache.refresh_if_changed().await.unwrap());
}

/// The admin function's snapshot cache over this adapter: past its check interval a read asks
/// the change counter and, with no change, keeps its snapshot (the same `Arc`: no full load); the
/// first read past the interval after a change loads again and sees it. Generic rather than over
/// `&dyn HookStore` only because the cache owns its store.
async fn a_counter_checked_snapshot_reloads_only_after_a_change<S: HookStore + Clone>(store: &S) {
    use std::sync::Arc;
    use std::time::Duration;
    let cache = event_hooks::snapshot::SnapshotCache::new(
        Arc::new(store.clone()),
        Duration::from_secs(3600),
    )
    .checking_counter_every(Duration::from_millis(10));
    let first = cache.get().await.unwrap();
    let mut loads = 1;
    let mut last = first.clone();
    let read = || async {
        tokio::time::sleep(Duration::from_millis(15)).await;
        cache.get().await.unwrap()
    };
    for _ in 0..20 {
        let snapshot = read().await;
        loads += usize::from(!Arc::ptr_eq(&snapshot, &last));
        last = snapshot;
    }
    assert_eq!(loads, 1, "full loads in 21 reads with no change");

    let created = hook("crud", None);
    store.put(&created, Precondition::Absent).await.unwrap();
    let snapshot = read().await;
    assert!(!Arc::ptr_eq(&snapshot, &first), "no load after a change");
    assert!(snapshot.hook(created.id).is_some(), "the new hook is seen");
    assert!(Arc::ptr_eq(&read().await, &snapshot), "loaded again");
}

// ---------------------------------------------------------------------------------------------
// SQLite only
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sqlite_keeps_hooks_and_custom_events_across_reopening_the_file() {
    // given: a hook (updated once) and a custom event written to a file
    let file = TempFile::new("hook-store");
    let mut hook = named("durable");
    let event = custom_event("app", "signup");
    {
        let store = sqlite_store(&file).await;
        create(&store, &hook).await;
        hook.enabled = false;
        store.put(&hook, Precondition::Version(1)).await.unwrap();
        store.put_custom_event(&event).await.unwrap();
    }

    // when: the file is opened again
    let store = sqlite_store(&file).await;

    // then: everything is there, versions and name guard included
    let stored = store.get(hook.id).await.unwrap().unwrap();
    assert_eq!((stored.value, stored.version), (hook.clone(), 2));
    assert_eq!(store.list_custom_events().await.unwrap(), [event]);
    let clash = store.put(&named("durable"), Precondition::Absent).await;
    assert!(matches!(clash, Err(StoreError::NameTaken(_))), "{clash:?}");
}

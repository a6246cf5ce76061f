//! The `DeliveryLog` contract, written once and run against both adapters: SQLite on a temporary
//! file, and DynamoDB on moto (skipped when `MOTO_ENDPOINT` is unset, see `event_hooks_tests::moto`).
//!
//! Each case is an async function of a `Backend`, from which it opens the log as an
//! `Arc<dyn DeliveryLog>` (shared so that concurrent cases can spawn tasks); the `contract!` macro
//! turns every case into one test per adapter, each on a fresh database or table (see
//! `event_hooks_tests::contract`). Records expire by advancing the clock the adapters read, not by
//! sleeping: both compare `expires_at` with that clock, DynamoDB's own TTL deletion aside.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use event_hooks::clock::Clock;
use event_hooks::delivery_log::dynamodb::{create_table, DynamoDeliveryLog};
use event_hooks::delivery_log::sqlite::SqliteDeliveryLog;
use event_hooks::delivery_log::{
    time_of, timed_id, Attempt, AttemptSummary, DeliveryKey, DeliveryLog, DeliveryPageToken,
    DeliveryRecord, DeliveryStatus, DeliveryWindow, Then, MAX_ATTEMPTS_KEPT, MAX_RESPONSE_BODY,
};
use event_hooks::events::Event;
use event_hooks::limits::{LOGGED_EVENT_PREFIX_BYTES, MAX_LOGGED_EVENT_BYTES};
use event_hooks::sqlite::Database;
use event_hooks::store::StoreError;
use event_hooks_tests::contract::Adapters;
use serde_json::json;
use sha2::Digest as _;
use uuid::Uuid;

/// The two [`DeliveryLog`] adapters, for [`event_hooks_tests::contract`].
struct DeliveryLogs;

#[async_trait::async_trait]
impl Adapters for DeliveryLogs {
    type Port = dyn DeliveryLog;
    const NAME: &'static str = "deliveries";

    async fn create_table(
        client: &aws_sdk_dynamodb::Client,
        table: &str,
    ) -> Result<(), StoreError> {
        create_table(client, table).await
    }

    async fn sqlite(db: Database, clock: Clock) -> Arc<dyn DeliveryLog> {
        let log = SqliteDeliveryLog::new(db).await.expect("create the schema");
        Arc::new(log.with_clock(clock))
    }

    fn dynamodb(
        client: aws_sdk_dynamodb::Client,
        table: String,
        clock: Clock,
    ) -> Arc<dyn DeliveryLog> {
        Arc::new(DynamoDeliveryLog::new(client, table).with_clock(clock))
    }
}

type Backend = event_hooks_tests::contract::Backend<DeliveryLogs>;

event_hooks_tests::contract! {
    both: [
        the_first_attempt_creates_the_record,
        later_attempts_append_in_order_and_set_the_status,
        unknown_deliveries_are_none,
        list_pages_newest_first_without_duplicates,
        a_forged_token_is_an_error_and_a_stale_one_still_pages,
        deliveries_of_other_hooks_are_not_listed,
        expired_records_are_not_returned,
        attempts_and_bodies_are_capped,
        a_large_event_is_logged_as_a_capped_copy,
        a_window_is_oldest_first_within_inclusive_bounds,
        a_window_keeps_only_the_statuses_asked_for,
        a_window_pages_past_filtered_deliveries_without_duplicates,
        a_listing_page_ends_at_its_byte_budget,
        window_summaries_are_the_window_without_bodies,
        a_settled_delivery_is_claimed_for_a_resend_once,
        each_attempt_number_is_handed_out_once,
        a_retry_number_is_reserved_by_its_attempts_record,
        a_delivery_is_found_from_its_ids_alone,
        an_event_of_a_few_kilobytes_comes_back_exactly,
        an_entry_never_sent_is_found_without_a_claim,
    ],
    // DynamoDB applies one UpdateItem atomically per item, which is what the adapter relies on.
    // moto does not: its update_item reads the item, evaluates the expression and writes the result
    // back without a lock, on a threaded server, and loses some of eight concurrent list_appends in
    // most runs. On moto this case would test moto, not the adapter.
    not_on_moto("moto's UpdateItem is not atomic under concurrent requests"): [
        concurrent_attempts_on_one_delivery_all_land,
        concurrent_claims_get_distinct_numbers,
    ],
}

/// A day: long enough that nothing expires during a test.
const DAY: Duration = Duration::from_secs(86_400);

/// A time well in the past, as a first-attempt time, so that tests choose their own order.
const T0: i64 = 1_700_000_000_000;

fn event() -> Event {
    Event {
        id: Uuid::new_v4(),
        source: "crud".to_owned(),
        event: "consumers".to_owned(),
        data: json!({
            "operation": "create",
            "entity": {"username": "ana", "tags": ["a", "b"], "n": 1.5, "big": 9_007_199_254_740_993_u64},
            "deep": {"a": {"b": {"c": {"d": [[[]]], "e": null, "f": ""}}}},
        }),
        timestamp: T0,
    }
}

/// A new delivery of the hook at `created_at`, its id made as the dispatcher makes them.
fn key(hook_id: Uuid, created_at: i64) -> DeliveryKey {
    DeliveryKey::new(hook_id, timed_id(Uuid::new_v4(), created_at)).expect("a timed id")
}

fn attempt(number: u32, status: Option<u16>) -> Attempt {
    Attempt {
        number,
        at: T0 + i64::from(number) * 1_000,
        status,
        latency_ms: 12,
        error: None,
        response_body: status.map(|s| format!("status {s}")),
    }
}

fn failed_attempt(number: u32) -> Attempt {
    Attempt {
        error: Some("connection refused".to_owned()),
        ..attempt(number, None)
    }
}

/// Records `attempt` as the dispatcher does: a retry follows a pending one, whose number the
/// record reserves and returns.
async fn record_claimed(
    log: &dyn DeliveryLog,
    key: DeliveryKey,
    event: &Event,
    attempt: Attempt,
    status: DeliveryStatus,
    ttl: Duration,
) -> Result<Option<u32>, StoreError> {
    let then = match status {
        DeliveryStatus::Pending => Then::Retry,
        _ => Then::Done,
    };
    log.record_attempt(key, event, attempt, status, ttl, then)
        .await
}

async fn record(log: &dyn DeliveryLog, key: DeliveryKey, event: &Event, attempt: Attempt) {
    record_claimed(log, key, event, attempt, DeliveryStatus::Pending, DAY)
        .await
        .expect("record the attempt");
}

/// Every page of a hook's listing, checking the page sizes and tokens along the way.
async fn list_all(log: &dyn DeliveryLog, hook_id: Uuid, size: usize) -> Vec<Vec<DeliveryRecord>> {
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = log
            .list(hook_id, size, usize::MAX, after)
            .await
            .expect("list deliveries");
        assert!(page.items.len() <= size, "a page never exceeds its size");
        if let Some(token) = page.next {
            assert_eq!(page.items.len(), size, "only a full page has a next page");
            let last = page.items.last().unwrap();
            assert_eq!(token, DeliveryPageToken::after(last));
            // Tokens travel as text: page on with the decoded form.
            after = Some(DeliveryPageToken::decode(&token.encode()).expect("decode our token"));
        } else {
            after = None;
        }
        pages.push(page.items);
        if after.is_none() {
            return pages;
        }
    }
}

fn ids(records: &[DeliveryRecord]) -> Vec<Uuid> {
    records.iter().map(|r| r.id).collect()
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

async fn the_first_attempt_creates_the_record(backend: &Backend) {
    let log = backend.open().await;
    // given: a delivery that has never been attempted
    let hook_id = Uuid::new_v4();
    let key = key(hook_id, T0);
    let event = event();
    assert!(log.get(hook_id, key.delivery_id).await.unwrap().is_none());

    // when: its first attempt fails with a 503 and will be retried
    let before = backend.now_millis();
    let first = attempt(1, Some(503));
    record_claimed(
        &*log,
        key,
        &event,
        first.clone(),
        DeliveryStatus::Pending,
        DAY,
    )
    .await
    .unwrap();

    // then: the record holds the event exactly, the attempt and the status
    let stored = log
        .get(hook_id, key.delivery_id)
        .await
        .unwrap()
        .expect("recorded delivery");
    assert_eq!(stored.id, key.delivery_id);
    assert_eq!(stored.hook_id, hook_id);
    assert_eq!(stored.event, event);
    assert_eq!(stored.status, DeliveryStatus::Pending);
    assert_eq!(stored.created_at, T0);
    assert!(
        stored.updated_at >= before,
        "updated_at is the time of recording"
    );
    assert_eq!(stored.attempts, vec![first]);
}

async fn later_attempts_append_in_order_and_set_the_status(backend: &Backend) {
    let log = backend.open().await;
    // given: a delivery whose first attempt failed
    let hook_id = Uuid::new_v4();
    let key = key(hook_id, T0);
    let event = event();
    let attempts = [
        failed_attempt(1),
        attempt(2, Some(500)),
        attempt(3, Some(204)),
    ];
    let statuses = [
        DeliveryStatus::Pending,
        DeliveryStatus::Pending,
        DeliveryStatus::Delivered,
    ];

    for (n, (attempt, status)) in attempts.iter().zip(statuses).enumerate() {
        // when: the next attempt is recorded (with a different event, which must be ignored)
        let sent = if n == 0 {
            event.clone()
        } else {
            Event {
                id: Uuid::new_v4(),
                ..event.clone()
            }
        };
        record_claimed(&*log, key, &sent, attempt.clone(), status, DAY)
            .await
            .unwrap();

        // then: every attempt so far is kept in order, with the latest status and the first event
        let stored = log.get(hook_id, key.delivery_id).await.unwrap().unwrap();
        assert_eq!(stored.attempts, attempts[..=n].to_vec());
        assert_eq!(stored.status, status);
        assert_eq!(stored.event, event);
        assert_eq!(stored.created_at, T0);
    }

    // and the listing shows the same single record
    let page = log.list(hook_id, 10, usize::MAX, None).await.unwrap();
    assert_eq!(ids(&page.items), vec![key.delivery_id]);
    assert_eq!(page.items[0].status, DeliveryStatus::Delivered);
    assert_eq!(page.next, None);
}

async fn unknown_deliveries_are_none(backend: &Backend) {
    let log = backend.open().await;
    // given: one recorded delivery
    let hook_id = Uuid::new_v4();
    let key = key(hook_id, T0);
    record(&*log, key, &event(), attempt(1, Some(200))).await;

    // then: another id, or this id under another hook, is unknown; an empty hook lists nothing
    assert!(log.get(hook_id, Uuid::new_v4()).await.unwrap().is_none());
    assert!(log
        .get(Uuid::new_v4(), key.delivery_id)
        .await
        .unwrap()
        .is_none());
    let page = log
        .list(Uuid::new_v4(), 10, usize::MAX, None)
        .await
        .unwrap();
    assert!(page.items.is_empty());
    assert_eq!(page.next, None);
}

async fn list_pages_newest_first_without_duplicates(backend: &Backend) {
    let log = backend.open().await;
    // given: five deliveries of a hook, first attempted at increasing times, recorded out of order
    let hook_id = Uuid::new_v4();
    let keys: Vec<DeliveryKey> = (0..5).map(|i| key(hook_id, T0 + i * 60_000)).collect();
    for i in [2, 0, 4, 1, 3] {
        record(&*log, keys[i], &event(), attempt(1, Some(500))).await;
    }

    // when: listed two at a time
    let pages = list_all(&*log, hook_id, 2).await;

    // then: pages of 2, 2 and 1, newest first, each delivery exactly once
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![2, 2, 1]);
    let listed: Vec<Uuid> = pages.iter().flat_map(|page| ids(page)).collect();
    let newest_first: Vec<Uuid> = keys.iter().rev().map(|k| k.delivery_id).collect();
    assert_eq!(listed, newest_first);
    assert_eq!(listed.iter().collect::<HashSet<_>>().len(), 5);
}

async fn a_forged_token_is_an_error_and_a_stale_one_still_pages(backend: &Backend) {
    let log = backend.open().await;
    // given: three deliveries a minute apart
    let hook_id = Uuid::new_v4();
    let keys: Vec<DeliveryKey> = (0..3).map(|i| key(hook_id, T0 + i * 60_000)).collect();
    for key in &keys {
        record(&*log, *key, &event(), attempt(1, Some(200))).await;
    }

    // then: tokens that encode() did not make are refused, without a panic
    for forged in [
        "",
        "not base64!",
        "MTcwMDAwMDAwMDAwMA",
        "AAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert!(
            DeliveryPageToken::decode(forged).is_err(),
            "{forged:?} decoded"
        );
    }

    // and a well-formed token naming no stored delivery pages from its position all the same
    let between = DeliveryPageToken {
        created_at: T0 + 90_000,
        delivery_id: Uuid::new_v4(),
    };
    let token = DeliveryPageToken::decode(&between.encode()).unwrap();
    let page = log
        .list(hook_id, 10, usize::MAX, Some(token))
        .await
        .unwrap();
    assert_eq!(
        ids(&page.items),
        vec![keys[1].delivery_id, keys[0].delivery_id]
    );
}

async fn deliveries_of_other_hooks_are_not_listed(backend: &Backend) {
    let log = backend.open().await;
    // given: deliveries of two hooks, interleaved in time
    let (ours, theirs) = (Uuid::new_v4(), Uuid::new_v4());
    let mut expected = Vec::new();
    for i in 0..3 {
        let mine = key(ours, T0 + i * 2);
        record(&*log, mine, &event(), attempt(1, Some(200))).await;
        expected.push(mine.delivery_id);
        record(
            &*log,
            key(theirs, T0 + i * 2 + 1),
            &event(),
            attempt(1, Some(200)),
        )
        .await;
    }

    // when: one hook's deliveries are listed
    let listed: Vec<Uuid> = list_all(&*log, ours, 2)
        .await
        .iter()
        .flat_map(|page| ids(page))
        .collect();

    // then: only its own, newest first
    expected.reverse();
    assert_eq!(listed, expected);
}

async fn expired_records_are_not_returned(backend: &Backend) {
    let log = backend.open().await;
    // given: one delivery kept for a second and one kept for a day
    let hook_id = Uuid::new_v4();
    let short = key(hook_id, T0 + 1);
    let long = key(hook_id, T0);
    record_claimed(
        &*log,
        short,
        &event(),
        attempt(1, Some(200)),
        DeliveryStatus::Delivered,
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    record(&*log, long, &event(), attempt(1, Some(500))).await;
    assert!(log.get(hook_id, short.delivery_id).await.unwrap().is_some());

    // when: the short one's time is up (the back end may not have purged it yet)
    backend.advance(Duration::from_millis(1_200));

    // then: neither get nor list returns it, while the other is still there
    assert!(log.get(hook_id, short.delivery_id).await.unwrap().is_none());
    assert!(log.get(hook_id, long.delivery_id).await.unwrap().is_some());
    let page = log.list(hook_id, 1, usize::MAX, None).await.unwrap();
    assert_eq!(ids(&page.items), vec![long.delivery_id]);
    assert_eq!(page.next, None);
    let window = DeliveryWindow {
        from: T0,
        to: T0 + 1,
        statuses: vec![DeliveryStatus::Pending, DeliveryStatus::Delivered],
    };
    let page = log.list_window(hook_id, &window, 10, None).await.unwrap();
    assert_eq!(ids(&page.items), vec![long.delivery_id]);
}

async fn concurrent_attempts_on_one_delivery_all_land(backend: &Backend) {
    let log = backend.open().await;
    // given: one delivery
    let hook_id = Uuid::new_v4();
    let key = key(hook_id, T0);
    let event = event();

    // when: eight attempts are recorded at the same time
    let mut tasks = tokio::task::JoinSet::new();
    for number in 1..=8 {
        let (log, event) = (log.clone(), event.clone());
        tasks.spawn(async move {
            record_claimed(
                &*log,
                key,
                &event,
                attempt(number, Some(503)),
                DeliveryStatus::Pending,
                DAY,
            )
            .await
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("task ran").expect("attempt recorded");
    }

    // then: one record holds all eight, none lost or doubled
    let stored = log.get(hook_id, key.delivery_id).await.unwrap().unwrap();
    let mut numbers: Vec<u32> = stored.attempts.iter().map(|a| a.number).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
    assert_eq!(
        ids(&log.list(hook_id, 10, usize::MAX, None).await.unwrap().items),
        vec![key.delivery_id]
    );
}

async fn attempts_and_bodies_are_capped(backend: &Backend) {
    let log = backend.open().await;
    // given: a delivery tried more often than the log keeps, with oversized response bodies
    let hook_id = Uuid::new_v4();
    let key = key(hook_id, T0);
    let total = u32::try_from(MAX_ATTEMPTS_KEPT).unwrap() + 5;

    // when: every attempt is recorded
    for number in 1..=total {
        let oversized = Attempt {
            response_body: Some("x".repeat(MAX_RESPONSE_BODY * 2)),
            ..attempt(number, Some(500))
        };
        record(&*log, key, &event(), oversized).await;
    }

    // then: only the latest attempts are kept, in order, each body cut to the cap
    let stored = log.get(hook_id, key.delivery_id).await.unwrap().unwrap();
    let numbers: Vec<u32> = stored.attempts.iter().map(|a| a.number).collect();
    assert_eq!(numbers, (6..=total).collect::<Vec<_>>());
    for attempt in &stored.attempts {
        assert_eq!(
            attempt.response_body.as_ref().map(String::len),
            Some(MAX_RESPONSE_BODY)
        );
    }
}

async fn a_large_event_is_logged_as_a_capped_copy(backend: &Backend) {
    let log = backend.open().await;
    // given: a ~900 KB event (POST /events takes 1 MiB; a DynamoDB item holds 400 KB), and one
    // just under the limit
    let hook_id = Uuid::new_v4();
    let large = Event {
        data: json!({"blob": "\"x\"".repeat(300 * 1024)}),
        ..event()
    };
    let text = serde_json::to_string(&large).unwrap();
    assert!(text.len() > 900 * 1024, "{}", text.len());
    let small = Event {
        data: json!({"blob": "y".repeat(MAX_LOGGED_EVENT_BYTES - 1024)}),
        ..event()
    };

    // when: each is attempted as often as the log keeps attempts, with the largest bodies
    let (large_key, small_key) = (key(hook_id, T0), key(hook_id, T0 + 1));
    for number in 1..=MAX_ATTEMPTS_KEPT as u32 {
        let attempt = Attempt {
            response_body: Some("b".repeat(MAX_RESPONSE_BODY)),
            ..failed_attempt(number)
        };
        for (key, event) in [(large_key, &large), (small_key, &small)] {
            record(&*log, key, event, attempt.clone()).await;
        }
    }

    // then: the large one is logged, as its start marked truncated, with its size and digest...
    let stored = log
        .get(hook_id, large_key.delivery_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.attempts.len(), MAX_ATTEMPTS_KEPT);
    assert!(stored.event_truncated);
    assert_eq!(stored.event_size, Some(text.len() as u64));
    let digest = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    assert_eq!(stored.event_sha256.as_deref(), Some(digest.as_str()));
    assert_eq!(
        (
            stored.event.id,
            &stored.event.source,
            &stored.event.event,
            stored.event.timestamp
        ),
        (large.id, &large.source, &large.event, large.timestamp)
    );
    let start = stored
        .event
        .data
        .as_str()
        .expect("the data's start, as text");
    assert!(start.len() <= LOGGED_EVENT_PREFIX_BYTES && start.len() > 1024);
    assert!(serde_json::to_string(&large.data)
        .unwrap()
        .starts_with(start));
    // ...listed the same way, and the event under the limit is kept whole.
    let listed = log.list(hook_id, 10, usize::MAX, None).await.unwrap().items;
    assert_eq!(
        ids(&listed),
        vec![small_key.delivery_id, large_key.delivery_id]
    );
    assert!(listed[1].event_truncated);
    assert!(!listed[0].event_truncated);
    assert_eq!(listed[0].event, small);
    assert_eq!(
        (listed[0].event_size, listed[0].event_sha256.as_ref()),
        (None, None)
    );
}

/// Records one attempt of `key` that leaves the delivery in `status`.
async fn record_as(log: &dyn DeliveryLog, key: DeliveryKey, status: DeliveryStatus) {
    record_claimed(log, key, &event(), attempt(1, Some(400)), status, DAY)
        .await
        .expect("record the attempt");
}

/// Every page of a window, checking the page sizes and tokens along the way.
async fn window_all(
    log: &dyn DeliveryLog,
    hook_id: Uuid,
    window: &DeliveryWindow,
    size: usize,
    mut after: Option<DeliveryPageToken>,
) -> Vec<Vec<DeliveryRecord>> {
    let mut pages = Vec::new();
    loop {
        let page = log
            .list_window(hook_id, window, size, after)
            .await
            .expect("list a window");
        assert!(page.items.len() <= size, "a page never exceeds its size");
        after = page.next.map(|token| {
            assert_eq!(page.items.len(), size, "only a full page has a next page");
            assert_eq!(token, DeliveryPageToken::after(page.items.last().unwrap()));
            DeliveryPageToken::decode(&token.encode()).expect("decode our token")
        });
        pages.push(page.items);
        if after.is_none() {
            return pages;
        }
    }
}

async fn a_window_is_oldest_first_within_inclusive_bounds(backend: &Backend) {
    let log = backend.open().await;
    // given: five failed deliveries of a hook a minute apart, recorded out of order, and failed
    // deliveries of another hook at the same times
    let (hook_id, other) = (Uuid::new_v4(), Uuid::new_v4());
    let keys: Vec<DeliveryKey> = (0..5).map(|i| key(hook_id, T0 + i * 60_000)).collect();
    for i in [3, 0, 4, 2, 1] {
        record_as(&*log, keys[i], DeliveryStatus::Failed).await;
        record_as(
            &*log,
            key(other, T0 + i as i64 * 60_000),
            DeliveryStatus::Failed,
        )
        .await;
    }

    // when: the window from the second's time to the fourth's is read
    let window = DeliveryWindow {
        from: T0 + 60_000,
        to: T0 + 180_000,
        statuses: vec![DeliveryStatus::Failed],
    };
    let page = log.list_window(hook_id, &window, 10, None).await.unwrap();

    // then: exactly those three of this hook, oldest first, both bounds included
    let expected: Vec<Uuid> = keys[1..4].iter().map(|k| k.delivery_id).collect();
    assert_eq!(ids(&page.items), expected);
    assert_eq!(page.next, None);

    // and an empty or inverted window, or an unknown hook, holds nothing
    for (hook, from, to) in [
        (hook_id, T0 + 1, T0 + 59_999),
        (hook_id, T0 + 60_000, T0),
        (Uuid::new_v4(), T0, T0 + 240_000),
    ] {
        let window = DeliveryWindow {
            from,
            to,
            ..window.clone()
        };
        let page = log.list_window(hook, &window, 10, None).await.unwrap();
        assert!(
            page.items.is_empty(),
            "{from}..={to}: {:?}",
            ids(&page.items)
        );
    }
}

async fn a_window_keeps_only_the_statuses_asked_for(backend: &Backend) {
    let log = backend.open().await;
    // given: deliveries that ended failed, delivered, pending, and failed then delivered on retry
    let hook_id = Uuid::new_v4();
    let [failed, delivered, pending, recovered] =
        [0, 1, 2, 3].map(|i| key(hook_id, T0 + i * 1_000));
    record_as(&*log, failed, DeliveryStatus::Failed).await;
    record_as(&*log, delivered, DeliveryStatus::Delivered).await;
    record_as(&*log, pending, DeliveryStatus::Pending).await;
    record_as(&*log, recovered, DeliveryStatus::Failed).await;
    record_as(&*log, recovered, DeliveryStatus::Delivered).await;

    let read = |statuses: Vec<DeliveryStatus>| {
        let log = log.clone();
        async move {
            let window = DeliveryWindow {
                from: T0,
                to: T0 + 10_000,
                statuses,
            };
            ids(&log
                .list_window(hook_id, &window, 10, None)
                .await
                .unwrap()
                .items)
        }
    };

    // then: the status that counts is the latest one
    assert_eq!(
        read(vec![DeliveryStatus::Failed]).await,
        vec![failed.delivery_id]
    );
    assert_eq!(
        read(vec![DeliveryStatus::Delivered, DeliveryStatus::Failed]).await,
        vec![
            failed.delivery_id,
            delivered.delivery_id,
            recovered.delivery_id
        ]
    );
    assert_eq!(
        read(vec![DeliveryStatus::Pending]).await,
        vec![pending.delivery_id]
    );
    assert!(read(Vec::new()).await.is_empty());
}

async fn a_window_pages_past_filtered_deliveries_without_duplicates(backend: &Backend) {
    let log = backend.open().await;
    // given: a failed delivery, then more pending ones than a back end reads in one request,
    // then two more failed ones
    let hook_id = Uuid::new_v4();
    let first = key(hook_id, T0);
    record_as(&*log, first, DeliveryStatus::Failed).await;
    for i in 1..=105 {
        record_as(&*log, key(hook_id, T0 + i), DeliveryStatus::Pending).await;
    }
    let last: Vec<DeliveryKey> = (106..108).map(|i| key(hook_id, T0 + i)).collect();
    for key in &last {
        record_as(&*log, *key, DeliveryStatus::Failed).await;
    }
    let window = DeliveryWindow {
        from: T0,
        to: T0 + 1_000,
        statuses: vec![DeliveryStatus::Failed],
    };

    // when: the failed ones are read two at a time
    let pages = window_all(&*log, hook_id, &window, 2, None).await;

    // then: pages of 2 and 1, oldest first, each exactly once
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![2, 1]);
    let read: Vec<Uuid> = pages.iter().flat_map(|page| ids(page)).collect();
    assert_eq!(
        read,
        vec![first.delivery_id, last[0].delivery_id, last[1].delivery_id]
    );

    // and a token naming no stored delivery pages on from its position
    let between = DeliveryPageToken {
        created_at: T0 + 50,
        delivery_id: Uuid::new_v4(),
    };
    let pages = window_all(&*log, hook_id, &window, 10, Some(between)).await;
    assert_eq!(
        ids(&pages[0]),
        vec![last[0].delivery_id, last[1].delivery_id]
    );
}

async fn a_listing_page_ends_at_its_byte_budget(backend: &Backend) {
    let log = backend.open().await;
    // given: five deliveries of a hook, each with a ~20 KB event
    let hook_id = Uuid::new_v4();
    let keys: Vec<DeliveryKey> = (0..5).map(|i| key(hook_id, T0 + i * 1_000)).collect();
    for key in &keys {
        let event = Event {
            data: json!({ "blob": "x".repeat(20_000) }),
            ..event()
        };
        record(&*log, *key, &event, attempt(1, Some(200))).await;
    }
    let newest_first: Vec<Uuid> = keys.iter().rev().map(|k| k.delivery_id).collect();
    let one = serde_json::to_vec(&log.list(hook_id, 1, usize::MAX, None).await.unwrap().items[0])
        .unwrap()
        .len();

    // when: pages of up to ten are read with a budget of two and a half records
    let budget = one * 5 / 2;
    let mut listed = Vec::new();
    let mut after = None;
    let mut cuts = Vec::new();
    loop {
        let page = log.list(hook_id, 10, budget, after).await.unwrap();
        // then: no page passes the budget, and a page cut by it says so and goes on
        let bytes: usize = page
            .items
            .iter()
            .map(|r| serde_json::to_vec(r).unwrap().len())
            .sum();
        assert!(bytes <= budget, "{bytes} > {budget}");
        cuts.push((page.items.len(), page.truncated_by_size));
        listed.extend(ids(&page.items));
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(cuts, vec![(2, true), (2, true), (1, false)]);
    assert_eq!(listed, newest_first, "every delivery once, newest first");

    // and a budget smaller than one record still pages, one record at a time
    let page = log.list(hook_id, 10, 1, None).await.unwrap();
    assert_eq!(ids(&page.items), newest_first[..1].to_vec());
    assert!(page.truncated_by_size);
    // and a page full by count is not cut by size
    let page = log.list(hook_id, 2, usize::MAX, None).await.unwrap();
    assert_eq!((page.items.len(), page.truncated_by_size), (2, false));
    assert!(page.next.is_some());
}

async fn window_summaries_are_the_window_without_bodies(backend: &Backend) {
    let log = backend.open().await;
    // given: deliveries with errors, statuses and response bodies, one with a large event
    let hook_id = Uuid::new_v4();
    let keys: Vec<DeliveryKey> = (0..5).map(|i| key(hook_id, T0 + i * 1_000)).collect();
    for (i, key) in keys.iter().enumerate() {
        let event = Event {
            data: json!({ "blob": "x".repeat(if i == 2 { 300_000 } else { 10 }) }),
            ..event()
        };
        record(&*log, *key, &event, failed_attempt(1)).await;
        let status = if i == 3 {
            DeliveryStatus::Failed
        } else {
            DeliveryStatus::Delivered
        };
        record_claimed(&*log, *key, &event, attempt(2, Some(200)), status, DAY)
            .await
            .unwrap();
    }
    let window = DeliveryWindow {
        from: T0 + 1_000,
        to: T0 + 10_000,
        statuses: vec![DeliveryStatus::Delivered, DeliveryStatus::Failed],
    };

    // when: the window is summarised two at a time
    let mut summaries = Vec::new();
    let mut after = None;
    loop {
        let page = log
            .summarize_window(hook_id, &window, 2, after)
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        summaries.extend(page.items);
        after = page.next;
        if after.is_none() {
            break;
        }
    }

    // then: the same deliveries, in the same order, as the window's records, cut to what the
    // stats read
    let records: Vec<DeliveryRecord> = window_all(&*log, hook_id, &window, 10, None).await.concat();
    assert_eq!(records.len(), 4);
    assert_eq!(summaries.len(), records.len());
    for (summary, record) in summaries.iter().zip(&records) {
        assert_eq!(summary.id, record.id);
        assert_eq!(summary.created_at, record.created_at);
        assert_eq!(summary.status, record.status);
        let attempts: Vec<AttemptSummary> =
            record.attempts.iter().map(AttemptSummary::from).collect();
        assert_eq!(summary.attempts, attempts);
    }
    assert!(summaries[0].attempts[0].errored && !summaries[0].attempts[1].errored);
    assert_eq!(summaries[0].attempts[1].status, Some(200));
}

/// Replay's claim: of two claims of one read of a settled delivery, only the first wins; the
/// delivery is then pending, and a claim of a stale read (or an unknown delivery) loses.
async fn a_settled_delivery_is_claimed_for_a_resend_once(backend: &Backend) {
    let log = backend.open().await;
    let hook_id = Uuid::new_v4();
    let key = key(hook_id, backend.now_millis() - 1_000);
    record_claimed(
        &*log,
        key,
        &event(),
        attempt(1, Some(400)),
        DeliveryStatus::Failed,
        DAY,
    )
    .await
    .unwrap();
    let read = log.get(hook_id, key.delivery_id).await.unwrap().unwrap();

    let first = log.claim_resend(key, read.updated_at).await.unwrap();
    let second = log.claim_resend(key, read.updated_at).await.unwrap();

    assert!(first, "the first claim wins");
    assert!(!second, "a second claim of the same read loses");
    let claimed = log.get(hook_id, key.delivery_id).await.unwrap().unwrap();
    assert_eq!(claimed.status, DeliveryStatus::Pending);
    assert_eq!(claimed.attempts.len(), 1);
    // A pending delivery is not claimed again, even on a fresh read.
    assert!(!log.claim_resend(key, claimed.updated_at).await.unwrap());
    // Once the resend's attempt settles it, it can be claimed again.
    record_claimed(
        &*log,
        key,
        &event(),
        attempt(2, Some(400)),
        DeliveryStatus::Failed,
        DAY,
    )
    .await
    .unwrap();
    let settled = log.get(hook_id, key.delivery_id).await.unwrap().unwrap();
    assert!(log.claim_resend(key, settled.updated_at).await.unwrap());
    let unknown = DeliveryKey {
        delivery_id: timed_id(Uuid::new_v4(), key.created_at),
        ..key
    };
    assert!(!log.claim_resend(unknown, 0).await.unwrap());
}

async fn each_attempt_number_is_handed_out_once(backend: &Backend) {
    let log = backend.open().await;
    // given: a delivery whose first copy sent attempt 1 without a claim (nothing recorded yet)
    let hook_id = Uuid::new_v4();
    let first = key(hook_id, T0);
    let claim = |number: u32| {
        let log = log.clone();
        async move { log.claim_attempt(first, number, DAY).await.unwrap() }
    };

    // when: copies claim numbers handed out already, and numbers above every one
    // then: attempt 1 is never claimed (the first copy has it); a number handed out gives the
    // next one above all; a higher one is given as asked
    assert_eq!(claim(1).await, 2);
    assert_eq!(claim(2).await, 3);
    assert_eq!(claim(5).await, 5);
    assert_eq!(claim(4).await, 6);
    assert_eq!(claim(7).await, 7);

    // and: other deliveries, even of the same hook, count on their own
    let other = key(hook_id, T0);
    assert_eq!(log.claim_attempt(other, 1, DAY).await.unwrap(), 2);
    // and: a claim is no record: the delivery is found and listed once an attempt is recorded
    assert!(log.get(hook_id, first.delivery_id).await.unwrap().is_none());
    assert!(ids(&log.list(hook_id, 10, usize::MAX, None).await.unwrap().items).is_empty());
    let window = DeliveryWindow {
        from: 0,
        to: T0 * 2,
        statuses: vec![DeliveryStatus::Pending, DeliveryStatus::Delivered],
    };
    let windowed = log.list_window(hook_id, &window, 10, None).await.unwrap();
    assert!(windowed.items.is_empty());
    record(&*log, first, &event(), attempt(1, Some(200))).await;
    let stored = log.get(hook_id, first.delivery_id).await.unwrap().unwrap();
    assert_eq!((stored.created_at, stored.attempts.len()), (T0, 1));
    assert_eq!(
        ids(&log.list(hook_id, 10, usize::MAX, None).await.unwrap().items),
        vec![first.delivery_id]
    );
}

async fn a_retry_number_is_reserved_by_its_attempts_record(backend: &Backend) {
    let log = backend.open().await;
    let hook_id = Uuid::new_v4();
    let key = key(hook_id, T0);
    let pending = |number| {
        let log = log.clone();
        async move {
            record_claimed(
                &*log,
                key,
                &event(),
                failed_attempt(number),
                DeliveryStatus::Pending,
                DAY,
            )
            .await
            .unwrap()
        }
    };
    // given: attempt 1 failed, and its record reserved the retry's number in the same write
    assert_eq!(pending(1).await, Some(2));
    // when: a copy of attempt 1 claims (its message came back): 2 is the retry's
    assert_eq!(log.claim_attempt(key, 1, DAY).await.unwrap(), 3);
    // and: the retry (2) fails too, and reserves the next: 3 is the copy's, so it gets 4
    assert_eq!(pending(2).await, Some(4));
    // then: the copy's attempt 3, delivered, reserves nothing, and every number stays taken
    let done = record_claimed(
        &*log,
        key,
        &event(),
        attempt(3, Some(200)),
        DeliveryStatus::Delivered,
        DAY,
    )
    .await
    .unwrap();
    assert_eq!(done, None);
    assert_eq!(log.claim_attempt(key, 1, DAY).await.unwrap(), 5);
    let stored = log.get(hook_id, key.delivery_id).await.unwrap().unwrap();
    let numbers: Vec<u32> = stored.attempts.iter().map(|a| a.number).collect();
    assert_eq!(numbers, [1, 2, 3]);
    assert_eq!(stored.status, DeliveryStatus::Delivered);
}

async fn a_delivery_is_found_from_its_ids_alone(backend: &Backend) {
    let log = backend.open().await;
    // given: deliveries of one hook at several times, the id of each carrying its time
    let hook_id = Uuid::new_v4();
    let keys: Vec<DeliveryKey> = [T0 + 7, T0, T0 + 86_400_000]
        .into_iter()
        .map(|at| key(hook_id, at))
        .collect();
    for key in &keys {
        record(&*log, *key, &event(), attempt(1, Some(500))).await;
        // and: the same delivery recorded again (an event received again keeps its id)
        record(&*log, *key, &event(), attempt(2, Some(200))).await;
    }
    // then: each is found by the hook's id and its own, one record with both attempts
    for key in &keys {
        let found = log.get(hook_id, key.delivery_id).await.unwrap().unwrap();
        assert_eq!(found.created_at, time_of(key.delivery_id).unwrap());
        assert_eq!(found.attempts.len(), 2);
        // and: not under another hook
        assert!(log
            .get(Uuid::new_v4(), key.delivery_id)
            .await
            .unwrap()
            .is_none());
    }
    // and: the listing has each once, newest first
    let listed = ids(&log.list(hook_id, 10, usize::MAX, None).await.unwrap().items);
    assert_eq!(
        listed,
        [
            keys[2].delivery_id,
            keys[0].delivery_id,
            keys[1].delivery_id
        ]
    );
}

async fn an_entry_never_sent_is_found_without_a_claim(backend: &Backend) {
    let log = backend.open().await;
    // given: a delivery to a paused hook, logged as not sent (its one entry numbered 0, unclaimed)
    let hook_id = Uuid::new_v4();
    let key = key(hook_id, T0);
    log.record_attempt(
        key,
        &event(),
        failed_attempt(0),
        DeliveryStatus::NotSent,
        DAY,
        Then::Done,
    )
    .await
    .unwrap();

    // then: it is found by its id, and listed
    let stored = log.get(hook_id, key.delivery_id).await.unwrap().unwrap();
    assert_eq!(stored.status, DeliveryStatus::NotSent);
    assert_eq!(
        ids(&log.list(hook_id, 10, usize::MAX, None).await.unwrap().items),
        vec![key.delivery_id]
    );
}

async fn concurrent_claims_get_distinct_numbers(backend: &Backend) {
    let log = backend.open().await;
    // given: one delivery, and eight copies of its first attempt claiming at the same time
    let key = key(Uuid::new_v4(), T0);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let log = log.clone();
        tasks.spawn(async move { log.claim_attempt(key, 1, DAY).await });
    }
    // then: each copy gets a number of its own above the first copy's 1: 2 to 9
    let mut numbers = Vec::new();
    while let Some(result) = tasks.join_next().await {
        numbers.push(result.expect("task ran").expect("claimed"));
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (2..=9).collect::<Vec<_>>());
}

async fn an_event_of_a_few_kilobytes_comes_back_exactly(backend: &Backend) {
    let log = backend.open().await;
    // given: an event of about 2 KB (stored deflated by the DynamoDB adapter), with numbers that
    // only text keeps exactly, recorded by two attempts
    let hook_id = Uuid::new_v4();
    let key = key(hook_id, T0);
    let routes: Vec<_> = (0..20)
        .map(|i| {
            json!({"name": format!("orders-{i}"), "paths": ["/orders", "/v2/orders"],
                        "big": 9_007_199_254_740_993_u64, "ratio": 0.1, "tags": null})
        })
        .collect();
    let event = Event {
        data: json!({"operation": "update", "entity": {"routes": routes}, "old_entity": null}),
        ..event()
    };
    assert!(serde_json::to_string(&event).unwrap().len() > 1500);
    record(&*log, key, &event, failed_attempt(1)).await;
    record(&*log, key, &event, attempt(2, Some(200))).await;
    // then: every read gives it back as it was sent
    let found = log.get(hook_id, key.delivery_id).await.unwrap().unwrap();
    assert_eq!(found.event, event);
    assert!(!found.event_truncated);
    let listed = log.list(hook_id, 10, usize::MAX, None).await.unwrap();
    assert_eq!(listed.items[0].event, event);
    let window = DeliveryWindow {
        from: T0,
        to: T0,
        statuses: vec![DeliveryStatus::Pending],
    };
    let windowed = log.list_window(hook_id, &window, 10, None).await.unwrap();
    assert_eq!(windowed.items[0].event, event);
}

//! The admin API's reads of the delivery log hold a bounded amount of memory however large the
//! logged events are: `GET /event-hooks/stats` reads a projection without events, and a page of
//! `GET /event-hooks/{id}/deliveries` stops at its byte budget (`truncated_by_size`). Measured on
//! the real local server: its peak RSS (`VmHWM`) while several of each run at once, over a log of
//! 400 deliveries whose events are just under the logged cap.

use std::time::Duration;

use event_hooks::delivery_log::sqlite::SqliteDeliveryLog;
use event_hooks::delivery_log::{
    timed_id, Attempt, DeliveryKey, DeliveryLog, DeliveryStatus, Then,
};
use event_hooks::events::{now_millis, Event};
use event_hooks::limits::{MAX_DELIVERY_PAGE_BYTES, MAX_LOGGED_EVENT_BYTES};
use event_hooks::sqlite::Database;
use event_hooks_tests::server::LocalServer;
use serde_json::{json, Value};
use uuid::Uuid;

/// Deliveries logged: twice the audit's 200, so that a read holding whole records stands well
/// above the bound (it grows with the log; the reads as built do not).
const DELIVERIES: usize = 400;

/// Concurrent calls of each read per round, and rounds.
const CONCURRENT: usize = 4;
const ROUNDS: usize = 3;

/// Most the server's peak RSS may grow over its RSS before the reads, in MiB. The log holds about
/// 56 MiB of records. Measured on a debug build with the server's allocator (mimalloc, without
/// transparent huge pages): 77–99 MiB as built, alone or beside the other tests; 150–175 MiB with
/// the stats holding each record's body. (Under glibc's malloc, 200 deliveries: 70–80 MiB as
/// built, ~200 MiB reading whole records, ~470 MiB with pages uncapped.)
const GROWTH_BOUND_MIB: u64 = 130;

/// A `/proc/<pid>/status` field, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {status}"))
}

/// Logs `DELIVERIES` delivered deliveries of `hook_id`, each with an event just under the cap and
/// three attempts with full response bodies, first attempted within the last minute.
async fn fill_log(server: &LocalServer, hook_id: Uuid) {
    let db = Database::open(&server.data_dir.join("deliveries.db")).expect("open deliveries.db");
    let log = SqliteDeliveryLog::new(db).await.expect("open the log");
    let now = now_millis();
    for i in 0..DELIVERIES {
        let key = DeliveryKey::new(hook_id, timed_id(Uuid::new_v4(), now - i as i64)).unwrap();
        let event = Event {
            id: Uuid::new_v4(),
            source: "crud".into(),
            event: "consumers".into(),
            data: json!({ "blob": "x".repeat(MAX_LOGGED_EVENT_BYTES - 1024) }),
            timestamp: now,
        };
        for number in 1..=3 {
            let attempt = Attempt {
                number,
                at: now,
                status: Some(if number < 3 { 500 } else { 200 }),
                latency_ms: 5,
                error: None,
                response_body: Some("r".repeat(4096)),
            };
            let status = if number < 3 {
                DeliveryStatus::Pending
            } else {
                DeliveryStatus::Delivered
            };
            let then = match status {
                DeliveryStatus::Pending => Then::Retry,
                _ => Then::Done,
            };
            log.record_attempt(
                key,
                &event,
                attempt,
                status,
                Duration::from_secs(3600),
                then,
            )
            .await
            .expect("record an attempt");
        }
    }
}

async fn get(client: reqwest::Client, url: String) -> Value {
    let response = client.get(url).send().await.expect("GET");
    assert_eq!(response.status(), 200);
    response.json().await.expect("a JSON body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stats_and_delivery_pages_keep_the_servers_memory_flat_over_large_events() {
    // given: a local server whose log holds 400 deliveries of ~128 KiB events
    let server = LocalServer::start(&[]);
    let client = reqwest::Client::new();
    let created = client
        .post(server.url("/event-hooks"))
        .json(&json!({"source": "crud", "event": "consumers", "handler": "log"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let hook_id: Uuid = created.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    fill_log(&server, hook_id).await;
    let before = status_kib(server.pid(), "VmRSS:");

    // when: the stats and the largest page of deliveries are read, several of each at once
    let stats_url = server.url("/event-hooks/stats");
    let page_url = server.url(&format!("/event-hooks/{hook_id}/deliveries?size=1000"));
    for _ in 0..ROUNDS {
        let mut calls = Vec::new();
        for _ in 0..CONCURRENT {
            calls.push(tokio::spawn(get(client.clone(), stats_url.clone())));
            calls.push(tokio::spawn(get(client.clone(), page_url.clone())));
        }
        for call in calls {
            let body = call.await.unwrap();
            if body.get("totals").is_some() {
                // then: the stats still count every delivery and attempt
                assert_eq!(body["totals"]["delivered"], DELIVERIES);
                assert_eq!(body["totals"]["attempts"], DELIVERIES * 3);
                assert_eq!(body["totals"]["failures"], DELIVERIES * 2);
            } else {
                // and a page stops at its byte budget, saying so
                assert_eq!(body["truncated_by_size"], true, "{:?}", body["next"]);
                let items = body["data"].as_array().unwrap();
                assert!(!items.is_empty() && items.len() < DELIVERIES);
                let bytes: usize = items.iter().map(|r| r.to_string().len()).sum();
                assert!(bytes <= MAX_DELIVERY_PAGE_BYTES, "{bytes}");
            }
        }
    }
    let peak = status_kib(server.pid(), "VmHWM:");
    let growth_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "server RSS before the reads {} MiB, peak {} MiB, growth {growth_mib} MiB",
        before / 1024,
        peak / 1024
    );

    // then: the peak stayed within the bound
    assert!(
        growth_mib <= GROWTH_BOUND_MIB,
        "peak RSS grew {growth_mib} MiB (bound {GROWTH_BOUND_MIB} MiB)"
    );

    // and following `next` lists every delivery once
    let mut seen = std::collections::HashSet::new();
    let mut url = Some(page_url);
    while let Some(next) = url {
        let body = get(client.clone(), next).await;
        for item in body["data"].as_array().unwrap() {
            assert!(seen.insert(item["id"].as_str().unwrap().to_owned()));
        }
        url = body["next"].as_str().map(|path| server.url(path));
    }
    assert_eq!(seen.len(), DELIVERIES);
}

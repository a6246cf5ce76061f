//! `GET /dead-letters` of the local server pages newest first: `size` per page (default 100,
//! at most 1,000) and an opaque `offset` cursor, with `next` naming the following page, as the
//! admin API's lists do. Both dead-letter queues are merged into one listing.

use std::collections::BTreeSet;

use event_hooks::queue::sqlite::SqliteQueue;
use event_hooks::queue::{Outgoing, Queue};
use event_hooks::sqlite::Database;
use event_hooks_tests::server::LocalServer;
use serde_json::{json, Value};

async fn get(server: &LocalServer, path: &str) -> (u16, Value) {
    let response = reqwest::get(server.url(path)).await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn walking_next_lists_every_dead_letter_once_newest_first() {
    // given: 250 dead letters, alternating between the two dead-letter queues, sent in order
    let server = LocalServer::in_process(&[]);
    let db = Database::open(&server.data_dir.join("queue.db")).unwrap();
    let deliveries = SqliteQueue::open(db.clone(), "deliveries-dead-letter")
        .await
        .unwrap();
    let events = SqliteQueue::open(db, "events-dead-letter").await.unwrap();
    let mut sent = Vec::new();
    for i in 0..250 {
        let queue = if i % 2 == 0 { &deliveries } else { &events };
        sent.push(
            queue
                .send(Outgoing::now(json!({ "n": i }).to_string()))
                .await
                .unwrap(),
        );
    }

    // when: the listing is walked from its first page along `next`, 100 a page
    let mut path = "/dead-letters?size=100".to_owned();
    let mut pages = Vec::new();
    loop {
        let (status, page) = get(&server, &path).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"], 250);
        pages.push(page["data"].as_array().unwrap().clone());
        assert!(
            pages.len() <= 3,
            "more pages than 250 dead letters fill (at offset {})",
            page["offset"]
        );
        match page["next"].as_str() {
            Some(next) => {
                assert!(next.contains(page["offset"].as_str().unwrap()), "{page}");
                path = next.to_owned();
            }
            None => break,
        }
    }

    // then: pages of 100, 100 and 50 hold every dead letter once, newest first
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![100, 100, 50]
    );
    let listed: Vec<Value> = pages.into_iter().flatten().collect();
    let numbers: Vec<u64> = listed
        .iter()
        .map(|m| m["body"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, (0..250).rev().collect::<Vec<u64>>());
    let ids: BTreeSet<&str> = listed.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 250, "a dead letter listed twice");
    assert_eq!(ids, sent.iter().map(String::as_str).collect());
    assert!(listed
        .windows(2)
        .all(|pair| pair[0]["dead_lettered_at"].as_i64() >= pair[1]["dead_lettered_at"].as_i64()));

    // and the default page is 100, a bad cursor or size a 400 in Kong's shape
    let (_, first) = get(&server, "/dead-letters").await;
    assert_eq!(first["data"].as_array().unwrap().len(), 100);
    assert_eq!(first["data"][0]["body"]["n"], 249);
    let (status, body) = get(&server, "/dead-letters?offset=nope!").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["name"], "invalid offset");
    let (status, _) = get(&server, "/dead-letters?size=1001").await;
    assert_eq!(status, 400);
}

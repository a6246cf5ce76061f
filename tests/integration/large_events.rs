//! An event too large for the delivery log to keep whole, through the real local server: the
//! receiver gets all of it, the log keeps a capped copy marked `event_truncated` with the whole
//! event's size and SHA-256, and such a delivery is never sent again from the log (retry 409,
//! replay lists it under `skipped`). A small event's record is left as it was.

use std::time::{Duration, Instant};

use event_hooks::limits::{LOGGED_EVENT_PREFIX_BYTES, MAX_BODY_BYTES, MAX_LOGGED_EVENT_BYTES};
use event_hooks_tests::receiver::Receiver;
use event_hooks_tests::server::LocalServer;
use serde_json::{json, Value};
use sha2::Digest as _;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

/// Emits `source`/`event` with `data`, the given id and timestamp; 202.
async fn emit(server: &LocalServer, id: Uuid, timestamp: i64, data: &Value) {
    let response = reqwest::Client::new()
        .post(server.url("/events"))
        .json(&json!({"id": id, "source": "crud", "event": "consumers",
                      "data": data, "timestamp": timestamp}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
}

/// The hook's logged deliveries, newest first.
async fn deliveries(server: &LocalServer, hook: &str) -> Vec<Value> {
    let response = reqwest::get(server.url(&format!("/event-hooks/{hook}/deliveries?size=100")))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let listed: Value = response.json().await.unwrap();
    listed["data"].as_array().unwrap().clone()
}

/// The logged delivery of the event `event_id` once it has `attempts` attempts and is delivered
/// (panics after `WAIT`).
async fn delivered(server: &LocalServer, hook: &str, event_id: Uuid, attempts: usize) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let all = deliveries(server, hook).await;
        let found = all
            .iter()
            .find(|d| d["event"]["id"] == event_id.to_string())
            .cloned();
        if let Some(record) = found {
            if record["status"] == "delivered"
                && record["attempts"].as_array().unwrap().len() == attempts
            {
                return record;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no delivered record of {event_id} with {attempts} attempts: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The whole event's JSON text as the delivery log defines it for `event_size` and
/// `event_sha256`: the envelope's fields in order id, source, event, data, timestamp, compact.
/// Spelled out here rather than by serialising the crate's `Event`, so that it checks that
/// definition instead of repeating it.
fn event_text(id: Uuid, timestamp: i64, data: &Value) -> String {
    format!(
        r#"{{"id":"{id}","source":"crud","event":"consumers","data":{},"timestamp":{timestamp}}}"#,
        serde_json::to_string(data).unwrap()
    )
}

#[tokio::test]
async fn a_large_event_is_delivered_whole_logged_capped_and_never_sent_from_the_log() {
    // given: a webhook hook to a loopback receiver
    let server = LocalServer::in_process(&[]);
    let receiver = Receiver::start().await;
    let created: Value = reqwest::Client::new()
        .post(server.url("/event-hooks"))
        .json(
            &json!({"source": "crud", "event": "consumers", "handler": "webhook",
                      "config": {"url": receiver.url("/r")}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hook = created["id"].as_str().expect("a hook id").to_owned();

    // when: a ~900 KB event is emitted (the body limit is 1 MiB), with characters JSON escapes
    // in its data, and then a small one
    let large_id = Uuid::new_v4();
    let large_data = json!({
        "operation": "create",
        "entity": {"username": "big", "note": "a \"quoted\" line\n", "blob": "x".repeat(900_000)},
    });
    // (timestamped now: the replay below takes the deliveries of the last day's events)
    let at = event_hooks::events::now_millis();
    let text = event_text(large_id, at, &large_data);
    assert!(text.len() > 900_000 && text.len() < MAX_BODY_BYTES - 1024);
    emit(&server, large_id, at, &large_data).await;
    let small_id = Uuid::new_v4();
    let small_data = json!({"operation": "create", "entity": {"username": "small"}});
    emit(&server, small_id, at + 1, &small_data).await;

    // then: the receiver gets the whole large event (its data with event and source added)
    let received = receiver.wait_for("/r", 2, WAIT).await;
    let mut whole = large_data.clone();
    whole["event"] = json!("consumers");
    whole["source"] = json!("crud");
    let large_request = received
        .iter()
        .find(|r| r.json()["entity"]["username"] == "big")
        .expect("the large event delivered");
    assert_eq!(large_request.json(), whole);
    let large_delivery = large_request.headers["x-event-hook-delivery"].clone();

    // and its record is a capped copy with the whole event's size and SHA-256
    let record = delivered(&server, &hook, large_id, 1).await;
    assert_eq!(record["id"], large_delivery.as_str());
    assert_eq!(record["event_truncated"], true, "{record}");
    assert_eq!(record["event_size"], text.len(), "{record}");
    let digest = hex::encode(sha2::Sha256::digest(text.as_bytes()));
    assert_eq!(record["event_sha256"], digest.as_str(), "{record}");
    let event = &record["event"];
    assert_eq!(
        (
            &event["id"],
            &event["source"],
            &event["event"],
            &event["timestamp"]
        ),
        (
            &json!(large_id),
            &json!("crud"),
            &json!("consumers"),
            &json!(at)
        )
    );
    let start = event["data"].as_str().expect("the data's start, as text");
    assert_eq!(start.len(), LOGGED_EVENT_PREFIX_BYTES);
    assert!(serde_json::to_string(&large_data)
        .unwrap()
        .starts_with(start));
    assert!(record.to_string().len() < MAX_LOGGED_EVENT_BYTES);

    // and the small event's record is as before: whole, without the digest fields
    let small = delivered(&server, &hook, small_id, 1).await;
    assert_eq!(small["event_truncated"], false, "{small}");
    assert!(small.get("event_size").is_none(), "{small}");
    assert!(small.get("event_sha256").is_none(), "{small}");
    assert_eq!(
        small["event"],
        json!({"id": small_id, "source": "crud", "event": "consumers",
               "data": small_data, "timestamp": at + 1})
    );
    let small_delivery = small["id"].as_str().unwrap().to_owned();

    // when: the large delivery is retried
    let client = reqwest::Client::new();
    let response = client
        .post(server.url(&format!(
            "/event-hooks/{hook}/deliveries/{large_delivery}/retry"
        )))
        .send()
        .await
        .unwrap();

    // then: 409 in Kong's shape, saying why and what to do instead
    assert_eq!(response.status(), 409);
    let answer: Value = response.json().await.unwrap();
    let message = answer["message"].as_str().expect("a message").to_owned();
    assert_eq!(answer, json!({ "message": message }));
    for part in [
        large_delivery.as_str(),
        "cannot be sent again",
        &text.len().to_string(),
        "event_truncated",
        "POST /events",
    ] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }

    // when: every settled delivery is replayed
    let response = client
        .post(server.url(&format!("/event-hooks/{hook}/deliveries/replay")))
        .json(&json!({"status": "all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();

    // then: the large one is skipped, the small one (and the creation ping) queued
    assert_eq!(answer["skipped"], json!([large_delivery]), "{answer}");
    let queued = answer["deliveries"].as_array().unwrap();
    assert_eq!(answer["queued"], queued.len(), "{answer}");
    assert!(queued.contains(&json!(small_delivery)), "{answer}");
    assert!(!queued.contains(&json!(large_delivery)), "{answer}");

    // and once the small one is delivered again, the large one was sent only the first time
    delivered(&server, &hook, small_id, 2).await;
    let again = receiver.wait_for("/r", 3, WAIT).await;
    server.wait_until_settled().await;
    let sent_large = receiver
        .requests()
        .iter()
        .filter(|r| r.headers.get("x-event-hook-delivery") == Some(&large_delivery))
        .count();
    assert_eq!(sent_large, 1, "{} requests", again.len());
    assert_eq!(receiver.requests().len(), 3);
    let record = delivered(&server, &hook, large_id, 1).await;
    assert_eq!(record["event_truncated"], true);
}

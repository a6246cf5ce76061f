//! `Idempotency-Key` on `POST /events` through the real local server: the same key answers the
//! first event's id and delivers once, a different body under the key is refused, no key behaves
//! as before, and keys survive a restart.

use std::time::Duration;

use event_hooks_tests::receiver::Receiver;
use event_hooks_tests::server::LocalServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// Posts `body` (raw JSON text) to `/events`, with `key` as `Idempotency-Key` when given.
async fn post(server: &LocalServer, key: Option<&str>, body: &str) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(server.url("/events"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn consumer_created(name: &str) -> String {
    json!({"source":"crud","event":"consumers","data":{"operation":"create","entity":{"username":name}}})
        .to_string()
}

#[tokio::test]
async fn the_same_key_answers_the_first_id_and_delivers_once() {
    // given: a webhook on consumers
    let server = LocalServer::start(&[]);
    let receiver = Receiver::start().await;
    server
        .create_hook(
            &json!({"source":"crud","event":"consumers","handler":"webhook",
               "config":{"url":receiver.url("/hook")}}),
        )
        .await;

    // when: an event is posted twice with one key (the second time with its fields in another
    // order, as a client's retry may), then with the key and a different body
    let (status, first) = post(&server, Some("order-42"), &consumer_created("bob")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let reordered = r#"{"data":{"entity":{"username":"bob"},"operation":"create"},
                        "event":"consumers","source":"crud"}"#;
    let (status, again) = post(&server, Some("order-42"), reordered).await;
    let (conflict, refused) = post(&server, Some("order-42"), &consumer_created("eve")).await;

    // then: the retry gets the first id, the different body a 422
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again, first);
    assert_eq!(conflict, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        refused,
        json!({"message": "Idempotency-Key reused with a different body"})
    );

    // when: the same event is posted twice without a key
    let (_, one) = post(&server, None, &consumer_created("carol")).await;
    let (_, two) = post(&server, None, &consumer_created("carol")).await;

    // then: two events
    assert_ne!(one["id"], two["id"]);

    // and once all is dispatched: bob once, carol twice, eve never
    receiver.wait_for("/hook", 3, WAIT).await;
    server.wait_until_settled().await;
    let mut names: Vec<String> = receiver
        .requests()
        .iter()
        .filter(|r| r.path == "/hook")
        .map(|r| r.json()["entity"]["username"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["bob", "carol", "carol"]);
}

#[tokio::test]
async fn malformed_keys_are_400s_and_255_visible_bytes_pass() {
    let server = LocalServer::start(&[]);
    let long = "k".repeat(256);
    for key in [long.as_str(), "two words", ""] {
        let (status, body) = post(&server, Some(key), &consumer_created("bob")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{key:?}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.starts_with("Idempotency-Key must"), "{message}");
    }
    // A key of 255 visible bytes is fine.
    let longest: String = ('!'..='~').cycle().take(255).collect();
    let (status, body) = post(&server, Some(&longest), &consumer_created("bob")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
}

#[tokio::test]
async fn keys_survive_a_restart() {
    // given: an event accepted under a key, and the server restarted on the same data
    let server = LocalServer::start(&[]);
    let data_dir = server.data_dir.clone();
    let (status, first) = post(&server, Some("k-1"), &consumer_created("bob")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(server.stop(), "clean stop");
    let server = LocalServer::start_in(&data_dir, &[]);

    // when: the client retries
    let (status, again) = post(&server, Some("k-1"), &consumer_created("bob")).await;

    // then: it gets the first id
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(again, first);
}

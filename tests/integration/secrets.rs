//! One rule for a hook's secrets (spec §1, §10): they leave the service only to the admin,
//! through the admin API. Each other exit is scanned byte for byte for the secret and the
//! rotated-out one: the body a hook watching `crud`/`event_hooks` receives, its delivery log, a
//! `log` hook's line in the server log, the change pings, a dead-lettered change ping in
//! `GET /dead-letters`. Beside them: `Cache-Control: no-store` on admin answers, and URLs with
//! credentials refused.

use std::time::{Duration, Instant};

use event_hooks_tests::receiver::Receiver;
use event_hooks_tests::server::{closed_port, temp_data_dir, LocalServer};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
/// The secret a hook is created with, rotated out later.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The secret the rotation sets.
const NEW_SECRET: &str = "whsec_c2Vjb25kIGtleSBvZiB0d2VudHktZm91ciBi";
/// The marker in place of a set secret.
const REDACTED: &str = "[redacted]";

/// Panics when `bytes` contain either secret: `what` names the exit.
fn assert_no_secret(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for secret in [SECRET, NEW_SECRET] {
        assert!(!text.contains(secret), "{what} shows a secret: {text}");
    }
}

async fn call(url: String, method: reqwest::Method, body: Option<Value>) -> reqwest::Response {
    let request = reqwest::Client::new().request(method, url);
    match body {
        Some(body) => request.json(&body),
        None => request,
    }
    .send()
    .await
    .unwrap()
}

/// Rotates the hook's secret to [`NEW_SECRET`].
async fn rotate(server: &LocalServer, id: &str) {
    let response = call(
        server.url(&format!("/event-hooks/{id}/secret/rotate")),
        reqwest::Method::POST,
        Some(json!({"secret": NEW_SECRET})),
    )
    .await;
    assert_eq!(response.status(), 200);
}

/// Waits until a GET of `url` answers a body containing `needle` at least `count` times.
async fn wait_for_text(url: &str, needle: &str, count: usize) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = reqwest::get(url).await.unwrap().text().await.unwrap();
        if text.matches(needle).count() >= count {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: no {count}× {needle}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn crud_events_pings_delivery_logs_and_log_lines_carry_secrets_redacted() {
    let data_dir = temp_data_dir();
    let log = data_dir.join("server.log");
    let server = LocalServer::start_logged(&data_dir, &log, &[]);
    let receiver = Receiver::start().await;

    // Two hooks that watch hooks: a webhook and a log hook.
    let watcher = server
        .create_hook(
            &json!({"source":"crud","event":"event_hooks","handler":"webhook",
               "config":{"url":receiver.url("/watch")}}),
        )
        .await;
    let logger = server
        .create_hook(&json!({"source":"dao:crud","handler":"log"}))
        .await;

    // A signing hook: created, rotated (the old secret goes to previous_secret), edited.
    let target = server
        .create_hook(&json!({"source":"balancer","handler":"webhook",
               "config":{"url":receiver.url("/target"),"signature":"standard","secret":SECRET}}))
        .await;
    assert_eq!(target["config"]["secret"], SECRET, "the admin sees it");
    let id = target["id"].as_str().unwrap();
    rotate(&server, id).await;
    let response = call(
        server.url(&format!("/event-hooks/{id}")),
        reqwest::Method::PATCH,
        Some(json!({"tags":["edited"]})),
    )
    .await;
    assert_eq!(response.status(), 200);

    // The admin API shows the current secret, never the rotated-out one.
    let read = reqwest::get(server.url(&format!("/event-hooks/{id}")))
        .await
        .unwrap();
    assert_eq!(read.headers()["cache-control"], "no-store");
    let read: Value = read.json().await.unwrap();
    assert_eq!(read["config"]["secret"], NEW_SECRET);
    assert!(read["config"].get("previous_secret").is_none(), "{read}");
    assert!(!read.to_string().contains(SECRET), "{read}");

    // The watcher gets create, rotation and edit of the target: each body redacted, the
    // rotation's old_entity too.
    let deadline = Instant::now() + WAIT;
    let requests = loop {
        let requests = receiver.wait_for("/watch", 1, WAIT).await;
        if requests.iter().any(|r| r.text().contains("edited")) {
            break requests;
        }
        assert!(Instant::now() < deadline, "no edit seen: {requests:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut rotation_seen = false;
    for request in &requests {
        assert_no_secret("a crud event's body", &request.body);
        let body = request.json();
        if body["entity"]["id"] == id {
            assert_eq!(body["entity"]["config"]["secret"], REDACTED, "{body}");
            assert!(body["entity"]["config"].get("previous_secret").is_none());
            if body["operation"] == "update" {
                assert_eq!(body["old_entity"]["config"]["secret"], REDACTED, "{body}");
                rotation_seen = true;
            }
        }
    }
    assert!(rotation_seen, "{requests:?}");

    // The change pings of the target.
    let deadline = Instant::now() + WAIT;
    while receiver.pings().len() < 3 {
        assert!(Instant::now() < deadline, "{:?}", receiver.pings());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for ping in receiver.pings() {
        assert_no_secret("a change ping", &ping.body);
    }

    // The delivery logs of both watchers.
    let watcher_id = watcher["id"].as_str().unwrap();
    let text = wait_for_text(
        &server.url(&format!("/event-hooks/{watcher_id}/deliveries")),
        "edited",
        1,
    )
    .await;
    assert_no_secret("the watcher's delivery log", text.as_bytes());
    let logger_id = logger["id"].as_str().unwrap();
    let text = wait_for_text(
        &server.url(&format!("/event-hooks/{logger_id}/deliveries")),
        "edited",
        1,
    )
    .await;
    assert_no_secret("the log hook's delivery log", text.as_bytes());

    // The log hook's lines in the server log, once the edit's has been written.
    let deadline = Instant::now() + WAIT;
    loop {
        let written = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<&str> = written
            .lines()
            .filter(|l| l.contains("event hook log") && l.contains(id))
            .collect();
        if lines.iter().any(|l| l.contains("edited")) {
            assert_no_secret("the server log", written.as_bytes());
            assert!(lines.iter().all(|l| l.contains(REDACTED)), "{lines:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no log line: {written}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_dead_lettered_change_ping_is_listed_redacted_and_still_signs_when_redriven() {
    let server = LocalServer::start(&["--retry-schedule", "none", "--connect-timeout", "1"]);
    // Nobody listens there: every attempt fails at once, and the ping is dead-lettered.
    let (_held, closed) = closed_port();
    let closed = format!("http://{closed}/gone");
    let hook = server
        .create_hook(&json!({"source":"balancer","handler":"webhook",
               "config":{"url":closed,"signature":"standard","secret":SECRET}}))
        .await;
    let id = hook["id"].as_str().unwrap();
    rotate(&server, id).await;

    // Both pings (create, rotation) end as dead letters that carry the hook.
    let deadline = Instant::now() + WAIT;
    let listed = loop {
        let response = reqwest::get(server.url("/dead-letters")).await.unwrap();
        assert_eq!(response.headers()["cache-control"], "no-store");
        let listed: Value = response.json().await.unwrap();
        if listed["total"].as_u64() >= Some(2) {
            break listed;
        }
        assert!(Instant::now() < deadline, "{listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_no_secret("GET /dead-letters", listed.to_string().as_bytes());
    let letters = listed["data"].as_array().unwrap();
    let rotation = letters
        .iter()
        .find(|l| l["body"]["event"]["data"]["operation"] == "update")
        .unwrap_or_else(|| panic!("no dead-lettered rotation ping: {listed}"));
    assert_eq!(rotation["body"]["hook"]["config"]["secret"], REDACTED);
    assert!(rotation["body"]["hook"]["config"]
        .get("previous_secret")
        .is_none());

    // The queued message itself keeps the secrets: redriven, the ping can still be signed.
    let db = event_hooks::sqlite::Database::open(&server.data_dir.join("queue.db")).unwrap();
    let queue = event_hooks::queue::sqlite::SqliteQueue::open(db, "deliveries-dead-letter")
        .await
        .unwrap();
    let (messages, _) = queue.peek(10).await.unwrap();
    assert!(
        messages.iter().any(|m| m.body.contains(SECRET)),
        "the queued ping lost the secret it signs with"
    );
}

#[tokio::test]
async fn every_admin_answer_is_no_store() {
    let server = LocalServer::start(&[]);
    let hook = server
        .create_hook(&json!({"source":"balancer","handler":"log"}))
        .await;
    let id = hook["id"].as_str().unwrap();
    for (method, path, body) in [
        ("GET", "/event-hooks".to_string(), None),
        ("GET", format!("/event-hooks/{id}"), None),
        ("GET", "/event-hooks/nope".to_string(), None),
        ("POST", "/event-hooks".to_string(), Some(json!({}))),
        ("DELETE", "/event-hooks".to_string(), None),
        ("OPTIONS", "/event-hooks".to_string(), None),
        ("POST", format!("/event-hooks/{id}/test"), Some(json!({}))),
        ("GET", "/event-hooks/sources".to_string(), None),
        (
            "GET",
            "/mint/organizations/myorg/webhooks".to_string(),
            None,
        ),
        ("GET", "/dead-letters".to_string(), None),
        ("GET", "/nowhere".to_string(), None),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = call(server.url(&path), method.clone(), body).await;
        assert_eq!(
            response
                .headers()
                .get("cache-control")
                .map(|v| v.to_str().unwrap()),
            Some("no-store"),
            "{method} {path} ({})",
            response.status()
        );
    }

    // Also the refusals of the token check.
    let guarded = LocalServer::start(&["--admin-token", "t0ken"]);
    let response = reqwest::get(guarded.url("/event-hooks")).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn urls_with_credentials_are_refused() {
    let server = LocalServer::start(&[]);
    for handler in [
        json!({"handler":"webhook","config":{"url":"https://user:pa55@example.com/h"}}),
        json!({"handler":"webhook-custom",
               "config":{"url":"https://user@example.com/h","method":"POST"}}),
    ] {
        let mut hook = handler;
        hook["source"] = json!("balancer");
        let response = call(
            server.url("/event-hooks"),
            reqwest::Method::POST,
            Some(hook),
        )
        .await;
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], 2, "{body}");
        assert_eq!(body["name"], "schema violation");
        assert_eq!(
            body["fields"]["config"]["url"],
            event_hooks::validate::URL_CREDENTIALS
        );
        assert!(!body.to_string().contains("pa55"), "{body}");
    }

    // Apigee Edge's route refuses it in Edge's shape.
    let response = call(
        server.url("/v1/mint/organizations/myorg/webhooks"),
        reqwest::Method::POST,
        Some(json!({"name":"w","postURL":"https://user:pa55@example.com/h"})),
    )
    .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "mint.invalidRequest", "{body}");
    assert_eq!(
        body["message"],
        format!("postURL: {}", event_hooks::validate::URL_CREDENTIALS)
    );
    let listed = reqwest::get(server.url("/event-hooks"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!listed.contains("pa55"), "nothing stored: {listed}");
}

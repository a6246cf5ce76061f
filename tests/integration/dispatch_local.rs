//! Dispatch end to end through the real local server: events posted to `POST /events` reach the
//! hooks' receivers on loopback, signed, templated, snoozed, retried and dead-lettered.

use std::time::Duration;

use event_hooks::outbound::signing::signature;
use event_hooks::queue::sqlite::SqliteQueue;
use event_hooks::queue::{Queue, REASON_ATTRIBUTE};
use event_hooks::sqlite::Database;
use event_hooks_tests::receiver::{Receiver, Reply};
use event_hooks_tests::server::LocalServer;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// A local server with fast retries and a short request timeout, for fault injection.
fn server() -> LocalServer {
    LocalServer::in_process(&[
        "--retry-schedule",
        "200ms,200ms",
        "--request-timeout",
        "0.5",
    ])
}

fn consumer_created(name: &str) -> Value {
    json!({"source":"crud","event":"consumers","data":{"operation":"create","entity":{"username":name}}})
}

/// The dead letters of the deliveries queue as `{"delivery": <body>, "reason": <attribute>}`,
/// read from the server's data directory, once at least `count` are there (panics after `WAIT`).
async fn delivery_dead_letters(server: &LocalServer, count: usize) -> Vec<Value> {
    let db = Database::open(&server.data_dir.join("queue.db")).unwrap();
    let queue = SqliteQueue::open(db, "deliveries-dead-letter")
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let mut letters = Vec::new();
    while letters.len() < count {
        assert!(
            std::time::Instant::now() < deadline,
            "expected {count} dead letters, got {letters:?}"
        );
        let messages = queue
            .receive(10, Duration::from_secs(60), Duration::from_millis(200))
            .await
            .unwrap();
        // The one dead-letter format: the delivery as its queue carries it, the reason beside it.
        letters.extend(messages.iter().map(|m| {
            json!({
                "delivery": serde_json::from_str::<Value>(&m.body).unwrap(),
                "reason": m.attributes[REASON_ATTRIBUTE],
            })
        }));
    }
    letters
}

#[tokio::test]
async fn a_webhook_receives_the_event_signed_with_a_delivery_id() {
    let server = server();
    let receiver = Receiver::start().await;
    server.create_hook(&json!({"source":"crud","event":"consumers","handler":"webhook",
               "config":{"url":receiver.url("/hook"),"secret":"hunter2","headers":{"x-team":"core"}}}),
    )
    .await;

    let accepted = server.emit(&consumer_created("bob")).await;

    let requests = receiver.wait_for("/hook", 1, WAIT).await;
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(
        request.json(),
        json!({"operation":"create","entity":{"username":"bob"},"event":"consumers","source":"crud"})
    );
    assert_eq!(request.headers["content-type"], "application/json");
    assert_eq!(request.headers["x-team"], "core");
    assert_eq!(
        request.headers["x-kong-signature"],
        signature(b"hunter2", &request.body)
    );
    assert_eq!(request.headers["x-event-hook-attempt"], "1");
    assert!(uuid::Uuid::parse_str(&request.headers["x-event-hook-delivery"]).is_ok());
    assert!(accepted["id"].is_string());
}

#[tokio::test]
async fn webhook_custom_renders_templates_and_encodes_the_payload() {
    let server = server();
    let receiver = Receiver::start().await;
    server.create_hook(&json!({"source":"crud","event":"consumers:create","handler":"webhook-custom",
               "config":{"url":receiver.url("/custom"),"method":"POST",
                         "headers":{"content-type":"application/x-www-form-urlencoded","x-op":"{{operation}}"},
                         "headers_format":true,
                         "payload":{"text":"Consumer {{entity.username}} {{ operation }}d","raw":"{*entity.username*}"}}}),
    )
    .await;

    server.emit(&consumer_created("<b&b>")).await;

    let request = &receiver.wait_for("/custom", 1, WAIT).await[0];
    assert_eq!(request.headers["x-op"], "create");
    let form: Vec<(String, String)> = form_urlencoded::parse(&request.body).into_owned().collect();
    assert_eq!(
        form,
        vec![
            ("raw".to_string(), "<b&b>".to_string()),
            (
                "text".to_string(),
                "Consumer &lt;b&amp;b&gt; created".to_string()
            ),
        ]
    );
}

#[tokio::test]
async fn a_failing_target_is_retried_with_the_same_delivery_id_and_others_get_it_once() {
    let server = server();
    let flaky = Receiver::start().await;
    let healthy = Receiver::start().await;
    flaky.script([Reply::Status(500), Reply::Status(503)]);
    for receiver in [&flaky, &healthy] {
        server.create_hook(&json!({"source":"crud","event":"consumers","handler":"webhook","config":{"url":receiver.url("/h")}}),
        )
        .await;
    }

    server.emit(&consumer_created("bob")).await;

    let attempts = flaky.wait_for("/h", 3, WAIT).await;
    let ids: Vec<&String> = attempts
        .iter()
        .map(|r| &r.headers["x-event-hook-delivery"])
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let numbers: Vec<&str> = attempts
        .iter()
        .map(|r| r.headers["x-event-hook-attempt"].as_str())
        .collect();
    assert_eq!(numbers, ["1", "2", "3"]);
    server.wait_until_settled().await;
    assert_eq!(flaky.requests().len(), 3, "no attempt after the success");
    assert_eq!(healthy.requests().len(), 1, "the healthy hook got it once");
}

#[tokio::test]
async fn undeliverable_events_end_in_the_dead_letter_queue_with_their_reason() {
    let server = server();
    let gone = Receiver::start().await;
    let down = Receiver::start().await;
    gone.script([Reply::Status(410)]);
    down.script([Reply::Status(500), Reply::Status(500), Reply::Status(500)]);
    let gone_hook = server
        .create_hook(
            &json!({"source":"balancer","handler":"webhook","config":{"url":gone.url("/gone")}}),
        )
        .await;
    let down_hook = server
        .create_hook(
            &json!({"source":"balancer","handler":"webhook","config":{"url":down.url("/down")}}),
        )
        .await;

    server.emit(&json!({"source":"balancer","event":"health","data":{"ip":"10.0.0.1","health":"unhealthy"}}),
    )
    .await;

    gone.wait_for("/gone", 1, WAIT).await;
    down.wait_for("/down", 3, WAIT).await;
    let letters = delivery_dead_letters(&server, 2).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    let reason_for = |hook: &Value| {
        letters
            .iter()
            .find(|l| l["delivery"]["hook_id"] == hook["id"])
            .map(|l| l["reason"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert!(reason_for(&gone_hook).contains("410"), "{letters:?}");
    assert!(
        reason_for(&down_hook).starts_with("gave up after 3 attempts"),
        "{letters:?}"
    );
    assert_eq!(gone.requests().len(), 1, "a 410 is not retried");
}

#[tokio::test]
async fn a_timeout_is_retried() {
    let server = server();
    let slow = Receiver::start().await;
    slow.script([Reply::Slow(Duration::from_secs(2))]);
    server.create_hook(&json!({"source":"crud","event":"consumers","handler":"webhook","config":{"url":slow.url("/slow")}}),
    )
    .await;
    server.emit(&consumer_created("bob")).await;
    let attempts = slow.wait_for("/slow", 2, WAIT).await;
    assert_eq!(attempts[1].headers["x-event-hook-attempt"], "2");
}

#[tokio::test]
async fn snooze_and_on_change_drop_what_the_spec_says() {
    let server = server();
    let receiver = Receiver::start().await;
    server
        .create_hook(
            &json!({"source":"rate-limiting-advanced","handler":"webhook","snooze":60,
               "config":{"url":receiver.url("/snoozed")}}),
        )
        .await;
    server
        .create_hook(
            &json!({"source":"service-protection","handler":"webhook","on_change":true,
               "config":{"url":receiver.url("/changes")}}),
        )
        .await;

    for consumer in ["a", "b", "c"] {
        server.emit(&json!({"source":"rate-limiting-advanced","event":"rate-limit-exceeded",
                   "data":{"consumer":consumer,"ip":"1.2.3.4","service":"s","rate":10,"limit":5,"window":"minute"}}),
        )
        .await;
    }
    // A, A, B, B, A by the source's unique field `service` → 3 deliveries
    for service in ["A", "A", "B", "B", "A"] {
        server
            .emit(
                &json!({"source":"service-protection","event":"rate-limit-exceeded",
                   "data":{"service":service,"rate":10,"limit":5,"window":"minute"}}),
            )
            .await;
        // One at a time: the order of events is what on_change is about.
        server.wait_until_settled().await;
    }

    receiver.wait_for("/changes", 3, WAIT).await;
    server.wait_until_settled().await;
    let requests = receiver.requests();
    let count = |path: &str| requests.iter().filter(|r| r.path == path).count();
    assert_eq!(count("/snoozed"), 1, "snooze: one delivery per window");
    let services: Vec<String> = requests
        .iter()
        .filter(|r| r.path == "/changes")
        .map(|r| r.json()["service"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(services, ["A", "B", "A"]);
}

#[tokio::test]
async fn a_runaway_lambda_fails_its_delivery_and_the_dispatcher_keeps_serving() {
    let server = server();
    let receiver = Receiver::start().await;
    server
        .create_hook(
            &json!({"source":"crud","event":"consumers","handler":"lambda",
               "config":{"functions":["return function(data) while true do end end"]}}),
        )
        .await;
    server.create_hook(&json!({"source":"crud","event":"consumers","handler":"lambda",
               "config":{"functions":["return function(data) local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 4096) end end"]}}),
    )
    .await;
    server.create_hook(&json!({"source":"crud","event":"consumers","handler":"webhook","config":{"url":receiver.url("/after")}}),
    )
    .await;

    server.emit(&consumer_created("one")).await;
    server.emit(&consumer_created("two")).await;

    let requests = receiver.wait_for("/after", 2, WAIT).await;
    assert_eq!(requests.len(), 2);
    let letters = delivery_dead_letters(&server, 4).await;
    assert_eq!(letters.len(), 4, "two lambdas x two events: {letters:?}");
    assert!(letters
        .iter()
        .any(|l| l["reason"].as_str().unwrap().contains("CPU time")));
    assert!(letters
        .iter()
        .any(|l| l["reason"].as_str().unwrap().contains("memory")));
}

#[tokio::test]
async fn hook_changes_are_events_too() {
    let server = server();
    let receiver = Receiver::start().await;
    server.create_hook(&json!({"source":"crud","event":"event_hooks:create","handler":"webhook","config":{"url":receiver.url("/watch")}}),
    )
    .await;
    let watched = server
        .create_hook(&json!({"source":"balancer","handler":"log"}))
        .await;

    // The watcher hears of its own creation too; wait for the other hook's.
    let requests = receiver.wait_for("/watch", 2, WAIT).await;
    let body = requests
        .iter()
        .map(|r| r.json())
        .find(|b| b["entity"]["id"] == watched["id"])
        .expect("the creation of the watched hook");
    assert_eq!(body["event"], "event_hooks:create");
    assert_eq!(body["operation"], "create");

    // dao:crud carries the same change
    server.create_hook(&json!({"source":"dao:crud","event":"create","handler":"webhook","config":{"url":receiver.url("/dao")}}),
    )
    .await;
    server
        .create_hook(&json!({"source":"balancer","handler":"log","name":"late"}))
        .await;
    // The dao hook also hears of its own creation: wait for the late hook's event itself.
    let deadline = std::time::Instant::now() + WAIT;
    let late = loop {
        let found = receiver
            .requests()
            .iter()
            .filter(|r| r.path == "/dao")
            .map(|r| r.json())
            .find(|b| b["entity"]["name"] == "late");
        if let Some(body) = found {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no dao:crud event of the late hook: {:?}",
            receiver.requests()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(late["event"], "create");
    assert_eq!(late["source"], "dao:crud");
    assert_eq!(late["schema"], "event_hooks");
}

#[tokio::test]
async fn events_outside_the_catalogue_are_refused_with_kongs_message() {
    let server = server();
    let client = reqwest::Client::new();
    for (event, message) in [
        (
            json!({"source":"nope","event":"x"}),
            "source 'nope' is not registered",
        ),
        (
            json!({"source":"balancer","event":"x"}),
            "event 'x' is not registered for source 'balancer'",
        ),
        (json!({"event":"x"}), "'source' is required"),
    ] {
        let response = client
            .post(server.url("/events"))
            .json(&event)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({ "message": message })
        );
    }
}

#[tokio::test]
async fn a_batch_of_events_is_delivered_event_by_event() {
    let server = server();
    let receiver = Receiver::start().await;
    server
        .create_hook(
            &json!({"source":"crud","event":"consumers","handler":"webhook",
               "config":{"url":receiver.url("/batch")}}),
        )
        .await;
    let client = reqwest::Client::new();
    let batch = json!([
        consumer_created("ann"),
        consumer_created("bob"),
        consumer_created("cid")
    ]);

    let response = client
        .post(server.url("/events"))
        .json(&batch)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 202);
    let accepted = response.json::<Value>().await.unwrap();
    assert_eq!(
        accepted["data"].as_array().map(Vec::len),
        Some(3),
        "{accepted}"
    );
    let mut names: Vec<Value> = receiver
        .wait_for("/batch", 3, WAIT)
        .await
        .iter()
        .map(|r| r.json()["entity"]["username"].clone())
        .collect();
    names.sort_by_key(|name| name.to_string());
    assert_eq!(names, [json!("ann"), json!("bob"), json!("cid")]);

    // An array is JSON only, of objects only.
    for (body, message) in [
        (
            "[1]",
            "Cannot parse JSON body: event 0 of the array is not a JSON object",
        ),
        ("[{}", "Cannot parse JSON body"),
    ] {
        let response = client
            .post(server.url("/events"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({ "message": message })
        );
    }
}

#[tokio::test]
async fn deliveries_are_logged_and_can_be_sent_again() {
    let server = server();
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(404)]);
    let hook = server.create_hook(&json!({"source":"crud","event":"consumers","handler":"webhook","config":{"url":receiver.url("/log")}}),
    )
    .await;
    server.emit(&consumer_created("bob")).await;
    let first = receiver.wait_for("/log", 1, WAIT).await;
    let delivery_id = first[0].headers["x-event-hook-delivery"].clone();

    // Then the failed attempt is in the delivery log
    let client = reqwest::Client::new();
    let path = format!("/event-hooks/{}/deliveries", hook["id"].as_str().unwrap());
    let mut listed = Value::Null;
    for _ in 0..100 {
        listed = client
            .get(server.url(&path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if listed["data"][0]["status"] == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let record = &listed["data"][0];
    assert_eq!(record["id"], delivery_id.as_str(), "{listed}");
    assert_eq!(record["status"], "failed");
    assert_eq!(record["attempts"][0]["status"], 404);
    assert_eq!(record["event"]["data"]["entity"]["username"], "bob");

    // When it is sent again, the receiver gets the same delivery id with the next attempt number
    let response = client
        .post(server.url(&format!("{path}/{delivery_id}/retry")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let again = receiver.wait_for("/log", 2, WAIT).await;
    assert_eq!(again[1].headers["x-event-hook-delivery"], delivery_id);
    assert_eq!(again[1].headers["x-event-hook-attempt"], "2");

    // And unknown deliveries, hooks and forged offsets are 4xx
    let unknown = client
        .post(server.url(&format!("{path}/{}/retry", uuid::Uuid::new_v4())))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let forged = client
        .get(server.url(&format!("{path}?offset=zzz")))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
}

#[tokio::test]
async fn status_reports_health_and_dispatch_counts_without_auth() {
    let server = LocalServer::in_process(&["--admin-token", "t0ken"]);
    let receiver = Receiver::start().await;
    let client = reqwest::Client::new();
    let created = client
        .post(server.url("/event-hooks"))
        .header("kong-admin-token", "t0ken")
        .json(&json!({"source":"balancer","handler":"webhook","config":{"url":receiver.url("/s")}}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let accepted = client
        .post(server.url("/events"))
        .header("kong-admin-token", "t0ken")
        .json(&json!({"source":"balancer","event":"health","data":{"ip":"10.0.0.9"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    receiver.wait_for("/s", 1, WAIT).await;

    // The receiver answers before the dispatcher counts the delivery: read until it has.
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        let status: Value = client
            .get(server.url("/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["dispatch"]["delivered"].as_u64() >= Some(1)
            || std::time::Instant::now() > deadline
        {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status["status"], "ok");
    assert_eq!(status["hooks"], 1);
    assert!(
        status["dispatch"]["delivered"].as_u64().unwrap() >= 1,
        "{status}"
    );
}

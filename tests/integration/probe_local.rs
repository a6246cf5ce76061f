//! `POST /event-hooks/{id}/test` and `GET /event-hooks/{id}/ping` through the real local server
//! (spec §7), against loopback receivers.

use std::time::Duration;

use event_hooks::outbound::signing::signature;
use event_hooks_tests::receiver::{Receiver, Reply};
use event_hooks_tests::server::LocalServer;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

fn server() -> LocalServer {
    LocalServer::in_process(&["--request-timeout", "0.5", "--retry-schedule", "none"])
}

/// Creates `hook`; answers its id.
async fn create(server: &LocalServer, hook: Value) -> String {
    server.create_hook(&hook).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn call(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn test_runs_a_webhook_now_and_shows_what_came_back() {
    let server = server();
    let receiver = Receiver::start().await;
    let id = create(
        &server,
        json!({"source":"crud","event":"consumers","handler":"webhook","snooze":3600,
               "config":{"url":receiver.url("/t"),"secret":"hunter2"}}),
    )
    .await;
    receiver.script([Reply::Status(500)]);
    let client = reqwest::Client::new();
    let url = server.url(&format!("/event-hooks/{id}/test"));

    // When tested twice (form, then JSON): the target's answer is shown, 500 included
    let (status, body) = call(client.post(&url).form(&[("username", "bob")])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!({"username":"bob","event":"consumers","source":"crud"})
    );
    assert_eq!(body["result"]["status"], 500);
    assert_eq!(body["result"]["body"], "scripted");
    let (status, body) = call(client.post(&url).json(&json!({"username":"amy"}))).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["status"], 200);

    // Then both reached the target, signed, despite the snooze and without retries
    let requests = receiver.wait_for("/t", 2, WAIT).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[1].headers["x-kong-signature"],
        signature(b"hunter2", &requests[1].body)
    );
    // And no snooze window was used up: a real event still goes through
    let response = client
        .post(server.url("/events"))
        .json(&json!({"source":"crud","event":"consumers","data":{"username":"cat"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let requests = receiver.wait_for("/t", 3, WAIT).await;
    assert_eq!(requests[2].json()["username"], "cat");
}

#[tokio::test]
async fn test_runs_lambda_and_log_hooks() {
    let server = server();
    let lambda = create(
        &server,
        json!({"source":"balancer","event":"health","handler":"lambda","config":{"functions":[
            "return function(data, event, source, pid) return {seen = data.ip, event = event, source = source, pid = pid} end"
        ]}}),
    )
    .await;
    let log = create(&server, json!({"source":"balancer","handler":"log"})).await;
    let client = reqwest::Client::new();

    let (status, body) = call(
        client
            .post(server.url(&format!("/event-hooks/{lambda}/test")))
            .json(&json!({"ip":"10.0.0.1"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"],
        json!({"event":"health","pid":42,"seen":"10.0.0.1","source":"balancer"})
    );

    let (status, body) = call(
        client
            .post(server.url(&format!("/event-hooks/{log}/test")))
            .json(&json!({"ip":"10.0.0.2"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["data"], json!({"ip":"10.0.0.2"}));
    assert_eq!(body["result"]["hook_id"], log.as_str());
}

#[tokio::test]
async fn test_failures_are_502_with_what_failed() {
    let server = server();
    let slow = Receiver::start().await;
    // Port 1 on loopback: nothing listens there, and no test binds it.
    let refused = create(
        &server,
        json!({"source":"balancer","handler":"webhook","config":{"url":"http://127.0.0.1:1/x"}}),
    )
    .await;
    let timing_out = create(
        &server,
        json!({"source":"balancer","handler":"webhook","config":{"url":slow.url("/slow")}}),
    )
    .await;
    slow.script([Reply::Slow(Duration::from_secs(3))]);
    let failing_lua = create(
        &server,
        json!({"source":"balancer","handler":"lambda","config":{"functions":["return function() error('boom') end"]}}),
    )
    .await;
    let client = reqwest::Client::new();
    for (id, expected) in [
        (&refused, "refused"),
        (&timing_out, "did not answer in time"),
        (&failing_lua, "boom"),
    ] {
        let (status, body) = call(
            client
                .post(server.url(&format!("/event-hooks/{id}/test")))
                .json(&json!({})),
        )
        .await;
        assert_eq!(status, 502, "{body}");
        let message = body["message"].as_str().unwrap().to_lowercase();
        assert!(message.contains(expected), "{expected}: {message}");
    }

    // Bad input
    let (status, body) = call(
        client
            .post(server.url(&format!("/event-hooks/{refused}/test")))
            .header("content-type", "application/json")
            .body("{"),
    )
    .await;
    assert_eq!(
        (status, body),
        (400, json!({"message":"Cannot parse JSON body"}))
    );
    let (status, _) =
        call(client.post(server.url(&format!("/event-hooks/{}/test", uuid::Uuid::new_v4())))).await;
    assert_eq!(status, 404);
    let (status, body) = call(client.post(server.url("/event-hooks/nope/test"))).await;
    assert_eq!(status, 400);
    assert_eq!(body["name"], "invalid primary key");
}

#[tokio::test]
async fn ping_sends_the_hook_without_its_secret_signed() {
    let server = server();
    let receiver = Receiver::start().await;
    let id = create(
        &server,
        json!({"source":"balancer","handler":"webhook-custom",
               "config":{"url":receiver.url("/ping"),"method":"PUT","secret":"s3cret"}}),
    )
    .await;
    let log = create(&server, json!({"source":"crud","handler":"log"})).await;
    let client = reqwest::Client::new();

    let (status, body) = call(client.get(server.url(&format!("/event-hooks/{id}/ping")))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["status"], 200);
    let request = &receiver.wait_for("/ping", 1, WAIT).await[0];
    let sent = request.json();
    assert_eq!(sent["source"], "kong:event_hooks");
    assert_eq!(sent["event"], "ping");
    assert_eq!(sent["event_hooks"]["id"], id.as_str());
    assert!(sent.get("operation").is_none());
    assert!(!request.text().contains("s3cret"), "the secret leaked");
    assert_eq!(
        request.headers["x-kong-signature"],
        signature(b"s3cret", &request.body)
    );
    assert_eq!(body["data"], sent);

    let (status, body) = call(client.get(server.url(&format!("/event-hooks/{log}/ping")))).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("'log'"));
}

#[tokio::test]
async fn webhook_hooks_are_pinged_when_created_updated_and_deleted() {
    let server = server();
    let receiver = Receiver::start().await;
    let id = create(
        &server,
        json!({"source":"balancer","handler":"webhook","config":{"url":receiver.url("/auto"),"secret":"k"}}),
    )
    .await;
    let client = reqwest::Client::new();
    let path = server.url(&format!("/event-hooks/{id}"));
    let response = client
        .patch(&path)
        .json(&json!({"snooze":5}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = client.delete(&path).send().await.unwrap();
    assert_eq!(response.status(), 204);

    let deadline = std::time::Instant::now() + WAIT;
    while receiver.pings().len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            receiver.pings()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requests = receiver.pings();
    assert!(receiver.requests().is_empty());
    let mut operations: Vec<String> = requests
        .iter()
        .map(|r| r.json()["operation"].as_str().unwrap().to_string())
        .collect();
    operations.sort();
    assert_eq!(operations, ["create", "delete", "update"]);
    for request in &requests {
        let body = request.json();
        assert_eq!(body["event"], "ping");
        assert_eq!(body["source"], "kong:event_hooks");
        assert_eq!(body["event_hooks"]["config"]["secret"], "[redacted]");
        assert_eq!(
            request.headers["x-kong-signature"],
            signature(b"k", &request.body)
        );
    }
}

//! The routes the web console needs beyond Kong's API, through the real local server:
//! `POST /event-hooks/preview`, `GET /event-hooks/stats`, the local dead letters, and the console's
//! own files behind the admin token (spec §11). The browser flow itself is `make console-test`.

use std::time::Duration;

use event_hooks_tests::receiver::{Receiver, Reply};
use event_hooks_tests::server::LocalServer;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
const TOKEN: &str = "console-token";

fn server() -> LocalServer {
    LocalServer::in_process(&["--admin-token", TOKEN, "--retry-schedule", "none"])
}

async fn call(server: &LocalServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new()
        .request(method, server.url(path))
        .header("Kong-Admin-Token", TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn preview_renders_an_unsaved_hook_and_sends_nothing() {
    let server = server();
    let receiver = Receiver::start().await;
    let (status, body) = call(
        &server,
        "POST",
        "/event-hooks/preview",
        Some(json!({
            "hook": {
                "source": "crud", "event": "consumers", "handler": "webhook-custom",
                "config": {
                    "url": receiver.url("/custom"), "method": "PUT",
                    "headers": {"content-type": "application/json"},
                    "body": "{\"who\": \"{{ entity.name }}\", \"op\": \"{* operation *}\"}",
                },
            },
            "data": {"operation": "create", "entity": {"name": "bob"}},
        })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["method"], "PUT");
    assert_eq!(body["result"]["url"], receiver.url("/custom"));
    assert_eq!(body["result"]["body"], r#"{"who": "bob", "op": "create"}"#);
    // Nothing was stored and nothing sent.
    let (_, hooks) = call(&server, "GET", "/event-hooks", None).await;
    assert_eq!(hooks["data"], json!([]));
    assert!(receiver.requests().is_empty(), "{:?}", receiver.requests());

    let (status, body) = call(
        &server,
        "POST",
        "/event-hooks/preview",
        Some(json!({
            "hook": {
                "source": "crud", "handler": "lambda",
                "config": {"functions": ["return function(data, event, source) return {n = data.n + 1, source = source} end"]},
            },
            "data": {"n": 41},
        })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], json!({"n": 42, "source": "crud"}));
}

#[tokio::test]
async fn preview_errors_are_those_of_a_create_or_the_code_s_own() {
    let server = server();
    // A syntax error is the create's schema violation, at the function's index.
    let (status, body) = call(
        &server,
        "POST",
        "/event-hooks/preview",
        Some(json!({"hook": {"source": "crud", "handler": "lambda", "config": {"functions": ["return function(", "return function() end"]}}})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["name"], "schema violation");
    let message = body["fields"]["hook"]["config"]["functions"][0]
        .as_str()
        .unwrap();
    assert!(message.starts_with("Error parsing function"), "{body}");
    assert_eq!(
        body["fields"]["hook"]["config"]["functions"][1],
        Value::Null
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("schema violation (hook.config.functions.1: Error parsing"),
        "{body}"
    );

    let (status, body) = call(
        &server,
        "POST",
        "/event-hooks/preview",
        Some(json!({"hook": {"source": "crud", "handler": "webhook", "config": {"url": "http://x.test"}}, "data": [1], "extra": 1})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["fields"],
        json!({"data": "expected a record", "extra": "unknown field"})
    );
    let (status, body) = call(&server, "POST", "/event-hooks/preview", Some(json!({}))).await;
    assert_eq!(
        (status, &body["fields"]),
        (400, &json!({"hook": "required field missing"}))
    );

    // A runtime error of the code is a 502 naming it.
    let (status, body) = call(
        &server,
        "POST",
        "/event-hooks/preview",
        Some(json!({"hook": {"source": "crud", "handler": "lambda", "config": {"functions": ["return function() error('boom') end"]}}})),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(body["message"].as_str().unwrap().contains("boom"), "{body}");

    // Without the token, nothing runs.
    let response = reqwest::Client::new()
        .post(server.url("/event-hooks/preview"))
        .json(&json!({"hook": {"source": "crud", "handler": "log"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn stats_count_the_attempts_of_the_last_hour_and_the_dead_letters() {
    let server = server();
    let receiver = Receiver::start().await;
    // A hook whose target answers 410: one failed attempt, which disables the hook and
    // dead-letters the delivery.
    receiver.script([Reply::Status(410)]);
    let (status, hook) = call(
        &server,
        "POST",
        "/event-hooks",
        Some(json!({"source": "balancer", "event": "health", "handler": "webhook", "config": {"url": receiver.url("/gone")}})),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    let (status, _) = call(
        &server,
        "POST",
        "/events",
        Some(json!({"source": "balancer", "event": "health", "data": {"ip": "10.0.0.1"}})),
    )
    .await;
    assert_eq!(status, 202);
    receiver.wait_for("/gone", 1, WAIT).await;

    // The dead letter shows up (the dispatcher records the attempt, then dead-letters).
    let deadline = std::time::Instant::now() + WAIT;
    let listed = loop {
        let (status, listed) = call(&server, "GET", "/dead-letters", None).await;
        assert_eq!(status, 200, "{listed}");
        if listed["total"].as_u64() >= Some(1) || std::time::Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let letters = listed["data"].as_array().unwrap();
    let letter = letters
        .iter()
        .find(|l| l["reason"].as_str().is_some_and(|r| r.contains("410")))
        .unwrap_or_else(|| panic!("no dead letter for the 410: {listed}"));
    assert_eq!(letter["queue"], "deliveries");

    let (status, stats) = call(&server, "GET", "/event-hooks/stats", None).await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["buckets"].as_array().unwrap().len(), 60);
    assert_eq!(stats["hooks"], 1);
    assert_eq!(stats["truncated"], false);
    assert!(stats["totals"]["attempts"].as_u64() >= Some(1), "{stats}");
    assert!(stats["totals"]["failures"].as_u64() >= Some(1), "{stats}");
    assert_eq!(
        stats["totals"]["failures"],
        stats["buckets"][59]["failures"]
    );
    assert!(stats["dead_letters"].as_u64() >= Some(1), "{stats}");

    // Redriving an unknown message is a 404; a known one goes back on its queue.
    let (status, _) = call(&server, "POST", "/dead-letters/nope/redrive", None).await;
    assert_eq!(status, 404);
    let id = letter["id"].as_str().unwrap();
    let (status, body) = call(
        &server,
        "POST",
        &format!("/dead-letters/{id}/redrive"),
        None,
    )
    .await;
    assert_eq!((status, &body), (200, &json!({"redriven": 1})));
    let (status, body) = call(&server, "POST", "/dead-letters/redrive", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(&server, "GET", "/dead-letters?size=0", None).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_console_loads_without_the_token_and_the_data_needs_it() {
    let server = server();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = client.get(server.url("/")).send().await.unwrap();
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()["location"], "/console/index.html");
    let page = client.get(server.url("/console/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
    assert!(page
        .text()
        .await
        .unwrap()
        .contains(r#"<script type="module" src="app.js">"#));
    for path in ["/event-hooks/stats", "/dead-letters"] {
        let response = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
    }
    // The Host guard covers the console as it does the API.
    let foreign = client
        .get(server.url("/console/"))
        .header("host", "evil.test")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
}

#[tokio::test]
async fn hooks_filter_by_handler_and_state_page_by_page() {
    let server = server();
    for (handler, enabled) in [("log", true), ("log", false), ("webhook", true)] {
        let mut hook = json!({"source": "crud", "handler": handler, "enabled": enabled});
        if handler == "webhook" {
            hook["config"] = json!({"url": "https://example.test/hook"});
        }
        let (status, body) = call(&server, "POST", "/event-hooks", Some(hook)).await;
        assert_eq!(status, 201, "{body}");
    }
    let handlers = |body: &Value| -> Vec<(String, bool)> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["handler"].as_str().unwrap().to_owned(),
                    h["enabled"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let (_, logs) = call(&server, "GET", "/event-hooks?handler=log", None).await;
    let mut got = handlers(&logs);
    got.sort();
    assert_eq!(got, [("log".to_owned(), false), ("log".to_owned(), true)]);
    let (_, off) = call(&server, "GET", "/event-hooks?enabled=false", None).await;
    assert_eq!(handlers(&off), [("log".to_owned(), false)]);
    let (_, both) = call(
        &server,
        "GET",
        "/event-hooks?handler=webhook&enabled=false",
        None,
    )
    .await;
    assert_eq!(both["data"], json!([]));

    // Paging walks the whole listing with the filter kept in `next`.
    let mut seen = Vec::new();
    let mut path = "/event-hooks?size=1&handler=log".to_owned();
    for _ in 0..10 {
        let (status, page) = call(&server, "GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(handlers(&page));
        match page["next"].as_str() {
            Some(next) => {
                assert!(next.contains("handler=log"), "{next}");
                path = next.to_owned();
            }
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, [("log".to_owned(), false), ("log".to_owned(), true)]);

    // An empty value names no handler: schemathesis sends `handler=` as a schema violation.
    for bad in ["handler=nope", "enabled=yes", "handler=", "enabled="] {
        let (status, body) = call(&server, "GET", &format!("/event-hooks?{bad}"), None).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}

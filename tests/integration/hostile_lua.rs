//! Hostile user Lua against the real local server (issue 8): attacks that crashed, stalled or
//! escaped the process are refused at create time or stopped within the budget, the server stays
//! up, and other hooks are still served.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use event_hooks_tests::receiver::Receiver;
use event_hooks_tests::server::{binary, temp_data_dir, LocalServer};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

fn client() -> reqwest::Client {
    // Each call of these tests must answer well within this; a hang fails instead of blocking.
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

async fn post(server: &LocalServer, path: &str, body: Value) -> (u16, Value) {
    let response = client()
        .post(server.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn status_ok(server: &LocalServer) -> bool {
    match client().get(server.url("/status")).send().await {
        Ok(response) => response.status() == 200,
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_template_walking_a_deep_table_is_no_poison_message() {
    // Given a webhook-custom hook whose body renders a table nested 5,000 deep (it aborted the
    // process at every delivery), and a healthy hook on the same event
    let server = LocalServer::start(&[]);
    let receiver = Receiver::start().await;
    let (status, _) = post(
        &server,
        "/event-hooks",
        json!({"source": "crud", "event": "consumers", "handler": "webhook-custom", "config": {
            "url": receiver.url("/hostile"), "method": "POST",
            "body": "{% t={} for i=1,5000 do t={t} end %}{{ t }}"}}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = post(
        &server,
        "/event-hooks",
        json!({"source": "crud", "event": "consumers", "handler": "webhook",
               "config": {"url": receiver.url("/healthy")}}),
    )
    .await;
    assert_eq!(status, 201);
    // When an event is delivered to both
    let (status, _) = post(
        &server,
        "/events",
        json!({"source": "crud", "event": "consumers", "data": {"operation": "create"}}),
    )
    .await;
    assert_eq!(status, 202);
    // Then both are served (the table renders as nothing) and the server is still up
    receiver.wait_for("/healthy", 1, WAIT).await;
    let hostile = receiver.wait_for("/hostile", 1, WAIT).await;
    assert_eq!(hostile[0].text(), "");
    assert!(status_ok(&server).await);
}

#[tokio::test]
async fn a_close_handler_cannot_escape_the_budget() {
    let server = LocalServer::start(&[]);
    // The `<close>` attack of issue 8, in a lambda and in a template code block: refused at once.
    let attack = "return function() local x <close> = setmetatable({}, {__close=function() while true do end end}) while true do end end";
    let (status, body) = post(
        &server,
        "/event-hooks",
        json!({"source": "crud", "handler": "lambda", "config": {"functions": [attack]}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("'<close>'"),
        "{body}"
    );
    let (status, body) = post(
        &server,
        "/event-hooks",
        json!({"source": "crud", "handler": "webhook-custom", "config": {
            "url": "http://127.0.0.1:9/", "method": "POST",
            "body": "{% local x <close> = setmetatable({}, {__close=function() while true do end end}) while true do end %}"}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(status_ok(&server).await);
}

#[tokio::test]
async fn an_error_handler_is_stopped_by_the_budget_in_test() {
    // Given a lambda whose error handler loops (Lua runs it for the budget's own error with
    // hooks off)
    let server = LocalServer::start(&[]);
    let (status, hook) = post(
        &server,
        "/event-hooks",
        json!({"source": "crud", "handler": "lambda", "config": {"functions": [
            "return function() xpcall(function() while true do end end, function() while true do end end) end"
        ]}}),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    // When it is tested, then it fails with the budget's error instead of holding a thread forever
    let path = format!("/event-hooks/{}/test", hook["id"].as_str().unwrap());
    let (status, body) = post(&server, &path, json!({})).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("CPU time limit exceeded"),
        "{body}"
    );
    assert!(status_ok(&server).await);
}

#[tokio::test]
async fn print_goes_to_the_structured_log_never_raw_to_stdout() {
    // Given the server with its log (and so its stdout) read by the test
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(binary())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(temp_data_dir())
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .env_remove("EVENT_HOOKS_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|line| !line.contains("forged-end"))
            .collect::<Vec<_>>()
    });
    let base = format!("http://127.0.0.1:{port}");
    let client = client();
    let mut created = None;
    for _ in 0..200 {
        // When a lambda prints a forged metrics line
        let attempt = client
            .post(format!("{base}/event-hooks"))
            .json(&json!({"source": "crud", "handler": "lambda", "config": {"functions": [
                r#"return function() print('{"_aws":{"CloudWatchMetrics":[]},"Delivered":1e9}') print('forged-end') end"#
            ]}}))
            .send()
            .await;
        if let Ok(response) = attempt {
            created = Some(response.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hook = created.expect("server started");
    let tested = client
        .post(format!(
            "{base}/event-hooks/{}/test",
            hook["id"].as_str().unwrap()
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(tested.status(), 200);
    // The log line is written before the answer; the end of the pipe ends the reader.
    let _ = child.kill();
    let _ = child.wait();
    let lines = lines.join().unwrap();
    // Then the line is in a log record that names the hook, and no line is the forged one
    assert!(
        lines.iter().all(|line| !line.starts_with(r#"{"_aws""#)),
        "{lines:#?}"
    );
    let record = lines
        .iter()
        .find(|line| line.contains("CloudWatchMetrics"))
        .expect("the printed line is logged");
    let record: Value = serde_json::from_str(record).unwrap();
    assert_eq!(record["fields"]["hook_id"], hook["id"], "{record}");
    assert_eq!(record["fields"]["stream"], "print", "{record}");
}

#[tokio::test]
async fn a_lambda_result_nested_100000_deep_is_an_error() {
    let server = LocalServer::start(&[]);
    let (status, hook) = post(
        &server,
        "/event-hooks",
        json!({"source": "crud", "handler": "lambda", "config": {"functions": [
            "return function() local t = {} for i = 1, 100000 do t = {t} end return t end"
        ]}}),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    let path = format!("/event-hooks/{}/test", hook["id"].as_str().unwrap());
    let (status, body) = post(&server, &path, json!({})).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("nested more than 64 levels deep"),
        "{body}"
    );
    assert!(status_ok(&server).await);
}

//! Hostile user Lua against the real local server (issue 8): attacks that crashed, stalled or
//! escaped the process are refused at create time or stopped within the budget, the server stays
//! up, and other hooks are still served. The attacks are those of the catalogue
//! `tests/fixtures/hostile-lua.json`, which `scripts/reliability/crash.py` runs too.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use event_hooks_tests::receiver::Receiver;
use event_hooks_tests::server::{self, temp_data_dir, LocalServer};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// The catalogue's attacks.
fn attacks() -> &'static [Value] {
    static CATALOGUE: OnceLock<Value> = OnceLock::new();
    CATALOGUE
        .get_or_init(|| serde_json::from_str(include_str!("../fixtures/hostile-lua.json")).unwrap())
        ["attacks"]
        .as_array()
        .unwrap()
}

/// The catalogue's entry named `name`.
fn attack(name: &str) -> &'static Value {
    attacks()
        .iter()
        .find(|entry| entry["name"] == name)
        .unwrap_or_else(|| panic!("no attack {name:?} in tests/fixtures/hostile-lua.json"))
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap()
}

/// A lambda hook running the attack's functions.
fn lambda_hook(attack: &Value) -> Value {
    let functions = attack["lambda"].as_array().unwrap();
    let times = attack["repeat"].as_u64().unwrap_or(1) as usize;
    let functions: Vec<&Value> = std::iter::repeat_n(functions, times).flatten().collect();
    json!({"source": "crud", "handler": "lambda", "config": {"functions": functions}})
}

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
    let attack = attack("template nesting 5000 deep");
    let server = LocalServer::start(&[]);
    let receiver = Receiver::start().await;
    let (status, _) = post(
        &server,
        "/event-hooks",
        json!({"source": "crud", "event": "consumers", "handler": "webhook-custom", "config": {
            "url": receiver.url("/hostile"), "method": "POST", "body": attack["template"]}}),
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
    assert_eq!(hostile[0].text(), text(&attack["renders"]));
    assert!(status_ok(&server).await);
}

#[tokio::test]
async fn the_attacks_to_refuse_are_refused_at_create() {
    // The `<close>` attacks of issue 8 (a lambda, a template code block) and the caps on counts:
    // refused at once, with the catalogue's message when it names one.
    let server = LocalServer::start(&[]);
    let refused: Vec<&Value> = attacks()
        .iter()
        .filter(|entry| entry["refused"] == true)
        .filter(|entry| entry.get("lambda").is_some() || entry.get("template").is_some())
        .collect();
    assert!(refused.len() >= 3, "{refused:?}");
    for entry in refused {
        let hook = if entry.get("lambda").is_some() {
            lambda_hook(entry)
        } else {
            json!({"source": "crud", "handler": "webhook-custom", "config": {
                "url": "http://127.0.0.1:9/", "method": "POST", "body": entry["template"]}})
        };
        let (status, body) = post(&server, "/event-hooks", hook).await;
        assert_eq!(status, 400, "{}: {body}", entry["name"]);
        if let Some(message) = entry.get("refused_with") {
            assert!(
                text(&body["message"]).contains(text(message)),
                "{}: {body}",
                entry["name"]
            );
        }
    }
    assert!(status_ok(&server).await);
}

#[tokio::test]
async fn an_error_handler_is_stopped_by_the_budget_in_test() {
    // Given a lambda whose error handler loops (Lua runs it for the budget's own error with
    // hooks off)
    let attack = attack("xpcall handler loop around an endless loop");
    let server = LocalServer::start(&[]);
    let (status, hook) = post(&server, "/event-hooks", lambda_hook(attack)).await;
    assert_eq!(status, 201, "{hook}");
    // When it is tested, then it fails with the budget's error instead of holding a thread forever
    let path = format!("/event-hooks/{}/test", hook["id"].as_str().unwrap());
    let (status, body) = post(&server, &path, json!({})).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        text(&body["message"]).contains(text(&attack["test_fails_with"])),
        "{body}"
    );
    assert!(status_ok(&server).await);
}

#[tokio::test]
async fn print_goes_to_the_structured_log_never_raw_to_stdout() {
    // Given the server with its log (and so its stdout) read by the test
    let (mut command, address) = server::command(&temp_data_dir());
    let mut child = command
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    drop(command);
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|line| !line.contains("forged-end"))
            .collect::<Vec<_>>()
    });
    let base = format!("http://{address}");
    let forged = lambda_hook(attack("print forging a metrics line"));
    let client = client();
    let mut created = None;
    for _ in 0..200 {
        // When a lambda prints a forged metrics line
        let attempt = client
            .post(format!("{base}/event-hooks"))
            .json(&forged)
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
    let attack = attack("lambda returns 100000-deep table");
    let server = LocalServer::start(&[]);
    let (status, hook) = post(&server, "/event-hooks", lambda_hook(attack)).await;
    assert_eq!(status, 201, "{hook}");
    let path = format!("/event-hooks/{}/test", hook["id"].as_str().unwrap());
    let (status, body) = post(&server, &path, json!({})).await;
    assert_eq!(status, 502, "{body}");
    assert!(
        text(&body["message"]).contains(text(&attack["test_fails_with"])),
        "{body}"
    );
    assert!(status_ok(&server).await);
}

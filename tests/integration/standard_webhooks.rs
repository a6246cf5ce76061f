//! `config.signature = "standard"` end to end through the real local server, checked by the
//! Standard Webhooks reference library (`standardwebhooks` from PyPI, run by the workspace's
//! `.venv/bin/python`) rather than by our own code: deliveries verify, a tampered body or an old
//! timestamp does not, and after `POST /event-hooks/{id}/secret/rotate` a delivery verifies with
//! the new secret and with the old one. The last test does the same through the real Lambda
//! binaries (admin-api rotates, probe delivers) on DynamoDB and SQS on moto.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use event_hooks::model::{Handler, Hook, SignatureScheme, WebhookConfig};
use event_hooks::outbound::signing::{standard_key, standard_signature};
use event_hooks::queue::sqs::create_queue_with_dlq;
use event_hooks::store::dynamodb::{create_table, DynamoHookStore};
use event_hooks::store::{HookStore, Precondition};
use event_hooks_tests::api_gateway::ApiResponse;
use event_hooks_tests::gateway;
use event_hooks_tests::lambda_runtime::{function_binary, FunctionProcess};
use event_hooks_tests::moto::{self, unique_name};
use event_hooks_tests::receiver::{Receiver, Recorded};
use event_hooks_tests::server::LocalServer;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The reference library's verdict on one message: `Ok(())` or its error message.
fn reference_verify(secret: &str, body: &[u8], headers: &Value) -> Result<(), String> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: `make venv` installs it with the standardwebhooks package",
        python.display()
    );
    const SCRIPT: &str = r#"
import json, sys
from standardwebhooks import Webhook
message = json.load(sys.stdin)
try:
    Webhook(message["secret"]).verify(message["body"], message["headers"])
    print("ok")
except Exception as err:
    print("rejected: %s" % err)
"#;
    let mut child = Command::new(&python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start python");
    let input = json!({
        "secret": secret,
        "body": String::from_utf8(body.to_vec()).expect("a UTF-8 body"),
        "headers": headers,
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the verify script failed");
    let verdict = String::from_utf8_lossy(&output.stdout).trim().to_string();
    match verdict.as_str() {
        "ok" => Ok(()),
        _ => Err(verdict),
    }
}

/// The Standard Webhooks headers of a recorded request, as a JSON object.
fn standard_headers(request: &Recorded) -> Value {
    json!({
        "webhook-id": request.headers["webhook-id"],
        "webhook-timestamp": request.headers["webhook-timestamp"],
        "webhook-signature": request.headers["webhook-signature"],
    })
}

async fn create(server: &LocalServer, hook: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url("/event-hooks"))
        .json(&hook)
        .send()
        .await
        .unwrap()
}

async fn emit(server: &LocalServer, name: &str) {
    let response = reqwest::Client::new()
        .post(server.url("/events"))
        .json(&json!({"source":"crud","event":"consumers",
                      "data":{"operation":"create","entity":{"username":name}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
}

fn standard_hook(receiver: &Receiver, path: &str, secret: Option<&str>) -> Value {
    let mut config = json!({"url": receiver.url(path), "signature": "standard"});
    if let Some(secret) = secret {
        config["secret"] = json!(secret);
    }
    json!({"source":"crud","event":"consumers","handler":"webhook","config":config})
}

async fn rotate(server: &LocalServer, id: &str, body: Option<Value>) -> reqwest::Response {
    let request =
        reqwest::Client::new().post(server.url(&format!("/event-hooks/{id}/secret/rotate")));
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_standard_delivery_verifies_with_the_reference_library() {
    let server = LocalServer::in_process(&[]);
    let receiver = Receiver::start().await;
    let response = create(&server, standard_hook(&receiver, "/std", None)).await;
    assert_eq!(response.status(), 201);
    let hook: Value = response.json().await.unwrap();
    // No secret given: one is generated and shown once, at create.
    let secret = hook["config"]["secret"].as_str().unwrap().to_string();
    assert!(standard_key(&secret).is_ok(), "{secret}");
    assert_eq!(hook["config"]["signature"], "standard");

    emit(&server, "bob").await;
    let request = &receiver.wait_for("/std", 1, WAIT).await[0];
    let headers = standard_headers(request);
    // The message id is the delivery id, stable across retries.
    assert_eq!(
        headers["webhook-id"],
        request.headers["x-event-hook-delivery"]
    );
    assert!(!request.headers.contains_key("x-kong-signature"));
    assert_eq!(reference_verify(&secret, &request.body, &headers), Ok(()));

    // A body changed on the way does not verify.
    let mut tampered = request.body.clone();
    tampered.extend_from_slice(b" ");
    let verdict = reference_verify(&secret, &tampered, &headers).unwrap_err();
    assert!(verdict.contains("No matching signature"), "{verdict}");

    // A message correctly signed ten minutes ago is refused for its age: replays are stopped.
    let old = request.headers["webhook-timestamp"].parse::<i64>().unwrap() - 600;
    let id = request.headers["webhook-id"].clone();
    let key = standard_key(&secret).unwrap();
    let replayed = json!({
        "webhook-id": id,
        "webhook-timestamp": old.to_string(),
        "webhook-signature": standard_signature(&key, &id, old, &request.body),
    });
    let verdict = reference_verify(&secret, &request.body, &replayed).unwrap_err();
    assert!(verdict.contains("too old"), "{verdict}");

    // GET shows the hook as created.
    let id = hook["id"].as_str().unwrap();
    let read: Value = reqwest::get(server.url(&format!("/event-hooks/{id}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["config"]["secret"], secret);
}

#[tokio::test]
async fn a_standard_hook_refuses_a_secret_that_is_not_whsec() {
    let server = LocalServer::in_process(&[]);
    let receiver = Receiver::start().await;
    let response = create(&server, standard_hook(&receiver, "/std", Some("hunter2"))).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], 2);
    assert_eq!(
        body["fields"],
        json!({"config":{"secret":"a standard signature secret must start with 'whsec_'"}})
    );
}

#[tokio::test]
async fn after_rotation_a_delivery_verifies_with_the_new_secret_and_the_old_one() {
    let server = LocalServer::in_process(&[]);
    let receiver = Receiver::start().await;
    let hook: Value = create(&server, standard_hook(&receiver, "/rot", Some(SECRET)))
        .await
        .json()
        .await
        .unwrap();
    let id = hook["id"].as_str().unwrap();

    let response = rotate(&server, id, None).await;
    assert_eq!(response.status(), 200);
    let rotated: Value = response.json().await.unwrap();
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert!(standard_key(&new_secret).is_ok());
    assert_ne!(new_secret, SECRET);
    assert!(
        rotated["previous_secret_expires_at"].as_i64().unwrap()
            > hook["updated_at"].as_i64().unwrap()
    );

    // The new secret is stored; the old one is never shown.
    let read: Value = reqwest::get(server.url(&format!("/event-hooks/{id}")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read["config"]["secret"], new_secret);
    assert!(!read.to_string().contains(SECRET), "{read}");

    // Editing another field keeps the rotation going.
    let response = reqwest::Client::new()
        .patch(server.url(&format!("/event-hooks/{id}")))
        .json(&json!({"tags":["rotated"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    emit(&server, "carol").await;
    let request = &receiver.wait_for("/rot", 1, WAIT).await[0];
    let headers = standard_headers(request);
    assert_eq!(request.headers["webhook-signature"].split(' ').count(), 2);
    assert_eq!(
        reference_verify(&new_secret, &request.body, &headers),
        Ok(())
    );
    assert_eq!(reference_verify(SECRET, &request.body, &headers), Ok(()));
}

#[tokio::test]
async fn rotation_takes_a_given_secret_and_refuses_bad_input() {
    let server = LocalServer::in_process(&[]);
    let receiver = Receiver::start().await;
    let hook: Value = create(&server, standard_hook(&receiver, "/r", Some(SECRET)))
        .await
        .json()
        .await
        .unwrap();
    let id = hook["id"].as_str().unwrap();
    let given = "whsec_c2Vjb25kIGtleSBvZiB0d2VudHktZm91ciBi";

    // A form body works like JSON, as for every admin route.
    let response = reqwest::Client::new()
        .post(server.url(&format!("/event-hooks/{id}/secret/rotate")))
        .form(&[("secret", given)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let rotated: Value = response.json().await.unwrap();
    assert_eq!(rotated["secret"], given);

    let response = rotate(&server, id, Some(json!({"secret":"hunter2"}))).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["fields"],
        json!({"secret":"a standard signature secret must start with 'whsec_'"})
    );

    let unknown = uuid::Uuid::new_v4();
    let response = rotate(&server, &unknown.to_string(), None).await;
    assert_eq!(response.status(), 404);

    let log: Value = create(&server, json!({"source":"crud","handler":"log"}))
        .await
        .json()
        .await
        .unwrap();
    let response = rotate(&server, log["id"].as_str().unwrap(), None).await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn a_kong_hook_rotation_replaces_its_secret_at_once() {
    let server = LocalServer::in_process(&[]);
    let receiver = Receiver::start().await;
    let hook: Value = create(
        &server,
        json!({"source":"crud","event":"consumers","handler":"webhook",
               "config":{"url":receiver.url("/kong"),"secret":"hunter2"}}),
    )
    .await
    .json()
    .await
    .unwrap();
    let id = hook["id"].as_str().unwrap();
    let rotated: Value = rotate(&server, id, Some(json!({"secret":"swordfish"})))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(rotated["signature"], "kong");
    assert_eq!(rotated["previous_secret_expires_at"], Value::Null);

    emit(&server, "dave").await;
    let request = &receiver.wait_for("/kong", 1, WAIT).await[0];
    assert_eq!(
        request.headers["x-kong-signature"],
        event_hooks::outbound::signing::signature(b"swordfish", &request.body)
    );
    assert!(!request.headers.contains_key("webhook-signature"));
}

/// The sample API Gateway event `events/<name>`, addressed to hook `id` (and, when `rotate` is
/// set, turned into `POST /event-hooks/{id}/secret/rotate`, by the route `template.yaml` gives it
/// and to the function it names).
fn api_event(name: &str, id: uuid::Uuid, rotate: bool) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../events")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replace("4a0c4f41-6b8b-4a42-9d37-0c6b8d1f8f0e", &id.to_string());
    let mut event: Value = serde_json::from_str(&text).unwrap();
    if rotate {
        let path = format!("/event-hooks/{id}/secret/rotate");
        event["rawPath"] = json!(path);
        let routes = gateway::template_routes();
        let route = gateway::select(&routes, "POST", &path)
            .expect("template.yaml routes POST /event-hooks/{id}/secret/rotate");
        assert_eq!(route.function, "AdminFunction", "{}", route.key());
        event["routeKey"] = json!(route.key());
        event["requestContext"]["routeKey"] = json!(route.key());
        event["requestContext"]["http"]["method"] = json!("POST");
        event["requestContext"]["http"]["path"] = json!(path);
    }
    event
}

/// Invokes a function with an API Gateway event; its status and JSON body.
async fn call(function: &mut FunctionProcess, event: Value) -> (u64, Value) {
    let raw = function
        .invoke(event)
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    let response = ApiResponse::parse(&raw);
    (u64::from(response.status), response.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_lambda_and_dynamodb_a_rotated_standard_hook_signs_with_both_secrets() {
    let Some(config) = moto::config() else {
        return;
    };
    let endpoint = std::env::var("MOTO_ENDPOINT").expect("MOTO_ENDPOINT");
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let receiver = Receiver::start().await;

    // Given a standard hook in a hooks table on moto…
    let table = unique_name("std-webhooks");
    create_table(&dynamodb, &table).await.unwrap();
    let store = DynamoHookStore::new(dynamodb.clone(), table.clone());
    let id = uuid::Uuid::new_v4();
    let hook = Hook {
        id,
        created_at: 1_763_920_800,
        updated_at: 1_763_920_800,
        source: "crud".into(),
        event: Some("consumers".into()),
        handler: Handler::Webhook(WebhookConfig {
            url: receiver.url("/lambda"),
            headers: Default::default(),
            secret: Some(SECRET.into()),
            ssl_verify: true,
            signature: SignatureScheme::Standard,
            previous_secret: None,
        }),
        snooze: None,
        on_change: None,
        enabled: true,
        name: None,
        tags: vec![],
        delivery: Default::default(),
        disabled_reason: None,
        failing_since: None,
        max_rate: None,
    };
    store.put(&hook, Precondition::Absent).await.unwrap();

    // …when the admin function rotates its secret…
    let (events_url, _) = create_queue_with_dlq(&sqs, &unique_name("std-events"), 5)
        .await
        .unwrap();
    let deliveries_table = unique_name("std-deliveries");
    event_hooks::delivery_log::dynamodb::create_table(&dynamodb, &deliveries_table)
        .await
        .unwrap();
    let (deliveries_url, _) = create_queue_with_dlq(&sqs, &unique_name("std-deliveries"), 5)
        .await
        .unwrap();
    let (secret_arn, token) = moto::create_admin_token(&config).await;
    let aws_env = [
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("HOOKS_TABLE", table.as_str()),
        ("ADMIN_TOKEN_SECRET_ARN", secret_arn.as_str()),
    ];
    let mut admin_env = aws_env.to_vec();
    admin_env.extend([
        ("EVENTS_QUEUE_URL", events_url.as_str()),
        ("DELIVERIES_TABLE", deliveries_table.as_str()),
        ("DELIVERIES_QUEUE_URL", deliveries_url.as_str()),
    ]);
    let mut admin = FunctionProcess::start(&function_binary("admin-api"), &admin_env)
        .await
        .with_admin_token(&token);
    let (status, rotated) = call(&mut admin, api_event("admin-get-hook.json", id, true)).await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_string();

    // …then DynamoDB holds both secrets…
    let stored = store.get(id).await.unwrap().unwrap().value;
    let signing = stored.handler.signing().unwrap();
    assert_eq!(signing.secret, Some(new_secret.as_str()));
    assert_eq!(signing.previous.unwrap().secret, SECRET);

    // …and a request the probe function sends verifies with either, by the reference library.
    let mut probe_env = aws_env.to_vec();
    probe_env.push(("ALLOW_PRIVATE_TARGETS", "true"));
    let mut probe = FunctionProcess::start(&function_binary("probe"), &probe_env)
        .await
        .with_admin_token(&token);
    let (status, tested) = call(&mut probe, api_event("probe-test-hook.json", id, false)).await;
    assert_eq!(status, 200, "{tested}");
    let request = &receiver.wait_for("/lambda", 1, WAIT).await[0];
    let headers = standard_headers(request);
    assert_eq!(
        reference_verify(&new_secret, &request.body, &headers),
        Ok(())
    );
    assert_eq!(reference_verify(SECRET, &request.body, &headers), Ok(()));
}

//! The real `admin-api` Lambda binary, end to end: every `events/admin-*.json` sample (the events
//! `sam local invoke` uses) is fed to it through a fake Lambda Runtime API, against DynamoDB and
//! SQS on moto, and its API Gateway responses and `crud` events are checked.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use event_hooks::queue::sqs::{create_queue_with_dlq, SqsQueue};
use event_hooks::store::dynamodb::create_table;
use event_hooks_tests::api_gateway::ApiResponse;
use event_hooks_tests::lambda_runtime::{function_binary, Failure, FunctionProcess};
use event_hooks_tests::moto::{self, unique_name};
use event_hooks_tests::queues::drain_events;
use event_hooks_tests::samples::Samples;
use serde_json::{json, Value};

/// The hook id the get, patch and delete samples address.
const SAMPLE_HOOK_ID: &str = "4a0c4f41-6b8b-4a42-9d37-0c6b8d1f8f0e";

/// `event` carrying `token` in `Kong-Admin-Token` (API Gateway lower-cases header names).
fn with_token(mut event: Value, token: &str) -> Value {
    event["headers"]["kong-admin-token"] = json!(token);
    event
}

/// Invokes the function with the admin token; any failure to answer ends the test with what the
/// function reported.
async fn call(function: &mut FunctionProcess, token: &str, event: Value) -> ApiResponse {
    call_as(function, with_token(event, token)).await
}

/// Invokes the function with `event` as it is.
async fn call_as(function: &mut FunctionProcess, event: Value) -> ApiResponse {
    let raw = function
        .invoke(event)
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    ApiResponse::parse(&raw)
}

/// A `PUT /event-hooks/{id}` event built from the GET sample for the same id, carrying `hook`.
/// The admin function's environment on moto: hooks in `table`, admin auth as `auth` says, queues
/// and the delivery log unused.
fn admin_env<'a>(
    endpoint: &'a str,
    table: &'a str,
    auth: (&'a str, &'a str),
) -> Vec<(&'a str, &'a str)> {
    moto::process_env(
        endpoint,
        &[
            ("HOOKS_TABLE", table),
            ("EVENTS_QUEUE_URL", "http://127.0.0.1:9/123456789012/events"),
            ("DELIVERIES_TABLE", "unused"),
            ("DELIVERIES_QUEUE_URL", "http://127.0.0.1:9/123456789012/d"),
            auth,
        ],
    )
}

fn put_event(get_sample: &Value, hook: &Value) -> Value {
    let mut event = get_sample.clone();
    let body = hook.to_string();
    event["requestContext"]["http"]["method"] = json!("PUT");
    event["headers"]["content-type"] = json!("application/json");
    event["headers"]["content-length"] = json!(body.len().to_string());
    event["body"] = json!(body);
    event["isBase64Encoded"] = json!(false);
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_sample_event_runs_through_the_lambda_binary_on_moto() {
    let Some(config) = moto::config() else {
        return;
    };
    let binary = function_binary("admin-api");
    let endpoint = std::env::var("MOTO_ENDPOINT").expect("MOTO_ENDPOINT");

    // Given a fresh table and events queue on moto, and the function started against them.
    let table = unique_name("admin-lambda");
    create_table(&aws_sdk_dynamodb::Client::new(&config), &table)
        .await
        .expect("create the hooks table");
    let sqs = aws_sdk_sqs::Client::new(&config);
    let (queue_url, _) = create_queue_with_dlq(&sqs, &unique_name("admin-lambda-events"), 5)
        .await
        .expect("create the events queue");
    let deliveries_table = unique_name("admin-lambda-deliveries");
    event_hooks::delivery_log::dynamodb::create_table(
        &aws_sdk_dynamodb::Client::new(&config),
        &deliveries_table,
    )
    .await
    .expect("create the deliveries table");
    let (deliveries_url, _) =
        create_queue_with_dlq(&sqs, &unique_name("admin-lambda-deliveries"), 5)
            .await
            .expect("create the deliveries queue");
    // The admin token lives in Secrets Manager, as the template's AdminTokenSecret.
    let (secret_arn, token) = moto::create_admin_token(&config).await;
    let mut function = FunctionProcess::start(
        &binary,
        &moto::process_env(
            &endpoint,
            &[
                ("HOOKS_TABLE", &table),
                ("EVENTS_QUEUE_URL", &queue_url),
                ("DELIVERIES_TABLE", &deliveries_table),
                ("DELIVERIES_QUEUE_URL", &deliveries_url),
                ("ADMIN_TOKEN_SECRET_ARN", &secret_arn),
            ],
        ),
    )
    .await;
    let mut samples = Samples::new();

    // Fail closed: without the token, or with a wrong one, Kong's 401s.
    let list = samples.load("admin-list-hooks.json");
    let anonymous = call_as(&mut function, list.clone()).await;
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let guessed = call(&mut function, "guess", list.clone()).await;
    assert_eq!(guessed.status, 401, "{guessed:?}");
    assert_eq!(guessed.body["message"], "Invalid RBAC credentials");

    // When a hook is created from a JSON body, then it comes back as a 201 with defaults filled in.
    let created = call(
        &mut function,
        &token,
        samples.load("admin-create-hook.json"),
    )
    .await;
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(created.content_type(), Some("application/json"));
    assert_eq!(created.body["source"], "crud");
    assert_eq!(created.body["event"], "consumers");
    assert_eq!(created.body["handler"], "webhook");
    assert_eq!(created.body["config"]["url"], "https://example.com/hooks");
    assert!(created.body["id"].as_str().is_some(), "{created:?}");

    // When one is created from a base64 form body, then it is a 201 as well.
    let from_form = call(
        &mut function,
        &token,
        samples.load("admin-create-hook-form.json"),
    )
    .await;
    assert_eq!(from_form.status, 201, "{from_form:?}");
    assert_eq!(from_form.body["source"], "crud");
    assert_eq!(from_form.body["event"], "consumers");
    assert_eq!(from_form.body["config"]["url"], "https://example.com/hooks");

    // When the hooks are listed, then both are there.
    let listed = call(&mut function, &token, samples.load("admin-list-hooks.json")).await;
    assert_eq!(listed.status, 200, "{listed:?}");
    let ids: BTreeSet<&str> = listed.body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array in {listed:?}"))
        .iter()
        .filter_map(|hook| hook["id"].as_str())
        .collect();
    let expected: BTreeSet<&str> = [&created.body["id"], &from_form.body["id"]]
        .into_iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(ids, expected, "{listed:?}");

    // Given the hook the get/patch/delete samples address, put through the function itself.
    let get_sample = samples.load("admin-get-hook.json");
    let hook = json!({
        "source": "crud",
        "event": "consumers",
        "handler": "webhook",
        "config": {"url": "https://example.com/hooks"},
    });
    let put = call(&mut function, &token, put_event(&get_sample, &hook)).await;
    assert_eq!(put.status, 201, "{put:?}");
    assert_eq!(put.body["id"], SAMPLE_HOOK_ID);

    // When it is read, then it is the hook that was put.
    let read = call(&mut function, &token, get_sample.clone()).await;
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.body, put.body);

    // When it is patched, then the patch is applied and the rest kept.
    let patched = call(&mut function, &token, samples.load("admin-patch-hook.json")).await;
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(patched.body["id"], SAMPLE_HOOK_ID);
    assert_eq!(patched.body["event"], "consumers:create");
    assert_eq!(
        patched.body["config"]["headers"],
        json!({"x-hook-env": "staging"})
    );
    assert_eq!(patched.body["config"]["url"], "https://example.com/hooks");
    assert_eq!(patched.body["source"], "crud");

    // When it is deleted, then the answer is an empty 204 and it is gone.
    let deleted = call(
        &mut function,
        &token,
        samples.load("admin-delete-hook.json"),
    )
    .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");
    assert_eq!(deleted.body, Value::Null);
    let gone = call(&mut function, &token, get_sample).await;
    assert_eq!(gone.status, 404, "{gone:?}");
    assert_eq!(gone.body, json!({"message": "Not found"}));

    // When the sources are listed, then the built-in `crud` source is among them.
    let sources = call(
        &mut function,
        &token,
        samples.load("admin-list-sources.json"),
    )
    .await;
    assert_eq!(sources.status, 200, "{sources:?}");
    let data = &sources.body["data"];
    let has_crud = match data {
        Value::Object(by_source) => by_source.contains_key("crud"),
        Value::Array(list) => list
            .iter()
            .any(|source| source == "crud" || source["source"] == "crud"),
        _ => false,
    };
    assert!(has_crud, "no crud source in {sources:?}");

    // The event and delivery-log samples run in probe_lambda.rs, beside the dispatch data they need.
    let elsewhere = ["admin-emit-event.json", "admin-list-deliveries.json"];
    let unused: Vec<String> = samples
        .unused("admin-")
        .into_iter()
        .filter(|name| !elsewhere.contains(&name.as_str()))
        .collect();
    assert_eq!(
        unused,
        Vec::<String>::new(),
        "sample events no test invokes"
    );

    // Then every change put its `crud` and `dao:crud` events on the queue: three creates (two
    // POSTs and the PUT), one update, one delete.
    let events = drain_events(&SqsQueue::new(sqs, queue_url), 10, Duration::from_secs(20)).await;
    let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for event in &events {
        *counts
            .entry((event.source.clone(), event.event.clone()))
            .or_default() += 1;
        assert_eq!(event.data["schema"], "event_hooks", "{event:?}");
    }
    let expected: BTreeMap<(String, String), usize> = [
        (("crud", "event_hooks"), 5),
        (("dao:crud", "create"), 3),
        (("dao:crud", "update"), 1),
        (("dao:crud", "delete"), 1),
    ]
    .into_iter()
    .map(|((source, event), n)| ((source.to_owned(), event.to_owned()), n))
    .collect();
    assert_eq!(counts, expected, "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_admin_token_is_accepted_without_a_restart() {
    let Some(config) = moto::config() else {
        return;
    };
    let endpoint = std::env::var("MOTO_ENDPOINT").expect("MOTO_ENDPOINT");
    // Given the function reading its token from a secret on moto.
    let (secret_arn, old) = moto::create_admin_token(&config).await;
    let table = unique_name("admin-rotation");
    create_table(&aws_sdk_dynamodb::Client::new(&config), &table)
        .await
        .expect("create the hooks table");
    let mut function = FunctionProcess::start(
        &function_binary("admin-api"),
        &admin_env(&endpoint, &table, ("ADMIN_TOKEN_SECRET_ARN", &secret_arn)),
    )
    .await;
    let list = Samples::new().load("admin-list-hooks.json");
    assert_eq!(call(&mut function, &old, list.clone()).await.status, 200);

    // When the secret is rotated, then the new token works at once (a mismatch re-reads it),
    // and the old one is refused.
    let new = moto::rotate_admin_token(&config, &secret_arn).await;
    assert_eq!(call(&mut function, &new, list.clone()).await.status, 200);
    assert_eq!(call(&mut function, &old, list).await.status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_iam_auth_only_requests_api_gateway_signed_are_served() {
    let Some(config) = moto::config() else {
        return;
    };
    let endpoint = std::env::var("MOTO_ENDPOINT").expect("MOTO_ENDPOINT");
    let table = unique_name("admin-iam");
    create_table(&aws_sdk_dynamodb::Client::new(&config), &table)
        .await
        .expect("create the hooks table");
    // Given the function in IAM mode (API Gateway checks SigV4 signatures).
    let mut function = FunctionProcess::start(
        &function_binary("admin-api"),
        &admin_env(&endpoint, &table, ("ADMIN_AUTH", "iam")),
    )
    .await;
    let list = Samples::new().load("admin-list-hooks.json");

    // When a request comes without the IAM authorizer's identity (an API deployed without the
    // authorizer), then it is refused, token or not.
    assert_eq!(call_as(&mut function, list.clone()).await.status, 401);
    assert_eq!(call(&mut function, "any", list.clone()).await.status, 401);

    // When API Gateway signed it off, then it is served.
    let mut signed = list;
    signed["requestContext"]["authorizer"] = json!({"iam": {
        "accessKey": "AKIAEXAMPLE", "accountId": "123456789012", "callerId": "AIDAEXAMPLE",
        "principalOrgId": null, "userArn": "arn:aws:iam::123456789012:user/ops",
        "userId": "AIDAEXAMPLE"
    }});
    assert_eq!(call_as(&mut function, signed).await.status, 200);
}

#[tokio::test]
async fn without_admin_auth_the_function_refuses_to_start_naming_the_setting() {
    // Given every setting but the admin token's (no moto needed: it fails before any call).
    for extra in [vec![], vec![("ADMIN_TOKEN", "plaintext")]] {
        let mut env = vec![
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("HOOKS_TABLE", "hooks"),
            ("EVENTS_QUEUE_URL", "http://127.0.0.1:9/123456789012/events"),
            ("DELIVERIES_TABLE", "deliveries"),
            ("DELIVERIES_QUEUE_URL", "http://127.0.0.1:9/123456789012/d"),
        ];
        env.extend(extra);
        for binary in ["admin-api", "probe"] {
            let mut function = FunctionProcess::start(&function_binary(binary), &env).await;
            // When it starts, then it fails its init naming where the token must come from.
            let message = match function.init_failure(Duration::from_secs(20)).await {
                Failure::Init { body, .. } => body,
                Failure::Exited { log, .. } => log,
                other => panic!("unexpected failure: {other}"),
            };
            assert!(
                message.contains("ADMIN_TOKEN_SECRET_ARN"),
                "{binary}: the init failure does not name the setting: {message}"
            );
        }
    }
}

#[tokio::test]
async fn a_missing_hooks_table_fails_the_cold_start_naming_the_variable() {
    // Given the function without HOOKS_TABLE (it fails before touching AWS, so no moto needed).
    let binary = function_binary("admin-api");
    let mut function = FunctionProcess::start(
        &binary,
        &[
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9"),
            ("EVENTS_QUEUE_URL", "http://127.0.0.1:9/123456789012/events"),
            ("DELIVERIES_TABLE", "deliveries"),
            (
                "DELIVERIES_QUEUE_URL",
                "http://127.0.0.1:9/123456789012/deliveries",
            ),
            ("ADMIN_AUTH", "iam"),
        ],
    )
    .await;

    // When it starts, then it fails its init with a message naming the variable.
    let message = match function.init_failure(Duration::from_secs(20)).await {
        Failure::Init { body, .. } => body,
        Failure::Exited { log, .. } => log,
        other => panic!("unexpected failure: {other}"),
    };
    assert!(
        message.contains("HOOKS_TABLE"),
        "the init failure does not name HOOKS_TABLE: {message}"
    );
}

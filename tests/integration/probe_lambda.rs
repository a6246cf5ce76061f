//! The real `probe` Lambda binary (test and ping, spec §7), end to end: the `events/probe-*.json`
//! samples (the events `sam local invoke` uses) are fed to it through a fake Lambda Runtime API,
//! against a hooks table on moto and a loopback receiver. The `admin-api` binary's `POST /events`
//! and delivery-listing samples run here too, against the same hooks table, since both need a hook
//! the sample id names.

use std::time::Duration;

use event_hooks::model::{Handler, Hook, LogConfig, WebhookConfig};
use event_hooks::outbound::signing::{signature, SIGNATURE_HEADER};
use event_hooks::queue::sqs::{create_queue_with_dlq, SqsQueue};
use event_hooks::store::dynamodb::{create_table, DynamoHookStore};
use event_hooks::store::{HookStore, Precondition};
use event_hooks_tests::api_gateway::ApiResponse;
use event_hooks_tests::lambda_runtime::{function_binary, FunctionProcess};
use event_hooks_tests::moto::{self, unique_name};
use event_hooks_tests::queues::drain_events;
use event_hooks_tests::receiver::Receiver;
use event_hooks_tests::samples::Samples;
use serde_json::{json, Value};
use uuid::Uuid;

/// The hook id every sample addresses.
const SAMPLE_HOOK_ID: &str = "4a0c4f41-6b8b-4a42-9d37-0c6b8d1f8f0e";
const SECRET: &str = "hunter2";
const WAIT: Duration = Duration::from_secs(10);

/// The sample `event`, addressed to hook `id` instead of the sample hook (path, raw path and path
/// parameters alike).
fn for_hook(event: &Value, id: Uuid) -> Value {
    let text = event
        .to_string()
        .replace(SAMPLE_HOOK_ID, &id.hyphenated().to_string());
    serde_json::from_str(&text).expect("still JSON")
}

/// Invokes the function; any failure to answer ends the test with what the function reported.
async fn call(function: &mut FunctionProcess, token: &str, mut event: Value) -> ApiResponse {
    event["headers"]["kong-admin-token"] = json!(token);
    let raw = function
        .invoke(event)
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    ApiResponse::parse(&raw)
}

fn hook(id: Uuid, handler: Handler) -> Hook {
    Hook {
        id,
        created_at: 1_763_920_800,
        updated_at: 1_763_920_800,
        source: "crud".into(),
        event: Some("consumers".into()),
        handler,
        snooze: None,
        on_change: None,
        enabled: true,
        name: None,
        tags: vec![],
        delivery: Default::default(),
        disabled_reason: None,
        failing_since: None,
        max_rate: None,
    }
}

fn webhook(url: String) -> Handler {
    Handler::Webhook(WebhookConfig {
        url,
        headers: Default::default(),
        secret: Some(SECRET.into()),
        ssl_verify: true,
        signature: Default::default(),
        previous_secret: None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_and_admin_samples_run_through_the_lambda_binaries_on_moto() {
    let Some(config) = moto::config() else {
        return;
    };
    let endpoint = std::env::var("MOTO_ENDPOINT").expect("MOTO_ENDPOINT");
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let receiver = Receiver::start().await;
    let mut samples = Samples::new();

    // Given a hooks table on moto holding a signed webhook hook (the samples' id) pointed at a
    // loopback receiver, a log hook, and a webhook hook whose target refuses connections.
    let table = unique_name("probe-lambda");
    create_table(&dynamodb, &table)
        .await
        .expect("create the hooks table");
    let store = DynamoHookStore::new(dynamodb.clone(), table.clone());
    let sample_id = Uuid::parse_str(SAMPLE_HOOK_ID).unwrap();
    let log_id = Uuid::new_v4();
    // Port 1 on loopback: nothing listens there, and no test binds it.
    let refused_id = Uuid::new_v4();
    for hook in [
        hook(sample_id, webhook(receiver.url("/hook"))),
        hook(log_id, Handler::Log(LogConfig {})),
        hook(refused_id, webhook("http://127.0.0.1:1/".into())),
    ] {
        store
            .put(&hook, Precondition::Absent)
            .await
            .expect("put a hook");
    }

    // And the probe function started against it, loopback targets allowed.
    let (secret_arn, token) = moto::create_admin_token(&config).await;
    let aws_env = [
        ("ADMIN_TOKEN_SECRET_ARN", secret_arn.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("HOOKS_TABLE", table.as_str()),
    ];
    let mut probe_env = aws_env.to_vec();
    probe_env.extend([
        ("ALLOW_PRIVATE_TARGETS", "true"),
        ("CONNECT_TIMEOUT_SECONDS", "2"),
        ("REQUEST_TIMEOUT_SECONDS", "5"),
    ]);
    let mut probe = FunctionProcess::start(&function_binary("probe"), &probe_env).await;

    // When the sample hook is tested, then the target's answer is shown and it got the sample body
    // with the event's source and name, signed.
    let tested = call(&mut probe, &token, samples.load("probe-test-hook.json")).await;
    assert_eq!(tested.status, 200, "{tested:?}");
    assert_eq!(
        tested.body["data"],
        json!({"username": "bob", "event": "consumers", "source": "crud"})
    );
    assert_eq!(tested.body["result"]["status"], 200, "{tested:?}");
    assert_eq!(tested.body["result"]["body"], "ok");
    let requests = receiver.wait_for("/hook", 1, WAIT).await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].json()["username"], "bob");
    assert_eq!(
        requests[0].headers[SIGNATURE_HEADER],
        signature(SECRET.as_bytes(), &requests[0].body)
    );

    // When it is pinged, then the target got a signed ping showing the hook with its secret
    // redacted and no `operation`, and the answer shows what was sent and what came back.
    let ping_sample = samples.load("probe-ping-hook.json");
    let pinged = call(&mut probe, &token, ping_sample.clone()).await;
    assert_eq!(pinged.status, 200, "{pinged:?}");
    assert_eq!(pinged.body["result"]["status"], 200, "{pinged:?}");
    let requests = receiver.wait_for("/hook", 2, WAIT).await;
    let ping = &requests[1];
    assert_eq!(
        ping.headers[SIGNATURE_HEADER],
        signature(SECRET.as_bytes(), &ping.body)
    );
    let sent = ping.json();
    assert_eq!(sent["source"], "kong:event_hooks");
    assert_eq!(sent["event"], "ping");
    assert!(sent.get("operation").is_none(), "{sent}");
    assert_eq!(sent["event_hooks"]["id"], SAMPLE_HOOK_ID);
    assert_eq!(sent["event_hooks"]["config"]["secret"], "[redacted]");
    assert!(!ping.text().contains(SECRET), "the secret was sent: {sent}");
    assert_eq!(pinged.body["data"], sent);

    // When a log hook is pinged, then it is a 400 saying why.
    let not_pingable = call(&mut probe, &token, for_hook(&ping_sample, log_id)).await;
    assert_eq!(not_pingable.status, 400, "{not_pingable:?}");
    let message = not_pingable.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("log"), "{not_pingable:?}");

    // When an unknown hook is tested, then it is Kong's 404.
    let test_sample = samples.load("probe-test-hook.json");
    let unknown = call(&mut probe, &token, for_hook(&test_sample, Uuid::new_v4())).await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    assert_eq!(unknown.body, json!({"message": "Not found"}));

    // When a hook whose target refuses is tested, then it is a 502 saying what failed.
    let refused = call(&mut probe, &token, for_hook(&test_sample, refused_id)).await;
    assert_eq!(refused.status, 502, "{refused:?}");
    let message = refused.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("refused"), "{refused:?}");
    assert_eq!(
        receiver.requests().len(),
        2,
        "only the test and the ping reached the receiver"
    );

    // Given the admin function against the same hooks table, its queues and delivery log.
    let (events_url, _) = create_queue_with_dlq(&sqs, &unique_name("probe-lambda-events"), 5)
        .await
        .expect("create the events queue");
    let deliveries_table = unique_name("probe-lambda-deliveries");
    event_hooks::delivery_log::dynamodb::create_table(&dynamodb, &deliveries_table)
        .await
        .expect("create the deliveries table");
    let (deliveries_url, _) =
        create_queue_with_dlq(&sqs, &unique_name("probe-lambda-deliveries"), 5)
            .await
            .expect("create the deliveries queue");
    let mut admin_env = aws_env.to_vec();
    admin_env.extend([
        ("EVENTS_QUEUE_URL", events_url.as_str()),
        ("DELIVERIES_TABLE", deliveries_table.as_str()),
        ("DELIVERIES_QUEUE_URL", deliveries_url.as_str()),
    ]);
    let mut admin = FunctionProcess::start(&function_binary("admin-api"), &admin_env).await;

    // When an event is emitted over HTTP, then it is a 202 with its id, and it is on the queue.
    let emitted = call(&mut admin, &token, samples.load("admin-emit-event.json")).await;
    assert_eq!(emitted.status, 202, "{emitted:?}");
    let id = emitted.body["id"]
        .as_str()
        .and_then(|id| Uuid::parse_str(id).ok())
        .unwrap_or_else(|| panic!("no event id in {emitted:?}"));
    let events = drain_events(&SqsQueue::new(sqs, events_url), 1, Duration::from_secs(20)).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].id, id);
    assert_eq!(events[0].source, "crud");
    assert_eq!(events[0].event, "consumers");
    assert_eq!(
        events[0].data,
        json!({"operation": "create", "entity": {"username": "bob"}})
    );

    // When the sample hook's deliveries are listed (the probe logs none), then the page is empty.
    let listed = call(
        &mut admin,
        &token,
        samples.load("admin-list-deliveries.json"),
    )
    .await;
    assert_eq!(listed.status, 200, "{listed:?}");
    assert_eq!(
        listed.body,
        json!({"data": [], "next": null, "truncated_by_size": false})
    );

    assert_eq!(
        samples.unused("probe-"),
        Vec::<String>::new(),
        "probe sample events this test does not invoke"
    );
}

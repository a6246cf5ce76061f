//! The real `admin-api` Lambda binary serving Apigee Edge's routes (spec §12), end to end: the
//! `events/apigee-*.json` samples (Edge's documented list, get, create, edit, enable and delete
//! commands as API Gateway events, with Basic auth) are fed to it through a fake Lambda Runtime
//! API, against DynamoDB and SQS on moto, and compared field by field with Edge's documented
//! responses; and the `dispatch` binary notifying usage targets from DynamoDB.

use event_hooks::queue::sqs::create_queue_with_dlq;
use event_hooks::store::dynamodb::create_table;
use event_hooks_tests::api_gateway::ApiResponse;
use event_hooks_tests::lambda_runtime::{function_binary, FunctionProcess};
use event_hooks_tests::moto::{self, unique_name};
use event_hooks_tests::samples::Samples;
use serde_json::{json, Value};

use super::apigee_local::{assert_like, CREATED, EDITED, ENABLED, GOT, LISTED};

/// The webhook id the samples address (Edge's documented webhook3).
const SAMPLE_ID: &str = "0a07eb1f-f485-4539-8beb-01be449699b3";

async fn call(function: &mut FunctionProcess, event: Value) -> (u16, Value) {
    let raw = function
        .invoke(event)
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    let response = ApiResponse::parse(&raw);
    (response.status, response.body)
}

/// A sample addressed to webhook `id` instead of the documented one.
fn addressed(sample: Value, id: &str) -> Value {
    let text = sample.to_string().replace(SAMPLE_ID, id);
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_samples_run_through_the_admin_lambda_on_moto() {
    let Some(config) = moto::config() else {
        return;
    };
    let endpoint = std::env::var("MOTO_ENDPOINT").expect("MOTO_ENDPOINT");
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let table = unique_name("apigee-hooks");
    create_table(&dynamodb, &table).await.expect("hooks table");
    let deliveries_table = unique_name("apigee-deliveries");
    event_hooks::delivery_log::dynamodb::create_table(&dynamodb, &deliveries_table)
        .await
        .expect("deliveries table");
    let monetization_table = unique_name("apigee-monetization");
    event_hooks::apigee::dynamodb::create_table(&dynamodb, &monetization_table)
        .await
        .expect("monetization table");
    let sqs = aws_sdk_sqs::Client::new(&config);
    let (events_url, _) = create_queue_with_dlq(&sqs, &unique_name("apigee-events"), 5)
        .await
        .expect("events queue");
    let (deliveries_url, _) = create_queue_with_dlq(&sqs, &unique_name("apigee-deliv"), 5)
        .await
        .expect("deliveries queue");
    let secret_arn = moto::create_secret(&config, "password").await;
    let mut function = FunctionProcess::start(
        &function_binary("admin-api"),
        &moto::process_env(
            &endpoint,
            &[
                ("HOOKS_TABLE", &table),
                ("EVENTS_QUEUE_URL", &events_url),
                ("DELIVERIES_TABLE", &deliveries_table),
                ("DELIVERIES_QUEUE_URL", &deliveries_url),
                ("MONETIZATION_TABLE", &monetization_table),
                // Edge's `-u email:password`: the samples carry joe@example.com:password, and
                // the admin token ("password") is in Secrets Manager, as the template keeps it.
                ("ADMIN_TOKEN_SECRET_ARN", &secret_arn),
            ],
        ),
    )
    .await;
    let mut samples = Samples::new();

    // Create: webhook3, disabled, by the Basic user, as Edge documents.
    let (status, created) = call(&mut function, samples.load("apigee-create-webhook.json")).await;
    assert_eq!(status, 201, "{created}");
    assert_like(&created, &serde_json::from_str(CREATED).unwrap(), "create");
    let id = created["id"].as_str().unwrap().to_string();

    // List and get read like Edge's examples.
    let (status, listed) = call(&mut function, samples.load("apigee-list-webhooks.json")).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["totalRecords"], 1);
    assert_eq!(listed["webhooks"], json!([created.clone()]));
    let documented: Value = serde_json::from_str(LISTED).unwrap();
    for field in documented["webhooks"][1].as_object().unwrap().keys() {
        assert!(
            listed["webhooks"][0].get(field).is_some(),
            "list lacks {field}"
        );
    }
    let get = addressed(samples.load("apigee-get-webhook.json"), &id);
    let (status, got) = call(&mut function, get.clone()).await;
    assert_eq!((status, &got), (200, &created));
    for field in serde_json::from_str::<Value>(GOT)
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
    {
        assert!(got.get(field).is_some(), "get lacks {field}");
    }

    // Edit and enable.
    let edit = addressed(samples.load("apigee-edit-webhook.json"), &id);
    let (status, edited) = call(&mut function, edit).await;
    assert_eq!(status, 200, "{edited}");
    assert_like(&edited, &serde_json::from_str(EDITED).unwrap(), "edit");
    let enable = addressed(samples.load("apigee-enable-webhook.json"), &id);
    let (status, enabled) = call(&mut function, enable).await;
    assert_eq!(status, 200, "{enabled}");
    assert_like(&enabled, &serde_json::from_str(ENABLED).unwrap(), "enable");

    // A notification condition naming it.
    let condition = addressed(
        samples.load("apigee-create-notification-condition.json"),
        &id,
    );
    let (status, made) = call(&mut function, condition).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(
        made["actions"],
        json!([{"actionAttribute": "WEBHOOK", "value": id}])
    );
    assert_eq!(
        made["notificationCondition"][2]["value"],
        "%= 80 to 120 by 10"
    );

    // Without credentials: Edge's 401.
    let mut anonymous = get.clone();
    anonymous["headers"]
        .as_object_mut()
        .unwrap()
        .remove("authorization");
    let (status, error) = call(&mut function, anonymous).await;
    assert_eq!(status, 401, "{error}");
    assert_eq!(error["code"], "security.authentication.failed");

    // Delete (forceDelete=true), then it is Edge's 404.
    let delete = addressed(samples.load("apigee-delete-webhook.json"), &id);
    let (status, body) = call(&mut function, delete).await;
    assert_eq!((status, body), (204, Value::Null));
    let (status, gone) = call(&mut function, get).await;
    assert_eq!(status, 404, "{gone}");
    assert_eq!(gone["code"], "mint.resourceDoesNotExist");

    assert_eq!(
        samples.unused("apigee-"),
        Vec::<String>::new(),
        "sample events no test invokes"
    );
}

/// A usage event as the dispatch function receives it.
fn usage(percent: f64, cycle: i64) -> String {
    json!({
        "source": "monetization",
        "event": "usage",
        "data": {
            "orgName": "myorg",
            "developerEmail": "dev@example.com",
            "ratePlanId": "123456",
            "quotaPercentUsed": percent,
            "nextBillingCycleStartDate": cycle,
        }
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatch_lambda_notifies_usage_targets_once_per_cycle_on_moto() {
    use super::dispatch_lambda::{failed_ids, invoke, receive_all, record, start, Resources};
    use event_hooks::apigee::dynamodb::DynamoMonetizationStore;
    use event_hooks::apigee::{parse_usage_target, Condition, MonetizationStore};
    use event_hooks::store::{HookStore, Precondition};
    use event_hooks_tests::receiver::Receiver;

    let Some(config) = moto::config() else {
        return;
    };
    // Given the dispatch function with a monetization table, an enabled Apigee webhook and a
    // condition `%= 80 to 120 by 10` on it.
    let resources = Resources::create(&config).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let table = unique_name("apigee-dispatch-monetization");
    event_hooks::apigee::dynamodb::create_table(&dynamodb, &table)
        .await
        .expect("monetization table");
    let receiver = Receiver::start().await;
    let input = event_hooks::apigee::webhook::hook_input(
        "myorg",
        "w",
        &receiver.url("/w"),
        true,
        None,
        None,
    )
    .unwrap();
    let ctx = event_hooks::validate::Context {
        id: uuid::Uuid::new_v4(),
        created_at: 0,
        now: 0,
        lua: Default::default(),
    };
    let hook = event_hooks::validate::hook(&input, &ctx).unwrap();
    resources
        .store
        .put(&hook, Precondition::Absent)
        .await
        .unwrap();
    DynamoMonetizationStore::new(dynamodb.clone(), table.clone())
        .put_condition(&Condition {
            id: uuid::Uuid::new_v4(),
            org: "myorg".into(),
            rate_plan: "123456".into(),
            published: true,
            usage_target: "%= 80 to 120 by 10".into(),
            targets: parse_usage_target("%= 80 to 120 by 10").unwrap(),
            webhooks: vec![hook.id],
            created: 0,
            updated: 0,
        })
        .await
        .unwrap();
    // And (issue 19) a webhook of another organisation with a condition on the same rate plan
    // id, which usage of myorg must never reach.
    let other_input = event_hooks::apigee::webhook::hook_input(
        "otherorg",
        "w",
        &receiver.url("/otherorg"),
        true,
        None,
        None,
    )
    .unwrap();
    let other_hook = event_hooks::validate::hook(
        &other_input,
        &event_hooks::validate::Context {
            id: uuid::Uuid::new_v4(),
            ..ctx
        },
    )
    .unwrap();
    resources
        .store
        .put(&other_hook, Precondition::Absent)
        .await
        .unwrap();
    DynamoMonetizationStore::new(dynamodb.clone(), table.clone())
        .put_condition(&Condition {
            id: uuid::Uuid::new_v4(),
            org: "otherorg".into(),
            rate_plan: "123456".into(),
            published: true,
            usage_target: "%= 50".into(),
            targets: vec![50],
            webhooks: vec![other_hook.id],
            created: 0,
            updated: 0,
        })
        .await
        .unwrap();
    let mut env = resources.env();
    env.push(("MONETIZATION_TABLE", table));
    let mut function = start(&env).await;

    // When usage events arrive, one batch each: 50, 81, 95, 130, 130 again (a new event), then
    // 85 in a new billing cycle.
    let mut seen = Vec::new();
    for (percent, cycle) in [
        (50.0, 1),
        (81.0, 1),
        (95.0, 1),
        (130.0, 1),
        (130.0, 1),
        (85.0, 2),
    ] {
        let batch = resources
            .events
            .through(vec![record(&usage(percent, cycle))])
            .await;
        let response = invoke(&mut function, batch).await;
        assert!(failed_ids(&response).is_empty(), "{response}");
        // Each attempt is made inside the invocation: what it sent has arrived.
        let got: Vec<String> = receiver.requests()[seen.len()..]
            .iter()
            .map(|r| r.json()["triggerReason"].as_str().unwrap().to_string())
            .collect();
        seen.extend(got);
    }

    // Then each target was notified once per cycle, in order, with Edge's body.
    let percents: Vec<&str> = seen
        .iter()
        .map(|r| {
            r.trim_start_matches("UsageTarget ")
                .split('%')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(
        percents,
        ["80", "90", "100", "110", "120", "80"],
        "{seen:?}"
    );
    let first = &receiver.requests()[0];
    assert_eq!(first.headers["content-type"], "application/json");
    assert_eq!(first.json()["developerEmail"], "dev@example.com");
    assert!(first.json().get("source").is_none());
    // Nothing reached the other organisation's webhook.
    assert!(receiver.requests().iter().all(|r| r.path == "/w"));

    // When a usage without orgName arrives, then it is not reported as failed but parked in the
    // events dead-letter queue with the reason, and no webhook hears of it.
    let mut orgless: serde_json::Value = serde_json::from_str(&usage(99.0, 3)).unwrap();
    orgless["data"].as_object_mut().unwrap().remove("orgName");
    let sent = receiver.requests().len();
    let batch = resources
        .events
        .through(vec![record(&orgless.to_string())])
        .await;
    let response = invoke(&mut function, batch).await;
    assert!(failed_ids(&response).is_empty(), "{response}");
    let dead = receive_all(
        &resources.events.dead_letters,
        1,
        std::time::Duration::from_secs(10),
    )
    .await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let reason = dead[0]
        .attributes
        .get("reason")
        .cloned()
        .unwrap_or_default();
    assert!(reason.contains("'data.orgName' is required"), "{dead:#?}");
    assert_eq!(receiver.requests().len(), sent);
}

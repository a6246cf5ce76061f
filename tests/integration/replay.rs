//! `POST /event-hooks/{id}/deliveries/replay` through the real local server: failed deliveries (a
//! receiver answering 400) are sent again, or all settled ones, inside a time window, a bounded
//! number per call with an offset to go on from. Then the same through the `admin-api` Lambda
//! binary on moto: replayed from the DynamoDB log onto the SQS deliveries queue.

use std::collections::BTreeSet;
use std::time::Duration;

use event_hooks::delivery_log::dynamodb::DynamoDeliveryLog;
use event_hooks::delivery_log::sqlite::SqliteDeliveryLog;
use event_hooks::delivery_log::{
    timed_id, Attempt, DeliveryKey, DeliveryLog, DeliveryStatus, Then,
};
use event_hooks::events::{now_millis, Event};
use event_hooks::queue::sqs::{create_queue_with_dlq, SqsQueue};
use event_hooks::sqlite::Database;
use event_hooks_tests::api_gateway::ApiResponse;
use event_hooks_tests::lambda_runtime::{function_binary, FunctionProcess};
use event_hooks_tests::moto::{self, unique_name};
use event_hooks_tests::queues::{drain, drain_json};
use event_hooks_tests::receiver::{Receiver, Reply};
use event_hooks_tests::server::LocalServer;
use serde_json::{json, Value};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

/// Creates `hook`; answers its id.
async fn create(server: &LocalServer, hook: Value) -> String {
    server.create_hook(&hook).await["id"]
        .as_str()
        .unwrap()
        .to_owned()
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

/// The hook's logged deliveries once there are `count` and none is pending (panics after `WAIT`).
async fn settled(server: &LocalServer, hook: &str, count: usize) -> Vec<Value> {
    settled_as(server, hook, count, &["delivered", "failed"]).await
}

/// The hook's logged deliveries once there are `count`, each with one of `statuses`.
async fn settled_as(
    server: &LocalServer,
    hook: &str,
    count: usize,
    statuses: &[&str],
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let listed: Value =
            reqwest::get(server.url(&format!("/event-hooks/{hook}/deliveries?size=100")))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let data = listed["data"].as_array().unwrap().clone();
        let done = |d: &Value| statuses.iter().any(|s| d["status"] == *s);
        if data.len() == count && data.iter().all(done) {
            return data;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {count} deliveries {statuses:?}, got {listed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ids of the deliveries with `status`.
fn ids_with(deliveries: &[Value], status: &str) -> BTreeSet<String> {
    deliveries
        .iter()
        .filter(|d| d["status"] == status)
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Posts a replay with a JSON body; returns the status and the answer.
async fn replay(server: &LocalServer, hook: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.url(&format!("/event-hooks/{hook}/deliveries/replay")))
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

/// The ids a replay answer says it queued, checking that it counted them.
fn queued(answer: &Value) -> BTreeSet<String> {
    let ids: BTreeSet<String> = answer["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(answer["queued"], ids.len(), "{answer}");
    ids
}

/// The delivery ids of the receiver's requests from the `skip`-th on, once there are `total`.
async fn received(receiver: &Receiver, skip: usize, total: usize) -> Vec<(String, String)> {
    receiver.wait_for("/r", total, WAIT).await[skip..]
        .iter()
        .map(|r| {
            (
                r.headers["x-event-hook-delivery"].clone(),
                r.headers["x-event-hook-attempt"].clone(),
            )
        })
        .collect()
}

fn ids_of(received: &[(String, String)]) -> BTreeSet<String> {
    received.iter().map(|(id, _)| id.clone()).collect()
}

/// Waits until each of `ids` is logged with two attempts (the second one settled), so that the
/// log shows what a replay made of them.
async fn attempted_twice(server: &LocalServer, hook: &str, ids: &BTreeSet<String>) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let listed: Value =
            reqwest::get(server.url(&format!("/event-hooks/{hook}/deliveries?size=100")))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let done = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| ids.contains(d["id"].as_str().unwrap()))
            .filter(|d| d["attempts"].as_array().unwrap().len() == 2 && d["status"] == "failed")
            .count();
        if done == ids.len() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {ids:?} attempted twice, got {listed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now_seconds() -> i64 {
    now_millis() / 1000
}

#[tokio::test]
async fn failed_or_all_deliveries_of_a_window_are_sent_again() {
    // given: a hook whose receiver refuses two of four events (400: failed, not retried); its
    // creation ping, delivered, is logged too
    let server = LocalServer::in_process(&[]);
    let receiver = Receiver::start().await;
    let hook = create(
        &server,
        json!({"source":"crud","event":"consumers","handler":"webhook",
               "config":{"url":receiver.url("/r")}}),
    )
    .await;
    receiver.script([Reply::Status(400), Reply::Status(400)]);
    for name in ["a", "b", "c", "d"] {
        emit(&server, name).await;
    }
    let early = settled(&server, &hook, 5).await;
    let early_failed = ids_with(&early, "failed");
    assert_eq!(early_failed.len(), 2, "{early:?}");

    // and, in a later second, one more event that the receiver refuses
    let mid = now_seconds() + 1;
    while now_seconds() < mid {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiver.script([Reply::Status(400)]);
    emit(&server, "e").await;
    let all = settled(&server, &hook, 6).await;
    let late_failed: BTreeSet<String> = ids_with(&all, "failed")
        .difference(&early_failed)
        .cloned()
        .collect();
    assert_eq!(late_failed.len(), 1, "{all:?}");
    let every: BTreeSet<String> = all
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    // What the receiver records as events: all but the ping, which it keeps apart.
    let events: BTreeSet<String> = all
        .iter()
        .filter(|d| d["event"]["source"] == "crud")
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events.len(), 5);

    // when: the failed deliveries from `mid` on are replayed (and refused again)
    receiver.script([Reply::Status(400)]);
    let (status, answer) = replay(&server, &hook, json!({"since": mid})).await;

    // then: only the late failure is queued, and sent with its id, as attempt 2
    assert_eq!(status, 202, "{answer}");
    assert_eq!(queued(&answer), late_failed);
    assert_eq!(answer["status"], "failed");
    assert_eq!(answer["since"], mid);
    assert_eq!(answer["offset"], Value::Null);
    assert_eq!(answer["next"], Value::Null);
    let resent = received(&receiver, 5, 6).await;
    assert_eq!(ids_of(&resent), late_failed);
    assert!(
        resent.iter().all(|(_, attempt)| attempt == "2"),
        "{resent:?}"
    );
    attempted_twice(&server, &hook, &late_failed).await;

    // when: the failed deliveries up to the second before `mid` are replayed (and refused again)
    receiver.script([Reply::Status(400), Reply::Status(400)]);
    let (status, answer) = replay(&server, &hook, json!({"until": mid - 1})).await;

    // then: exactly the two early failures, though the late one is failed too
    assert_eq!(status, 202, "{answer}");
    assert_eq!(queued(&answer), early_failed);
    assert_eq!(answer["until"], mid - 1);
    assert_eq!(answer["since"], mid - 1 - 86_400);
    assert_eq!(ids_of(&received(&receiver, 6, 8).await), early_failed);
    attempted_twice(&server, &hook, &early_failed).await;

    // when: the failed deliveries of the last day are replayed, and accepted this time
    let (status, answer) = replay(&server, &hook, json!({})).await;

    // then: all three failures are queued, and once delivered no failure is left to replay
    assert_eq!(status, 202, "{answer}");
    let failed: BTreeSet<String> = early_failed.union(&late_failed).cloned().collect();
    assert_eq!(queued(&answer), failed);
    assert_eq!(ids_of(&received(&receiver, 8, 11).await), failed);
    settled_as(&server, &hook, 6, &["delivered"]).await;
    let (_, answer) = replay(&server, &hook, json!({"status": "failed"})).await;
    assert_eq!(answer["queued"], 0, "{answer}");

    // when: every settled delivery is replayed, asked for in a form
    let response = reqwest::Client::new()
        .post(server.url(&format!("/event-hooks/{hook}/deliveries/replay")))
        .form(&[("status", "all"), ("since", ""), ("until", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();

    // then: all six (the ping too) are queued and sent once more
    assert_eq!(queued(&answer), every);
    assert_eq!(answer["status"], "all");
    assert_eq!(ids_of(&received(&receiver, 11, 16).await), events);
    // (a replay skips deliveries still pending from the last one: wait until they are sent)
    settled_as(&server, &hook, 6, &["delivered"]).await;

    // when: they are replayed two per call, each call going on from the last one's `next`
    let mut body = json!({"status": "all", "size": 2});
    let mut calls = Vec::new();
    loop {
        let (status, answer) = replay(&server, &hook, body).await;
        assert_eq!(status, 202, "{answer}");
        calls.push(queued(&answer));
        if answer["next"].is_null() {
            assert_eq!(answer["offset"], Value::Null);
            break;
        }
        assert_eq!(answer["next"]["offset"], answer["offset"]);
        body = answer["next"].clone();
    }

    // then: calls of 2, 2 and 2 cover all six, each once
    assert_eq!(
        calls.iter().map(BTreeSet::len).collect::<Vec<_>>(),
        vec![2, 2, 2]
    );
    let union: BTreeSet<String> = calls.iter().flatten().cloned().collect();
    assert_eq!(union, every);
}

#[tokio::test]
async fn a_replay_queues_at_most_a_thousand_and_says_where_to_go_on() {
    // given: a log hook with 1,001 failed deliveries in the last hour, written into the
    // server's delivery log
    let server = LocalServer::in_process(&[]);
    let hook = create(&server, json!({"source":"crud","handler":"log"})).await;
    let seeded = seed_failed(&server, &hook, 1_001).await;

    // when: they are replayed
    let (status, first) = replay(&server, &hook, json!({})).await;

    // then: a thousand are queued, the oldest first, with an offset to the rest
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["queued"], 1_000);
    let offset = first["offset"].as_str().expect("an offset").to_owned();
    assert_eq!(first["next"]["offset"], offset.as_str());

    // and the next call queues the last one
    let (status, second) = replay(&server, &hook, first["next"].clone()).await;
    assert_eq!(status, 202, "{second}");
    assert_eq!(second["queued"], 1);
    assert_eq!(second["offset"], Value::Null);
    let mut all = queued(&first);
    all.extend(queued(&second));
    assert_eq!(all, seeded);
}

#[tokio::test]
async fn bad_replays_are_kong_errors() {
    let server = LocalServer::in_process(&[]);
    let hook = create(&server, json!({"source":"crud","handler":"log"})).await;

    // an unknown hook is 404, a malformed id 400
    let (status, answer) = replay(&server, &Uuid::new_v4().to_string(), json!({})).await;
    assert_eq!((status, answer), (404, json!({"message": "Not found"})));
    let (status, answer) = replay(&server, "not-a-uuid", json!({})).await;
    assert_eq!(
        (status, answer["name"].clone()),
        (400, json!("invalid primary key"))
    );

    // bad parameters are schema violations naming the field
    for (body, field, message) in [
        (
            json!({"since": 20, "until": 10}),
            "since",
            "should not be after until (10)",
        ),
        (json!({"until": "soon"}), "until", "expected an integer"),
        (
            json!({"status": "pending"}),
            "status",
            "expected one of: failed, all",
        ),
        (
            json!({"size": 0}),
            "size",
            "value should be between 1 and 1000",
        ),
        (
            json!({"offset": "!!"}),
            "offset",
            "invalid offset: bad base64 encoding",
        ),
    ] {
        let (status, answer) = replay(&server, &hook, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["code"], 2, "{answer}");
        assert_eq!(answer["name"], "schema violation");
        assert_eq!(answer["fields"], json!({ field: message }), "{body}");
        assert_eq!(
            answer["message"],
            format!("schema violation ({field}: {message})")
        );
    }
}

/// An API Gateway HTTP API (payload 2.0) request with a JSON body.
fn api_request(method: &str, path: &str, body: &Value) -> Value {
    let body = body.to_string();
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "content-length": body.len().to_string()},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "a1b2c3d4e5",
            "domainName": "a1b2c3d4e5.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "a1b2c3d4e5",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.10", "userAgent": "test"},
            "requestId": Uuid::new_v4().to_string(),
            "routeKey": "$default",
            "stage": "$default",
            "time": "23/Nov/2025:18:03:03 +0000",
            "timeEpoch": 1_763_920_983_750_i64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

/// Invokes the admin function; returns the status and the JSON body.
async fn call(
    function: &mut FunctionProcess,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let raw = function
        .invoke(api_request(method, path, &body))
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_ne!(raw["isBase64Encoded"], true, "a JSON answer: {raw}");
    let response = ApiResponse::parse(&raw);
    (response.status, response.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_lambda_replays_from_dynamodb_onto_the_deliveries_queue() {
    let Some(config) = moto::config() else {
        return;
    };
    let endpoint = std::env::var("MOTO_ENDPOINT").expect("MOTO_ENDPOINT");
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let hooks_table = unique_name("replay-hooks");
    event_hooks::store::dynamodb::create_table(&dynamodb, &hooks_table)
        .await
        .unwrap();
    let deliveries_table = unique_name("replay-deliveries");
    event_hooks::delivery_log::dynamodb::create_table(&dynamodb, &deliveries_table)
        .await
        .unwrap();
    let (events_url, _) = create_queue_with_dlq(&sqs, &unique_name("replay-events"), 5)
        .await
        .unwrap();
    let (deliveries_url, _) = create_queue_with_dlq(&sqs, &unique_name("replay-deliveries"), 5)
        .await
        .unwrap();
    // The admin token in Secrets Manager, as the template creates it.
    let (secret_arn, token) = moto::create_admin_token(&config).await;
    let mut function = FunctionProcess::start(
        &function_binary("admin-api"),
        &moto::process_env(
            &endpoint,
            &[
                ("HOOKS_TABLE", &hooks_table),
                ("EVENTS_QUEUE_URL", &events_url),
                ("DELIVERIES_TABLE", &deliveries_table),
                ("DELIVERIES_QUEUE_URL", &deliveries_url),
                ("ADMIN_TOKEN_SECRET_ARN", &secret_arn),
            ],
        ),
    )
    .await
    .with_admin_token(&token);

    // given: a log hook (no ping on the deliveries queue) whose log holds, oldest first, a
    // failed, a delivered, a failed and a pending delivery in the last hour
    let (status, hook) = call(
        &mut function,
        "POST",
        "/event-hooks",
        json!({"source": "crud", "handler": "log"}),
    )
    .await;
    assert_eq!(status, 201, "{hook}");
    let hook = hook["id"].as_str().unwrap().to_owned();
    let hook_id = Uuid::parse_str(&hook).unwrap();
    let log = DynamoDeliveryLog::new(dynamodb.clone(), deliveries_table.clone());
    let start = now_millis() - 3_600_000;
    let statuses = [
        DeliveryStatus::Failed,
        DeliveryStatus::Delivered,
        DeliveryStatus::Failed,
        DeliveryStatus::Pending,
    ];
    let mut ids = Vec::new();
    for (i, status) in statuses.into_iter().enumerate() {
        let at = start + i64::try_from(i).unwrap() * 1_000;
        let key = DeliveryKey {
            hook_id,
            delivery_id: timed_id(Uuid::new_v4(), at),
            created_at: at,
        };
        let event = Event {
            id: Uuid::new_v4(),
            source: "crud".into(),
            event: "consumers".into(),
            data: json!({"operation": "create", "entity": {"username": format!("u{i}")}}),
            timestamp: at,
        };
        let attempt = Attempt {
            number: 1,
            at,
            status: Some(400),
            latency_ms: 1,
            error: None,
            response_body: None,
        };
        log.record_attempt(
            key,
            &event,
            attempt,
            status,
            Duration::from_secs(86_400),
            Then::Done,
        )
        .await
        .unwrap();
        ids.push(key.delivery_id.to_string());
    }
    let path = format!("/event-hooks/{hook}/deliveries/replay");
    let queue = SqsQueue::new(sqs, deliveries_url);

    // when: the failed deliveries are replayed
    let (status, answer) = call(&mut function, "POST", &path, json!({})).await;

    // then: the two failed ones are on the deliveries queue, same ids, attempt 2
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        queued(&answer),
        BTreeSet::from([ids[0].clone(), ids[2].clone()])
    );
    let messages = drain_json(&queue, 2, WAIT).await;
    let sent: BTreeSet<String> = messages
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sent, queued(&answer), "{messages:?}");
    assert!(messages
        .iter()
        .all(|m| m["attempt"] == 2 && m["hook_id"] == hook.as_str()));

    // when: all settled ones are replayed, one per call
    let (status, first) = call(
        &mut function,
        "POST",
        &path,
        json!({"status": "all", "size": 1}),
    )
    .await;
    assert_eq!(status, 202, "{first}");

    // then: only the delivered one: the failed ones are pending since the first replay queued
    // them (claimed in the log), and are not queued twice; never the pending one
    assert_eq!(first["deliveries"], json!([ids[1]]));
    if !first["next"].is_null() {
        let (status, second) = call(&mut function, "POST", &path, first["next"].clone()).await;
        assert_eq!(status, 202, "{second}");
        assert_eq!(second["deliveries"], json!([]));
    }
    assert_eq!(drain(&queue, 1, WAIT).await.len(), 1);

    // and an unknown hook is 404, a bad status 400 in Kong's shape
    let unknown = format!("/event-hooks/{}/deliveries/replay", Uuid::new_v4());
    let (status, _) = call(&mut function, "POST", &unknown, json!({})).await;
    assert_eq!(status, 404);
    let (status, answer) = call(&mut function, "POST", &path, json!({"status": "some"})).await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["fields"],
        json!({"status": "expected one of: failed, all"})
    );
}

/// Writes `count` failed deliveries of `hook` (one attempt each, in the last hour) into the
/// server's delivery log; returns their ids.
async fn seed_failed(server: &LocalServer, hook: &str, count: usize) -> BTreeSet<String> {
    let hook_id = Uuid::parse_str(hook).unwrap();
    let log =
        SqliteDeliveryLog::new(Database::open(&server.data_dir.join("deliveries.db")).unwrap())
            .await
            .unwrap();
    let start = now_millis() - 3_600_000;
    let mut seeded = BTreeSet::new();
    for i in 0..count {
        let at = start + i64::try_from(i).unwrap();
        let event = Event {
            id: Uuid::new_v4(),
            source: "crud".into(),
            event: "consumers".into(),
            data: json!({"operation":"create","entity":{"username":format!("u{i}")}}),
            timestamp: at,
        };
        let key = DeliveryKey {
            hook_id,
            delivery_id: timed_id(Uuid::new_v4(), at),
            created_at: at,
        };
        let attempt = Attempt {
            number: 1,
            at,
            status: Some(400),
            latency_ms: 1,
            error: None,
            response_body: None,
        };
        log.record_attempt(
            key,
            &event,
            attempt,
            DeliveryStatus::Failed,
            Duration::from_secs(86_400),
            Then::Done,
        )
        .await
        .unwrap();
        seeded.insert(key.delivery_id.to_string());
    }
    seeded
}

/// Every logged delivery of the hook, walking the listing's pages.
async fn all_deliveries(server: &LocalServer, hook: &str) -> Vec<Value> {
    let mut path = format!("/event-hooks/{hook}/deliveries?size=1000");
    let mut all = Vec::new();
    loop {
        let page: Value = reqwest::get(server.url(&path))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        all.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next"].as_str() {
            Some(next) => path = next.to_owned(),
            None => return all,
        }
    }
}

/// The attempt numbers logged for each delivery.
fn attempt_numbers(deliveries: &[Value]) -> Vec<(String, Vec<u64>)> {
    deliveries
        .iter()
        .map(|d| {
            let numbers = d["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["number"].as_u64().unwrap())
                .collect();
            (d["id"].as_str().unwrap().to_owned(), numbers)
        })
        .collect()
}

/// Waits until each of the hook's deliveries `ids` has `attempts` attempts and is settled;
/// returns them.
async fn attempted(
    server: &LocalServer,
    hook: &str,
    ids: &BTreeSet<String>,
    attempts: usize,
) -> Vec<Value> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut all = all_deliveries(server, hook).await;
        all.retain(|d| ids.contains(d["id"].as_str().unwrap()));
        if all.len() == ids.len()
            && all.iter().all(|d| {
                d["attempts"].as_array().unwrap().len() >= attempts && d["status"] != "pending"
            })
        {
            return all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected {attempts} attempts each"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_replays_queue_each_delivery_once_and_attempts_keep_increasing() {
    // given: a log hook with 300 failed deliveries, one attempt each
    let server = LocalServer::in_process(&[]);
    let hook = create(&server, json!({"source":"crud","handler":"log"})).await;
    let seeded = seed_failed(&server, &hook, 300).await;

    // when: four replays are made at once
    let (a, b, c, d) = tokio::join!(
        replay(&server, &hook, json!({})),
        replay(&server, &hook, json!({})),
        replay(&server, &hook, json!({})),
        replay(&server, &hook, json!({})),
    );

    // then: between them they queue each delivery exactly once
    let mut total = 0;
    let mut union = BTreeSet::new();
    for (status, answer) in [a, b, c, d] {
        assert_eq!(status, 202, "{answer}");
        let ids = queued(&answer);
        total += ids.len();
        union.extend(ids);
    }
    assert_eq!(total, seeded.len(), "a delivery was queued twice");
    assert_eq!(union, seeded);

    // and each is sent once, as attempt 2: no attempt number is logged twice
    let after_first = attempted(&server, &hook, &seeded, 2).await;
    for (id, numbers) in attempt_numbers(&after_first) {
        assert_eq!(numbers, vec![1, 2], "delivery {id}");
    }

    // when: two more replays of every settled delivery, one right after the other (the second
    // finds what the first queued pending, or, once sent, settled again)
    for _ in 0..2 {
        let (status, answer) = replay(&server, &hook, json!({"status": "all"})).await;
        assert_eq!(status, 202, "{answer}");
    }

    // then: attempt numbers keep counting up, none logged twice
    let after = attempted(&server, &hook, &seeded, 3).await;
    for (id, numbers) in attempt_numbers(&after) {
        assert!(
            numbers.windows(2).all(|pair| pair[0] < pair[1]),
            "delivery {id}: attempts {numbers:?} do not strictly increase"
        );
    }
}

#[tokio::test]
async fn a_replay_on_a_disabled_hook_is_refused_and_dead_letters_nothing() {
    // given: a disabled log hook with failed deliveries
    let server = LocalServer::in_process(&[]);
    let hook = create(
        &server,
        json!({"source":"crud","handler":"log","enabled":false}),
    )
    .await;
    let seeded = seed_failed(&server, &hook, 5).await;

    // when: its deliveries are replayed
    let (status, answer) = replay(&server, &hook, json!({})).await;

    // then: 409 in Kong's shape, nothing queued, nothing dead-lettered, the log unchanged
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("is disabled"),
        "{answer}"
    );
    server.wait_until_settled().await;
    let dead: Value = reqwest::get(server.url("/dead-letters"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dead["total"], 0, "{dead}");
    let mut logged = all_deliveries(&server, &hook).await;
    logged.retain(|d| seeded.contains(d["id"].as_str().unwrap()));
    assert_eq!(logged.len(), seeded.len());
    assert!(logged
        .iter()
        .all(|d| d["status"] == "failed" && d["attempts"].as_array().unwrap().len() == 1));
}

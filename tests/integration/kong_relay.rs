//! The Kong relay, `POST /events/kong` (spec §13), over real HTTP: a `webhook` hook of one local
//! instance (Kong-compatible, as our sender is) pointed at another instance's relay delivers the
//! event to a hook of the second, signed and unsigned; a missing or wrong signature is a 401 and
//! queues nothing; Kong's ping is answered and never dispatched; Kong's documented payloads
//! (`tests/fixtures/kong-relay/`) arrive as they were sent.

use std::time::Duration;

use event_hooks::outbound::signing::signature;
use event_hooks_tests::receiver::Receiver;
use event_hooks_tests::server::LocalServer;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);

/// A Kong-documented payload of `tests/fixtures/kong-relay/`, as its bytes.
fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../tests/fixtures/kong-relay/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// `body` posted to the relay as Kong posts it, signed with `secret` if any; the status and the
/// answer.
async fn relay(server: &LocalServer, body: &[u8], secret: Option<&[u8]>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(server.url("/events/kong"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(secret) = secret {
        request = request.header("x-kong-signature", signature(secret, body));
    }
    let response = request.send().await.expect("the relay answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A hook on `relay` that sends what it gets for `source` (and `event`) to `receiver`'s `path`.
async fn forward(
    relay: &LocalServer,
    receiver: &Receiver,
    source: &str,
    event: Option<&str>,
    path: &str,
) {
    relay
        .create_hook(
            &json!({"source": source, "event": event, "handler": "webhook",
                             "config": {"url": receiver.url(path)}}),
        )
        .await;
}

/// How many events the server's dispatcher has taken from its events queue.
async fn events_dispatched(server: &LocalServer) -> u64 {
    server.dispatch_counts().await["events"]
        .as_u64()
        .expect("a count")
}

fn consumer_created(name: &str) -> Value {
    json!({"source":"crud","event":"consumers",
           "data":{"operation":"create","entity":{"username":name},"old_entity":null}})
}

#[tokio::test]
async fn a_signed_round_trip_reaches_the_relays_hooks_with_either_secret() {
    // given: a relay holding two secrets (a rotation under way), a hook on it, and a sender
    // whose webhook hook signs with the old secret
    let relay_server = LocalServer::in_process(&["--relay-secret", "new", "--relay-secret", "old"]);
    let sender = LocalServer::in_process(&[]);
    let receiver = Receiver::start().await;
    forward(&relay_server, &receiver, "crud", Some("consumers"), "/got").await;
    sender
        .create_hook(
            &json!({"source":"crud","event":"consumers","handler":"webhook",
                             "config":{"url": relay_server.url("/events/kong"), "secret":"old"}}),
        )
        .await;

    // when: the sender gets an event
    sender.emit(&consumer_created("jane")).await;

    // then: the relay's hook receives it as Kong's webhook handler would send it
    let got = receiver.wait_for("/got", 1, WAIT).await;
    assert_eq!(
        got[0].json(),
        json!({"operation":"create","entity":{"username":"jane"},"old_entity":null,
               "event":"consumers","source":"crud"})
    );
    // and the new secret is taken too, directly
    let body = br#"{"source":"crud","event":"consumers","operation":"delete","entity":{"username":"jane"}}"#;
    let (status, answer) = relay(&relay_server, body, Some(b"new")).await;
    assert_eq!(status, 202, "{answer}");
    assert!(answer["id"].is_string(), "{answer}");
    let got = receiver.wait_for("/got", 2, WAIT).await;
    assert_eq!(got[1].json()["operation"], "delete");
}

#[tokio::test]
async fn an_unsigned_round_trip_needs_the_relay_to_allow_it() {
    let relay_server = LocalServer::in_process(&["--relay-unsigned"]);
    let sender = LocalServer::in_process(&[]);
    let receiver = Receiver::start().await;
    forward(&relay_server, &receiver, "crud", None, "/any").await;
    sender
        .create_hook(&json!({"source":"crud","handler":"webhook",
                             "config":{"url": relay_server.url("/events/kong")}}))
        .await;

    sender.emit(&consumer_created("ann")).await;

    // The hook on every crud event also relays the sender's own hook change (`event_hooks`).
    let deadline = std::time::Instant::now() + WAIT;
    let consumers = loop {
        let consumers: Vec<Value> = receiver
            .requests()
            .iter()
            .map(|request| request.json())
            .filter(|body| body["event"] == "consumers")
            .collect();
        if !consumers.is_empty() || std::time::Instant::now() > deadline {
            break consumers;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    relay_server.wait_until_settled().await;
    assert_eq!(consumers.len(), 1, "{:?}", receiver.requests());
    assert_eq!(consumers[0]["entity"]["username"], "ann");
}

#[tokio::test]
async fn a_missing_or_wrong_signature_is_a_401_and_queues_nothing() {
    let relay_server = LocalServer::in_process(&["--relay-secret", "right"]);
    let receiver = Receiver::start().await;
    forward(&relay_server, &receiver, "crud", Some("consumers"), "/got").await;
    relay_server.wait_until_settled().await;
    let before = events_dispatched(&relay_server).await;
    let body = fixture("test-consumers.json");

    for (secret, what) in [(None, "Missing"), (Some(b"wrong".as_slice()), "Invalid")] {
        let (status, answer) = relay(&relay_server, &body, secret).await;
        assert_eq!(status, 401, "{answer}");
        let message = answer["message"].as_str().expect("Kong's {\"message\"}");
        assert!(
            message.starts_with(&format!("{what} X-Kong-Signature")),
            "{message}"
        );
    }
    // A signature of another body (tampered on the way) is as wrong.
    let tampered = reqwest::Client::new()
        .post(relay_server.url("/events/kong"))
        .header("content-type", "application/json")
        .header("x-kong-signature", signature(b"right", b"{}"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), 401);
    let unread = reqwest::Client::new()
        .post(relay_server.url("/events/kong"))
        .header("x-kong-signature", signature(b"right", b"{}"))
        .header("kong-admin-token", "irrelevant")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(unread.status(), 400, "signed right, then read: no source");

    relay_server.wait_until_settled().await;
    assert_eq!(
        events_dispatched(&relay_server).await,
        before,
        "nothing was queued"
    );
    assert!(receiver.requests().is_empty());
    // The same body signed right goes through: the refusals were the signature's.
    let (status, _) = relay(&relay_server, &body, Some(b"right")).await;
    assert_eq!(status, 202);
    receiver.wait_for("/got", 1, WAIT).await;
}

#[tokio::test]
async fn without_a_secret_or_the_flag_the_relay_takes_nothing() {
    let relay_server = LocalServer::in_process(&[]);
    let body = fixture("test-consumers.json");
    for secret in [None, Some(b"any".as_slice())] {
        let (status, answer) = relay(&relay_server, &body, secret).await;
        assert_eq!(status, 401, "{answer}");
        assert!(answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("not configured")));
    }
}

#[tokio::test]
async fn kongs_documented_payloads_arrive_as_kong_sent_them_and_its_ping_is_answered() {
    let relay_server = LocalServer::in_process(&["--relay-secret", "hunter2"]);
    let receiver = Receiver::start().await;
    forward(&relay_server, &receiver, "crud", Some("consumers"), "/crud").await;
    forward(
        &relay_server,
        &receiver,
        "rate-limiting-advanced",
        None,
        "/rla",
    )
    .await;
    relay_server.wait_until_settled().await;
    let before = events_dispatched(&relay_server).await;

    let (status, answer) = relay(&relay_server, &fixture("ping.json"), Some(b"hunter2")).await;
    assert_eq!((status, answer), (200, json!({"message": "pong"})));
    relay_server.wait_until_settled().await;
    assert_eq!(
        events_dispatched(&relay_server).await,
        before,
        "the ping is not dispatched"
    );

    for (name, path) in [
        ("test-consumers.json", "/crud"),
        ("rate-limit-exceeded.json", "/rla"),
    ] {
        let body = fixture(name);
        let (status, answer) = relay(&relay_server, &body, Some(b"hunter2")).await;
        assert_eq!(status, 202, "{name}: {answer}");
        let got = receiver.wait_for(path, 1, WAIT).await;
        let sent: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(got[0].json(), sent, "{name} is delivered as Kong sent it");
    }
}

#[tokio::test]
async fn unknown_sources_and_events_get_the_400_of_post_events() {
    let relay_server = LocalServer::in_process(&["--relay-unsigned"]);
    for (body, message) in [
        (
            json!({"source":"nope","event":"x"}),
            "source 'nope' is not registered",
        ),
        (
            json!({"source":"crud","event":"nope"}),
            "event 'nope' is not registered for source 'crud'",
        ),
    ] {
        let bytes = serde_json::to_vec(&body).unwrap();
        let (status, answer) = relay(&relay_server, &bytes, None).await;
        assert_eq!((status, answer.clone()), (400, json!({"message": message})));
        let direct = reqwest::Client::new()
            .post(relay_server.url("/events"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(direct.status(), 400);
        assert_eq!(
            direct.json::<Value>().await.unwrap(),
            answer,
            "as POST /events says"
        );
    }
    // Not JSON, not an object, too large, not JSON's media type: Kong's shapes, never a 500.
    let (status, answer) = relay(&relay_server, b"{not json", None).await;
    assert_eq!(
        (status, answer),
        (400, json!({"message": "Cannot parse JSON body"}))
    );
    let (status, _) = relay(&relay_server, b"[1]", None).await;
    assert_eq!(status, 400);
    let large = vec![b' '; event_hooks::admin::MAX_BODY_BYTES + 1];
    let (status, _) = relay(&relay_server, &large, None).await;
    assert_eq!(status, 413);
    let form = reqwest::Client::new()
        .post(relay_server.url("/events/kong"))
        .form(&[("source", "crud")])
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    let get = reqwest::get(relay_server.url("/events/kong"))
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    let allow = get.headers()["allow"].clone();
    assert_eq!(
        get.json::<Value>().await.unwrap(),
        json!({"message": "Method not allowed"})
    );
    let events = reqwest::get(relay_server.url("/events")).await.unwrap();
    assert_eq!(allow, events.headers()["allow"], "as POST /events answers");
}

#[tokio::test]
async fn the_relay_is_outside_the_admin_token_and_secrets_can_come_from_a_file() {
    let dir = event_hooks_tests::server::temp_data_dir();
    let file = dir.join("relay-secrets");
    std::fs::write(&file, "\nfrom-file\n").unwrap();
    let file_arg = file.display().to_string();
    let relay_server =
        LocalServer::in_process(&["--admin-token", "admin", "--relay-secrets-file", &file_arg]);
    let body = fixture("test-consumers.json");
    let (status, answer) = relay(&relay_server, &body, Some(b"from-file")).await;
    assert_eq!(status, 202, "no admin token needed: {answer}");
    // The admin routes still want it.
    let events = reqwest::Client::new()
        .post(relay_server.url("/events"))
        .json(&consumer_created("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 401);
    // A rotation through the file: the new secret is taken without a restart.
    std::fs::write(&file, "rotated\nfrom-file\n").unwrap();
    let (status, answer) = relay(&relay_server, &body, Some(b"rotated")).await;
    assert_eq!(status, 202, "{answer}");
}

#[tokio::test]
async fn kongs_two_posts_of_one_crud_change_are_delivered_once() {
    // given: Kong's hook without an event, which posts every change twice (on `consumers` and on
    // `consumers:create`), and a hook here on every crud event
    let relay_server = LocalServer::in_process(&["--relay-secret", "s"]);
    let receiver = Receiver::start().await;
    forward(&relay_server, &receiver, "crud", Some("consumers"), "/once").await;
    let data =
        r#""operation":"create","entity":{"id":"4b3a","username":"kim","created_at":1627581575}"#;

    // when: both posts arrive
    let mut ids = Vec::new();
    for event in ["consumers", "consumers:create"] {
        let body = format!(r#"{{{data},"event":"{event}","source":"crud"}}"#);
        let (status, answer) = relay(&relay_server, body.as_bytes(), Some(b"s")).await;
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["id"].clone());
    }

    // then: one event, one delivery
    assert_eq!(
        ids[0], ids[1],
        "the second post is answered with the first's id"
    );
    receiver.wait_for("/once", 1, WAIT).await;
    relay_server.wait_until_settled().await;
    assert_eq!(receiver.requests().len(), 1, "{:?}", receiver.requests());
}

/// The deployed relay: the real `admin-api` binary, its relay secrets in Secrets Manager and its
/// events queue on moto, fed `events/kong-relay-event.json` as API Gateway sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_relay_reads_its_secrets_from_secrets_manager_and_queues_on_sqs() {
    use event_hooks::queue::sqs::{create_queue_with_dlq, SqsQueue};
    use event_hooks_tests::api_gateway::ApiResponse;
    use event_hooks_tests::lambda_runtime::{function_binary, FunctionProcess};
    use event_hooks_tests::moto::{self, unique_name};
    use event_hooks_tests::queues::drain;

    let Some(config) = moto::config() else {
        return;
    };
    let endpoint = std::env::var("MOTO_ENDPOINT").expect("MOTO_ENDPOINT");
    // Given the relay secrets (two: a rotation) in a secret, as the template's KongRelaySecret.
    let relay_secrets = moto::create_secret(&config, "new\nold\n").await;
    let (admin_secret, _) = moto::create_admin_token(&config).await;
    let table = unique_name("relay-lambda");
    event_hooks::store::dynamodb::create_table(&aws_sdk_dynamodb::Client::new(&config), &table)
        .await
        .expect("create the hooks table");
    let sqs = aws_sdk_sqs::Client::new(&config);
    let (queue_url, _) = create_queue_with_dlq(&sqs, &unique_name("relay-lambda-events"), 5)
        .await
        .expect("create the events queue");
    let mut function = FunctionProcess::start(
        &function_binary("admin-api"),
        &moto::process_env(
            &endpoint,
            &[
                ("HOOKS_TABLE", &table),
                ("EVENTS_QUEUE_URL", &queue_url),
                ("DELIVERIES_TABLE", "unused"),
                ("DELIVERIES_QUEUE_URL", "http://127.0.0.1:9/123456789012/d"),
                ("ADMIN_TOKEN_SECRET_ARN", &admin_secret),
                ("RELAY_SECRETS_SECRET_ARN", &relay_secrets),
            ],
        ),
    )
    .await;
    let sample: Value = serde_json::from_slice(
        &std::fs::read(format!(
            "{}/../events/kong-relay-event.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("the sample"),
    )
    .expect("JSON");
    let body = sample["body"].as_str().expect("a body").as_bytes().to_vec();
    let signed = |secret: &[u8]| {
        let mut event = sample.clone();
        event["headers"]["x-kong-signature"] = json!(signature(secret, &body));
        event
    };
    let mut call = async |event: Value| {
        let raw = function
            .invoke(event)
            .await
            .unwrap_or_else(|failure| panic!("{failure}"));
        ApiResponse::parse(&raw)
    };
    let queue = SqsQueue::new(sqs, queue_url);

    // When it comes unsigned or signed by no relay secret, then 401 and nothing is queued.
    for event in [sample.clone(), signed(b"wrong")] {
        let refused = call(event).await;
        assert_eq!(refused.status, 401, "{refused:?}");
    }
    assert!(drain(&queue, 1, Duration::from_secs(1)).await.is_empty());

    // When it is signed by the older secret, without the admin token, then it is queued.
    let accepted = call(signed(b"old")).await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    let queued = drain(&queue, 1, WAIT).await;
    assert_eq!(queued.len(), 1);
    let event: Value = serde_json::from_str(&queued[0].body).unwrap();
    assert_eq!(
        (&event["source"], &event["event"]),
        (&json!("crud"), &json!("consumers"))
    );
    assert_eq!(
        event["data"],
        json!({"consumer": {"username": "Jane Austen"}})
    );
    assert_eq!(event["id"], accepted.body["id"]);
}

#[test]
fn the_documented_relay_body_follows_the_catalogue() {
    // The relay's body schema repeats the catalogue's pairs (its data's fields at the top level),
    // so that schemathesis' valid bodies are bodies the relay takes: it must not drift.
    let doc: Value = serde_json::from_str(include_str!("../../shared/openapi.json")).unwrap();
    let sources = |name: &str| -> Vec<Value> {
        doc["components"]["schemas"][name]["oneOf"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has variants"))
            .iter()
            .map(|variant| variant["properties"]["source"]["const"].clone())
            .collect()
    };
    let mut expected = sources("RegisteredEvent");
    expected.push(json!("kong:event_hooks"));
    assert_eq!(sources("KongRelayInput"), expected);
}

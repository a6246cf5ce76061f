//! Apigee Edge's monetization webhooks (spec §12) over real HTTP against the real
//! `event-hooks-local` binary: Edge's documented curl commands as they are (the host pointed at
//! the test server, the admin token as Basic password), compared field by field with Edge's
//! documented responses; notification conditions; the usage-target rule with a receiver on
//! 127.0.0.1; Edge's retry rules with a scripted receiver and a short schedule set on the hook.

use std::time::Duration;

use event_hooks_tests::receiver::{Receiver, Reply};
use event_hooks_tests::server::LocalServer;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);
const TOKEN: &str = "password";
const EDGE: &str = "https://api.enterprise.apigee.com";

// Edge's documented commands (reference 004), with the line continuations restored.
const LIST: &str = r#"curl -X GET "https://api.enterprise.apigee.com/v1/mint/organizations/myorg/webhooks" \
  -H "Content-Type: application/json " \
  -u email:password"#;
const GET: &str = r#"curl -X GET "https://api.enterprise.apigee.com/v1/mint/organizations/myorg/webhooks/21844a37-d26d-476c-93ed-38f3a4b24691" \
  -H "Content-Type: application/json " \
  -u email:password"#;
const CREATE: &str = r#"curl -X POST "https://api.enterprise.apigee.com/v1/mint/organizations/myorg/webhooks" -H "Content-Type: application/json " -d '{ "name": "webhook3", "postURL": "http://mycompany.com/callbackhandler3" }' \
  -u email:password"#;
const EDIT: &str = r#"curl -X PUT "https://api.enterprise.apigee.com/v1/mint/organizations/myorg/webhooks/0a07eb1f-f485-4539-8beb-01be449699b3" \
  -H "Content-Type: application/json " \
  -d '{ "postURL": "http://mycompany.com/callbackhandler4" }' \
  -u email:password"#;
const ENABLE: &str = r#"curl -X POST "https://api.enterprise.apigee.com/v1/mint/organizations/myorg/webhooks/0a07eb1f-f485-4539-8beb-01be449699b3" \
  -H "Content-Type: application/json " \
  -d '{ "enabled": "true" }' \
  -u email:password"#;
const DELETE: &str = r#"curl -X DELETE "https://api.enterprise.apigee.com/v1/mint/organizations/myorg/webhooks/21844a37-d26d-476c-93ed-38f3a4b24691" \
  -H "Content-Type: application/json " \
  -u email:password"#;

// Edge's documented responses.
pub(crate) const LISTED: &str = r#"{ "totalRecords": 2, "webhooks": [ { "created": 1460162656342, "enabled": false, "id": "21844a37-d26d-476c-93ed-38f3a4b24691", "name": "webhook1", "postUrl": "http://mycompany.com/callbackhandler1", "updated": 1460162656342, "updatedBy": "joe@example.com" }, { "created": 1460138724352, "createdBy": "joe@example.com", "enabled": true, "id": "a39ca777-1861-49cf-a397-c9e92ab3c09f", "name": "webhook2", "postUrl": "http://mycompany.com/callbackhandler2", "updated": 1460138724352, "updatedBy": "joe@example.com" } ] }"#;
pub(crate) const GOT: &str = r#"{ "created": 1460162656342, "enabled": false, "id": "21844a37-d26d-476c-93ed-38f3a4b24691", "name": "webhook1", "postUrl": "http://mycompany.com/callbackhandler1", "updated": 1460162656342, "updatedBy": "joe@example.com" }"#;
pub(crate) const CREATED: &str = r#"{ "created": 1460385534555, "createdBy": "joe@example.com", "enabled": false, "id": "0a07eb1f-f485-4539-8beb-01be449699b3", "name": "webhook3", "orgId": "myorg", "postUrl": "http://mycompany.com/callbackhandler3", "updated": 1460385534555, "updatedBy": "joe@example.com" }"#;
pub(crate) const EDITED: &str = r#"{ "created": 1460385534555, "enabled": false, "id": "0a07eb1f-f485-4539-8beb-01be449699b3", "name": "webhook3", "orgId": "myorg", "postUrl": "http://mycompany.com/callbackhandler4", "updated": 1460385534555, "updatedBy": "joe@example.com" }"#;
pub(crate) const ENABLED: &str = r#"{ "created": 1460385534555, "enabled": true, "id": "0a07eb1f-f485-4539-8beb-01be449699b3", "name": "webhook3", "orgId": "myorg", "postUrl": "http://mycompany.com/callbackhandler4", "updated": 1460385534555, "updatedBy": "joe@example.com" }"#;

/// Runs a documented curl command against `server`, the documented ids replaced by the ids the
/// server gave, as `joe@example.com` with the admin token as password (Edge's `email:password`).
fn curl(server: &LocalServer, command: &str, ids: &[(&str, &str)]) -> (u16, Value) {
    let mut command = command
        .replace(EDGE, &server.base)
        .replace("-u email:password", &format!("-u joe@example.com:{TOKEN}"));
    for (documented, actual) in ids {
        command = command.replace(documented, actual);
    }
    run(&command)
}

/// A curl command line, with `-i` added: status and JSON body.
fn run(command: &str) -> (u16, Value) {
    event_hooks_tests::curl::run(&format!("{command} -i"))
}

/// Every field of Edge's documented `expected` is in `actual` with the same value, except the
/// ones the server makes (`id`, and times, which must be Unix ms); `created == updated` where
/// the documented example has them equal.
pub(crate) fn assert_like(actual: &Value, expected: &Value, context: &str) {
    let expected = expected.as_object().expect("documented object");
    for (field, value) in expected {
        let got = &actual[field];
        match field.as_str() {
            "id" => assert!(
                got.as_str()
                    .is_some_and(|s| uuid::Uuid::parse_str(s).is_ok()),
                "{context}: id {got}"
            ),
            "created" | "updated" => assert!(
                got.as_i64().is_some_and(|ms| ms > 1_600_000_000_000),
                "{context}: {field} is not Unix ms: {got}"
            ),
            _ => assert_eq!(got, value, "{context}: field {field} in {actual}"),
        }
    }
}

async fn wait_until_server_answers(server: &LocalServer) {
    let _ = reqwest::get(server.url("/status")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_documented_curl_commands_work_unchanged() {
    let server = LocalServer::in_process(&["--admin-token", TOKEN]);
    wait_until_server_answers(&server).await;

    // Given webhook1 and webhook2 of Edge's listing, made through the same create command.
    let make = |name: &str, url: &str| {
        let command = CREATE
            .replace("webhook3", name)
            .replace("http://mycompany.com/callbackhandler3", url);
        curl(&server, &command, &[])
    };
    let (status, webhook1) = make("webhook1", "http://mycompany.com/callbackhandler1");
    assert_eq!(status, 201, "{webhook1}");
    let (_, webhook2) = make("webhook2", "http://mycompany.com/callbackhandler2");
    let id1 = webhook1["id"].as_str().unwrap().to_string();
    let id2 = webhook2["id"].as_str().unwrap().to_string();
    let enable2 = ENABLE.replace("0a07eb1f-f485-4539-8beb-01be449699b3", &id2);
    assert_eq!(curl(&server, &enable2, &[]).0, 200);

    // When Edge's list command runs, then it reads like Edge's example.
    let (status, listed) = curl(&server, LIST, &[]);
    assert_eq!(status, 200, "{listed}");
    let documented: Value = serde_json::from_str(LISTED).unwrap();
    assert_eq!(listed["totalRecords"], 2);
    let webhooks = listed["webhooks"].as_array().unwrap();
    for expected in documented["webhooks"].as_array().unwrap() {
        let name = &expected["name"];
        let actual = webhooks.iter().find(|w| &w["name"] == name).unwrap();
        assert_like(actual, expected, "list");
        assert_eq!(actual["orgId"], "myorg");
    }

    // When Edge's get command runs for webhook1, then it reads like Edge's example.
    let ids = [("21844a37-d26d-476c-93ed-38f3a4b24691", id1.as_str())];
    let (status, got) = curl(&server, GET, &ids);
    assert_eq!(status, 200, "{got}");
    assert_like(&got, &serde_json::from_str(GOT).unwrap(), "get");
    assert_eq!(got["id"], id1.as_str());

    // When Edge's create command runs, then webhook3 is created disabled, by the Basic user.
    let (status, created) = curl(&server, CREATE, &[]);
    assert_eq!(status, 201, "{created}");
    assert_like(&created, &serde_json::from_str(CREATED).unwrap(), "create");
    assert_eq!(created["created"], created["updated"]);
    let id3 = created["id"].as_str().unwrap().to_string();

    // When Edge's edit command runs, then only postUrl changes.
    let ids3 = [("0a07eb1f-f485-4539-8beb-01be449699b3", id3.as_str())];
    let (status, edited) = curl(&server, EDIT, &ids3);
    assert_eq!(status, 200, "{edited}");
    assert_like(&edited, &serde_json::from_str(EDITED).unwrap(), "edit");
    assert_eq!(edited["created"], created["created"]);
    assert_eq!(edited["createdBy"], "joe@example.com");

    // When Edge's enable command runs (`"true"` as a string), then it is enabled.
    let (status, enabled) = curl(&server, ENABLE, &ids3);
    assert_eq!(status, 200, "{enabled}");
    assert_like(&enabled, &serde_json::from_str(ENABLED).unwrap(), "enable");
    // A JSON boolean works too, and the route is also there without `/v1`.
    let disable = format!(
        r#"curl -X POST "{}/mint/organizations/myorg/webhooks/{id3}" -H "Content-Type: application/json" -d '{{"enabled": false}}' -u joe@example.com:{TOKEN}"#,
        server.base
    );
    let (status, disabled) = run(&disable);
    assert_eq!(
        (status, &disabled["enabled"]),
        (200, &json!(false)),
        "{disabled}"
    );

    // Each webhook is a hook of /event-hooks, with Edge's delivery rules as its own.
    let hook = reqwest::Client::new()
        .get(server.url(&format!("/event-hooks/{id3}")))
        .header("kong-admin-token", TOKEN)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(hook["source"], "monetization");
    assert_eq!(hook["event"], "usage");
    assert_eq!(hook["handler"], "webhook");
    assert_eq!(
        hook["config"]["url"],
        "http://mycompany.com/callbackhandler4"
    );
    assert_eq!(
        hook["retry"],
        json!({"delays": [300, 300, 300], "on": "5xx"})
    );
    assert_eq!(
        hook["timeouts"],
        json!({"connect_ms": 3000, "read_ms": 3000})
    );
    assert!(hook["tags"]
        .as_array()
        .unwrap()
        .contains(&json!("apigee-org:myorg")));

    // When Edge's delete command runs for webhook1 (`forceDelete` accepted), then it is gone.
    let (status, deleted) = curl(&server, DELETE, &ids);
    assert_eq!((status, deleted), (204, Value::Null));
    let forced = DELETE.replace("24691\"", "24691?forceDelete=true\"");
    let ids2 = [("21844a37-d26d-476c-93ed-38f3a4b24691", id2.as_str())];
    assert_eq!(curl(&server, &forced, &ids2).0, 204);
    let (status, gone) = curl(&server, GET, &ids);
    assert_eq!(status, 404, "{gone}");
    assert_eq!(gone["code"], "mint.resourceDoesNotExist");
    assert!(gone["message"].as_str().unwrap().contains(&id1), "{gone}");
    assert_eq!(curl(&server, LIST, &[]).1["totalRecords"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_auth_and_errors_have_edge_shapes() {
    let server = LocalServer::in_process(&["--admin-token", TOKEN]);
    wait_until_server_answers(&server).await;
    let base = format!("{}/v1/mint/organizations/myorg/webhooks", server.base);
    let http = reqwest::Client::new();

    // No credentials, or a wrong password: 401 in Edge's shape.
    let none = http.get(&base).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let body: Value = none.json().await.unwrap();
    assert_eq!(body["code"], "security.authentication.failed", "{body}");
    assert!(body["message"].is_string());
    let wrong = http
        .get(&base)
        .basic_auth("joe@example.com", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    // Kong's header works too; a webhook made with it has no createdBy.
    let with_token = http
        .post(&base)
        .header("kong-admin-token", TOKEN)
        .json(&json!({"name": "tokened", "postURL": "https://example.com/cb"}))
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status(), 201);
    let made: Value = with_token.json().await.unwrap();
    assert!(made.get("createdBy").is_none(), "{made}");

    let post = |body: Value| {
        http.post(&base)
            .basic_auth("joe@example.com", Some(TOKEN))
            .json(&body)
            .send()
    };
    // A taken name is a conflict: 409, as Kong answers a unique violation, in Edge's shape.
    let taken = post(json!({"name": "tokened", "postURL": "https://example.com/x"}))
        .await
        .unwrap();
    assert_eq!(taken.status(), 409);
    let error: Value = taken.json().await.unwrap();
    assert_eq!(error["code"], "mint.resourceAlreadyExists", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{error}"
    );
    let cases = [
        (json!({"name": "n"}), "postURL is required"),
        (
            json!({"postURL": "https://example.com/x"}),
            "name is required",
        ),
        (
            json!({"name": "n", "postURL": "example.com/x"}),
            "postURL: missing scheme in url",
        ),
        (
            json!({"name": "n", "postURL": 5}),
            "postURL must be a string",
        ),
        (
            json!({"name": "n", "postURL": "https://a.test", "color": 1}),
            "unknown field",
        ),
        (
            json!({"name": "x".repeat(65), "postURL": "https://a.test"}),
            "name must be 1 to 64",
        ),
    ];
    for (body, message) in cases {
        let response = post(body.clone()).await.unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["code"], "mint.invalidRequest", "{body}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(message),
            "{body}: {error}"
        );
    }
    // Names are unique per organisation, not across them.
    let other = http
        .post(format!(
            "{}/v1/mint/organizations/otherorg/webhooks",
            server.base
        ))
        .basic_auth("joe@example.com", Some(TOKEN))
        .json(&json!({"name": "tokened", "postURL": "https://example.com/cb"}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 201);
    // Another organisation's webhook is not found here; nor is a malformed id.
    let other: Value = other.json().await.unwrap();
    for id in [other["id"].as_str().unwrap(), "not-a-uuid"] {
        let response = http
            .get(format!("{base}/{id}"))
            .basic_auth("joe@example.com", Some(TOKEN))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{id}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["code"], "mint.resourceDoesNotExist");
    }
    // Enabling needs a boolean; forceDelete needs true or false; bad JSON is Edge-shaped too.
    let id = made["id"].as_str().unwrap();
    for (method, url, body) in [
        (
            reqwest::Method::POST,
            format!("{base}/{id}"),
            r#"{"enabled":"yes"}"#,
        ),
        (
            reqwest::Method::POST,
            format!("{base}/{id}"),
            r#"{"enabled":true,"name":"n"}"#,
        ),
        (
            reqwest::Method::DELETE,
            format!("{base}/{id}?forceDelete=maybe"),
            "",
        ),
        (reqwest::Method::PUT, format!("{base}/{id}"), "{not json"),
    ] {
        let response = http
            .request(method, &url)
            .basic_auth("joe@example.com", Some(TOKEN))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{url} {body}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["code"].is_string() && error["message"].is_string(),
            "{error}"
        );
    }
}

/// A local server without a token, one consumer per queue (events are handled in order).
async fn ordered_server() -> LocalServer {
    let server = LocalServer::in_process(&["--workers", "1"]);
    wait_until_server_answers(&server).await;
    server
}

async fn send(method: reqwest::Method, url: String, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, url)
        .basic_auth("ops@example.com", Some(""))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn webhook(server: &LocalServer, name: &str, url: &str, enable: bool) -> String {
    let base = server.url("/v1/mint/organizations/myorg/webhooks");
    let (status, made) = send(
        reqwest::Method::POST,
        base.clone(),
        json!({"name": name, "postURL": url}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_string();
    if enable {
        let (status, _) = send(
            reqwest::Method::POST,
            format!("{base}/{id}"),
            json!({"enabled": "true"}),
        )
        .await;
        assert_eq!(status, 200);
    }
    id
}

async fn condition(server: &LocalServer, usage_target: &str, webhooks: &[&str]) -> Value {
    let actions: Vec<Value> = webhooks
        .iter()
        .map(|id| json!({"actionAttribute": "WEBHOOK", "value": id}))
        .collect();
    let (status, made) = send(
        reqwest::Method::POST,
        server.url("/v1/mint/organizations/myorg/notification-conditions"),
        json!({
            "notificationCondition": [
                {"attribute": "RATEPLAN", "value": "123456"},
                {"attribute": "PUBLISHED", "value": "TRUE"},
                {"attribute": "UsageTarget", "value": usage_target},
            ],
            "actions": actions,
        }),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    made
}

fn usage(percent: f64, cycle: i64) -> Value {
    json!({
        "source": "monetization",
        "event": "usage",
        "data": {
            "orgName": "myorg",
            "developerEmail": "dev@example.com",
            "developerFirstName": "Dev",
            "developerLastName": "Eloper",
            "companyName": "ACME",
            "applicationName": "app",
            "packageName": "pkg",
            "packageId": "pkg-1",
            "ratePlanId": "123456",
            "ratePlanName": "Adjustable",
            "ratePlanType": "STANDARD",
            "developerRatePlanQuotaTarget": 1000,
            "quotaPercentUsed": percent,
            "ratePlanStartDate": 1_459_468_800_000_i64,
            "ratePlanEndDate": null,
            "nextBillingCycleStartDate": cycle,
            "products": ["weather"],
            "developerCustomAttributes": [],
            "developerQuotaResetDate": "2016-07-01",
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_are_parsed_strictly_and_served_in_edge_shape() {
    let server = ordered_server().await;
    let receiver = Receiver::start().await;
    let id = webhook(&server, "w", &receiver.url("/w"), true).await;
    let made = condition(&server, "%= 80 to 120 by 10", &[&id]).await;
    assert_eq!(made["orgId"], "myorg");
    assert_eq!(
        made["notificationCondition"],
        json!([
            {"attribute": "RATEPLAN", "value": "123456"},
            {"attribute": "PUBLISHED", "value": "TRUE"},
            {"attribute": "UsageTarget", "value": "%= 80 to 120 by 10"},
        ])
    );
    assert_eq!(
        made["actions"],
        json!([{"actionAttribute": "WEBHOOK", "value": id}])
    );
    let url = server.url(&format!(
        "/mint/organizations/myorg/notification-conditions/{}",
        made["id"].as_str().unwrap()
    ));
    let (status, got) = send(reqwest::Method::GET, url.clone(), Value::Null).await;
    assert_eq!((status, &got), (200, &made));

    let bad = |target: &str, actions: Value| {
        json!({
            "notificationCondition": [
                {"attribute": "RATEPLAN", "value": "123456"},
                {"attribute": "UsageTarget", "value": target},
            ],
            "actions": actions,
        })
    };
    let ok_actions = json!([{"actionAttribute": "WEBHOOK", "value": id}]);
    let cases = [
        (
            bad("%= ninety", ok_actions.clone()),
            "not a whole percentage",
        ),
        (bad("90", ok_actions.clone()), "expected `%= N`"),
        (
            bad("%= 120 to 80 by 10", ok_actions.clone()),
            "must not end below",
        ),
        (
            bad("%= 80 to 120 by 0", ok_actions.clone()),
            "step must be at least 1",
        ),
        (
            bad("%= 0 to 1000 by 1", ok_actions.clone()),
            "at most 100 allowed",
        ),
        (
            bad("%= 80 to 120 by 10 please", ok_actions.clone()),
            "expected `%= N`",
        ),
        (bad("%= 90", json!([])), "at least one webhook"),
        (
            bad("%= 90", json!([{"actionAttribute": "EMAIL", "value": id}])),
            "unknown actionAttribute",
        ),
        (
            bad(
                "%= 90",
                json!([{"actionAttribute": "WEBHOOK", "value": uuid::Uuid::new_v4()}]),
            ),
            "does not exist",
        ),
        (
            json!({"notificationCondition": [{"attribute": "UsageTarget", "value": "%= 90"}], "actions": ok_actions}),
            "RATEPLAN attribute is required",
        ),
        (
            json!({"notificationCondition": [{"attribute": "COLOR", "value": "x"}], "actions": ok_actions}),
            "unknown attribute",
        ),
    ];
    for (body, message) in cases {
        let (status, error) = send(
            reqwest::Method::POST,
            server.url("/mint/organizations/myorg/notification-conditions"),
            body.clone(),
        )
        .await;
        assert_eq!(status, 400, "{body}: {error}");
        assert_eq!(error["code"], "mint.invalidRequest");
        assert!(
            error["message"].as_str().unwrap().contains(message),
            "{body}: {error}"
        );
    }

    // PUT replaces it; DELETE removes it; then it is a 404.
    let (status, put) = send(reqwest::Method::PUT, url.clone(), bad("%= 90", ok_actions)).await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["notificationCondition"][1]["value"], "%= 90");
    assert_eq!(put["created"], made["created"]);
    let (status, _) = send(reqwest::Method::DELETE, url.clone(), Value::Null).await;
    assert_eq!(status, 204);
    let (status, error) = send(reqwest::Method::GET, url, Value::Null).await;
    assert_eq!(
        (status, &error["code"]),
        (404, &json!("mint.resourceDoesNotExist"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_usage_target_is_notified_once_per_billing_cycle_in_order() {
    let server = ordered_server().await;
    let receiver = Receiver::start().await;
    let on = webhook(&server, "on", &receiver.url("/on"), true).await;
    let off = webhook(&server, "off", &receiver.url("/off"), false).await;
    condition(&server, "%= 80 to 120 by 10", &[&on, &off]).await;
    // A condition on another rate plan's usage never fires for this one.
    let other_plan = json!({
        "notificationCondition": [
            {"attribute": "RATEPLAN", "value": "999"},
            {"attribute": "UsageTarget", "value": "%= 50"},
        ],
        "actions": [{"actionAttribute": "WEBHOOK", "value": on}],
    });
    let (status, _) = send(
        reqwest::Method::POST,
        server.url("/mint/organizations/myorg/notification-conditions"),
        other_plan,
    )
    .await;
    assert_eq!(status, 201);

    let cycle1 = 1_467_331_200_000_i64;
    let cycle2 = 1_469_923_200_000_i64;
    // (usage, notifications expected so far at /on)
    let steps = [
        (50.0, cycle1, 0),
        (79.0, cycle1, 0),
        (81.0, cycle1, 1),
        (85.0, cycle1, 1),
        (95.0, cycle1, 2),
        (130.0, cycle1, 5),
        (85.0, cycle2, 6),
    ];
    for (percent, cycle, expected) in steps {
        server.emit(&usage(percent, cycle)).await;
        if expected > 0 {
            receiver.wait_for("/on", expected, WAIT).await;
        }
    }
    // A last event of a third cycle: with one consumer, once its notification is in, every
    // earlier event has been handled.
    server.emit(&usage(80.0, 1_472_601_600_000)).await;
    let got = receiver.wait_for("/on", 7, WAIT).await;
    assert_eq!(got.len(), 7, "{got:?}");
    let reasons: Vec<String> = got
        .iter()
        .map(|r| r.json()["triggerReason"].as_str().unwrap().to_string())
        .collect();
    let percents: Vec<&str> = reasons
        .iter()
        .map(|r| {
            r.split('%')
                .next()
                .unwrap()
                .trim_start_matches("UsageTarget ")
        })
        .collect();
    assert_eq!(
        percents,
        ["80", "90", "100", "110", "120", "80", "80"],
        "{reasons:?}"
    );
    // The body is the notification exactly: Edge's callback fields, as JSON.
    let first = &got[0];
    assert_eq!(first.headers["content-type"], "application/json");
    let body = first.json();
    let fields: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(fields.len(), 21, "{body}");
    assert_eq!(body["developerEmail"], "dev@example.com");
    assert_eq!(body["quotaPercentUsed"], 81.0);
    assert_eq!(body["nextBillingCycleStartDate"], cycle1);
    assert!(body["triggerTime"].as_i64().is_some());
    assert!(
        body.get("source").is_none() && body.get("event").is_none(),
        "{body}"
    );
    assert_eq!(got[4].json()["quotaPercentUsed"], 130.0);
    // Nothing for the disabled webhook, and no ping of its creation reached either.
    assert!(receiver.requests().iter().all(|r| r.path == "/on"));
    assert!(receiver.pings().is_empty(), "{:?}", receiver.pings());
    // Each notification is a delivery of the hook in the delivery log, delivered.
    let log: Value = reqwest::get(server.url(&format!("/event-hooks/{on}/deliveries")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log["data"].as_array().unwrap().len(), 7, "{log}");
}

async fn deliveries(server: &LocalServer, hook: &str) -> Vec<Value> {
    let log: Value = reqwest::get(server.url(&format!("/event-hooks/{hook}/deliveries")))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    log["data"].as_array().cloned().unwrap_or_default()
}

/// Waits until the hook's only delivery is no longer pending, and returns it.
async fn settled(server: &LocalServer, hook: &str) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let [only] = deliveries(server, hook).await.as_slice() {
            if only["status"] != "pending" {
                return only.clone();
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivery of {hook} never settled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_retry_rules_with_a_short_schedule_set_on_the_hook() {
    let server = ordered_server().await;
    let receiver = Receiver::start().await;
    let mut hooks = Vec::new();
    for name in ["recovers", "refused", "gives-up", "throttled"] {
        let id = webhook(&server, name, &receiver.url(&format!("/{name}")), true).await;
        // Edge's rule (5xx only, at most 3 retries) on a schedule short enough for a test.
        let response = reqwest::Client::new()
            .patch(server.url(&format!("/event-hooks/{id}")))
            .json(&json!({"retry": {"delays": [0, 0, 0], "on": "5xx"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let patched: Value = response.json().await.unwrap();
        assert_eq!(
            patched["timeouts"],
            json!({"connect_ms": 3000, "read_ms": 3000})
        );
        hooks.push(id);
    }

    // 5xx three times, then 200: four attempts, delivered.
    condition(&server, "%= 10", &[&hooks[0]]).await;
    receiver.script([Reply::Status(503), Reply::Status(500), Reply::Status(502)]);
    server.emit(&usage(10.0, 1)).await;
    let delivered = settled(&server, &hooks[0]).await;
    assert_eq!(delivered["status"], "delivered", "{delivered}");
    let got = receiver.wait_for("/recovers", 4, WAIT).await;
    assert_eq!(got.len(), 4);
    let attempts: Vec<&str> = got
        .iter()
        .map(|r| r.headers["x-event-hook-attempt"].as_str())
        .collect();
    assert_eq!(attempts, ["1", "2", "3", "4"]);
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "every attempt sends the same notification"
    );

    // A 400: one attempt, failed, not retried.
    condition(&server, "%= 20", &[&hooks[1]]).await;
    receiver.script([Reply::Status(400)]);
    server.emit(&usage(20.0, 1)).await;
    let refused = settled(&server, &hooks[1]).await;
    assert_eq!(refused["status"], "failed", "{refused}");
    assert_eq!(receiver.wait_for("/refused", 1, WAIT).await.len(), 1);
    assert_eq!(
        refused["attempts"].as_array().unwrap().len(),
        1,
        "{refused}"
    );

    // 5xx every time: four attempts (three retries), then failed.
    condition(&server, "%= 30", &[&hooks[2]]).await;
    receiver.script(vec![Reply::Status(500); 4]);
    server.emit(&usage(30.0, 1)).await;
    let exhausted = settled(&server, &hooks[2]).await;
    assert_eq!(exhausted["status"], "failed", "{exhausted}");
    assert_eq!(
        exhausted["attempts"].as_array().unwrap().len(),
        4,
        "{exhausted}"
    );
    assert_eq!(receiver.wait_for("/gives-up", 4, WAIT).await.len(), 4);

    // A 429 (which the default rules retry) is "any other status" for Edge: one attempt.
    condition(&server, "%= 40", &[&hooks[3]]).await;
    receiver.script([Reply::Status(429)]);
    server.emit(&usage(40.0, 1)).await;
    let throttled = settled(&server, &hooks[3]).await;
    assert_eq!(throttled["status"], "failed", "{throttled}");
    assert_eq!(
        throttled["attempts"].as_array().unwrap().len(),
        1,
        "{throttled}"
    );
    assert_eq!(receiver.wait_for("/throttled", 1, WAIT).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_api_accepts_and_returns_a_hooks_own_retry_and_timeouts() {
    let server = LocalServer::in_process(&[]);
    wait_until_server_answers(&server).await;
    let http = reqwest::Client::new();

    // JSON.
    let response = http
        .post(server.url("/event-hooks"))
        .json(&json!({
            "source": "crud", "event": "consumers", "handler": "log",
            "retry": {"delays": [5, 60], "on": "5xx"},
            "timeouts": {"connect_ms": 3000, "read_ms": 3000},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let made: Value = response.json().await.unwrap();
    assert_eq!(made["retry"], json!({"delays": [5, 60], "on": "5xx"}));
    assert_eq!(
        made["timeouts"],
        json!({"connect_ms": 3000, "read_ms": 3000})
    );
    let id = made["id"].as_str().unwrap();
    let read: Value = http
        .get(server.url(&format!("/event-hooks/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(read, made);

    // Form, as Kong's curl commands send it.
    let (status, form) = run(&format!(
        "curl -X POST {} --data source=crud --data handler=log --data 'retry.delays[1]=300' \
         --data 'retry.delays[2]=300' --data retry.on=5xx --data timeouts.read_ms=3000",
        server.url("/event-hooks")
    ));
    assert_eq!(status, 201, "{form}");
    assert_eq!(form["retry"], json!({"delays": [300, 300], "on": "5xx"}));
    assert_eq!(
        form["timeouts"],
        json!({"connect_ms": null, "read_ms": 3000})
    );

    // PATCH back to the deployment's defaults.
    let response = http
        .patch(server.url(&format!("/event-hooks/{id}")))
        .json(&json!({"retry": null, "timeouts": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let patched: Value = response.json().await.unwrap();
    assert_eq!(
        (&patched["retry"], &patched["timeouts"]),
        (&Value::Null, &Value::Null)
    );

    // Out of limits: Kong's schema violation, nothing stored.
    let response = http
        .post(server.url("/event-hooks"))
        .json(&json!({
            "source": "crud", "handler": "log",
            "retry": {"delays": [86401]}, "timeouts": {"read_ms": 0},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["code"], 2);
    assert_eq!(
        error["fields"],
        json!({"retry": {"delays": ["value should be between 0 and 86400"]},
               "timeouts": {"read_ms": "value should be between 1 and 20000"}})
    );
    let listed: Value = reqwest::get(server.url("/event-hooks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 2);
}

/// Issue 19: two organisations with a condition each on the same rate plan id. A usage of orgA
/// notifies only orgA's webhook (and one of orgB only orgB's); a usage without `orgName` is
/// refused at `POST /events` with a 400 naming the field, and notifies nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_usage_notifies_only_the_webhooks_of_its_organisation() {
    let server = ordered_server().await;
    let receiver = Receiver::start().await;
    for org in ["orgA", "orgB"] {
        let base = server.url(&format!("/v1/mint/organizations/{org}"));
        let (status, made) = send(
            reqwest::Method::POST,
            format!("{base}/webhooks"),
            json!({"name": "w", "postURL": receiver.url(&format!("/{org}"))}),
        )
        .await;
        assert_eq!(status, 201, "{made}");
        let id = made["id"].as_str().unwrap().to_string();
        let (status, _) = send(
            reqwest::Method::POST,
            format!("{base}/webhooks/{id}"),
            json!({"enabled": "true"}),
        )
        .await;
        assert_eq!(status, 200);
        let (status, made) = send(
            reqwest::Method::POST,
            format!("{base}/notification-conditions"),
            json!({
                "notificationCondition": [
                    {"attribute": "RATEPLAN", "value": "123456"},
                    {"attribute": "UsageTarget", "value": "%= 90"},
                ],
                "actions": [{"actionAttribute": "WEBHOOK", "value": id}],
            }),
        )
        .await;
        assert_eq!(status, 201, "{made}");
    }
    let usage_of = |org: &str| {
        let mut event = usage(95.0, 1_467_331_200_000);
        event["data"]["orgName"] = json!(org);
        event
    };

    // A usage without orgName: 400, Kong's error shape, the field named; nothing queued.
    let mut orgless = usage(95.0, 1_467_331_200_000);
    orgless["data"].as_object_mut().unwrap().remove("orgName");
    let response = reqwest::Client::new()
        .post(server.url("/events"))
        .json(&orgless)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains("'data.orgName' is required"), "{error}");

    // A usage of orgA: orgA's webhook only. With one consumer, once orgB's own usage (sent
    // after) is notified, orgA's has been handled: had it reached orgB, /orgB would have two.
    server.emit(&usage_of("orgA")).await;
    receiver.wait_for("/orgA", 1, WAIT).await;
    server.emit(&usage_of("orgB")).await;
    let to_b = receiver.wait_for("/orgB", 1, WAIT).await;
    let paths: Vec<String> = receiver.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/orgA", "/orgB"]);
    assert_eq!(to_b[0].json()["orgName"], "orgB");
    assert_eq!(receiver.requests()[0].json()["orgName"], "orgA");
}

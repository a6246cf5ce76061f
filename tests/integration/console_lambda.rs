//! The web console against the admin function, in a real browser: the real `admin-api` and
//! `probe` Lambda binaries under the fake Lambda Runtime API, on DynamoDB and SQS in moto, behind
//! a small HTTP front on 127.0.0.1 that turns each request into an API Gateway HTTP API (payload
//! 2.0) event and routes it by `template.yaml`'s routes, with API Gateway's rules (test, ping and
//! preview to the probe function, the rest, console included, to the admin function). Then
//! `scripts/console_test.py --mode remote` drives headless Chromium through the console.
//!
//! Ignored by default (it needs Debian's chromium and Playwright, installed by `make venv`);
//! `make console-test` runs it with moto.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use event_hooks::queue::sqs::create_queue_with_dlq;
use event_hooks::store::dynamodb::create_table;
use event_hooks_tests::api_gateway;
use event_hooks_tests::gateway::{select, template_routes, GatewayRoute};
use event_hooks_tests::lambda_runtime::{function_binary, FunctionProcess};
use event_hooks_tests::moto::{self, unique_name};
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

/// The admin token the functions are given; the browser test signs in with it.
const TOKEN: &str = "console-test-token";

/// The two functions behind the front, one invocation at a time each (as with a concurrency of
/// 1), and the template's routes to them.
struct Functions {
    admin: Mutex<FunctionProcess>,
    probe: Mutex<FunctionProcess>,
    routes: Vec<GatewayRoute>,
}

/// The API Gateway HTTP API event of `request`.
async fn gateway_event(request: Request, route_key: &str) -> Value {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 8 << 20).await.unwrap_or_default();
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        let value = value.to_str().unwrap_or_default().to_owned();
        match headers.get_mut(name.as_str()) {
            // API Gateway joins repeated headers with commas.
            Some(Value::String(existing)) => *existing = format!("{existing},{value}"),
            _ => {
                headers.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    let path = parts.uri.path().to_owned();
    json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": parts.uri.query().unwrap_or_default(),
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "console",
            "domainName": "127.0.0.1",
            "domainPrefix": "console",
            "http": {
                "method": parts.method.as_str(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "browser",
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": route_key,
            "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": 1_767_225_600_000_i64,
        },
        "body": base64::engine::general_purpose::STANDARD.encode(&body),
        "isBase64Encoded": true,
    })
}

/// The HTTP response of a function's API Gateway answer.
fn http_response(answer: &Value) -> Response {
    let status = answer["statusCode"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, Body::from(api_gateway::body_bytes(answer))).into_response();
    for (name, value) in answer["headers"].as_object().into_iter().flatten() {
        if let (Ok(name), Some(Ok(value))) = (
            HeaderName::from_bytes(name.as_bytes()),
            value.as_str().map(HeaderValue::from_str),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

async fn front(State(functions): State<Arc<Functions>>, request: Request) -> Response {
    let selected = select(
        &functions.routes,
        request.method().as_str(),
        request.uri().path(),
    );
    let Some(route) = selected else {
        // API Gateway's own 404.
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": "Not Found"})),
        )
            .into_response();
    };
    let function = match route.function.as_str() {
        "ProbeFunction" => &functions.probe,
        _ => &functions.admin,
    };
    let event = gateway_event(request, &route.key()).await;
    match function.lock().await.invoke(event).await {
        Ok(answer) => http_response(&answer),
        Err(failure) => (StatusCode::BAD_GATEWAY, failure.to_string()).into_response(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and Playwright: make console-test runs it"]
async fn the_console_works_against_the_admin_function_in_a_browser() {
    let Some(config) = moto::config() else {
        return;
    };
    let endpoint = std::env::var("MOTO_ENDPOINT").expect("MOTO_ENDPOINT");
    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    let table = unique_name("console-hooks");
    create_table(&dynamodb, &table)
        .await
        .expect("create the hooks table");
    let deliveries_table = unique_name("console-deliveries");
    event_hooks::delivery_log::dynamodb::create_table(&dynamodb, &deliveries_table)
        .await
        .expect("create the deliveries table");
    let sqs = aws_sdk_sqs::Client::new(&config);
    let (events_url, _) = create_queue_with_dlq(&sqs, &unique_name("console-events"), 5)
        .await
        .expect("create the events queue");
    let (deliveries_url, _) = create_queue_with_dlq(&sqs, &unique_name("console-deliveries"), 5)
        .await
        .expect("create the deliveries queue");
    // The token the browser flow types in, in Secrets Manager as the template keeps it.
    let secret_arn = moto::create_secret(&config, TOKEN).await;
    let aws = [
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("HOOKS_TABLE", table.as_str()),
        ("ADMIN_TOKEN_SECRET_ARN", secret_arn.as_str()),
    ];
    let mut admin_env = aws.to_vec();
    admin_env.extend([
        ("EVENTS_QUEUE_URL", events_url.as_str()),
        ("DELIVERIES_TABLE", deliveries_table.as_str()),
        ("DELIVERIES_QUEUE_URL", deliveries_url.as_str()),
    ]);
    let mut probe_env = aws.to_vec();
    // The browser test's receiver listens on loopback.
    probe_env.push(("ALLOW_PRIVATE_TARGETS", "true"));
    let functions = Arc::new(Functions {
        admin: Mutex::new(FunctionProcess::start(&function_binary("admin-api"), &admin_env).await),
        probe: Mutex::new(FunctionProcess::start(&function_binary("probe"), &probe_env).await),
        routes: template_routes(),
    });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .fallback(front)
        .with_state(functions.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = tokio::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/console_test.py"))
        .args(["--mode", "remote", "--base", &format!("http://{address}")])
        .current_dir(&root)
        .output()
        .await
        .expect("run scripts/console_test.py (make venv installs its tools)");
    server.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser flow failed:\n{stdout}\n{stderr}\nadmin function log:\n{}",
        functions.admin.lock().await.output()
    );
}

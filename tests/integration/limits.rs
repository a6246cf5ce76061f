//! Hostile input at the HTTP edge, against the real `event-hooks-local` binary (spec §1
//! "Limits", §10): bodies that used to abort the process, hooks over the size limits, and the
//! local server's Host, Origin and bind checks.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use event_hooks_tests::server::{self, LocalServer};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

async fn post_json(server: &LocalServer, path: &str, body: &Value) -> (u16, Value) {
    answer(reqwest::Client::new().post(server.url(path)).json(body)).await
}

async fn post_form(server: &LocalServer, path: &str, body: String) -> (u16, Value) {
    answer(
        reqwest::Client::new()
            .post(server.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body),
    )
    .await
}

/// The server still answers, and holds `hooks` hooks.
async fn still_up_with(server: &LocalServer, hooks: usize) {
    let (status, body) = answer(reqwest::Client::new().get(server.url("/status"))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = answer(reqwest::Client::new().get(server.url("/event-hooks"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(hooks), "{body}");
}

#[tokio::test]
async fn a_form_key_10000_levels_deep_is_refused_and_the_server_lives() {
    let server = LocalServer::start(&[]);
    let key = vec!["a"; 10_000].join(".");
    let message = json!({"message": format!("Cannot parse form body: key '{}…' is nested deeper than 32 levels", &key[..32])});
    for path in ["/event-hooks", "/events"] {
        let (status, body) = post_form(&server, path, format!("source=crud&{key}=1")).await;
        assert_eq!((status, &body), (400, &message), "{path}");
    }
    // The same key as a multipart field.
    let form = reqwest::multipart::Form::new()
        .text("source", "crud")
        .text(key.clone(), "1");
    let (status, body) = answer(
        reqwest::Client::new()
            .post(server.url("/event-hooks"))
            .multipart(form),
    )
    .await;
    assert_eq!((status, &body), (400, &message));
    still_up_with(&server, 0).await;
}

fn nested(depth: usize) -> Value {
    let mut value = json!("leaf");
    for _ in 0..depth {
        value = json!({ "a": value });
    }
    value
}

#[tokio::test]
async fn json_nested_33_levels_is_refused() {
    let server = LocalServer::start(&[]);
    let message = json!({"message": "Cannot parse JSON body: nested deeper than 32 levels"});
    // The body object is level 1, so `data` holding 31 more levels is the deepest allowed.
    let event = |depth| json!({"source":"crud","event":"consumers:create","data": nested(depth)});
    let (status, body) = post_json(&server, "/events", &event(32)).await;
    assert_eq!((status, &body), (400, &message));
    let (status, body) = post_json(&server, "/events", &event(31)).await;
    assert_eq!(status, 202, "{body}");

    let hook = json!({"source":"crud","handler":"log","config": nested(32)});
    let (status, body) = post_json(&server, "/event-hooks", &hook).await;
    assert_eq!((status, &body), (400, &message));
    // Far past serde_json's own recursion limit of 128.
    let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let (status, body) = answer(
        reqwest::Client::new()
            .post(server.url("/event-hooks"))
            .header("content-type", "application/json")
            .body(text),
    )
    .await;
    assert_eq!((status, &body), (400, &message));
    still_up_with(&server, 0).await;
}

#[tokio::test]
async fn a_body_with_more_than_1000_keys_is_refused() {
    let server = LocalServer::start(&[]);
    let message = json!({"message": "Cannot parse body: more than 1000 keys"});
    let form: Vec<String> = (0..1001).map(|i| format!("k{i}=v")).collect();
    let (status, body) = post_form(&server, "/event-hooks", form.join("&")).await;
    assert_eq!((status, &body), (400, &message));
    let data: serde_json::Map<String, Value> =
        (0..1000).map(|i| (format!("k{i}"), json!(i))).collect();
    let (status, body) = post_json(
        &server,
        "/events",
        &json!({"source":"crud","event":"consumers:create","data":data}),
    )
    .await;
    assert_eq!((status, &body), (400, &message));
    still_up_with(&server, 0).await;
}

#[tokio::test]
async fn a_hook_with_1000_functions_is_refused_before_compiling() {
    let server = LocalServer::start(&[]);
    // Each would spin for its whole budget when its chunk runs at create time.
    let functions = vec!["local i = 0 while true do i = i + 1 end"; 1000];
    let started = Instant::now();
    let (status, body) = answer(
        reqwest::Client::new()
            .post(server.url("/event-hooks"))
            .timeout(Duration::from_secs(30))
            .json(&json!({"source":"crud","handler":"lambda","config":{"functions":functions}})),
    )
    .await;
    // Generous: compiling (and running) 1,000 chunks takes 1,000 budgets.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["message"],
        "schema violation (config.functions: length must be at most 16)"
    );
    assert_eq!(
        body["fields"],
        json!({"config":{"functions":"length must be at most 16"}})
    );
    still_up_with(&server, 0).await;
}

#[tokio::test]
async fn a_headers_map_of_5000_entries_is_refused() {
    let server = LocalServer::start(&[]);
    let headers: serde_json::Map<String, Value> =
        (0..5000).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    // 5,000 entries are past the body's limit of 1,000 keys: refused before validation.
    let (status, body) = post_json(
        &server,
        "/event-hooks",
        &json!({"source":"crud","handler":"webhook",
                "config":{"url":"https://example.com/h","headers":headers}}),
    )
    .await;
    assert_eq!(
        (status, &body["message"]),
        (400, &json!("Cannot parse body: more than 1000 keys"))
    );
    let headers: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    let (status, body) = post_json(
        &server,
        "/event-hooks",
        &json!({"source":"crud","handler":"webhook",
                "config":{"url":"https://example.com/h","headers":headers}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["fields"],
        json!({"config":{"headers":"length must be at most 64"}})
    );
    assert_eq!(body["name"], "schema violation");
    still_up_with(&server, 0).await;
}

fn port_of(server: &LocalServer) -> u16 {
    server.base.rsplit(':').next().unwrap().parse().unwrap()
}

fn with_headers(pairs: &[(&'static str, String)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| {
            (
                HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_foreign_host_is_refused_and_allowed_hosts_adds_one() {
    let server = LocalServer::start(&["--allowed-hosts", "hooks.test,other.test:81"]);
    let port = port_of(&server);
    let client = reqwest::Client::new();
    let forbidden = json!({"message": format!(
        "Forbidden: this server does not answer to host 'rebound.evil.test:{port}'; \
         start it with --allowed-hosts to allow that name")});
    let foreign = with_headers(&[("host", format!("rebound.evil.test:{port}"))]);
    for request in [
        client.get(server.url("/status")),
        client.get(server.url("/event-hooks")),
        client
            .post(server.url("/event-hooks"))
            .json(&json!({"source":"crud","handler":"log"})),
    ] {
        let (status, body) = answer(request.headers(foreign.clone())).await;
        assert_eq!((status, &body), (403, &forbidden));
    }
    for host in [
        format!("localhost:{port}"),
        format!("hooks.test:{port}"),
        "hooks.test".to_string(),
        "other.test:81".to_string(),
    ] {
        let (status, body) = answer(
            client
                .get(server.url("/status"))
                .headers(with_headers(&[("host", host.clone())])),
        )
        .await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    still_up_with(&server, 0).await;
}

#[tokio::test]
async fn cross_site_changes_are_refused_same_origin_and_scripts_are_not() {
    let server = LocalServer::start(&[]);
    let client = reqwest::Client::new();
    let own = server.base.clone();
    // What a page on another site would send: a form POST creating a lambda hook.
    let lambda = "source=crud&handler=lambda&config.functions=return+function()+end";
    let forbidden =
        json!({"message": "Forbidden: cross-site requests cannot change anything here"});
    for headers in [
        vec![("origin", "http://evil.test".to_string())],
        vec![("origin", "null".to_string())],
        vec![("sec-fetch-site", "cross-site".to_string())],
        vec![
            ("origin", own.clone()),
            ("sec-fetch-site", "same-site".to_string()),
        ],
    ] {
        let (status, body) = answer(
            client
                .post(server.url("/event-hooks"))
                .header("content-type", "application/x-www-form-urlencoded")
                .headers(with_headers(&headers))
                .body(lambda),
        )
        .await;
        assert_eq!((status, &body), (403, &forbidden), "{headers:?}");
    }
    still_up_with(&server, 0).await;

    let (status, body) = answer(
        client
            .post(server.url("/event-hooks"))
            .header("content-type", "application/x-www-form-urlencoded")
            .headers(with_headers(&[
                ("origin", own.clone()),
                ("sec-fetch-site", "same-origin".to_string()),
            ]))
            .body(lambda),
    )
    .await;
    assert_eq!(status, 201, "same origin: {body}");
    let (status, body) = post_form(&server, "/event-hooks", lambda.to_string()).await;
    assert_eq!(status, 201, "no Origin (curl): {body}");
    still_up_with(&server, 2).await;
}

#[test]
fn a_non_loopback_bind_without_a_token_refuses_to_start() {
    let data_dir = server::temp_data_dir();
    let mut child = Command::new(server::binary())
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&data_dir)
        .env_remove("EVENT_HOOKS_ADMIN_TOKEN")
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start event-hooks-local");
    // Without the check it would serve forever: give it a generous while, then stop it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("poll").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started on 0.0.0.0 without an admin token");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output");
    assert!(!output.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("refusing to listen on 0.0.0.0:0 without an admin token")
            && text.contains("--admin-token"),
        "{text}"
    );
}

//! The admin API over real HTTP against the real `event-hooks-local` binary: Kong's documented curl
//! commands, every route, every bad input of the foundation issue, auth, restart durability.

use event_hooks_tests::server::LocalServer;
use serde_json::{json, Value};

/// Runs a shell command line (a curl command from Kong's docs, with `localhost:8001` pointed at
/// the test server) and returns the status and JSON body of its `-i` output.
fn curl(server: &LocalServer, command: &str) -> (u16, Value) {
    event_hooks_tests::curl::run(&command.replace("http://localhost:8001", &server.base))
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(server: &LocalServer) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: server.base.clone(),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"))
        };
        (status, body)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn json(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        self.send(
            self.http
                .request(method, format!("{}{path}", self.base))
                .json(&body),
        )
        .await
    }

    async fn form(
        &self,
        method: reqwest::Method,
        path: &str,
        pairs: &[(&str, &str)],
    ) -> (u16, Value) {
        self.send(
            self.http
                .request(method, format!("{}{path}", self.base))
                .form(pairs),
        )
        .await
    }

    async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        self.send(
            self.http
                .request(method, format!("{}{path}", self.base))
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    async fn count(&self) -> usize {
        let (status, body) = self.get("/event-hooks?size=1000").await;
        assert_eq!(status, 200);
        body["data"].as_array().expect("data array").len()
    }
}

fn webhook(url: &str) -> Value {
    json!({"source":"crud","event":"consumers","handler":"webhook","config":{"url":url}})
}

#[tokio::test]
async fn kongs_documented_curl_commands_work_unchanged() {
    let server = LocalServer::in_process(&[]);

    // Given Kong's "webhook" example, form-encoded
    let (status, hook) = curl(
        &server,
        "curl -i -X POST http://localhost:8001/event-hooks \
           --data source=crud \
           --data event=consumers \
           --data handler=webhook \
           --data config.url=https://webhook.site/a1b2c3",
    );
    assert_eq!(status, 201, "{hook}");
    assert_eq!(
        hook["config"],
        json!({"url":"https://webhook.site/a1b2c3","headers":{},"secret":null,"ssl_verify":false,
               "signature":"kong"})
    );
    assert_eq!(hook["on_change"], Value::Null);
    assert_eq!(hook["snooze"], Value::Null);
    let webhook_id = hook["id"].as_str().unwrap().to_string();

    // Kong's "webhook-custom" example
    let (status, custom) = curl(
        &server,
        r#"curl -i -X POST http://localhost:8001/event-hooks \
           --data source=crud \
           --data event=admins:create \
           --data handler=webhook-custom \
           --data config.method=POST \
           --data config.url=https://webhook.site/a1b2c3 \
           --data config.headers.content-type="application/json" \
           --data config.payload.text="Admin account \`{{ entity.username }}\` {{ operation}}d; email address set to \`{{ entity.email }}\`""#,
    );
    assert_eq!(status, 201, "{custom}");
    assert_eq!(custom["handler"], "webhook-custom");
    assert_eq!(
        custom["config"]["payload"]["text"],
        "Admin account `{{ entity.username }}` {{ operation}}d; email address set to `{{ entity.email }}`"
    );
    assert_eq!(
        custom["config"]["headers"],
        json!({"content-type":"application/json"})
    );
    assert_eq!(custom["config"]["payload_format"], true);

    // Kong's "log" example
    let (status, log) = curl(
        &server,
        "curl -i -X POST http://localhost:8001/event-hooks \
           --data source=crud \
           --data event=consumers \
           --data handler=log",
    );
    assert_eq!(status, 201, "{log}");
    assert_eq!(log["config"], json!({}));

    // Kong's "lambda" example, with the function inline
    let (status, lambda) = curl(
        &server,
        r#"curl -i -X POST http://localhost:8001/event-hooks \
           --data source=crud \
           --data event=consumers \
           --data handler=lambda \
           --data config.functions='return function (data, event, source, pid)
             local user = data.entity.username
             error("Event hook on consumer " .. user .. "")
           end'"#,
    );
    assert_eq!(status, 201, "{lambda}");
    assert_eq!(lambda["config"]["functions"].as_array().unwrap().len(), 1);

    // ... and with the function uploaded from a file
    let file = server.data_dir.join("fn.lua");
    std::fs::write(
        &file,
        "return function (data, event, source, pid)\n  return data\nend\n",
    )
    .unwrap();
    let (status, uploaded) = curl(
        &server,
        &format!(
            "curl -i -X POST http://localhost:8001/event-hooks \
               -F source=crud -F event=consumers -F handler=lambda \
               -F config.functions=@{}",
            file.display()
        ),
    );
    assert_eq!(status, 201, "{uploaded}");
    assert_eq!(
        uploaded["config"]["functions"][0],
        "return function (data, event, source, pid)\n  return data\nend\n"
    );

    // Kong's JSON example
    let (status, json_hook) = curl(
        &server,
        r#"curl -i -X POST http://localhost:8001/event-hooks \
           -H "Content-Type: application/json" \
           -d '{"source":"crud","event":"admins:create","handler":"webhook-custom","on_change":true,
                "config":{"url":"https://example.com","method":"POST",
                          "payload":{"text":"Admin {{entity.username}} created"}}}'"#,
    );
    assert_eq!(status, 201, "{json_hook}");
    assert_eq!(json_hook["on_change"], true);

    // list, get, patch, delete, sources
    let (status, list) = curl(&server, "curl -i -X GET http://localhost:8001/event-hooks");
    assert_eq!(status, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 6);
    assert_eq!(list["next"], Value::Null);

    let (status, mut got) = curl(
        &server,
        &format!("curl -i -X GET http://localhost:8001/event-hooks/{webhook_id}"),
    );
    assert_eq!(status, 200);
    // Beyond Kong: the local server adds the hook's lane in its dispatcher (runtime state, not
    // part of the entity) once the hook has had an attempt; the entity is as created.
    got.as_object_mut().unwrap().remove("lane");
    assert_eq!(got, hook);

    let (status, patched) = curl(
        &server,
        &format!(
            "curl -i -X PATCH http://localhost:8001/event-hooks/{webhook_id} \
               --data config.secret=hunter2 --data snooze=60"
        ),
    );
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["config"]["secret"], "hunter2");
    assert_eq!(patched["config"]["url"], "https://webhook.site/a1b2c3");
    assert_eq!(patched["snooze"], 60);
    assert_eq!(patched["created_at"], hook["created_at"]);

    let (status, _) = curl(
        &server,
        &format!("curl -i -X DELETE http://localhost:8001/event-hooks/{webhook_id}"),
    );
    assert_eq!(status, 204);
    let (status, missing) = curl(
        &server,
        &format!("curl -i http://localhost:8001/event-hooks/{webhook_id}"),
    );
    assert_eq!((status, missing), (404, json!({"message":"Not found"})));

    let (status, sources) = curl(&server, "curl -i http://localhost:8001/event-hooks/sources");
    assert_eq!(status, 200);
    assert_eq!(
        sources["data"]["crud"]["consumers"],
        json!({"fields":["operation","entity","old_entity","schema"]})
    );
    assert_eq!(
        sources["data"]["rate-limiting-advanced"]["rate-limit-exceeded"]["unique"],
        json!(["consumer", "ip", "service"])
    );
}

#[tokio::test]
async fn bad_input_is_a_kong_shaped_4xx_and_stores_nothing() {
    let server = LocalServer::in_process(&[]);
    let api = Client::new(&server);
    let (status, named) = api
        .json(
            reqwest::Method::POST,
            "/event-hooks",
            json!({"source":"crud","handler":"log","name":"taken"}),
        )
        .await;
    assert_eq!(status, 201, "{named}");
    use reqwest::Method;

    let cases: Vec<(&str, u16, Value, (u16, Value))> = vec![
        (
            "broken JSON",
            400,
            json!({"message":"Cannot parse JSON body"}),
            api.raw(
                Method::POST,
                "/event-hooks",
                "application/json",
                "{\"source\":",
            )
            .await,
        ),
        (
            "wrong content type",
            415,
            Value::Null,
            api.raw(Method::POST, "/event-hooks", "text/plain", "source=crud")
                .await,
        ),
        (
            "unknown handler",
            400,
            json!({"code":2,"name":"schema violation",
                   "message":"schema violation (handler: unknown type: email)",
                   "fields":{"handler":"unknown type: email"}}),
            api.form(
                Method::POST,
                "/event-hooks",
                &[("source", "crud"), ("handler", "email")],
            )
            .await,
        ),
        (
            "unknown config key",
            400,
            json!({"code":2,"name":"schema violation",
                   "message":"schema violation (config.verify: unknown field)",
                   "fields":{"config":{"verify":"unknown field"}}}),
            api.json(
                Method::POST,
                "/event-hooks",
                json!({"source":"crud","handler":"webhook",
                "config":{"url":"https://a.test","verify":true}}),
            )
            .await,
        ),
        (
            "mistyped config key",
            400,
            json!({"code":2,"name":"schema violation",
                   "message":"schema violation (config.ssl_verify: expected a boolean)",
                   "fields":{"config":{"ssl_verify":"expected a boolean"}}}),
            api.form(
                Method::POST,
                "/event-hooks",
                &[
                    ("source", "crud"),
                    ("handler", "webhook"),
                    ("config.url", "https://a.test"),
                    ("config.ssl_verify", "sometimes"),
                ],
            )
            .await,
        ),
        (
            "missing URL",
            400,
            json!({"code":2,"name":"schema violation",
                   "message":"schema violation (config.url: required field missing)",
                   "fields":{"config":{"url":"required field missing"}}}),
            api.form(
                Method::POST,
                "/event-hooks",
                &[("source", "crud"), ("handler", "webhook")],
            )
            .await,
        ),
        (
            "relative URL",
            400,
            json!({"code":2,"name":"schema violation",
                   "message":"schema violation (config.url: missing scheme in url)",
                   "fields":{"config":{"url":"missing scheme in url"}}}),
            api.json(Method::POST, "/event-hooks", webhook("/hooks"))
                .await,
        ),
        (
            "hostless URL",
            400,
            json!({"code":2,"name":"schema violation",
                   "message":"schema violation (config.url: missing host in url)",
                   "fields":{"config":{"url":"missing host in url"}}}),
            api.json(Method::POST, "/event-hooks", webhook("http://"))
                .await,
        ),
        (
            "negative snooze",
            400,
            json!({"code":2,"name":"schema violation",
                   "message":"schema violation (snooze: value should be between 0 and 2147483647)",
                   "fields":{"snooze":"value should be between 0 and 2147483647"}}),
            api.form(
                Method::POST,
                "/event-hooks",
                &[("source", "crud"), ("handler", "log"), ("snooze", "-1")],
            )
            .await,
        ),
        (
            "non-numeric snooze",
            400,
            json!({"code":2,"name":"schema violation",
                   "message":"schema violation (snooze: expected an integer)",
                   "fields":{"snooze":"expected an integer"}}),
            api.form(
                Method::POST,
                "/event-hooks",
                &[("source", "crud"), ("handler", "log"), ("snooze", "abc")],
            )
            .await,
        ),
        (
            "size=0",
            400,
            json!({"code":9,"name":"invalid size","message":"size must be an integer between 1 and 1000"}),
            api.get("/event-hooks?size=0").await,
        ),
        (
            "size=1001",
            400,
            json!({"code":9,"name":"invalid size","message":"size must be an integer between 1 and 1000"}),
            api.get("/event-hooks?size=1001").await,
        ),
        (
            "size=abc",
            400,
            json!({"code":9,"name":"invalid size","message":"size must be a number"}),
            api.get("/event-hooks?size=abc").await,
        ),
        (
            "forged offset",
            400,
            json!({"code":7,"name":"invalid offset","message":"'not-a-token!' is not a valid offset: bad base64 encoding"}),
            api.get("/event-hooks?offset=not-a-token!").await,
        ),
        (
            "malformed id",
            400,
            json!({"code":1,"name":"invalid primary key",
                   "message":"invalid primary key: '{id=\"expected a valid UUID\"}'",
                   "fields":{"id":"expected a valid UUID"}}),
            api.get("/event-hooks/not-a-uuid").await,
        ),
        (
            "unknown id",
            404,
            json!({"message":"Not found"}),
            api.get("/event-hooks/4a0c4f41-6b8b-4a42-9d37-0c6b8d1f8f0e")
                .await,
        ),
        (
            "unknown id on PATCH",
            404,
            json!({"message":"Not found"}),
            api.json(
                Method::PATCH,
                "/event-hooks/4a0c4f41-6b8b-4a42-9d37-0c6b8d1f8f0e",
                json!({"snooze":1}),
            )
            .await,
        ),
        (
            "duplicate name",
            409,
            json!({"code":5,"name":"unique constraint violation",
                   "message":"UNIQUE violation detected on '{name=\"taken\"}'",
                   "fields":{"name":"taken"}}),
            api.json(
                Method::POST,
                "/event-hooks",
                json!({"source":"crud","handler":"log","name":"taken"}),
            )
            .await,
        ),
        (
            "Lua that does not compile",
            400,
            Value::Null,
            api.form(
                Method::POST,
                "/event-hooks",
                &[
                    ("source", "crud"),
                    ("handler", "lambda"),
                    ("config.functions", "return function("),
                ],
            )
            .await,
        ),
        (
            "Lua that does not return a function",
            400,
            json!({"code":2,"name":"schema violation",
                   "message":"schema violation (config.functions.1: Bad return value from function, expected function type, got string)",
                   "fields":{"config":{"functions":["Bad return value from function, expected function type, got string"]}}}),
            api.form(
                Method::POST,
                "/event-hooks",
                &[
                    ("source", "crud"),
                    ("handler", "lambda"),
                    ("config.functions", "return 'nope'"),
                ],
            )
            .await,
        ),
    ];

    for (name, expected_status, expected_body, (status, body)) in cases {
        assert_eq!(status, expected_status, "{name}: {body}");
        if expected_body.is_null() {
            assert!(body.get("message").is_some(), "{name}: a message: {body}");
        } else {
            assert_eq!(body, expected_body, "{name}");
        }
    }
    // 10 MB bodies, sent by curl (which waits for `100 Continue` before a large upload, as real
    // clients do, so the early 413 is not lost to a connection reset)
    let big = server.data_dir.join("big.json");
    std::fs::write(&big, vec![b' '; 10 * 1024 * 1024]).unwrap();
    for command in [
        format!(
            "curl -i -X POST http://localhost:8001/event-hooks -H 'content-type: application/json' --data-binary @{}",
            big.display()
        ),
        format!(
            "curl -i -X POST http://localhost:8001/event-hooks -F source=crud -F config.functions=@{}",
            big.display()
        ),
    ] {
        let (status, body) = curl(&server, &command);
        assert_eq!(
            (status, body),
            (
                413,
                json!({"message":"Request body too large: the limit is 1 MiB"}),
            ),
            "{command}"
        );
    }
    let (_, compile_error) = api
        .form(
            Method::POST,
            "/event-hooks",
            &[
                ("source", "crud"),
                ("handler", "lambda"),
                ("config.functions", "return function("),
            ],
        )
        .await;
    let message = compile_error["fields"]["config"]["functions"][0]
        .as_str()
        .unwrap();
    assert!(message.starts_with("Error parsing function: "), "{message}");

    // Then nothing but the first hook was stored
    assert_eq!(api.count().await, 1);
}

#[tokio::test]
async fn pagination_walks_every_hook_once_and_filters_apply() {
    let server = LocalServer::in_process(&[]);
    let api = Client::new(&server);
    for i in 0..7 {
        let mut hook = webhook(&format!("https://example.com/{i}"));
        hook["tags"] = if i % 2 == 0 {
            json!(["even"])
        } else {
            json!(["odd"])
        };
        if i == 6 {
            hook["source"] = json!("balancer");
            hook["event"] = json!("health");
        }
        let (status, _) = api.json(reqwest::Method::POST, "/event-hooks", hook).await;
        assert_eq!(status, 201);
    }

    // When walking `next` links with size=3
    let mut seen = Vec::new();
    let mut path = "/event-hooks?size=3".to_string();
    let mut pages = 0;
    loop {
        let (status, page) = api.get(&path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for hook in page["data"].as_array().unwrap() {
            seen.push(hook["id"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(next) => {
                assert!(next.starts_with("/event-hooks?offset="), "{next}");
                assert!(page["offset"].as_str().is_some());
                path = next.to_string();
            }
            None => {
                assert!(page.get("offset").is_none());
                break;
            }
        }
    }
    // Then every hook comes once, in id order
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen, sorted);
    assert_eq!(seen.len(), 7);

    let (_, even) = api.get("/event-hooks?tags=even").await;
    assert_eq!(even["data"].as_array().unwrap().len(), 4);
    let (_, any) = api.get("/event-hooks?tags=even/odd&size=2").await;
    assert_eq!(any["data"].as_array().unwrap().len(), 2);
    assert!(any["next"].as_str().unwrap().contains("tags=even%2Fodd"));
    let (_, balancer) = api.get("/event-hooks?source=balancer&event=health").await;
    assert_eq!(balancer["data"].as_array().unwrap().len(), 1);
    let (_, crud_even) = api.get("/event-hooks?source=crud&tags=even").await;
    assert_eq!(crud_even["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn patch_merges_records_replaces_maps_and_revalidates() {
    let server = LocalServer::in_process(&[]);
    let api = Client::new(&server);
    use reqwest::Method;
    let (_, hook) = api
        .json(
            Method::POST,
            "/event-hooks",
            json!({"source":"crud","handler":"webhook","config":{"url":"https://a.test",
                "headers":{"x-one":"1","x-two":"2"},"secret":"s"}}),
        )
        .await;
    let path = format!("/event-hooks/{}", hook["id"].as_str().unwrap());

    // When the headers map is patched, it is replaced whole; other config keys stay
    let (status, patched) = api
        .json(
            Method::PATCH,
            &path,
            json!({"config":{"headers":{"x-three":"3"}}}),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["config"]["headers"], json!({"x-three":"3"}));
    assert_eq!(patched["config"]["secret"], "s");
    assert_eq!(patched["config"]["url"], "https://a.test");

    // When a patch makes the whole invalid, nothing changes
    let (status, error) = api
        .json(
            Method::PATCH,
            &path,
            json!({"config":{"url":"nope"},"event":"consumers"}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        error["fields"],
        json!({"config":{"url":"missing scheme in url"}})
    );
    let (_, mut unchanged) = api.get(&path).await;
    // (the hook, on `crud`, gets the events of its own changes, which fail against a.test: the
    // dispatcher may have noted when its failures began meanwhile)
    let mut patched = patched;
    // (and its lane in the dispatcher, which `GET` shows beside the entity)
    for hook in [&mut unchanged, &mut patched] {
        hook.as_object_mut().unwrap().remove("failing_since");
        hook.as_object_mut().unwrap().remove("lane");
    }
    assert_eq!(unchanged, patched);

    // When the handler changes, the old config does not leak into the new one
    let (status, as_log) = api
        .json(Method::PATCH, &path, json!({"handler":"log"}))
        .await;
    assert_eq!(status, 200, "{as_log}");
    assert_eq!(as_log["config"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_never_lose_an_update() {
    let server = LocalServer::in_process(&[]);
    let api = Client::new(&server);
    use reqwest::Method;
    for round in 0..10 {
        let (_, hook) = api
            .json(
                Method::POST,
                "/event-hooks",
                json!({"source":"crud","handler":"log"}),
            )
            .await;
        let path = format!("/event-hooks/{}", hook["id"].as_str().unwrap());
        let patches = [
            json!({"snooze": round}),
            json!({"on_change": true}),
            json!({"event": "consumers"}),
            json!({"name": format!("round-{round}")}),
        ];
        let tasks: Vec<_> = patches
            .into_iter()
            .map(|patch| {
                let (api, path) = (api.clone(), path.clone());
                tokio::spawn(async move { api.json(Method::PATCH, &path, patch).await })
            })
            .collect();
        for task in tasks {
            let (status, body) = task.await.unwrap();
            assert_eq!(status, 200, "{body}");
        }
        let (_, merged) = api.get(&path).await;
        assert_eq!(merged["snooze"], round, "round {round}: {merged}");
        assert_eq!(merged["on_change"], true, "round {round}: {merged}");
        assert_eq!(merged["event"], "consumers", "round {round}: {merged}");
        assert_eq!(
            merged["name"],
            format!("round-{round}"),
            "round {round}: {merged}"
        );
    }
}

#[tokio::test]
async fn put_upserts_and_delete_is_idempotent() {
    let server = LocalServer::in_process(&[]);
    let api = Client::new(&server);
    use reqwest::Method;
    let path = "/event-hooks/7d6f9a52-2d7e-4d55-8a8e-3c2f1f0b9a11";
    let (status, created) = api.json(Method::PUT, path, webhook("https://a.test")).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["id"], "7d6f9a52-2d7e-4d55-8a8e-3c2f1f0b9a11");
    let (status, replaced) = api
        .json(
            Method::PUT,
            path,
            json!({"source":"balancer","handler":"log","id":"ignored"}),
        )
        .await;
    assert_eq!(status, 200, "{replaced}");
    assert_eq!(replaced["source"], "balancer");
    assert_eq!(replaced["event"], Value::Null);
    assert_eq!(replaced["created_at"], created["created_at"]);
    assert_eq!(
        api.send(api.http.delete(format!("{}{path}", api.base)))
            .await
            .0,
        204
    );
    assert_eq!(
        api.send(api.http.delete(format!("{}{path}", api.base)))
            .await
            .0,
        204
    );
    assert_eq!(api.get(path).await.0, 404);
}

#[tokio::test]
async fn options_head_and_method_not_allowed() {
    let server = LocalServer::in_process(&[]);
    let http = reqwest::Client::new();
    let response = http
        .request(reqwest::Method::OPTIONS, server.url("/event-hooks"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["allow"], "GET, HEAD, POST, OPTIONS");

    let response = http
        .head(server.url("/event-hooks/sources"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), 0);

    let response = http.put(server.url("/event-hooks")).send().await.unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"message":"Method not allowed"})
    );
    let response = http.get(server.url("/nowhere")).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

/// A CORS preflight for `method` on `path` from the page of `origin`, without the token.
async fn preflight(server: &LocalServer, path: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, server.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "kong-admin-token, content-type",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn allowed_origins_get_cors_before_the_token_check_and_others_get_none() {
    let allowed = "https://console.example";
    let server = LocalServer::in_process(&[
        "--admin-token",
        "s3cret",
        "--cors-allowed-origins",
        &format!("{allowed},http://localhost:3000"),
    ]);
    let http = reqwest::Client::new();
    for path in ["/event-hooks", "/event-hooks/preview", "/nowhere"] {
        let response = preflight(&server, path, allowed).await;
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        let headers = response.headers();
        assert_eq!(headers["access-control-allow-origin"], allowed, "{path}");
        let methods = headers["access-control-allow-methods"].to_str().unwrap();
        assert!(methods.contains("POST"), "{path}: {methods}");
        let asked = headers["access-control-allow-headers"].to_str().unwrap();
        assert!(asked.contains("kong-admin-token"), "{path}: {asked}");
    }
    // The real requests: answered as always, readable by the allowed page, 401s included.
    let response = http
        .get(server.url("/event-hooks"))
        .header("origin", allowed)
        .header("kong-admin-token", "s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], allowed);
    let response = http
        .post(server.url("/event-hooks"))
        .header("origin", allowed)
        .header("sec-fetch-site", "cross-site")
        .header("kong-admin-token", "s3cret")
        .json(&json!({ "source": "crud", "event": "consumers", "handler": "log" }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        201,
        "the local guard lets allowed pages change things"
    );
    let response = http
        .get(server.url("/event-hooks"))
        .header("origin", allowed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["access-control-allow-origin"], allowed);

    // Another origin gets no CORS header: its preflight meets the token check like any request.
    let response = preflight(&server, "/event-hooks", "https://evil.example").await;
    assert_eq!(response.status(), 401);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let response = http
        .get(server.url("/event-hooks"))
        .header("origin", "https://evil.example")
        .header("kong-admin-token", "s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());

    // A plain OPTIONS still gets Kong's answer, even from an allowed page.
    for origin in [None, Some(allowed)] {
        let mut request = http
            .request(reqwest::Method::OPTIONS, server.url("/event-hooks"))
            .header("kong-admin-token", "s3cret");
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 204, "{origin:?}");
        assert_eq!(response.headers()["allow"], "GET, HEAD, POST, OPTIONS");
    }
}

#[tokio::test]
async fn by_default_no_origin_gets_cors() {
    let server = LocalServer::in_process(&[]);
    let response = preflight(&server, "/event-hooks", "https://console.example").await;
    // Kong's own OPTIONS answer, without Access-Control-Allow-Origin.
    assert_eq!(response.status(), 204);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let response = reqwest::Client::new()
        .get(server.url("/event-hooks"))
        .header("origin", "https://console.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

/// Every (method, path) of the OpenAPI document that needs credentials, path parameters filled
/// in, plus the `HEAD` and `OPTIONS` the router answers on every such path. The document is
/// checked against the router in both directions (`openapi.rs`), so a new route shows up here
/// without editing this test. A path whose operations all say `security: []` (the Kong relay,
/// which Kong's signature authenticates: `kong_relay.rs`) is left out.
fn documented_requests() -> Vec<(reqwest::Method, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/openapi.json");
    let text = std::fs::read_to_string(path).expect("read shared/openapi.json");
    let doc: Value = serde_json::from_str(&text).expect("shared/openapi.json is JSON");
    let paths = doc["paths"].as_object().expect("the document has paths");
    let mut requests = Vec::new();
    for (template, item) in paths {
        let operations = item.as_object().expect("a path item is an object");
        let open = |operation: &Value| operation["security"] == json!([]);
        if operations.values().filter(|o| o.is_object()).all(open) {
            continue;
        }
        let url = template
            .replace("{id}", &uuid::Uuid::new_v4().to_string())
            .replace("{delivery}", &uuid::Uuid::new_v4().to_string())
            .replace("{source}", "crud")
            .replace("{event}", "consumers");
        let methods = item.as_object().expect("a path item is an object").keys();
        for method in methods
            .filter(|key| !matches!(key.as_str(), "parameters" | "summary" | "description"))
            .map(String::as_str)
            .chain(["head", "options"])
        {
            let method = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .unwrap_or_else(|_| panic!("{method} is not an HTTP method"));
            requests.push((method, url.clone()));
        }
    }
    requests
}

#[tokio::test]
async fn admin_token_guards_every_route_and_method() {
    let server = LocalServer::in_process(&["--admin-token", "s3cret"]);
    let http = reqwest::Client::new();
    let mut requests = documented_requests();
    // Fewer would mean the document was not read as intended (17 operations when written).
    assert!(requests.len() >= 17 + 2 * 11, "{requests:?}");
    // Kong answers 401 before 404 and 405 too: unknown paths and methods are guarded as well.
    requests.push((reqwest::Method::GET, "/nowhere".to_owned()));
    requests.push((reqwest::Method::PUT, "/event-hooks".to_owned()));
    requests.push((reqwest::Method::TRACE, "/event-hooks".to_owned()));

    for (method, path) in requests {
        let request = |token: Option<&str>| {
            let mut request = http.request(method.clone(), server.url(&path));
            if matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
                request = request.json(&json!({}));
            }
            match token {
                Some(token) => request.header("Kong-Admin-Token", token),
                None => request,
            }
        };

        // No token: Kong's message for missing credentials
        let response = request(None).send().await.unwrap();
        assert_eq!(response.status(), 401, "{method} {path} without a token");
        if path.contains("/mint/") {
            // Apigee Edge's routes (spec §12) answer in Edge's shape.
            if method != reqwest::Method::HEAD {
                let body = response.json::<Value>().await.unwrap();
                assert_eq!(body["code"], "security.authentication.failed", "{path}");
            }
            let response = request(Some("guess")).send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path} with a wrong token");
            let response = request(Some("s3cret")).send().await.unwrap();
            assert_ne!(response.status(), 401, "{method} {path} with the token");
            continue;
        }
        if method != reqwest::Method::HEAD {
            assert_eq!(
                response.json::<Value>().await.unwrap(),
                json!({"message":"Invalid credentials. Token or User credentials required"}),
                "{method} {path} without a token"
            );
        }

        // A wrong token: Kong's RBAC message
        let response = request(Some("guess")).send().await.unwrap();
        assert_eq!(response.status(), 401, "{method} {path} with a wrong token");
        if method != reqwest::Method::HEAD {
            assert_eq!(
                response.json::<Value>().await.unwrap(),
                json!({"message":"Invalid RBAC credentials"}),
                "{method} {path} with a wrong token"
            );
        }

        // The right token: past the guard, whatever the handler then says
        let response = request(Some("s3cret")).send().await.unwrap();
        assert_ne!(
            response.status(),
            401,
            "{method} {path} with the right token"
        );
    }

    // The local server's own health check stays open: it serves load balancers, not admins
    let response = http.get(server.url("/status")).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn custom_sources_can_be_registered_and_removed() {
    let server = LocalServer::in_process(&[]);
    let api = Client::new(&server);
    use reqwest::Method;
    let path = "/event-hooks/sources/billing/invoice-paid";
    let (status, body) = api
        .form(
            Method::PUT,
            path,
            &[
                ("fields", "invoice"),
                ("fields", "customer"),
                ("unique", "customer"),
                ("description", "An invoice was paid"),
            ],
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body,
        json!({"data":{"fields":["invoice","customer"],"unique":["customer"],"description":"An invoice was paid"}})
    );
    let (status, _) = api
        .json(Method::PUT, path, json!({"fields":["invoice"]}))
        .await;
    assert_eq!(status, 200);
    let (status, body) = api.get("/event-hooks/sources/billing").await;
    assert_eq!(
        (status, body),
        (200, json!({"data":{"invoice-paid":{"fields":["invoice"]}}}))
    );

    let (status, body) = api
        .json(Method::PUT, path, json!({"fields":["a"],"unique":["b"]}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["fields"],
        json!({"unique":"'b' is not one of the fields"})
    );

    let (status, _) = api
        .json(
            Method::PUT,
            "/event-hooks/sources/crud/consumers",
            json!({"fields":[]}),
        )
        .await;
    assert_eq!(status, 405);
    assert_eq!(
        api.send(
            api.http
                .delete(format!("{}/event-hooks/sources/crud/consumers", api.base))
        )
        .await
        .0,
        405
    );

    assert_eq!(
        api.send(api.http.delete(format!("{}{path}", api.base)))
            .await
            .0,
        204
    );
    assert_eq!(api.get(path).await.0, 404);
    assert_eq!(api.get("/event-hooks/sources/billing").await.0, 404);
    assert_eq!(api.get("/event-hooks/sources/crud/nope").await.0, 404);
}

#[tokio::test]
async fn a_restart_keeps_every_hook() {
    let server = LocalServer::start(&[]);
    let api = Client::new(&server);
    let (status, hook) = api
        .json(
            reqwest::Method::POST,
            "/event-hooks",
            webhook("https://a.test"),
        )
        .await;
    assert_eq!(status, 201);
    let data_dir = server.data_dir.clone();
    assert!(server.stop(), "clean exit on SIGTERM");

    // When the server starts again on the same data directory
    let server = LocalServer::start_in(&data_dir, &[]);
    let api = Client::new(&server);
    let (status, again) = api
        .get(&format!("/event-hooks/{}", hook["id"].as_str().unwrap()))
        .await;
    // Then the hook is still there
    assert_eq!(status, 200);
    assert_eq!(again, hook);
    assert!(server.stop());
}

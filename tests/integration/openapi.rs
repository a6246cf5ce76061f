//! `GET /openapi.json` against the router it describes, in both directions: every documented
//! operation is routed by the real local server, and every route the router has is documented.

use std::collections::BTreeSet;

use event_hooks_tests::server::LocalServer;
use reqwest::Method;
use serde_json::{json, Value};

/// Every (path, method) the router serves, from `admin_routes` in `shared/src/admin/mod.rs` and
/// `routes` in `shared/src/admin/probe.rs`, `OPTIONS` and `HEAD` left implicit. Adding a route
/// means adding it here and to `shared/openapi.json`.
const ROUTES: &[(&str, &str)] = &[
    ("/event-hooks", "get"),
    ("/event-hooks", "post"),
    ("/events", "post"),
    ("/event-hooks/sources", "get"),
    ("/event-hooks/sources/{source}", "get"),
    ("/event-hooks/sources/{source}/{event}", "get"),
    ("/event-hooks/sources/{source}/{event}", "put"),
    ("/event-hooks/sources/{source}/{event}", "delete"),
    ("/event-hooks/{id}", "get"),
    ("/event-hooks/{id}", "patch"),
    ("/event-hooks/{id}", "put"),
    ("/event-hooks/{id}", "delete"),
    ("/event-hooks/{id}/deliveries", "get"),
    ("/event-hooks/{id}/deliveries/{delivery}/retry", "post"),
    ("/event-hooks/{id}/test", "post"),
    ("/event-hooks/{id}/ping", "get"),
    ("/event-hooks/{id}/secret/rotate", "post"),
    ("/openapi.json", "get"),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

/// The (path, method) pairs of the document, deletes last so that they run after the rest.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                operations.push((path.clone(), method.to_string()));
            }
        }
    }
    operations.sort_by_key(|(_, method)| method == "delete");
    operations
}

async fn fetch_document(server: &LocalServer) -> Value {
    let response = reqwest::get(server.url("/openapi.json")).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let doc: Value = response.json().await.expect("the document parses");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    doc
}

fn fill(path: &str, id: &str) -> String {
    path.replace("{id}", id)
        .replace("{delivery}", &uuid::Uuid::new_v4().to_string())
        .replace("{source}", "crud")
        .replace("{event}", "consumers")
}

async fn send(server: &LocalServer, method: &str, path: &str) -> (u16, Value) {
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
    let mut request = reqwest::Client::new().request(method.clone(), server.url(path));
    if matches!(method, Method::POST | Method::PUT | Method::PATCH) {
        request = request.json(&json!({}));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn is_router_not_found(status: u16, body: &Value) -> bool {
    status == 404 && *body == json!({ "message": "Not found" })
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let server = LocalServer::start(&[]);
    let doc = fetch_document(&server).await;

    let response = reqwest::Client::new()
        .post(server.url("/event-hooks"))
        .json(&json!({ "source": "crud", "event": "consumers", "handler": "log" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let hook: Value = response.json().await.unwrap();
    let id = hook["id"].as_str().unwrap().to_string();

    for (path, method) in operations(&doc) {
        let (status, body) = send(&server, &method, &fill(&path, &id)).await;
        let operation = &doc["paths"][&path][&method];
        if is_router_not_found(status, &body) {
            // A handler's 404 (e.g. an unknown delivery) looks like the router's: a non-UUID hook id
            // tells them apart, as only a routed handler answers it with Kong's code 1.
            assert!(
                path.contains("{id}"),
                "{method} {path} is documented but not routed"
            );
            let (status, body) = send(&server, &method, &fill(&path, "not-a-uuid")).await;
            assert_eq!(
                (status, &body["code"]),
                (400, &json!(1)),
                "{method} {path} is documented but not routed: {body}"
            );
        }
        if status == 405 {
            assert!(
                operation["responses"].get("405").is_some(),
                "{method} {path} is documented but the router has no such method"
            );
        }
        assert!(
            operation["responses"].get(status.to_string()).is_some(),
            "{method} {path} answered {status}, which is not documented: {body}"
        );
    }
}

#[tokio::test]
async fn every_route_is_documented_and_the_document_holds_together() {
    let server = LocalServer::start(&[]);
    let doc = fetch_document(&server).await;

    let documented: BTreeSet<(String, String)> = operations(&doc).into_iter().collect();
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(path, method)| (path.to_string(), method.to_string()))
        .collect();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    assert!(undocumented.is_empty(), "not documented: {undocumented:?}");
    let unknown: Vec<_> = documented.difference(&routed).collect();
    assert!(unknown.is_empty(), "not in ROUTES: {unknown:?}");

    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for reference in refs {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("external $ref {reference}"));
        assert!(
            doc.pointer(pointer).is_some(),
            "$ref {reference} does not resolve"
        );
    }

    for (path, item) in doc["paths"].as_object().unwrap() {
        let declared: BTreeSet<String> = item["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| resolve(&doc, p))
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        let in_template: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_string)
            .collect();
        assert_eq!(declared, in_template, "path parameters of {path}");
        for method in METHODS {
            if let Some(operation) = item.get(*method) {
                let responses = operation["responses"].as_object();
                assert!(
                    responses.is_some_and(|r| !r.is_empty()),
                    "{method} {path} has no responses"
                );
            }
        }
    }
}

fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => doc.pointer(&reference[1..]).expect("resolvable $ref"),
        None => value,
    }
}

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                refs.push(reference.clone());
            }
            map.values().for_each(|v| collect_refs(v, refs));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}

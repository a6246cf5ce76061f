//! `GET /openapi.json` against the router it describes, in both directions: every documented
//! operation is routed by the real local server, and every route of the route table
//! (`event_hooks::admin::routes::ROUTES`, from which the router is built) is documented.

use std::collections::BTreeSet;

use event_hooks::admin::routes::ROUTES;
use event_hooks_tests::server::LocalServer;
use reqwest::Method;
use serde_json::{json, Value};

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
    let server = LocalServer::in_process(&[]);
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
    let server = LocalServer::in_process(&[]);
    let doc = fetch_document(&server).await;

    let documented: BTreeSet<(String, String)> = operations(&doc).into_iter().collect();
    // Every documented route of the table, `OPTIONS` and `HEAD` left implicit.
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .filter(|route| route.documented())
        .flat_map(|route| {
            route
                .methods
                .iter()
                .map(|method| (route.path.to_string(), method.to_ascii_lowercase()))
        })
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

/// The document as checked in, without a server: the checks below are about its content.
fn document() -> Value {
    serde_json::from_str(include_str!("../../shared/openapi.json")).expect("the document parses")
}

/// The schema at `pointer` (under `#/components/schemas`).
fn schema<'a>(doc: &'a Value, pointer: &str) -> &'a Value {
    doc.pointer(&format!("/components/schemas{pointer}"))
        .unwrap_or_else(|| panic!("no schema at {pointer}"))
}

#[test]
fn the_document_states_the_limits_of_spec_1() {
    use event_hooks::limits::*;
    let doc = document();
    let custom = "/WebhookCustomConfigInput/properties";
    let hook = "/HookInput/oneOf/0/properties";
    let expected: &[(&str, &str, usize)] = &[
        (&format!("{custom}/headers"), "maxProperties", MAX_HEADERS),
        (
            &format!("{custom}/headers/propertyNames"),
            "maxLength",
            MAX_HEADER_NAME_BYTES,
        ),
        (
            &format!("{custom}/headers/additionalProperties"),
            "maxLength",
            MAX_HEADER_VALUE_BYTES,
        ),
        (
            &format!("{custom}/payload"),
            "maxProperties",
            MAX_PAYLOAD_ENTRIES,
        ),
        (
            &format!("{custom}/payload/additionalProperties"),
            "maxLength",
            MAX_TEMPLATE_BYTES,
        ),
        (&format!("{custom}/body"), "maxLength", MAX_TEMPLATE_BYTES),
        (&format!("{custom}/url"), "maxLength", MAX_URL_BYTES),
        (
            "/LambdaConfigInput/properties/functions",
            "maxItems",
            MAX_FUNCTIONS,
        ),
        (&format!("{hook}/tags"), "maxItems", MAX_TAGS),
        (&format!("{hook}/tags/items"), "maxLength", MAX_TAG_BYTES),
        (&format!("{hook}/name"), "maxLength", MAX_NAME_BYTES),
        ("/EventBatch", "maxItems", MAX_EVENTS_PER_REQUEST),
    ];
    for (pointer, keyword, limit) in expected {
        assert_eq!(
            schema(&doc, pointer)[keyword],
            json!(limit),
            "{keyword} of {pointer}"
        );
    }
    // Every handler's variant of every hook body carries the same limits.
    for body in ["HookInput", "HookReplace"] {
        for variant in schema(&doc, &format!("/{body}/oneOf")).as_array().unwrap() {
            assert_eq!(variant["properties"]["tags"]["maxItems"], json!(MAX_TAGS));
            assert_eq!(
                variant["properties"]["name"]["maxLength"],
                json!(MAX_NAME_BYTES)
            );
        }
    }
}

#[test]
fn error_bodies_that_overlap_are_any_of_never_one_of() {
    // Kong's `{"code","name","message","fields"}` also has the plain `{"message"}` shape, so a
    // `oneOf` of the two rejects every Kong error.
    let doc = document();
    for (name, response) in doc["components"]["responses"].as_object().unwrap() {
        let schema = &response["content"]["application/json"]["schema"];
        assert!(schema.get("oneOf").is_none(), "{name} uses oneOf");
    }
    let bad_request = &doc["components"]["responses"]["BadRequest"]["content"]["application/json"]
        ["schema"]["anyOf"];
    assert_eq!(bad_request.as_array().map(Vec::len), Some(2));
}

#[test]
fn links_reach_every_operation_on_a_hook_and_name_real_parameters() {
    let doc = document();
    let mut by_id = std::collections::BTreeMap::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for method in METHODS {
            if let Some(operation) = item.get(*method) {
                let mut names: BTreeSet<String> = BTreeSet::new();
                for parameter in item["parameters"]
                    .as_array()
                    .into_iter()
                    .chain(operation["parameters"].as_array())
                    .flatten()
                {
                    names.insert(resolve(&doc, parameter)["name"].as_str().unwrap().into());
                }
                by_id.insert(
                    operation["operationId"].as_str().unwrap().to_string(),
                    names,
                );
            }
        }
    }
    let mut targets: BTreeSet<String> = BTreeSet::new();
    let mut links = Vec::new();
    collect_links(&doc["paths"], &mut links);
    for link in &links {
        let target = link["operationId"]
            .as_str()
            .expect("links name an operationId");
        let parameters = by_id
            .get(target)
            .unwrap_or_else(|| panic!("link to unknown operation {target}"));
        for name in link["parameters"].as_object().unwrap().keys() {
            assert!(
                parameters.contains(name),
                "{target} has no parameter {name}"
            );
        }
        targets.insert(target.to_string());
    }
    let create_links = doc["paths"]["/event-hooks"]["post"]["responses"]["201"]["links"]
        .as_object()
        .expect("createHook links");
    let from_create: BTreeSet<&str> = create_links
        .values()
        .map(|l| l["operationId"].as_str().unwrap())
        .collect();
    for wanted in [
        "getHook",
        "updateHook",
        "upsertHook",
        "deleteHook",
        "testHook",
        "pingHook",
        "listDeliveries",
    ] {
        assert!(
            from_create.contains(wanted),
            "no link from createHook to {wanted}"
        );
    }
    assert!(
        targets.contains("retryDelivery"),
        "nothing links to retryDelivery"
    );
}

fn collect_links<'a>(value: &'a Value, links: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(found)) = map.get("links") {
                links.extend(found.values());
            }
            map.values().for_each(|v| collect_links(v, links));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_links(v, links)),
        _ => {}
    }
}

#[test]
fn registered_events_are_the_builtin_catalogue() {
    let doc = document();
    let catalogue = serde_json::to_value(event_hooks::sources::Catalogue::builtin()).unwrap();
    let catalogue = catalogue.as_object().unwrap();
    let variants = schema(&doc, "/RegisteredEvent/oneOf").as_array().unwrap();
    let documented: BTreeSet<&str> = variants
        .iter()
        .map(|v| v["properties"]["source"]["const"].as_str().unwrap())
        .collect();
    let builtin: BTreeSet<&str> = catalogue.keys().map(String::as_str).collect();
    assert_eq!(documented, builtin, "sources");
    for variant in variants {
        let source = variant["properties"]["source"]["const"].as_str().unwrap();
        let events: BTreeSet<&str> = catalogue[source]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let event = &variant["properties"]["event"];
        if let Some(listed) = event["enum"].as_array() {
            let listed: BTreeSet<&str> = listed.iter().map(|e| e.as_str().unwrap()).collect();
            assert_eq!(listed, events, "events of {source}");
            continue;
        }
        // `crud`: `^(?:entity|…)(?::(?:create|update|delete))?$`, checked by its parts.
        let pattern = event["pattern"].as_str().expect("an enum or a pattern");
        let entities = pattern
            .strip_prefix("^(?:")
            .and_then(|p| p.strip_suffix(")(?::(?:create|update|delete))?$"))
            .unwrap_or_else(|| panic!("unexpected pattern of {source}: {pattern}"));
        let mut expected = BTreeSet::new();
        for entity in entities.split('|') {
            expected.insert(entity.to_string());
            for op in ["create", "update", "delete"] {
                expected.insert(format!("{entity}:{op}"));
            }
        }
        let events: BTreeSet<String> = events.into_iter().map(str::to_string).collect();
        assert_eq!(expected, events, "events of {source}");
    }
}

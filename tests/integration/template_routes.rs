//! `template.yaml`'s API Gateway routes against the route table (`event_hooks::admin::routes`):
//! what passes in-process must be reachable when deployed. Every method of every route, on a
//! sample path, must be selected by API Gateway's rules into the function that serves it (so that
//! a method the route lacks still gets that function's 405 and `Allow`), and every route of the
//! template must be reached by some request of the table.

use std::collections::BTreeSet;

use event_hooks::admin::routes::{Part, ROUTES};
use event_hooks_tests::gateway::{select, template_routes};

/// Every method a request may carry.
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// The template's logical id of the function that serves `part`.
fn function_of(part: Part) -> &'static str {
    match part {
        Part::Admin | Part::Console | Part::Relay => "AdminFunction",
        Part::Probe => "ProbeFunction",
    }
}

/// A concrete path for `route`: each `{param}` filled in with a value that is no literal segment.
fn sample(route: &str) -> String {
    route
        .split('/')
        .map(|segment| match segment {
            "{id}" | "{delivery}" => "0d6e4c1a-56f4-4a5e-9d1a-7f3b2c8e9a10",
            "{file}" => "app.js",
            "{source}" => "crud",
            "{event}" => "consumers",
            "{org}" => "acme",
            other => other,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn every_method_of_every_route_reaches_its_function_and_no_route_is_an_orphan() {
    let routes = template_routes();
    let mut problems = Vec::new();
    let mut reached = BTreeSet::new();
    for route in ROUTES {
        let path = sample(route.path);
        let expected = function_of(route.part());
        for method in METHODS {
            match select(&routes, method, &path) {
                Some(selected) => {
                    reached.insert(selected.key());
                    if selected.function != expected {
                        problems.push(format!(
                            "{method} {path} ({}) goes to {} by `{}`, not to {expected}",
                            route.path,
                            selected.function,
                            selected.key()
                        ));
                    }
                }
                None => problems.push(format!(
                    "{method} {path} ({}) matches no route: API Gateway's 404, not {expected}",
                    route.path
                )),
            }
        }
    }
    for route in &routes {
        if !reached.contains(&route.key()) {
            problems.push(format!(
                "`{}` ({}) serves nothing of the route table",
                route.key(),
                route.function
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The sample API Gateway events of `events/` carry the route key API Gateway would give them,
/// so that the functions see what they will see deployed.
#[test]
fn sample_events_name_the_route_the_template_selects() {
    let routes = template_routes();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("events/") {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let event: serde_json::Value = serde_json::from_str(&text).unwrap();
        let Some(key) = event["routeKey"].as_str() else {
            continue;
        };
        let method = event["requestContext"]["http"]["method"].as_str().unwrap();
        let raw_path = event["rawPath"].as_str().unwrap();
        let selected = select(&routes, method, raw_path)
            .unwrap_or_else(|| panic!("{}: {method} {raw_path} has no route", path.display()));
        assert_eq!(key, selected.key(), "{}", path.display());
        assert_eq!(
            event["requestContext"]["routeKey"].as_str(),
            Some(key),
            "{}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked > 0, "no API Gateway sample in events/");
}

//! API Gateway's HTTP API as `template.yaml` declares it: the routes of every function's `HttpApi`
//! events, and the route API Gateway selects for a request. The tests that put a front before the
//! Lambda binaries route with it, and `template_routes.rs` holds it against the route table.

use std::path::PathBuf;

use serde_yaml::Value;

/// One route of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayRoute {
    /// Upper case, or `ANY`.
    pub method: String,
    /// `/event-hooks/{id}`, `/console/{proxy+}`, or `$default`.
    pub path: String,
    /// The logical id of the function it invokes: `AdminFunction`.
    pub function: String,
}

impl GatewayRoute {
    /// The route key API Gateway puts in the event: `GET /event-hooks/{id}`, or `$default`.
    pub fn key(&self) -> String {
        if self.path == "$default" {
            self.path.clone()
        } else {
            format!("{} {}", self.method, self.path)
        }
    }
}

/// The routes of `template.yaml`.
pub fn template_routes() -> Vec<GatewayRoute> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../template.yaml");
    let text = std::fs::read_to_string(&path).expect("read template.yaml");
    routes_of(&text)
}

/// The routes of a SAM template's text: each function's `HttpApi` events. CloudFormation's short
/// tags (`!Ref`, `!If`, …) come out as tagged values.
pub fn routes_of(template: &str) -> Vec<GatewayRoute> {
    let template: Value = serde_yaml::from_str(template).expect("the template is YAML");
    let resources = template["Resources"].as_mapping().expect("Resources");
    let mut routes = Vec::new();
    for (logical_id, resource) in resources {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let function = logical_id.as_str().expect("a logical id");
        let Some(events) = resource["Properties"]["Events"].as_mapping() else {
            continue;
        };
        for (name, event) in events {
            if event["Type"].as_str() != Some("HttpApi") {
                continue;
            }
            let name = name.as_str().unwrap_or_default();
            let properties = &event["Properties"];
            // Without an ApiId, SAM would put the route on an implicit second API.
            let api = match &properties["ApiId"] {
                Value::Tagged(tagged) if tagged.tag == "Ref" => tagged.value.as_str(),
                _ => None,
            };
            assert_eq!(api, Some("AdminApi"), "{function}.{name}: ApiId");
            let text = |key: &str| {
                properties[key]
                    .as_str()
                    .unwrap_or_else(|| panic!("{function}.{name}: {key}"))
                    .to_owned()
            };
            routes.push(GatewayRoute {
                method: text("Method").to_ascii_uppercase(),
                path: text("Path"),
                function: function.to_owned(),
            });
        }
    }
    routes
}

/// The route API Gateway selects for `method` `path`, or `None` for its own 404: the most specific
/// path (segment by segment, a literal over a `{param}`, which matches one segment, over a greedy
/// `{param+}`, which matches one or more), then a route of the method over `ANY`, then
/// `$default`. A trailing slash is ignored, as API Gateway does.
pub fn select<'a>(
    routes: &'a [GatewayRoute],
    method: &str,
    path: &str,
) -> Option<&'a GatewayRoute> {
    let requested = segments(path);
    routes
        .iter()
        .filter(|route| {
            route.path != "$default" && (route.method == "ANY" || route.method == method)
        })
        .filter_map(|route| {
            let rank = rank(&segments(&route.path), &requested)?;
            Some(((rank, route.method != "ANY"), route))
        })
        .max_by(|(a, _), (b, _)| a.cmp(b))
        .map(|(_, route)| route)
        .or_else(|| routes.iter().find(|route| route.path == "$default"))
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// How specifically `pattern` matches `segments`, segment by segment (2 a literal, 1 a
/// variable, 0 a greedy variable); `None` when it does not match.
fn rank(pattern: &[&str], segments: &[&str]) -> Option<Vec<u8>> {
    let mut rank = Vec::new();
    for (i, part) in pattern.iter().enumerate() {
        let variable = part.starts_with('{') && part.ends_with('}');
        if variable && part.ends_with("+}") {
            // Greedy: the rest, at least one segment.
            return (segments.len() > i).then(|| {
                rank.push(0);
                rank
            });
        }
        let segment = segments.get(i)?;
        if variable {
            rank.push(1);
        } else if part == segment {
            rank.push(2);
        } else {
            return None;
        }
    }
    (pattern.len() == segments.len()).then_some(rank)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, path: &str, function: &str) -> GatewayRoute {
        GatewayRoute {
            method: method.into(),
            path: path.into(),
            function: function.into(),
        }
    }

    #[test]
    fn selection_follows_api_gateway() {
        let routes = vec![
            route("ANY", "/pets/{id}", "a"),
            route("GET", "/pets/{id}", "b"),
            route("ANY", "/pets/dog", "c"),
            route("GET", "/files/{proxy+}", "d"),
            route("ANY", "/files", "e"),
        ];
        let to = |method, path| select(&routes, method, path).map(|r| r.function.as_str());
        assert_eq!(to("GET", "/pets/1"), Some("b"));
        assert_eq!(to("POST", "/pets/1"), Some("a"));
        assert_eq!(to("GET", "/pets/dog"), Some("c"));
        assert_eq!(to("GET", "/files/a/b.js"), Some("d"));
        assert_eq!(to("HEAD", "/files/a.js"), None);
        assert_eq!(to("GET", "/files/"), Some("e"));
        assert_eq!(to("GET", "/pets/1/x"), None);
        let with_default = [routes, vec![route("ANY", "$default", "z")]].concat();
        assert_eq!(
            select(&with_default, "GET", "/nowhere").map(|r| r.key()),
            Some("$default".into())
        );
    }

    #[test]
    fn short_tags_parse() {
        let template =
            "Resources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties:\n      \
             Role: !GetAtt R.Arn\n      Events:\n        E:\n          Type: HttpApi\n          \
             Properties:\n            ApiId: !Ref AdminApi\n            Path: /x\n            \
             Method: get\n";
        assert_eq!(routes_of(template), vec![route("GET", "/x", "F")]);
    }
}

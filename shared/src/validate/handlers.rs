//! Each handler's `config` (spec §1, §6): which fields it may have, their defaults, the maps of
//! headers and payload templates within their limits, the signing scheme and its secret. The
//! templates of a `webhook-custom` hook are parsed and a `lambda` hook's functions compiled (and
//! their chunks run) in the Lua sandbox here, so a broken one is a 400 at create time and never
//! a delivery failure later.

use serde_json::{Map, Value};

use super::fields::{at_most, bool_at, present, string_at, string_map, url, MapRules};
use super::problems::{Errors, PathSegment};
use super::Context;
use crate::limits;
use crate::lua::template::Template;
use crate::lua::{self, LuaPolicy};
use crate::model::{
    payload_encoding, Handler, HandlerKind, HttpMethod, LambdaConfig, LogConfig, SignatureScheme,
    WebhookConfig, WebhookCustomConfig,
};
use crate::outbound::signing::standard_key;

/// The handler's configuration with defaults filled in.
pub(super) fn config(
    kind: HandlerKind,
    value: Option<&Value>,
    ctx: &Context,
    errors: &mut Errors,
) -> Option<Handler> {
    let empty = Map::new();
    let map = match value {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => {
            errors.add(&["config"], "expected a record");
            return None;
        }
    };
    let allowed = allowed_fields(kind);
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            errors.add(&["config", key], "unknown field");
        }
    }
    let before = errors.count();
    // Every field is read (so every problem is reported) before the handler is built; a field
    // that is `None` here has recorded its error, and the handler is dropped below.
    let handler = match kind {
        HandlerKind::Webhook => webhook(map, errors),
        HandlerKind::WebhookCustom => webhook_custom(map, errors),
        HandlerKind::Log => Some(Handler::Log(LogConfig {})),
        HandlerKind::Lambda => Some(Handler::Lambda(LambdaConfig {
            functions: functions(map, ctx, errors),
        })),
    };
    // Templates are parsed only once every limit has held, so an oversized hook costs no parsing.
    if errors.count() == before {
        if let Some(Handler::WebhookCustom(config)) = &handler {
            check_custom(config, &ctx.lua, errors);
        }
    }
    handler.filter(|_| errors.count() == before)
}

/// The fields `config` may have for a handler of `kind`.
fn allowed_fields(kind: HandlerKind) -> &'static [&'static str] {
    match kind {
        HandlerKind::Webhook => &["url", "headers", "secret", "ssl_verify", "signature"],
        HandlerKind::WebhookCustom => &[
            "url",
            "method",
            "payload",
            "payload_format",
            "body",
            "body_format",
            "headers",
            "headers_format",
            "secret",
            "ssl_verify",
            "signature",
        ],
        HandlerKind::Log => &[],
        HandlerKind::Lambda => &["functions"],
    }
}

/// A `webhook` config; `None` when a field is wrong (its error is recorded).
fn webhook(map: &Map<String, Value>, errors: &mut Errors) -> Option<Handler> {
    let url = url(map, errors);
    let headers = string_map(map, "headers", HEADERS, errors);
    let (signature, secret) = signing(map, errors);
    let ssl_verify = bool_at(map, &["config", "ssl_verify"], errors).unwrap_or(false);
    url.map(|url| {
        Handler::Webhook(WebhookConfig {
            url,
            headers: headers.unwrap_or_default(),
            secret,
            ssl_verify,
            signature,
            previous_secret: None,
        })
    })
}

/// A `webhook-custom` config; `None` when a field is wrong (its error is recorded). Every field
/// is read, so every problem is reported.
fn webhook_custom(map: &Map<String, Value>, errors: &mut Errors) -> Option<Handler> {
    let url = url(map, errors);
    let method = method(map, errors);
    let payload = string_map(map, "payload", PAYLOAD, errors);
    let payload_format = bool_at(map, &["config", "payload_format"], errors).unwrap_or(true);
    let body = custom_body(map, errors);
    let body_format = bool_at(map, &["config", "body_format"], errors).unwrap_or(true);
    let headers = string_map(map, "headers", HEADERS, errors);
    let headers_format = bool_at(map, &["config", "headers_format"], errors).unwrap_or(false);
    let (signature, secret) = signing(map, errors);
    let ssl_verify = bool_at(map, &["config", "ssl_verify"], errors).unwrap_or(false);
    url.zip(method).map(|(url, method)| {
        Handler::WebhookCustom(WebhookCustomConfig {
            url,
            method,
            payload,
            payload_format,
            body,
            body_format,
            headers: headers.unwrap_or_default(),
            headers_format,
            secret,
            ssl_verify,
            signature,
            previous_secret: None,
        })
    })
}

/// `config.signature` (`kong` by default, or `standard`) and `config.secret`, which a `standard`
/// hook needs as a `whsec_` secret. A `standard` hook without one is valid: the admin API
/// generates its secret (see [`crate::admin`]), since validation has no business with randomness.
fn signing(map: &Map<String, Value>, errors: &mut Errors) -> (SignatureScheme, Option<String>) {
    let secret = string_at(map, &["config", "secret"], errors);
    let scheme = match present(map, "signature") {
        None => SignatureScheme::Kong,
        Some(Value::String(s)) if s == "kong" => SignatureScheme::Kong,
        Some(Value::String(s)) if s == "standard" => SignatureScheme::Standard,
        Some(_) => {
            errors.add(&["config", "signature"], "expected one of: kong, standard");
            return (SignatureScheme::Kong, secret);
        }
    };
    if let (SignatureScheme::Standard, Some(given)) = (scheme, &secret) {
        if let Err(invalid) = standard_key(given) {
            errors.add(&["config", "secret"], invalid.to_string());
        }
    }
    (scheme, secret)
}

/// `config.body`: a string, at most [`limits::MAX_TEMPLATE_BYTES`] long.
fn custom_body(map: &Map<String, Value>, errors: &mut Errors) -> Option<String> {
    match map.get("body")? {
        Value::Null => None,
        Value::String(s) if s.len() > limits::MAX_TEMPLATE_BYTES => {
            errors.add(&["config", "body"], at_most(limits::MAX_TEMPLATE_BYTES));
            None
        }
        Value::String(s) => Some(s.clone()),
        _ => {
            errors.add(&["config", "body"], "expected a string");
            None
        }
    }
}

/// `webhook-custom`: every template must parse (and may use Lua only when the deployment allows
/// it), and a payload must have a content type that can carry it (spec §1, §6).
fn check_custom(config: &WebhookCustomConfig, lua: &LuaPolicy, errors: &mut Errors) {
    let mut check = |path: Vec<&str>, source: &str| match Template::parse(source) {
        Ok(template) if template.needs_lua() && *lua == LuaPolicy::Off => errors.add(
            &path,
            "template code needs Lua, which is disabled in this deployment (untrusted_lua = off)",
        ),
        Ok(_) => {}
        Err(err) => errors.add(&path, format!("invalid template: {err}")),
    };
    if config.payload_format {
        for (name, value) in config.payload.iter().flatten() {
            check(vec!["config", "payload", name], value);
        }
    }
    if config.body_format {
        if let Some(body) = &config.body {
            check(vec!["config", "body"], body);
        }
    }
    if config.headers_format {
        for (name, value) in &config.headers {
            check(vec!["config", "headers", name], value);
        }
    }
    let content_type = config
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.as_str());
    if config.payload.is_some() && payload_encoding(&config.method, content_type).is_none() {
        errors.add(
            &["config", "headers"],
            format!(
                "content-type '{}' cannot carry a payload: use application/json, \
                 application/x-www-form-urlencoded or multipart/form-data, or send a body",
                content_type.unwrap_or_default()
            ),
        );
    }
}

/// `config.method`: an upper-case HTTP token such as `POST`.
fn method(map: &Map<String, Value>, errors: &mut Errors) -> Option<HttpMethod> {
    let path = ["config", "method"];
    if present(map, "method").is_none() {
        errors.add(&path, "required field missing");
        return None;
    }
    let method = string_at(map, &path, errors)?;
    match HttpMethod::parse(&method) {
        Ok(method) => Some(method),
        Err(invalid) => {
            errors.add(&path, invalid.to_string());
            None
        }
    }
}

const HEADERS: MapRules = MapRules {
    max_entries: limits::MAX_HEADERS,
    max_name_bytes: Some(limits::MAX_HEADER_NAME_BYTES),
    max_value_bytes: limits::MAX_HEADER_VALUE_BYTES,
    check: check_header,
};

const PAYLOAD: MapRules = MapRules {
    max_entries: limits::MAX_PAYLOAD_ENTRIES,
    max_name_bytes: None,
    max_value_bytes: limits::MAX_TEMPLATE_BYTES,
    check: |_, _| None,
};

/// Header names must be HTTP tokens and values must not break the header block.
fn check_header(name: &str, value: &str) -> Option<&'static str> {
    const TOKEN_PUNCTUATION: &str = "!#$%&'*+-.^_`|~";
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || TOKEN_PUNCTUATION.contains(c))
    {
        return Some("invalid header name");
    }
    if value.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
        return Some("invalid header value");
    }
    None
}

/// `config.functions`: a non-empty array of Lua sources, each returning a function.
fn functions(map: &Map<String, Value>, ctx: &Context, errors: &mut Errors) -> Vec<String> {
    let path = ["config", "functions"];
    let Some(value) = present(map, "functions") else {
        errors.add(&path, "required field missing");
        return Vec::new();
    };
    let Some(items) = value.as_array() else {
        errors.add(&path, "expected an array");
        return Vec::new();
    };
    if items.is_empty() {
        errors.add(&path, "length must be at least 1");
        return Vec::new();
    }
    // Sizes first: compiling is the expensive part, and a hook over the limits compiles nothing.
    if items.len() > limits::MAX_FUNCTIONS {
        errors.add(&path, at_most(limits::MAX_FUNCTIONS));
        return Vec::new();
    }
    let total: usize = items.iter().filter_map(Value::as_str).map(str::len).sum();
    if total > limits::MAX_FUNCTIONS_BYTES {
        errors.add(
            &path,
            format!(
                "the functions must total at most {} bytes of Lua",
                limits::MAX_FUNCTIONS_BYTES
            ),
        );
        return Vec::new();
    }
    if let LuaPolicy::Off = ctx.lua {
        errors.add(
            &path,
            "lambda functions are disabled in this deployment (untrusted_lua = off)",
        );
        return Vec::new();
    }
    // The chunks of one hook share one CPU budget, as its deliveries do.
    let deadline = match &ctx.lua {
        LuaPolicy::Sandbox(limits) => std::time::Instant::now() + limits.cpu_time,
        LuaPolicy::Off => std::time::Instant::now(),
    };
    let mut sources = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let at = || {
            vec![
                PathSegment::Key("config".into()),
                PathSegment::Key("functions".into()),
                PathSegment::Index(index),
            ]
        };
        let Some(source) = item.as_str() else {
            errors.add_at(at(), "expected a string");
            continue;
        };
        if let LuaPolicy::Sandbox(limits) = &ctx.lua {
            if let Err(problem) = lua::check_function_until(source, limits, deadline) {
                errors.add_at(at(), problem.to_string());
                continue;
            }
        }
        sources.push(source.to_string());
    }
    sources
}

#[cfg(test)]
mod tests {
    use crate::lua::LuaPolicy;
    use crate::model::SignatureScheme;
    use crate::validate::test_support::{ctx, limit_holds, violation};
    use crate::validate::{self, hook, Context};
    use serde_json::{json, Map, Value};

    #[test]
    fn fills_in_webhook_defaults() {
        let hook = hook(
            &json!({"source":"crud","event":"consumers","handler":"webhook","config":{"url":"https://example.com/h"}}),
            &ctx(),
        )
        .unwrap();
        let value = serde_json::to_value(&hook).unwrap();
        assert_eq!(
            value["config"],
            json!({"url":"https://example.com/h","headers":{},"secret":null,"ssl_verify":false,
                   "signature":"kong"})
        );
        assert_eq!(value["enabled"], true);
        assert_eq!(value["tags"], json!([]));
        assert_eq!(value["created_at"], 10);
        assert_eq!(value["updated_at"], 20);
    }

    #[test]
    fn fills_in_webhook_custom_defaults() {
        let hook = hook(
            &json!({"source":"crud","handler":"webhook-custom","config":{"url":"http://x.test","method":"POST"}}),
            &ctx(),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&hook).unwrap()["config"],
            json!({"url":"http://x.test","method":"POST","payload":null,"payload_format":true,
                   "body":null,"body_format":true,"headers":{},"headers_format":false,
                   "secret":null,"ssl_verify":false,"signature":"kong"})
        );
    }

    #[test]
    fn a_standard_signature_needs_a_whsec_secret() {
        let input = |extra: Value| {
            let mut config = json!({"url":"https://example.com/h","signature":"standard"});
            let fields = config.as_object_mut().unwrap();
            fields.extend(extra.as_object().unwrap().clone());
            json!({"source":"crud","handler":"webhook","config":config})
        };
        // No secret: valid, the admin API generates one.
        let hook = hook(&input(json!({})), &ctx()).unwrap();
        assert_eq!(
            hook.handler.signing().unwrap().scheme,
            SignatureScheme::Standard
        );
        let ok = json!({"secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"});
        assert!(validate::hook(&input(ok), &ctx()).is_ok());
        let err = validate::hook(&input(json!({"secret":"hunter2"})), &ctx()).unwrap_err();
        assert_eq!(
            err.message(),
            "schema violation (config.secret: a standard signature secret must start with 'whsec_')"
        );
        let err = validate::hook(&input(json!({"signature":"hmac"})), &ctx()).unwrap_err();
        assert_eq!(
            err.fields(),
            json!({"config":{"signature":"expected one of: kong, standard"}})
        );
        // Kong's scheme takes any secret, as before.
        let kong = json!({"signature":"kong","secret":"hunter2"});
        assert!(validate::hook(&input(kong), &ctx()).is_ok());
    }

    #[test]
    fn method_must_be_upper_case() {
        let v = violation(
            json!({"source":"s","handler":"webhook-custom","config":{"url":"https://a.b","method":"post"}}),
        );
        assert_eq!(
            v.fields(),
            json!({"config":{"method":"invalid value: post"}})
        );
    }

    #[test]
    fn lambda_functions_must_compile_and_return_a_function() {
        let v = violation(
            json!({"source":"s","handler":"lambda","config":{"functions":[
            "return function() end", "return function(", "return 42"]}}),
        );
        let fields = v.fields();
        let items = fields["config"]["functions"].as_array().unwrap();
        assert!(items[0].is_null());
        assert!(
            items[1]
                .as_str()
                .unwrap()
                .starts_with("Error parsing function: "),
            "{fields}"
        );
        assert_eq!(
            items[2],
            "Bad return value from function, expected function type, got number"
        );
        assert!(v.message().contains("config.functions.3: Bad return value"));
    }

    #[test]
    fn custom_templates_are_checked_at_create_time() {
        let v = violation(json!({"source":"s","handler":"webhook-custom","config":{
            "url":"https://a.b","method":"POST",
            "payload":{"ok":"{{a.b}}","bad":"{{ a.b"},
            "body":"{% if x then %}",
            "headers":{"content-type":"text/plain","x-t":"{*"},"headers_format":true}}));
        let fields = v.fields();
        assert!(
            fields["config"]["payload"]["bad"]
                .as_str()
                .unwrap()
                .starts_with("invalid template"),
            "{fields}"
        );
        assert!(fields["config"]["payload"].get("ok").is_none());
        assert!(
            fields["config"]["body"]
                .as_str()
                .unwrap()
                .starts_with("invalid template"),
            "{fields}"
        );
        assert!(
            fields["config"]["headers"]["x-t"]
                .as_str()
                .unwrap()
                .starts_with("invalid template"),
            "{fields}"
        );
    }

    #[test]
    fn a_payload_needs_a_content_type_that_can_carry_it() {
        let v = violation(json!({"source":"s","handler":"webhook-custom","config":{
            "url":"https://a.b","method":"POST","payload":{"a":"b"},
            "headers":{"Content-Type":"text/plain"}}}));
        assert!(v.fields()["config"]["headers"]
            .as_str()
            .unwrap()
            .contains("cannot carry a payload"));
        // A GET sends the payload as a query string, whatever the content type.
        hook(
            &json!({"source":"s","handler":"webhook-custom","config":{
            "url":"https://a.b","method":"GET","payload":{"a":"b"},
            "headers":{"Content-Type":"text/plain"}}}),
            &ctx(),
        )
        .unwrap();
    }

    #[test]
    fn template_code_is_refused_when_untrusted_lua_is_off() {
        let ctx = Context {
            lua: LuaPolicy::Off,
            ..ctx()
        };
        let config = |text: &str| {
            json!({"source":"s","handler":"webhook-custom","config":{
            "url":"https://a.b","method":"POST","body":text}})
        };
        assert!(hook(&config("plain {{a.b}}"), &ctx).is_ok());
        let err = hook(&config("{% for i=1,3 do %}x{% end %}"), &ctx).unwrap_err();
        assert!(
            err.message().contains("untrusted_lua = off"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn lambda_rejected_when_untrusted_lua_is_off() {
        let ctx = Context {
            lua: LuaPolicy::Off,
            ..ctx()
        };
        let err = hook(
            &json!({"source":"s","handler":"lambda","config":{"functions":["return function() end"]}}),
            &ctx,
        )
        .unwrap_err();
        assert!(err.message().contains("untrusted_lua = off"));
    }

    #[test]
    fn header_injection_is_refused() {
        let v = violation(json!({"source":"s","handler":"webhook","config":{
            "url":"https://a.b","headers":{"x-a":"1\r\nx-b: 2","bad name":"v"}}}));
        assert_eq!(
            v.fields(),
            json!({"config":{"headers":{"x-a":"invalid header value","bad name":"invalid header name"}}})
        );
    }

    fn webhook_custom(config: Value) -> Value {
        let mut config = config;
        config["url"] = json!("https://a.b");
        config["method"] = json!("POST");
        json!({"source":"s","handler":"webhook-custom","config":config})
    }

    fn entries(n: usize, value: &str) -> Value {
        (0..n)
            .map(|i| (format!("x-{i}"), json!(value)))
            .collect::<Map<_, _>>()
            .into()
    }

    #[test]
    fn limit_on_header_count() {
        limit_holds(
            64,
            |n| webhook_custom(json!({"headers": entries(n, "v")})),
            json!({"config":{"headers":"length must be at most 64"}}),
        );
        let v = violation(webhook_custom(json!({"headers": entries(5000, "v")})));
        assert_eq!(
            v.message(),
            "schema violation (config.headers: length must be at most 64)"
        );
    }

    #[test]
    fn limit_on_header_name_and_value() {
        let named = |n: usize| {
            json!({"source":"s","handler":"webhook","config":{
                "url":"https://a.b","headers":{"x".repeat(n): "v"}}})
        };
        let prefix = "x".repeat(32);
        limit_holds(
            256,
            named,
            json!({"config":{"headers":format!("name '{prefix}…' is longer than 256 bytes")}}),
        );
        limit_holds(
            8192,
            |n| webhook_custom(json!({"headers":{"x-a":"v".repeat(n)}})),
            json!({"config":{"headers":{"x-a":"length must be at most 8192"}}}),
        );
    }

    #[test]
    fn limit_on_payload_entries_and_templates() {
        limit_holds(
            64,
            |n| webhook_custom(json!({"payload": entries(n, "{{ a }}")})),
            json!({"config":{"payload":"length must be at most 64"}}),
        );
        limit_holds(
            65536,
            |n| webhook_custom(json!({"payload":{"a":"v".repeat(n)}})),
            json!({"config":{"payload":{"a":"length must be at most 65536"}}}),
        );
        limit_holds(
            65536,
            |n| webhook_custom(json!({"body":"v".repeat(n)})),
            json!({"config":{"body":"length must be at most 65536"}}),
        );
    }

    fn lambda(functions: Vec<String>) -> Value {
        json!({"source":"s","handler":"lambda","config":{"functions":functions}})
    }

    #[test]
    fn limit_on_function_count_checked_before_compiling() {
        limit_holds(
            16,
            |n| lambda(vec!["return function() end".to_string(); n]),
            json!({"config":{"functions":"length must be at most 16"}}),
        );
        // Broken sources over the limit: had they been compiled, each would have its own error.
        let v = violation(lambda(vec!["return function(".to_string(); 1000]));
        assert_eq!(
            v.message(),
            "schema violation (config.functions: length must be at most 16)"
        );
    }

    #[test]
    fn limit_on_total_lua_checked_before_compiling() {
        let padded = |n: usize| {
            let code = "return function() end --";
            format!("{code}{}", "x".repeat(n - code.len()))
        };
        limit_holds(
            65536,
            |n| lambda(vec![padded(n / 2), padded(n - n / 2)]),
            json!({"config":{"functions":"the functions must total at most 65536 bytes of Lua"}}),
        );
        let v = violation(lambda(vec![format!(
            "return function( {}",
            "x".repeat(70_000)
        )]));
        assert_eq!(v.errors().len(), 1, "{}", v.message());
    }
}

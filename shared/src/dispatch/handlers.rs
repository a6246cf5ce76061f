//! What each handler does with one event (spec §6): the HTTP request a webhook sends, the line a
//! log hook writes, the chain a lambda hook runs. Pure preparation lives here; sending and
//! retrying are the dispatcher's.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::lua::template::{Renderer, Template, TemplateError};
use crate::lua::Budget;
use crate::model::{
    payload_encoding, PayloadEncoding, SignatureScheme, Signing, WebhookConfig, WebhookCustomConfig,
};
use crate::outbound::http::OutboundRequest;
use crate::outbound::signing::{signature, standard_headers, SIGNATURE_HEADER};

/// The event's data with `event` and `source` added, as both webhook handlers send it.
pub fn webhook_data(data: &Value, event: &str, source: &str) -> Value {
    let mut map = match data {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        other => {
            let mut map = Map::new();
            map.insert("data".into(), other.clone());
            map
        }
    };
    map.insert("event".into(), Value::String(event.to_string()));
    map.insert("source".into(), Value::String(source.to_string()));
    Value::Object(map)
}

/// Signs a prepared request of a `webhook` or `webhook-custom` hook, last, over the exact body
/// bytes. `message_id` is the delivery id (fresh for test and ping) and `now` the time in Unix
/// seconds; Standard Webhooks signs both, so a receiver can refuse replays.
///
/// - `kong`: `X-Kong-Signature` when a secret is set and a body is sent (Kong signs bodies only).
/// - `standard`: `webhook-id`, `webhook-timestamp` and `webhook-signature`, one signature for
///   the current secret and one for a rotated-out secret still in its grace period; an absent
///   body signs as empty, which is what receivers see.
pub fn sign(request: &mut OutboundRequest, signing: Signing<'_>, message_id: &str, now: i64) {
    match signing.scheme {
        SignatureScheme::Kong => {
            if let (Some(secret), Some(body)) = (signing.secret, &request.body) {
                let value = signature(secret.as_bytes(), body);
                request.headers.push((SIGNATURE_HEADER.into(), value));
            }
        }
        SignatureScheme::Standard => {
            let secrets = signing.secrets_at(now);
            if !secrets.is_empty() {
                let body = request.body.as_deref().unwrap_or_default();
                let headers = standard_headers(&secrets, message_id, now, body);
                request.headers.extend(headers);
            }
        }
    }
}

/// `webhook`: POST the data as JSON (unsigned: see [`sign`]).
pub fn webhook_request(config: &WebhookConfig, data: &Value) -> OutboundRequest {
    let body = serde_json::to_vec(data).unwrap_or_default();
    let mut headers: Vec<(String, String)> = config
        .headers
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("content-type"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers.push(("content-type".into(), "application/json".into()));
    OutboundRequest {
        method: reqwest::Method::POST,
        url: config.url.clone(),
        headers,
        body: Some(body),
    }
}

/// The templates of a `webhook-custom` hook, parsed once per hook version.
#[derive(Debug)]
pub struct CustomPlan {
    payload: Option<BTreeMap<String, Text>>,
    body: Option<Text>,
    headers: BTreeMap<String, Text>,
}

/// A configured string: a template or verbatim text, by the hook's `*_format` switches.
#[derive(Debug)]
enum Text {
    Template(Box<Template>),
    Verbatim(String),
}

impl Text {
    fn new(source: &str, format: bool) -> Result<Text, TemplateError> {
        Ok(if format {
            Text::Template(Box::new(Template::parse(source)?))
        } else {
            Text::Verbatim(source.to_string())
        })
    }

    fn render(&self, renderer: &mut Renderer<'_>) -> Result<String, TemplateError> {
        match self {
            Text::Template(template) => renderer.render(template),
            Text::Verbatim(text) => Ok(text.clone()),
        }
    }
}

fn header<'a>(headers: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl CustomPlan {
    /// Parses every template of the hook; a malformed one is an error (caught at create time).
    pub fn new(config: &WebhookCustomConfig) -> Result<CustomPlan, TemplateError> {
        let payload = match &config.payload {
            Some(payload) => Some(
                payload
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), Text::new(v, config.payload_format)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            None => None,
        };
        let body = match &config.body {
            Some(body) => Some(Text::new(body, config.body_format)?),
            None => None,
        };
        let headers = config
            .headers
            .iter()
            .map(|(k, v)| Ok((k.clone(), Text::new(v, config.headers_format)?)))
            .collect::<Result<_, TemplateError>>()?;
        Ok(CustomPlan {
            payload,
            body,
            headers,
        })
    }

    /// Whether rendering runs Lua (a template with code or a non-path expression).
    pub(crate) fn needs_lua(&self) -> bool {
        self.payload
            .iter()
            .flat_map(BTreeMap::values)
            .chain(&self.body)
            .chain(self.headers.values())
            .any(|text| matches!(text, Text::Template(template) if template.needs_lua()))
    }

    /// The request for one event: rendered headers, then a non-empty body or the payload,
    /// encoded by method and content type (unsigned: see [`sign`]). All the templates share
    /// `budget`.
    pub fn request(
        &self,
        config: &WebhookCustomConfig,
        data: &Value,
        budget: Budget,
    ) -> Result<OutboundRequest, TemplateError> {
        let mut renderer = Renderer::new(data, budget);
        let mut headers = BTreeMap::new();
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.render(&mut renderer)?);
        }
        let mut url = config.url.clone();
        let mut body: Option<Vec<u8>> = None;
        let rendered_body = match &self.body {
            Some(text) => Some(text.render(&mut renderer)?),
            None => None,
        };
        if let Some(text) = rendered_body.filter(|b| !b.is_empty()) {
            body = Some(text.into_bytes());
        } else if let Some(payload) = &self.payload {
            let mut fields = Vec::with_capacity(payload.len());
            for (name, value) in payload {
                fields.push((name.clone(), value.render(&mut renderer)?));
            }
            let encoding = payload_encoding(&config.method, header(&headers, "content-type"))
                .unwrap_or(PayloadEncoding::Multipart);
            match encoding {
                PayloadEncoding::Query => {
                    let mut query = form_urlencoded::Serializer::new(String::new());
                    query.extend_pairs(&fields);
                    let query = query.finish();
                    if !query.is_empty() {
                        url.push(if url.contains('?') { '&' } else { '?' });
                        url.push_str(&query);
                    }
                }
                PayloadEncoding::Json => {
                    let object: Map<String, Value> = fields
                        .into_iter()
                        .map(|(k, v)| (k, Value::String(v)))
                        .collect();
                    body = Some(serde_json::to_vec(&object).unwrap_or_default());
                }
                PayloadEncoding::Form => {
                    let mut form = form_urlencoded::Serializer::new(String::new());
                    form.extend_pairs(&fields);
                    body = Some(form.finish().into_bytes());
                }
                PayloadEncoding::Multipart => {
                    let (content_type, bytes) = multipart(&fields);
                    headers.retain(|k, _| !k.eq_ignore_ascii_case("content-type"));
                    headers.insert("content-type".into(), content_type);
                    body = Some(bytes);
                }
            }
        }
        Ok(OutboundRequest {
            method: config.method.to_http(),
            url,
            headers: headers.into_iter().collect(),
            body,
        })
    }
}

/// A `multipart/form-data` body of text fields, with a boundary that appears in no value.
fn multipart(fields: &[(String, String)]) -> (String, Vec<u8>) {
    let mut boundary = format!("event-hooks-{}", uuid::Uuid::new_v4().simple());
    while fields
        .iter()
        .any(|(k, v)| k.contains(&boundary) || v.contains(&boundary))
    {
        boundary = format!("event-hooks-{}", uuid::Uuid::new_v4().simple());
    }
    let mut body = Vec::new();
    for (name, value) in fields {
        let name = name.replace('"', "%22").replace(['\r', '\n'], " ");
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(value.as_bytes());
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lua::Limits;
    use crate::model::{Handler, PreviousSecret};
    use crate::outbound::signing::{standard_key, standard_signature};
    use serde_json::json;

    fn custom(method: &str) -> WebhookCustomConfig {
        WebhookCustomConfig {
            url: "https://example.com/h".into(),
            method: method.parse().expect("a valid method"),
            payload: None,
            payload_format: true,
            body: None,
            body_format: true,
            headers: BTreeMap::new(),
            headers_format: false,
            secret: None,
            ssl_verify: false,
            signature: SignatureScheme::Kong,
            previous_secret: None,
        }
    }

    #[test]
    fn a_plan_needs_lua_only_for_code_or_expressions() {
        let mut config = custom("POST");
        config.body = Some("{{ entity.username }}".into());
        config
            .headers
            .insert("x-a".into(), "{{ operation }}".into());
        assert!(!CustomPlan::new(&config).unwrap().needs_lua());
        config
            .headers
            .insert("x-b".into(), "{{ #operation }}".into());
        // Headers are verbatim unless `headers_format` is on.
        assert!(!CustomPlan::new(&config).unwrap().needs_lua());
        config.headers_format = true;
        assert!(CustomPlan::new(&config).unwrap().needs_lua());
        config.headers.clear();
        config.body = None;
        config.payload = Some(BTreeMap::from([(
            "a".into(),
            "{% if true then %}x{% end %}".into(),
        )]));
        assert!(CustomPlan::new(&config).unwrap().needs_lua());
    }

    fn data() -> Value {
        webhook_data(
            &json!({"entity":{"username":"bob & co"},"operation":"create"}),
            "consumers",
            "crud",
        )
    }

    #[test]
    fn webhook_posts_signed_json() {
        let config = WebhookConfig {
            url: "https://example.com/h".into(),
            headers: BTreeMap::from([("x-team".into(), "core".into())]),
            secret: Some("hunter2".into()),
            ssl_verify: false,
            signature: SignatureScheme::Kong,
            previous_secret: None,
        };
        let mut request = webhook_request(&config, &data());
        sign(
            &mut request,
            Handler::Webhook(config).signing().unwrap(),
            "d",
            1,
        );
        let body = request.body.clone().unwrap();
        let sent: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent["event"], "consumers");
        assert_eq!(sent["source"], "crud");
        assert_eq!(sent["entity"]["username"], "bob & co");
        let headers: BTreeMap<_, _> = request.headers.into_iter().collect();
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["x-team"], "core");
        assert_eq!(headers[SIGNATURE_HEADER], signature(b"hunter2", &body));
    }

    #[test]
    fn payload_goes_to_the_query_for_get() {
        let mut config = custom("GET");
        config.payload = Some(BTreeMap::from([(
            "who".into(),
            "{{entity.username}}".into(),
        )]));
        let plan = CustomPlan::new(&config).unwrap();
        let request = plan
            .request(
                &config,
                &data(),
                Budget::starting_now(&Limits::default(), None),
            )
            .unwrap();
        assert_eq!(request.url, "https://example.com/h?who=bob+%26amp%3B+co");
        assert!(request.body.is_none());
    }

    #[test]
    fn payload_is_encoded_by_content_type() {
        let mut config = custom("POST");
        config.payload = Some(BTreeMap::from([
            ("who".into(), "{*entity.username*}".into()),
            ("op".into(), "{{operation}}".into()),
        ]));
        config.secret = Some("s".into());
        for (content_type, expected) in [
            ("application/json", r#"{"op":"create","who":"bob & co"}"#),
            (
                "application/x-www-form-urlencoded; charset=utf-8",
                "op=create&who=bob+%26+co",
            ),
        ] {
            config.headers = BTreeMap::from([("Content-Type".into(), content_type.into())]);
            let plan = CustomPlan::new(&config).unwrap();
            let mut request = plan
                .request(
                    &config,
                    &data(),
                    Budget::starting_now(&Limits::default(), None),
                )
                .unwrap();
            let signing = Handler::WebhookCustom(config.clone());
            sign(&mut request, signing.signing().unwrap(), "d", 1);
            let body = request.body.unwrap();
            assert_eq!(String::from_utf8(body.clone()).unwrap(), expected);
            assert!(request
                .headers
                .contains(&(SIGNATURE_HEADER.into(), signature(b"s", &body))));
        }
        config.headers = BTreeMap::new();
        let plan = CustomPlan::new(&config).unwrap();
        let request = plan
            .request(
                &config,
                &data(),
                Budget::starting_now(&Limits::default(), None),
            )
            .unwrap();
        let content_type = &request
            .headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .unwrap()
            .1;
        assert!(content_type.starts_with("multipart/form-data; boundary="));
        let body = String::from_utf8(request.body.unwrap()).unwrap();
        assert!(body.contains("name=\"who\"\r\n\r\nbob & co\r\n"), "{body}");
    }

    #[test]
    fn a_non_empty_body_wins_and_headers_render_when_asked() {
        let mut config = custom("PUT");
        config.payload = Some(BTreeMap::from([("a".into(), "b".into())]));
        config.body = Some("user={{entity.username}}".into());
        config.headers = BTreeMap::from([("x-op".into(), "{{operation}}".into())]);
        config.headers_format = true;
        let plan = CustomPlan::new(&config).unwrap();
        let request = plan
            .request(
                &config,
                &data(),
                Budget::starting_now(&Limits::default(), None),
            )
            .unwrap();
        assert_eq!(request.body.unwrap(), b"user=bob &amp; co");
        assert!(request.headers.contains(&("x-op".into(), "create".into())));
    }

    #[test]
    fn standard_signing_signs_id_time_and_body_with_both_secrets_while_rotating() {
        let (new, old) = (
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_c2Vjb25kIGtleSBvZiB0d2VudHktZm91ciBi",
        );
        let mut config = custom("GET");
        config.signature = SignatureScheme::Standard;
        config.secret = Some(new.into());
        config.previous_secret = Some(PreviousSecret {
            secret: old.into(),
            expires_at: 100,
        });
        let handler = Handler::WebhookCustom(config.clone());
        let plan = CustomPlan::new(&config).unwrap();
        let unsigned = plan
            .request(
                &config,
                &data(),
                Budget::starting_now(&Limits::default(), None),
            )
            .unwrap();
        let header = |request: &OutboundRequest, name: &str| {
            let found = request.headers.iter().find(|(k, _)| k == name);
            found.map(|(_, v)| v.clone())
        };
        let sig = |secret: &str, at: i64| {
            standard_signature(&standard_key(secret).unwrap(), "msg_1", at, b"")
        };

        let mut request = unsigned.clone();
        sign(&mut request, handler.signing().unwrap(), "msg_1", 99);
        assert_eq!(header(&request, "webhook-id").unwrap(), "msg_1");
        assert_eq!(header(&request, "webhook-timestamp").unwrap(), "99");
        assert_eq!(
            header(&request, "webhook-signature").unwrap(),
            format!("{} {}", sig(new, 99), sig(old, 99))
        );
        assert_eq!(header(&request, SIGNATURE_HEADER), None);

        // Once the grace period is over, only the new secret signs.
        let mut request = unsigned;
        sign(&mut request, handler.signing().unwrap(), "msg_1", 100);
        assert_eq!(
            header(&request, "webhook-signature").unwrap(),
            sig(new, 100)
        );
    }

    #[test]
    fn kong_signing_uses_the_current_secret_only() {
        let mut config = custom("POST");
        config.body = Some("x".into());
        config.secret = Some("new".into());
        config.previous_secret = Some(PreviousSecret {
            secret: "old".into(),
            expires_at: i64::MAX,
        });
        let plan = CustomPlan::new(&config).unwrap();
        let mut request = plan
            .request(
                &config,
                &data(),
                Budget::starting_now(&Limits::default(), None),
            )
            .unwrap();
        let handler = Handler::WebhookCustom(config);
        sign(&mut request, handler.signing().unwrap(), "d", 1);
        let signatures: Vec<_> = request
            .headers
            .iter()
            .filter(|(k, _)| k.starts_with("x-kong") || k.starts_with("webhook"))
            .collect();
        assert_eq!(
            signatures,
            [&(SIGNATURE_HEADER.to_string(), signature(b"new", b"x"))]
        );
    }
}

//! The API Gateway HTTP API (payload 2.0) responses the Lambda functions answer, decoded once for
//! every test that invokes one.

use base64::Engine as _;
use serde_json::{Map, Value};

/// A function's API Gateway response: status, headers and body, the body parsed as JSON.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: Map<String, Value>,
    /// `Value::Null` when the body is empty.
    pub body: Value,
}

impl ApiResponse {
    /// Checks the shape API Gateway requires (a numeric `statusCode`, a `headers` object, a
    /// boolean `isBase64Encoded`) and decodes the body, which must be empty or JSON.
    pub fn parse(raw: &Value) -> ApiResponse {
        let status = raw["statusCode"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or_else(|| panic!("no numeric statusCode in {raw}"));
        let headers = raw["headers"]
            .as_object()
            .unwrap_or_else(|| panic!("no headers object in {raw}"))
            .clone();
        let text = String::from_utf8(body_bytes(raw)).expect("UTF-8 body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("body is not JSON: {text:?}"))
        };
        ApiResponse {
            status,
            headers,
            body,
        }
    }

    /// The `content-type` header, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.headers.get("content-type").and_then(Value::as_str)
    }
}

/// The bytes of a response's body: base64-decoded when `isBase64Encoded` says so, empty when
/// absent. Panics on a response API Gateway would refuse (no boolean `isBase64Encoded`, a body
/// neither a string nor absent, a body marked base64 that is not).
pub fn body_bytes(raw: &Value) -> Vec<u8> {
    let base64 = raw["isBase64Encoded"]
        .as_bool()
        .unwrap_or_else(|| panic!("no boolean isBase64Encoded in {raw}"));
    match &raw["body"] {
        Value::Null => Vec::new(),
        Value::String(body) if base64 => base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap_or_else(|err| panic!("body is not base64 ({err}) in {raw}")),
        Value::String(body) => body.clone().into_bytes(),
        other => panic!("body is neither a string nor absent: {other}"),
    }
}

//! The request-body extractor: JSON, form-urlencoded and multipart bodies all become one JSON
//! object, with Kong's dotted-key nesting for forms (spec §2). Anything else is a 415.

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::form;

/// The largest body accepted; a hook with long Lua functions fits easily.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A request body as a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub fields: Map<String, Value>,
    /// Forms carry only strings; callers coerce them by the schema of what they hold.
    pub from_form: bool,
}

enum Format {
    Empty,
    Json,
    Form,
    Multipart,
}

fn format_of(req: &Request) -> Result<Format, ApiError> {
    let Some(value) = req.headers().get(CONTENT_TYPE) else {
        return Ok(Format::Empty);
    };
    let essence = value
        .to_str()
        .map_err(|_| ApiError::UnsupportedMediaType)?
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(Format::Json),
        "application/x-www-form-urlencoded" => Ok(Format::Form),
        "multipart/form-data" => Ok(Format::Multipart),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

impl<S: Send + Sync> FromRequest<S> for Input {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Input, ApiError> {
        // Refused before reading: a client waiting on `Expect: 100-continue` gets the 413 cleanly.
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|length| length > MAX_BODY_BYTES) {
            return Err(ApiError::PayloadTooLarge);
        }
        match format_of(&req)? {
            Format::Multipart => {
                let multipart = Multipart::from_request(req, state)
                    .await
                    .map_err(|_| ApiError::BadRequest("Cannot parse multipart body".into()))?;
                multipart_fields(multipart).await
            }
            format => {
                let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
                    .await
                    .map_err(|_| ApiError::PayloadTooLarge)?;
                parse(format, &bytes)
            }
        }
    }
}

fn parse(format: Format, bytes: &[u8]) -> Result<Input, ApiError> {
    let blank = bytes.iter().all(u8::is_ascii_whitespace);
    match format {
        Format::Empty if blank => Ok(Input {
            fields: Map::new(),
            from_form: false,
        }),
        Format::Empty => Err(ApiError::UnsupportedMediaType),
        Format::Json if blank => Ok(Input {
            fields: Map::new(),
            from_form: false,
        }),
        Format::Json => match serde_json::from_slice(bytes) {
            Ok(Value::Object(fields)) => Ok(Input {
                fields,
                from_form: false,
            }),
            Ok(_) => Err(ApiError::BadRequest(
                "Cannot parse JSON body: expected a JSON object".into(),
            )),
            Err(_) => Err(ApiError::BadJson),
        },
        Format::Form => {
            from_pairs(form_urlencoded::parse(bytes).map(|(k, v)| (k.into_owned(), v.into_owned())))
        }
        Format::Multipart => unreachable!("multipart bodies are streamed"),
    }
}

fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Input, ApiError> {
    let value = form::decode_pairs(pairs).map_err(|err| ApiError::BadRequest(err.to_string()))?;
    Ok(Input {
        fields: match value {
            Value::Object(fields) => fields,
            _ => Map::new(),
        },
        from_form: true,
    })
}

async fn multipart_fields(mut multipart: Multipart) -> Result<Input, ApiError> {
    let mut pairs = Vec::new();
    let mut total = 0usize;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(err) if err.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(ApiError::PayloadTooLarge)
            }
            Err(_) => return Err(ApiError::BadRequest("Cannot parse multipart body".into())),
        };
        let name = field.name().unwrap_or_default().to_string();
        let bytes = field.bytes().await.map_err(|err| {
            if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest("Cannot parse multipart body".into())
            }
        })?;
        total += bytes.len();
        if total > MAX_BODY_BYTES {
            return Err(ApiError::PayloadTooLarge);
        }
        // `-F config.functions=@fn.lua` sends the file's contents as the value.
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
            ApiError::BadRequest(format!("multipart field '{name}' is not valid UTF-8"))
        })?;
        pairs.push((name, text));
    }
    from_pairs(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_each_format() {
        let input = parse(Format::Json, br#"{"a":1}"#).unwrap();
        assert_eq!(Value::Object(input.fields), json!({"a":1}));
        let input = parse(Format::Form, b"config.url=https%3A%2F%2Fx.test&a=b+c").unwrap();
        assert!(input.from_form);
        assert_eq!(
            Value::Object(input.fields),
            json!({"config":{"url":"https://x.test"},"a":"b c"})
        );
        assert!(parse(Format::Empty, b"").unwrap().fields.is_empty());
    }

    #[test]
    fn rejects_broken_bodies() {
        assert!(matches!(parse(Format::Json, b"{"), Err(ApiError::BadJson)));
        assert!(matches!(
            parse(Format::Json, b"[1]"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse(Format::Empty, b"a=b"),
            Err(ApiError::UnsupportedMediaType)
        ));
        assert!(matches!(
            parse(Format::Form, b"a..b=1"),
            Err(ApiError::BadRequest(_))
        ));
    }
}

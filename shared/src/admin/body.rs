//! The request-body extractor: JSON, form-urlencoded and multipart bodies all become one JSON
//! object, with Kong's dotted-key nesting for forms (spec §2). Anything else is a 415.
//!
//! The limits of spec §1 hold before anything walks the decoded value: at most
//! [`MAX_BODY_BYTES`] (413 above), [`MAX_BODY_DEPTH`] levels of nesting and [`MAX_BODY_KEYS`]
//! keys (400 naming the limit). JSON is measured by a flat scan before serde parses it, so serde's
//! recursion never comes near its own limit, let alone the stack's end.

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::form::{self, FormError};
pub use crate::limits::MAX_BODY_BYTES;
use crate::limits::{MAX_BODY_DEPTH, MAX_BODY_KEYS};

/// A body over one of the limits of spec §1, or a form that cannot be decoded: a 400 with the
/// message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("Cannot parse JSON body: nested deeper than {MAX_BODY_DEPTH} levels")]
    JsonTooDeep,
    #[error("Cannot parse body: more than {MAX_BODY_KEYS} keys")]
    TooManyKeys,
    #[error(transparent)]
    Form(#[from] FormError),
}

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
        refuse_declared_excess(&req)?;
        match format_of(&req)? {
            Format::Multipart => {
                let multipart = Multipart::from_request(req, state)
                    .await
                    .map_err(|_| ApiError::BadRequest("Cannot parse multipart body".into()))?;
                multipart_fields(multipart).await
            }
            format => parse(format, &read_bytes(req).await?),
        }
    }
}

/// `POST /events`' body: one event (an [`Input`], in any of its formats) or, in JSON only, an
/// array of events (spec §4, batched ingestion).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EventsBody {
    One(Input),
    Batch(Vec<Map<String, Value>>),
}

impl<S: Send + Sync> FromRequest<S> for EventsBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<EventsBody, ApiError> {
        refuse_declared_excess(&req)?;
        if !matches!(format_of(&req)?, Format::Json) {
            return Input::from_request(req, state).await.map(EventsBody::One);
        }
        let bytes = read_bytes(req).await?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
            return parse(Format::Json, &bytes).map(EventsBody::One);
        }
        check_json_shape(&bytes)?;
        let items: Vec<Value> = serde_json::from_slice(&bytes).map_err(|_| ApiError::BadJson)?;
        items
            .into_iter()
            .enumerate()
            .map(|(index, item)| match item {
                Value::Object(fields) => Ok(fields),
                _ => Err(ApiError::BadRequest(format!(
                    "Cannot parse JSON body: event {index} of the array is not a JSON object"
                ))),
            })
            .collect::<Result<_, _>>()
            .map(EventsBody::Batch)
    }
}

/// Refused before reading: a client waiting on `Expect: 100-continue` gets the 413 cleanly.
fn refuse_declared_excess(req: &Request) -> Result<(), ApiError> {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES) {
        return Err(ApiError::PayloadTooLarge);
    }
    Ok(())
}

/// The whole body, at most [`MAX_BODY_BYTES`] (413 above).
async fn read_bytes(req: Request) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)
}

/// A JSON body read as bytes (the Kong relay needs the exact bytes for the signature) as a JSON
/// object, under the same limits and with the same errors as [`Input`]'s JSON.
pub(super) fn json_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    parse(Format::Json, bytes).map(|input| input.fields)
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
        Format::Json => match check_json_shape(bytes)
            .and_then(|()| serde_json::from_slice(bytes).map_err(|_| ApiError::BadJson))
        {
            Ok(Value::Object(fields)) => Ok(Input {
                fields,
                from_form: false,
            }),
            Ok(_) => Err(ApiError::BadRequest(
                "Cannot parse JSON body: expected a JSON object".into(),
            )),
            Err(err) => Err(err),
        },
        Format::Form => {
            from_pairs(form_urlencoded::parse(bytes).map(|(k, v)| (k.into_owned(), v.into_owned())))
        }
        Format::Multipart => unreachable!("multipart bodies are streamed"),
    }
}

/// Refuses JSON nested deeper than [`MAX_BODY_DEPTH`] or with more than [`MAX_BODY_KEYS`] object
/// members, in one pass with no recursion. Bytes outside strings are structure; in valid JSON a
/// `:` there separates a member's key from its value. Invalid JSON is left for serde to refuse.
fn check_json_shape(bytes: &[u8]) -> Result<(), ApiError> {
    let (mut depth, mut keys) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &byte in bytes {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_BODY_DEPTH {
                    return Err(BodyError::JsonTooDeep.into());
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b':' => {
                keys += 1;
                if keys > MAX_BODY_KEYS {
                    return Err(BodyError::TooManyKeys.into());
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Decodes form pairs; past [`MAX_BODY_KEYS`] pairs the rest is not looked at.
fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Input, ApiError> {
    let mut count = 0usize;
    let mut too_many = false;
    let pairs = pairs.into_iter().take_while(|_| {
        count += 1;
        too_many = count > MAX_BODY_KEYS;
        !too_many
    });
    let decoded = form::decode_pairs(pairs).map_err(BodyError::from);
    if too_many {
        return Err(BodyError::TooManyKeys.into());
    }
    let value = decoded?;
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
        if pairs.len() == MAX_BODY_KEYS {
            return Err(BodyError::TooManyKeys.into());
        }
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
            Err(ApiError::Body(BodyError::Form(FormError::BadKey(_))))
        ));
    }

    fn body_error(format: Format, bytes: &[u8]) -> BodyError {
        match parse(format, bytes) {
            Err(ApiError::Body(problem)) => problem,
            Ok(input) => panic!("expected a body error, got {} fields", input.fields.len()),
            Err(other) => panic!("expected a body error, got {other:?}"),
        }
    }

    fn nested_json(depth: usize) -> String {
        // Objects and arrays alternate; strings full of brackets do not count.
        let mut text = r#""[[{{\"[""#.to_string();
        for level in 0..depth {
            text = if level % 2 == 0 {
                format!("[{text}]")
            } else {
                format!(r#"{{"a]":{text}}}"#)
            };
        }
        text
    }

    #[test]
    fn json_nests_at_most_32_levels() {
        let at_limit = format!(r#"{{"x":{}}}"#, nested_json(31));
        assert!(parse(Format::Json, at_limit.as_bytes()).is_ok());
        let over = format!(r#"{{"x":{}}}"#, nested_json(32));
        assert_eq!(
            body_error(Format::Json, over.as_bytes()),
            BodyError::JsonTooDeep
        );
        assert_eq!(
            BodyError::JsonTooDeep.to_string(),
            "Cannot parse JSON body: nested deeper than 32 levels"
        );
        // Far past serde's own limit of 128, and broken too: still the depth answer.
        let deep = "[".repeat(100_000);
        assert_eq!(
            body_error(Format::Json, deep.as_bytes()),
            BodyError::JsonTooDeep
        );
    }

    #[test]
    fn json_has_at_most_1000_keys() {
        let object = |n: usize| {
            let members: Vec<String> = (0..n).map(|i| format!(r#""k{i}":{{"s":":"}}"#)).collect();
            format!("{{{}}}", members.join(","))
        };
        // Each member holds one more: 500 members are 1,000 keys.
        assert!(parse(Format::Json, object(500).as_bytes()).is_ok());
        assert_eq!(
            body_error(
                Format::Json,
                format!(r#"{{"z":1,{}"#, &object(500)[1..]).as_bytes()
            ),
            BodyError::TooManyKeys
        );
        assert_eq!(
            BodyError::TooManyKeys.to_string(),
            "Cannot parse body: more than 1000 keys"
        );
    }

    #[test]
    fn forms_have_at_most_1000_keys() {
        let form = |n: usize| {
            (0..n)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join("&")
        };
        assert_eq!(
            parse(Format::Form, form(1000).as_bytes())
                .unwrap()
                .fields
                .len(),
            1000
        );
        assert_eq!(
            body_error(Format::Form, form(1001).as_bytes()),
            BodyError::TooManyKeys
        );
    }

    #[test]
    fn form_keys_nest_at_most_32_levels() {
        let key = vec!["a"; 10_000].join(".");
        assert!(matches!(
            body_error(Format::Form, format!("{key}=1").as_bytes()),
            BodyError::Form(FormError::TooDeep(_))
        ));
    }
}

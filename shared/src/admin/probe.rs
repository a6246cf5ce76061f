//! `POST /event-hooks/{id}/test` and `GET /event-hooks/{id}/ping` (spec §7): run a hook's handler
//! now with sample data, or send a webhook hook a signed ping. A target that fails is shown as a
//! 502 with what failed (Kong hides it behind a 500); nothing is retried, no snooze window is
//! touched.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Map, Value};

use super::body::Input;
use super::error::ApiError;
use super::hooks::parse_id;
use super::AdminSettings;
use crate::dispatch::handlers::sign;
use crate::dispatch::{Executed, Executor};
use crate::events::{now_millis, now_seconds, Event};
use crate::form;
use crate::limits::MAX_PROBE_RUN;
use crate::model::{Handler, Hook};
use crate::outbound::http::{OutboundRequest, Response, SendError};
use crate::store::HookStore;

/// The pid reported to lambda functions run by `test`, as Kong's.
const TEST_PID: i64 = 42;

/// What test and ping need: the hooks and a way to run their handlers.
#[derive(Clone)]
pub struct ProbeState {
    store: Arc<dyn HookStore>,
    executor: Arc<Executor>,
    pub(super) settings: Arc<AdminSettings>,
}

impl ProbeState {
    pub fn new(
        store: Arc<dyn HookStore>,
        executor: Arc<Executor>,
        settings: AdminSettings,
    ) -> ProbeState {
        ProbeState {
            store,
            executor,
            settings: Arc::new(settings),
        }
    }
}

async fn hook(state: &ProbeState, id: &str) -> Result<Hook, ApiError> {
    let id = parse_id(id)?;
    Ok(state.store.get(id).await?.ok_or(ApiError::NotFound)?.value)
}

/// A 502 naming what failed at the target.
fn bad_gateway(message: String) -> ApiError {
    ApiError::BadGateway(message)
}

fn http_result(response: &Response) -> Value {
    json!({
        "status": response.status,
        "headers": response.headers,
        "body": response.body,
    })
}

/// Runs `work` for at most `limit` ([`MAX_PROBE_RUN`] in test and ping); past it, a 502 that
/// says so.
async fn within<T>(
    limit: std::time::Duration,
    work: impl std::future::Future<Output = T>,
) -> Result<T, ApiError> {
    tokio::time::timeout(limit, work).await.map_err(|_| {
        bad_gateway(format!(
            "the hook did not finish within {} ms, the longest test and ping wait (deliveries \
             wait the hook's full timeouts)",
            limit.as_millis()
        ))
    })
}

fn send_failure(err: &SendError) -> ApiError {
    bad_gateway(format!("request to the hook's target failed: {err}"))
}

/// `POST /event-hooks/{id}/test`: the body is the event's data.
pub(super) async fn test(
    State(state): State<ProbeState>,
    Path(id): Path<String>,
    input: Input,
) -> Result<Json<Value>, ApiError> {
    let hook = hook(&state, &id).await?;
    let mut data = Value::Object(input.fields);
    if input.from_form {
        // Forms carry strings; the usual coercions make `a=true` a boolean, as for hooks.
        form::coerce_hook(&mut data);
    }
    let event_name = hook.event.clone().unwrap_or_default();
    let event = Event {
        id: uuid::Uuid::new_v4(),
        source: hook.source.clone(),
        event: event_name.clone(),
        data,
        timestamp: now_millis(),
    };
    let executed = within(
        MAX_PROBE_RUN,
        state
            .executor
            .execute(&hook, &event_name, &event, None, TEST_PID),
    )
    .await?;
    let shown_data = match &hook.handler {
        Handler::Webhook(_) | Handler::WebhookCustom(_) => {
            crate::dispatch::handlers::webhook_data(&event.data, &event_name, &event.source)
        }
        Handler::Log(_) | Handler::Lambda(_) => event.data.clone(),
    };
    let result = match executed {
        Executed::Http(Ok(response)) => http_result(&response),
        Executed::Http(Err(err)) => return Err(send_failure(&err)),
        Executed::Logged(line) => line,
        Executed::Lambda(Ok(value)) => value,
        Executed::Lambda(Err(err)) => return Err(bad_gateway(err.to_string())),
        Executed::Unprepared(reason) => return Err(bad_gateway(reason.to_string())),
    };
    Ok(Json(json!({ "data": shown_data, "result": result })))
}

/// `POST /event-hooks/preview` (beyond Kong, for the console's editors): `{"hook": <the body of a
/// hook create>, "data": <the event's data, optional>}`. The hook is checked as a create would
/// check it (same messages, its fields under `hook.`) but not stored, then run on `data` with
/// nothing sent ([`Executor::preview`]). 200 `{"data":…,"result":…}`; user code that fails → 502.
pub(super) async fn preview(
    State(state): State<ProbeState>,
    input: Input,
) -> Result<Json<Value>, ApiError> {
    let mut fields = input.fields;
    let mut problems = Vec::new();
    let data = match fields.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(data)) => data,
        Some(_) => {
            problems.push(("data".to_owned(), "expected a record".to_owned()));
            Map::new()
        }
    };
    let hook = match fields.remove("hook") {
        Some(hook @ Value::Object(_)) => Some(hook),
        None | Some(Value::Null) => {
            problems.push(("hook".to_owned(), "required field missing".to_owned()));
            None
        }
        Some(_) => {
            problems.push(("hook".to_owned(), "expected a record".to_owned()));
            None
        }
    };
    for key in fields.keys() {
        problems.push((key.clone(), "unknown field".to_owned()));
    }
    if let Some(violation) = crate::validate::SchemaViolation::from_fields(problems) {
        return Err(violation.into());
    }
    let mut value = hook.unwrap_or_default();
    let mut data = Value::Object(data);
    if input.from_form {
        // Forms carry strings (`hook.config.url=…`, `data.n=1`): coerced as for hooks and test.
        form::coerce_hook(&mut value);
        form::coerce_hook(&mut data);
    }
    let ctx = crate::validate::Context {
        id: uuid::Uuid::new_v4(),
        created_at: now_seconds(),
        now: now_seconds(),
        lua: state.settings.lua.clone(),
    };
    let hook = crate::lua::pool::LuaPool::shared()
        .run(move || crate::validate::hook(&value, &ctx))
        .await
        .map_err(ApiError::internal)?
        .map_err(|violation| violation.under("hook"))?;
    let event_name = hook.event.clone().unwrap_or_default();
    let event = Event {
        id: uuid::Uuid::new_v4(),
        source: hook.source.clone(),
        event: event_name.clone(),
        data,
        timestamp: now_millis(),
    };
    let result = state
        .executor
        .preview(&hook, &event_name, &event, TEST_PID)
        .await
        .map_err(|err| bad_gateway(err.to_string()))?;
    Ok(Json(json!({ "data": event.data, "result": result })))
}

/// The body of a ping; `operation` is set for the automatic pings of hook changes.
pub(crate) fn ping_body(hook: &Hook, operation: Option<&str>) -> Value {
    let mut body = Map::new();
    body.insert("source".into(), json!("kong:event_hooks"));
    body.insert("event".into(), json!("ping"));
    body.insert("event_hooks".into(), hook.redacted());
    if let Some(operation) = operation {
        body.insert("operation".into(), json!(operation));
    }
    Value::Object(body)
}

/// The signed ping request for a webhook or webhook-custom hook, or `None` for other handlers.
pub(crate) fn ping_request(hook: &Hook, body: &Value) -> Option<(OutboundRequest, bool)> {
    let (url, headers, ssl_verify) = match &hook.handler {
        Handler::Webhook(c) => (&c.url, &c.headers, c.ssl_verify),
        Handler::WebhookCustom(c) => (&c.url, &c.headers, c.ssl_verify),
        Handler::Log(_) | Handler::Lambda(_) => return None,
    };
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut headers: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("content-type"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers.push(("content-type".into(), "application/json".into()));
    let mut request = OutboundRequest {
        method: reqwest::Method::POST,
        url: url.clone(),
        headers,
        body: Some(bytes),
    };
    if let Some(signing) = hook.handler.signing() {
        // A ping is no delivery: it gets a fresh message id.
        let message_id = uuid::Uuid::new_v4().to_string();
        sign(&mut request, signing, &message_id, now_seconds());
    }
    Some((request, ssl_verify))
}

/// `GET /event-hooks/{id}/ping`
pub(super) async fn ping(
    State(state): State<ProbeState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let hook = hook(&state, &id).await?;
    let body = ping_body(&hook, None);
    let Some((request, verify)) = ping_request(&hook, &body) else {
        return Err(ApiError::BadRequest(format!(
            "only webhook and webhook-custom hooks can be pinged; this hook's handler is '{}'",
            hook.handler.kind().as_str()
        )));
    };
    let response = within(MAX_PROBE_RUN, state.executor.send(request, verify))
        .await?
        .map_err(|err| send_failure(&err))?;
    Ok(Json(
        json!({ "data": body, "result": http_result(&response) }),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::response::IntoResponse;

    use super::*;

    #[tokio::test]
    async fn work_past_the_limit_is_a_502_that_says_so() {
        let started = std::time::Instant::now();
        let slow = tokio::time::sleep(Duration::from_secs(5));
        let err = within(Duration::from_millis(50), slow)
            .await
            .expect_err("cut at the limit");
        assert!(started.elapsed() < Duration::from_secs(2));
        let response = err.into_response();
        assert_eq!(response.status(), axum::http::StatusCode::BAD_GATEWAY);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains("did not finish within"));
    }

    #[tokio::test]
    async fn work_within_the_limit_is_answered() {
        let quick = async { 7 };
        assert_eq!(within(Duration::from_secs(1), quick).await.unwrap(), 7);
    }
}

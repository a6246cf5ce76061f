//! The one place where admin API errors become responses, in Kong's error shapes (spec §2).
//!
//! Expected failures carry their own status and body; anything unexpected is logged with its cause
//! and answered with a bare 500, so internals never reach a response body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::body::BodyError;
use crate::limits::MAX_BODY_BYTES;
use crate::queue::QueueError;
use crate::store::StoreError;
use crate::validate::SchemaViolation;

/// Kong's error codes (kong/db/errors.lua).
mod code {
    pub(crate) const INVALID_PRIMARY_KEY: u32 = 1;
    pub(crate) const SCHEMA_VIOLATION: u32 = 2;
    pub(crate) const PRIMARY_KEY_VIOLATION: u32 = 3;
    pub(crate) const UNIQUE_VIOLATION: u32 = 5;
    pub(crate) const INVALID_OFFSET: u32 = 7;
    pub(crate) const INVALID_SIZE: u32 = 9;
}

/// The `Retry-After` of a 503: a throttled or unavailable dependency usually recovers in seconds.
pub(crate) const RETRY_AFTER_SECONDS: u32 = 2;

/// Every way an admin API request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("cannot parse JSON body")]
    BadJson,
    /// A 400 with a plain message.
    #[error("{0}")]
    BadRequest(String),
    /// A body over a limit of spec §1 (other than its size), or a form that cannot be decoded.
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error(transparent)]
    Schema(#[from] SchemaViolation),
    /// The id in the path is not a UUID.
    #[error("invalid primary key")]
    InvalidPrimaryKey,
    /// A POST with an id that already exists.
    #[error("primary key violation on {0}")]
    PrimaryKeyViolation(uuid::Uuid),
    #[error("name {0:?} is taken")]
    UniqueViolation(String),
    #[error("{0}")]
    InvalidSize(&'static str),
    #[error("invalid offset {offset:?}: {reason}")]
    InvalidOffset {
        offset: String,
        reason: &'static str,
    },
    /// The hook's target (or its code) failed during test or ping: 502 with what failed.
    #[error("target failed: {0}")]
    BadGateway(String),
    #[error("no credentials")]
    MissingCredentials,
    #[error("wrong credentials")]
    WrongCredentials,
    /// The admin token could not be read from its store (Secrets Manager, SSM) and none is
    /// cached: 503, never an open door.
    #[error("the admin token cannot be read: {0}")]
    CredentialsUnavailable(String),
    /// A hook change is stored but its `crud` events or its ping could not be queued, even after
    /// retries: 503, so the caller learns that the change happened and its events did not,
    /// instead of a success that silently dropped them.
    #[error("hook {hook_id} changed, but its events were not queued: {source}")]
    ChangeNotEmitted {
        hook_id: uuid::Uuid,
        #[source]
        source: QueueError,
    },
    /// The Kong relay: no `X-Kong-Signature`, and unsigned events are not allowed (401).
    #[error("the relayed event is not signed")]
    RelaySignatureMissing,
    /// The Kong relay: an `X-Kong-Signature` that no relay secret produces (401).
    #[error("the relayed event's signature is wrong")]
    RelaySignatureWrong,
    /// The Kong relay with no relay secret and unsigned events not allowed: it takes nothing
    /// (401), rather than taking anything.
    #[error("no relay secret is configured")]
    RelayNotConfigured,
    /// `POST /events`: the `Idempotency-Key` was first used with a different body (422).
    #[error("idempotency key reused with a different body")]
    IdempotencyKeyReused,
    /// `POST /events`: the first request with this `Idempotency-Key` is still queuing its event
    /// (409, retry later).
    #[error("idempotency key in use by a request in progress")]
    IdempotencyKeyInProgress,
    /// `POST /events` with an `Idempotency-Key` on a deployment without an idempotency store
    /// (501): refused rather than ignored, since ignoring it could queue the event twice.
    #[error("idempotency keys are not supported by this deployment")]
    IdempotencyUnsupported,
    /// An Apigee Edge route's error, in Edge's shape `{"code","message"}` (spec §12).
    #[error("{message}")]
    Edge {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    /// A retry of a delivery whose event the log keeps only as a capped copy (too large to
    /// store whole): 409, nothing queued.
    #[error("delivery {delivery} keeps only a capped copy of its {size}-byte event")]
    EventNotKept { delivery: uuid::Uuid, size: u64 },
    /// A replay on a disabled hook: 409, nothing queued (its deliveries would only be
    /// dead-lettered).
    #[error("event hook {0} is disabled")]
    HookDisabled(uuid::Uuid),
    /// A dependency (the hook store, the idempotency store, the events queue, the delivery log,
    /// the monetization store) is throttling or unavailable for now: logged, answered with 503
    /// and `Retry-After` (spec §2), since the same request may succeed later.
    #[error("a dependency is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Anything unexpected: logged, answered with a bare 500.
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// An unexpected failure (500), unless a transient failure of a dependency is anywhere in
    /// its chain of causes ([`StoreError::Unavailable`], [`QueueError::Unavailable`]): that is a
    /// 503 with `Retry-After` ([`ApiError::Unavailable`]).
    pub fn internal(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ApiError {
        let err = err.into();
        let mut link: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
        while let Some(cause) = link {
            let transient = cause
                .downcast_ref::<StoreError>()
                .is_some_and(StoreError::is_transient)
                || cause
                    .downcast_ref::<QueueError>()
                    .is_some_and(QueueError::is_transient);
            if transient {
                return ApiError::Unavailable(err);
            }
            link = cause.source();
        }
        ApiError::Internal(err)
    }

    /// An Edge-style error with this status, code and message.
    pub fn edge(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Edge {
            status,
            code,
            message: message.into(),
        }
    }

    /// The same failure in Edge's shape, for the Apigee routes: the status is kept, the message
    /// is Kong's (the cause of a 500 is logged, never shown).
    pub(crate) fn into_edge(self) -> ApiError {
        if let ApiError::Edge { .. } = self {
            return self;
        }
        match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, source = ?cause.source(), "Apigee route failed");
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "Apigee route failed: a dependency is unavailable");
            }
            _ => {}
        }
        let (status, body) = self.status_and_body();
        let code = match status {
            StatusCode::UNAUTHORIZED => "security.authentication.failed",
            StatusCode::NOT_FOUND => "mint.resourceDoesNotExist",
            StatusCode::INTERNAL_SERVER_ERROR => "mint.internalError",
            StatusCode::SERVICE_UNAVAILABLE => "mint.serviceUnavailable",
            _ => "mint.invalidRequest",
        };
        let message = body["message"]
            .as_str()
            .unwrap_or("request failed")
            .to_string();
        ApiError::edge(status, code, message)
    }

    fn status_and_body(&self) -> (StatusCode, Value) {
        let message = |status: StatusCode, text: &str| (status, json!({ "message": text }));
        match self {
            ApiError::NotFound => message(StatusCode::NOT_FOUND, "Not found"),
            ApiError::MethodNotAllowed => {
                message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
            }
            ApiError::UnsupportedMediaType => message(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Content-Type: send application/json, \
                 application/x-www-form-urlencoded or multipart/form-data",
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({
                    "message": format!(
                        "Request body too large: the limit is {} MiB",
                        MAX_BODY_BYTES / (1024 * 1024)
                    )
                }),
            ),
            ApiError::BadJson => message(StatusCode::BAD_REQUEST, "Cannot parse JSON body"),
            ApiError::BadRequest(text) => message(StatusCode::BAD_REQUEST, text),
            ApiError::Body(problem) => message(StatusCode::BAD_REQUEST, &problem.to_string()),
            ApiError::Schema(violation) => (
                StatusCode::BAD_REQUEST,
                json!({
                    "code": code::SCHEMA_VIOLATION,
                    "name": "schema violation",
                    "message": violation.message(),
                    "fields": violation.fields(),
                }),
            ),
            ApiError::InvalidPrimaryKey => (
                StatusCode::BAD_REQUEST,
                json!({
                    "code": code::INVALID_PRIMARY_KEY,
                    "name": "invalid primary key",
                    "message": "invalid primary key: '{id=\"expected a valid UUID\"}'",
                    "fields": { "id": "expected a valid UUID" },
                }),
            ),
            ApiError::PrimaryKeyViolation(id) => (
                StatusCode::CONFLICT,
                json!({
                    "code": code::PRIMARY_KEY_VIOLATION,
                    "name": "primary key violation",
                    "message": format!("primary key violation on key '{{id=\"{id}\"}}'"),
                    "fields": { "id": id },
                }),
            ),
            ApiError::UniqueViolation(name) => (
                StatusCode::CONFLICT,
                json!({
                    "code": code::UNIQUE_VIOLATION,
                    "name": "unique constraint violation",
                    "message": format!("UNIQUE violation detected on '{{name=\"{name}\"}}'"),
                    "fields": { "name": name },
                }),
            ),
            ApiError::InvalidSize(text) => (
                StatusCode::BAD_REQUEST,
                json!({ "code": code::INVALID_SIZE, "name": "invalid size", "message": text }),
            ),
            ApiError::InvalidOffset { offset, reason } => (
                StatusCode::BAD_REQUEST,
                json!({
                    "code": code::INVALID_OFFSET,
                    "name": "invalid offset",
                    "message": format!("'{offset}' is not a valid offset: {reason}"),
                }),
            ),
            ApiError::BadGateway(text) => message(StatusCode::BAD_GATEWAY, text),
            ApiError::MissingCredentials => message(
                StatusCode::UNAUTHORIZED,
                "Invalid credentials. Token or User credentials required",
            ),
            ApiError::WrongCredentials => {
                message(StatusCode::UNAUTHORIZED, "Invalid RBAC credentials")
            }
            ApiError::CredentialsUnavailable(_) => message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Credentials cannot be checked right now: retry later",
            ),
            ApiError::ChangeNotEmitted { hook_id, .. } => message(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "The change to event hook {hook_id} is stored, but its events could not be \
                     queued and will not be delivered"
                ),
            ),
            ApiError::RelaySignatureMissing => message(
                StatusCode::UNAUTHORIZED,
                "Missing X-Kong-Signature: set config.secret of the Kong event hook to a relay \
                 secret of this service",
            ),
            ApiError::RelaySignatureWrong => message(
                StatusCode::UNAUTHORIZED,
                "Invalid X-Kong-Signature: the body is not signed by any relay secret of this \
                 service",
            ),
            ApiError::RelayNotConfigured => message(
                StatusCode::UNAUTHORIZED,
                "The Kong relay is not configured: no relay secret is set and unsigned events \
                 are not allowed",
            ),
            ApiError::IdempotencyKeyReused => message(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Idempotency-Key reused with a different body",
            ),
            ApiError::EventNotKept { delivery, size } => message(
                StatusCode::CONFLICT,
                &format!(
                    "delivery {delivery} cannot be sent again: its event ({size} bytes) was \
                     over the {} bytes the delivery log keeps, which holds only its start \
                     (event_truncated); send the event again with POST /events",
                    crate::limits::MAX_LOGGED_EVENT_BYTES
                ),
            ),
            ApiError::HookDisabled(hook_id) => message(
                StatusCode::CONFLICT,
                &format!(
                    "event hook {hook_id} is disabled: enable it (PATCH enabled=true) before \
                     replaying its deliveries"
                ),
            ),
            ApiError::IdempotencyKeyInProgress => message(
                StatusCode::CONFLICT,
                "A request with this Idempotency-Key is still being processed: retry later",
            ),
            ApiError::IdempotencyUnsupported => message(
                StatusCode::NOT_IMPLEMENTED,
                "Idempotency-Key is not supported by this deployment",
            ),
            ApiError::Edge {
                status,
                code,
                message,
            } => (*status, json!({ "code": code, "message": message })),
            ApiError::Unavailable(_) => message(
                StatusCode::SERVICE_UNAVAILABLE,
                "A service this request needs is busy or unavailable: retry later",
            ),
            ApiError::Internal(_) => message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "An unexpected error occurred",
            ),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            StoreError::NameTaken(name) => ApiError::UniqueViolation(name),
            unavailable @ StoreError::Unavailable(_) => ApiError::Unavailable(unavailable.into()),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Internal(cause) => {
                tracing::error!(error = %cause, source = ?cause.source(), "admin API request failed");
            }
            ApiError::ChangeNotEmitted { hook_id, source } => {
                tracing::error!(error = %source, %hook_id, "could not queue the events of a stored hook change");
            }
            ApiError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "admin API request failed: a dependency is unavailable");
            }
            _ => {}
        }
        let (status, body) = self.status_and_body();
        // A 503 that the same request may cure later says when to try again (not a stored
        // change whose events were lost: sending it again is the caller's decision); so does
        // the 409 of a key whose first request is still running (or died, until its lease ends).
        let retry = (status == StatusCode::SERVICE_UNAVAILABLE
            && !matches!(self, ApiError::ChangeNotEmitted { .. }))
            || matches!(self, ApiError::IdempotencyKeyInProgress);
        let mut response = (status, Json(body)).into_response();
        if retry {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

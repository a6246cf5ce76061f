//! Optional token authentication: with an admin token configured, every request must carry it in
//! `Kong-Admin-Token`, compared in constant time.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{error::ApiError, AdminSettings};
use std::sync::Arc;

/// The header Kong Enterprise's RBAC reads.
pub const TOKEN_HEADER: &str = "kong-admin-token";

pub async fn require_admin_token(
    State(settings): State<Arc<AdminSettings>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(expected) = &settings.admin_token {
        match request.headers().get(TOKEN_HEADER) {
            None => return ApiError::MissingCredentials.into_response(),
            Some(given) if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) => {
                return ApiError::WrongCredentials.into_response()
            }
            Some(_) => {}
        }
    }
    next.run(request).await
}

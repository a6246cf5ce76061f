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
    if super::apigee::is_edge_path(request.uri().path()) {
        // Edge's `-u email:password`: the password is the admin token (spec §12).
        if let Some(expected) = &settings.admin_token {
            let token = request.headers().get(TOKEN_HEADER).map(|v| v.as_bytes());
            let basic = super::apigee::basic_credentials(request.headers());
            let given = token.or(basic.as_ref().map(|(_, password)| password.as_bytes()));
            let denied = match given {
                None => {
                    Some("Authentication required: use HTTP Basic with the admin token as password")
                }
                Some(given) if !bool::from(given.ct_eq(expected.as_bytes())) => {
                    Some("Invalid credentials")
                }
                Some(_) => None,
            };
            if let Some(message) = denied {
                return ApiError::edge(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "security.authentication.failed",
                    message,
                )
                .into_response();
            }
        }
        return next.run(request).await;
    }
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

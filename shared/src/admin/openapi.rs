//! `GET /openapi.json`: the OpenAPI 3.1 description of the whole HTTP API, kept in
//! `shared/openapi.json` and embedded at build time. An integration test checks it against the
//! router in both directions, so a route cannot be added or removed without it.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as checked in.
const DOCUMENT: &str = include_str!("../../openapi.json");

/// `GET /openapi.json`
pub(super) async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

//! `GET /openapi.json`: the OpenAPI 3.1 description of the whole HTTP API, kept in
//! `shared/openapi.json` and embedded at build time. An integration test checks it against the
//! router in both directions, so a route cannot be added or removed without it.
//!
//! `GET /hooks-file.schema.json` beside it: the JSON Schema of the hooks file that
//! `event-hooks apply` reads, so that editors can check a file against the service it targets.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as checked in.
const DOCUMENT: &str = include_str!("../../openapi.json");

/// The hooks file's schema, as checked in.
const HOOKS_FILE_SCHEMA: &str = include_str!("../../hooks-file.schema.json");

/// `GET /openapi.json`
pub(super) async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

/// `GET /hooks-file.schema.json`
pub(super) async fn hooks_file_schema() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/schema+json")],
        HOOKS_FILE_SCHEMA,
    )
}

//! Kong's `/event-hooks` admin API as an axum [`Router`] (spec §2), served unchanged by the admin
//! Lambda function (through `lambda_http`) and by the local server.

mod auth;
mod body;
mod deliveries;
mod error;
mod events;
mod hooks;
mod sources;

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};
use axum::Router;

pub use body::{Input, MAX_BODY_BYTES};
pub use error::ApiError;

use crate::deliveries::DeliveryLog;
use crate::events::{hook_change_events, Operation};
use crate::lua::LuaPolicy;
use crate::model::Hook;
use crate::queue::{Outgoing, Queue};
use crate::snapshot::SnapshotCache;
use crate::store::HookStore;

/// Deployment settings of the admin API.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// When set, every request needs it in the `Kong-Admin-Token` header.
    pub admin_token: Option<String>,
    /// Whether lambda hooks are accepted, and the sandbox limits used to check them.
    pub lua: LuaPolicy,
}

/// What the admin API handlers share: the store, the events queue, the cached catalogue, the
/// settings.
#[derive(Clone)]
pub struct AdminState {
    store: Arc<dyn HookStore>,
    events: Arc<dyn Queue>,
    snapshot: Arc<SnapshotCache>,
    delivery_log: Arc<dyn DeliveryLog>,
    retries: Arc<dyn Queue>,
    settings: Arc<AdminSettings>,
}

/// The ports of the admin API.
pub struct AdminPorts {
    pub store: Arc<dyn HookStore>,
    /// Where the `crud` events of hook changes and `POST /events` go.
    pub events: Arc<dyn Queue>,
    /// Read by `POST /events` to check events against the catalogue; invalidated on every
    /// change made here (in the local server the dispatcher shares it).
    pub snapshot: Arc<SnapshotCache>,
    /// Read by `GET /event-hooks/{id}/deliveries`.
    pub delivery_log: Arc<dyn DeliveryLog>,
    /// Where `POST …/deliveries/{delivery}/retry` puts a delivery to send again.
    pub retries: Arc<dyn Queue>,
}

impl AdminState {
    pub fn new(ports: AdminPorts, settings: AdminSettings) -> AdminState {
        AdminState {
            store: ports.store,
            events: ports.events,
            snapshot: ports.snapshot,
            delivery_log: ports.delivery_log,
            retries: ports.retries,
            settings: Arc::new(settings),
        }
    }

    /// Puts the `crud` and `dao:crud` events of a hook change on the events queue.
    ///
    /// The change itself is already stored, so a queue failure is logged loudly rather than
    /// reported as a failed request.
    async fn emit_change(&self, operation: Operation, entity: &Hook, old: Option<&Hook>) {
        self.snapshot.invalidate();
        let messages = hook_change_events(operation, entity, old)
            .iter()
            .filter_map(|event| serde_json::to_string(event).ok())
            .map(Outgoing::now)
            .collect();
        if let Err(err) = self.events.send_batch(messages).await {
            tracing::error!(
                error = %err,
                hook_id = %entity.id,
                operation = operation.as_str(),
                "could not emit the crud events of a hook change"
            );
        }
    }
}

/// The admin API router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route(
            "/event-hooks",
            with_options(
                get(hooks::list).post(hooks::create),
                "GET, HEAD, POST, OPTIONS",
            ),
        )
        .route(
            "/events",
            with_options(axum::routing::post(events::emit), "POST, OPTIONS"),
        )
        .route(
            "/event-hooks/sources",
            with_options(get(sources::list_all), "GET, HEAD, OPTIONS"),
        )
        .route(
            "/event-hooks/sources/{source}",
            with_options(get(sources::list_source), "GET, HEAD, OPTIONS"),
        )
        .route(
            "/event-hooks/sources/{source}/{event}",
            with_options(
                get(sources::get_event)
                    .put(sources::put_event)
                    .delete(sources::delete_event),
                "GET, HEAD, PUT, DELETE, OPTIONS",
            ),
        )
        .route(
            "/event-hooks/{id}",
            with_options(
                get(hooks::read)
                    .patch(hooks::update)
                    .put(hooks::upsert)
                    .delete(hooks::remove),
                "GET, HEAD, PATCH, PUT, DELETE, OPTIONS",
            ),
        )
        .route(
            "/event-hooks/{id}/deliveries",
            with_options(get(deliveries::list), "GET, HEAD, OPTIONS"),
        )
        .route(
            "/event-hooks/{id}/deliveries/{delivery}/retry",
            with_options(axum::routing::post(deliveries::retry), "POST, OPTIONS"),
        )
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin_token,
        ))
        .with_state(state)
}

/// Adds an `OPTIONS` answer listing the route's methods.
fn with_options(route: MethodRouter<AdminState>, allow: &'static str) -> MethodRouter<AdminState> {
    route.options(move || async move {
        (
            StatusCode::NO_CONTENT,
            [
                (header::ALLOW, HeaderValue::from_static(allow)),
                (
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static(allow),
                ),
            ],
        )
            .into_response()
    })
}

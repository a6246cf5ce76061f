//! Kong's `/event-hooks` admin API as an axum [`Router`] (spec §2), served unchanged by the admin
//! Lambda function (through `lambda_http`) and by the local server.

mod auth;
mod body;
mod deliveries;
mod error;
mod events;
mod hooks;
mod openapi;
mod probe;
mod query;
mod sources;

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, MethodRouter};
use axum::Router;

pub use body::{Input, MAX_BODY_BYTES};
pub use error::ApiError;
pub use probe::ProbeState;

use crate::deliveries::DeliveryLog;
use crate::dispatch::{Delivery, Executor};
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
    /// The executor of the same process, if any: its cached code of a hook is dropped when the
    /// hook changes or goes.
    executor: Option<Arc<Executor>>,
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
            executor: None,
        }
    }

    /// Tells `executor` (which runs hooks in this same process) of every hook change, so that it
    /// never keeps the compiled code of a deleted or replaced hook.
    pub fn with_executor(mut self, executor: Arc<Executor>) -> AdminState {
        self.executor = Some(executor);
        self
    }

    /// Puts the `crud` and `dao:crud` events of a hook change on the events queue.
    ///
    /// The change itself is already stored, so a queue failure is logged loudly rather than
    /// reported as a failed request.
    async fn emit_change(&self, operation: Operation, entity: &Hook, old: Option<&Hook>) {
        self.snapshot.invalidate();
        if let Some(executor) = &self.executor {
            executor.forget(entity.id);
        }
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
        if let Some(ping) = change_ping(operation, entity) {
            let body = serde_json::to_string(&ping).unwrap_or_default();
            if let Err(err) = self.retries.send(Outgoing::now(body)).await {
                tracing::error!(error = %err, hook_id = %entity.id, "could not queue the ping of a hook change");
            }
        }
    }
}

/// The ping a `webhook` hook gets when it is created, updated or deleted (spec §7), as a delivery
/// that carries the hook itself, so that a deleted hook is still told.
fn change_ping(operation: Operation, hook: &Hook) -> Option<Delivery> {
    if !matches!(hook.handler, crate::model::Handler::Webhook(_)) {
        return None;
    }
    let body = probe::ping_body(hook, Some(operation.as_str()));
    let event = crate::events::Event {
        id: uuid::Uuid::new_v4(),
        source: "kong:event_hooks".into(),
        event: "ping".into(),
        data: serde_json::json!({
            "operation": operation.as_str(),
            "event_hooks": body["event_hooks"],
        }),
        timestamp: crate::events::now_millis(),
    };
    let mut delivery = Delivery::new(&event, hook.id);
    delivery.hook = Some(Hook {
        enabled: true,
        ..hook.clone()
    });
    Some(delivery)
}

/// The admin API router (everything but test and ping).
pub fn router(state: AdminState) -> Router {
    let settings = state.settings.clone();
    finish(admin_routes(state), settings)
}

/// The router of the test/ping function: `POST /event-hooks/{id}/test`, `GET …/ping`.
pub fn probe_router(state: ProbeState) -> Router {
    let settings = state.settings.clone();
    finish(probe::routes(state), settings)
}

/// Every route on one router, as the local server serves them.
pub fn full_router(admin: AdminState, probe: ProbeState) -> Router {
    let settings = admin.settings.clone();
    finish(admin_routes(admin).merge(probe::routes(probe)), settings)
}

/// Kong's answers for unknown paths and methods, and token auth in front of everything.
fn finish(routes: Router, settings: Arc<AdminSettings>) -> Router {
    routes
        .fallback(|| async { ApiError::NotFound })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            settings,
            auth::require_admin_token,
        ))
}

fn admin_routes(state: AdminState) -> Router {
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
        .route("/openapi.json", get(openapi::document))
        .with_state(state)
}

/// Adds an `OPTIONS` answer listing the route's methods.
fn with_options<S: Clone + Send + Sync + 'static>(
    route: MethodRouter<S>,
    allow: &'static str,
) -> MethodRouter<S> {
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

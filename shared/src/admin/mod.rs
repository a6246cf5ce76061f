//! Kong's `/event-hooks` admin API as an axum [`Router`] (spec §2), served unchanged by the admin
//! Lambda function (through `lambda_http`) and by the local server.

mod apigee;
mod auth;
pub use auth::{AdminAuth, SignedCheck, StaticToken, TokenCheck, TokenError, TokenSource};
mod body;
mod console;
mod cors;
pub use cors::CorsOrigins;
mod delivery_log;
mod error;
mod events;
mod hooks;
mod openapi;
mod probe;
mod query;
mod relay;
pub use relay::{secret_lines as relay_secret_lines, RelaySettings};
pub mod routes;
mod secret;
mod sources;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::MethodRouter;
use axum::Router;

pub use auth::require_admin_token;
pub use body::{Input, MAX_BODY_BYTES};
pub use error::ApiError;
pub use probe::ProbeState;
use routes::{Handlers, Route, ROUTES};
pub use stats::DeadLetterCount;

use crate::apigee::MonetizationStore;
use crate::delivery_log::DeliveryLog;
use crate::dispatch::{Delivery, Executor};
use crate::events::{hook_change_events, Operation};
use crate::idempotency::IdempotencyStore;
use crate::lua::LuaPolicy;
use crate::model::Hook;
use crate::queue::{Outgoing, Queue, QueueError};
use crate::snapshot::SnapshotCache;
use crate::store::HookStore;

/// Deployment settings of the admin API.
#[derive(Debug, Clone, Default)]
pub struct AdminSettings {
    /// Who may call: [`AdminAuth::Token`] needs the token in the `Kong-Admin-Token` header.
    pub auth: AdminAuth,
    /// Whether lambda hooks are accepted, and the sandbox limits used to check them.
    pub lua: LuaPolicy,
    /// The origins whose web pages may call the API (CORS); none by default.
    pub cors: CorsOrigins,
    /// Who may post to the Kong relay (`POST /events/kong`); by default nobody.
    pub relay: RelaySettings,
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
    /// Where `POST /events` claims `Idempotency-Key`s; without it such requests get 501.
    idempotency: Option<Arc<dyn IdempotencyStore>>,
    /// Notification conditions of the Apigee routes; without it they answer 501.
    monetization: Option<Arc<dyn MonetizationStore>>,
    /// Counted by `GET /event-hooks/stats` when the process can see its dead-letter queues.
    dead_letters: Option<Arc<dyn DeadLetterCount>>,
    /// The dispatcher of the same process, if any: `GET /event-hooks/{id}` shows the hook's lane
    /// in it (slots in use, pace, circuit).
    lanes: Option<Arc<dyn LaneReader>>,
}

/// Reads the state of a hook's lane in a dispatcher (see `dispatch::lanes`).
pub trait LaneReader: Send + Sync {
    fn lane(&self, hook_id: uuid::Uuid) -> Option<crate::dispatch::LaneView>;
}

impl LaneReader for crate::dispatch::Dispatcher {
    fn lane(&self, hook_id: uuid::Uuid) -> Option<crate::dispatch::LaneView> {
        crate::dispatch::Dispatcher::lane(self, hook_id)
    }
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
            idempotency: None,
            monetization: None,
            dead_letters: None,
            lanes: None,
        }
    }

    /// Serves Apigee Edge's notification conditions from `store` (spec §12).
    pub fn with_monetization(mut self, store: Arc<dyn MonetizationStore>) -> AdminState {
        self.monetization = Some(store);
        self
    }

    /// Makes `POST /events` honour `Idempotency-Key` with `store` (spec §8).
    pub fn with_idempotency(mut self, store: Arc<dyn IdempotencyStore>) -> AdminState {
        self.idempotency = Some(store);
        self
    }

    /// Makes `GET /event-hooks/stats` report how many dead letters wait, counted by `count`.
    /// Shows each hook's lane in `dispatcher` (same process) on `GET /event-hooks/{id}`.
    pub fn with_lanes(mut self, dispatcher: Arc<dyn LaneReader>) -> AdminState {
        self.lanes = Some(dispatcher);
        self
    }

    pub fn with_dead_letter_count(mut self, count: Arc<dyn DeadLetterCount>) -> AdminState {
        self.dead_letters = Some(count);
        self
    }

    /// Tells `executor` (which runs hooks in this same process) of every hook change, so that it
    /// never keeps the compiled code of a deleted or replaced hook.
    pub fn with_executor(mut self, executor: Arc<Executor>) -> AdminState {
        self.executor = Some(executor);
        self
    }

    /// Puts the `crud` and `dao:crud` events of a hook change on the events queue, and the
    /// change's ping on the deliveries queue.
    ///
    /// The change itself is already stored. A send that fails is tried again briefly; if it
    /// still fails the request fails with [`ApiError::ChangeNotEmitted`] (503), which says the
    /// change is stored: dropping the events behind a success would hide the loss.
    async fn emit_change(
        &self,
        operation: Operation,
        entity: &Hook,
        old: Option<&Hook>,
    ) -> Result<(), ApiError> {
        self.snapshot.invalidate();
        if let Some(executor) = &self.executor {
            executor.forget(entity.id);
        }
        let messages: Vec<Outgoing> = hook_change_events(operation, entity, old)
            .iter()
            .filter_map(|event| serde_json::to_string(event).ok())
            .map(Outgoing::now)
            .collect();
        // Resending whole is safe: the events keep their ids, so a batch that was half sent
        // gives the same delivery ids again, which receivers can de-duplicate.
        let events = with_retries(|| self.events.send_batch(messages.clone())).await;
        // The ping goes out even when the events did not: they are independent.
        let ping = match change_ping(operation, entity) {
            Some(ping) => {
                let body = serde_json::to_string(&ping).unwrap_or_default();
                with_retries(|| self.retries.send(Outgoing::now(body.clone()))).await
            }
            None => Ok(String::new()),
        };
        events
            .and(ping)
            .map(|_| ())
            .map_err(|source| ApiError::ChangeNotEmitted {
                hook_id: entity.id,
                source,
            })
    }
}

/// Sends of a hook change's messages before the request gives up.
const EMIT_ATTEMPTS: u32 = 3;
/// Pause before the second send of a hook change's messages; doubled before each next one.
const EMIT_BACKOFF: Duration = Duration::from_millis(100);

/// Runs `send` until it succeeds, at most [`EMIT_ATTEMPTS`] times: a queue that hiccups for a
/// moment should not fail the request.
async fn with_retries<T, F, Fut>(mut send: F) -> Result<T, QueueError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, QueueError>>,
{
    let mut pause = EMIT_BACKOFF;
    let mut attempt = 1;
    loop {
        match send().await {
            Ok(sent) => return Ok(sent),
            Err(err) if attempt >= EMIT_ATTEMPTS => return Err(err),
            Err(err) => {
                tracing::warn!(error = %err, attempt, "could not queue the messages of a hook change; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
        }
    }
}

/// The ping a `webhook` hook gets when it is created, updated or deleted (spec §7), as a delivery
/// that carries the hook itself, so that a deleted hook is still told.
fn change_ping(operation: Operation, hook: &Hook) -> Option<Delivery> {
    // An Apigee webhook's callback handler expects Edge's notifications only (spec §12).
    if !matches!(hook.handler, crate::model::Handler::Webhook(_))
        || crate::apigee::webhook::is_edge_webhook(hook).is_some()
    {
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

/// The admin function's router: the admin API behind the token check, the Kong relay behind
/// its signature check, and the web console.
pub fn router(state: AdminState) -> Router {
    let settings = state.settings.clone();
    let relay = relay_routes(state.clone());
    finish(admin_routes(state), settings)
        .merge(relay)
        .merge(console_routes())
}

/// The probe function's router: test, ping and preview.
pub fn probe_router(state: ProbeState) -> Router {
    let settings = state.settings.clone();
    finish(probe_routes(state), settings)
}

/// Every route on one router, as the local server serves them, and the web console.
pub fn full_router(admin: AdminState, probe: ProbeState) -> Router {
    let settings = admin.settings.clone();
    let relay = relay_routes(admin.clone());
    let routes = admin_routes(admin).merge(probe_routes(probe));
    finish(routes, settings)
        .merge(relay)
        .merge(console_routes())
}

/// The Kong relay's routes, outside the token check (the signature is their authentication),
/// with Kong's 405 and `Cache-Control: no-store` as everywhere; no CORS: Kong is no browser.
fn relay_routes(state: AdminState) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |router, route| match route.handlers {
            Handlers::Relay(handlers) => serve(router, route, handlers),
            _ => router,
        })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .with_state(state)
        .layer(axum::middleware::map_response(no_store))
}

/// The routes of [`ROUTES`] the admin function serves behind the token check.
fn admin_routes(state: AdminState) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |router, route| match route.handlers {
            Handlers::Admin(handlers) => serve(router, route, handlers),
            _ => router,
        })
        .with_state(state)
}

/// The routes of [`ROUTES`] the probe function serves.
fn probe_routes(state: ProbeState) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |router, route| match route.handlers {
            Handlers::Probe(handlers) => serve(router, route, handlers),
            _ => router,
        })
        .with_state(state)
}

/// The console's routes, outside the token check: the page must load before sign-in, and it
/// holds no data.
fn console_routes() -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |router, route| match route.handlers {
            Handlers::Console(handlers) => serve(router, route, handlers),
            _ => router,
        })
}

/// Adds `route` to `router`: its handlers and its `OPTIONS` answer.
fn serve<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    route: &Route,
    handlers: fn() -> MethodRouter<S>,
) -> Router<S> {
    router.route(route.path, with_options(handlers(), route.allow()))
}

/// Marks an answer of the admin API as never to be stored by a browser or a proxy: answers
/// carry hooks with their secrets.
pub async fn no_store(mut response: axum::response::Response) -> axum::response::Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Kong's answers for unknown paths and methods, token auth in front of everything, CORS
/// (whose preflights come before auth) in front of that, and `Cache-Control: no-store` on every
/// answer.
fn finish(routes: Router, settings: Arc<AdminSettings>) -> Router {
    let routes = routes
        .fallback(|uri: axum::http::Uri| async move {
            if apigee::is_edge_path(uri.path()) {
                ApiError::NotFound.into_edge()
            } else {
                ApiError::NotFound
            }
        })
        .method_not_allowed_fallback(|uri: axum::http::Uri| async move {
            if apigee::is_edge_path(uri.path()) {
                ApiError::MethodNotAllowed.into_edge()
            } else {
                ApiError::MethodNotAllowed
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            settings.clone(),
            auth::require_admin_token,
        ));
    cors::apply(routes, &settings.cors).layer(axum::middleware::map_response(no_store))
}

/// Adds Kong's `OPTIONS` answer: `allow`, the route's methods, in `Allow` and
/// `Access-Control-Allow-Methods`.
fn with_options<S: Clone + Send + Sync + 'static>(
    route: MethodRouter<S>,
    allow: String,
) -> MethodRouter<S> {
    let allow = HeaderValue::from_str(&allow).expect("method names are header values");
    route.options(move || async move {
        (
            StatusCode::NO_CONTENT,
            [
                (header::ALLOW, allow.clone()),
                (header::ACCESS_CONTROL_ALLOW_METHODS, allow),
            ],
        )
            .into_response()
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;
    use axum::response::IntoResponse;

    use super::*;
    use crate::delivery_log::sqlite::SqliteDeliveryLog;
    use crate::model::{Handler, WebhookConfig};
    use crate::queue::sqlite::SqliteQueue;
    use crate::queue::{DeadLetterReason, Received};
    use crate::sqlite::Database;
    use crate::store::sqlite::SqliteHookStore;

    /// A queue whose sends fail the first `failures` times, then go to `inner`.
    pub(super) struct Flaky {
        failures: u32,
        sends: AtomicU32,
        pub(super) inner: SqliteQueue,
    }

    impl Flaky {
        fn fail(&self) -> Result<(), QueueError> {
            if self.sends.fetch_add(1, Ordering::SeqCst) < self.failures {
                return Err(QueueError::backend("queue down"));
            }
            Ok(())
        }
    }

    #[async_trait]
    impl Queue for Flaky {
        async fn send(&self, message: Outgoing) -> Result<String, QueueError> {
            self.fail()?;
            self.inner.send(message).await
        }
        async fn send_batch(&self, messages: Vec<Outgoing>) -> Result<Vec<String>, QueueError> {
            self.fail()?;
            self.inner.send_batch(messages).await
        }
        async fn receive(
            &self,
            max: u32,
            visibility: Duration,
            wait: Duration,
        ) -> Result<Vec<Received>, QueueError> {
            self.inner.receive(max, visibility, wait).await
        }
        async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
            self.inner.delete(receipt).await
        }
        async fn dead_letter(
            &self,
            message: &Received,
            reason: &DeadLetterReason,
        ) -> Result<(), QueueError> {
            self.inner.dead_letter(message, reason).await
        }
    }

    pub(super) async fn flaky(failures: u32) -> Arc<Flaky> {
        let db = Database::in_memory().unwrap();
        Arc::new(Flaky {
            failures,
            sends: AtomicU32::new(0),
            inner: SqliteQueue::open(db, "q").await.unwrap(),
        })
    }

    pub(super) async fn state(events: Arc<Flaky>, retries: Arc<Flaky>) -> AdminState {
        let store: Arc<dyn HookStore> = Arc::new(
            SqliteHookStore::new(Database::in_memory().unwrap())
                .await
                .unwrap(),
        );
        let ports = AdminPorts {
            snapshot: Arc::new(SnapshotCache::new(store.clone(), Duration::from_secs(5))),
            store,
            events,
            delivery_log: Arc::new(
                SqliteDeliveryLog::new(Database::in_memory().unwrap())
                    .await
                    .unwrap(),
            ),
            retries,
        };
        AdminState::new(ports, AdminSettings::default())
    }

    fn webhook() -> Hook {
        Hook {
            id: uuid::Uuid::from_u128(7),
            created_at: 1,
            updated_at: 1,
            source: "crud".into(),
            event: None,
            handler: Handler::Webhook(WebhookConfig {
                url: "https://a.test".into(),
                headers: BTreeMap::new(),
                secret: None,
                ssl_verify: false,
                signature: Default::default(),
                previous_secret: None,
            }),
            snooze: None,
            on_change: None,
            enabled: true,
            name: None,
            tags: vec![],
            delivery: Default::default(),
            disabled_reason: None,
            failing_since: None,
            max_rate: None,
        }
    }

    #[tokio::test]
    async fn a_queue_that_hiccups_is_retried() {
        let (events, retries) = (flaky(EMIT_ATTEMPTS - 1).await, flaky(1).await);
        let state = state(events.clone(), retries.clone()).await;
        state
            .emit_change(Operation::Create, &webhook(), None)
            .await
            .unwrap();
        assert_eq!(events.sends.load(Ordering::SeqCst), EMIT_ATTEMPTS);
        assert_eq!(retries.sends.load(Ordering::SeqCst), 2);
        let queued = events
            .inner
            .receive(10, Duration::from_secs(30), Duration::ZERO)
            .await
            .unwrap();
        assert!(!queued.is_empty(), "the crud events are queued");
    }

    #[tokio::test]
    async fn a_change_whose_events_cannot_be_queued_is_a_503_that_says_it_is_stored() {
        let (events, retries) = (flaky(u32::MAX).await, flaky(0).await);
        let state = state(events.clone(), retries.clone()).await;
        let err = state
            .emit_change(Operation::Create, &webhook(), None)
            .await
            .unwrap_err();
        assert_eq!(events.sends.load(Ordering::SeqCst), EMIT_ATTEMPTS);
        // The ping is independent of the events: it still went out.
        assert_eq!(retries.sends.load(Ordering::SeqCst), 1);
        assert!(matches!(err, ApiError::ChangeNotEmitted { .. }));
        let response = err.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("is stored"), "{message}");
        assert!(message.contains(&webhook().id.to_string()), "{message}");
    }
}

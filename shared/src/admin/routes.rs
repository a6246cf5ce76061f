//! Every route of the HTTP API, declared once: its path, the methods it serves, and which part
//! serves it (the admin function, the probe function, or the console and the Kong relay, which the
//! admin function serves outside the token check).
//!
//! The axum routers, the `Allow` of every `OPTIONS` answer and the split between the admin and the
//! probe function all come from [`ROUTES`]; integration tests hold `shared/openapi.json` and the
//! API Gateway routes of `template.yaml` against it, so a route cannot be served, documented and
//! deployed differently.

use axum::routing::{get, post, MethodRouter};

use super::probe::ProbeState;
use super::AdminState;
use super::{
    apigee, console, delivery_log, events, hooks, openapi, probe, relay, secret, sources, stats,
};

/// Which part of the service answers a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The admin API, behind the token check (the admin function).
    Admin,
    /// Test, ping and preview, which run a hook's handler (the probe function).
    Probe,
    /// The web console's page and files, without a token (the admin function).
    Console,
    /// The Kong relay, authenticated by `X-Kong-Signature` instead of the token (the admin
    /// function): Kong cannot send our token.
    Relay,
}

/// The handlers of one route, for the state of the part that serves it.
#[derive(Clone, Copy)]
pub enum Handlers {
    Admin(fn() -> MethodRouter<AdminState>),
    Probe(fn() -> MethodRouter<ProbeState>),
    Console(fn() -> MethodRouter),
    Relay(fn() -> MethodRouter<AdminState>),
}

/// One path of the API and what it serves.
pub struct Route {
    /// The path as axum and OpenAPI write it: `/event-hooks/{id}`.
    pub path: &'static str,
    /// The methods with a handler, upper case, in the order `Allow` lists them; `HEAD` (with
    /// `GET`) and `OPTIONS` are answered on every route and not listed here.
    pub methods: &'static [&'static str],
    pub handlers: Handlers,
}

impl Route {
    /// Which part serves the route.
    pub fn part(&self) -> Part {
        match self.handlers {
            Handlers::Admin(_) => Part::Admin,
            Handlers::Probe(_) => Part::Probe,
            Handlers::Console(_) => Part::Console,
            Handlers::Relay(_) => Part::Relay,
        }
    }

    /// Whether `shared/openapi.json` describes the route: every route but the console's.
    pub fn documented(&self) -> bool {
        self.part() != Part::Console
    }

    /// Every method the route answers: its own, `HEAD` after `GET`, then `OPTIONS`.
    pub fn allowed(&self) -> Vec<&'static str> {
        let mut allowed = Vec::new();
        for method in self.methods {
            allowed.push(*method);
            if *method == "GET" {
                allowed.push("HEAD");
            }
        }
        allowed.push("OPTIONS");
        allowed
    }

    /// The `Allow` header of the route: `GET, HEAD, POST, OPTIONS`.
    pub fn allow(&self) -> String {
        self.allowed().join(", ")
    }
}

/// Every route, Kong's first, then the console, then Apigee Edge's (spec §12, with and without
/// `/v1`).
pub const ROUTES: &[Route] = &[
    Route {
        path: "/event-hooks",
        methods: &["GET", "POST"],
        handlers: Handlers::Admin(|| get(hooks::list).post(hooks::create)),
    },
    Route {
        path: "/events",
        methods: &["POST"],
        handlers: Handlers::Admin(|| post(events::emit)),
    },
    Route {
        path: "/events/kong",
        methods: &["POST"],
        handlers: Handlers::Relay(|| post(relay::relay)),
    },
    Route {
        path: "/event-hooks/sources",
        methods: &["GET"],
        handlers: Handlers::Admin(|| get(sources::list_all)),
    },
    Route {
        path: "/event-hooks/sources/{source}",
        methods: &["GET"],
        handlers: Handlers::Admin(|| get(sources::list_source)),
    },
    Route {
        path: "/event-hooks/sources/{source}/{event}",
        methods: &["GET", "PUT", "DELETE"],
        handlers: Handlers::Admin(|| {
            get(sources::get_event)
                .put(sources::put_event)
                .delete(sources::delete_event)
        }),
    },
    Route {
        path: "/event-hooks/stats",
        methods: &["GET"],
        handlers: Handlers::Admin(|| get(stats::get)),
    },
    Route {
        path: "/event-hooks/{id}",
        methods: &["GET", "PATCH", "PUT", "DELETE"],
        handlers: Handlers::Admin(|| {
            get(hooks::read)
                .patch(hooks::update)
                .put(hooks::upsert)
                .delete(hooks::remove)
        }),
    },
    Route {
        path: "/event-hooks/{id}/deliveries",
        methods: &["GET"],
        handlers: Handlers::Admin(|| get(delivery_log::list)),
    },
    Route {
        path: "/event-hooks/{id}/deliveries/replay",
        methods: &["POST"],
        handlers: Handlers::Admin(|| post(delivery_log::replay)),
    },
    Route {
        path: "/event-hooks/{id}/deliveries/{delivery}/retry",
        methods: &["POST"],
        handlers: Handlers::Admin(|| post(delivery_log::retry)),
    },
    Route {
        path: "/event-hooks/{id}/secret/rotate",
        methods: &["POST"],
        handlers: Handlers::Admin(|| post(secret::rotate)),
    },
    Route {
        path: "/event-hooks/{id}/test",
        methods: &["POST"],
        handlers: Handlers::Probe(|| post(probe::test)),
    },
    Route {
        path: "/event-hooks/{id}/ping",
        methods: &["GET"],
        handlers: Handlers::Probe(|| get(probe::ping)),
    },
    Route {
        path: "/event-hooks/preview",
        methods: &["POST"],
        handlers: Handlers::Probe(|| post(probe::preview)),
    },
    Route {
        path: "/openapi.json",
        methods: &["GET"],
        handlers: Handlers::Admin(|| get(openapi::document)),
    },
    Route {
        path: "/hooks-file.schema.json",
        methods: &["GET"],
        handlers: Handlers::Admin(|| get(openapi::hooks_file_schema)),
    },
    Route {
        path: "/",
        methods: &["GET"],
        handlers: Handlers::Console(|| get(console::to_entry)),
    },
    Route {
        path: "/console",
        methods: &["GET"],
        handlers: Handlers::Console(|| get(console::to_entry)),
    },
    Route {
        path: console::PREFIX,
        methods: &["GET"],
        handlers: Handlers::Console(|| get(console::index)),
    },
    Route {
        path: "/console/{file}",
        methods: &["GET"],
        handlers: Handlers::Console(|| get(console::file)),
    },
    Route {
        path: "/mint/organizations/{org}/webhooks",
        methods: &["GET", "POST"],
        handlers: Handlers::Admin(edge_webhooks),
    },
    Route {
        path: "/mint/organizations/{org}/webhooks/{id}",
        methods: &["GET", "PUT", "POST", "DELETE"],
        handlers: Handlers::Admin(edge_webhook),
    },
    Route {
        path: "/mint/organizations/{org}/notification-conditions",
        methods: &["GET", "POST"],
        handlers: Handlers::Admin(edge_conditions),
    },
    Route {
        path: "/mint/organizations/{org}/notification-conditions/{id}",
        methods: &["GET", "PUT", "DELETE"],
        handlers: Handlers::Admin(edge_condition),
    },
    Route {
        path: "/v1/mint/organizations/{org}/webhooks",
        methods: &["GET", "POST"],
        handlers: Handlers::Admin(edge_webhooks),
    },
    Route {
        path: "/v1/mint/organizations/{org}/webhooks/{id}",
        methods: &["GET", "PUT", "POST", "DELETE"],
        handlers: Handlers::Admin(edge_webhook),
    },
    Route {
        path: "/v1/mint/organizations/{org}/notification-conditions",
        methods: &["GET", "POST"],
        handlers: Handlers::Admin(edge_conditions),
    },
    Route {
        path: "/v1/mint/organizations/{org}/notification-conditions/{id}",
        methods: &["GET", "PUT", "DELETE"],
        handlers: Handlers::Admin(edge_condition),
    },
];

// Apigee Edge's routes are the same with and without `/v1`.

fn edge_webhooks() -> MethodRouter<AdminState> {
    get(apigee::list_webhooks).post(apigee::create_webhook)
}

fn edge_webhook() -> MethodRouter<AdminState> {
    get(apigee::get_webhook)
        .put(apigee::edit_webhook)
        .post(apigee::enable_webhook)
        .delete(apigee::delete_webhook)
}

fn edge_conditions() -> MethodRouter<AdminState> {
    get(apigee::list_conditions).post(apigee::create_condition)
}

fn edge_condition() -> MethodRouter<AdminState> {
    get(apigee::get_condition)
        .put(apigee::put_condition)
        .delete(apigee::delete_condition)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;
    use crate::admin::tests::{flaky, state};
    use crate::dispatch::Executor;
    use crate::lua::Limits;
    use crate::outbound::http::{HttpSender, HttpSettings};

    const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

    /// `path` with every `{param}` filled in; a custom source, as a built-in event answers PUT
    /// and DELETE with its own 405.
    fn sample(path: &str) -> String {
        path.replace("{id}", &uuid::Uuid::new_v4().to_string())
            .replace("{delivery}", &uuid::Uuid::new_v4().to_string())
            .replace("{source}", "billing")
            .replace("{event}", "paid")
            .replace("{org}", "acme")
            .replace("{file}", "app.js")
    }

    #[test]
    fn paths_are_declared_once_and_methods_are_known() {
        let mut seen = BTreeSet::new();
        for route in ROUTES {
            assert!(seen.insert(route.path), "{} is declared twice", route.path);
            assert!(!route.methods.is_empty(), "{}", route.path);
            for method in route.methods {
                assert!(
                    METHODS.contains(method) && *method != "HEAD",
                    "{method} {}",
                    route.path
                );
            }
        }
        assert_eq!(ROUTES[0].allow(), "GET, HEAD, POST, OPTIONS");
    }

    #[tokio::test]
    async fn every_route_answers_exactly_its_methods_and_its_allow() {
        let admin = state(flaky(0).await, flaky(0).await).await;
        let sender = HttpSender::new(HttpSettings::default()).unwrap();
        let executor = Arc::new(Executor::new(sender, Limits::default()));
        let probe = ProbeState::new(admin.store.clone(), executor, Default::default());
        let router = crate::admin::full_router(admin, probe);
        for route in ROUTES {
            let path = sample(route.path);
            let allowed = route.allowed();
            for method in METHODS {
                let request = Request::builder()
                    .method(*method)
                    .uri(&path)
                    .body(Body::empty())
                    .unwrap();
                let response = router.clone().oneshot(request).await.unwrap();
                assert_eq!(
                    response.status() == StatusCode::METHOD_NOT_ALLOWED,
                    !allowed.contains(method),
                    "{method} {path} answered {}",
                    response.status()
                );
            }
            let request = Request::options(&path).body(Body::empty()).unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::NO_CONTENT, "OPTIONS {path}");
            assert_eq!(response.headers()[header::ALLOW], route.allow(), "{path}");
        }
    }
}

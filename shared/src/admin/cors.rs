//! Cross-origin access to the API from web pages of other origins, only those configured
//! (`CorsAllowedOrigins` in the stack, `--cors-allowed-origins` locally). None by default: the
//! console is served from the API's own origin and needs none.
//!
//! tower-http's [`CorsLayer`] answers the preflight of an allowed origin before the token check
//! (a browser never sends the token on a preflight) and adds `Access-Control-Allow-Origin` to the
//! real answers, errors included. Requests from other origins, and plain `OPTIONS` without
//! `Origin` and `Access-Control-Request-Method`, pass by it untouched: they get no CORS headers,
//! and `OPTIONS` keeps Kong's `Allow` answer.

use std::fmt;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::{Layer, ServiceExt};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

/// How long a browser may reuse a preflight's answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The origins (`scheme://host[:port]`) whose pages may call the API.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CorsOrigins(Vec<HeaderValue>);

impl CorsOrigins {
    /// A comma-separated list of origins, such as `https://a.example,http://localhost:3000`;
    /// empty for none.
    pub fn parse(list: &str) -> Result<CorsOrigins, InvalidOrigin> {
        let mut origins = Vec::new();
        for origin in list.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            origins.push(parse_origin(origin)?);
        }
        Ok(CorsOrigins(origins))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the page of `origin` (an `Origin` header) may call the API.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        self.0.contains(origin)
    }
}

impl fmt::Debug for CorsOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|o| o.to_str().unwrap_or_default()))
            .finish()
    }
}

/// An entry of the allowed origins that is not one, as given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an origin (scheme://host[:port], no path, e.g. https://console.example)")]
pub struct InvalidOrigin(pub String);

/// One origin as a browser sends it: a scheme, a host, maybe a port, nothing else.
fn parse_origin(origin: &str) -> Result<HeaderValue, InvalidOrigin> {
    let invalid = || InvalidOrigin(origin.to_string());
    let url = url::Url::parse(origin).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid());
    }
    // `Url` serializes an origin with a `/` path; the one given must have had none.
    let serialized = url.origin().ascii_serialization();
    if serialized != origin.to_ascii_lowercase() {
        return Err(invalid());
    }
    HeaderValue::from_str(&serialized).map_err(|_| invalid())
}

/// `routes` with CORS for `origins`; unchanged when there are none.
pub(super) fn apply(routes: Router, origins: &CorsOrigins) -> Router {
    if origins.is_empty() {
        return routes;
    }
    let layer = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.0.clone()))
        .allow_methods(AllowMethods::mirror_request())
        .allow_headers(AllowHeaders::mirror_request())
        .max_age(PREFLIGHT_MAX_AGE);
    routes.layer(axum::middleware::from_fn_with_state(
        (origins.clone(), layer),
        cors,
    ))
}

/// The middleware: requests from an allowed origin through [`CorsLayer`], the rest straight on.
async fn cors(
    State((origins, layer)): State<(CorsOrigins, CorsLayer)>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = request
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|origin| origins.allows(origin));
    // tower-http answers every `OPTIONS` as a preflight; a plain one is Kong's to answer.
    let plain_options = request.method() == Method::OPTIONS
        && !request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if !allowed || plain_options {
        return next.run(request).await;
    }
    match layer.layer(next).oneshot(request).await {
        Ok(response) => response.into_response(),
        Err(infallible) => match infallible {},
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::StatusCode;

    use super::*;
    use crate::admin::tests::{flaky, state};
    use crate::admin::{probe_router, router, AdminAuth, AdminSettings, ProbeState};
    use crate::dispatch::Executor;
    use crate::lua::Limits;
    use crate::outbound::http::{HttpSender, HttpSettings};

    fn preflight(path: &str, origin: &str) -> Request {
        Request::options(path)
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn both_functions_answer_allowed_preflights_before_the_token_check() {
        let settings = AdminSettings {
            auth: AdminAuth::fixed("s3cret"),
            cors: CorsOrigins::parse("https://a.example").unwrap(),
            ..AdminSettings::default()
        };
        let mut admin = state(flaky(0).await, flaky(0).await).await;
        admin.settings = Arc::new(settings.clone());
        let sender = HttpSender::new(HttpSettings::default()).unwrap();
        let executor = Arc::new(Executor::new(sender, Limits::default()));
        let probe = ProbeState::new(admin.store.clone(), executor, settings);
        let routers = [
            (router(admin), "/event-hooks"),
            (probe_router(probe), "/event-hooks/preview"),
        ];
        for (router, path) in routers {
            let response = router
                .clone()
                .oneshot(preflight(path, "https://a.example"))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
                "https://a.example"
            );
            let response = router
                .oneshot(preflight(path, "https://b.example"))
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
            assert!(!response
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        }
    }

    #[test]
    fn origins_are_parsed_and_checked() {
        let origins = CorsOrigins::parse(" https://a.example, http://localhost:3000 ,").unwrap();
        assert!(origins.allows(&HeaderValue::from_static("https://a.example")));
        assert!(origins.allows(&HeaderValue::from_static("http://localhost:3000")));
        assert!(!origins.allows(&HeaderValue::from_static("https://b.example")));
        assert!(CorsOrigins::parse("").unwrap().is_empty());
        for bad in [
            "a.example",
            "https://a.example/",
            "https://a.example/x",
            "ftp://a",
            "*",
        ] {
            let err = CorsOrigins::parse(bad).unwrap_err();
            assert_eq!(err, InvalidOrigin(bad.to_string()));
            assert_eq!(
                err.to_string(),
                format!("'{bad}' is not an origin (scheme://host[:port], no path, e.g. https://console.example)")
            );
        }
    }
}

//! Keeps web pages away from the local server (spec §10, first bullet).
//!
//! Without an admin token (the local default) anything that can reach the port can create hooks,
//! and lambda hooks run code. A browser can reach `127.0.0.1`: a page could POST a form to it
//! (CSRF), or point its own host name at it (DNS rebinding) and then read the answers as its own.
//! So the server answers only requests for its own host names, and refuses state-changing
//! requests that a browser marks as cross-site. Requests from curl or scripts carry no `Origin`
//! nor `Sec-Fetch-Site` and pass. This layer belongs to the local server only: the deployed API
//! sits behind API Gateway with its own authentication.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use event_hooks::admin::CorsOrigins;
use serde_json::json;

/// The `Host` values the server answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts {
    /// The port the server listens on: a host allowed without a port is allowed with this one.
    port: u16,
    /// Lower-case host names or IP literals (IPv6 in brackets), each with the one port it is
    /// allowed with, or `None` for "without a port or with ours".
    hosts: Vec<(String, Option<u16>)>,
    /// The origins allowed cross-origin access (`--cors-allowed-origins`): their pages may
    /// change things too.
    cors: CorsOrigins,
}

impl AllowedHosts {
    /// The listen address, `localhost`, `127.0.0.1`, `[::1]`, and each of `extra`
    /// (`name` or `name:port`, as given to `--allowed-hosts`).
    pub fn new(listen: SocketAddr, extra: &[String]) -> AllowedHosts {
        let listen_host = match listen {
            SocketAddr::V4(addr) => addr.ip().to_string(),
            SocketAddr::V6(addr) => format!("[{}]", addr.ip()),
        };
        let mut hosts: Vec<(String, Option<u16>)> = ["localhost", "127.0.0.1", "[::1]"]
            .into_iter()
            .map(String::from)
            .chain([listen_host])
            .map(|host| (host, None))
            .collect();
        hosts.extend(
            extra
                .iter()
                .filter(|entry| !entry.trim().is_empty())
                .filter_map(|entry| split_host(entry)),
        );
        AllowedHosts {
            port: listen.port(),
            hosts,
            cors: CorsOrigins::default(),
        }
    }

    /// Lets the pages of `origins`, which CORS allows, change things as well.
    pub fn with_cors(mut self, origins: CorsOrigins) -> AllowedHosts {
        self.cors = origins;
        self
    }

    /// Whether a request with this `Host` value is for this server.
    pub fn allows(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        self.hosts.iter().any(|(allowed, allowed_port)| {
            *allowed == name
                && match allowed_port {
                    Some(allowed_port) => port == Some(*allowed_port),
                    None => port.is_none_or(|port| port == self.port),
                }
        })
    }
}

/// `name[:port]` in lower case, IPv6 literals kept in brackets; `None` when malformed.
fn split_host(value: &str) -> Option<(String, Option<u16>)> {
    let value = value.trim().to_ascii_lowercase();
    let (name, port) = if value.starts_with('[') {
        let end = value.find(']')?;
        let port = match &value[end + 1..] {
            "" => None,
            rest => Some(rest.strip_prefix(':')?),
        };
        (value[..=end].to_string(), port.map(str::to_string))
    } else {
        match value.split_once(':') {
            Some((name, port)) => (name.to_string(), Some(port.to_string())),
            None => (value.clone(), None),
        }
    };
    if name.is_empty() {
        return None;
    }
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok()?),
        None => None,
    };
    Some((name, port))
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Forbidden: a Host header is required")]
    NoHost,
    /// Holds the start of the `Host` value.
    #[error(
        "Forbidden: this server does not answer to host '{0}'; \
         start it with --allowed-hosts to allow that name"
    )]
    ForeignHost(String),
    #[error("Forbidden: cross-site requests cannot change anything here")]
    CrossSite,
}

/// Checks one request's headers (see the module documentation).
pub fn check(allowed: &AllowedHosts, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
    let host = headers
        .get(header::HOST)
        .ok_or(Refusal::NoHost)?
        .to_str()
        .unwrap_or_default();
    if !allowed.allows(host) {
        return Err(Refusal::ForeignHost(host.chars().take(64).collect()));
    }
    let changes_state = matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let cors_allowed = headers
        .get(header::ORIGIN)
        .is_some_and(|origin| allowed.cors.allows(origin));
    if !changes_state || cors_allowed {
        return Ok(());
    }
    // `none` is the user's own action (typed URL, bookmark); a browser sends it, never a page.
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.to_str(), Ok("same-origin" | "none")) {
            return Err(Refusal::CrossSite);
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        // Our own origin is `<scheme>://<the Host just checked>`; `null` and anything else is
        // another site. The scheme is not compared, so a TLS proxy in front still works.
        let authority = origin
            .to_str()
            .ok()
            .and_then(|origin| {
                origin
                    .strip_prefix("http://")
                    .or_else(|| origin.strip_prefix("https://"))
            })
            .unwrap_or_default();
        if authority.is_empty() || !authority.eq_ignore_ascii_case(host.trim()) {
            return Err(Refusal::CrossSite);
        }
    }
    Ok(())
}

/// The axum middleware: [`check`], or 403 with Kong's `{"message": …}` body.
pub async fn layer(
    State(allowed): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    match check(&allowed, request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            tracing::warn!(
                method = %request.method(),
                path = request.uri().path(),
                reason = %refusal,
                "refused a request"
            );
            (
                StatusCode::FORBIDDEN,
                Json(json!({ "message": refusal.to_string() })),
            )
                .into_response()
        }
    }
}

/// The server refuses to start on an address other machines can reach unless an admin token
/// protects it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to listen on {0} without an admin token: other machines can reach that address; \
     set --admin-token (or EVENT_HOOKS_ADMIN_TOKEN), or listen on a loopback address such as \
     127.0.0.1"
)]
pub struct UnprotectedBind(pub SocketAddr);

/// Checks that `listen` is loopback, or that a non-empty admin token is set.
pub fn check_bind(listen: SocketAddr, admin_token: Option<&str>) -> Result<(), UnprotectedBind> {
    if listen.ip().is_loopback() || admin_token.is_some_and(|token| !token.is_empty()) {
        Ok(())
    } else {
        Err(UnprotectedBind(listen))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn allowed(extra: &[&str]) -> AllowedHosts {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        AllowedHosts::new("127.0.0.1:8001".parse().unwrap(), &extra)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn own_names_are_allowed_with_our_port_or_none() {
        let hosts = allowed(&[]);
        for host in [
            "127.0.0.1:8001",
            "localhost:8001",
            "LocalHost",
            "[::1]:8001",
            "[::1]",
            "127.0.0.1",
        ] {
            assert!(hosts.allows(host), "{host}");
        }
        for host in [
            "evil.test",
            "evil.test:8001",
            "localhost:8002",
            "127.0.0.2:8001",
            "localhost.evil.test",
            "[::1]x",
            "",
            ":8001",
            "localhost:notaport",
        ] {
            assert!(!hosts.allows(host), "{host}");
        }
    }

    #[test]
    fn more_names_with_allowed_hosts() {
        let hosts = allowed(&["hooks.internal", "10.0.0.5:9000", " "]);
        assert!(hosts.allows("hooks.internal"));
        assert!(hosts.allows("Hooks.Internal:8001"));
        assert!(!hosts.allows("hooks.internal:9000"));
        assert!(hosts.allows("10.0.0.5:9000"));
        assert!(!hosts.allows("10.0.0.5"));
        assert!(!hosts.allows("10.0.0.5:8001"));
    }

    #[test]
    fn the_listen_address_is_allowed() {
        let hosts = AllowedHosts::new("192.168.1.7:7000".parse().unwrap(), &[]);
        assert!(hosts.allows("192.168.1.7:7000"));
        assert!(hosts.allows("localhost:7000"));
        let hosts = AllowedHosts::new("[fe80::1]:7000".parse().unwrap(), &[]);
        assert!(hosts.allows("[fe80::1]:7000"));
    }

    #[test]
    fn a_foreign_host_is_refused_for_every_method() {
        let hosts = allowed(&[]);
        for method in [Method::GET, Method::POST] {
            assert_eq!(
                check(
                    &hosts,
                    &method,
                    &headers(&[("host", "rebound.evil.test:8001")])
                ),
                Err(Refusal::ForeignHost("rebound.evil.test:8001".into()))
            );
        }
        assert_eq!(
            check(&hosts, &Method::GET, &HeaderMap::new()),
            Err(Refusal::NoHost)
        );
    }

    #[test]
    fn pages_of_cors_allowed_origins_may_change_things() {
        let cors = CorsOrigins::parse("https://console.example").unwrap();
        let hosts = allowed(&[]).with_cors(cors);
        let host = ("host", "127.0.0.1:8001");
        let allowed_page = headers(&[
            host,
            ("origin", "https://console.example"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert_eq!(check(&hosts, &Method::POST, &allowed_page), Ok(()));
        let other_page = headers(&[host, ("origin", "https://evil.example")]);
        assert_eq!(
            check(&hosts, &Method::POST, &other_page),
            Err(Refusal::CrossSite)
        );
    }

    #[test]
    fn cross_site_changes_are_refused() {
        let hosts = allowed(&[]);
        let host = ("host", "127.0.0.1:8001");
        for refused in [
            vec![host, ("origin", "http://evil.test")],
            vec![host, ("origin", "null")],
            vec![host, ("origin", "http://localhost:8001")],
            vec![host, ("sec-fetch-site", "cross-site")],
            vec![host, ("sec-fetch-site", "same-site")],
            vec![
                host,
                ("origin", "http://127.0.0.1:8001"),
                ("sec-fetch-site", "cross-site"),
            ],
        ] {
            for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
                assert_eq!(
                    check(&hosts, &method, &headers(&refused)),
                    Err(Refusal::CrossSite),
                    "{method} {refused:?}"
                );
            }
        }
        for accepted in [
            vec![host],
            vec![host, ("origin", "http://127.0.0.1:8001")],
            vec![host, ("origin", "https://127.0.0.1:8001")],
            vec![host, ("sec-fetch-site", "same-origin")],
            vec![host, ("sec-fetch-site", "none")],
        ] {
            assert_eq!(
                check(&hosts, &Method::POST, &headers(&accepted)),
                Ok(()),
                "{accepted:?}"
            );
        }
        // Reading is not changing: the browser keeps the answer from the other site (no CORS).
        assert_eq!(
            check(
                &hosts,
                &Method::GET,
                &headers(&[host, ("origin", "http://evil.test")])
            ),
            Ok(())
        );
    }

    #[test]
    fn a_non_loopback_bind_needs_a_token() {
        let any: SocketAddr = "0.0.0.0:8001".parse().unwrap();
        assert_eq!(check_bind(any, None), Err(UnprotectedBind(any)));
        assert_eq!(check_bind(any, Some("")), Err(UnprotectedBind(any)));
        assert_eq!(check_bind(any, Some("s3cret")), Ok(()));
        assert_eq!(check_bind("127.0.0.1:1".parse().unwrap(), None), Ok(()));
        assert_eq!(check_bind("[::1]:1".parse().unwrap(), None), Ok(()));
        assert!(UnprotectedBind(any).to_string().contains("--admin-token"));
    }
}

//! The web console (spec §11): static ES modules and CSS embedded in the binary, served at
//! `/console/` by the same router as the admin API, so the local server and the admin function
//! serve the same files. The console is only a client of the admin API: it holds no data and
//! needs no token to load; every call it makes carries the token like any script's.
//!
//! Every answer carries a strict Content-Security-Policy (no inline script or style, no other
//! origin), `nosniff`, `no-referrer` and `frame-ancestors 'none'`. The files are not versioned by
//! name, so they are served `no-cache` with a strong ETag: a browser revalidates and gets a 304.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::error::ApiError;

/// Where the console lives.
pub(crate) const PREFIX: &str = "/console/";

/// Where `GET /` and `GET /console` send a browser: a file, which every router serves the same
/// way (behind API Gateway `/console/` only reaches the page through the `/console` route, as a
/// greedy `{proxy+}` never matches an empty segment).
pub(crate) const ENTRY: &str = "/console/index.html";

/// The policy of every console answer: scripts, styles, images and API calls from this origin
/// only; no inline code, no plugins, no framing, forms only to this origin.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("../../console/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console; `index.html` answers `/console/`.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("hooks.js", JS),
    asset!("hook.js", JS),
    asset!("overview.js", JS),
    asset!("sources.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

/// `GET /` and `GET /console`: to the console's page.
pub(super) async fn to_entry() -> Redirect {
    Redirect::to(ENTRY)
}

/// `GET /console/`: the console's page.
pub(super) async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /console/{file}`: one of the console's files.
pub(super) async fn file(Path(file): Path<String>, headers: HeaderMap) -> Response {
    serve(&file, &headers)
}

/// The headers every console answer carries, errors included.
fn security_headers(headers: &mut HeaderMap) {
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

fn serve(name: &str, request: &HeaderMap) -> Response {
    let mut response = match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => {
            let etag = etag(asset.bytes);
            let fresh = request
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|given| given.split(',').any(|tag| tag.trim() == etag));
            let mut response = if fresh {
                StatusCode::NOT_MODIFIED.into_response()
            } else {
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(asset.content_type),
                    )],
                    asset.bytes,
                )
                    .into_response()
            };
            if let Ok(value) = HeaderValue::from_str(&etag) {
                response.headers_mut().insert(header::ETAG, value);
            }
            response
        }
        None => ApiError::NotFound.into_response(),
    };
    security_headers(response.headers_mut());
    response
}

/// A strong validator of `bytes`: FNV-1a 64, enough to tell one build's file from another's.
fn etag(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        super::super::console_routes()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn serves_every_asset_with_its_type_and_the_security_headers() {
        for asset in ASSETS {
            let response = get(&format!("/console/{}", asset.name), None).await;
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.name);
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_TYPE], asset.content_type);
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        }
    }

    #[tokio::test]
    async fn the_root_and_the_bare_prefix_redirect_and_etags_revalidate() {
        for path in ["/", "/console"] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
            assert_eq!(response.headers()[header::LOCATION], ENTRY);
        }
        let page = get("/console/", None).await;
        assert_eq!(page.status(), StatusCode::OK);
        let tag = page.headers()[header::ETAG].to_str().unwrap().to_owned();
        let again = get("/console/", Some(&tag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        let other = get("/console/", Some("\"0\"")).await;
        assert_eq!(other.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn unknown_files_are_kong_404s_with_the_policy() {
        for path in ["/console/nope.js", "/console/..%2Fmod.rs", "/console/a/b"] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
        let response = get("/console/nope.js", None).await;
        assert_eq!(
            response.headers()[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
    }

    #[test]
    fn the_pages_have_no_inline_script_or_style() {
        for asset in ASSETS.iter().filter(|a| a.name.ends_with(".html")) {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            assert!(!text.contains("<script>"), "{}", asset.name);
            assert!(!text.contains("style="), "{}", asset.name);
            assert!(!text.contains("<style"), "{}", asset.name);
            // No inline event handler attribute (` onclick=` and the like).
            let handler = text.match_indices(" on").any(|(at, _)| {
                let rest = &text[at + 3..];
                let name_end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(0);
                name_end > 0 && rest[name_end..].starts_with('=')
            });
            assert!(!handler, "{}: inline event handler", asset.name);
        }
    }
}

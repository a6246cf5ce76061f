//! The outbound HTTP client that carries deliveries to hook targets (spec §8).
//!
//! One [`HttpSender`] is built per process and shared: it holds the connection pools. It never
//! follows redirects, bounds every request by a connect and a total timeout, reads response bodies
//! only up to a cap, and, unless the deployment allows private targets, refuses to connect to any
//! address that is not globally routable. That last guard runs inside the DNS resolver, and the
//! client connects only to the addresses the guard vetted, so a hostname that resolves to a public
//! address when checked and to `127.0.0.1` when connecting (DNS rebinding) cannot slip through.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::error::Error as StdError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::redirect::Policy;
use reqwest::{Client, Method, Url};

use crate::limits::MAX_ATTEMPT;
use crate::model::Timeouts;

/// How outbound requests are bounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Time allowed for DNS resolution, the TCP connection and the TLS handshake.
    pub connect_timeout: Duration,
    /// Time allowed for the whole exchange, from connecting to the last byte of the body read.
    pub total_timeout: Duration,
    /// Bytes of response body kept; the rest is never read.
    pub max_response_body: usize,
    /// Whether targets on loopback, private and other non-global addresses may be reached.
    /// `false` in production (SSRF guard); `true` for local development, where the targets are local.
    pub allow_private_targets: bool,
}

impl HttpSettings {
    /// The spec's connect timeout, unless a deployment's settings say otherwise.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// The spec's timeout of a whole request, unless a deployment's settings say otherwise.
    pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(10);
    /// 64 KiB of response body kept.
    pub(crate) const DEFAULT_MAX_RESPONSE_BODY: usize = 64 * 1024;
}

impl Default for HttpSettings {
    /// The spec's defaults, with private targets refused.
    fn default() -> Self {
        Self {
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            total_timeout: Self::DEFAULT_TOTAL_TIMEOUT,
            max_response_body: Self::DEFAULT_MAX_RESPONSE_BODY,
            allow_private_targets: false,
        }
    }
}

/// One request to send to a hook's target, fully rendered and (when the hook has a secret) signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRequest {
    /// The HTTP method; a parsed [`Method`], so an invalid one is caught where the hook is read.
    pub method: Method,
    /// The absolute `http` or `https` URL.
    pub url: String,
    /// Header names and values in order; a name may repeat.
    pub headers: Vec<(String, String)>,
    /// The exact body bytes, or `None` to send no body.
    pub body: Option<Vec<u8>>,
}

/// What the target answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Response headers with lower-case names; repeated headers are joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The body's first [`HttpSettings::max_response_body`] bytes, as lossy UTF-8.
    pub body: String,
    /// From sending the request to the end of the (capped) body.
    pub latency: Duration,
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The SSRF guard refused the target: it is, or resolves to, a non-global address.
    #[error("refused to deliver: {0}")]
    Refused(String),
    /// No connection could be made: DNS failure, connection refused, TLS handshake failure, ...
    #[error("could not connect to the target: {0}")]
    Connect(String),
    /// The connect or total timeout expired.
    #[error("the target did not answer in time")]
    Timeout,
    /// The connection failed after it was made: reset, closed early, malformed response, ...
    #[error("the exchange with the target failed: {0}")]
    Transport(String),
    /// The request could not be built: bad URL, scheme, header name or value.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl SendError {
    /// Whether sending the same request again later may succeed.
    ///
    /// A refused target or a malformed request fails the same way every time, so retrying them
    /// only delays the dead-letter queue; everything else may be a passing network condition.
    pub fn is_retryable(&self) -> bool {
        match self {
            SendError::Refused(_) | SendError::InvalidRequest(_) => false,
            SendError::Connect(_) | SendError::Timeout | SendError::Transport(_) => true,
        }
    }
}

/// The HTTP client could not be built (e.g. the TLS backend failed to initialise).
#[derive(Debug, thiserror::Error)]
#[error("building the outbound HTTP client: {0}")]
pub struct BuildError(#[from] reqwest::Error);

/// Sends [`OutboundRequest`]s; build it once and share it, since it holds the connection pools.
#[derive(Debug, Clone)]
pub struct HttpSender {
    /// Verifies the target's certificate (hooks with `ssl_verify: true`).
    verifying: Client,
    /// Accepts any certificate (hooks with `ssl_verify: false`, Kong's default).
    lenient: Client,
    settings: HttpSettings,
    /// Clients for hooks with their own `timeouts` (spec §12), by (timeouts, verify TLS); a
    /// handful of distinct settings in practice, and cleared whole if it ever grows past a bound.
    tuned: Arc<Mutex<HashMap<(Timeouts, bool), Client>>>,
}

/// Distinct per-hook timeout settings whose clients are kept at once.
const MAX_TUNED_CLIENTS: usize = 32;

impl HttpSender {
    /// Builds both clients with the settings' timeouts and, unless private targets are allowed,
    /// the guarding DNS resolver.
    pub fn new(settings: HttpSettings) -> Result<HttpSender, BuildError> {
        Ok(HttpSender {
            verifying: build_client(&settings, true)?,
            lenient: build_client(&settings, false)?,
            settings,
            tuned: Arc::default(),
        })
    }

    /// Like [`send`](Self::send), with a hook's own `timeouts` when it has them: `connect_ms`
    /// bounds connecting (the deployment's connect timeout when unset), `read_ms` each wait for
    /// the answer's bytes, and the whole exchange gets the longer of the deployment's total and
    /// their sum.
    pub(crate) async fn send_with(
        &self,
        request: OutboundRequest,
        verify_tls: bool,
        timeouts: Option<Timeouts>,
    ) -> Result<Response, SendError> {
        let Some(timeouts) = timeouts else {
            return self.send(request, verify_tls).await;
        };
        let client = {
            let mut tuned = self.tuned.lock().unwrap_or_else(PoisonError::into_inner);
            match tuned.get(&(timeouts, verify_tls)) {
                Some(client) => client.clone(),
                None => {
                    let (connect, read) = self.hook_timeouts(timeouts);
                    let settings = HttpSettings {
                        connect_timeout: connect,
                        total_timeout: self.total_timeout(Some(timeouts)),
                        ..self.settings.clone()
                    };
                    let client = build_client_with(&settings, verify_tls, read)
                        .map_err(|e| SendError::InvalidRequest(format!("client: {e}")))?;
                    if tuned.len() >= MAX_TUNED_CLIENTS {
                        tuned.clear();
                    }
                    tuned.insert((timeouts, verify_tls), client.clone());
                    client
                }
            }
        };
        self.send_on(&client, request).await
    }

    /// A hook's own connect and read timeouts, the deployment's connect timeout where unset.
    fn hook_timeouts(&self, timeouts: Timeouts) -> (Duration, Option<Duration>) {
        let millis = |ms: u32| Duration::from_millis(u64::from(ms));
        let connect = timeouts
            .connect_ms
            .map_or(self.settings.connect_timeout, millis);
        (connect, timeouts.read_ms.map(millis))
    }

    /// The longest a request with these hook `timeouts` may take, from connecting to the last
    /// byte read: the longer of the deployment's total and the hook's connect + read, never past
    /// [`MAX_ATTEMPT`] (what the dispatcher plans an attempt's lease with).
    pub fn total_timeout(&self, timeouts: Option<Timeouts>) -> Duration {
        let total = match timeouts {
            None => self.settings.total_timeout,
            Some(timeouts) => {
                let (connect, read) = self.hook_timeouts(timeouts);
                self.settings
                    .total_timeout
                    .max(connect + read.unwrap_or_default())
            }
        };
        total.min(MAX_ATTEMPT)
    }

    /// Sends one request and reads the response, its body up to the cap.
    ///
    /// Any status is a [`Response`], redirects included: deciding what a status means is
    /// [`super::retry::classify`]'s job. `verify_tls` is the hook's `ssl_verify`.
    pub async fn send(
        &self,
        request: OutboundRequest,
        verify_tls: bool,
    ) -> Result<Response, SendError> {
        let client = if verify_tls {
            &self.verifying
        } else {
            &self.lenient
        };
        self.send_on(client, request).await
    }

    async fn send_on(
        &self,
        client: &Client,
        request: OutboundRequest,
    ) -> Result<Response, SendError> {
        let url = Url::parse(&request.url)
            .map_err(|e| SendError::InvalidRequest(format!("url {:?}: {e}", request.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(SendError::InvalidRequest(format!(
                "scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        // The client never asks the resolver about IP-literal hosts, so the guard checks them here.
        if !self.settings.allow_private_targets {
            check_literal_host(&url)?;
        }
        let headers = header_map(&request.headers)?;
        let mut builder = client.request(request.method, url).headers(headers);
        if let Some(body) = request.body {
            builder = builder.body(body);
        }

        let started = Instant::now();
        let mut response = builder.send().await.map_err(map_error)?;
        let status = response.status().as_u16();
        let headers = response_headers(response.headers());
        let cap = self.settings.max_response_body;
        let mut body = Vec::new();
        // Read chunk by chunk and stop at the cap: a huge or endless body costs at most `cap`
        // bytes of memory and no more time than it takes to receive them.
        while body.len() < cap {
            match response.chunk().await.map_err(map_error)? {
                Some(chunk) => {
                    let room = cap - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                None => break,
            }
        }
        // Dropping the response with the body unread closes the connection instead of pooling it.
        drop(response);
        Ok(Response {
            status,
            headers,
            body: lossy_utf8(body, cap),
            latency: started.elapsed(),
        })
    }
}

fn build_client(settings: &HttpSettings, verify_tls: bool) -> Result<Client, reqwest::Error> {
    build_client_with(settings, verify_tls, None)
}

fn build_client_with(
    settings: &HttpSettings,
    verify_tls: bool,
    read_timeout: Option<Duration>,
) -> Result<Client, reqwest::Error> {
    let mut builder = Client::builder()
        .use_rustls_tls()
        .danger_accept_invalid_certs(!verify_tls)
        .redirect(Policy::none())
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.total_timeout.min(MAX_ATTEMPT))
        .user_agent(concat!("event-hooks/", env!("CARGO_PKG_VERSION")))
        // A proxy would be resolved instead of the target, leaving the target unchecked; and a
        // proxy from the environment is never what a webhook sender wants.
        .no_proxy();
    if let Some(read) = read_timeout {
        builder = builder.read_timeout(read);
    }
    if !settings.allow_private_targets {
        builder = builder.dns_resolver(Arc::new(GuardedResolver));
    }
    builder.build()
}

/// The guard's verdict, carried through reqwest's error chain so [`map_error`] can find it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refusal(String);

/// Resolves with the system resolver, then rejects the host if any address is not global.
///
/// Rejecting on *any* (not *all*) non-global address matters: otherwise a name with one public
/// and one private record could still get the private one connected to.
#[derive(Debug)]
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Port 0: the client puts the URL's port on the addresses it gets back.
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(bad) = addrs.iter().find(|addr| !is_global(addr.ip())) {
                return Err(Refusal(format!(
                    "{host} resolves to {}, which is not a public address",
                    bad.ip()
                ))
                .into());
            }
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

fn check_literal_host(url: &Url) -> Result<(), SendError> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        Some(url::Host::Domain(_)) => return Ok(()),
        None => return Err(SendError::InvalidRequest("url has no host".to_owned())),
    };
    if is_global(ip) {
        Ok(())
    } else {
        Err(SendError::Refused(format!(
            "address {ip} is not a public address"
        )))
    }
}

/// Whether `ip` is a globally routable unicast address, i.e. one a webhook may be sent to.
///
/// Everything else is refused: loopback, private, shared (CGNAT), link-local (including the cloud
/// metadata address 169.254.169.254), unspecified, broadcast, multicast, benchmarking,
/// documentation and reserved ranges, IPv6 unique-local and link-local, and IPv4 addresses
/// embedded in IPv6 (mapped, NAT64, 6to4) whose IPv4 part is one of those.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let non_global = a == 0 // "this network", incl. 0.0.0.0
        || a == 10 // private
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || a == 127 // loopback
        || (a == 169 && b == 254) // link-local, incl. cloud metadata
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast (deprecated)
        || (a == 192 && b == 168) // private
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    !non_global
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    // IPv4-mapped (::ffff:a.b.c.d): the socket would talk to the IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_global_v4(v4);
    }
    // NAT64 well-known prefix 64:ff9b::/96: a NAT64 gateway would forward to the embedded IPv4.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_global_v4(embedded_v4(segments[6], segments[7]));
    }
    // 6to4 (2002::/16) embeds the IPv4 address of the tunnel end in bits 16..48.
    if segments[0] == 0x2002 {
        return is_global_v4(embedded_v4(segments[1], segments[2]));
    }
    // Only 2000::/3 is allocated as global unicast; everything outside it (::, ::1, the deprecated
    // IPv4-compatible ::/96, fc00::/7, fe80::/10, fec0::/10, ff00::/8, 64:ff9b:1::/48, 100::/64,
    // 5f00::/16, ...) is not reachable on the Internet, so allow-listing is the safer side.
    if segments[0] & 0xe000 != 0x2000 {
        return false;
    }
    let non_global = match segments[0] {
        // 2001::/23 IETF protocol assignments (incl. Teredo), 2001:db8::/32 documentation.
        0x2001 => segments[1] < 0x200 || segments[1] == 0xdb8,
        // 3fff::/20 documentation.
        0x3fff => segments[1] < 0x1000,
        _ => false,
    };
    !non_global
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    let [a, b] = high.to_be_bytes();
    let [c, d] = low.to_be_bytes();
    Ipv4Addr::new(a, b, c, d)
}

fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, SendError> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| SendError::InvalidRequest(format!("invalid header name {name:?}")))?;
        // The client frames the body itself; a configured length or encoding that disagrees with
        // it would corrupt the request.
        if name == reqwest::header::CONTENT_LENGTH || name == reqwest::header::TRANSFER_ENCODING {
            continue;
        }
        let value = HeaderValue::from_str(value).map_err(|_| {
            SendError::InvalidRequest(format!("invalid value for header {}", name.as_str()))
        })?;
        map.append(name, value);
    }
    Ok(map)
}

fn response_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        map.entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    map
}

/// Decodes `body` as lossy UTF-8; when it was cut at `cap`, a character split by the cut is
/// dropped rather than shown as a replacement character.
fn lossy_utf8(mut body: Vec<u8>, cap: usize) -> String {
    if body.len() >= cap {
        // A UTF-8 character is at most 4 bytes, so a split one starts within the last 3.
        let tail_start = body.len().saturating_sub(3);
        if let Some(lead) = (tail_start..body.len())
            .rev()
            .find(|&i| body[i] & 0xc0 != 0x80)
        {
            if let Err(e) = std::str::from_utf8(&body[lead..]) {
                if e.error_len().is_none() {
                    body.truncate(lead);
                }
            }
        }
    }
    match String::from_utf8(body) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Maps a reqwest error to a [`SendError`], looking through its causes for the guard's refusal.
fn map_error(error: reqwest::Error) -> SendError {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(refusal) = cause.downcast_ref::<Refusal>() {
            return SendError::Refused(refusal.0.clone());
        }
        source = cause.source();
    }
    if error.is_timeout() {
        SendError::Timeout
    } else if error.is_connect() {
        SendError::Connect(cause_chain(error))
    } else if error.is_builder() {
        SendError::InvalidRequest(cause_chain(error))
    } else {
        SendError::Transport(cause_chain(error))
    }
}

/// The messages of `error`'s causes, joined with `": "`. reqwest's own top-level message is
/// left out: it only says "error sending request", and it quotes the URL, which may carry secrets.
fn cause_chain(error: reqwest::Error) -> String {
    let mut messages: Vec<String> = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        source = cause.source();
        // hyper's client wraps every failure as "client error (Connect)" and the like, which says
        // nothing its cause does not say better.
        if message.starts_with("client error (") && source.is_some() {
            continue;
        }
        // Wrappers often repeat their cause's message; say each thing once.
        if !messages.last().is_some_and(|last| last.contains(&message)) {
            messages.push(message);
        }
    }
    if messages.is_empty() {
        error.without_url().to_string()
    } else {
        messages.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SSRF catalogue, shared with tests/integration/delivery_http.rs and
    /// scripts/reliability/ssrf.py.
    fn catalogue() -> serde_json::Value {
        serde_json::from_str(include_str!("../../../tests/fixtures/ssrf.json")).unwrap()
    }

    #[test]
    fn is_global_sorts_addresses() {
        let catalogue = catalogue();
        let table = catalogue["addresses"].as_array().unwrap();
        assert!(table.len() > 60, "the catalogue's addresses are read");
        for entry in table {
            let text = entry["address"].as_str().unwrap();
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(
                is_global(ip),
                entry["public"].as_bool().unwrap(),
                "{text} ({})",
                entry["why"]
            );
        }
    }

    #[test]
    fn literal_hosts_are_checked_before_sending() {
        let check = |url: &str| check_literal_host(&Url::parse(url).unwrap());
        assert!(check("http://8.8.8.8/").is_ok());
        assert!(
            check("https://example.com/").is_ok(),
            "names go to the resolver"
        );
        // Every catalogue URL with an IP literal is refused here, the odd IPv4 spellings included
        // (the URL parser normalises them); names go to the resolver.
        let catalogue = catalogue();
        let mut literals = 0;
        for entry in catalogue["urls"].as_array().unwrap() {
            let url = entry["url"].as_str().unwrap();
            match Url::parse(url).unwrap().host() {
                Some(url::Host::Domain(_)) => assert!(check(url).is_ok(), "{url}"),
                _ => {
                    literals += 1;
                    let expected = entry["refused_with"]
                        .as_str()
                        .unwrap_or("is not a public address");
                    match check(url) {
                        Err(SendError::Refused(message)) => {
                            assert!(message.contains(expected), "{url}: {message}")
                        }
                        other => panic!("{url}: expected a refusal, got {other:?}"),
                    }
                }
            }
        }
        assert!(literals > 30, "the catalogue's URLs are read");
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_of_private_addresses() {
        let refused = GuardedResolver
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("localhost is refused");
        let refusal = refused.downcast_ref::<Refusal>().expect("a Refusal");
        assert!(refusal.0.starts_with("localhost resolves to "), "{refusal}");
        assert!(
            refusal.0.ends_with("which is not a public address"),
            "{refusal}"
        );
    }

    #[tokio::test]
    async fn bad_requests_are_invalid_not_sent() {
        let sender = HttpSender::new(HttpSettings::default()).unwrap();
        let request = |url: &str, headers: Vec<(String, String)>| OutboundRequest {
            method: Method::POST,
            url: url.to_owned(),
            headers,
            body: None,
        };
        for (req, why) in [
            (request("not a url", vec![]), "unparseable url"),
            (request("ftp://example.com/", vec![]), "scheme"),
            (
                request(
                    "http://example.com/",
                    vec![("bad name".to_owned(), "v".to_owned())],
                ),
                "header name",
            ),
            (
                request(
                    "http://example.com/",
                    vec![("x-ok".to_owned(), "line\nbreak".to_owned())],
                ),
                "header value",
            ),
        ] {
            let error = sender.send(req, false).await.unwrap_err();
            assert!(
                matches!(error, SendError::InvalidRequest(_)),
                "{why}: {error}"
            );
            assert!(!error.is_retryable());
        }
    }

    #[test]
    fn retryable_errors() {
        assert!(!SendError::Refused("x".into()).is_retryable());
        assert!(!SendError::InvalidRequest("x".into()).is_retryable());
        assert!(SendError::Connect("x".into()).is_retryable());
        assert!(SendError::Timeout.is_retryable());
        assert!(SendError::Transport("x".into()).is_retryable());
    }

    #[test]
    fn capped_bodies_drop_a_split_character() {
        // "é" is two bytes; cutting after its first byte must not leave a replacement character.
        assert_eq!(lossy_utf8(b"ab\xc3".to_vec(), 3), "ab");
        assert_eq!(lossy_utf8("abé".as_bytes().to_vec(), 4), "abé");
        // Invalid bytes elsewhere are still shown as replacement characters.
        assert_eq!(lossy_utf8(b"a\xffb".to_vec(), 10), "a\u{fffd}b");
        // A body shorter than the cap is never trimmed.
        assert_eq!(lossy_utf8(b"ab\xc3".to_vec(), 10), "ab\u{fffd}");
    }

    #[test]
    fn repeated_response_headers_are_joined() {
        let mut headers = HeaderMap::new();
        headers.append("Set-Cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        headers.append("X-Id", HeaderValue::from_static("7"));
        let map = response_headers(&headers);
        assert_eq!(map["set-cookie"], "a=1, b=2");
        assert_eq!(map["x-id"], "7");
    }
}

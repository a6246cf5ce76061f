//! The outbound HTTP side of delivery against real loopback receivers started by each test: what
//! the target receives, how each kind of answer or failure is classified, the timeouts, the body
//! cap, redirects not followed, and the SSRF guard refusing non-public targets before connecting.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as AxumResponse};
use axum::Router;
use event_hooks::outbound::{
    classify, signature, HttpSender, HttpSettings, Method, OutboundRequest, SendError, Verdict,
    SIGNATURE_HEADER,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
}

/// One scripted answer of a [`Receiver`].
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    delay: Duration,
}

fn answer(status: u16) -> Answer {
    Answer {
        status,
        headers: Vec::new(),
        body: Vec::new(),
        delay: Duration::ZERO,
    }
}

#[derive(Clone, Default)]
struct Script {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// An HTTP receiver on loopback that records every request and answers from a script, the last
/// answer repeating once the others are used.
struct Receiver {
    addr: SocketAddr,
    script: Script,
}

impl Receiver {
    async fn start(answers: Vec<Answer>) -> Receiver {
        let script = Script {
            answers: Arc::new(Mutex::new(answers.into())),
            seen: Arc::default(),
        };
        let app = Router::new()
            .fallback(record_and_answer)
            .with_state(script.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, script }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().unwrap().clone()
    }
}

async fn record_and_answer(State(script): State<Script>, request: Request) -> AxumResponse {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    script.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|pq| pq.to_string())
            .unwrap_or_default(),
        headers: parts.headers,
        body,
    });
    let next = {
        let mut answers = script.answers.lock().unwrap();
        if answers.len() > 1 {
            answers.pop_front().unwrap()
        } else {
            answers.front().cloned().unwrap_or_else(|| answer(200))
        }
    };
    tokio::time::sleep(next.delay).await;
    let mut response = (StatusCode::from_u16(next.status).unwrap(), next.body).into_response();
    for (name, value) in next.headers {
        response.headers_mut().append(name, value.parse().unwrap());
    }
    response
}

/// A bare TCP listener on `addr` that counts the connections it accepts and closes them.
async fn counting_listener(addr: &str) -> std::io::Result<(SocketAddr, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    Ok((local, accepted))
}

/// A sender that may reach loopback, as the local server's is; only loopback receivers are used.
fn loopback_sender() -> HttpSender {
    HttpSender::new(HttpSettings {
        allow_private_targets: true,
        ..HttpSettings::default()
    })
    .unwrap()
}

/// A sender with the production guard on.
fn guarded_sender() -> HttpSender {
    HttpSender::new(HttpSettings::default()).unwrap()
}

fn post(url: String, body: &[u8]) -> OutboundRequest {
    OutboundRequest {
        method: Method::POST,
        url,
        headers: vec![("content-type".to_owned(), "application/json".to_owned())],
        body: Some(body.to_vec()),
    }
}

#[tokio::test]
async fn delivers_method_headers_and_exact_body_and_captures_the_answer() {
    let receiver = Receiver::start(vec![Answer {
        status: 200,
        headers: vec![("X-Receipt", "r-1".to_owned())],
        body: b"thanks".to_vec(),
        delay: Duration::ZERO,
    }])
    .await;
    // Not valid UTF-8 on purpose: the body must arrive byte for byte.
    let body = b"{\"event\":\"crud\",\"bin\":\"\xff\xfe\"}".to_vec();
    let request = OutboundRequest {
        method: Method::PUT,
        url: receiver.url("/hook?x=1&y=%20"),
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("X-Custom".to_owned(), "one".to_owned()),
            ("x-custom".to_owned(), "two".to_owned()),
            (SIGNATURE_HEADER.to_owned(), signature(b"hunter2", &body)),
        ],
        body: Some(body.clone()),
    };

    let result = loopback_sender().send(request, false).await;

    let response = result.as_ref().expect("a response");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "thanks");
    assert_eq!(response.headers["x-receipt"], "r-1");
    assert_eq!(response.headers["content-length"], "6");
    assert!(response.latency > Duration::ZERO);
    assert_eq!(classify(&result), Verdict::Delivered);

    let seen = receiver.seen();
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    assert_eq!(seen.method, "PUT");
    assert_eq!(seen.path_and_query, "/hook?x=1&y=%20");
    assert_eq!(seen.body.as_ref(), body.as_slice());
    assert_eq!(seen.headers["content-type"], "application/json");
    assert_eq!(
        seen.headers["content-length"],
        body.len().to_string().as_str()
    );
    let custom: Vec<_> = seen.headers.get_all("x-custom").iter().collect();
    assert_eq!(custom, ["one", "two"]);
    assert_eq!(
        seen.headers[SIGNATURE_HEADER],
        signature(b"hunter2", &body).as_str()
    );
    let agent = seen.headers["user-agent"].to_str().unwrap();
    assert!(agent.starts_with("event-hooks/"), "{agent}");
}

#[tokio::test]
async fn a_request_without_a_body_sends_none() {
    let receiver = Receiver::start(vec![answer(204)]).await;
    let request = OutboundRequest {
        method: Method::GET,
        url: receiver.url("/?a=b"),
        headers: Vec::new(),
        body: None,
    };
    // verify_tls only matters for https; plain http goes through the verifying client just as well.
    let result = loopback_sender().send(request, true).await;
    assert_eq!(result.as_ref().unwrap().status, 204);
    assert_eq!(classify(&result), Verdict::Delivered);
    let seen = &receiver.seen()[0];
    assert_eq!(seen.method, "GET");
    assert!(seen.body.is_empty());
    assert!(seen.headers.get("transfer-encoding").is_none());
}

#[tokio::test]
async fn a_500_is_retried_and_the_next_200_delivers() {
    let receiver = Receiver::start(vec![answer(500), answer(200)]).await;
    let sender = loopback_sender();

    let first = sender.send(post(receiver.url("/"), b"{}"), false).await;
    assert_eq!(first.as_ref().unwrap().status, 500);
    assert_eq!(classify(&first), Verdict::Retry { after: None });

    let second = sender.send(post(receiver.url("/"), b"{}"), false).await;
    assert_eq!(classify(&second), Verdict::Delivered);
    assert_eq!(receiver.seen().len(), 2);
}

#[tokio::test]
async fn a_429_passes_on_its_retry_after() {
    let mut busy = answer(429);
    busy.headers.push(("retry-after", "42".to_owned()));
    let receiver = Receiver::start(vec![busy]).await;
    let result = loopback_sender()
        .send(post(receiver.url("/"), b"{}"), false)
        .await;
    assert_eq!(
        classify(&result),
        Verdict::Retry {
            after: Some(Duration::from_secs(42))
        }
    );
}

#[tokio::test]
async fn a_410_fails_the_delivery() {
    let receiver = Receiver::start(vec![answer(410)]).await;
    let result = loopback_sender()
        .send(post(receiver.url("/"), b"{}"), false)
        .await;
    assert_eq!(
        classify(&result),
        Verdict::Failed("target answered 410 Gone".to_owned())
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let receiver = Receiver::start(vec![]).await;
    let mut redirect = answer(302);
    redirect
        .headers
        .push(("location", receiver.url("/elsewhere")));
    receiver.script.answers.lock().unwrap().push_back(redirect);

    let result = loopback_sender()
        .send(post(receiver.url("/start"), b"{}"), false)
        .await;

    let response = result.as_ref().unwrap();
    assert_eq!(response.status, 302);
    assert_eq!(response.headers["location"], receiver.url("/elsewhere"));
    assert_eq!(
        classify(&result),
        Verdict::Failed("target answered 302 Found".to_owned())
    );
    let seen = receiver.seen();
    assert_eq!(seen.len(), 1, "only the original request: {seen:?}");
    assert_eq!(seen[0].path_and_query, "/start");
}

#[tokio::test]
async fn a_slow_target_times_out_and_is_retried() {
    let mut slow = answer(200);
    // Far longer than the timeout: a sender that does not time out gets the answer and fails below
    slow.delay = Duration::from_secs(60);
    let receiver = Receiver::start(vec![slow]).await;
    let sender = HttpSender::new(HttpSettings {
        total_timeout: Duration::from_millis(300),
        allow_private_targets: true,
        ..HttpSettings::default()
    })
    .unwrap();

    let started = Instant::now();
    let result = sender.send(post(receiver.url("/"), b"{}"), false).await;

    let elapsed = started.elapsed();
    assert_eq!(result, Err(SendError::Timeout));
    // Not before the timeout (timers never fire early); no upper bound: see the delay above
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(result.as_ref().unwrap_err().is_retryable());
    assert_eq!(classify(&result), Verdict::Retry { after: None });
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    // Bind and release a port, so nothing listens on it.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let result = loopback_sender()
        .send(post(format!("http://127.0.0.1:{port}/"), b"{}"), false)
        .await;

    match &result {
        Err(SendError::Connect(message)) => {
            assert!(
                message.to_lowercase().contains("connection refused"),
                "{message}"
            );
            // The message is for the delivery log: no URL in it.
            assert!(!message.contains("127.0.0.1"), "{message}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert_eq!(classify(&result), Verdict::Retry { after: None });
}

#[tokio::test]
async fn a_connection_dropped_by_the_target_is_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            // Read the request, then reset the connection instead of answering.
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            socket.set_zero_linger().unwrap();
            drop(socket);
        }
    });

    let result = loopback_sender()
        .send(post(format!("http://{addr}/"), b"{}"), false)
        .await;

    let error = result.as_ref().expect_err("no response");
    assert!(matches!(error, SendError::Transport(_)), "{error:?}");
    assert!(error.is_retryable());
    assert_eq!(classify(&result), Verdict::Retry { after: None });
}

#[tokio::test]
async fn a_huge_body_is_capped() {
    let mut huge = answer(200);
    huge.body = vec![b'a'; 1024 * 1024];
    let receiver = Receiver::start(vec![huge]).await;

    let result = loopback_sender()
        .send(post(receiver.url("/"), b"{}"), false)
        .await;

    let response = result.unwrap();
    assert_eq!(
        response.body.len(),
        HttpSettings::default().max_response_body
    );
    assert!(response.body.bytes().all(|b| b == b'a'));
}

#[tokio::test]
async fn an_endless_body_is_read_up_to_the_cap_without_waiting_for_its_end() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                // Promise 100 MB, send a little more than the cap, then stall.
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n";
                socket.write_all(head.as_bytes()).await.unwrap();
                for _ in 0..5 {
                    if socket.write_all(&[b'z'; 1024]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let sender = HttpSender::new(HttpSettings {
        max_response_body: 4096,
        allow_private_targets: true,
        ..HttpSettings::default()
    })
    .unwrap();

    let result = sender
        .send(post(format!("http://{addr}/"), b"{}"), false)
        .await;

    // An answer, not a timeout: the reader stopped at the cap instead of waiting for the rest
    let response = result.unwrap();
    assert_eq!(response.body, "z".repeat(4096));
}

/// Asserts that the guarded sender refuses `url` with a message containing `expected` (a refusal,
/// not a connect error or a timeout, so nothing was attempted).
async fn assert_refused(url: &str, expected: &str) {
    let result = guarded_sender()
        .send(post(url.to_owned(), b"{}"), false)
        .await;
    match &result {
        Err(SendError::Refused(message)) => {
            assert!(message.contains(expected), "{url}: {message}");
        }
        other => panic!("{url}: expected a refusal, got {other:?}"),
    }
    assert!(!result.as_ref().unwrap_err().is_retryable());
    assert!(matches!(classify(&result), Verdict::Failed(_)));
}

#[tokio::test]
async fn the_guard_refuses_the_catalogue_without_connecting() {
    // Given listeners on one port of every local address (IPv4, and IPv6 when the machine has it)
    let (addr, accepted) = counting_listener("0.0.0.0:0").await.unwrap();
    let port = addr.port();
    let v6 = counting_listener(&format!("[::]:{port}")).await.ok();
    // When every URL of the SSRF catalogue (tests/fixtures/ssrf.json) that resolves outside a
    // network namespace is sent to that port by the guarded sender
    let catalogue: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/ssrf.json")).unwrap();
    let mut sent = 0;
    for entry in catalogue["urls"].as_array().unwrap() {
        if entry.get("resolves").is_some() {
            continue; // names of the namespace's hosts file, or no name at all
        }
        let mut url = reqwest::Url::parse(entry["url"].as_str().unwrap()).unwrap();
        url.set_port(Some(port)).unwrap();
        // Then each is refused, IP literals before the client is called, names by the resolver
        // after DNS, before connecting
        let expected = entry["refused_with"]
            .as_str()
            .unwrap_or("is not a public address");
        assert_refused(url.as_str(), expected).await;
        sent += 1;
    }
    assert!(sent > 30, "the catalogue is read");

    // And no connection was made
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection made");
    if let Some((_, v6_accepted)) = v6 {
        assert_eq!(
            v6_accepted.load(Ordering::SeqCst),
            0,
            "no IPv6 connection made"
        );
    }
}

#[tokio::test]
async fn the_guard_is_off_when_private_targets_are_allowed() {
    let receiver = Receiver::start(vec![answer(200)]).await;
    let url = receiver.url("/").replace("127.0.0.1", "localhost");
    let result = loopback_sender().send(post(url, b"{}"), false).await;
    assert_eq!(classify(&result), Verdict::Delivered);
}

//! A loopback HTTP receiver for delivery tests: records every request and answers with a scripted
//! sequence of replies (then 200). The pings that webhook hooks get when they are created, updated
//! or deleted are answered 200 and kept apart, so tests about events see only events.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How to answer one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// Answer 200 after this long (longer than a client's timeout makes it time out).
    Slow(Duration),
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Recorded>>,
    pings: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Reply>>,
    /// While set, every request waits without an answer (see [`Receiver::hold`]).
    held: Mutex<bool>,
    released: tokio::sync::Notify,
    concurrency: Mutex<Concurrency>,
}

/// Requests being answered now, and the most seen at once.
#[derive(Default)]
struct Concurrency {
    now: usize,
    most: usize,
    /// Per `x-event-hook-delivery` header.
    per_delivery: std::collections::HashMap<String, usize>,
    most_per_delivery: usize,
}

/// Counts a request as in progress until dropped (also when the client gives up on it).
struct InProgress {
    shared: Arc<Shared>,
    delivery: Option<String>,
}

impl InProgress {
    fn new(shared: &Arc<Shared>, delivery: Option<String>) -> InProgress {
        let mut c = shared.concurrency.lock().unwrap();
        c.now += 1;
        c.most = c.most.max(c.now);
        if let Some(id) = &delivery {
            let n = c.per_delivery.entry(id.clone()).or_default();
            *n += 1;
            let n = *n;
            c.most_per_delivery = c.most_per_delivery.max(n);
        }
        drop(c);
        InProgress {
            shared: shared.clone(),
            delivery,
        }
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        let mut c = self.shared.concurrency.lock().unwrap();
        c.now -= 1;
        if let Some(id) = &self.delivery {
            if let Some(n) = c.per_delivery.get_mut(id) {
                *n -= 1;
            }
        }
    }
}

/// A running receiver; stops with the test's runtime.
#[derive(Clone)]
pub struct Receiver {
    pub base: String,
    shared: Arc<Shared>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let shared = Arc::new(Shared::default());
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { base, shared }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The next requests get these replies, in order; later ones get 200.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.script.lock().unwrap().extend(replies);
    }

    /// From now on every request waits without an answer until [`Receiver::release`]: a target
    /// that hangs (the sender's timeout ends each request).
    pub fn hold(&self) {
        *self.shared.held.lock().unwrap() = true;
    }

    /// Forgets the replies not given yet: later requests get 200.
    pub fn clear_script(&self) {
        self.shared.script.lock().unwrap().clear();
    }

    /// Lets the held requests (and later ones) be answered.
    pub fn release(&self) {
        *self.shared.held.lock().unwrap() = false;
        self.shared.released.notify_waiters();
    }

    /// The most requests (pings aside) being answered at once so far.
    pub fn most_at_once(&self) -> usize {
        self.shared.concurrency.lock().unwrap().most
    }

    /// The most requests with the same delivery id being answered at once so far.
    pub fn most_at_once_per_delivery(&self) -> usize {
        self.shared.concurrency.lock().unwrap().most_per_delivery
    }

    /// Every request but the automatic pings of hook changes.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The automatic pings of hook changes.
    pub fn pings(&self) -> Vec<Recorded> {
        self.shared.pings.lock().unwrap().clone()
    }

    /// The requests to `path`, once at least `count` arrived (panics after `timeout`).
    pub async fn wait_for(&self, path: &str, count: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let matching: Vec<Recorded> = self
                .requests()
                .into_iter()
                .filter(|r| r.path == path)
                .collect();
            if matching.len() >= count {
                return matching;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} requests to {path} within {timeout:?}, got {}: {matching:?}",
                matching.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let recorded = Recorded {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    v.to_str().unwrap_or_default().to_string(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    if is_change_ping(&recorded) {
        shared.pings.lock().unwrap().push(recorded);
        return (StatusCode::OK, "pong").into_response();
    }
    let delivery = recorded.headers.get("x-event-hook-delivery").cloned();
    shared.requests.lock().unwrap().push(recorded);
    let _in_progress = InProgress::new(&shared, delivery);
    loop {
        let released = shared.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if !*shared.held.lock().unwrap() {
            break;
        }
        released.await;
    }
    let reply = shared.script.lock().unwrap().pop_front();
    match reply {
        None => (StatusCode::OK, "ok").into_response(),
        Some(Reply::Status(code)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "scripted",
        )
            .into_response(),
        Some(Reply::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            (StatusCode::OK, "late").into_response()
        }
    }
}

/// The automatic ping of a hook change: `kong:event_hooks` / `ping` with an `operation`.
fn is_change_ping(request: &Recorded) -> bool {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&request.body) else {
        return false;
    };
    body["source"] == "kong:event_hooks"
        && body["event"] == "ping"
        && body.get("operation").is_some()
}

//! A fake Lambda Runtime API, and a guard that runs a real function binary against it.
//!
//! The Lambda service (and `cargo lambda watch`) hands events to a function over a small HTTP
//! protocol: the function long-polls `GET /2018-06-01/runtime/invocation/next`, then posts its answer
//! to `…/invocation/{id}/response` or `…/invocation/{id}/error`, or reports a failed cold start to
//! `…/init/error`. [`FakeRuntime`] speaks that protocol on a loopback port, so a test can invoke the
//! very binary that is deployed, event by event, without Docker or AWS.

use std::fmt;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

/// The ARN handed to every invocation.
pub const FUNCTION_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:admin-api";

/// How long a function gets for one invocation (the deadline it is told, and how long we wait).
pub const INVOCATION_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a waiting test checks whether the function process is still alive.
const LIVENESS_POLL: Duration = Duration::from_millis(100);

/// An event waiting to be picked up by the function.
struct Invocation {
    request_id: String,
    event: Value,
}

/// What the function posted back to the runtime API.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// `POST /runtime/invocation/{id}/response`: the raw response body.
    Response { request_id: String, body: String },
    /// `POST /runtime/invocation/{id}/error`: the error type header and the body.
    Error {
        request_id: String,
        error_type: String,
        body: String,
    },
    /// `POST /runtime/init/error`: the error type header and the body.
    InitError { error_type: String, body: String },
}

/// State shared by the route handlers.
#[derive(Clone)]
struct Shared {
    /// Queued events; the `next` handler holds the lock while it long-polls (one poller at a time,
    /// like the real service).
    events: Arc<Mutex<mpsc::UnboundedReceiver<Invocation>>>,
    reports: mpsc::UnboundedSender<Report>,
}

/// A Lambda Runtime API on a free loopback port; the server stops when this is dropped.
pub struct FakeRuntime {
    address: SocketAddr,
    events: mpsc::UnboundedSender<Invocation>,
    reports: mpsc::UnboundedReceiver<Report>,
    server: JoinHandle<()>,
}

impl FakeRuntime {
    /// Starts serving on `127.0.0.1:<free port>`.
    pub async fn start() -> FakeRuntime {
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let (report_tx, report_rx) = mpsc::unbounded_channel();
        let shared = Shared {
            events: Arc::new(Mutex::new(event_rx)),
            reports: report_tx,
        };
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(invocation_response),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(invocation_error),
            )
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake runtime API");
        let address = listener.local_addr().expect("fake runtime API address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake runtime API server");
        });
        FakeRuntime {
            address,
            events: event_tx,
            reports: report_rx,
            server,
        }
    }

    /// `host:port`, the form `AWS_LAMBDA_RUNTIME_API` takes.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Queues `event` for the next `GET …/invocation/next` under `request_id`.
    pub fn queue(&self, request_id: &str, event: Value) {
        self.events
            .send(Invocation {
                request_id: request_id.to_owned(),
                event,
            })
            .expect("the fake runtime API is running");
    }

    /// The next report, if one arrives within `wait`.
    pub async fn next_report(&mut self, wait: Duration) -> Option<Report> {
        tokio::time::timeout(wait, self.reports.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for FakeRuntime {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// `GET /2018-06-01/runtime/invocation/next`: blocks until an event is queued.
async fn next_invocation(State(shared): State<Shared>) -> Response {
    let Some(invocation) = shared.events.lock().await.recv().await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let deadline = SystemTime::now() + INVOCATION_TIMEOUT;
    let deadline_ms = deadline
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    let header = |value: &str| HeaderValue::from_str(value).expect("valid header value");
    let mut headers = HeaderMap::new();
    headers.insert("content-type", header("application/json"));
    headers.insert(
        "lambda-runtime-aws-request-id",
        header(&invocation.request_id),
    );
    headers.insert(
        "lambda-runtime-deadline-ms",
        header(&deadline_ms.to_string()),
    );
    headers.insert("lambda-runtime-invoked-function-arn", header(FUNCTION_ARN));
    headers.insert(
        "lambda-runtime-trace-id",
        header("Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0"),
    );
    (headers, invocation.event.to_string()).into_response()
}

/// `POST /2018-06-01/runtime/invocation/{id}/response`
async fn invocation_response(
    State(shared): State<Shared>,
    UrlPath(request_id): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    record(
        &shared,
        Report::Response {
            request_id,
            body: String::from_utf8_lossy(&body).into_owned(),
        },
    )
}

/// `POST /2018-06-01/runtime/invocation/{id}/error`
async fn invocation_error(
    State(shared): State<Shared>,
    UrlPath(request_id): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    record(
        &shared,
        Report::Error {
            request_id,
            error_type: error_type(&headers),
            body: String::from_utf8_lossy(&body).into_owned(),
        },
    )
}

/// `POST /2018-06-01/runtime/init/error`
async fn init_error(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    record(
        &shared,
        Report::InitError {
            error_type: error_type(&headers),
            body: String::from_utf8_lossy(&body).into_owned(),
        },
    )
}

fn error_type(headers: &HeaderMap) -> String {
    headers
        .get("lambda-runtime-function-error-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("(no error type)")
        .to_owned()
}

/// Hands a report to the test; the real service answers 202 Accepted.
fn record(shared: &Shared, report: Report) -> StatusCode {
    // The test may have finished already; nobody is left to read the report then.
    let _ = shared.reports.send(report);
    StatusCode::ACCEPTED
}

/// The function binary `name`, built from the current sources by this test run (see
/// [`binaries`](crate::binaries)).
pub fn function_binary(name: &str) -> PathBuf {
    crate::binaries::path(name)
}

/// Why an invocation produced no response.
#[derive(Debug)]
pub enum Failure {
    /// The function reported an invocation error.
    Function { error_type: String, body: String },
    /// The function reported a failed cold start.
    Init { error_type: String, body: String },
    /// The process ended.
    Exited { status: ExitStatus, log: String },
    /// Nothing came back in time.
    Timeout { log: String },
    /// The response was not JSON.
    NotJson { body: String },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Function { error_type, body } => {
                write!(f, "the function reported an error ({error_type}): {body}")
            }
            Failure::Init { error_type, body } => {
                write!(f, "the function failed to start ({error_type}): {body}")
            }
            Failure::Exited { status, log } => {
                write!(
                    f,
                    "the function process ended ({status}); its output:\n{log}"
                )
            }
            Failure::Timeout { log } => write!(
                f,
                "no response within {INVOCATION_TIMEOUT:?}; the function's output:\n{log}"
            ),
            Failure::NotJson { body } => write!(f, "the response is not JSON: {body:?}"),
        }
    }
}

/// A function binary running against its own [`FakeRuntime`]; the process is killed when this is
/// dropped, panics included.
pub struct FunctionProcess {
    runtime: FakeRuntime,
    child: Child,
    /// Where the process writes stdout and stderr (kept when a test panics, for the post-mortem).
    log: PathBuf,
    /// Headers added to every API Gateway event invoked (the admin token).
    headers: Vec<(String, String)>,
}

impl FunctionProcess {
    /// Starts `binary` with a clean environment: the variables the Lambda service sets, pointed at
    /// a new fake runtime API, plus `env`.
    pub async fn start(binary: &Path, env: &[(&str, &str)]) -> FunctionProcess {
        let runtime = FakeRuntime::start().await;
        let name = binary
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("function");
        let log = std::env::temp_dir().join(format!("{name}-{}.log", uuid::Uuid::new_v4()));
        let stdout = File::create(&log).expect("create the function log");
        let stderr = stdout.try_clone().expect("share the function log");
        let child = Command::new(binary)
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", runtime.address())
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "x")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "x")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|err| panic!("start {}: {err}", binary.display()));
        FunctionProcess {
            runtime,
            child,
            log,
            headers: Vec::new(),
        }
    }

    /// Adds `Kong-Admin-Token: token` to every API Gateway event this function is invoked with,
    /// as a client of the deployed admin API sends it.
    pub fn with_admin_token(mut self, token: &str) -> FunctionProcess {
        self.headers
            .push(("kong-admin-token".to_owned(), token.to_owned()));
        self
    }

    /// Invokes the function with `event` and returns its JSON response.
    pub async fn invoke(&mut self, mut event: Value) -> Result<Value, Failure> {
        if let Some(headers) = event.get_mut("headers").and_then(Value::as_object_mut) {
            for (name, value) in &self.headers {
                headers
                    .entry(name.clone())
                    .or_insert_with(|| Value::String(value.clone()));
            }
        }
        let request_id = uuid::Uuid::new_v4().to_string();
        self.runtime.queue(&request_id, event);
        let deadline = Instant::now() + INVOCATION_TIMEOUT;
        loop {
            match self.runtime.next_report(LIVENESS_POLL).await {
                Some(Report::Response {
                    request_id: id,
                    body,
                }) if id == request_id => {
                    return serde_json::from_str(&body).map_err(|_| Failure::NotJson { body });
                }
                Some(Report::Error {
                    request_id: id,
                    error_type,
                    body,
                }) if id == request_id => return Err(Failure::Function { error_type, body }),
                Some(Report::InitError { error_type, body }) => {
                    return Err(Failure::Init { error_type, body })
                }
                Some(other) => panic!("a report for another invocation: {other:?}"),
                None => {
                    if let Some(status) = self.exit_status() {
                        return Err(Failure::Exited {
                            status,
                            log: self.output(),
                        });
                    }
                    if Instant::now() > deadline {
                        return Err(Failure::Timeout { log: self.output() });
                    }
                }
            }
        }
    }

    /// Waits for the function to fail its cold start, by reporting an init error or by exiting;
    /// panics if it is still running after `wait`, or exits successfully.
    pub async fn init_failure(&mut self, wait: Duration) -> Failure {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(report) = self.runtime.next_report(LIVENESS_POLL).await {
                match report {
                    Report::InitError { error_type, body } => {
                        return Failure::Init { error_type, body }
                    }
                    other => panic!("expected an init error, got {other:?}"),
                }
            }
            if let Some(status) = self.exit_status() {
                assert!(
                    !status.success(),
                    "the function exited successfully; its output:\n{}",
                    self.output()
                );
                return Failure::Exited {
                    status,
                    log: self.output(),
                };
            }
            assert!(
                Instant::now() < deadline,
                "the function is still running after {wait:?}; its output:\n{}",
                self.output()
            );
        }
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("check the function process")
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("function output kept in {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

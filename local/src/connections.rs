//! Connections with limits: the local server's HTTP/1 accept loop, so that a client cannot hold a
//! connection (a socket, a task, some memory) for free.
//!
//! `axum::serve` sets no timer, so a connection that sends half a request head, or nothing at all
//! between keep-alive requests, stays open for ever, and enough of them hold every file descriptor.
//! Here each connection has a watchdog that closes it when
//!
//! - a request head has started to arrive and is not complete within the header-read timeout;
//! - it has been idle (no request in hand, no byte read or written) for the idle timeout;
//!
//! a request body must arrive whole within the body-read timeout of its head (else 408 and the
//! connection closes), and at most `max_connections` are served at once: the rest wait in the
//! listen backlog until one closes. While a handler runs the connection is never cut: a slow
//! handler, or a long response, is not a slow client.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse as _, Response};
use futures_util::StreamExt as _;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::Service as _;

/// How long clients may take, and how many connections are served at once.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// From the first byte of a request head to its end.
    pub header_read: Duration,
    /// From the end of a request head to the end of its body.
    pub body_read: Duration,
    /// With no request in hand and no byte read or written.
    pub idle: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then lets the
/// connections finish their requests in hand and waits for them.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let router = router.layer(axum::middleware::from_fn_with_state(
        limits.body_read,
        body_deadline,
    ));
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, _) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let stopping = stopping.clone();
        connections.spawn(async move {
            serve_connection(stream, router, limits, stopping).await;
            drop(permit);
        });
        // Reap the finished ones so the set stays as small as the open connections.
        while connections.try_join_next().is_some() {}
    }
    let _ = stop.send(true);
    while connections.join_next().await.is_some() {}
}

/// Where a connection is between requests; what its watchdog measures.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No request in hand since this instant (the last byte read or written).
    Idle(Instant),
    /// A request head has been arriving since this instant.
    Head(Instant),
    /// A handler holds a request.
    Busy,
}

type SharedPhase = Arc<Mutex<Phase>>;

async fn serve_connection(
    stream: TcpStream,
    router: axum::Router,
    limits: ConnectionLimits,
    mut stopping: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let phase: SharedPhase = Arc::new(Mutex::new(Phase::Idle(Instant::now())));
    let io = TokioIo::new(Watched {
        inner: stream,
        phase: phase.clone(),
    });
    let service = {
        let phase = phase.clone();
        hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
            *phase.lock().unwrap() = Phase::Busy;
            let call = router.clone().call(request.map(Body::new));
            let phase = phase.clone();
            async move {
                let response = call.await;
                *phase.lock().unwrap() = Phase::Idle(Instant::now());
                response
            }
        })
    };
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(connection);
    let watchdog = watchdog(&phase, limits);
    tokio::pin!(watchdog);
    loop {
        tokio::select! {
            _ = &mut connection => return,
            // Dropping the connection closes the socket; nothing is in hand.
            () = &mut watchdog => return,
            changed = stopping.changed(), if !*stopping.borrow() => {
                if changed.is_err() || *stopping.borrow() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Resolves when the connection has been idle, or reading a head, for too long.
async fn watchdog(phase: &SharedPhase, limits: ConnectionLimits) {
    loop {
        let current = *phase.lock().unwrap();
        // Reads and handlers change the phase without waking this task, so look again at least
        // once per shorter timeout: a head that starts now, or a request that ends now and leaves
        // the connection idle, is then still caught on time.
        let next_look = Instant::now() + limits.header_read.min(limits.idle);
        let deadline = match current {
            Phase::Idle(since) => since + limits.idle,
            Phase::Head(since) => since + limits.header_read,
            // A handler decides how long it takes.
            Phase::Busy => next_look,
        }
        .min(next_look);
        tokio::time::sleep_until(deadline).await;
        let now = *phase.lock().unwrap();
        match now {
            Phase::Idle(since) if since + limits.idle <= Instant::now() => {
                tracing::debug!("closing an idle connection");
                return;
            }
            Phase::Head(since) if since + limits.header_read <= Instant::now() => {
                tracing::debug!("closing a connection whose request head came too slowly");
                return;
            }
            _ => {}
        }
    }
}

/// The socket, noting each read and write in the connection's [`Phase`].
struct Watched {
    inner: TcpStream,
    phase: SharedPhase,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let mut phase = self.phase.lock().unwrap();
            if let Phase::Idle(_) = *phase {
                // Bytes with no request in hand: the start of the next head.
                *phase = Phase::Head(Instant::now());
            }
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = result {
            if written > 0 {
                let mut phase = self.phase.lock().unwrap();
                if let Phase::Idle(_) = *phase {
                    // A response still streaming out is not idleness.
                    *phase = Phase::Idle(Instant::now());
                }
            }
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Gives the request body `limit` from now to arrive whole. When it does not, the handler sees
/// the body fail, and the client gets 408 on a connection that then closes (the rest of the body
/// is never read).
async fn body_deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let deadline = Instant::now() + limit;
    let expired = Arc::new(AtomicBool::new(false));
    let (parts, body) = request.into_parts();
    let flag = expired.clone();
    let chunks = futures_util::stream::unfold(Some(body.into_data_stream()), move |chunks| {
        let flag = flag.clone();
        async move {
            let mut chunks = chunks?;
            match tokio::time::timeout_at(deadline, chunks.next()).await {
                Ok(Some(chunk)) => Some((chunk, Some(chunks))),
                Ok(None) => None,
                Err(_) => {
                    flag.store(true, Ordering::Relaxed);
                    Some((Err(axum::Error::new(BodyTimedOut)), None))
                }
            }
        }
    });
    let response = next
        .run(Request::from_parts(parts, Body::from_stream(chunks)))
        .await;
    if expired.load(Ordering::Relaxed) {
        let message = serde_json::json!({ "message": BodyTimedOut.to_string() });
        let mut response = (StatusCode::REQUEST_TIMEOUT, axum::Json(message)).into_response();
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return response;
    }
    response
}

/// The error a request body reports when its time is up.
#[derive(Debug, thiserror::Error)]
#[error("request body not received in time")]
struct BodyTimedOut;

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt as _;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        header_read: Duration::from_secs(30),
        body_read: Duration::from_secs(30),
        idle: Duration::from_secs(1),
        max_connections: 1,
    };

    /// Runs the watchdog while `change` moves the phase along; returns how long it took to fire.
    async fn fires_after(first: Phase, change: impl FnOnce(&SharedPhase)) -> Duration {
        let phase: SharedPhase = Arc::new(Mutex::new(first));
        let started = Instant::now();
        let watchdog = watchdog(&phase, LIMITS);
        tokio::pin!(watchdog);
        // The watchdog looks at the phase once and goes to sleep.
        assert!(watchdog.as_mut().now_or_never().is_none());
        change(&phase);
        watchdog.await;
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_ends_while_the_watchdog_sleeps_on_its_head_is_closed_on_idle_time() {
        // Given a watchdog that first saw a request head arriving (30 s allowed)
        // When the request is served at once and the connection goes idle (1 s allowed)
        let took = fires_after(Phase::Head(Instant::now()), |phase| {
            *phase.lock().unwrap() = Phase::Idle(Instant::now());
        })
        .await;
        // Then the connection is closed after the idle timeout, not the head's
        assert!(took <= Duration::from_secs(2), "fired after {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_closed_on_time_and_not_before() {
        let took = fires_after(Phase::Idle(Instant::now()), |_| {}).await;
        assert_eq!(took, LIMITS.idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_never_closed_by_the_watchdog() {
        let phase: SharedPhase = Arc::new(Mutex::new(Phase::Busy));
        let fired = tokio::time::timeout(Duration::from_secs(3600), watchdog(&phase, LIMITS)).await;
        assert!(fired.is_err(), "a handler's connection was closed");
    }
}

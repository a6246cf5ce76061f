//! Connections with limits, against the real `event-hooks-local` binary started with short
//! timeouts: a slow or silent client loses its connection, a slow handler does not.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use event_hooks_tests::receiver::{Receiver, Reply};
use event_hooks_tests::server::LocalServer;
use serde_json::json;

/// A server started with these `(flag, seconds)` connection timeouts.
fn server(timeouts: [(&str, &str); 3]) -> LocalServer {
    let mut args = Vec::new();
    for (flag, value) in timeouts {
        args.push(flag);
        args.push(value);
    }
    LocalServer::start(&args)
}

/// A raw connection to `server`, reads giving up after 10 s.
fn connect(server: &LocalServer) -> TcpStream {
    let address = server.base.trim_start_matches("http://");
    let stream = TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Reads until the server closes the connection; returns what came and how long it took. Panics
/// when the connection is still open after the read timeout.
fn read_until_closed(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == ErrorKind::ConnectionReset => break,
            Err(err) => panic!(
                "still open after {:?} ({err}); received {:?}",
                started.elapsed(),
                String::from_utf8_lossy(&received)
            ),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

/// Reads one whole response with a `content-length` (the `/status` answer).
fn read_response(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).expect("a response");
        assert!(n > 0, "closed before a whole response");
        received.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .expect("content-length");
            if received.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

/// Asserts that a connection was closed after about the 1 s timeout under test: not before
/// most of it, and well before any other timeout of the server.
fn assert_about_one_second(took: Duration) {
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
}

fn host(server: &LocalServer) -> &str {
    server.base.trim_start_matches("http://")
}

#[test]
fn a_connection_sending_half_a_head_is_closed_within_the_header_timeout() {
    // Given a server allowing 1 s for a head, and much longer for idleness
    let server = server([
        ("--header-read-timeout", "1"),
        ("--idle-timeout", "30"),
        ("--body-read-timeout", "30"),
    ]);
    // When a client sends half a request head, then a byte now and then, never the end
    let mut stream = connect(&server);
    write!(
        stream,
        "GET /status HTTP/1.1\r\nHost: {}\r\nX-Slow: ",
        host(&server)
    )
    .unwrap();
    let mut trickle = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        for _ in 0..40 {
            std::thread::sleep(Duration::from_millis(200));
            if trickle.write_all(b"a").is_err() {
                return;
            }
        }
    });
    // Then the server closes the connection after about 1 s, answering nothing
    let (received, took) = read_until_closed(&mut stream);
    assert!(received.is_empty(), "{received}");
    assert_about_one_second(took);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    // Given a server allowing 1 s of idleness, and much longer for heads
    let server = server([
        ("--header-read-timeout", "30"),
        ("--idle-timeout", "1"),
        ("--body-read-timeout", "30"),
    ]);
    // When a client makes a request on a keep-alive connection, then sends nothing more
    let mut stream = connect(&server);
    write!(
        stream,
        "GET /status HTTP/1.1\r\nHost: {}\r\n\r\n",
        host(&server)
    )
    .unwrap();
    let response = read_response(&mut stream);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Then the server closes it after about 1 s
    let (received, took) = read_until_closed(&mut stream);
    assert!(received.is_empty(), "{received}");
    assert_about_one_second(took);
    // And a connection that never sends a byte goes the same way
    let mut silent = connect(&server);
    let (_, took) = read_until_closed(&mut silent);
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
}

#[test]
fn a_slow_body_is_cut_with_408_after_the_body_timeout() {
    // Given a server allowing 1 s for a body
    let server = server([
        ("--header-read-timeout", "30"),
        ("--idle-timeout", "30"),
        ("--body-read-timeout", "1"),
    ]);
    // When a client announces 100 bytes of event and sends 10
    let mut stream = connect(&server);
    write!(
        stream,
        "POST /events HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"source\":",
        host(&server)
    )
    .unwrap();
    // Then after about 1 s it gets 408, and the connection closes
    let (received, took) = read_until_closed(&mut stream);
    assert!(received.starts_with("HTTP/1.1 408"), "{received}");
    assert!(
        received.ends_with(r#"{"message":"request body not received in time"}"#),
        "{received}"
    );
    assert_about_one_second(took);
}

#[tokio::test]
async fn requests_and_slow_handlers_outlast_short_timeouts() {
    // Given a server whose every timeout is 1 s, and a target that takes 2.5 s to answer
    let server = server([
        ("--header-read-timeout", "1"),
        ("--idle-timeout", "1"),
        ("--body-read-timeout", "1"),
    ]);
    let receiver = Receiver::start().await;
    let client = reqwest::Client::new();
    let created = client
        .post(server.url("/event-hooks"))
        .json(
            &json!({"source":"crud","event":"consumers","handler":"webhook",
                      "config":{"url":receiver.url("/slow")}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let id = created.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // When requests follow each other on one keep-alive connection, and one of them waits 2.5 s
    // for the target (a handler holding a request is not an idle connection)
    for _ in 0..3 {
        let status = client.get(server.url("/status")).send().await.unwrap();
        assert_eq!(status.status(), 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    receiver.script([Reply::Slow(Duration::from_millis(2500))]);
    let tested = client
        .post(server.url(&format!("/event-hooks/{id}/test")))
        .json(&json!({"username":"bob"}))
        .send()
        .await
        .unwrap();

    // Then every one is answered, the slow one with the target's answer
    assert_eq!(tested.status(), 200);
    let body: serde_json::Value = tested.json().await.unwrap();
    assert_eq!(body["result"]["status"], 200, "{body}");
    // And after the idle timeout has closed the connection, the client simply opens another
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = client.get(server.url("/status")).send().await.unwrap();
    assert_eq!(status.status(), 200);
}

#[test]
fn connections_over_the_cap_wait_until_one_closes() {
    // Given a server serving one connection at a time, and a client holding it silently
    let server = server([
        ("--header-read-timeout", "30"),
        ("--idle-timeout", "1"),
        ("--max-connections", "1"),
    ]);
    let _silent = connect(&server);
    std::thread::sleep(Duration::from_millis(100));
    // When another client asks for the status
    let started = Instant::now();
    let mut stream = connect(&server);
    write!(
        stream,
        "GET /status HTTP/1.1\r\nHost: {}\r\n\r\n",
        host(&server)
    )
    .unwrap();
    let response = read_response(&mut stream);
    // Then it is answered, once the silent one has been closed as idle about 1 s later
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "answered after {:?}",
        started.elapsed()
    );
}

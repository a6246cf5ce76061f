//! A send to SQS whose reply is lost (the message queued all the same) is sent again by the
//! adapter with `RESENT_ATTRIBUTE`, so that the receiver knows either copy may be a second one:
//! against moto, behind a proxy that drops the first reply of the operation under test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use event_hooks::queue::sqs::SqsQueue;
use event_hooks::queue::{Outgoing, Queue, Received};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Forwards each request to `upstream` on a connection of its own; the first request of the
/// SQS operation `drop_first` reaches moto, but its reply is dropped (the connection closed).
async fn lossy_proxy(upstream: String, drop_first: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        loop {
            let (client, _) = listener.accept().await.unwrap();
            let (upstream, dropped) = (upstream.clone(), dropped.clone());
            tokio::spawn(async move {
                let _ = relay(client, &upstream, drop_first, &dropped).await;
            });
        }
    });
    format!("http://{address}")
}

async fn relay(
    mut client: TcpStream,
    upstream: &str,
    drop_first: &str,
    dropped: &AtomicBool,
) -> std::io::Result<()> {
    // The request: its head, then as many bytes as its content-length says.
    let mut request = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while request.len() < head_end + length {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        request.extend_from_slice(&buf[..n]);
    }
    // One exchange per connection upstream: moto closes after its reply.
    let mut forwarded = Vec::from(&request[..head_end - 2]);
    forwarded.extend_from_slice(b"connection: close\r\n\r\n");
    forwarded.extend_from_slice(&request[head_end..]);
    let mut server = TcpStream::connect(upstream.trim_start_matches("http://")).await?;
    server.write_all(&forwarded).await?;
    let mut reply = Vec::new();
    server.read_to_end(&mut reply).await?;
    let target = format!(
        "x-amz-target: amazonsqs.{}\r\n",
        drop_first.to_ascii_lowercase()
    );
    if head.contains(&target) && !dropped.swap(true, Ordering::SeqCst) {
        // Queued, and the reply lost on its way.
        return Ok(());
    }
    client.write_all(&reply).await
}

/// The queue's adapter through a proxy that loses the first reply of `operation`, and a reader
/// that sees the queue directly.
async fn queue_losing_first(operation: &'static str) -> Option<(SqsQueue, SqsQueue)> {
    let config = event_hooks_tests::moto::config()?;
    let endpoint = std::env::var("MOTO_ENDPOINT").unwrap();
    let direct = aws_sdk_sqs::Client::new(&config);
    let url = direct
        .create_queue()
        .queue_name(event_hooks_tests::moto::unique_name("resends"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let proxy = lossy_proxy(endpoint, operation).await;
    let through = aws_sdk_sqs::Client::new(&event_hooks::aws::local_config(&proxy));
    Some((SqsQueue::new(through, &url), SqsQueue::new(direct, url)))
}

async fn receive_all(queue: &SqsQueue, expected: usize) -> Vec<Received> {
    let mut got = Vec::new();
    for _ in 0..10 {
        got.extend(
            queue
                .receive(10, Duration::from_secs(60), Duration::from_secs(1))
                .await
                .unwrap(),
        );
        if got.len() >= expected {
            break;
        }
    }
    got
}

#[tokio::test]
async fn a_send_whose_reply_is_lost_is_sent_again_marked() {
    let Some((queue, reader)) = queue_losing_first("SendMessage").await else {
        return;
    };
    // when: a message is sent, and the reply to its first send is lost
    queue.send(Outgoing::now("one event")).await.expect("sent");
    // then: the queue holds it twice, and the second copy says it may be one
    let received = receive_all(&reader, 2).await;
    let mut seen: Vec<(&str, u32)> = received
        .iter()
        .map(|m| (m.body.as_str(), m.possible_receives()))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [("one event", 1), ("one event", 2)]);
}

#[tokio::test]
async fn a_batch_whose_reply_is_lost_is_sent_again_marked() {
    let Some((queue, reader)) = queue_losing_first("SendMessageBatch").await else {
        return;
    };
    let messages = ["a", "b", "c"].map(Outgoing::now).to_vec();
    let ids = queue.send_batch(messages).await.expect("sent");
    assert_eq!(ids.len(), 3);
    let received = receive_all(&reader, 6).await;
    let mut seen: Vec<(&str, u32)> = received
        .iter()
        .map(|m| (m.body.as_str(), m.possible_receives()))
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("c", 1), ("c", 2)]
    );
}

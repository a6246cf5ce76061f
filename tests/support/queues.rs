//! Reading what a test's queue holds: every message, waiting for those expected and catching any
//! more.

use std::time::{Duration, Instant};

use event_hooks::events::Event;
use event_hooks::queue::{Queue, Received};
use serde_json::Value;

/// How long one receive waits for a message (SQS long polling on moto, or the SQLite queue's).
const POLL: Duration = Duration::from_secs(1);
/// Long enough that the messages received are not handed out again while a test reads them.
const VISIBILITY: Duration = Duration::from_secs(60);

/// The messages on `queue` once `expected` of them arrived (or `wait` passed), plus any more that
/// one further receive finds: a test asserting how many there are sees the extra ones too.
pub async fn drain(queue: &dyn Queue, expected: usize, wait: Duration) -> Vec<Received> {
    let deadline = Instant::now() + wait;
    let mut messages = Vec::new();
    while messages.len() < expected && Instant::now() < deadline {
        messages.extend(receive(queue).await);
    }
    messages.extend(receive(queue).await);
    messages
}

/// [`drain`], each message's body parsed as JSON.
pub async fn drain_json(queue: &dyn Queue, expected: usize, wait: Duration) -> Vec<Value> {
    drain(queue, expected, wait)
        .await
        .iter()
        .map(|message| {
            serde_json::from_str(&message.body)
                .unwrap_or_else(|err| panic!("not JSON ({err}): {}", message.body))
        })
        .collect()
}

async fn receive(queue: &dyn Queue) -> Vec<Received> {
    queue
        .receive(10, VISIBILITY, POLL)
        .await
        .expect("receive from the queue")
}

/// [`drain`], each message parsed as an event (the events queue's messages).
pub async fn drain_events(queue: &dyn Queue, expected: usize, wait: Duration) -> Vec<Event> {
    drain(queue, expected, wait)
        .await
        .iter()
        .map(|message| {
            serde_json::from_str(&message.body)
                .unwrap_or_else(|err| panic!("not an event ({err}): {}", message.body))
        })
        .collect()
}

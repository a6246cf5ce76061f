//! The `Queue` port: an SQS-shaped queue of text messages.
//!
//! Semantics follow a standard SQS queue with a redrive policy: a received message stays invisible
//! for the visibility timeout and comes back unless deleted; after `max_receives` receives it moves
//! to the dead-letter queue. [`sqs::SqsQueue`] is the deployed adapter, [`sqlite::SqliteQueue`]
//! the embedded one; both pass the same contract suite in `tests/`.

pub mod sqlite;
pub mod sqs;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;

/// The longest delay SQS accepts; longer waits are chained by the caller.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// The message attribute that says why a message was dead-lettered.
pub const REASON_ATTRIBUTE: &str = "reason";

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub body: String,
    /// Invisible for this long after sending; at most [`MAX_DELAY`].
    pub delay: Duration,
}

impl Outgoing {
    pub fn now(body: impl Into<String>) -> Outgoing {
        Outgoing {
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
}

/// A message handed out by [`Queue::receive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub id: String,
    /// Handle for [`Queue::delete`]; valid until the message is received again.
    pub receipt: String,
    pub body: String,
    /// How many times this message has been received, this time included.
    pub receive_count: u32,
    /// String message attributes, such as [`REASON_ATTRIBUTE`] on dead letters.
    pub attributes: BTreeMap<String, String>,
}

/// Errors of a [`Queue`].
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("delay of {0:?} is longer than the queue allows (15 minutes)")]
    DelayTooLong(Duration),
    #[error("the queue has no dead-letter queue")]
    NoDeadLetterQueue,
    #[error("queue failure: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl QueueError {
    pub fn backend(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> QueueError {
        QueueError::Backend(err.into())
    }
}

/// An SQS-shaped queue.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// Sends one message; returns its id.
    async fn send(&self, message: Outgoing) -> Result<String, QueueError>;

    /// Sends several messages (any number; adapters split into batches); returns their ids in order.
    async fn send_batch(&self, messages: Vec<Outgoing>) -> Result<Vec<String>, QueueError>;

    /// Up to `max` (1..=10) visible messages, waiting up to `wait` for one to arrive; each stays
    /// invisible to other receivers for `visibility`.
    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Received>, QueueError>;

    /// Deletes a received message. A receipt that is no longer current is ignored.
    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;

    /// Moves a received message to the dead-letter queue with `reason` as an attribute.
    async fn dead_letter(&self, message: &Received, reason: &str) -> Result<(), QueueError>;
}

fn check_delay(delay: Duration) -> Result<(), QueueError> {
    if delay > MAX_DELAY {
        return Err(QueueError::DelayTooLong(delay));
    }
    Ok(())
}

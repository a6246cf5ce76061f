//! The `Queue` port: an SQS-shaped queue of text messages.
//!
//! Semantics follow a standard SQS queue with a redrive policy: a received message stays invisible
//! for the visibility timeout and comes back unless deleted; a message received more than
//! `max_receives` times moves to the dead-letter queue. [`sqs::SqsQueue`] is the deployed adapter,
//! [`sqlite::SqliteQueue`] the embedded one; both pass the same contract suite in `tests/`.
//!
//! **One dead-letter format** for every queue: a dead letter's body is the body of the message
//! that could not be handled (an event, or a delivery as the deliveries queue carries it), and the
//! [`REASON_ATTRIBUTE`] message attribute says why, as a [`DeadLetterReason`]'s text. So a dead
//! letter can be redriven to its queue as it is.
//!
//! **Fair queues**: a message may belong to a group, its tenant (on the deliveries queue, a hook's
//! id). Among the visible messages, a queue serves first those of groups with few messages in
//! flight, so a hook with a large backlog cannot starve the others. An SQS standard queue does so
//! for messages sent with a `MessageGroupId` (SQS "fair queues"), once a group holds a
//! disproportionate share of the messages in flight; the SQLite adapter always does, by a strict
//! rule (see [`sqlite`]). Groups do not order messages, as they would on a FIFO queue.

pub mod sqlite;
pub mod sqs;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// The longest delay SQS accepts; longer waits are chained by the caller (the dispatcher's
/// `DispatchSettings::max_delay`, this unless a test scales time down).
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// Receives after which a message that keeps failing moves to its dead-letter queue, unless the
/// settings say otherwise (the dispatch function's `MAX_RECEIVES`; the local server's queues).
pub const DEFAULT_MAX_RECEIVES: u32 = 5;

/// The message attribute that says why a message was dead-lettered.
pub const REASON_ATTRIBUTE: &str = "reason";

/// Why a message was moved to a dead-letter queue; its text is the [`REASON_ATTRIBUTE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// The target kept failing in a retryable way until the retry schedule ran out.
    GaveUp {
        attempts: u32,
        /// The last attempt's error.
        error: String,
    },
    /// The delivery failed in a way that retrying cannot fix (a 4xx, a Lua error, a refused target).
    Failed(String),
    /// The hook was deleted while the delivery was waiting for a retry.
    HookDeleted,
    /// The hook was disabled while the delivery was waiting for a retry.
    HookDisabled,
    /// The dispatcher disabled the hook (endpoint protection: a `410 Gone`, or failing every
    /// attempt for too long); says why, as the hook's `disabled_reason` does.
    Disabled(String),
    /// The message body is not an event, or not a delivery; says what is wrong with it.
    Unparseable(String),
    /// The event's source or event name is not in the catalogue (Kong's message).
    Unregistered(String),
    /// The event is registered but lacks what its event requires (a `monetization`/`usage` event
    /// without `orgName`); says what is missing.
    Invalid(String),
    /// The message came back more often than the queue allows, so handling it keeps failing (or
    /// crashing the consumer).
    TooManyReceives {
        /// The queue's limit, exceeded.
        limit: u32,
    },
    /// The delivery was put back on its queue more often than its retry schedule can need, so
    /// something keeps re-queueing it: stopped as a loop (spec §8).
    TooManyRequeues {
        /// Times it was queued.
        hops: u32,
        /// The most its retry schedule allows (`RetrySchedule::max_requeues`), exceeded.
        limit: u32,
    },
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeadLetterReason::GaveUp { attempts, error } => {
                write!(f, "gave up after {attempts} attempts: {error}")
            }
            DeadLetterReason::Failed(message)
            | DeadLetterReason::Unparseable(message)
            | DeadLetterReason::Unregistered(message)
            | DeadLetterReason::Invalid(message) => f.write_str(message),
            DeadLetterReason::HookDeleted => {
                f.write_str("the hook was deleted before the delivery succeeded")
            }
            DeadLetterReason::HookDisabled => {
                f.write_str("the hook was disabled before the delivery succeeded")
            }
            DeadLetterReason::Disabled(reason) => {
                write!(f, "the hook was disabled: {reason}")
            }
            DeadLetterReason::TooManyReceives { limit } => write!(
                f,
                "received more than {limit} times without being handled (the queue's limit)"
            ),
            DeadLetterReason::TooManyRequeues { hops, limit } => write!(
                f,
                "queued {hops} times, more than the {limit} its retry schedule can need: \
                 stopped as a loop"
            ),
        }
    }
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub body: String,
    /// Invisible for this long after sending; at most [`MAX_DELAY`].
    pub delay: Duration,
    /// String message attributes, such as [`REASON_ATTRIBUTE`] on dead letters.
    pub attributes: BTreeMap<String, String>,
    /// The tenant the message belongs to (on the deliveries queue, its hook's id), for fairness
    /// between tenants; `None` for none. SQS takes 1 to 128 characters of `a-zA-Z0-9` and
    /// ``!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~``; the SQLite adapter reads an empty one as `None`.
    pub group: Option<String>,
}

impl Outgoing {
    /// A message visible at once, without attributes.
    pub fn now(body: impl Into<String>) -> Outgoing {
        Outgoing::delayed(body, Duration::ZERO)
    }

    /// A message invisible for `delay` (at most [`MAX_DELAY`]), without attributes.
    pub fn delayed(body: impl Into<String>, delay: Duration) -> Outgoing {
        Outgoing {
            body: body.into(),
            delay,
            attributes: BTreeMap::new(),
            group: None,
        }
    }

    /// The same message, in the tenant `group` (see [`Outgoing::group`]).
    #[must_use]
    pub fn in_group(mut self, group: impl Into<String>) -> Outgoing {
        self.group = Some(group.into());
        self
    }

    /// A dead letter in the one format of every dead-letter queue: `body` as it was, `reason` as
    /// the [`REASON_ATTRIBUTE`].
    pub fn dead_letter(body: impl Into<String>, reason: &DeadLetterReason) -> Outgoing {
        let mut message = Outgoing::now(body);
        message
            .attributes
            .insert(REASON_ATTRIBUTE.to_owned(), reason.to_string());
        message
    }
}

/// The attribute of a message sent again because the reply to its first send was lost (the
/// first may have been queued all the same): it may be the second copy of one send. Adapters whose
/// sends cannot be lost that way never set it.
pub const RESENT_ATTRIBUTE: &str = "EventHooksResent";

/// A message handed out by [`Queue::receive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub id: String,
    /// Handle for [`Queue::delete`]; valid until the message is received again.
    pub receipt: String,
    pub body: String,
    /// How many times this message has been received, this time included.
    pub receive_count: u32,
    /// When the queue took the message, in Unix milliseconds (SQS's `SentTimestamp`).
    pub sent_at: i64,
    /// String message attributes, such as [`REASON_ATTRIBUTE`] on dead letters.
    pub attributes: BTreeMap<String, String>,
    /// The tenant it was sent in, as in [`Outgoing::group`].
    pub group: Option<String>,
}

impl Received {
    /// How many times what this message carries may have been handled, this time included: its
    /// receive count, one more when it was sent again after a lost reply
    /// ([`RESENT_ATTRIBUTE`]). The dispatcher numbers attempts by it, and claims a number when
    /// it is above 1.
    pub fn possible_receives(&self) -> u32 {
        let resent = self.attributes.contains_key(RESENT_ATTRIBUTE);
        self.receive_count.max(1).saturating_add(u32::from(resent))
    }
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
    /// The queue is throttling or unavailable for now (a transient failure: the same call may
    /// succeed later), as opposed to [`QueueError::Backend`].
    #[error("queue unavailable for now: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl QueueError {
    pub fn backend(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> QueueError {
        QueueError::Backend(err.into())
    }

    /// Whether the same call may succeed later (throttling, a 5xx, a timeout).
    pub fn is_transient(&self) -> bool {
        matches!(self, QueueError::Unavailable(_))
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

    /// Moves a received message to the dead-letter queue with `reason` as its
    /// [`REASON_ATTRIBUTE`], its body unchanged.
    async fn dead_letter(
        &self,
        message: &Received,
        reason: &DeadLetterReason,
    ) -> Result<(), QueueError>;
}

fn check_delay(delay: Duration) -> Result<(), QueueError> {
    if delay > MAX_DELAY {
        return Err(QueueError::DelayTooLong(delay));
    }
    Ok(())
}

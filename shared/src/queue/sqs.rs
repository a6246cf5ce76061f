//! The deployed [`Queue`] adapter: an Amazon SQS standard queue and its dead-letter queue.
//!
//! The limit on receives is enforced twice: by this adapter, which dead-letters a message received
//! more than `max_receives` times with [`DeadLetterReason::TooManyReceives`] (in the one
//! dead-letter format, see [`super`]), and by the queue's own redrive policy one receive later
//! (see `create_queue_with_dlq`), a backstop that moves messages without a reason. An
//! SQS-triggered Lambda function never calls [`Queue::receive`], so it asks
//! [`SqsQueue::received_too_often`] itself. SDK types stay in this module; SDK errors become
//! [`QueueError::Unavailable`] when transient, else [`QueueError::Backend`], with the full error
//! chain in the message.
//!
//! **Sends are resent by this adapter, not by the SDK.** A send whose reply is lost (a reset, a
//! timeout) may have queued its message all the same, and a resend then queues it twice. The
//! SDK's retries would make the copies identical; here each resend carries the
//! [`RESENT_ATTRIBUTE`], so whoever receives it knows it may be the second copy of one send (see
//! [`Received::possible_receives`]). Sends keep the budget of the SDK's retries
//! ([`crate::aws::MAX_ATTEMPTS`] tries, each within one attempt's timeout).
//!
//! A message's group is its `MessageGroupId`: on a standard queue that makes the queue a fair
//! queue (SQS serves other tenants first while one holds a disproportionate share of the
//! messages in flight), without the ordering and deduplication it means on a FIFO queue.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
#[cfg(feature = "test-util")]
use aws_sdk_sqs::types::QueueAttributeName;
use aws_sdk_sqs::types::{
    MessageAttributeValue, MessageSystemAttributeName, SendMessageBatchRequestEntry,
};
use aws_sdk_sqs::Client;

use super::{
    check_delay, DeadLetterReason, Outgoing, Queue, QueueError, Received, RESENT_ATTRIBUTE,
};

/// SQS accepts at most this many entries in one SendMessageBatch call.
const BATCH_ENTRIES: usize = 10;

/// SQS rejects a batch whose bodies add up to more than this (256 KiB).
const BATCH_BYTES: usize = 256 * 1024;

/// The longest long poll SQS allows.
const MAX_WAIT_SECONDS: i32 = 20;

/// Where dead letters go, and after how many receives.
#[derive(Debug, Clone)]
struct Redrive {
    dead_letter_url: String,
    max_receives: u32,
}

/// An SQS queue, with its dead-letter queue when it has one.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
    redrive: Option<Redrive>,
}

impl SqsQueue {
    /// The queue at `url`, without a dead-letter queue.
    pub fn new(client: Client, url: impl Into<String>) -> SqsQueue {
        SqsQueue {
            client,
            url: url.into(),
            redrive: None,
        }
    }

    /// Sends dead letters to the queue at `dead_letter_url` (normally the target of the queue's
    /// redrive policy): those of [`Queue::dead_letter`], and every message received more than
    /// `max_receives` times, with the reason. The queue's own redrive policy should allow one
    /// receive more (as `create_queue_with_dlq` sets it), so that this adapter sees it first.
    pub fn with_redrive(
        mut self,
        dead_letter_url: impl Into<String>,
        max_receives: u32,
    ) -> SqsQueue {
        self.redrive = Some(Redrive {
            dead_letter_url: dead_letter_url.into(),
            max_receives,
        });
        self
    }

    /// Why `message` must go to the dead-letter queue without being handled: it was received
    /// more times than this queue allows. `None` when it may be handled, or the queue has no
    /// redrive.
    pub fn received_too_often(&self, message: &Received) -> Option<DeadLetterReason> {
        let limit = self.redrive.as_ref()?.max_receives;
        (message.receive_count > limit).then_some(DeadLetterReason::TooManyReceives { limit })
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one chunk of at most [`BATCH_ENTRIES`] messages, resending what may be lost (see
    /// the module documentation): the whole chunk after a failed call, the failed entries after
    /// a partial one.
    async fn send_chunk(&self, chunk: &[Outgoing]) -> Result<Vec<String>, QueueError> {
        let mut ids: Vec<Option<String>> = vec![None; chunk.len()];
        let mut resend = false;
        let mut tries = 0;
        loop {
            tries += 1;
            let pending: Vec<usize> = (0..chunk.len()).filter(|&i| ids[i].is_none()).collect();
            let failure = match self.send_entries(chunk, &pending, resend, &mut ids).await {
                Ok(None) => break,
                Ok(Some(failure)) => failure,
                Err(err) => err,
            };
            if tries >= crate::aws::MAX_ATTEMPTS || !matches!(failure, QueueError::Unavailable(_)) {
                return Err(failure);
            }
            tokio::time::sleep(crate::aws::INITIAL_BACKOFF).await;
            resend = true;
        }
        Ok(ids.into_iter().flatten().collect())
    }

    /// One SendMessageBatch call of the entries `pending` of `chunk`, noting each message id in
    /// `ids`; `Some` error when entries failed (transient when every failure was SQS's fault).
    async fn send_entries(
        &self,
        chunk: &[Outgoing],
        pending: &[usize],
        resend: bool,
        ids: &mut [Option<String>],
    ) -> Result<Option<QueueError>, QueueError> {
        let entries = pending
            .iter()
            .map(|&index| {
                let message = &chunk[index];
                SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(&message.body)
                    .delay_seconds(seconds_ceil(message.delay))
                    .set_message_attributes(message_attributes(&message.attributes, resend)?)
                    .set_message_group_id(message.group.clone())
                    .build()
                    .map_err(QueueError::backend)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let output = self
            .client
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .customize()
            .config_override(one_try())
            .send()
            .await
            .map_err(|err| sqs_error("SendMessageBatch", err))?;
        for entry in output.successful() {
            let slot = entry
                .id()
                .parse::<usize>()
                .ok()
                .filter(|i| pending.contains(i))
                .and_then(|i| ids.get_mut(i));
            match slot {
                Some(slot) => *slot = Some(entry.message_id().to_owned()),
                None => {
                    return Err(QueueError::backend(format!(
                        "SendMessageBatch answered for an entry never sent: {}",
                        entry.id()
                    )))
                }
            }
        }
        if output.failed().is_empty() {
            return Ok(pending
                .iter()
                .any(|&i| ids[i].is_none())
                .then(|| QueueError::backend("SendMessageBatch left entries unanswered")));
        }
        let failures: Vec<String> = output
            .failed()
            .iter()
            .map(|entry| {
                format!(
                    "entry {}: {} ({})",
                    entry.id(),
                    entry.code(),
                    entry.message().unwrap_or("no message")
                )
            })
            .collect();
        let message = format!(
            "SendMessageBatch: {} of {} entries failed: {}",
            failures.len(),
            pending.len(),
            failures.join("; ")
        );
        Ok(Some(
            if output.failed().iter().any(|entry| entry.sender_fault()) {
                QueueError::backend(message)
            } else {
                QueueError::Unavailable(message.into())
            },
        ))
    }
}

/// The SDK's settings for one try of a send: no retries (this adapter resends, marked), and the
/// operation bounded by one attempt's timeout, so that the tries keep the SDK retries' budget.
fn one_try() -> aws_sdk_sqs::config::Builder {
    aws_sdk_sqs::config::Builder::default()
        .retry_config(aws_sdk_sqs::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                .operation_timeout(crate::aws::ATTEMPT_TIMEOUT)
                .operation_attempt_timeout(crate::aws::ATTEMPT_TIMEOUT)
                .build(),
        )
}

#[async_trait]
impl Queue for SqsQueue {
    async fn send(&self, message: Outgoing) -> Result<String, QueueError> {
        check_delay(message.delay)?;
        let mut tries = 0;
        loop {
            tries += 1;
            let sent = self
                .client
                .send_message()
                .queue_url(&self.url)
                .delay_seconds(seconds_ceil(message.delay))
                .set_message_attributes(message_attributes(&message.attributes, tries > 1)?)
                .set_message_group_id(message.group.clone())
                .message_body(&message.body)
                .customize()
                .config_override(one_try())
                .send()
                .await
                .map_err(|err| sqs_error("SendMessage", err));
            match sent {
                Ok(output) => {
                    return output
                        .message_id()
                        .map(str::to_owned)
                        .ok_or_else(|| QueueError::backend("SendMessage returned no message id"))
                }
                Err(QueueError::Unavailable(_)) if tries < crate::aws::MAX_ATTEMPTS => {
                    tokio::time::sleep(crate::aws::INITIAL_BACKOFF).await;
                }
                Err(err) => return Err(err),
            }
        }
    }

    async fn send_batch(&self, messages: Vec<Outgoing>) -> Result<Vec<String>, QueueError> {
        // Checked up front so that an invalid message fails the call before anything is sent.
        for message in &messages {
            check_delay(message.delay)?;
        }
        let mut ids = Vec::with_capacity(messages.len());
        for chunk in chunks(&messages) {
            ids.extend(self.send_chunk(chunk).await?);
        }
        Ok(ids)
    }

    async fn receive(
        &self,
        max: u32,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Received>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(i32::try_from(max).unwrap_or(i32::MAX))
            .visibility_timeout(seconds_ceil(visibility))
            .wait_time_seconds(seconds_ceil(wait).min(MAX_WAIT_SECONDS))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|err| sqs_error("ReceiveMessage", err))?;
        let mut messages = Vec::with_capacity(output.messages().len());
        for message in output.messages().iter().map(received) {
            let message = message?;
            match self.received_too_often(&message) {
                None => messages.push(message),
                Some(reason) => {
                    // Not handed out: it keeps failing. Should the move fail, the queue's own
                    // redrive policy moves it on the next receive, without the reason.
                    if let Err(err) = self.dead_letter(&message, &reason).await {
                        tracing::warn!(
                            error = %err, message_id = %message.id,
                            "could not dead-letter a message received too often"
                        );
                    }
                }
            }
        }
        Ok(messages)
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        // SQS itself accepts a receipt that is no longer current and leaves the message alone.
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|err| sqs_error("DeleteMessage", err))?;
        Ok(())
    }

    async fn dead_letter(
        &self,
        message: &Received,
        reason: &DeadLetterReason,
    ) -> Result<(), QueueError> {
        // Sent before the original is deleted: a failure in between leaves a duplicate, not a loss.
        self.copy_to_dead_letter(message, reason).await?;
        self.delete(&message.receipt).await
    }
}

impl SqsQueue {
    /// Sends a copy of `message` to the dead-letter queue with `reason` as an attribute, leaving
    /// the original alone: an SQS-triggered Lambda function lets the trigger delete it.
    pub async fn copy_to_dead_letter(
        &self,
        message: &Received,
        reason: &DeadLetterReason,
    ) -> Result<(), QueueError> {
        let redrive = self.redrive.as_ref().ok_or(QueueError::NoDeadLetterQueue)?;
        let mut letter = Outgoing::dead_letter(message.body.clone(), reason);
        for (name, value) in &message.attributes {
            letter
                .attributes
                .entry(name.clone())
                .or_insert_with(|| value.clone());
        }
        self.client
            .send_message()
            .queue_url(&redrive.dead_letter_url)
            .message_body(letter.body)
            .set_message_attributes(message_attributes(&letter.attributes, false)?)
            // Kept, so that a redrive back to the queue keeps the message fair.
            .set_message_group_id(message.group.clone())
            .send()
            .await
            .map_err(|err| sqs_error("SendMessage to the dead-letter queue", err))?;
        Ok(())
    }
}

/// The SDK's form of string message attributes; `None` for none (SQS rejects an empty map).
/// `attributes` as SQS message attributes, with the [`RESENT_ATTRIBUTE`] when `resend`.
fn message_attributes(
    attributes: &BTreeMap<String, String>,
    resend: bool,
) -> Result<Option<HashMap<String, MessageAttributeValue>>, QueueError> {
    let resent = resend.then(|| (RESENT_ATTRIBUTE.to_owned(), "1".to_owned()));
    let all: Vec<(String, String)> = attributes
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .chain(resent)
        .collect();
    if all.is_empty() {
        return Ok(None);
    }
    all.into_iter()
        .map(|(name, value)| {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(QueueError::backend)?;
            Ok((name, value))
        })
        .collect::<Result<HashMap<_, _>, QueueError>>()
        .map(Some)
}

/// Creates the queue `name` and its dead-letter queue `<name>-dlq`; returns
/// `(queue_url, dead_letter_url)`. The redrive policy allows `max_receives + 1` receives: an
/// [`SqsQueue::with_redrive`] with `max_receives` dead-letters a message with its reason on that
/// last receive, and the policy only catches what the adapter could not move.
#[cfg(feature = "test-util")]
pub async fn create_queue_with_dlq(
    client: &Client,
    name: &str,
    max_receives: u32,
) -> Result<(String, String), QueueError> {
    let dead_letter_url = client
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await
        .map_err(|err| sqs_error("CreateQueue (dead-letter queue)", err))?
        .queue_url()
        .map(str::to_owned)
        .ok_or_else(|| QueueError::backend("CreateQueue returned no URL"))?;
    let dead_letter_arn = client
        .get_queue_attributes()
        .queue_url(&dead_letter_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|err| sqs_error("GetQueueAttributes", err))?
        .attributes()
        .and_then(|attributes| attributes.get(&QueueAttributeName::QueueArn).cloned())
        .ok_or_else(|| QueueError::backend("GetQueueAttributes returned no QueueArn"))?;
    let redrive_policy = serde_json::json!({
        "deadLetterTargetArn": dead_letter_arn,
        "maxReceiveCount": max_receives.saturating_add(1).to_string(),
    });
    let url = client
        .create_queue()
        .queue_name(name)
        .attributes(
            QueueAttributeName::RedrivePolicy,
            redrive_policy.to_string(),
        )
        .send()
        .await
        .map_err(|err| sqs_error("CreateQueue", err))?
        .queue_url()
        .map(str::to_owned)
        .ok_or_else(|| QueueError::backend("CreateQueue returned no URL"))?;
    Ok((url, dead_letter_url))
}

fn received(message: &aws_sdk_sqs::types::Message) -> Result<Received, QueueError> {
    let missing = |what: &str| QueueError::backend(format!("ReceiveMessage returned no {what}"));
    let receive_count = message
        .attributes()
        .and_then(|attributes| attributes.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|count| count.parse().ok())
        .ok_or_else(|| missing("ApproximateReceiveCount"))?;
    let sent_at = message
        .attributes()
        .and_then(|attributes| attributes.get(&MessageSystemAttributeName::SentTimestamp))
        .and_then(|millis| millis.parse().ok())
        .ok_or_else(|| missing("SentTimestamp"))?;
    // Only string-valued attributes (types String and Number) are part of the port; binary ones
    // are never sent by this system.
    let attributes: BTreeMap<String, String> = message
        .message_attributes()
        .into_iter()
        .flatten()
        .filter_map(|(name, value)| Some((name.clone(), value.string_value()?.to_owned())))
        .collect();
    Ok(Received {
        id: message
            .message_id()
            .ok_or_else(|| missing("message id"))?
            .to_owned(),
        receipt: message
            .receipt_handle()
            .ok_or_else(|| missing("receipt handle"))?
            .to_owned(),
        body: message.body().unwrap_or_default().to_owned(),
        receive_count,
        sent_at,
        attributes,
        group: message
            .attributes()
            .and_then(|attributes| attributes.get(&MessageSystemAttributeName::MessageGroupId))
            .cloned(),
    })
}

/// Splits `messages` into SendMessageBatch calls within both limits of SQS: entry count and total
/// size.
fn chunks(messages: &[Outgoing]) -> Vec<&[Outgoing]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (index, message) in messages.iter().enumerate() {
        let full = index - start == BATCH_ENTRIES || bytes + message.body.len() > BATCH_BYTES;
        if full && index > start {
            chunks.push(&messages[start..index]);
            start = index;
            bytes = 0;
        }
        bytes += message.body.len();
    }
    if start < messages.len() {
        chunks.push(&messages[start..]);
    }
    chunks
}

/// Whole seconds, rounded up: a message must never become visible sooner than asked.
fn seconds_ceil(duration: Duration) -> i32 {
    let seconds = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

/// An SDK error with its whole chain in the message: the SDK's own `Display` says only
/// "service error".
/// A failed SQS call as a [`QueueError`]: [`QueueError::Unavailable`] when it is transient
/// (throttling, a 5xx, a timeout: see [`crate::aws::is_transient`]), else [`QueueError::Backend`].
fn sqs_error<E>(operation: &str, err: SdkError<E, HttpResponse>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let transient = crate::aws::is_transient(&err);
    let message = format!("SQS {operation} failed: {}", DisplayErrorContext(err));
    if transient {
        QueueError::Unavailable(message.into())
    } else {
        QueueError::backend(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_at_most_ten_entries() {
        let messages: Vec<_> = (0..25).map(|n| Outgoing::now(n.to_string())).collect();

        let sizes: Vec<_> = chunks(&messages).iter().map(|chunk| chunk.len()).collect();

        assert_eq!(sizes, [10, 10, 5]);
    }

    #[test]
    fn batches_stay_within_the_size_limit() {
        let big = "x".repeat(100 * 1024);
        let messages: Vec<_> = (0..5).map(|_| Outgoing::now(big.clone())).collect();

        let sizes: Vec<_> = chunks(&messages).iter().map(|chunk| chunk.len()).collect();

        assert_eq!(sizes, [2, 2, 1]);
    }

    #[test]
    fn durations_round_up_to_whole_seconds() {
        assert_eq!(seconds_ceil(Duration::ZERO), 0);
        assert_eq!(seconds_ceil(Duration::from_millis(1)), 1);
        assert_eq!(seconds_ceil(Duration::from_secs(2)), 2);
        assert_eq!(seconds_ceil(Duration::from_millis(2001)), 3);
    }
}

//! A long-running consumer of a queue, for hosts without an SQS trigger (the local server): it
//! receives batches and runs each through the same batch code as the dispatch function
//! ([`batch::run`]), so users see the same snooze/on_change order locally and on AWS; each message
//! is deleted or dead-lettered by its outcome. Each message settles on its own: the worker
//! receives again once it has room for a batch, or a moment after it has room for one, so a
//! message whose attempt is slow holds only itself, never the batch it came in. A message whose
//! handling failed for infrastructure reasons is left alone, so it comes back after its visibility timeout, like an SQS-triggered Lambda's failed
//! batch items. A message that keeps coming back is dead-lettered by the queue itself, with its reason, once it has been
//! received more times than the queue allows.

use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::batch;
use super::{DispatchError, Dispatcher, MessageFacts, MessageOutcome, RecordContext};
use crate::queue::{Queue, Received};

/// Which queue a worker consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// Raw events from producers.
    Events,
    /// Deliveries waiting for a retry.
    Deliveries,
}

/// How a worker polls.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Messages per receive (1..=10).
    pub batch: u32,
    /// How long a received message stays invisible; longer than the slowest delivery.
    pub visibility: Duration,
    /// Long-poll wait per receive.
    pub wait: Duration,
    /// Messages in hand at once (received, not settled yet).
    pub(crate) in_hand: usize,
    /// With messages still in hand, how long the worker may wait for room for a whole batch
    /// before receiving fewer (see [`run`]).
    pub(crate) gather: Duration,
}

// An attempt (its timeouts, Lua budget and slack) ends well within the lease of the message it
// works for, so no message is handed to a second worker while its attempt runs.
const _: () = assert!(
    crate::limits::MAX_ATTEMPT.as_secs() + 10 < DEFAULT_VISIBILITY.as_secs(),
    "an attempt must end within its message's visibility timeout"
);

/// How long a received message stays invisible, unless the settings say otherwise.
const DEFAULT_VISIBILITY: Duration = Duration::from_secs(60);

impl Default for WorkerSettings {
    fn default() -> WorkerSettings {
        WorkerSettings {
            batch: 10,
            visibility: DEFAULT_VISIBILITY,
            wait: Duration::from_secs(1),
            in_hand: 20,
            gather: Duration::from_millis(20),
        }
    }
}

/// Consumes `queue` until `shutdown` turns true, then finishes the messages in hand.
pub async fn run(
    dispatcher: Arc<Dispatcher>,
    queue: Arc<dyn Queue>,
    feed: Feed,
    settings: WorkerSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let room = Arc::new(Semaphore::new(settings.in_hand.max(1)));
    let mut batches = JoinSet::new();
    while !*shutdown.borrow() {
        while batches.try_join_next().is_some() {}
        // Room for one message at least before receiving.
        let first = tokio::select! {
            permit = room.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        // A receive costs the queue about as much for one message as for a batch (on the local
        // server, one op of the SQLite writer, which every delivery waits on): with messages
        // still in hand to keep it busy, the worker waits a little for room for a whole batch
        // rather than receive each message as its predecessor settles. Bounded, so a slow
        // message in hand holds back the next receive by `gather` at most.
        let wanted = (settings.batch as usize)
            .min(settings.in_hand.max(1))
            .saturating_sub(1);
        if room.available_permits() < wanted {
            let gathered = tokio::select! {
                gathered = tokio::time::timeout(
                    settings.gather,
                    room.clone().acquire_many_owned(wanted as u32),
                ) => gathered,
                _ = shutdown.changed() => break,
            };
            // Only this loop takes permits: once released here they are taken below.
            drop(gathered);
        }
        let max = (1 + room.available_permits() as u32).min(settings.batch);
        let received = tokio::select! {
            received = queue.receive(max, settings.visibility, settings.wait) => received,
            _ = shutdown.changed() => break,
        };
        let mut messages = match received {
            Ok(messages) => messages,
            Err(err) => {
                tracing::error!(error = %err, ?feed, "could not receive from the queue");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Only this loop takes permits, so the ones counted before receiving are there.
        let mut permits = vec![first];
        while permits.len() < messages.len() {
            match room.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        for message in messages.drain(permits.len().min(messages.len())..) {
            tracing::error!(message_id = %message.id, "no room for a received message; it comes back");
        }
        if messages.is_empty() {
            continue;
        }
        let (dispatcher, queue) = (dispatcher.clone(), queue.clone());
        batches.spawn(async move {
            handle_batch(&dispatcher, queue.as_ref(), feed, &messages, permits).await;
        });
    }
    while batches.join_next().await.is_some() {}
}

/// Handles one received batch with the dispatch function's batch code ([`batch::run`]), so the
/// snooze/on_change decisions for a hook follow queue order here as on AWS. Each message is
/// settled, and its room in hand freed, as soon as it is done: a slow attempt holds only itself.
async fn handle_batch(
    dispatcher: &Dispatcher,
    queue: &dyn Queue,
    feed: Feed,
    messages: &[Received],
    permits: Vec<OwnedSemaphorePermit>,
) {
    // Hook changes made before this batch apply to it (read-your-writes), as on AWS.
    dispatcher.refresh_hooks().await;
    let permits: Vec<_> = permits.into_iter().map(|p| Mutex::new(Some(p))).collect();
    let permits = &permits;
    batch::run(messages.len(), None, |position, context| async move {
        let settled = handle(dispatcher, queue, feed, &messages[position], &context).await;
        drop(permits[position].lock().ok().and_then(|mut p| p.take()));
        settled
    })
    .await;
}

/// Handles one message of a batch and settles it on its queue (deleted, or dead-lettered with
/// its reason). Returns false when the message could not be handled now and must come back later.
pub async fn handle(
    dispatcher: &Dispatcher,
    queue: &dyn Queue,
    feed: Feed,
    message: &Received,
    context: &RecordContext,
) -> bool {
    let settled = match outcome_in(dispatcher, feed, message, context).await {
        Ok(MessageOutcome::Done) => queue.delete(&message.receipt).await,
        Ok(MessageOutcome::Reject(reason)) => {
            tracing::warn!(message_id = %message.id, ?feed, %reason, "message rejected; dead-lettered");
            queue.dead_letter(message, &reason).await
        }
        Err(_) => return false,
    };
    match settled {
        Ok(()) => true,
        Err(err) => {
            tracing::error!(error = %err, message_id = %message.id, ?feed, "could not settle a message; it will come back");
            false
        }
    }
}

/// What the dispatcher made of one message of a batch (its decision order, deadline), with the
/// times it may have been handled ([`Received::possible_receives`]: attempt numbers count
/// redeliveries and resends). An error is already logged here; it means
/// the message must come back later.
pub async fn outcome_in(
    dispatcher: &Dispatcher,
    feed: Feed,
    message: &Received,
    context: &RecordContext,
) -> Result<MessageOutcome, DispatchError> {
    let outcome = match feed {
        Feed::Events => {
            dispatcher
                .handle_event_message_in(
                    &message.body,
                    MessageFacts {
                        id: &message.id,
                        sent_at: Some(message.sent_at),
                        receive_count: message.possible_receives(),
                    },
                    context,
                )
                .await
        }
        Feed::Deliveries => {
            dispatcher
                .handle_delivery_message_in(&message.body, message.possible_receives(), context)
                .await
        }
    };
    if let Err(err) = &outcome {
        log_failure(err, message, feed);
    }
    outcome
}

fn log_failure(err: &DispatchError, message: &Received, feed: Feed) {
    tracing::error!(
        error = %err,
        message_id = %message.id,
        receive_count = message.receive_count,
        ?feed,
        "message handling failed; it will come back after its visibility timeout"
    );
}

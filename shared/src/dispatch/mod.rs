//! The dispatcher: events in, deliveries out (spec §4, §5, §8).
//!
//! An event is checked against the catalogue, matched to the enabled hooks of its source, and
//! fanned out into one **delivery** per hook, with an id derived from the event and hook ids so it
//! is the same on every retry and every redelivery. The first attempt runs at once; a delivery that
//! must be retried becomes its own message on the deliveries queue, so one failing hook never makes
//! another hook receive an event twice. What cannot be delivered ends in the dead-letter queue with
//! its reason. The same code runs in the dispatch Lambda function and in the local server.
//!
//! **Isolation** (spec §8): each (event, hook) pair fails on its own. When the dispatcher's own
//! infrastructure fails for one delivery (the window store, the retry enqueue, the dead-letter
//! send), that delivery is *parked*: put on the deliveries queue as it stands, with the [`Step`] it
//! stopped at, due after [`DispatchSettings::park_delay`]; the event message still completes, so
//! the hooks already served are not served again. A delivery parked before its snooze/on_change
//! decision carries [`Step::Decide`] and makes the decision when it comes back: the claimant of a
//! window is the delivery id, so a decision that did reach the store before the failure is found
//! again, not made twice (spec §5). Only when parking fails too does the event message stay on its
//! queue (logged with the hook id); its redelivery then skips every delivery the delivery log
//! already shows as delivered, and sends the others again under the same delivery ids, which
//! receivers can de-duplicate: at worst a duplicate, never a loss.
//!
//! A delivery's way, one file per step:
//! - `delivery`: the queued delivery, its step, attempt numbers, and the counts of its messages
//!   (hops, the loop bound; parks and deferrals in a row, their backoff);
//! - `fan_out`: an event matched to hooks, one delivery each, not-sent entries for disabled hooks,
//!   Apigee's usage thresholds ([`crate::apigee::usage`]) as a stage;
//! - `from_queue`: a delivery back from the deliveries queue;
//! - `decide`: the snooze/on_change decision, in the batch's order;
//! - `attempt`: the attempt in its hook's lane, the cut at the inline budget, endpoint protection;
//! - `record`: the attempt's entry in the delivery log;
//! - `follow_up`: retry, deferral, dead letter, and the enqueue they share;
//! - `park`: a delivery stopped by an infrastructure failure.
//!
//! Beside them: [`matching`] (who gets an event), [`lanes`] (isolation between hooks),
//! [`protection`] (410, pause, `max_rate`), [`batch`] (one SQS batch), [`execute`] (running a
//! handler), [`handlers`] (the request each handler makes), [`worker`] (the local queue consumer).

pub mod batch;
mod execute;
pub mod handlers;
mod lanes;
mod matching;
pub mod protection;
pub mod worker;

mod attempt;
mod decide;
mod delivery;
mod fan_out;
mod follow_up;
mod from_queue;
mod park;
mod record;

pub use batch::{Deadline, RecordContext};
pub use delivery::{Delivery, Step};
pub use execute::{Executed, Executor};
pub use lanes::{LaneSettings, LaneView, DEFAULT_HOOK_MAX_IN_FLIGHT};
pub use matching::EventName;

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::apigee::usage::UsageThresholds;
use crate::apigee::{webhook, MonetizationStore};
use crate::delivery_log::DeliveryLog;
use crate::events::{check_registered, parse_event_from_message, Event};
use crate::metrics::Stats;
use crate::outbound::retry::RetrySchedule;
pub use crate::queue::DeadLetterReason;
use crate::queue::{Queue, QueueError, MAX_DELAY};
use crate::snapshot::SnapshotCache;
use crate::store::{HookStore, StoreError};
use crate::windows::WindowStore;
use lanes::Lanes;
use protection::RateLimiter;

/// Header carrying the stable delivery id, for receivers to de-duplicate.
pub(crate) const DELIVERY_HEADER: &str = "x-event-hook-delivery";
/// Header carrying the attempt number (1 for the first).
pub(crate) const ATTEMPT_HEADER: &str = "x-event-hook-attempt";

/// Attempts in flight at once in one dispatcher, unless [`DispatchSettings::max_in_flight`] says
/// otherwise: room for 32 hooks at their default lane capacity.
pub(crate) const DEFAULT_MAX_IN_FLIGHT: usize = 128;

/// Tunables of delivery.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub retry: RetrySchedule,
    /// How long attempts stay in the delivery log.
    pub delivery_log_ttl: Duration,
    /// Response bodies kept in the delivery log are cut to this many bytes.
    pub logged_body_limit: usize,
    /// How long a parked delivery waits before it is tried again: long enough for a passing
    /// infrastructure failure to pass, short next to the retry schedule.
    pub park_delay: Duration,
    /// A hook whose every attempt fails for this long is paused (spec §8 "Beyond").
    pub pause_after: Duration,
    /// The longest an attempt over its hook's `max_rate` sleeps in process for its slot, holding
    /// no attempt slot; a later slot is reserved and the delivery goes back on the deliveries
    /// queue, due then, once: it comes back with the slot its own.
    pub rate_wait: Duration,
    /// The most attempts in flight at once in this process (open sockets, Lua runs), every
    /// hook's together. Bounds one invocation's fan-out (10 events x N hooks) against Lambda's
    /// 1,024 file descriptors and its memory; each hook is bounded first by its own lane.
    pub max_in_flight: usize,
    /// Each hook's lane: its slots, pace and circuit (see [`lanes`]).
    pub lanes: LaneSettings,
    /// The longest one deliveries-queue message is held back; longer delays are chained in legs
    /// of this. SQS's limit, [`MAX_DELAY`] (15 minutes), and never more; only tests lower it,
    /// with the retry schedule scaled alike, to run a whole schedule's chain in seconds.
    pub max_delay: Duration,
    /// How long after its message was received a first copy (receive 1, a number no other copy
    /// can hold) may still send its attempt without claiming the number: within it the message
    /// is surely still this receive's. Later, its visibility timeout may have lapsed and another
    /// receive of it be running (a queue whose visibility is that short, or a receive that
    /// waited long), so it claims like a copy: one more write, only for attempts that start late.
    /// Below every trigger's visibility timeout (380 s on AWS, 60 s locally, 10 s in the chaos
    /// runs of the simulated stack).
    pub unclaimed_window: Duration,
}

impl DispatchSettings {
    /// A hook failing every attempt for a day is paused, unless the settings say otherwise.
    pub const DEFAULT_PAUSE_AFTER: Duration = Duration::from_secs(24 * 3600);
}

impl Default for DispatchSettings {
    fn default() -> DispatchSettings {
        DispatchSettings {
            retry: RetrySchedule::default(),
            delivery_log_ttl: Duration::from_secs(7 * 24 * 3600),
            logged_body_limit: 4096,
            park_delay: Duration::from_secs(5),
            pause_after: Self::DEFAULT_PAUSE_AFTER,
            rate_wait: Duration::from_millis(50),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            lanes: LaneSettings::default(),
            max_delay: MAX_DELAY,
            unclaimed_window: Duration::from_secs(5),
        }
    }
}

/// Failures of the dispatcher's own infrastructure (not of a target): the message stays on its
/// queue and comes back.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Too little of the invocation's time was left to start an attempt; the delivery is parked.
    #[error("too close to the invocation deadline to start an attempt")]
    Deadline,
    /// A delivery stopped by an infrastructure failure could not be parked either.
    #[error("could not park delivery {delivery_id} of hook {hook_id}: {source}")]
    Parking {
        hook_id: Uuid,
        delivery_id: Uuid,
        #[source]
        source: QueueError,
    },
}

/// What to do with a queue message after handling it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Handled: delete it.
    Done,
    /// Cannot ever be handled: move it to the dead-letter queue with this reason.
    Reject(DeadLetterReason),
}

/// The ports the dispatcher works with.
pub struct DispatchPorts {
    /// Hooks and the catalogue.
    pub snapshot: Arc<SnapshotCache>,
    /// snooze / on_change windows.
    pub windows: Arc<dyn WindowStore>,
    /// Every attempt, for people; its failures never change what is delivered.
    pub log: Arc<dyn DeliveryLog>,
    /// Retries and parked deliveries.
    pub deliveries: Arc<dyn Queue>,
    /// The deliveries' dead-letter queue: deliveries that failed for good, with their reason.
    pub dead_letters: Arc<dyn Queue>,
    /// Runs the handlers.
    pub executor: Arc<Executor>,
    /// Where the dispatcher records `failing_since` and disables hooks (endpoint protection).
    pub hooks: Arc<dyn HookStore>,
    /// The events queue, for the crud `update` events of hooks the dispatcher disables.
    pub events: Arc<dyn Queue>,
}

/// What the dispatcher reads of an events-queue message besides its body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MessageFacts<'a> {
    pub(crate) id: &'a str,
    /// When the queue took it (Unix ms); `None` when unknown.
    pub(crate) sent_at: Option<i64>,
    /// How many times what it carries may have been handled ([`Received::possible_receives`]).
    ///
    /// [`Received::possible_receives`]: crate::queue::Received::possible_receives
    pub(crate) receive_count: u32,
}

/// The ports and settings the dispatcher works with.
pub struct Dispatcher {
    snapshot: Arc<SnapshotCache>,
    windows: Arc<dyn WindowStore>,
    log: Arc<dyn DeliveryLog>,
    deliveries: Arc<dyn Queue>,
    dead_letters: Arc<dyn Queue>,
    executor: Arc<Executor>,
    hooks: Arc<dyn HookStore>,
    events: Arc<dyn Queue>,
    limiter: RateLimiter,
    /// Each hook's slots, pace and circuit.
    lanes: Lanes,
    /// Slots of [`DispatchSettings::max_in_flight`].
    in_flight: tokio::sync::Semaphore,
    settings: DispatchSettings,
    /// Apigee's usage thresholds (spec §12), the stage every event goes through.
    usage: UsageThresholds,
    pub stats: Stats,
}

impl Dispatcher {
    pub fn new(ports: DispatchPorts, settings: DispatchSettings) -> Dispatcher {
        let DispatchPorts {
            snapshot,
            windows,
            log,
            deliveries,
            dead_letters,
            executor,
            hooks,
            events,
        } = ports;
        Dispatcher {
            snapshot,
            windows,
            log,
            deliveries,
            dead_letters,
            executor,
            hooks,
            events,
            limiter: RateLimiter::default(),
            lanes: Lanes::new(settings.lanes.clone()),
            in_flight: tokio::sync::Semaphore::new(settings.max_in_flight.max(1)),
            settings,
            usage: UsageThresholds::default(),
            stats: Stats::default(),
        }
    }

    /// Notifies Apigee webhooks of the usage targets that `monetization`/`usage` events reach,
    /// with the conditions and thresholds kept in `store` (spec §12); without it, usage events
    /// notify no Apigee webhook.
    pub fn with_monetization(mut self, store: Arc<dyn MonetizationStore>) -> Dispatcher {
        self.usage = UsageThresholds::new(store);
        self
    }

    /// Read-your-writes (spec §10), once per batch: reloads the hooks before the batch when the
    /// store's change counter moved since they were loaded. A counter that cannot be read forces
    /// a reload too (which then fails the batch's records if the store is down).
    pub async fn refresh_hooks(&self) {
        match self.snapshot.refresh_if_changed().await {
            Ok(true) => tracing::debug!("hooks changed; reloading them for this batch"),
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(error = %err, "could not read the hooks' change counter; reloading")
            }
        }
    }

    /// Handles one message of the events queue, sent at `sent_at` (Unix ms) and received for the
    /// `receive_count`-th time. An event without an id gets one derived from the queue's
    /// `message_id`, and one without a timestamp `sent_at`, so that every redelivery of the
    /// message has the same delivery ids.
    pub async fn handle_event_message(
        &self,
        body: &str,
        message_id: &str,
        sent_at: i64,
        receive_count: u32,
    ) -> Result<MessageOutcome, DispatchError> {
        let message = MessageFacts {
            id: message_id,
            sent_at: Some(sent_at),
            receive_count,
        };
        self.handle_event_message_in(body, message, &RecordContext::alone())
            .await
    }

    /// [`Dispatcher::handle_event_message`] as one record of a batch: decisions in the batch's
    /// order, attempts within its deadline; an event without a timestamp gets the message's
    /// `sent_at`.
    pub(crate) async fn handle_event_message_in(
        &self,
        body: &str,
        message: MessageFacts<'_>,
        context: &RecordContext,
    ) -> Result<MessageOutcome, DispatchError> {
        let MessageFacts {
            id: message_id,
            sent_at,
            receive_count,
        } = message;
        let event = match parse_event_from_message(body, message_id, sent_at) {
            Ok(event) => event,
            Err(reason) => {
                Stats::bump(&self.stats.rejected);
                return Ok(MessageOutcome::Reject(DeadLetterReason::Unparseable(
                    reason.to_string(),
                )));
            }
        };
        let snapshot = self.snapshot.get().await?;
        if let Err(reason) = check_registered(&snapshot.catalogue, &event) {
            Stats::bump(&self.stats.rejected);
            return Ok(MessageOutcome::Reject(DeadLetterReason::Unregistered(
                reason.to_string(),
            )));
        }
        if let Err(reason) = webhook::check_usage(&event) {
            Stats::bump(&self.stats.rejected);
            return Ok(MessageOutcome::Reject(DeadLetterReason::Invalid(
                reason.to_string(),
            )));
        }
        self.dispatch_in(event, receive_count, context).await?;
        Ok(MessageOutcome::Done)
    }

    /// Fans a checked event out to every matching, enabled hook and makes the first attempts,
    /// numbered `receive_count` (the times the event's message has been received). Each hook's
    /// delivery runs to its end on its own; an error means a delivery could neither be made nor
    /// parked, and the event must come back.
    pub async fn dispatch(&self, event: Event, receive_count: u32) -> Result<(), DispatchError> {
        self.dispatch_in(event, receive_count, &RecordContext::alone())
            .await
    }

    /// [`Dispatcher::dispatch`] as one record of a batch (see `fan_out.rs`).
    pub(crate) async fn dispatch_in(
        &self,
        event: Event,
        receive_count: u32,
        context: &RecordContext,
    ) -> Result<(), DispatchError> {
        self.fan_out(event, receive_count, context).await
    }

    /// Handles one message of the deliveries queue, received for the `receive_count`-th time: a
    /// retry (possibly not due yet), or a parked delivery.
    pub async fn handle_delivery_message(
        &self,
        body: &str,
        receive_count: u32,
    ) -> Result<MessageOutcome, DispatchError> {
        self.handle_delivery_message_in(body, receive_count, &RecordContext::alone())
            .await
    }

    /// [`Dispatcher::handle_delivery_message`] within a batch's deadline (see `from_queue.rs`).
    pub(crate) async fn handle_delivery_message_in(
        &self,
        body: &str,
        receive_count: u32,
        context: &RecordContext,
    ) -> Result<MessageOutcome, DispatchError> {
        self.handle_queued(body, receive_count, context).await
    }

    /// The state of a hook's lane in this dispatcher (slots in use, pace, circuit), if it has
    /// made attempts here.
    pub fn lane(&self, hook_id: Uuid) -> Option<lanes::LaneView> {
        self.lanes.view(hook_id)
    }
}

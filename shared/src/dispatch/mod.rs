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
//! **Attempt numbers** count every attempt the target may have seen: a message received for the
//! k-th time may have made its attempts k-1 times before (a crash, a timeout), so the first attempts
//! of an event received the k-th time are numbered k, and a delivery message's attempt goes up by
//! its receive count minus one. The retry schedule follows the same numbers: a delivery never gets
//! more attempts than the schedule allows, redeliveries included.
//!
//! **Hops** (spec §8): every time a delivery is put on the deliveries queue (a retry, each
//! 15-minute leg of a longer delay, a deferral, a park) its message counts one more `hops`. On
//! AWS each of these is one more invocation of the dispatch function by its own queue, a loop
//! Lambda stops after 16 unless the function allows it (the template does, `RecursiveLoop`); the
//! hop count is our own bound instead: a delivery queued more often than its retry schedule can
//! need ([`RetrySchedule::max_requeues`]) is dead-lettered as a loop, so a bug cannot keep a
//! delivery going round forever.
//!
//! **Bad weather** is not a loop. The re-queues that are no retry (a park, a deferral by the
//! hook's lane) come fast: a park waits [`DispatchSettings::park_delay`], 5 s, so an outage of
//! the window store or the deliveries queue would spend the margin the bound leaves them
//! ([`retry::REQUEUES_PER_ATTEMPT`] per attempt) in minutes. So each message also carries
//! `requeues_in_row`, the parks and deferrals since the delivery's last attempt ran (0 again once
//! one runs, whatever its outcome), and the k-th in a row waits [`retry::requeue_delay`]: its own
//! time doubled k times, up to [`DispatchSettings::max_delay`]. The first ones stay as quick as
//! ever; 20 parks in a row span about 3 h 20 min, any 20 deferrals in a row at least 2 h 30 min,
//! and an outage before a delivery's first attempt may use the whole margin of its schedule,
//! about 43 h of parks for the default one. Two re-queues keep their own time: a chained leg
//! (part of a wait already decided; it leaves the count as it is) and the wait for a reserved
//! `max_rate` slot (booked: coming later would waste it; it counts in the row, and cannot follow
//! itself, as a delivery that has its slot does not ask the limiter again). The resend of an
//! attempt cut at the inline budget counts as following an attempt: the cut one did reach the
//! target, and its resend is due when that one would have timed out, not sooner.

pub mod batch;
pub mod execute;
pub mod handlers;
pub mod lanes;
pub mod matching;
pub mod protection;
pub mod worker;

pub use batch::{Deadline, RecordContext};
pub use execute::{Executed, Executor};

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::apigee::{webhook, MonetizationStore, Threshold};
use crate::delivery_log::{Attempt, DeliveryKey, DeliveryLog, DeliveryStatus};
use crate::events::{
    check_registered, hook_change_events, now_millis, parse_event_with_default_id, Event, Operation,
};
use crate::metrics::Stats;
use crate::model::{Handler, Hook};
use crate::outbound::http::SendError;
use crate::outbound::retry::{self, RetrySchedule, Verdict};
pub use crate::queue::DeadLetterReason;
use crate::queue::{Outgoing, Queue, QueueError, MAX_DELAY};
use crate::snapshot::SnapshotCache;
use crate::store::{HookStore, StoreError};
use crate::windows::{decide, event_key, Decision, Dropped, WindowStore};
use lanes::{Admission, Held, LaneSettings, Lanes, Origin};
use matching::EventName;
use protection::{Change, Outcome, RateLimiter, Slot};
use serde_json::Value;

/// Whether the hook's deliveries go through a snooze/on_change decision.
fn has_windows(hook: &Hook) -> bool {
    hook.snooze.is_some() || hook.on_change.is_some()
}

/// Header carrying the stable delivery id, for receivers to de-duplicate.
pub const DELIVERY_HEADER: &str = "x-event-hook-delivery";
/// Header carrying the attempt number (1 for the first).
pub const ATTEMPT_HEADER: &str = "x-event-hook-attempt";

/// Namespace of delivery ids (UUID v5 of event id + hook id).
const DELIVERY_NAMESPACE: Uuid = Uuid::from_u128(0x6e0c_7a4b_2f1d_4f7e_9b61_0d1c_5a2e_8f30);

/// Attempts in flight at once in one dispatcher, unless [`DispatchSettings::max_in_flight`] says
/// otherwise: room for 32 hooks at their default lane capacity.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 128;

/// The longest an attempt that has its hook's slot waits for one of the dispatcher's
/// [`DispatchSettings::max_in_flight`] slots before it goes back on the deliveries queue.
const PROCESS_SLOT_WAIT: Duration = Duration::from_secs(1);

/// Time allowed past an attempt's planned bound (its timeouts and Lua budget) before it is cut
/// off as timed out: the bound is enforced by the HTTP client and the Lua budget, this is the
/// backstop that keeps every attempt within its lease whatever happens.
const ATTEMPT_SLACK: Duration = Duration::from_secs(2);

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
}

impl Default for DispatchSettings {
    fn default() -> DispatchSettings {
        DispatchSettings {
            retry: RetrySchedule::default(),
            delivery_log_ttl: Duration::from_secs(7 * 24 * 3600),
            logged_body_limit: 4096,
            park_delay: Duration::from_secs(5),
            pause_after: Duration::from_secs(24 * 3600),
            rate_wait: Duration::from_millis(50),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            lanes: LaneSettings::default(),
            max_delay: MAX_DELAY,
        }
    }
}

/// What a delivery does next when its message is handled. A delivery stopped by an
/// infrastructure failure is parked with the step it has to redo.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// Make attempt number [`Delivery::attempt`].
    #[default]
    Attempt,
    /// Make the snooze/on_change decision first (it failed, or was never made), then attempt.
    Decide,
    /// Only send the delivery to the dead-letter queue with this reason: the attempts are over,
    /// only that send failed.
    DeadLetter { reason: DeadLetterReason },
}

impl Step {
    fn is_attempt(&self) -> bool {
        *self == Step::Attempt
    }
}

/// One (event, hook) pair on its way; the body of a deliveries-queue message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub id: Uuid,
    pub hook_id: Uuid,
    /// The attempt to make next, 1-based.
    pub attempt: u32,
    /// Unix ms of the first attempt.
    pub created_at: i64,
    /// Unix ms before which the attempt must not run (delays longer than SQS allows are chained).
    #[serde(default)]
    pub not_before: i64,
    pub event: Event,
    /// The hook itself, for the pings of hook changes: a deleted hook still gets its ping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<Hook>,
    /// What to do next; anything but [`Step::Attempt`] only on parked deliveries.
    #[serde(default, skip_serializing_if = "Step::is_attempt")]
    pub step: Step,
    /// The delivery was sent back to wait for a `max_rate` slot reserved for it at
    /// `not_before`: its attempt then takes that slot without asking the limiter again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rate_slot: bool,
}

impl Delivery {
    /// The delivery of `event` to `hook`; its id is the same whenever this pair is dispatched.
    pub fn new(event: &Event, hook_id: Uuid) -> Delivery {
        let mut name = [0u8; 32];
        name[..16].copy_from_slice(event.id.as_bytes());
        name[16..].copy_from_slice(hook_id.as_bytes());
        Delivery {
            id: Uuid::new_v5(&DELIVERY_NAMESPACE, &name),
            hook_id,
            attempt: 1,
            created_at: now_millis(),
            not_before: 0,
            event: event.clone(),
            hook: None,
            step: Step::Attempt,
            rate_slot: false,
        }
    }
}

/// A deliveries-queue message as it is sent: the delivery, how many times it has been queued
/// (see "Hops" above) and how many of those in a row were parks and deferrals (see "Bad
/// weather"). Kept beside the [`Delivery`] rather than in it, as they describe the message rather
/// than the delivery: a dead letter carries neither, so a redriven one starts a new chain.
#[derive(Serialize)]
struct Queuing<'a> {
    #[serde(flatten)]
    delivery: &'a Delivery,
    hops: u32,
    #[serde(skip_serializing_if = "is_zero")]
    requeues_in_row: u32,
}

impl<'a> Queuing<'a> {
    fn new(delivery: &'a Delivery, requeues: Requeues) -> Queuing<'a> {
        Queuing {
            delivery,
            hops: requeues.hops,
            requeues_in_row: requeues.in_row,
        }
    }
}

fn is_zero(count: &u32) -> bool {
    *count == 0
}

/// A deliveries-queue message as it is received; `hops` and `requeues_in_row` are 0 in messages
/// sent before they existed.
#[derive(Deserialize)]
struct Queued {
    #[serde(flatten)]
    delivery: Delivery,
    #[serde(default)]
    hops: u32,
    #[serde(default)]
    requeues_in_row: u32,
}

/// How many times a delivery has been put on the deliveries queue: 0 for one made from an event,
/// its message's counts for one from the deliveries queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Requeues {
    /// Every time, whatever for (see "Hops" above).
    hops: u32,
    /// The parks and deferrals since its last attempt ran (see "Bad weather" above).
    in_row: u32,
}

impl Requeues {
    /// The counts of the message that follows an attempt (a retry, the resend of a cut attempt):
    /// one more hop, none in a row.
    fn after_attempt(self) -> Requeues {
        Requeues {
            hops: self.hops.saturating_add(1),
            in_row: 0,
        }
    }

    /// The counts of the next leg of a chained delay: one more hop, the row as it was.
    fn leg(self) -> Requeues {
        Requeues {
            hops: self.hops.saturating_add(1),
            in_row: self.in_row,
        }
    }

    /// The counts of a park or a deferral: one more hop, one more in a row.
    fn held(self) -> Requeues {
        Requeues {
            hops: self.hops.saturating_add(1),
            in_row: self.in_row.saturating_add(1),
        }
    }
}

/// Where a delivery being handled comes from, and how many times it has been queued so far.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    origin: Origin,
    requeues: Requeues,
}

impl Arrival {
    const FROM_EVENT: Arrival = Arrival {
        origin: Origin::Event,
        requeues: Requeues { hops: 0, in_row: 0 },
    };
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

/// A delivery stopped by an infrastructure failure: the delivery as it stands, with the step to
/// redo, and the failure.
struct Stuck {
    delivery: Delivery,
    error: DispatchError,
    /// An attempt ran before it stopped (its retry or its dead letter could not be sent): its
    /// park is the first in a row.
    attempted: bool,
}

impl Stuck {
    fn new(delivery: Delivery, error: impl Into<DispatchError>) -> Stuck {
        Stuck {
            delivery,
            error: error.into(),
            attempted: false,
        }
    }

    /// The same, stopped after an attempt ran.
    fn after_attempt(self) -> Stuck {
        Stuck {
            attempted: true,
            ..self
        }
    }
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
    /// Notification conditions and reached thresholds of Apigee webhooks (spec §12); without it,
    /// usage events notify no Apigee webhook.
    monetization: Option<Arc<dyn MonetizationStore>>,
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
            monetization: None,
            stats: Stats::default(),
        }
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

    /// Notifies Apigee webhooks of the usage targets that `monetization`/`usage` events reach,
    /// with the conditions and thresholds kept in `store` (spec §12).
    pub fn with_monetization(mut self, store: Arc<dyn MonetizationStore>) -> Dispatcher {
        self.monetization = Some(store);
        self
    }

    /// Handles one message of the events queue, received for the `receive_count`-th time. An
    /// event without an id gets one derived from the queue's `message_id`, so that every
    /// redelivery of the message has the same delivery ids.
    pub async fn handle_event_message(
        &self,
        body: &str,
        message_id: &str,
        receive_count: u32,
    ) -> Result<MessageOutcome, DispatchError> {
        self.handle_event_message_in(body, message_id, receive_count, &RecordContext::alone())
            .await
    }

    /// [`Dispatcher::handle_event_message`] as one record of a batch: decisions in the batch's
    /// order, attempts within its deadline.
    pub async fn handle_event_message_in(
        &self,
        body: &str,
        message_id: &str,
        receive_count: u32,
        context: &RecordContext,
    ) -> Result<MessageOutcome, DispatchError> {
        let event = match parse_event_with_default_id(body, message_id) {
            Ok(event) => event,
            Err(reason) => {
                Stats::bump(&self.stats.rejected);
                return Ok(MessageOutcome::Reject(DeadLetterReason::Unparseable(
                    reason,
                )));
            }
        };
        let snapshot = self.snapshot.get().await?;
        if let Err(reason) = check_registered(&snapshot.catalogue, &event) {
            Stats::bump(&self.stats.rejected);
            return Ok(MessageOutcome::Reject(DeadLetterReason::Unregistered(
                reason,
            )));
        }
        if let Err(reason) = webhook::check_usage(&event) {
            Stats::bump(&self.stats.rejected);
            return Ok(MessageOutcome::Reject(DeadLetterReason::Invalid(reason)));
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

    /// [`Dispatcher::dispatch`] as one record of a batch.
    pub async fn dispatch_in(
        &self,
        event: Event,
        receive_count: u32,
        context: &RecordContext,
    ) -> Result<(), DispatchError> {
        Stats::bump(&self.stats.events);
        let snapshot = self.snapshot.get().await?;
        let name = EventName::of(&event);
        let key_fields = snapshot
            .catalogue
            .event(&event.source, &event.event)
            .and_then(|spec| spec.unique.clone());
        let key_fields = key_fields.as_deref();
        let (matched, disabled): (Vec<(&Arc<Hook>, String)>, Vec<_>) = snapshot
            .hooks_of(&event.source)
            .iter()
            .filter_map(|hook| Some((hook, name.delivered_as(hook)?)))
            .partition(|(hook, _)| hook.enabled);
        // The hooks whose decisions must follow the batch's order: those with windows.
        if let Some(turn) = &context.turn {
            turn.declare(
                matched
                    .iter()
                    .filter(|(hook, _)| has_windows(hook))
                    .map(|(hook, _)| hook.id)
                    .collect(),
            );
        }
        let mut runs = Vec::new();
        for (hook, delivered_as) in matched {
            if let Some(org) = webhook::is_edge_webhook(hook) {
                if event.source == webhook::SOURCE && event.event == webhook::EVENT {
                    // No snooze/on_change decision here: nothing for later records to wait on.
                    if let Some(turn) = &context.turn {
                        turn.done(hook.id);
                    }
                    let (event, delivered_as) = (&event, delivered_as.clone());
                    runs.push(Box::pin(async move {
                        self.notify_usage(
                            hook,
                            org,
                            &delivered_as,
                            event,
                            receive_count,
                            context.deadline,
                        )
                        .await
                    })
                        as std::pin::Pin<
                            Box<dyn std::future::Future<Output = _> + Send + '_>,
                        >);
                    continue;
                }
            }
            let mut delivery = Delivery::new(&event, hook.id);
            delivery.attempt = receive_count.max(1);
            delivery.step = Step::Decide;
            runs.push(Box::pin(async move {
                if receive_count > 1 && self.served_before(hook.id, delivery.id).await {
                    tracing::debug!(hook_id = %hook.id, delivery_id = %delivery.id, "already delivered before this redelivery");
                    if let Some(turn) = &context.turn {
                        turn.done(hook.id);
                    }
                    return Ok(());
                }
                let advanced = self
                    .advance(
                        hook,
                        &delivered_as,
                        delivery,
                        key_fields,
                        context,
                        Arrival::FROM_EVENT,
                    )
                    .await;
                self.settle(advanced, Requeues::default()).await
            }));
        }
        // An Apigee webhook's deliveries are notifications made at dispatch, not the event.
        for (hook, _) in disabled
            .into_iter()
            .filter(|(hook, _)| webhook::is_edge_webhook(hook).is_none())
        {
            let event = &event;
            runs.push(Box::pin(async move {
                self.record_not_sent(hook, event, receive_count).await;
                Ok(())
            }));
        }
        // Every run ends on its own (delivered, retry queued, dead-lettered or parked), so one
        // hook's failure neither stops nor repeats another hook's delivery.
        let mut first_error = None;
        for result in futures_util::future::join_all(runs).await {
            if let Err(err) = result {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The delivery of `event` to a paused or disabled hook, logged as not sent with the reason,
    /// so that a replay can send it once the hook is enabled again (nothing is dropped unseen).
    /// Its one entry is numbered 0: the replay's attempt is the first.
    async fn record_not_sent(&self, hook: &Hook, event: &Event, receive_count: u32) {
        let delivery = Delivery::new(event, hook.id);
        if receive_count > 1
            && self
                .log
                .get(hook.id, delivery.id)
                .await
                .is_ok_and(|r| r.is_some())
        {
            return;
        }
        let reason = match &hook.disabled_reason {
            Some(why) => format!("not sent: the hook is paused ({})", why.reason),
            None => "not sent: the hook is disabled".to_owned(),
        };
        Stats::bump(&self.stats.not_sent);
        let entry = Attempt {
            number: 0,
            at: now_millis(),
            status: None,
            latency_ms: 0,
            error: Some(reason),
            response_body: None,
        };
        self.record(hook.id, &delivery, entry, DeliveryStatus::NotSent)
            .await;
    }

    /// A usage event for an Apigee webhook of `org` (spec §12): one notification for each usage
    /// target of the webhook's conditions on this rate plan that the usage reaches and that no
    /// earlier event of the billing cycle claimed, in ascending order, each its own delivery.
    /// A store failure fails the event, which comes back: thresholds it claimed stay its own, so
    /// the redelivery sends them (receivers de-duplicate by delivery id).
    async fn notify_usage(
        &self,
        hook: &Hook,
        org: &str,
        event_name: &str,
        event: &Event,
        receive_count: u32,
        deadline: Option<Deadline>,
    ) -> Result<(), DispatchError> {
        let Some(store) = &self.monetization else {
            tracing::warn!(hook_id = %hook.id, "usage event for an Apigee webhook, but this dispatcher has no monetization store");
            return Ok(());
        };
        let Some(usage) = event.data.as_object() else {
            tracing::info!(event_id = %event.id, "usage event without an object as data; ignored");
            return Ok(());
        };
        let text = |field: &str| match usage.get(field) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let (Some(developer), Some(rate_plan), Some(percent_used)) = (
            text("developerEmail"),
            text("ratePlanId"),
            usage.get("quotaPercentUsed").and_then(Value::as_f64),
        ) else {
            tracing::info!(event_id = %event.id, "usage event without developerEmail, ratePlanId or quotaPercentUsed; ignored");
            return Ok(());
        };
        // Only the webhooks of the usage's own organisation: rate plan ids of different
        // organisations may be equal. An event without `orgName` was refused where it came in;
        // one dispatched directly is matched against no organisation.
        if text("orgName").as_deref() != Some(org) {
            return Ok(());
        }
        let cycle = text("nextBillingCycleStartDate").unwrap_or_default();
        let mut reached: Vec<(u32, String)> = Vec::new();
        for condition in store.conditions_on_rate_plan(org, &rate_plan).await? {
            if !condition.webhooks.contains(&hook.id) {
                continue;
            }
            for percent in condition.reached(percent_used) {
                if !reached.iter().any(|(p, _)| *p == percent) {
                    reached.push((percent, condition.usage_target.clone()));
                }
            }
        }
        reached.sort();
        for (percent, usage_target) in reached {
            let threshold = Threshold {
                webhook: hook.id,
                developer: developer.clone(),
                rate_plan: rate_plan.clone(),
                cycle: cycle.clone(),
                percent,
            };
            if !store.claim(&threshold, event.id).await? {
                continue;
            }
            let notification = Event {
                id: Uuid::new_v5(&event.id, format!("usage-target:{percent}").as_bytes()),
                source: event.source.clone(),
                event: event.event.clone(),
                data: webhook::notification(usage, percent, &usage_target, now_millis()),
                timestamp: event.timestamp,
            };
            let mut delivery = Delivery::new(&notification, hook.id);
            delivery.attempt = receive_count.max(1);
            if receive_count > 1 && self.served_before(hook.id, delivery.id).await {
                continue;
            }
            let context = RecordContext {
                turn: None,
                deadline,
            };
            let advanced = self
                .advance(
                    hook,
                    event_name,
                    delivery,
                    None,
                    &context,
                    Arrival::FROM_EVENT,
                )
                .await;
            self.settle(advanced, Requeues::default()).await?;
        }
        Ok(())
    }

    /// On a redelivered event: whether the log shows this delivery delivered already. Any doubt
    /// (no record, a log that cannot be read) answers no: a duplicate beats a loss.
    async fn served_before(&self, hook_id: Uuid, delivery_id: Uuid) -> bool {
        matches!(
            self.log.get(hook_id, delivery_id).await,
            Ok(Some(record)) if record.status == DeliveryStatus::Delivered
        )
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

    /// [`Dispatcher::handle_delivery_message`] within a batch's deadline.
    pub async fn handle_delivery_message_in(
        &self,
        body: &str,
        receive_count: u32,
        context: &RecordContext,
    ) -> Result<MessageOutcome, DispatchError> {
        let Queued {
            mut delivery,
            hops,
            requeues_in_row,
        } = match serde_json::from_str(body) {
            Ok(queued) => queued,
            Err(err) => {
                return Ok(MessageOutcome::Reject(DeadLetterReason::Unparseable(
                    format!("not a delivery: {err}"),
                )))
            }
        };
        let requeues = Requeues {
            hops,
            in_row: requeues_in_row,
        };
        if let Some(limit) = self.requeue_limit(&delivery).await.filter(|l| hops > *l) {
            tracing::error!(
                hook_id = %delivery.hook_id, delivery_id = %delivery.id, attempt = delivery.attempt,
                hops, requeues_in_row, limit, "delivery queued more often than its retry schedule \
                can need; stopped as a loop"
            );
            let reason = DeadLetterReason::TooManyRequeues { hops, limit };
            self.settle(self.give_up(delivery, reason).await, requeues)
                .await?;
            return Ok(MessageOutcome::Done);
        }
        let remaining = delivery.not_before - now_millis();
        if remaining > 1000 {
            // Not due: a delay longer than the queue allows, chained. No attempt is made here,
            // so the attempt number stays.
            let delay = Duration::from_millis(remaining as u64);
            self.enqueue(&delivery, requeues.leg(), delay).await?;
            return Ok(MessageOutcome::Done);
        }
        if let Step::DeadLetter { reason } = &delivery.step {
            let reason = reason.clone();
            self.settle(self.give_up(delivery, reason).await, requeues)
                .await?;
            return Ok(MessageOutcome::Done);
        }
        // Each earlier receive of this message may have made this attempt already.
        delivery.attempt = delivery.attempt.saturating_add(receive_count.max(1) - 1);
        let snapshot = self.snapshot.get().await?;
        let hook = match delivery
            .hook
            .clone()
            .map(Arc::new)
            .or_else(|| snapshot.hook(delivery.hook_id).cloned())
        {
            Some(hook) if hook.enabled => hook,
            Some(hook) => {
                let reason = match &hook.disabled_reason {
                    Some(why) => DeadLetterReason::Disabled(why.reason.clone()),
                    None => DeadLetterReason::HookDisabled,
                };
                let given_up = self.give_up(delivery, reason).await;
                self.settle(given_up, requeues).await?;
                return Ok(MessageOutcome::Done);
            }
            None => {
                let given_up = self.give_up(delivery, DeadLetterReason::HookDeleted).await;
                self.settle(given_up, requeues).await?;
                return Ok(MessageOutcome::Done);
            }
        };
        let name = EventName::of(&delivery.event);
        let delivered_as = name
            .delivered_as(&hook)
            .unwrap_or_else(|| delivery.event.event.clone());
        let key_fields = snapshot
            .catalogue
            .event(&delivery.event.source, &delivery.event.event)
            .and_then(|spec| spec.unique.clone());
        let advanced = self
            .advance(
                &hook,
                &delivered_as,
                delivery,
                key_fields.as_deref(),
                context,
                Arrival {
                    origin: Origin::Queue,
                    requeues,
                },
            )
            .await;
        self.settle(advanced, requeues).await?;
        Ok(MessageOutcome::Done)
    }

    /// The most times `delivery` may be queued: what its hook's retry schedule can need
    /// ([`RetrySchedule::max_requeues`]), the deployment's schedule for a hook that is gone.
    /// `None` when the hooks cannot be read now: the next receive checks again.
    async fn requeue_limit(&self, delivery: &Delivery) -> Option<u32> {
        let snapshot;
        let hook = match &delivery.hook {
            Some(hook) => Some(hook),
            None => {
                snapshot = self.snapshot.get().await.ok()?;
                snapshot.hook(delivery.hook_id).map(|hook| hook.as_ref())
            }
        };
        let defaults = &self.settings.retry;
        let max_delay = self.settings.max_delay;
        Some(match hook.and_then(|hook| hook.delivery.retry.as_ref()) {
            Some(policy) => retry::hook_schedule(policy, defaults).max_requeues(max_delay),
            None => defaults.max_requeues(max_delay),
        })
    }

    /// Takes a delivery through its remaining steps: the snooze/on_change decision when still to
    /// be made, the attempt, and what follows it. An infrastructure failure stops it with the
    /// step to redo.
    async fn advance(
        &self,
        hook: &Hook,
        event_name: &str,
        mut delivery: Delivery,
        key_fields: Option<&[String]>,
        context: &RecordContext,
        arrival: Arrival,
    ) -> Result<(), Stuck> {
        let deadline = context.deadline;
        match std::mem::take(&mut delivery.step) {
            Step::Attempt => {
                self.attempt(hook, event_name, delivery, deadline, arrival)
                    .await
            }
            Step::DeadLetter { reason } => self.give_up(delivery, reason).await,
            Step::Decide => {
                let key = event_key(&delivery.event.data, key_fields);
                // In the batch's order for this hook (spec §10); parallel across hooks.
                let turn = context.turn.as_ref().filter(|_| has_windows(hook));
                if let Some(turn) = turn {
                    turn.wait(hook.id).await;
                }
                let decided = decide(
                    self.windows.as_ref(),
                    hook.id,
                    hook.snooze,
                    hook.on_change,
                    &key,
                    &delivery.id.to_string(),
                )
                .await;
                if let Some(turn) = turn {
                    turn.done(hook.id);
                }
                match decided {
                    Ok(Decision::Deliver) => {
                        self.attempt(hook, event_name, delivery, deadline, arrival)
                            .await
                    }
                    Ok(Decision::Drop(why)) => {
                        Stats::bump(match why {
                            Dropped::Snoozed => &self.stats.snoozed,
                            Dropped::Unchanged => &self.stats.unchanged,
                        });
                        tracing::debug!(hook_id = %hook.id, delivery_id = %delivery.id, %why, "event dropped");
                        Ok(())
                    }
                    Err(err) => {
                        delivery.step = Step::Decide;
                        Err(Stuck::new(delivery, err))
                    }
                }
            }
        }
    }

    /// What a stopped delivery comes to: parked on the deliveries queue, or, when that fails too,
    /// an error that keeps the message it came from on its queue. `requeues`: its counts as it
    /// arrived (see [`Arrival`]).
    ///
    /// A park waits [`DispatchSettings::park_delay`], doubled for each park or deferral in a row
    /// before it ([`retry::requeue_delay`]): an outage does not pass faster by being asked every
    /// 5 s, and the loop guard's margin then lasts hours. Never before a retry's own time.
    async fn settle(
        &self,
        advanced: Result<(), Stuck>,
        requeues: Requeues,
    ) -> Result<(), DispatchError> {
        let Err(Stuck {
            delivery,
            error,
            attempted,
        }) = advanced
        else {
            return Ok(());
        };
        let (hook_id, delivery_id) = (delivery.hook_id, delivery.id);
        let before = match attempted {
            true => Requeues {
                in_row: 0,
                ..requeues
            },
            false => requeues,
        };
        let park = retry::requeue_delay(
            self.settings.park_delay,
            before.in_row,
            self.longest_delay(),
        );
        let until_due = u64::try_from(delivery.not_before - now_millis()).unwrap_or(0);
        let delay = park.max(Duration::from_millis(until_due));
        match self.enqueue(&delivery, before.held(), delay).await {
            Ok(()) => {
                tracing::warn!(
                    %hook_id, %delivery_id, attempt = delivery.attempt, step = ?delivery.step,
                    error = %error, park_s = delay.as_secs(), parks_in_row = before.held().in_row,
                    "delivery stopped by an infrastructure failure; parked"
                );
                Ok(())
            }
            Err(source) => {
                tracing::error!(
                    %hook_id, %delivery_id, attempt = delivery.attempt, step = ?delivery.step,
                    error = %error, park_error = %source,
                    "delivery stopped by an infrastructure failure and could not be parked; \
                     its message stays on its queue"
                );
                Err(DispatchError::Parking {
                    hook_id,
                    delivery_id,
                    source,
                })
            }
        }
    }

    /// One attempt of a delivery, its record in the log, and what follows: done, a retry
    /// scheduled, or a dead letter. The attempt runs only inside its hook's lane (see [`lanes`]);
    /// when it cannot run now it is handed back to the deliveries queue, not waited for.
    async fn attempt(
        &self,
        hook: &Hook,
        event_name: &str,
        mut delivery: Delivery,
        deadline: Option<Deadline>,
        arrival: Arrival,
    ) -> Result<(), Stuck> {
        let Arrival { origin, requeues } = arrival;
        // The longest this attempt may take; an attempt that may not finish before the
        // invocation ends is parked instead of cut off.
        let bound = self.executor.time_bound(hook) + ATTEMPT_SLACK;
        if deadline.is_some_and(|d| !d.allows(bound)) {
            Stats::bump(&self.stats.deadline_parked);
            delivery.step = Step::Attempt;
            return Err(Stuck::new(delivery, DispatchError::Deadline));
        }
        if let Some(rate) = hook.max_rate.filter(|_| !delivery.rate_slot) {
            let Slot::After(wait) =
                self.limiter
                    .reserve(hook.id, rate, Instant::now(), Duration::MAX)
            else {
                unreachable!("a reservation without a bound always gets a slot")
            };
            if wait > self.settings.rate_wait {
                // Over the rate: the slot is this delivery's; it waits for it on the queue, once,
                // holding nothing here.
                Stats::bump(&self.stats.rate_limited);
                delivery.rate_slot = true;
                return self.defer(delivery, requeues, wait, None).await;
            }
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }
        let pass = match self.lanes.admit(hook, delivery.id, origin).await {
            Admission::Enter(pass) => pass,
            Admission::Later { after, held } => {
                // A slot reserved for it is lost; it asks the limiter again when it comes back.
                delivery.rate_slot = false;
                return self.defer(delivery, requeues, after, Some(held)).await;
            }
            Admission::InFlight => {
                // The copy in flight records the attempt and schedules what follows.
                Stats::bump(&self.stats.in_flight_skipped);
                tracing::debug!(hook_id = %hook.id, delivery_id = %delivery.id, "already in flight here; this copy is dropped");
                return Ok(());
            }
            Admission::Gone => {
                let reason = format!("target answered {} Gone", protection::GONE);
                return self
                    .give_up(delivery, DeadLetterReason::Disabled(reason))
                    .await;
            }
        };
        // Then one of the process's slots, bounded by the wait allowed.
        let Ok(Ok(_slot)) = tokio::time::timeout(PROCESS_SLOT_WAIT, self.in_flight.acquire()).await
        else {
            drop(pass);
            delivery.rate_slot = false;
            return self
                .defer(delivery, requeues, PROCESS_SLOT_WAIT, Some(Held::Busy))
                .await;
        };
        delivery.rate_slot = false;
        let started = Instant::now();
        let at = now_millis();
        let run = self.executor.execute(
            hook,
            event_name,
            &delivery.event,
            Some((delivery.id, delivery.attempt)),
            i64::from(std::process::id()),
        );
        // Inside an event's processing a request gets the inline budget: one that takes longer
        // is cut and sent again from the deliveries queue, with the hook's own timeouts, so the
        // event (on AWS: its whole batch) never waits for a slow target.
        let budget = self.settings.lanes.inline_budget;
        let sends_http = matches!(
            hook.handler,
            Handler::Webhook(_) | Handler::WebhookCustom(_)
        );
        let inline = origin == Origin::Event && sends_http && budget < bound;
        let executed = match tokio::time::timeout(if inline { budget } else { bound }, run).await {
            Ok(executed) => executed,
            Err(_) if inline => {
                return self
                    .cut(hook.id, (delivery, requeues), pass, (at, started), bound)
                    .await
                    .map_err(Stuck::after_attempt)
            }
            Err(_) => Executed::Http(Err(SendError::Timeout)),
        };
        let latency = started.elapsed();
        self.stats.record_latency(latency);
        let (status_code, mut error, body) = self.summarize(&executed);
        let policy = hook.delivery.retry.as_ref();
        let verdict = match policy {
            Some(policy) => retry::restrict(executed.verdict(), policy.on, status_code),
            None => executed.verdict(),
        };
        let outcome = match (&verdict, status_code) {
            (_, Some(protection::GONE)) => Outcome::Gone,
            (Verdict::Delivered, _) => Outcome::Delivered,
            _ => Outcome::Failed,
        };
        // The ping of a hook change says nothing about its event deliveries (see `protect`).
        pass.finish(match delivery.hook {
            Some(_) => lanes::Outcome::Neutral,
            None => lanes::outcome_of(&executed, outcome == Outcome::Gone),
        });
        let disabled = self.protect(hook, &delivery, outcome, at / 1000).await;
        if let Some(reason) = &disabled {
            // The delivery log says why this delivery ends here.
            error = Some(match error {
                Some(error) => format!("{error}; the hook was disabled: {reason}"),
                None => format!("the hook was disabled: {reason}"),
            });
        }

        let next_delay = match &verdict {
            Verdict::Retry { after } => match policy {
                Some(policy) => retry::hook_schedule(policy, &self.settings.retry)
                    .next_delay(delivery.attempt, *after),
                None => self.settings.retry.next_delay(delivery.attempt, *after),
            },
            _ => None,
        };
        let status = match (&verdict, next_delay) {
            _ if disabled.is_some() => DeliveryStatus::Failed,
            (Verdict::Delivered, _) => DeliveryStatus::Delivered,
            (Verdict::Retry { .. }, Some(_)) => DeliveryStatus::Pending,
            _ => DeliveryStatus::Failed,
        };
        let attempt = Attempt {
            number: delivery.attempt,
            at,
            status: status_code,
            latency_ms: latency.as_millis() as u64,
            error: error.clone(),
            response_body: body,
        };
        self.record(hook.id, &delivery, attempt, status).await;
        let followed = match disabled {
            Some(reason) => {
                self.give_up(after(delivery), DeadLetterReason::Disabled(reason))
                    .await
            }
            None => {
                self.follow_up(hook.id, (delivery, requeues), verdict, next_delay, error)
                    .await
            }
        };
        followed.map_err(Stuck::after_attempt)
    }

    /// An attempt cut at the inline budget: logged as such, and sent again from the deliveries
    /// queue as the next attempt, due when the cut one would have timed out (`bound` after it
    /// started: the target may still be working on it until then, and a delivery id is never in
    /// flight twice). It says the hook is slow, not that it fails: neither its circuit nor its
    /// `failing_since` hears of it. The resend follows an attempt, as a retry does: the target
    /// did get the cut one, and its due time is that attempt's bound, not bad weather to back off
    /// from (a cut happens only inside an event's processing, so never twice in a row).
    async fn cut(
        &self,
        hook_id: Uuid,
        (delivery, requeues): (Delivery, Requeues),
        pass: lanes::Pass,
        (at, started): (i64, Instant),
        bound: Duration,
    ) -> Result<(), Stuck> {
        pass.finish(lanes::Outcome::Cut);
        Stats::bump(&self.stats.cut);
        let budget = self.settings.lanes.inline_budget;
        let entry = Attempt {
            number: delivery.attempt,
            at,
            status: None,
            latency_ms: started.elapsed().as_millis() as u64,
            error: Some(format!(
                "no answer within the {} ms an attempt may take inside an event's processing; \
                 sent again from the deliveries queue",
                budget.as_millis()
            )),
            response_body: None,
        };
        self.record(hook_id, &delivery, entry, DeliveryStatus::Pending)
            .await;
        let mut next = after(delivery);
        let due = bound.saturating_sub(started.elapsed());
        next.not_before = now_millis() + due.as_millis() as i64;
        match self.enqueue(&next, requeues.after_attempt(), due).await {
            Ok(()) => Ok(()),
            Err(err) => Err(Stuck::new(next, err)),
        }
    }

    /// Endpoint protection after an attempt (see [`protection`]): records `failing_since` when it
    /// changes, and disables the hook on a `410 Gone` or after failing for
    /// [`DispatchSettings::pause_after`]. Returns the reason when this attempt disabled the hook.
    /// A store failure here changes nothing about the delivery (it is logged; the next attempt
    /// decides again), so protection never costs a delivery.
    async fn protect(
        &self,
        hook: &Hook,
        delivery: &Delivery,
        outcome: Outcome,
        now: i64,
    ) -> Option<String> {
        if delivery.hook.is_some() {
            // The ping of a hook change (the hook travels with it, as it may be deleted) is no
            // event delivery: its outcome neither disables the hook nor counts as a failure.
            return None;
        }
        let pause_after = self.settings.pause_after;
        if !protection::needs_write(hook, outcome, now, pause_after) {
            return None;
        }
        let change =
            protection::record(self.hooks.as_ref(), hook.id, outcome, now, pause_after).await;
        match change {
            Ok(Change::None) => None,
            Ok(Change::Tracked) => {
                self.snapshot.invalidate();
                None
            }
            Ok(Change::Disabled { old, new }) => {
                self.snapshot.invalidate();
                self.executor.forget(hook.id);
                let reason = new
                    .disabled_reason
                    .as_ref()
                    .map(|why| why.reason.clone())
                    .unwrap_or_default();
                Stats::bump(&self.stats.hooks_disabled);
                tracing::warn!(hook_id = %hook.id, %reason, "hook disabled by endpoint protection");
                self.emit_disabled(&old, &new).await;
                Some(reason)
            }
            Err(err) => {
                tracing::warn!(hook_id = %hook.id, error = %err, ?outcome, "could not record the hook's failure state");
                None
            }
        }
    }

    /// The crud `update` and dao:crud events of a hook the dispatcher disabled, as the admin API
    /// emits for its changes. The hook is disabled already; a failed send is logged, not retried
    /// forever (the hook's `GET` still shows the change).
    async fn emit_disabled(&self, old: &Hook, new: &Hook) {
        let messages: Vec<Outgoing> = hook_change_events(Operation::Update, new, Some(old))
            .iter()
            .filter_map(|event| serde_json::to_string(event).ok())
            .map(Outgoing::now)
            .collect();
        for _ in 0..3 {
            match self.events.send_batch(messages.clone()).await {
                Ok(_) => return,
                Err(err) => {
                    tracing::warn!(hook_id = %new.id, error = %err, "could not emit the change events of a disabled hook");
                }
            }
        }
    }

    /// Writes an attempt to the delivery log. The log is for people: a failure to write it must
    /// not change what is delivered, so it is only logged.
    async fn record(
        &self,
        hook_id: Uuid,
        delivery: &Delivery,
        attempt: Attempt,
        status: DeliveryStatus,
    ) {
        if let Err(err) = self
            .log
            .record_attempt(
                DeliveryKey {
                    hook_id,
                    delivery_id: delivery.id,
                    created_at: delivery.created_at,
                },
                &delivery.event,
                attempt,
                status,
                self.settings.delivery_log_ttl,
            )
            .await
        {
            tracing::warn!(error = %err, delivery_id = %delivery.id, "could not record a delivery attempt");
        }
    }

    /// What follows an attempt with this verdict: done, a retry after `next_delay` (`None` when
    /// the schedule is over), or a dead letter. `error` is the attempt's, for the dead letter;
    /// `requeues`, its counts as it arrived.
    async fn follow_up(
        &self,
        hook_id: Uuid,
        (delivery, requeues): (Delivery, Requeues),
        verdict: Verdict,
        next_delay: Option<Duration>,
        error: Option<String>,
    ) -> Result<(), Stuck> {
        match (verdict, next_delay) {
            (Verdict::Delivered, _) => {
                Stats::bump(&self.stats.delivered);
                tracing::debug!(%hook_id, delivery_id = %delivery.id, attempt = delivery.attempt, "delivered");
                Ok(())
            }
            (Verdict::Retry { .. }, Some(delay)) => {
                Stats::bump(&self.stats.retried);
                tracing::info!(
                    %hook_id, delivery_id = %delivery.id, attempt = delivery.attempt,
                    retry_in_s = delay.as_secs(), error = error.as_deref().unwrap_or_default(),
                    "delivery failed, will retry"
                );
                let mut next = delivery;
                next.attempt += 1;
                next.not_before = now_millis() + delay.as_millis() as i64;
                match self.enqueue(&next, requeues.after_attempt(), delay).await {
                    Ok(()) => Ok(()),
                    Err(err) => Err(Stuck::new(next, err)),
                }
            }
            (Verdict::Retry { .. }, None) => {
                let reason = DeadLetterReason::GaveUp {
                    attempts: delivery.attempt,
                    error: error.unwrap_or_else(|| "no answer".into()),
                };
                self.give_up(after(delivery), reason).await
            }
            (Verdict::Failed(reason), _) => {
                self.give_up(after(delivery), DeadLetterReason::Failed(reason))
                    .await
            }
        }
    }

    /// Status, error and capped body of an execution, for the delivery log.
    fn summarize(&self, executed: &Executed) -> (Option<u16>, Option<String>, Option<String>) {
        let cap = |text: &str| {
            let mut end = text.len().min(self.settings.logged_body_limit);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text[..end].to_string()
        };
        match executed {
            Executed::Http(Ok(response)) => {
                let error = (!(200..300).contains(&response.status))
                    .then(|| format!("target answered {}", response.status));
                (Some(response.status), error, Some(cap(&response.body)))
            }
            Executed::Http(Err(err)) => (None, Some(err.to_string()), None),
            Executed::Logged(_) => (None, None, None),
            Executed::Lambda(Ok(value)) => (None, None, Some(cap(&value.to_string()))),
            Executed::Lambda(Err(err)) => (None, Some(err.to_string()), None),
            Executed::Unprepared(reason) => (None, Some(reason.to_string()), None),
        }
    }

    /// Hands a delivery whose attempt cannot run now back to the deliveries queue: no attempt was
    /// made, so its number stays. `held` says why when its lane held it: it is due after `after`,
    /// doubled for each park or deferral in a row before it ([`retry::requeue_delay`]), as a lane
    /// that stays full or a circuit that stays open is bad weather too. `None`: waiting for the
    /// `max_rate` slot reserved for it, due exactly then, as the slot is booked (the limiter has
    /// moved past it) and its time is no guess; it still counts in the row, and the lane
    /// deferrals it can alternate with grow the faster for it.
    async fn defer(
        &self,
        mut delivery: Delivery,
        requeues: Requeues,
        after: Duration,
        held: Option<Held>,
    ) -> Result<(), Stuck> {
        let delay = match held {
            Some(_) => retry::requeue_delay(after, requeues.in_row, self.longest_delay()),
            None => after,
        };
        if held.is_some() {
            Stats::bump(&self.stats.deferred);
        }
        tracing::debug!(
            hook_id = %delivery.hook_id, delivery_id = %delivery.id, attempt = delivery.attempt,
            after_ms = delay.as_millis() as u64, in_row = requeues.held().in_row,
            held = held.map(|h| h.to_string()).unwrap_or_else(|| "max_rate".into()),
            "attempt deferred to the deliveries queue"
        );
        delivery.step = Step::Attempt;
        delivery.not_before = now_millis() + delay.as_millis() as i64;
        match self.enqueue(&delivery, requeues.held(), delay).await {
            Ok(()) => Ok(()),
            Err(err) => Err(Stuck::new(delivery, err)),
        }
    }

    /// The longest one deliveries-queue message is held back: the cap of the backoff of parks and
    /// deferrals, and the length of a chained leg.
    fn longest_delay(&self) -> Duration {
        self.settings.max_delay.min(MAX_DELAY)
    }

    /// Puts a delivery on the deliveries queue once more, in a message counting `requeues` (its
    /// counts one more time: see [`Requeues`]), due after `delay` (chained past
    /// [`DispatchSettings::max_delay`]), in its hook's group of the fair queue.
    async fn enqueue(
        &self,
        delivery: &Delivery,
        requeues: Requeues,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let body = serde_json::to_string(&Queuing::new(delivery, requeues))
            .map_err(QueueError::backend)?;
        self.deliveries
            .send(
                Outgoing::delayed(body, delay.min(self.longest_delay()))
                    .in_group(delivery.hook_id.to_string()),
            )
            .await?;
        Ok(())
    }

    /// The state of a hook's lane in this dispatcher (slots in use, pace, circuit), if it has
    /// made attempts here.
    pub fn lane(&self, hook_id: Uuid) -> Option<lanes::LaneView> {
        self.lanes.view(hook_id)
    }

    /// Sends a delivery to the dead-letter queue with its reason, in the one dead-letter format:
    /// the body is the delivery as the deliveries queue carries it (so it can be redriven there),
    /// the reason is the message's `reason` attribute. Without a hop count: a redriven dead letter
    /// starts a new chain.
    async fn give_up(&self, mut delivery: Delivery, reason: DeadLetterReason) -> Result<(), Stuck> {
        delivery.step = Step::Attempt;
        let sent = match serde_json::to_string(&delivery) {
            Ok(body) => {
                self.dead_letters
                    .send(Outgoing::dead_letter(body, &reason))
                    .await
            }
            Err(err) => Err(QueueError::backend(err)),
        };
        if let Err(err) = sent {
            delivery.step = Step::DeadLetter { reason };
            return Err(Stuck::new(delivery, err));
        }
        Stats::bump(&self.stats.failed);
        Stats::bump(&self.stats.dead_lettered);
        tracing::warn!(
            hook_id = %delivery.hook_id, delivery_id = %delivery.id,
            next_attempt = delivery.attempt, %reason, "delivery failed for good; dead-lettered"
        );
        Ok(())
    }
}

/// A delivery after its current attempt was made: a dead letter carries the attempt to make next,
/// as every delivery message does, so that a redriven one is numbered on.
fn after(mut delivery: Delivery) -> Delivery {
    delivery.attempt = delivery.attempt.saturating_add(1);
    delivery
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::parse_event;

    #[test]
    fn a_parked_delivery_keeps_its_step_and_a_plain_one_attempts() {
        let event = parse_event(r#"{"source":"crud","event":"consumers"}"#).unwrap();
        let mut delivery = Delivery::new(&event, Uuid::new_v4());
        let plain = serde_json::to_value(&delivery).unwrap();
        assert!(plain.get("step").is_none(), "{plain}");
        assert_eq!(
            serde_json::from_value::<Delivery>(plain).unwrap().step,
            Step::Attempt
        );
        for step in [
            Step::Decide,
            Step::DeadLetter {
                reason: DeadLetterReason::GaveUp {
                    attempts: 3,
                    error: "target answered 503".into(),
                },
            },
            Step::DeadLetter {
                reason: DeadLetterReason::Failed("target answered 410 Gone".into()),
            },
        ] {
            delivery.step = step;
            let text = serde_json::to_string(&delivery).unwrap();
            assert_eq!(serde_json::from_str::<Delivery>(&text).unwrap(), delivery);
        }
    }

    #[test]
    fn a_queued_delivery_carries_its_counts_and_older_messages_have_none() {
        let event = parse_event(r#"{"source":"crud","event":"consumers"}"#).unwrap();
        let delivery = Delivery::new(&event, Uuid::new_v4());
        let counts = Requeues { hops: 7, in_row: 3 };
        let text = serde_json::to_string(&Queuing::new(&delivery, counts)).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["hops"], 7, "{value}");
        assert_eq!(value["requeues_in_row"], 3, "{value}");
        assert_eq!(value["id"], delivery.id.to_string(), "{value}");
        let queued: Queued = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (queued.delivery, queued.hops, queued.requeues_in_row),
            (delivery.clone(), 7, 3)
        );
        // None in a row (a retry's message): only the hops.
        let retry =
            serde_json::to_string(&Queuing::new(&delivery, counts.after_attempt())).unwrap();
        assert!(!retry.contains("requeues_in_row"), "{retry}");
        let queued: Queued = serde_json::from_str(&retry).unwrap();
        assert_eq!((queued.hops, queued.requeues_in_row), (8, 0));
        // A message queued before they were counted, or a redriven dead letter (the delivery
        // alone): a new chain.
        let plain = serde_json::to_string(&delivery).unwrap();
        assert!(!plain.contains("hops"), "{plain}");
        let queued: Queued = serde_json::from_str(&plain).unwrap();
        assert_eq!(
            (queued.delivery, queued.hops, queued.requeues_in_row),
            (delivery, 0, 0)
        );
    }

    #[test]
    fn a_park_or_deferral_adds_to_the_row_a_leg_keeps_it_and_an_attempt_ends_it() {
        let arrived = Requeues { hops: 4, in_row: 2 };
        assert_eq!(arrived.held(), Requeues { hops: 5, in_row: 3 });
        assert_eq!(arrived.leg(), Requeues { hops: 5, in_row: 2 });
        assert_eq!(arrived.after_attempt(), Requeues { hops: 5, in_row: 0 });
        let full = Requeues {
            hops: u32::MAX,
            in_row: u32::MAX,
        };
        assert_eq!(full.held(), full);
    }

    #[test]
    fn delivery_ids_are_stable_per_event_and_hook() {
        let event = parse_event(r#"{"source":"crud","event":"consumers"}"#).unwrap();
        let hook = Uuid::new_v4();
        assert_eq!(
            Delivery::new(&event, hook).id,
            Delivery::new(&event, hook).id
        );
        assert_ne!(
            Delivery::new(&event, hook).id,
            Delivery::new(&event, Uuid::new_v4()).id
        );
    }
}

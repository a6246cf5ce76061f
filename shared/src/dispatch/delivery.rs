//! The queued delivery: one (event, hook) pair on its way, the step it is at, and the counts its
//! deliveries-queue message carries (spec §8).
//!
//! **Attempt numbers** count every attempt the target may have seen: a message received for the
//! k-th time may have made its attempts k-1 times before (a crash, a timeout), so the first attempts
//! of an event received the k-th time are numbered k, and a delivery message's attempt goes up by
//! its receive count minus one. The retry schedule follows the same numbers: a delivery never gets
//! more attempts than the schedule allows, redeliveries included.
//!
//! **Copies**: the first copy of a delivery sends its attempt number without asking: attempt 1,
//! or the number its previous attempt's record reserved for it. A copy that may not be the first
//! (its message received more than once, or sent again after a lost reply, see
//! [`Received::possible_receives`], a number no record reserved) claims its number in the
//! delivery log first, and goes out above every number handed out
//! ([`DeliveryLog::claim_attempt`]): a target never sees one attempt number twice, and a typical
//! attempt costs the log one write.
//!
//! [`Received::possible_receives`]: crate::queue::Received::possible_receives
//! [`DeliveryLog::claim_attempt`]: crate::delivery_log::DeliveryLog::claim_attempt
//!
//! **Hops**: every time a delivery is put on the deliveries queue (a retry, each 15-minute leg of
//! a longer delay, a deferral, a park) its message counts one more `hops`. On AWS each of these is
//! one more invocation of the dispatch function by its own queue, a loop Lambda stops after 16
//! unless the function allows it (the template does, `RecursiveLoop`); the hop count is our own
//! bound instead: a delivery queued more often than its retry schedule can need
//! ([`RetrySchedule::max_requeues`]) is dead-lettered as a loop, so a bug cannot keep a delivery
//! going round forever.
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
//!
//! [`RetrySchedule::max_requeues`]: crate::outbound::retry::RetrySchedule::max_requeues
//! [`retry::REQUEUES_PER_ATTEMPT`]: crate::outbound::retry::REQUEUES_PER_ATTEMPT
//! [`retry::requeue_delay`]: crate::outbound::retry::requeue_delay
//! [`DispatchSettings::park_delay`]: super::DispatchSettings::park_delay
//! [`DispatchSettings::max_delay`]: super::DispatchSettings::max_delay

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::lanes::Origin;
use crate::delivery_log::{time_of, timed_id, DeliveryKey};
use crate::events::Event;
use crate::model::Hook;
use crate::queue::DeadLetterReason;

/// Namespace of the name part of delivery ids (UUID v5 of event id + hook id; see [`timed_id`]).
const DELIVERY_NAMESPACE: Uuid = Uuid::from_u128(0x6e0c_7a4b_2f1d_4f7e_9b61_0d1c_5a2e_8f30);

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
    /// Its attempt number may have gone out already (see "Copies" above): the attempt claims its
    /// number first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub claim: bool,
    /// When this copy's message was received here; not carried to the next message.
    #[serde(skip)]
    pub received: Option<std::time::Instant>,
}

impl Delivery {
    /// The delivery of `event` to `hook`; its id is the same whenever this pair is dispatched,
    /// and carries its time: the event's timestamp ([`timed_id`]).
    pub fn new(event: &Event, hook_id: Uuid) -> Delivery {
        let mut name = [0u8; 32];
        name[..16].copy_from_slice(event.id.as_bytes());
        name[16..].copy_from_slice(hook_id.as_bytes());
        let id = timed_id(Uuid::new_v5(&DELIVERY_NAMESPACE, &name), event.timestamp);
        Delivery {
            id,
            hook_id,
            attempt: 1,
            created_at: time_of(id).unwrap_or_default(),
            not_before: 0,
            event: event.clone(),
            hook: None,
            step: Step::Attempt,
            rate_slot: false,
            claim: false,
            received: None,
        }
    }

    /// The key of its record in the delivery log.
    pub(super) fn log_key(&self) -> DeliveryKey {
        DeliveryKey {
            hook_id: self.hook_id,
            delivery_id: self.id,
            created_at: self.created_at,
        }
    }
}

/// A delivery after its current attempt was made, when no record reserved the next number: a
/// dead letter carries the attempt to make next, as every delivery message does, so that a
/// redriven one is numbered on, and claims it, as nothing reserved it.
pub(super) fn after(mut delivery: Delivery) -> Delivery {
    delivery.attempt = delivery.attempt.saturating_add(1);
    delivery.claim = true;
    delivery
}

/// A delivery after its current attempt was made, numbered as the attempt's record reserved
/// (`None`: the record failed, so the next number is claimed before it is sent).
pub(super) fn retry_of(delivery: Delivery, reserved: Option<u32>) -> Delivery {
    match reserved {
        Some(number) => Delivery {
            attempt: number,
            claim: false,
            ..delivery
        },
        None => after(delivery),
    }
}

/// A deliveries-queue message as it is sent: the delivery, how many times it has been queued
/// (see "Hops" above) and how many of those in a row were parks and deferrals (see "Bad
/// weather"). Kept beside the [`Delivery`] rather than in it, as they describe the message rather
/// than the delivery: a dead letter carries neither, so a redriven one starts a new chain.
#[derive(Serialize)]
pub(super) struct Queuing<'a> {
    #[serde(flatten)]
    delivery: &'a Delivery,
    hops: u32,
    #[serde(skip_serializing_if = "is_zero")]
    requeues_in_row: u32,
}

impl<'a> Queuing<'a> {
    pub(super) fn new(delivery: &'a Delivery, requeues: Requeues) -> Queuing<'a> {
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
pub(super) struct Queued {
    #[serde(flatten)]
    pub(super) delivery: Delivery,
    #[serde(default)]
    pub(super) hops: u32,
    #[serde(default)]
    pub(super) requeues_in_row: u32,
}

impl Queued {
    /// The message's counts.
    pub(super) fn requeues(&self) -> Requeues {
        Requeues {
            hops: self.hops,
            in_row: self.requeues_in_row,
        }
    }
}

/// How many times a delivery has been put on the deliveries queue: 0 for one made from an event,
/// its message's counts for one from the deliveries queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Requeues {
    /// Every time, whatever for (see "Hops" above).
    pub(super) hops: u32,
    /// The parks and deferrals since its last attempt ran (see "Bad weather" above).
    pub(super) in_row: u32,
}

impl Requeues {
    /// The counts of the message that follows an attempt (a retry, the resend of a cut attempt):
    /// one more hop, none in a row.
    pub(super) fn after_attempt(self) -> Requeues {
        Requeues {
            hops: self.hops.saturating_add(1),
            in_row: 0,
        }
    }

    /// The counts of the next leg of a chained delay: one more hop, the row as it was.
    pub(super) fn leg(self) -> Requeues {
        Requeues {
            hops: self.hops.saturating_add(1),
            in_row: self.in_row,
        }
    }

    /// The counts of a park or a deferral: one more hop, one more in a row.
    pub(super) fn held(self) -> Requeues {
        Requeues {
            hops: self.hops.saturating_add(1),
            in_row: self.in_row.saturating_add(1),
        }
    }
}

/// Where a delivery being handled comes from, and how many times it has been queued so far.
#[derive(Debug, Clone, Copy)]
pub(super) struct Arrival {
    pub(super) origin: Origin,
    pub(super) requeues: Requeues,
}

impl Arrival {
    pub(super) const FROM_EVENT: Arrival = Arrival {
        origin: Origin::Event,
        requeues: Requeues { hops: 0, in_row: 0 },
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::parse_event;
    use serde_json::Value;

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
        assert_eq!(queued.requeues(), counts);
        assert_eq!(queued.delivery, delivery);
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

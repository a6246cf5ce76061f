//! Parking (spec §8, isolation): a delivery stopped by the dispatcher's own infrastructure (the
//! window store, the retry enqueue, the dead-letter send) is put on the deliveries queue as it
//! stands, with the [`Step`](super::Step) it stopped at, so the event message still completes and
//! the hooks already served are not served again. Only when parking fails too does the message it
//! came from stay on its queue.

use std::time::Duration;

use super::delivery::{Delivery, Requeues};
use super::{DispatchError, Dispatcher};
use crate::events::now_millis;
use crate::outbound::retry;

/// A delivery stopped by an infrastructure failure: the delivery as it stands, with the step to
/// redo, and the failure.
pub(super) struct Stuck {
    delivery: Delivery,
    error: DispatchError,
    /// An attempt ran before it stopped (its retry or its dead letter could not be sent): its
    /// park is the first in a row.
    attempted: bool,
}

impl Stuck {
    pub(super) fn new(delivery: Delivery, error: impl Into<DispatchError>) -> Stuck {
        Stuck {
            delivery,
            error: error.into(),
            attempted: false,
        }
    }

    /// The same, stopped after an attempt ran.
    pub(super) fn after_attempt(self) -> Stuck {
        Stuck {
            attempted: true,
            ..self
        }
    }
}

impl Dispatcher {
    /// What a stopped delivery comes to: parked on the deliveries queue, or, when that fails too,
    /// an error that keeps the message it came from on its queue. `requeues`: its counts as it
    /// arrived (see [`Arrival`](super::delivery::Arrival)).
    ///
    /// A park waits [`DispatchSettings::park_delay`], doubled for each park or deferral in a row
    /// before it ([`retry::requeue_delay`]): an outage does not pass faster by being asked every
    /// 5 s, and the loop guard's margin then lasts hours. Never before a retry's own time.
    ///
    /// [`DispatchSettings::park_delay`]: super::DispatchSettings::park_delay
    pub(super) async fn settle(
        &self,
        advanced: Result<(), Stuck>,
        requeues: Requeues,
    ) -> Result<(), DispatchError> {
        let Err(Stuck {
            mut delivery,
            error,
            attempted,
        }) = advanced
        else {
            return Ok(());
        };
        if !attempted {
            delivery.claim |= super::follow_up::unreserved_first_attempt(&delivery);
        }
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
}

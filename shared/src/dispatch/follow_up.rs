//! What follows an attempt, or stands in for one (spec §8): a retry on the deliveries queue, a
//! deferral when the hook's lane or `max_rate` holds the attempt back, the dead letter when the
//! attempts are over, and the one way a delivery is put on the deliveries queue.

use std::time::Duration;

use uuid::Uuid;

use super::delivery::{after, retry_of, Delivery, Queuing, Requeues, Step};
use super::lanes::Held;
use super::park::Stuck;
use super::{DeadLetterReason, Dispatcher};
use crate::events::now_millis;
use crate::metrics::Stats;
use crate::outbound::retry::{self, Verdict};
use crate::queue::{Outgoing, QueueError, MAX_DELAY};

impl Dispatcher {
    /// What follows an attempt with this verdict: done, a retry after `next_delay` (`None` when
    /// the schedule is over), or a dead letter. `error` is the attempt's, for the dead letter;
    /// `requeues`, its counts as it arrived; `reserved`, the retry's number as the attempt's
    /// record reserved it.
    pub(super) async fn follow_up(
        &self,
        hook_id: Uuid,
        (delivery, requeues): (Delivery, Requeues),
        (verdict, next_delay, error): (Verdict, Option<Duration>, Option<String>),
        reserved: Option<u32>,
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
                let mut next = retry_of(delivery, reserved);
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

    /// Hands a delivery whose attempt cannot run now back to the deliveries queue: no attempt was
    /// made, so its number stays. `held` says why when its lane held it: it is due after `after`,
    /// doubled for each park or deferral in a row before it ([`retry::requeue_delay`]), as a lane
    /// that stays full or a circuit that stays open is bad weather too. `None`: waiting for the
    /// `max_rate` slot reserved for it, due exactly then, as the slot is booked (the limiter has
    /// moved past it) and its time is no guess; it still counts in the row, and the lane
    /// deferrals it can alternate with grow the faster for it.
    pub(super) async fn defer(
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
        delivery.claim |= unreserved_first_attempt(&delivery);
        match self.enqueue(&delivery, requeues.held(), delay).await {
            Ok(()) => Ok(()),
            Err(err) => Err(Stuck::new(delivery, err)),
        }
    }

    /// The longest one deliveries-queue message is held back: the cap of the backoff of parks and
    /// deferrals, and the length of a chained leg.
    pub(super) fn longest_delay(&self) -> Duration {
        self.settings.max_delay.min(MAX_DELAY)
    }

    /// Puts a delivery on the deliveries queue once more, in a message counting `requeues` (its
    /// counts one more time: see [`Requeues`]), due after `delay` (chained past
    /// [`DispatchSettings::max_delay`]), in its hook's group of the fair queue.
    ///
    /// [`DispatchSettings::max_delay`]: super::DispatchSettings::max_delay
    pub(super) async fn enqueue(
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

    /// Sends a delivery to the dead-letter queue with its reason, in the one dead-letter format:
    /// the body is the delivery as the deliveries queue carries it (so it can be redriven there),
    /// the reason is the message's `reason` attribute. Without a hop count: a redriven dead letter
    /// starts a new chain.
    pub(super) async fn give_up(
        &self,
        mut delivery: Delivery,
        reason: DeadLetterReason,
    ) -> Result<(), Stuck> {
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

/// Whether `delivery`, about to wait on the deliveries queue before its attempt, must claim its
/// number when it comes back: a first attempt, which no record reserved (a retry's number is its
/// previous attempt's reservation, and any other number is claimed already). While it waits, its
/// event may come back and be fanned out again, and that copy may send the number first.
pub(super) fn unreserved_first_attempt(delivery: &Delivery) -> bool {
    delivery.attempt == 1
}

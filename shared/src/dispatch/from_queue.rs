//! A delivery back from the deliveries queue (a retry, a leg of a longer delay, a deferral or a
//! park): checked against its loop bound, chained on when not due yet, dead-lettered when its
//! hook is gone or disabled, and otherwise taken on from the step it stopped at.

use std::sync::Arc;
use std::time::Duration;

use super::decide::WindowKey;
use super::delivery::{Arrival, Delivery, Queued, Step};
use super::lanes::Origin;
use super::matching::EventName;
use super::{DeadLetterReason, DispatchError, Dispatcher, MessageOutcome, RecordContext};
use crate::events::now_millis;
use crate::outbound::retry;

impl Dispatcher {
    /// See [`Dispatcher::handle_delivery_message_in`].
    pub(super) async fn handle_queued(
        &self,
        body: &str,
        receive_count: u32,
        context: &RecordContext,
    ) -> Result<MessageOutcome, DispatchError> {
        let queued: Queued = match serde_json::from_str(body) {
            Ok(queued) => queued,
            Err(err) => {
                return Ok(MessageOutcome::Reject(DeadLetterReason::Unparseable(
                    format!("not a delivery: {err}"),
                )))
            }
        };
        let requeues = queued.requeues();
        let Queued {
            mut delivery,
            hops,
            requeues_in_row,
        } = queued;
        // Another receive of this message may have sent its attempt, or queued what follows it.
        delivery.claim |= receive_count > 1;
        delivery.received = Some(context.received);
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
                &WindowKey::new(key_fields.as_deref()),
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
    /// ([`retry::RetrySchedule::max_requeues`]), the deployment's schedule for a hook that is
    /// gone. `None` when the hooks cannot be read now: the next receive checks again.
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
}

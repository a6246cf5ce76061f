//! An event fanned out: matched to the hooks of its source, one delivery per enabled hook (its
//! snooze/on_change decision in the batch's order), a not-sent entry in the delivery log for each
//! paused or disabled one, and Apigee's usage thresholds as notifications to Apigee webhooks
//! ([`crate::apigee::usage`]). Every delivery then runs to its end on its own.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use uuid::Uuid;

use super::decide::WindowKey;
use super::delivery::{Arrival, Delivery, Requeues, Step};
use super::matching::EventName;
use super::{DispatchError, Dispatcher, RecordContext};
use crate::apigee::usage::UsageThresholds;
use crate::delivery_log::{Attempt, DeliveryStatus, Then};
use crate::events::{now_millis, Event};
use crate::metrics::Stats;
use crate::model::Hook;

/// One hook's share of an event, run beside the other hooks'.
type Run<'a> = Pin<Box<dyn Future<Output = Result<(), DispatchError>> + Send + 'a>>;

/// Whether the hook's deliveries go through a snooze/on_change decision.
pub(super) fn has_windows(hook: &Hook) -> bool {
    hook.snooze.is_some() || hook.on_change.is_some()
}

impl Dispatcher {
    /// See [`Dispatcher::dispatch_in`].
    pub(super) async fn fan_out(
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
        // One window key for all the hooks the event goes to.
        let key = &WindowKey::new(key_fields.as_deref());
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
        // Apigee's stage takes the hooks it sends notifications instead of the event.
        let (notified, matched): (Vec<_>, Vec<_>) = matched
            .into_iter()
            .partition(|(hook, _)| self.usage.notifies(&event, hook));
        let mut runs: Vec<Run> = Vec::new();
        for (hook, delivered_as) in notified {
            // No snooze/on_change decision here: nothing for later records to wait on.
            if let Some(turn) = &context.turn {
                turn.done(hook.id);
            }
            let event = &event;
            runs.push(Box::pin(async move {
                self.notify(hook, &delivered_as, event, receive_count, context)
                    .await
            }));
        }
        for (hook, delivered_as) in matched {
            let mut delivery = Delivery::new(&event, hook.id);
            delivery.attempt = receive_count.max(1);
            delivery.claim = receive_count > 1;
            delivery.received = Some(context.received);
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
                        key,
                        context,
                        Arrival::FROM_EVENT,
                    )
                    .await;
                self.settle(advanced, Requeues::default()).await
            }));
        }
        for (hook, _) in disabled
            .into_iter()
            .filter(|(hook, _)| UsageThresholds::takes_events(hook))
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

    /// The notifications of usage `event` for Apigee webhook `hook` ([`UsageThresholds`]), in
    /// ascending order, each its own delivery, settled before the next is claimed. A store failure
    /// fails the event, which comes back.
    async fn notify(
        &self,
        hook: &Hook,
        event_name: &str,
        event: &Event,
        receive_count: u32,
        parent: &RecordContext,
    ) -> Result<(), DispatchError> {
        let mut notifications = self.usage.notifications(hook, event).await?;
        while let Some(notification) = notifications.next().await? {
            let mut delivery = Delivery::new(&notification, hook.id);
            delivery.attempt = receive_count.max(1);
            delivery.claim = receive_count > 1;
            delivery.received = Some(parent.received);
            if receive_count > 1 && self.served_before(hook.id, delivery.id).await {
                continue;
            }
            let context = RecordContext {
                turn: None,
                deadline: parent.deadline,
                received: parent.received,
            };
            let advanced = self
                .advance(
                    hook,
                    event_name,
                    delivery,
                    &WindowKey::new(None),
                    &context,
                    Arrival::FROM_EVENT,
                )
                .await;
            self.settle(advanced, Requeues::default()).await?;
        }
        Ok(())
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
        self.record(&delivery, entry, DeliveryStatus::NotSent, Then::Done)
            .await;
    }

    /// On a redelivered event: whether the log shows this delivery delivered already. Any doubt
    /// (no record, a log that cannot be read) answers no: a duplicate beats a loss.
    async fn served_before(&self, hook_id: Uuid, delivery_id: Uuid) -> bool {
        matches!(
            self.log.get(hook_id, delivery_id).await,
            Ok(Some(record)) if record.status == DeliveryStatus::Delivered
        )
    }
}

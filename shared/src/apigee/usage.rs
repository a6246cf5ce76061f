//! Apigee's usage thresholds, a stage of the dispatcher (spec §12).
//!
//! The dispatcher shows every event to this stage. For a `monetization`/`usage` event, the
//! Apigee webhooks it matched are not sent the event: each is sent one notification for every
//! usage target of its conditions on the usage's rate plan that the usage reaches and that no
//! earlier event of the billing cycle claimed, in ascending order. Any other event, or any other
//! hook, passes through untouched. The stage decides which hooks are its own and what they are
//! sent; the dispatcher delivers each notification as a delivery of its own.

use std::sync::Arc;

use serde_json::{Map, Value};
use uuid::Uuid;

use super::{webhook, MonetizationStore, StoreError, Threshold};
use crate::events::{now_millis, Event};
use crate::model::Hook;

/// The stage: the conditions and reached thresholds it reads, when this dispatcher has them.
#[derive(Default)]
pub(crate) struct UsageThresholds {
    /// Without it, usage events notify no Apigee webhook.
    store: Option<Arc<dyn MonetizationStore>>,
}

impl UsageThresholds {
    /// The stage reading conditions and claiming thresholds in `store`.
    pub(crate) fn new(store: Arc<dyn MonetizationStore>) -> UsageThresholds {
        UsageThresholds { store: Some(store) }
    }

    /// Whether `event` is sent to `hook` as notifications of reached thresholds instead of as
    /// itself: `hook` is an Apigee webhook and `event` is Edge usage.
    pub(crate) fn notifies(&self, event: &Event, hook: &Hook) -> bool {
        event.source == webhook::SOURCE
            && event.event == webhook::EVENT
            && webhook::is_edge_webhook(hook).is_some()
    }

    /// Whether `hook` is ever sent events as they are: an Apigee webhook is sent only the
    /// notifications made at dispatch, so a disabled one has no event delivery to log as not sent.
    pub(crate) fn takes_events(hook: &Hook) -> bool {
        webhook::is_edge_webhook(hook).is_none()
    }

    /// The notifications of usage `event` for Apigee webhook `hook` (one [`notifies`] accepted),
    /// read from its conditions; each threshold is claimed only as its notification is taken, so
    /// a store failure leaves the later ones unclaimed. A store failure fails the event, which
    /// comes back: the thresholds it claimed stay its own, so the redelivery sends them again
    /// (receivers de-duplicate by delivery id).
    ///
    /// [`notifies`]: UsageThresholds::notifies
    pub(crate) async fn notifications<'a>(
        &'a self,
        hook: &Hook,
        event: &'a Event,
    ) -> Result<Notifications<'a>, StoreError> {
        let none = Notifications(None);
        let Some(org) = webhook::is_edge_webhook(hook) else {
            return Ok(none);
        };
        let Some(store) = &self.store else {
            tracing::warn!(hook_id = %hook.id, "usage event for an Apigee webhook, but this dispatcher has no monetization store");
            return Ok(none);
        };
        let Some(usage) = event.data.as_object() else {
            tracing::info!(event_id = %event.id, "usage event without an object as data; ignored");
            return Ok(none);
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
            return Ok(none);
        };
        // Only the webhooks of the usage's own organisation: rate plan ids of different
        // organisations may be equal. An event without `orgName` was refused where it came in;
        // one dispatched directly is matched against no organisation.
        if text("orgName").as_deref() != Some(org) {
            return Ok(none);
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
        Ok(Notifications(Some(Reached {
            store: store.as_ref(),
            event,
            usage,
            threshold: Threshold {
                webhook: hook.id,
                developer,
                rate_plan,
                cycle,
                percent: 0,
            },
            targets: reached.into_iter(),
        })))
    }
}

/// The notifications of one usage event for one webhook, taken one at a time with
/// [`Notifications::next`].
pub(crate) struct Notifications<'a>(Option<Reached<'a>>);

/// The thresholds a usage reaches, still to be claimed.
struct Reached<'a> {
    store: &'a dyn MonetizationStore,
    event: &'a Event,
    usage: &'a Map<String, Value>,
    /// The threshold of each target but its percent.
    threshold: Threshold,
    /// (percent, the `UsageTarget` that lists it), ascending.
    targets: std::vec::IntoIter<(u32, String)>,
}

impl Notifications<'_> {
    /// The next notification: the next reached threshold this event claims, as an event of its
    /// own whose id derives from the usage event's and the percent. `None` when none is left.
    pub(crate) async fn next(&mut self) -> Result<Option<Event>, StoreError> {
        let Some(reached) = &mut self.0 else {
            return Ok(None);
        };
        for (percent, usage_target) in reached.targets.by_ref() {
            let threshold = Threshold {
                percent,
                ..reached.threshold.clone()
            };
            let event = reached.event;
            if !reached.store.claim(&threshold, event.id).await? {
                continue;
            }
            return Ok(Some(Event {
                id: Uuid::new_v5(&event.id, format!("usage-target:{percent}").as_bytes()),
                source: event.source.clone(),
                event: event.event.clone(),
                data: webhook::notification(reached.usage, percent, &usage_target, now_millis()),
                timestamp: event.timestamp,
            }));
        }
        Ok(None)
    }
}

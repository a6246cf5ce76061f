//! A delivery taken through its steps (see [`Step`]): the snooze/on_change decision when still to
//! be made, in the batch's order for its hook (spec §5, §10), then the attempt. A decision the
//! window store cannot make stops the delivery with [`Step::Decide`] to redo: the claimant of a
//! window is the delivery id, so a decision that did reach the store is found again, not made
//! twice.
//!
//! The window key of an event (a walk of its whole data, sorted and hashed: [`event_key`]) is the
//! same for every hook the event goes to, so one [`WindowKey`] is made per event and the first
//! decision that needs it computes it for all.

use std::sync::OnceLock;

use serde_json::Value;

use super::delivery::{Arrival, Delivery, Step};
use super::fan_out::has_windows;
use super::park::Stuck;
use super::{Dispatcher, RecordContext};
use crate::metrics::Stats;
use crate::model::Hook;
use crate::windows::{decide, event_key, Decision, Dropped};

/// The window key of the deliveries of one event, computed once, when a decision first needs it.
pub(super) struct WindowKey<'a> {
    /// The catalogue's `unique` fields of the event, if it declares them.
    unique: Option<&'a [String]>,
    key: OnceLock<String>,
}

impl<'a> WindowKey<'a> {
    /// The key of one event's deliveries: every [`WindowKey::of`] call must pass that event's
    /// data (each delivery carries a copy of it).
    pub(super) fn new(unique: Option<&'a [String]>) -> WindowKey<'a> {
        WindowKey {
            unique,
            key: OnceLock::new(),
        }
    }

    /// The key of `data`, the event's data: computed by the first call, then shared.
    fn of(&self, data: &Value) -> &str {
        self.key.get_or_init(|| event_key(data, self.unique))
    }
}

impl Dispatcher {
    /// Takes a delivery through its remaining steps: the snooze/on_change decision when still to
    /// be made, the attempt, and what follows it. An infrastructure failure stops it with the
    /// step to redo.
    pub(super) async fn advance(
        &self,
        hook: &Hook,
        event_name: &str,
        mut delivery: Delivery,
        key: &WindowKey<'_>,
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
                let key = key.of(&delivery.event.data);
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
                    key,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_window_key_of_an_event_is_computed_once_for_all_its_hooks() {
        let unique = ["ip".to_string()];
        let key = WindowKey::new(Some(&unique));
        let data = json!({"ip": "10.0.0.1", "at": 1});
        let first = key.of(&data).to_owned();
        assert_eq!(first, event_key(&data, Some(&unique)));
        // Later decisions take the key computed first, without walking the data again.
        assert_eq!(key.of(&json!({"ip": "10.0.0.2"})), first);
    }
}

//! One attempt of a delivery (spec §6, §8): within its hook's lane and `max_rate`, the
//! dispatcher's slots and the invocation's deadline; cut at the inline budget inside an event's
//! processing; its outcome fed to endpoint protection ([`protection`]), recorded in the delivery
//! log, and followed up (done, retried or dead-lettered).

use std::time::{Duration, Instant};

use super::delivery::{after, retry_of, Arrival, Delivery, Requeues, Step};
use super::lanes::{self, Admission, Held, Origin};
use super::park::Stuck;
use super::protection::{self, Change, Outcome, Slot};
use super::record::Summary;
use super::{DeadLetterReason, Deadline, DispatchError, Dispatcher, Executed};
use crate::delivery_log::{Attempt, DeliveryStatus, Then};
use crate::events::{hook_change_events, now_millis, Operation};
use crate::metrics::Stats;
use crate::model::{Handler, Hook};
use crate::outbound::http::SendError;
use crate::outbound::retry::{self, Verdict};
use crate::queue::Outgoing;

/// The longest an attempt that has its hook's slot waits for one of the dispatcher's
/// [`DispatchSettings::max_in_flight`] slots before it goes back on the deliveries queue.
///
/// [`DispatchSettings::max_in_flight`]: super::DispatchSettings::max_in_flight
const PROCESS_SLOT_WAIT: Duration = Duration::from_secs(1);

/// Time allowed past an attempt's planned bound (its timeouts and Lua budget) before it is cut
/// off as timed out: the bound is enforced by the HTTP client and the Lua budget, this is the
/// backstop that keeps every attempt within its lease whatever happens.
const ATTEMPT_SLACK: Duration = Duration::from_secs(2);

/// Where an attempt stands once it asked for its slots.
enum Admitted<'a> {
    /// It runs now, holding its hook's pass and one of the dispatcher's slots.
    Now {
        delivery: Delivery,
        pass: lanes::Pass,
        slot: tokio::sync::SemaphorePermit<'a>,
    },
    /// It does not run here: deferred to the queue, left to the copy in flight, or dead-lettered.
    HandedOn(Result<(), Stuck>),
}

/// What running the handler gave: its result, or the attempt cut at the inline budget.
enum Ran {
    Finished {
        executed: Executed,
        at: i64,
        latency: Duration,
    },
    Cut {
        at: i64,
        started: Instant,
    },
}

impl Dispatcher {
    /// One attempt of a delivery, its record in the log, and what follows: done, a retry
    /// scheduled, or a dead letter. The attempt runs only inside its hook's lane (see [`lanes`]);
    /// when it cannot run now it is handed back to the deliveries queue, not waited for.
    pub(super) async fn attempt(
        &self,
        hook: &Hook,
        event_name: &str,
        delivery: Delivery,
        deadline: Option<Deadline>,
        arrival: Arrival,
    ) -> Result<(), Stuck> {
        let Arrival { origin, requeues } = arrival;
        // The longest this attempt may take; an attempt that may not finish before the
        // invocation ends is parked instead of cut off.
        let bound = self.executor.time_bound(hook) + ATTEMPT_SLACK;
        let admitted = self
            .admit(hook, delivery, requeues, deadline, origin, bound)
            .await;
        let (delivery, pass, _slot) = match admitted {
            Admitted::Now {
                delivery,
                pass,
                slot,
            } => (delivery, pass, slot),
            Admitted::HandedOn(result) => return result,
        };
        let delivery = self.claim(delivery).await?;
        match self.run(hook, event_name, &delivery, origin, bound).await {
            Ran::Finished {
                executed,
                at,
                latency,
            } => {
                self.conclude(hook, (delivery, requeues), pass, executed, (at, latency))
                    .await
            }
            Ran::Cut { at, started } => self
                .cut((delivery, requeues), pass, (at, started), bound)
                .await
                .map_err(Stuck::after_attempt),
        }
    }

    /// The attempt's slots, in order: the invocation's time left, the hook's `max_rate`, its
    /// lane, one of the dispatcher's slots. Where one is not to be had now, the delivery is
    /// handed on rather than waited for.
    async fn admit(
        &self,
        hook: &Hook,
        mut delivery: Delivery,
        requeues: Requeues,
        deadline: Option<Deadline>,
        origin: Origin,
        bound: Duration,
    ) -> Admitted<'_> {
        if deadline.is_some_and(|d| !d.allows(bound)) {
            Stats::bump(&self.stats.deadline_parked);
            delivery.step = Step::Attempt;
            return Admitted::HandedOn(Err(Stuck::new(delivery, DispatchError::Deadline)));
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
                return Admitted::HandedOn(self.defer(delivery, requeues, wait, None).await);
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
                return Admitted::HandedOn(self.defer(delivery, requeues, after, Some(held)).await);
            }
            Admission::InFlight => {
                // The copy in flight records the attempt and schedules what follows.
                Stats::bump(&self.stats.in_flight_skipped);
                tracing::debug!(hook_id = %hook.id, delivery_id = %delivery.id, "already in flight here; this copy is dropped");
                return Admitted::HandedOn(Ok(()));
            }
            Admission::Gone => {
                let reason = format!("target answered {} Gone", protection::GONE);
                return Admitted::HandedOn(
                    self.give_up(delivery, DeadLetterReason::Disabled(reason))
                        .await,
                );
            }
        };
        // Then one of the process's slots, bounded by the wait allowed.
        let Ok(Ok(slot)) = tokio::time::timeout(PROCESS_SLOT_WAIT, self.in_flight.acquire()).await
        else {
            drop(pass);
            delivery.rate_slot = false;
            return Admitted::HandedOn(
                self.defer(delivery, requeues, PROCESS_SLOT_WAIT, Some(Held::Busy))
                    .await,
            );
        };
        delivery.rate_slot = false;
        Admitted::Now {
            delivery,
            pass,
            slot,
        }
    }

    /// Runs the hook's handler within `bound`, or within the inline budget inside an event's
    /// processing: a request that takes longer there is cut and sent again from the deliveries
    /// queue, with the hook's own timeouts, so the event (on AWS: its whole batch) never waits for
    /// a slow target.
    async fn run(
        &self,
        hook: &Hook,
        event_name: &str,
        delivery: &Delivery,
        origin: Origin,
        bound: Duration,
    ) -> Ran {
        let started = Instant::now();
        let at = now_millis();
        let run = self.executor.execute(
            hook,
            event_name,
            &delivery.event,
            Some((delivery.id, delivery.attempt)),
            i64::from(std::process::id()),
        );
        let budget = self.settings.lanes.inline_budget;
        let sends_http = matches!(
            hook.handler,
            Handler::Webhook(_) | Handler::WebhookCustom(_)
        );
        let inline = origin == Origin::Event && sends_http && budget < bound;
        let executed = match tokio::time::timeout(if inline { budget } else { bound }, run).await {
            Ok(executed) => executed,
            Err(_) if inline => return Ran::Cut { at, started },
            Err(_) => Executed::Http(Err(SendError::Timeout)),
        };
        let latency = started.elapsed();
        self.stats.record_latency(latency);
        Ran::Finished {
            executed,
            at,
            latency,
        }
    }

    /// What an attempt's result means: the retry verdict under the hook's policy, endpoint
    /// protection told, the attempt recorded, and the follow-up (done, retry or dead letter).
    async fn conclude(
        &self,
        hook: &Hook,
        (delivery, requeues): (Delivery, Requeues),
        pass: lanes::Pass,
        executed: Executed,
        (at, latency): (i64, Duration),
    ) -> Result<(), Stuck> {
        let Summary {
            status: status_code,
            mut error,
            body,
        } = self.summarize(&executed);
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
        let then = match status {
            DeliveryStatus::Pending => Then::Retry,
            _ => Then::Done,
        };
        let reserved = self.record(&delivery, attempt, status, then).await;
        let followed = match disabled {
            Some(reason) => {
                self.give_up(after(delivery), DeadLetterReason::Disabled(reason))
                    .await
            }
            None => {
                let outcome = (verdict, next_delay, error);
                self.follow_up(hook.id, (delivery, requeues), outcome, reserved)
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
        let reserved = self
            .record(&delivery, entry, DeliveryStatus::Pending, Then::Retry)
            .await;
        let mut next = retry_of(delivery, reserved);
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
    ///
    /// [`DispatchSettings::pause_after`]: super::DispatchSettings::pause_after
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
}

//! Endpoint protection (spec §8 "Beyond"): what the dispatcher does for a target that is gone,
//! failing for good, or slower than the events it is sent.
//!
//! - A `410 Gone` answer disables the hook at once.
//! - A hook whose every attempt has failed for [`DispatchSettings::pause_after`] is paused the same
//!   way. "Failing since" is kept on the hook itself (`failing_since`, Unix s), so it is durable and
//!   shared by every dispatcher in both modes without a new table; it is written only when it
//!   changes (the first failure after a success, the first success after failures), so a healthy
//!   hook costs no store write.
//! - `max_rate` spaces the attempts of a hook (a [`RateLimiter`], virtual scheduling with a burst
//!   of one): an attempt over the rate waits for its slot when the slot is near, and goes back on
//!   the deliveries queue until then when it is far, so nothing is dropped.
//!
//! A disabled hook gets `enabled: false` and a [`DisabledReason`], and a crud `update` event like
//! any change made through the admin API.
//!
//! [`DispatchSettings::pause_after`]: super::DispatchSettings::pause_after

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::model::{DisabledReason, Hook};
use crate::store::{HookStore, Precondition, StoreError};

/// The status that disables a hook at once.
pub(crate) const GONE: u16 = 410;

/// Writes of a protection change before it gives up on a hook that keeps changing under it.
const WRITE_ATTEMPTS: u32 = 3;

/// Slots kept before the idle ones are swept (a hook whose next slot is past holds no state that
/// matters: a fresh slot behaves the same).
const SLOTS_SWEPT_AT: usize = 1024;

/// What an attempt's outcome means for its hook's protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The target took it.
    Delivered,
    /// The target answered `410 Gone`.
    Gone,
    /// Any other failure (a status, a transport error, a Lua error).
    Failed,
}

/// What the protection did to the stored hook after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Nothing to write (or nothing could be: the hook is gone).
    None,
    /// `failing_since` was set or cleared.
    Tracked,
    /// The hook was disabled: the hook before and after.
    Disabled { old: Box<Hook>, new: Box<Hook> },
}

/// Whether an attempt with `outcome` on `hook` (as the dispatcher's snapshot has it) needs a store
/// write at all; the write itself decides again on the stored hook. Keeps healthy hooks, and
/// failing ones not yet due for a pause, off the store.
pub(crate) fn needs_write(hook: &Hook, outcome: Outcome, now: i64, pause_after: Duration) -> bool {
    match (outcome, hook.failing_since) {
        (Outcome::Gone, _) => true,
        (Outcome::Delivered, since) => since.is_some(),
        (Outcome::Failed, None) => true,
        (Outcome::Failed, Some(since)) => due_for_pause(since, now, pause_after),
    }
}

fn due_for_pause(since: i64, now: i64, pause_after: Duration) -> bool {
    now.saturating_sub(since) >= i64::try_from(pause_after.as_secs()).unwrap_or(i64::MAX)
}

/// The hook as it should be after an attempt with `outcome` at `now` (Unix s), or `None` when it
/// stays as it is. Pure, so the rules are tested without a store.
pub fn apply(hook: &Hook, outcome: Outcome, now: i64, pause_after: Duration) -> Option<Hook> {
    if !hook.enabled {
        // Disabled meanwhile (by a person or another dispatcher): leave it to them.
        return None;
    }
    let mut next = hook.clone();
    match outcome {
        Outcome::Delivered => {
            hook.failing_since?;
            next.failing_since = None;
        }
        Outcome::Gone => disable(&mut next, now, "target answered 410 Gone".into()),
        Outcome::Failed => match hook.failing_since {
            None => next.failing_since = Some(now),
            Some(since) if due_for_pause(since, now, pause_after) => disable(
                &mut next,
                now,
                format!(
                    "paused: every attempt failed for {} s (since {since})",
                    now.saturating_sub(since)
                ),
            ),
            Some(_) => return None,
        },
    }
    Some(next)
}

fn disable(hook: &mut Hook, now: i64, reason: String) {
    hook.enabled = false;
    hook.updated_at = now;
    hook.disabled_reason = Some(DisabledReason { at: now, reason });
}

/// Applies [`apply`] to the stored hook, with a version check so a concurrent admin change is
/// never overwritten (read again and decided again on a conflict).
pub async fn record(
    store: &dyn HookStore,
    hook_id: Uuid,
    outcome: Outcome,
    now: i64,
    pause_after: Duration,
) -> Result<Change, StoreError> {
    for _ in 0..WRITE_ATTEMPTS {
        let Some(stored) = store.get(hook_id).await? else {
            return Ok(Change::None);
        };
        let Some(next) = apply(&stored.value, outcome, now, pause_after) else {
            return Ok(Change::None);
        };
        match store
            .put(&next, Precondition::Version(stored.version))
            .await
        {
            Ok(_) if next.enabled => return Ok(Change::Tracked),
            Ok(_) => {
                return Ok(Change::Disabled {
                    old: Box::new(stored.value),
                    new: Box::new(next),
                })
            }
            Err(StoreError::Conflict) => continue,
            Err(err) => return Err(err),
        }
    }
    Err(StoreError::Conflict)
}

/// When an attempt of a rate-limited hook may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Now, or after this short wait: the slot is reserved.
    After(Duration),
    /// Not within the wait allowed: nothing reserved; try again after about this long.
    Later(Duration),
}

/// Per-hook spacing of attempts (virtual scheduling, the GCRA): a hook with `max_rate` r gets one
/// slot every 1/r s. Per process: each dispatcher instance spaces its own attempts.
#[derive(Debug, Default)]
pub(crate) struct RateLimiter {
    slots: Mutex<HashMap<Uuid, Next>>,
}

#[derive(Debug, Clone, Copy)]
struct Next {
    rate: f64,
    /// The earliest time the next slot may start.
    at: Instant,
}

impl RateLimiter {
    /// Reserves the next slot of `hook_id` at `rate` per second, as seen at `now`, if it starts
    /// within `max_wait`. The clock is a parameter so the spacing is tested without sleeping.
    pub(crate) fn reserve(
        &self,
        hook_id: Uuid,
        rate: f64,
        now: Instant,
        max_wait: Duration,
    ) -> Slot {
        let interval = interval(rate);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.len() >= SLOTS_SWEPT_AT {
            slots.retain(|_, next| next.at > now);
        }
        let next = slots.entry(hook_id).or_insert(Next { rate, at: now });
        if next.rate != rate {
            // The rate changed: start over rather than keep a spacing nobody asked for.
            *next = Next { rate, at: now };
        }
        let start = next.at.max(now);
        let wait = start - now;
        if wait > max_wait {
            return Slot::Later(wait);
        }
        next.at = start.checked_add(interval).unwrap_or(start);
        Slot::After(wait)
    }
}

/// The longest spacing kept: a rate below one a year is spaced as one a year (any positive rate
/// is valid input, and no rate may make the clock arithmetic overflow).
const MAX_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);

/// The spacing of slots at `rate` per second; anything but a positive number spaces nothing.
fn interval(rate: f64) -> Duration {
    if rate.is_nan() || rate <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(1.0 / rate)
        .unwrap_or(MAX_INTERVAL)
        .min(MAX_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(failing_since: Option<i64>) -> Hook {
        Hook {
            failing_since,
            ..Hook::log_on("crud")
        }
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn gone_disables_at_once_with_time_and_status() {
        let next = apply(&hook(None), Outcome::Gone, 1_000, DAY).unwrap();
        assert!(!next.enabled);
        assert_eq!(
            next.disabled_reason,
            Some(DisabledReason {
                at: 1_000,
                reason: "target answered 410 Gone".into()
            })
        );
        assert_eq!(next.updated_at, 1_000);
    }

    #[test]
    fn failing_since_starts_at_the_first_failure_and_a_success_resets_it() {
        let failing = apply(&hook(None), Outcome::Failed, 1_000, DAY).unwrap();
        assert_eq!(failing.failing_since, Some(1_000));
        assert!(failing.enabled);
        // Later failures within the pause time change nothing (no store write)
        assert!(apply(&failing, Outcome::Failed, 1_000 + 3600, DAY).is_none());
        assert!(!needs_write(&failing, Outcome::Failed, 1_000 + 3600, DAY));
        let healthy = apply(&failing, Outcome::Delivered, 2_000, DAY).unwrap();
        assert_eq!(healthy.failing_since, None);
        assert!(apply(&healthy, Outcome::Delivered, 2_001, DAY).is_none());
        assert!(!needs_write(&healthy, Outcome::Delivered, 2_001, DAY));
    }

    #[test]
    fn failing_every_attempt_for_the_pause_time_pauses() {
        let failing = hook(Some(1_000));
        let at = 1_000 + DAY.as_secs() as i64;
        assert!(apply(&failing, Outcome::Failed, at - 1, DAY).is_none());
        assert!(needs_write(&failing, Outcome::Failed, at, DAY));
        let paused = apply(&failing, Outcome::Failed, at, DAY).unwrap();
        assert!(!paused.enabled);
        let reason = paused.disabled_reason.unwrap();
        assert_eq!(reason.at, at);
        assert!(reason.reason.contains("since 1000"), "{}", reason.reason);
        // A disabled hook is left alone
        let mut off = hook(Some(1_000));
        off.enabled = false;
        assert!(apply(&off, Outcome::Gone, at, DAY).is_none());
    }

    #[test]
    fn no_rate_overflows_the_clock() {
        assert_eq!(interval(f64::MIN_POSITIVE), MAX_INTERVAL);
        assert_eq!(interval(1e-300), MAX_INTERVAL);
        assert_eq!(interval(f64::NAN), Duration::ZERO);
        assert_eq!(interval(f64::INFINITY), Duration::ZERO);
        assert_eq!(interval(1e300), Duration::ZERO);
        let limiter = RateLimiter::default();
        let (id, now) = (Uuid::new_v4(), Instant::now());
        assert_eq!(
            limiter.reserve(id, 1e-300, now, Duration::from_secs(1)),
            Slot::After(Duration::ZERO)
        );
        assert_eq!(
            limiter.reserve(id, 1e-300, now, Duration::from_secs(1)),
            Slot::Later(MAX_INTERVAL)
        );
    }

    #[test]
    fn the_limiter_spaces_slots_at_the_rate() {
        let limiter = RateLimiter::default();
        let id = Uuid::new_v4();
        let t0 = Instant::now();
        let wait = Duration::from_secs(1);
        // 4 per second: slots at 0, 250, 500, 750 ms, then 1 s is over the allowed wait
        let slots: Vec<Slot> = (0..5).map(|_| limiter.reserve(id, 4.0, t0, wait)).collect();
        assert_eq!(
            slots,
            vec![
                Slot::After(Duration::ZERO),
                Slot::After(Duration::from_millis(250)),
                Slot::After(Duration::from_millis(500)),
                Slot::After(Duration::from_millis(750)),
                Slot::After(Duration::from_secs(1)),
            ]
        );
        assert_eq!(
            limiter.reserve(id, 4.0, t0, wait),
            Slot::Later(Duration::from_millis(1250))
        );
        // Time passes: the next free slot is the first after the last reserved one
        assert_eq!(
            limiter.reserve(id, 4.0, t0 + Duration::from_secs(2), wait),
            Slot::After(Duration::ZERO)
        );
        // An idle hook does not save up a burst
        let later = t0 + Duration::from_secs(60);
        assert_eq!(
            limiter.reserve(id, 4.0, later, wait),
            Slot::After(Duration::ZERO)
        );
        assert_eq!(
            limiter.reserve(id, 4.0, later, wait),
            Slot::After(Duration::from_millis(250))
        );
        // Hooks are spaced apart from each other
        assert_eq!(
            limiter.reserve(Uuid::new_v4(), 4.0, later, wait),
            Slot::After(Duration::ZERO)
        );
    }
}

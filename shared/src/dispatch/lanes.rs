//! Isolation between hooks (spec §8): one hook's trouble never reaches another hook.
//!
//! Every hook has a **lane** in this process, and an attempt runs only inside its hook's lane:
//!
//! - **Capacity**: at most the hook's `max_in_flight` attempts at once (the deployment's default
//!   when unset), so a slow or hanging receiver holds its own slots and nobody else's.
//! - **Pace**: an attempt made inside the processing of an event may take
//!   [`LaneSettings::inline_budget`]; one that takes longer is cut and sent again from the
//!   deliveries queue, with the hook's full timeouts, once the cut one would have timed out. The lane keeps a moving average of how long
//!   its attempts take, and a hook that slow on average is not attempted inside events at all: its
//!   deliveries leave at once for the deliveries queue. So an event (and, on AWS, the batch of
//!   events it came in) completes for every other hook at the pace of the fast ones.
//! - **Circuit**: after [`LaneSettings::trip_after`] consecutive timeouts, 5xx or transport
//!   failures the circuit opens, and the hook's attempts are spaced out (the cool-down doubles on
//!   each failed probe, up to [`LaneSettings::max_open_for`]); one probe at a time is let through
//!   when it ends, and a success closes it.
//! - **Gone**: a `410 Gone` closes the lane at once, so attempts not yet started stop even
//!   before the hook's disabled state reaches this process's snapshot.
//! - **One copy**: a delivery id is in flight at most once in the process.
//!
//! An attempt that cannot enter is not waited for beyond [`LaneSettings::wait`], and only in a lane
//! whose attempts are quick (a burst of events queues briefly for a fast hook's slots): otherwise
//! [`Lanes::admit`] says when to try again, and the dispatcher hands the delivery to the deliveries
//! queue (in the hook's fair-queue group) with that delay, not counted as an attempt. A delivery
//! held again and again (a lane full under a backlog, a circuit that stays open) comes back less
//! and less often: the dispatcher doubles the delay for each deferral or park in a row since its
//! last attempt, up to 15 minutes (see "Bad weather" in `delivery.rs`), so its loop guard's margin
//! lasts hours. The lanes are per process: on AWS each dispatch instance has its own, and the fair
//! deliveries queue serves quiet hooks first across them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::Executed;
use crate::model::Hook;

/// Attempts of one hook in flight at once in one process, unless the hook says otherwise.
pub const DEFAULT_HOOK_MAX_IN_FLIGHT: u32 = 4;

/// Lanes kept before the idle ones are swept.
const LANES_SWEPT_AT: usize = 4096;

/// How long a `410 Gone` keeps a lane closed without news from the store: longer than any
/// snapshot takes to show the hook disabled, after which the snapshot's `enabled` decides.
const GONE_FOR: Duration = Duration::from_secs(60);

/// Weight of the newest attempt in a lane's moving average of attempt time.
const PACE_WEIGHT: f64 = 0.3;

/// Bounds of the delay before a delivery that found its lane full is tried again.
const MIN_RETRY_DELAY: Duration = Duration::from_millis(500);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// How lanes behave; the defaults are the spec's.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneSettings {
    /// Attempts of one hook in flight at once, for hooks without their own `max_in_flight`.
    pub max_in_flight: u32,
    /// The longest an attempt made inside an event's processing may take before it is cut and
    /// sent again from the deliveries queue; a hook whose attempts take this long on average is
    /// attempted from the deliveries queue only.
    pub inline_budget: Duration,
    /// The longest an attempt waits for a slot of a lane that is not slow, before it is handed
    /// to the deliveries queue; a slow lane's attempts never wait.
    pub wait: Duration,
    /// Consecutive timeouts, 5xx or transport failures that open a hook's circuit.
    pub trip_after: u32,
    /// How long a circuit stays open the first time; doubled after each failed probe.
    pub open_for: Duration,
    /// The longest a circuit stays open at once.
    pub max_open_for: Duration,
}

impl Default for LaneSettings {
    fn default() -> LaneSettings {
        LaneSettings {
            max_in_flight: DEFAULT_HOOK_MAX_IN_FLIGHT,
            inline_budget: Duration::from_secs(1),
            wait: Duration::from_millis(200),
            trip_after: 5,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(300),
        }
    }
}

/// Where an attempt comes from: the fan-out of an event (inside the event's processing), or a
/// message of the deliveries queue (a retry, a parked or deferred delivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Event,
    Queue,
}

/// Why an attempt was not let in now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Held {
    /// Every slot of the hook's lane is taken.
    Full,
    /// The hook is slow: its attempts run from the deliveries queue, not inside events.
    Slow,
    /// The hook's circuit is open.
    Open,
    /// The dispatcher's own limit of attempts in flight (every hook's together) is reached.
    Busy,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Held::Full => "every slot of the hook is taken",
            Held::Slow => "the hook is slow; its attempts leave the event's processing",
            Held::Open => "the hook's circuit is open",
            Held::Busy => "the dispatcher has as many attempts in flight as it allows",
        })
    }
}

/// What [`Lanes::admit`] decided.
pub(crate) enum Admission {
    /// Go ahead; the attempt holds its slot until the [`Pass`] is finished or dropped.
    Enter(Pass),
    /// Not now: try again after this long.
    Later { after: Duration, held: Held },
    /// This delivery id is in flight in this process already; the running copy sees it through.
    InFlight,
    /// The target answered `410 Gone`: no attempt is started for the hook any more.
    Gone,
}

/// What an attempt's outcome means for its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Delivered, or failed in a way that says the target is up (a 4xx, a Lua error).
    Answered,
    /// A timeout, a 5xx or a transport failure: counts towards opening the circuit.
    Trouble,
    /// `410 Gone`.
    Gone,
    /// Says nothing about the target's health: the ping of a hook change (protection ignores it
    /// too).
    Neutral,
    /// Cut at the inline budget: the hook is slow from now on (its pace is at least the budget),
    /// which says nothing about its health either.
    Cut,
}

/// What an execution means for its lane: `gone` when the target answered `410 Gone`.
pub(crate) fn outcome_of(executed: &Executed, gone: bool) -> Outcome {
    match executed {
        _ if gone => Outcome::Gone,
        Executed::Http(Ok(response)) if response.status >= 500 => Outcome::Trouble,
        Executed::Http(Err(err)) if err.is_retryable() => Outcome::Trouble,
        _ => Outcome::Answered,
    }
}

/// The state of a hook's circuit, for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    /// The cool-down is over; one probe at a time is let through.
    HalfOpen,
}

/// A lane as people see it (`GET /event-hooks/{id}` on the local server, the console).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaneView {
    pub circuit: CircuitState,
    /// Consecutive timeouts, 5xx or transport failures.
    pub consecutive_failures: u32,
    /// Unix ms at which an open circuit lets a probe through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_until: Option<i64>,
    pub(crate) in_flight: u32,
    pub max_in_flight: u32,
    /// Moving average of the attempts' time, in ms.
    pub(crate) pace_ms: u64,
    pub slow: bool,
}

struct Lane {
    capacity: u32,
    slots: Arc<Semaphore>,
    /// Moving average of attempt time.
    pace: Option<Duration>,
    failures: u32,
    /// When an open circuit lets a probe through; `Some` while open or half-open.
    open_until: Option<Instant>,
    /// The current cool-down, doubled on each failed probe.
    open_for: Duration,
    /// A half-open circuit's probe is running.
    probing: bool,
    /// Deliveries sent back because the lane was full and not seen again yet (an estimate of the
    /// lane's queue, for the delay of the next one).
    waiting: u32,
    /// Set by a `410 Gone`: when, and the hook's `updated_at` then (a later write re-opens it).
    gone: Option<(Instant, i64)>,
}

impl Lane {
    fn new(capacity: u32, settings: &LaneSettings) -> Lane {
        Lane {
            capacity,
            slots: Arc::new(Semaphore::new(capacity as usize)),
            pace: None,
            failures: 0,
            open_until: None,
            open_for: settings.open_for,
            probing: false,
            waiting: 0,
            gone: None,
        }
    }

    fn in_flight(&self) -> u32 {
        self.capacity
            .saturating_sub(self.slots.available_permits() as u32)
    }

    fn idle(&self, now: Instant) -> bool {
        self.in_flight() == 0
            && self.open_until.is_none_or(|until| until <= now)
            && self.gone.is_none()
            && self.failures == 0
    }
}

#[derive(Default)]
struct State {
    lanes: HashMap<Uuid, Lane>,
    /// Delivery ids with an attempt in flight in this process.
    in_flight: HashSet<Uuid>,
}

/// The lanes of every hook in this process; see the module documentation.
pub(crate) struct Lanes {
    settings: Arc<LaneSettings>,
    state: Arc<Mutex<State>>,
}

impl Lanes {
    pub(super) fn new(settings: LaneSettings) -> Lanes {
        Lanes {
            settings: Arc::new(settings),
            state: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The hook's capacity: its own `max_in_flight`, or the deployment's default.
    fn capacity(&self, hook: &Hook) -> u32 {
        hook.delivery
            .max_in_flight
            .unwrap_or(self.settings.max_in_flight)
            .max(1)
    }

    /// Lets an attempt of `delivery_id` for `hook` in, or says when to try again.
    pub(crate) async fn admit(&self, hook: &Hook, delivery_id: Uuid, origin: Origin) -> Admission {
        let (slots, wait, probe) = match self.check(hook, delivery_id, origin) {
            Ok(entry) => entry,
            Err(admission) => return admission,
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) if wait.is_zero() => None,
            Err(_) => tokio::time::timeout(wait, slots.acquire_owned())
                .await
                .ok()
                .and_then(Result::ok),
        };
        match slot {
            Some(slot) => self.enter(hook, delivery_id, probe, slot),
            None => self.full(hook.id),
        }
    }

    /// Everything but the slot: `Err` when the attempt may not enter now, else the lane's slots,
    /// how long it may wait for one, and whether it is a half-open circuit's probe.
    fn check(
        &self,
        hook: &Hook,
        delivery_id: Uuid,
        origin: Origin,
    ) -> Result<(Arc<Semaphore>, Duration, bool), Admission> {
        let now = Instant::now();
        let capacity = self.capacity(hook);
        let mut state = self.lock();
        if state.in_flight.contains(&delivery_id) {
            return Err(Admission::InFlight);
        }
        if state.lanes.len() >= LANES_SWEPT_AT {
            state.lanes.retain(|_, lane| !lane.idle(now));
        }
        let settings = &self.settings;
        let lane = state
            .lanes
            .entry(hook.id)
            .or_insert_with(|| Lane::new(capacity, settings));
        if lane.capacity != capacity {
            // The hook's max_in_flight changed: attempts already running keep the old slots.
            lane.capacity = capacity;
            lane.slots = Arc::new(Semaphore::new(capacity as usize));
        }
        if origin == Origin::Queue {
            lane.waiting = lane.waiting.saturating_sub(1);
        }
        if let Some((since, updated_at)) = lane.gone {
            if now.duration_since(since) < GONE_FOR && hook.updated_at == updated_at {
                return Err(Admission::Gone);
            }
            lane.gone = None;
        }
        let slow = lane.pace.is_some_and(|pace| pace >= settings.inline_budget);
        let mut probe = false;
        if let Some(until) = lane.open_until {
            if until > now {
                return Err(Admission::Later {
                    after: jitter(until - now),
                    held: Held::Open,
                });
            }
            if lane.probing {
                return Err(Admission::Later {
                    after: jitter(lane.pace.unwrap_or(MIN_RETRY_DELAY).max(MIN_RETRY_DELAY)),
                    held: Held::Open,
                });
            }
            probe = true;
        }
        if origin == Origin::Event && slow {
            return Err(Admission::Later {
                after: Duration::ZERO,
                held: Held::Slow,
            });
        }
        let wait = if slow || probe {
            Duration::ZERO
        } else {
            settings.wait
        };
        Ok((lane.slots.clone(), wait, probe))
    }

    /// The attempt has its slot: in, unless the same delivery got in meanwhile.
    fn enter(
        &self,
        hook: &Hook,
        delivery_id: Uuid,
        probe: bool,
        slot: OwnedSemaphorePermit,
    ) -> Admission {
        let mut state = self.lock();
        // A 410 may have come while this attempt waited for its slot.
        if let Some(lane) = state.lanes.get(&hook.id) {
            if lane
                .gone
                .is_some_and(|(_, updated_at)| updated_at == hook.updated_at)
            {
                return Admission::Gone;
            }
        }
        if !state.in_flight.insert(delivery_id) {
            return Admission::InFlight;
        }
        if probe {
            match state.lanes.get_mut(&hook.id) {
                Some(lane) if !lane.probing => lane.probing = true,
                _ => {
                    state.in_flight.remove(&delivery_id);
                    return Admission::Later {
                        after: jitter(MIN_RETRY_DELAY),
                        held: Held::Open,
                    };
                }
            }
        }
        Admission::Enter(Pass {
            state: self.state.clone(),
            hook_id: hook.id,
            hook_updated_at: hook.updated_at,
            delivery_id,
            probe,
            settings: self.settings.clone(),
            started: Instant::now(),
            _slot: slot,
            finished: false,
        })
    }

    /// No slot: try again about when one frees for this attempt, the lane's queue ahead of it
    /// at its pace.
    fn full(&self, hook_id: Uuid) -> Admission {
        let mut state = self.lock();
        let (pace, ahead) = match state.lanes.get_mut(&hook_id) {
            Some(lane) => {
                lane.waiting = lane.waiting.saturating_add(1);
                (lane.pace, 1 + lane.waiting / lane.capacity.max(1))
            }
            None => (None, 1),
        };
        let after = pace
            .unwrap_or(MIN_RETRY_DELAY)
            .saturating_mul(ahead)
            .clamp(MIN_RETRY_DELAY, MAX_RETRY_DELAY);
        Admission::Later {
            after: jitter(after),
            held: Held::Full,
        }
    }

    /// The lane of `hook_id` as people see it, if it has one.
    pub(crate) fn view(&self, hook_id: Uuid) -> Option<LaneView> {
        let now = Instant::now();
        let state = self.lock();
        let lane = state.lanes.get(&hook_id)?;
        let circuit = match lane.open_until {
            None => CircuitState::Closed,
            Some(until) if until > now => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
        };
        let pace = lane.pace.unwrap_or_default();
        Some(LaneView {
            circuit,
            consecutive_failures: lane.failures,
            open_until: lane.open_until.map(|until| {
                crate::events::now_millis()
                    + until.saturating_duration_since(now).as_millis() as i64
            }),
            in_flight: lane.in_flight(),
            max_in_flight: lane.capacity,
            pace_ms: pace.as_millis() as u64,
            slow: pace >= self.settings.inline_budget,
        })
    }
}

/// A ±20 % spread, so deliveries sent back together do not all come back together.
fn jitter(delay: Duration) -> Duration {
    delay.mul_f64(0.8 + 0.4 * fastrand::f64())
}

/// An attempt's place in its lane: its slot, and its delivery id marked in flight, until it is
/// finished (or dropped, which counts as no news about the target).
pub(crate) struct Pass {
    state: Arc<Mutex<State>>,
    hook_id: Uuid,
    hook_updated_at: i64,
    delivery_id: Uuid,
    probe: bool,
    settings: Arc<LaneSettings>,
    started: Instant,
    _slot: OwnedSemaphorePermit,
    finished: bool,
}

impl Pass {
    /// Records the attempt's outcome in its lane: its time, the circuit, a `410 Gone`.
    pub(super) fn finish(mut self, outcome: Outcome) {
        self.finished = true;
        let took = self.started.elapsed();
        let now = Instant::now();
        let settings = &self.settings;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.in_flight.remove(&self.delivery_id);
        let Some(lane) = state.lanes.get_mut(&self.hook_id) else {
            return;
        };
        lane.pace = Some(match (lane.pace, outcome) {
            (None, _) => took,
            (Some(pace), Outcome::Cut) => pace.max(took).max(settings.inline_budget),
            (Some(pace), _) => pace.mul_f64(1.0 - PACE_WEIGHT) + took.mul_f64(PACE_WEIGHT),
        });
        if self.probe {
            lane.probing = false;
        }
        match outcome {
            Outcome::Answered => {
                lane.failures = 0;
                lane.open_until = None;
                lane.open_for = settings.open_for;
            }
            Outcome::Gone => lane.gone = Some((now, self.hook_updated_at)),
            Outcome::Neutral | Outcome::Cut => {}
            Outcome::Trouble => {
                lane.failures = lane.failures.saturating_add(1);
                if self.probe {
                    lane.open_for = (lane.open_for * 2).min(settings.max_open_for);
                    lane.open_until = Some(now + lane.open_for);
                } else if lane.open_until.is_none() && lane.failures >= settings.trip_after {
                    lane.open_for = settings.open_for;
                    lane.open_until = Some(now + lane.open_for);
                }
            }
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.in_flight.remove(&self.delivery_id);
        if self.probe {
            if let Some(lane) = state.lanes.get_mut(&self.hook_id) {
                lane.probing = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(max_in_flight: Option<u32>) -> Hook {
        let mut hook = Hook::log_on("crud");
        hook.delivery.max_in_flight = max_in_flight;
        hook
    }

    async fn enter(lanes: &Lanes, hook: &Hook, origin: Origin) -> Pass {
        match lanes.admit(hook, Uuid::new_v4(), origin).await {
            Admission::Enter(pass) => pass,
            _ => panic!("expected to enter"),
        }
    }

    fn held(admission: Admission) -> (Duration, Held) {
        match admission {
            Admission::Later { after, held } => (after, held),
            Admission::Enter(_) => panic!("entered"),
            Admission::InFlight => panic!("in flight"),
            Admission::Gone => panic!("gone"),
        }
    }

    #[tokio::test]
    async fn a_full_lane_holds_only_its_own_hook() {
        let lanes = Lanes::new(LaneSettings::default());
        let (slow, other) = (hook(Some(2)), hook(None));
        let _a = enter(&lanes, &slow, Origin::Queue).await;
        let _b = enter(&lanes, &slow, Origin::Queue).await;
        let (after, why) = held(lanes.admit(&slow, Uuid::new_v4(), Origin::Queue).await);
        assert_eq!(why, Held::Full);
        assert!(after >= MIN_RETRY_DELAY.mul_f64(0.8), "{after:?}");
        // Another hook has its own slots, the default four.
        let mut passes = Vec::new();
        for _ in 0..4 {
            passes.push(enter(&lanes, &other, Origin::Event).await);
        }
        assert_eq!(lanes.view(other.id).unwrap().in_flight, 4);
        drop(passes);
        assert_eq!(lanes.view(other.id).unwrap().in_flight, 0);
    }

    #[tokio::test]
    async fn a_delivery_id_is_in_flight_once() {
        let lanes = Lanes::new(LaneSettings::default());
        let hook = hook(None);
        let id = Uuid::new_v4();
        let Admission::Enter(pass) = lanes.admit(&hook, id, Origin::Event).await else {
            panic!("first copy enters")
        };
        assert!(matches!(
            lanes.admit(&hook, id, Origin::Queue).await,
            Admission::InFlight
        ));
        pass.finish(Outcome::Answered);
        assert!(matches!(
            lanes.admit(&hook, id, Origin::Queue).await,
            Admission::Enter(_)
        ));
    }

    #[tokio::test]
    async fn consecutive_trouble_opens_the_circuit_and_one_probe_closes_it() {
        let settings = LaneSettings {
            trip_after: 3,
            open_for: Duration::from_millis(30),
            ..LaneSettings::default()
        };
        let lanes = Lanes::new(settings);
        let hook = hook(None);
        for _ in 0..2 {
            enter(&lanes, &hook, Origin::Queue)
                .await
                .finish(Outcome::Trouble);
        }
        enter(&lanes, &hook, Origin::Queue)
            .await
            .finish(Outcome::Answered);
        for _ in 0..3 {
            enter(&lanes, &hook, Origin::Queue)
                .await
                .finish(Outcome::Trouble);
        }
        let (_, why) = held(lanes.admit(&hook, Uuid::new_v4(), Origin::Queue).await);
        assert_eq!(why, Held::Open);
        assert_eq!(lanes.view(hook.id).unwrap().circuit, CircuitState::Open);
        tokio::time::sleep(Duration::from_millis(40)).await;
        // Half-open: one probe at a time.
        let probe = enter(&lanes, &hook, Origin::Queue).await;
        assert_eq!(
            held(lanes.admit(&hook, Uuid::new_v4(), Origin::Queue).await).1,
            Held::Open
        );
        // A failed probe opens it again, for twice as long.
        probe.finish(Outcome::Trouble);
        let view = lanes.view(hook.id).unwrap();
        assert_eq!(view.circuit, CircuitState::Open);
        tokio::time::sleep(Duration::from_millis(70)).await;
        enter(&lanes, &hook, Origin::Queue)
            .await
            .finish(Outcome::Answered);
        let view = lanes.view(hook.id).unwrap();
        assert_eq!(view.circuit, CircuitState::Closed);
        assert_eq!(view.consecutive_failures, 0);
    }

    #[tokio::test]
    async fn a_slow_hook_leaves_events_but_is_attempted_from_the_queue() {
        let settings = LaneSettings {
            inline_budget: Duration::from_millis(5),
            ..LaneSettings::default()
        };
        let lanes = Lanes::new(settings);
        let hook = hook(None);
        let pass = enter(&lanes, &hook, Origin::Event).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        pass.finish(Outcome::Answered);
        assert_eq!(
            held(lanes.admit(&hook, Uuid::new_v4(), Origin::Event).await),
            (Duration::ZERO, Held::Slow)
        );
        enter(&lanes, &hook, Origin::Queue).await;
    }

    #[tokio::test]
    async fn gone_stops_the_hook_until_it_is_written_again() {
        let lanes = Lanes::new(LaneSettings::default());
        let mut hook = hook(None);
        let running = enter(&lanes, &hook, Origin::Queue).await;
        enter(&lanes, &hook, Origin::Queue)
            .await
            .finish(Outcome::Gone);
        assert!(matches!(
            lanes.admit(&hook, Uuid::new_v4(), Origin::Event).await,
            Admission::Gone
        ));
        running.finish(Outcome::Answered);
        assert!(matches!(
            lanes.admit(&hook, Uuid::new_v4(), Origin::Queue).await,
            Admission::Gone
        ));
        // Re-enabled by a person: a newer version of the hook.
        hook.updated_at += 1;
        assert!(matches!(
            lanes.admit(&hook, Uuid::new_v4(), Origin::Queue).await,
            Admission::Enter(_)
        ));
    }

    #[tokio::test]
    async fn an_attempt_waiting_for_a_slot_is_stopped_by_a_410_that_came_meanwhile() {
        let lanes = Lanes::new(LaneSettings {
            wait: Duration::from_secs(5),
            ..LaneSettings::default()
        });
        let hook = hook(Some(1));
        let running = enter(&lanes, &hook, Origin::Queue).await;
        let waiting = lanes.admit(&hook, Uuid::new_v4(), Origin::Queue);
        let finish = async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            running.finish(Outcome::Gone);
        };
        let (admission, ()) = tokio::join!(waiting, finish);
        assert!(matches!(admission, Admission::Gone));
    }

    #[tokio::test]
    async fn a_cut_attempt_makes_its_hook_slow_at_once() {
        let lanes = Lanes::new(LaneSettings::default());
        let hook = hook(None);
        // A quick ping first sets a fast pace.
        enter(&lanes, &hook, Origin::Event)
            .await
            .finish(Outcome::Neutral);
        enter(&lanes, &hook, Origin::Event)
            .await
            .finish(Outcome::Cut);
        assert!(lanes.view(hook.id).unwrap().slow);
        assert_eq!(
            held(lanes.admit(&hook, Uuid::new_v4(), Origin::Event).await).1,
            Held::Slow
        );
    }
}

//! One batch of queue messages handled together (spec §10): the snooze/on_change decisions for
//! one hook are taken in queue order, while different hooks (and the attempts after the
//! decisions) run in parallel; and no record is started, nor attempt made, when the invocation's
//! time left is too short for it to finish.
//!
//! Each record gets a [`Turn`] at its position in the batch. Once the record knows which hooks it
//! will decide for, it [declares](Turn::declare) them; before deciding for a hook it
//! [waits](Turn::wait) until every earlier record has declared its hooks and finished its decision
//! for that hook, then marks its own [done](Turn::done). A record that ends early (unparseable,
//! unregistered, failed) releases everything when its `Turn` is dropped, so nobody waits forever.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use uuid::Uuid;

#[derive(Default)]
struct State {
    /// Per position: the hooks it decides for, once declared.
    declared: Vec<Option<Vec<Uuid>>>,
    /// (position, hook) decisions made, or given up.
    done: HashSet<(usize, Uuid)>,
}

/// The decision order of one batch.
pub(crate) struct BatchOrder {
    state: Mutex<State>,
    changed: Notify,
}

impl BatchOrder {
    /// The order of a batch of `count` records.
    pub(crate) fn new(count: usize) -> Arc<BatchOrder> {
        Arc::new(BatchOrder {
            state: Mutex::new(State {
                declared: vec![None; count],
                done: HashSet::new(),
            }),
            changed: Notify::new(),
        })
    }

    /// The turn of the record at `position`.
    pub(crate) fn turn(self: &Arc<BatchOrder>, position: usize) -> Turn {
        Turn {
            order: self.clone(),
            position,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ready(&self, position: usize, hook: Uuid) -> bool {
        let state = self.lock();
        state.declared[..position.min(state.declared.len())]
            .iter()
            .enumerate()
            .all(|(earlier, hooks)| match hooks {
                None => false,
                Some(hooks) => !hooks.contains(&hook) || state.done.contains(&(earlier, hook)),
            })
    }
}

/// One record's place in its batch; see the module documentation.
pub struct Turn {
    order: Arc<BatchOrder>,
    position: usize,
}

impl Turn {
    /// The hooks this record decides for (call once, before any [`Turn::wait`]).
    pub(crate) fn declare(&self, hooks: Vec<Uuid>) {
        let mut state = self.order.lock();
        if let Some(slot) = state.declared.get_mut(self.position) {
            *slot = Some(hooks);
        }
        drop(state);
        self.order.changed.notify_waiters();
    }

    /// Waits until every earlier record of the batch has decided for `hook`.
    pub async fn wait(&self, hook: Uuid) {
        loop {
            let notified = self.order.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.order.ready(self.position, hook) {
                return;
            }
            notified.await;
        }
    }

    /// This record's decision for `hook` is made (or will not be).
    pub fn done(&self, hook: Uuid) {
        self.order.lock().done.insert((self.position, hook));
        self.order.changed.notify_waiters();
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut state = self.order.lock();
        let hooks = match state.declared.get_mut(self.position) {
            Some(slot) => slot.get_or_insert_with(Vec::new).clone(),
            None => Vec::new(),
        };
        for hook in hooks {
            state.done.insert((self.position, hook));
        }
        drop(state);
        self.order.changed.notify_waiters();
    }
}

/// Time kept after an attempt's bound for recording its outcome and settling its message.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// The invocation's deadline and the time one attempt needs before it (the request timeout plus
/// a margin for recording its outcome).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: Instant,
    pub reserve: Duration,
}

impl Deadline {
    /// Whether there is still time to start something that may take the whole reserve.
    pub(crate) fn allows_start(&self) -> bool {
        self.allows(Duration::ZERO)
    }

    /// Whether there is still time to start an attempt that may take `bound`, with the reserve's
    /// margin for recording its outcome.
    pub fn allows(&self, bound: Duration) -> bool {
        self.at
            .checked_duration_since(Instant::now())
            .is_some_and(|left| left >= self.reserve.max(bound + DEADLINE_MARGIN))
    }
}

/// What a record's handler gets: its turn in the decision order and the deadline.
pub struct RecordContext {
    pub turn: Option<Turn>,
    pub deadline: Option<Deadline>,
    /// When its message was received (the batch's start): its lease on the message began about
    /// then ([`DispatchSettings::unclaimed_window`](super::DispatchSettings::unclaimed_window)).
    pub received: Instant,
}

impl RecordContext {
    /// A message handled on its own, just received, without a batch order or deadline (the
    /// local worker).
    pub fn alone() -> RecordContext {
        RecordContext {
            turn: None,
            deadline: None,
            received: Instant::now(),
        }
    }
}

/// Handles `count` records with `handle` (given the position and context), all at once, with the
/// decision order of the batch; a record not started because the deadline is too near counts as
/// not handled (`false`), to be reported as a batch item failure and come back.
pub async fn run<F, Fut>(count: usize, deadline: Option<Deadline>, handle: F) -> Vec<bool>
where
    F: Fn(usize, RecordContext) -> Fut,
    Fut: Future<Output = bool>,
{
    let order = BatchOrder::new(count);
    let handle = &handle;
    // The batch's messages were received just before it was handed over (on Lambda, by the
    // event source mapping; a batching window makes that earlier, up to the window).
    let received = Instant::now();
    let records = (0..count).map(|position| {
        let turn = order.turn(position);
        async move {
            if deadline.is_some_and(|d| !d.allows_start()) {
                tracing::warn!(
                    position,
                    "too close to the invocation deadline: record not started, reported failed"
                );
                return false;
            }
            handle(
                position,
                RecordContext {
                    turn: Some(turn),
                    deadline,
                    received,
                },
            )
            .await
        }
    });
    futures_util::future::join_all(records).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn decisions_for_one_hook_follow_queue_order_even_when_later_records_are_faster() {
        let hook = Uuid::new_v4();
        let other = Uuid::new_v4();
        let log = Mutex::new(Vec::new());
        let log = &log;
        let handled = run(4, None, |position, ctx| async move {
            let turn = ctx.turn.unwrap();
            // Earlier records take longer to get to their decision.
            tokio::time::sleep(Duration::from_millis(40 * (4 - position as u64))).await;
            let hooks = if position == 2 {
                vec![other]
            } else {
                vec![hook]
            };
            turn.declare(hooks.clone());
            for h in hooks {
                turn.wait(h).await;
                log.lock().unwrap().push((position, h));
                turn.done(h);
            }
            true
        })
        .await;
        assert_eq!(handled, vec![true; 4]);
        let for_hook: Vec<usize> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, h)| *h == hook)
            .map(|(p, _)| *p)
            .collect();
        assert_eq!(for_hook, vec![0, 1, 3]);
        assert!(log.lock().unwrap().contains(&(2, other)));
    }

    #[tokio::test]
    async fn a_record_that_ends_early_releases_the_later_ones() {
        let hook = Uuid::new_v4();
        let reached = AtomicUsize::new(0);
        let reached = &reached;
        let handled = run(3, None, |position, ctx| async move {
            let turn = ctx.turn.unwrap();
            if position == 0 {
                return false; // never declares: dropped
            }
            if position == 1 {
                turn.declare(vec![hook]);
                return false; // declared, never decided: dropped
            }
            turn.declare(vec![hook]);
            turn.wait(hook).await;
            reached.fetch_add(1, Ordering::SeqCst);
            true
        })
        .await;
        assert_eq!(handled, vec![false, false, true]);
        assert_eq!(reached.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn no_record_starts_when_the_deadline_is_too_near() {
        let started = AtomicUsize::new(0);
        let started = &started;
        let deadline = Deadline {
            at: Instant::now() + Duration::from_secs(5),
            reserve: Duration::from_secs(12),
        };
        let handled = run(3, Some(deadline), |_, _| async move {
            started.fetch_add(1, Ordering::SeqCst);
            true
        })
        .await;
        assert_eq!(handled, vec![false; 3]);
        assert_eq!(started.load(Ordering::SeqCst), 0);

        let roomy = Deadline {
            at: Instant::now() + Duration::from_secs(60),
            reserve: Duration::from_secs(12),
        };
        let handled = run(2, Some(roomy), |_, _| async move { true }).await;
        assert_eq!(handled, vec![true; 2]);
    }
}

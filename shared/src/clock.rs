//! The time an adapter compares expiries with, injected so that tests can move it.
//!
//! Windows, idempotency keys and delivery records expire: the adapters write `now + ttl` and later
//! compare it with `now`. In production `now` is the wall clock ([`Clock::system`], what every
//! adapter uses unless told otherwise). The contract suites give the adapters a [`ManualClock`]'s
//! clock instead and advance it past a TTL, rather than sleeping through it. Only time the
//! adapter reads itself can be moved this way; a timer the backend keeps (SQS visibility, DynamoDB's
//! own TTL deletion) still runs on the backend's clock.

#[cfg(any(test, feature = "test-util"))]
use std::sync::atomic::{AtomicI64, Ordering};
#[cfg(any(test, feature = "test-util"))]
use std::sync::Arc;
#[cfg(any(test, feature = "test-util"))]
use std::time::Duration;

/// Where an adapter reads the current time; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    source: Source,
}

#[derive(Debug, Clone, Default)]
enum Source {
    #[default]
    System,
    /// Shared with the [`ManualClock`] that made it, which alone moves it.
    #[cfg(any(test, feature = "test-util"))]
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// The wall clock, as [`crate::events::now_millis`] reads it.
    pub fn system() -> Clock {
        Clock {
            source: Source::System,
        }
    }

    /// The current time in Unix milliseconds.
    pub fn now_millis(&self) -> i64 {
        match &self.source {
            Source::System => crate::events::now_millis(),
            #[cfg(any(test, feature = "test-util"))]
            Source::Manual(millis) => millis.load(Ordering::SeqCst),
        }
    }
}

/// A clock that stands still until a test advances it. It starts at the wall clock's time, so
/// that what an adapter stores under it looks like any other record to the backend.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Clone)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

#[cfg(any(test, feature = "test-util"))]
impl ManualClock {
    /// A manual clock reading the wall clock's time now.
    pub fn starting_now() -> ManualClock {
        ManualClock {
            millis: Arc::new(AtomicI64::new(crate::events::now_millis())),
        }
    }

    /// A [`Clock`] that reads this one, for an adapter.
    pub fn clock(&self) -> Clock {
        Clock {
            source: Source::Manual(self.millis.clone()),
        }
    }

    /// Moves every clock made by [`ManualClock::clock`] forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        // fetch_update rather than fetch_add: saturate instead of wrapping.
        let _ = self
            .millis
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(by))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let manual = ManualClock::starting_now();
        let clock = manual.clock();
        let start = clock.now_millis();
        assert_eq!(clock.now_millis(), start);
        manual.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now_millis(), start + 1_500);
    }
}

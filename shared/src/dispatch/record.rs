//! The delivery log's side of an attempt (spec §8): the claim of a copy's number before it is sent,
//! what an execution comes to (status, error, a capped body) and its entry in the log, which is
//! for people and never changes what is delivered.

use super::delivery::Delivery;
use super::park::Stuck;
use super::{Dispatcher, Executed};
use crate::delivery_log::{Attempt, DeliveryStatus, Then};
use crate::metrics::Stats;

/// What the delivery log keeps of an execution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Summary {
    /// The target's HTTP status, when it answered.
    pub(super) status: Option<u16>,
    /// Why the attempt did not deliver, when it did not.
    pub(super) error: Option<String>,
    /// The response body (a Lambda handler's result), cut to
    /// [`DispatchSettings::logged_body_limit`](super::DispatchSettings::logged_body_limit) bytes.
    pub(super) body: Option<String>,
}

impl Dispatcher {
    /// Writes an attempt to the delivery log; with [`Then::Retry`], the number it reserved for
    /// the retry. The log is for people: a failure to write it must not change what is
    /// delivered, so it is only logged, and the retry then claims its number before it is sent.
    pub(super) async fn record(
        &self,
        delivery: &Delivery,
        attempt: Attempt,
        status: DeliveryStatus,
        then: Then,
    ) -> Option<u32> {
        let recorded = self
            .log
            .record_attempt(
                delivery.log_key(),
                &delivery.event,
                attempt,
                status,
                self.settings.delivery_log_ttl,
                then,
            )
            .await;
        recorded.unwrap_or_else(|err| {
            tracing::warn!(error = %err, delivery_id = %delivery.id, "could not record a delivery attempt");
            None
        })
    }

    /// Claims the attempt number of a delivery that may be a copy ([`Delivery::claim`]) before
    /// it is sent ([`DeliveryLog::claim_attempt`]): a copy whose number went out already goes
    /// out as a later attempt, so the target never sees one number twice. Unlike the log's
    /// entries, the claim decides what is sent: when it cannot be written, the attempt is
    /// parked, not made. A delivery that is no copy passes as it is, unless its message was
    /// received longer ago than [`DispatchSettings::unclaimed_window`].
    ///
    /// [`DispatchSettings::unclaimed_window`]: super::DispatchSettings::unclaimed_window
    /// [`DeliveryLog::claim_attempt`]: crate::delivery_log::DeliveryLog::claim_attempt
    pub(super) async fn claim(&self, mut delivery: Delivery) -> Result<Delivery, Stuck> {
        let late = delivery
            .received
            .is_some_and(|at| at.elapsed() > self.settings.unclaimed_window);
        if !delivery.claim && !late {
            return Ok(delivery);
        }
        let claimed = self
            .log
            .claim_attempt(
                delivery.log_key(),
                delivery.attempt,
                self.settings.delivery_log_ttl,
            )
            .await;
        match claimed {
            Ok(number) => {
                Stats::bump(&self.stats.claimed);
                if number != delivery.attempt {
                    Stats::bump(&self.stats.renumbered);
                    tracing::info!(
                        hook_id = %delivery.hook_id, delivery_id = %delivery.id,
                        attempt = delivery.attempt, sent_as = number,
                        "this copy of the delivery goes out as a later attempt"
                    );
                }
                delivery.attempt = number;
                delivery.claim = false;
                Ok(delivery)
            }
            Err(err) => Err(Stuck::new(delivery, err)),
        }
    }

    /// What the delivery log keeps of an execution: its status, error and capped body.
    pub(super) fn summarize(&self, executed: &Executed) -> Summary {
        let cap = |text: &str| {
            let mut end = text.len().min(self.settings.logged_body_limit);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text[..end].to_string()
        };
        let failed = |error: String| Summary {
            error: Some(error),
            ..Summary::default()
        };
        match executed {
            Executed::Http(Ok(response)) => Summary {
                status: Some(response.status),
                error: (!(200..300).contains(&response.status))
                    .then(|| format!("target answered {}", response.status)),
                body: Some(cap(&response.body)),
            },
            Executed::Http(Err(err)) => failed(err.to_string()),
            Executed::Logged(_) => Summary::default(),
            Executed::Lambda(Ok(value)) => Summary {
                body: Some(cap(&value.to_string())),
                ..Summary::default()
            },
            Executed::Lambda(Err(err)) => failed(err.to_string()),
            Executed::Unprepared(reason) => failed(reason.to_string()),
        }
    }
}

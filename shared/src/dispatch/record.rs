//! The delivery log's side of an attempt (spec §8): the claim of its number before it is sent,
//! what an execution comes to (status, error, a capped body) and its entry in the log, which is
//! for people and never changes what is delivered.

use uuid::Uuid;

use super::delivery::Delivery;
use super::park::Stuck;
use super::{Dispatcher, Executed};
use crate::delivery_log::{Attempt, DeliveryKey, DeliveryStatus};
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
    /// Writes an attempt to the delivery log. The log is for people: a failure to write it must
    /// not change what is delivered, so it is only logged.
    pub(super) async fn record(
        &self,
        hook_id: Uuid,
        delivery: &Delivery,
        attempt: Attempt,
        status: DeliveryStatus,
    ) {
        if let Err(err) = self
            .log
            .record_attempt(
                DeliveryKey {
                    hook_id,
                    delivery_id: delivery.id,
                    created_at: delivery.created_at,
                },
                &delivery.event,
                attempt,
                status,
                self.settings.delivery_log_ttl,
            )
            .await
        {
            tracing::warn!(error = %err, delivery_id = %delivery.id, "could not record a delivery attempt");
        }
    }

    /// Claims the delivery's attempt number before it is sent ([`DeliveryLog::claim_attempt`]):
    /// a copy whose number another copy claimed first (a redelivered message, an event fanned out
    /// again) goes out as the next attempt, so the target never sees one number twice. Unlike the
    /// log's entries, the claim decides what is sent: when it cannot be written, the attempt is
    /// parked, not made.
    ///
    /// [`DeliveryLog::claim_attempt`]: crate::delivery_log::DeliveryLog::claim_attempt
    pub(super) async fn claim(&self, mut delivery: Delivery) -> Result<Delivery, Stuck> {
        let key = DeliveryKey {
            hook_id: delivery.hook_id,
            delivery_id: delivery.id,
            created_at: delivery.created_at,
        };
        let claimed = self
            .log
            .claim_attempt(key, delivery.attempt, self.settings.delivery_log_ttl)
            .await;
        match claimed {
            Ok(claimed) => {
                if claimed.number != delivery.attempt {
                    Stats::bump(&self.stats.renumbered);
                    tracing::info!(
                        hook_id = %delivery.hook_id, delivery_id = %delivery.id,
                        attempt = delivery.attempt, sent_as = claimed.number,
                        "another copy of this delivery claimed its attempt; this one goes out as the next"
                    );
                }
                delivery.attempt = claimed.number;
                delivery.created_at = claimed.created_at;
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

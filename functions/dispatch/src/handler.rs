//! The SQS batch handler: each record is handled on its own (in its own tracing span), and only
//! the records that failed for infrastructure reasons are reported back
//! (`ReportBatchItemFailures`), so SQS retries just those.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use event_hooks::dispatch::worker::{self, Feed};
use std::sync::Mutex;

use event_hooks::dispatch::batch::{self, RecordContext};
use event_hooks::dispatch::{Deadline, Dispatcher, MessageOutcome};
use event_hooks::events::now_millis;
use event_hooks::metrics::emf_line;
use event_hooks::metrics::Counts;
use event_hooks::queue::sqs::SqsQueue;
use event_hooks::queue::Received;
use tracing::Instrument;

/// The two queues that trigger the function, recognised by their names in the record's ARN.
pub struct Queues {
    events: SqsQueue,
    deliveries: SqsQueue,
}

impl Queues {
    pub fn new(events: SqsQueue, deliveries: SqsQueue) -> Queues {
        Queues { events, deliveries }
    }

    fn for_arn(&self, arn: &str) -> Option<(&SqsQueue, Feed)> {
        let name = arn.rsplit(':').next()?;
        [
            (&self.events, Feed::Events),
            (&self.deliveries, Feed::Deliveries),
        ]
        .into_iter()
        .find(|(queue, _)| queue_name(queue.url()) == name)
    }
}

/// Reports the dispatcher's counters batch by batch: remembers what it last reported, so each
/// line carries only what happened since.
pub struct MetricsReporter {
    reported: Mutex<Counts>,
    /// The stack the metrics are reported for (their one dimension).
    stack: String,
}

impl MetricsReporter {
    pub fn new(stack: String) -> MetricsReporter {
        MetricsReporter {
            reported: Mutex::default(),
            stack,
        }
    }

    /// Writes what happened since the last call as one CloudWatch Embedded Metric Format line on
    /// stdout.
    fn emit(&self, dispatcher: &Dispatcher) {
        let now = dispatcher.stats.counts();
        let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        let latencies = dispatcher.stats.take_latencies();
        if let Some(line) = emf_line(now - *reported, &latencies, now_millis(), &self.stack) {
            println!("{line}");
        }
        *reported = now;
    }
}

/// The last path segment of a queue URL is the queue's name.
fn queue_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

/// A Lambda SQS record as the queue port's received message.
fn received(record: &SqsMessage) -> Received {
    let attributes: HashMap<_, _> = record
        .message_attributes
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.string_value.clone()?)))
        .collect();
    Received {
        id: record.message_id.clone().unwrap_or_default(),
        receipt: record.receipt_handle.clone().unwrap_or_default(),
        body: record.body.clone().unwrap_or_default(),
        receive_count: record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1),
        // Always in Lambda's SQS records; the time now is the best guess otherwise.
        sent_at: record
            .attributes
            .get("SentTimestamp")
            .and_then(|millis| millis.parse().ok())
            .unwrap_or_else(event_hooks::events::now_millis),
        attributes: attributes.into_iter().collect(),
        group: record.attributes.get("MessageGroupId").cloned(),
    }
}

/// When the trigger first received the record's message (`ApproximateFirstReceiveTimestamp`):
/// for a message received once, when this receive's lease on it began, perhaps well before this
/// invocation (a batching window, a cold start, the hooks' refresh). `None` without the
/// attribute, or when it is older than any visibility timeout SQS allows (12 hours): no lease
/// lasts that long, so it is no receive's (a sample event's fixed time).
fn lease_start(record: &SqsMessage) -> Option<Instant> {
    const LONGEST_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
    let first: i64 = record
        .attributes
        .get("ApproximateFirstReceiveTimestamp")?
        .parse()
        .ok()?;
    let ago = Duration::from_millis(u64::try_from(now_millis().saturating_sub(first)).unwrap_or(0));
    if ago > LONGEST_VISIBILITY {
        return None;
    }
    Instant::now().checked_sub(ago)
}

/// Handles a batch; the response lists the records to retry. Records start at once, their
/// snooze/on_change decisions taken in queue order per hook; none starts (and no attempt starts)
/// when less than `deadline.reserve` is left before `deadline.at`.
pub async fn handle_batch(
    dispatcher: &Dispatcher,
    queues: &Queues,
    metrics: &MetricsReporter,
    event: SqsEvent,
    deadline: Option<Deadline>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    let mut response = SqsBatchResponse::default();
    // Hook changes made before this batch apply to it (read-your-writes).
    dispatcher.refresh_hooks().await;
    let records = &event.records;
    let handled = batch::run(records.len(), deadline, |position, context| async move {
        let record = &records[position];
        let message = received(record);
        let context = RecordContext {
            received: lease_start(record).unwrap_or(context.received),
            ..context
        };
        let span = tracing::info_span!("message", message_id = %message.id);
        let handled = async {
            let arn = record.event_source_arn.as_deref().unwrap_or_default();
            let Some((queue, feed)) = queues.for_arn(arn) else {
                tracing::error!(arn, "message from an unknown queue");
                return false;
            };
            // A message that came back more often than the queue allows is not handled again:
            // the trigger never goes through `Queue::receive`, where the adapter would catch it.
            let outcome = match queue.received_too_often(&message) {
                Some(reason) => Ok(MessageOutcome::Reject(reason)),
                None => worker::outcome_in(dispatcher, feed, &message, &context).await,
            };
            // The trigger deletes every record not reported as failed: only dead letters are
            // ours to send.
            match outcome {
                Ok(MessageOutcome::Done) => true,
                Ok(MessageOutcome::Reject(reason)) => {
                    tracing::warn!(%reason, receive_count = message.receive_count, "message rejected; dead-lettered");
                    match queue.copy_to_dead_letter(&message, &reason).await {
                        Ok(()) => true,
                        Err(err) => {
                            tracing::error!(error = %err, "could not dead-letter a message");
                            false
                        }
                    }
                }
                Err(_) => false,
            }
        }
        .instrument(span)
        .await;
        handled
    })
    .await;
    metrics.emit(dispatcher);
    for (record, handled) in records.iter().zip(handled) {
        if !handled {
            // The struct is non-exhaustive: build it from its default.
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = record.message_id.clone().unwrap_or_default();
            response.batch_item_failures.push(failure);
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Queues at real-looking URLs; the client is never called, so it needs no endpoint.
    fn queues() -> Queues {
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .build();
        let client = aws_sdk_sqs::Client::from_conf(config);
        let url = |name: &str| format!("https://sqs.us-east-1.amazonaws.com/123456789012/{name}");
        Queues::new(
            SqsQueue::new(client.clone(), url("stack-Events-1A2B")),
            SqsQueue::new(client, url("stack-Deliveries-3C4D")),
        )
    }

    #[test]
    fn queue_names_come_from_urls_and_arns() {
        let queues = queues();
        let arn = |name: &str| format!("arn:aws:sqs:us-east-1:123456789012:{name}");

        let events = queues.for_arn(&arn("stack-Events-1A2B"));
        let deliveries = queues.for_arn(&arn("stack-Deliveries-3C4D"));

        let (queue, feed) = events.expect("the events queue is recognised");
        assert_eq!(feed, Feed::Events);
        assert!(queue.url().ends_with("/stack-Events-1A2B"));
        let (queue, feed) = deliveries.expect("the deliveries queue is recognised");
        assert_eq!(feed, Feed::Deliveries);
        assert!(queue.url().ends_with("/stack-Deliveries-3C4D"));
    }

    #[test]
    fn records_from_other_queues_are_not_recognised() {
        let queues = queues();

        for arn in [
            "arn:aws:sqs:us-east-1:123456789012:stack-Events-1A2B-dlq",
            "arn:aws:sqs:us-east-1:123456789012:Events-1A2B",
            "arn:aws:sqs:us-east-1:123456789012:",
            "",
        ] {
            assert!(queues.for_arn(arn).is_none(), "{arn}");
        }
    }

    #[test]
    fn a_records_lease_starts_at_its_first_receive() {
        let mut record = SqsMessage::default();
        assert!(lease_start(&record).is_none());
        let first = now_millis() - 7_000;
        record
            .attributes
            .insert("ApproximateFirstReceiveTimestamp".into(), first.to_string());

        let held = lease_start(&record).unwrap().elapsed();

        assert!(held >= Duration::from_millis(7_000), "{held:?}");
        assert!(held < Duration::from_secs(60), "{held:?}");
        // A sample event's fixed time is no lease's start.
        record.attributes.insert(
            "ApproximateFirstReceiveTimestamp".into(),
            "1795400000012".into(),
        );
        assert!(lease_start(&record).is_none());
    }

    #[test]
    fn a_records_message_group_is_its_group() {
        let mut record = SqsMessage::default();
        record
            .attributes
            .insert("MessageGroupId".into(), "hook-1".into());

        assert_eq!(received(&record).group.as_deref(), Some("hook-1"));
        assert_eq!(received(&SqsMessage::default()).group, None);
    }

    #[test]
    fn sample_events_parse_as_sqs_batches() {
        for entry in
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../events")).unwrap()
        {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !name.starts_with("dispatch-") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let event: SqsEvent = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{name} is not an SQS event: {e}"));
            assert!(!event.records.is_empty(), "{name}");
        }
    }
}

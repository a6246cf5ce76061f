//! What an attempt's outcome means, and when to try again (spec §8).
//!
//! [`classify`] turns a response or a send error into a [`Verdict`]: delivered, worth retrying, or
//! failed for good. [`RetrySchedule`] says how long to wait before the next attempt. Kong treats
//! every status as success and retries transport errors for 60 s only; here 408, 429 and 5xx are
//! retried on a schedule of hours, and any other non-2xx status fails the delivery at once, since
//! sending the same request again would get the same answer.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use super::http::{Response, SendError};
use crate::model::{RetryOn, RetryPolicy};

/// What to do after one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The target accepted the delivery (2xx).
    Delivered,
    /// Try again later; `after` is what the target asked for with `Retry-After`, if it did.
    Retry {
        /// The target's `Retry-After`, uncapped; [`RetrySchedule::next_delay`] caps it.
        after: Option<Duration>,
    },
    /// Do not try again; the reason is for the delivery log and the dead-letter queue.
    Failed(String),
}

/// Classifies one attempt's outcome.
///
/// 2xx is delivered; 408, 429 and 5xx are retried (429 and 503 with their `Retry-After`), as are
/// timeouts and transport errors; a refused target, an invalid request and every other status
/// (1xx, 3xx, other 4xx) fail.
pub fn classify(result: &Result<Response, SendError>) -> Verdict {
    match result {
        Ok(response) => match response.status {
            200..=299 => Verdict::Delivered,
            429 | 503 => Verdict::Retry {
                after: response
                    .headers
                    .get("retry-after")
                    .and_then(|value| parse_retry_after(value, SystemTime::now())),
            },
            408 | 500..=599 => Verdict::Retry { after: None },
            status => Verdict::Failed(format!("target answered {}", status_text(status))),
        },
        Err(error) if error.is_retryable() => Verdict::Retry { after: None },
        Err(error) => Verdict::Failed(error.to_string()),
    }
}

/// `410 Gone`, or just `599` for a status with no standard reason phrase.
fn status_text(status: u16) -> String {
    match reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// Parses `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3); a date in the past
/// means "now". Anything unparseable is ignored, leaving the schedule in charge.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Re-queues a delivery may make per attempt that are no retry and no chained delay: deferrals
/// (its hook's lane full or circuit open, a `max_rate` slot, the dispatcher busy), an attempt cut
/// at the inline budget, a park after an infrastructure failure. Part of
/// [`RetrySchedule::max_requeues`]; generous, since the bound is there to stop loops, not to
/// ration deferrals. [`requeue_delay`] spaces them out, so the margin is hours of bad weather.
pub const REQUEUES_PER_ATTEMPT: u32 = 20;

/// The least a re-queue in a row doubles from (see [`requeue_delay`]): a wait of nearly nothing
/// (an open circuit's last milliseconds, a slow hook's deliveries leaving an event at once) still
/// grows to minutes within the margin. The lanes' shortest deferral.
pub(crate) const REQUEUE_BACKOFF_FLOOR: Duration = Duration::from_millis(500);

/// How long a re-queue that is no retry waits (a deferral, a park): `base`, what it waits on its
/// own (the park delay, the time its lane gave), when it is the first since the delivery's last
/// attempt ran (`in_row` 0, so the first ones stay as quick as ever: a lane deferral is back in
/// well under a second); after `in_row` such re-queues in a row, at least `base` × 2^`in_row`
/// (from [`REQUEUE_BACKOFF_FLOOR`] at least), and no more than `cap`, the queue's longest delay,
/// unless `base` itself is longer.
///
/// A re-queue in a row is bad weather, a store or queue down, a lane full under a backlog, a
/// circuit open: it does not pass faster by being asked more often, and the doubling makes the
/// [`REQUEUES_PER_ATTEMPT`] margin of the loop guard a span of time rather than a count. With the
/// defaults (cap 15 minutes), 20 in a row span:
///
/// - parks (`park_delay` 5 s): 5, 10, 20, … 640 s, then 900 s twelve times: 12,075 s, about
///   3 h 20 min;
/// - any deferral, whatever its base: 1, 2, 4, … 512 s, then 900 s nine times: at least 9,123 s,
///   about 2 h 30 min (longer bases, such as an open circuit's cool-down, reach 15 minutes
///   sooner).
///
/// That is per attempt the schedule allows; the margin belongs to the delivery as a whole
/// (9 × 20 for the default schedule), so one outage before the first attempt may take all 180:
/// parks for about 43 hours.
pub(crate) fn requeue_delay(base: Duration, in_row: u32, cap: Duration) -> Duration {
    if in_row == 0 {
        return base;
    }
    let factor = 1u32.checked_shl(in_row).unwrap_or(u32::MAX);
    let grown = base
        .max(REQUEUE_BACKOFF_FLOOR)
        .saturating_mul(factor)
        .min(cap);
    base.max(grown)
}

/// When to retry a delivery, and how many times.
#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    /// The delay after each failed attempt: `delays[0]` after the first, and so on. Its length is
    /// the number of retries.
    pub delays: Vec<Duration>,
    /// Each scheduled delay is moved by up to this fraction either way, so deliveries that failed
    /// together (a target that went down) do not all come back at the same instant.
    pub jitter: f64,
    /// The longest `Retry-After` honoured; a target cannot park a delivery for days.
    pub(crate) max_retry_after: Duration,
}

impl RetrySchedule {
    /// The spec's delays: 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 3 h, 6 h.
    pub(crate) const DEFAULT_DELAYS: [Duration; 8] = [
        Duration::from_secs(5),
        Duration::from_secs(30),
        Duration::from_secs(2 * 60),
        Duration::from_secs(10 * 60),
        Duration::from_secs(30 * 60),
        Duration::from_secs(3600),
        Duration::from_secs(3 * 3600),
        Duration::from_secs(6 * 3600),
    ];
    /// ±20 % around each scheduled delay.
    pub(crate) const DEFAULT_JITTER: f64 = 0.2;
    /// `Retry-After` is honoured up to an hour.
    pub(crate) const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
}

impl Default for RetrySchedule {
    /// The spec's schedule: [`DEFAULT_DELAYS`](Self::DEFAULT_DELAYS),
    /// [`DEFAULT_JITTER`](Self::DEFAULT_JITTER), [`DEFAULT_MAX_RETRY_AFTER`](Self::DEFAULT_MAX_RETRY_AFTER).
    fn default() -> Self {
        Self {
            delays: Self::DEFAULT_DELAYS.to_vec(),
            jitter: Self::DEFAULT_JITTER,
            max_retry_after: Self::DEFAULT_MAX_RETRY_AFTER,
        }
    }
}

impl RetrySchedule {
    /// All attempts a delivery gets: the first one plus one per delay.
    pub(crate) fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// The most times a delivery on this schedule may be put on the deliveries queue (spec §8):
    /// for each delay at its longest (jittered up, or a `Retry-After` at its cap), one message per
    /// `max_delay` started, since a queue holds a message back for at most `max_delay` (SQS: 15
    /// minutes) and longer waits are chained; plus [`REQUEUES_PER_ATTEMPT`] per attempt for the
    /// re-queues that are no retry. A delivery queued more often is in a loop, a bug: the
    /// dispatcher dead-letters it rather than let it run forever.
    pub fn max_requeues(&self, max_delay: Duration) -> u32 {
        let step = max_delay.max(Duration::from_millis(1)).as_secs_f64();
        let factor = 1.0 + self.jitter_fraction();
        let chained: u64 = self
            .delays
            .iter()
            .map(|delay| {
                let longest = delay.mul_f64(factor).max(self.max_retry_after);
                (longest.as_secs_f64() / step).ceil().max(1.0) as u64
            })
            .sum();
        let margin = u64::from(self.max_attempts()) * u64::from(REQUEUES_PER_ATTEMPT);
        u32::try_from(chained.saturating_add(margin)).unwrap_or(u32::MAX)
    }

    /// [`jitter`](Self::jitter) as applied: within `[0, 1]`, 0 when not a number.
    fn jitter_fraction(&self) -> f64 {
        if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// The wait before the next attempt, after attempt number `attempt` (1-based; 0 counts as 1)
    /// failed, or `None` when that was the last one.
    ///
    /// A `retry_after` from the target replaces the jittered scheduled delay when it is longer,
    /// capped at [`max_retry_after`](Self::max_retry_after).
    pub(crate) fn next_delay(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        self.delay_with(attempt, retry_after, fastrand::f64())
    }

    /// [`next_delay`](Self::next_delay) with the random draw given, `unit` in `[0, 1)`, so tests
    /// can check the bounds of the jitter.
    fn delay_with(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        unit: f64,
    ) -> Option<Duration> {
        let index = usize::try_from(attempt.max(1) - 1).ok()?;
        let scheduled = *self.delays.get(index)?;
        let factor = 1.0 + self.jitter_fraction() * (2.0 * unit - 1.0);
        let jittered = scheduled.mul_f64(factor);
        Some(match retry_after {
            Some(asked) => jittered.max(asked.min(self.max_retry_after)),
            None => jittered,
        })
    }
}

/// The schedule of a hook with its own `retry` (spec §12): its delays exactly, no jitter, the
/// `Retry-After` cap of `defaults`; `defaults` itself when it sets no delays.
pub(crate) fn hook_schedule(policy: &RetryPolicy, defaults: &RetrySchedule) -> RetrySchedule {
    match &policy.delays {
        None => defaults.clone(),
        Some(delays) => RetrySchedule {
            delays: delays
                .iter()
                .map(|s| Duration::from_secs(u64::from(*s)))
                .collect(),
            jitter: 0.0,
            max_retry_after: defaults.max_retry_after,
        },
    }
}

/// Narrows a verdict by a hook's `retry.on`: with `5xx` (Apigee Edge's rule) only a 5xx answer
/// is retried; every other failure fails at once.
pub(crate) fn restrict(verdict: Verdict, on: RetryOn, status: Option<u16>) -> Verdict {
    match (on, verdict) {
        (RetryOn::ServerErrors, Verdict::Retry { after }) => match status {
            Some(500..=599) => Verdict::Retry { after },
            Some(status) => Verdict::Failed(format!("target answered {}", status_text(status))),
            None => Verdict::Failed("no answer; this hook retries 5xx answers only".into()),
        },
        (_, verdict) => verdict,
    }
}

/// A retry schedule that could not be parsed from configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid retry schedule {input:?}: {reason}")]
pub struct InvalidSchedule {
    input: String,
    reason: BadDelay,
}

/// Why one item of a retry schedule is not a delay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadDelay {
    /// Nothing at all: more likely a missing variable than a wish for no retries.
    #[error("empty; write `none` for no retries")]
    Empty,
    #[error("{0:?} has no unit (ms, s, m, h or d)")]
    NoUnit(String),
    #[error("{0:?} does not start with a whole number")]
    NoNumber(String),
    #[error("{item:?} has unknown unit {unit:?}")]
    UnknownUnit { item: String, unit: String },
    #[error("{0:?} is too long")]
    TooLong(String),
}

impl FromStr for RetrySchedule {
    type Err = InvalidSchedule;

    /// Parses a comma-separated list of delays such as `5s,30s,2m,10m,1h` (units `ms`, `s`, `m`,
    /// `h`, `d`), or `none` for no retries; jitter and the `Retry-After` cap keep their defaults.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: BadDelay| InvalidSchedule {
            input: input.to_owned(),
            reason,
        };
        let trimmed = input.trim();
        let delays = if trimmed.eq_ignore_ascii_case("none") {
            Vec::new()
        } else if trimmed.is_empty() {
            return Err(invalid(BadDelay::Empty));
        } else {
            trimmed
                .split(',')
                .map(|item| parse_delay(item.trim()).map_err(&invalid))
                .collect::<Result<_, _>>()?
        };
        Ok(RetrySchedule {
            delays,
            ..RetrySchedule::default()
        })
    }
}

impl fmt::Display for RetrySchedule {
    /// The delays in the form [`FromStr`] reads, e.g. `5s,30s,2m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.delays.is_empty() {
            return f.write_str("none");
        }
        for (i, delay) in self.delays.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let ms = delay.as_millis();
            match ms {
                _ if ms % 86_400_000 == 0 && ms > 0 => write!(f, "{}d", ms / 86_400_000)?,
                _ if ms % 3_600_000 == 0 && ms > 0 => write!(f, "{}h", ms / 3_600_000)?,
                _ if ms % 60_000 == 0 && ms > 0 => write!(f, "{}m", ms / 60_000)?,
                _ if ms % 1_000 == 0 => write!(f, "{}s", ms / 1_000)?,
                _ => write!(f, "{ms}ms")?,
            }
        }
        Ok(())
    }
}

fn parse_delay(item: &str) -> Result<Duration, BadDelay> {
    let split = item
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| BadDelay::NoUnit(item.to_owned()))?;
    let (number, unit) = item.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| BadDelay::NoNumber(item.to_owned()))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(BadDelay::UnknownUnit {
                item: item.to_owned(),
                unit: unit.to_owned(),
            })
        }
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| BadDelay::TooLong(item.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// How long `count` re-queues in a row from `base` wait in all.
    fn span(base: Duration, count: u32, cap: Duration) -> Duration {
        (0..count).map(|k| requeue_delay(base, k, cap)).sum()
    }

    #[test]
    fn requeues_in_a_row_double_up_to_the_queues_longest_delay() {
        let cap = Duration::from_secs(900);
        let secs = |s| Duration::from_secs(s);
        // Parks: the first as quick as ever, then doubling, then the cap.
        let parks: Vec<Duration> = (0..10).map(|k| requeue_delay(secs(5), k, cap)).collect();
        assert_eq!(
            parks,
            [5, 10, 20, 40, 80, 160, 320, 640, 900, 900].map(secs)
        );
        // A lane deferral: its own time first, back within a second or so the next times.
        let lane = Duration::from_millis(400);
        assert_eq!(requeue_delay(lane, 0, cap), lane);
        assert_eq!(requeue_delay(lane, 1, cap), secs(1));
        assert_eq!(requeue_delay(lane, 2, cap), secs(2));
        // Nearly nothing still grows, from the floor; a base past the cap is kept (it is chained).
        assert_eq!(requeue_delay(Duration::ZERO, 0, cap), Duration::ZERO);
        assert_eq!(requeue_delay(Duration::ZERO, 3, cap), secs(4));
        assert_eq!(requeue_delay(secs(3600), 5, cap), secs(3600));
        // No overflow however long the row.
        assert_eq!(requeue_delay(secs(5), 40, cap), cap);
        assert_eq!(requeue_delay(secs(5), u32::MAX, cap), cap);

        // The margin per attempt is hours of bad weather (the figures of the documentation).
        assert_eq!(span(secs(5), REQUEUES_PER_ATTEMPT, cap), secs(12_075));
        assert_eq!(span(Duration::ZERO, REQUEUES_PER_ATTEMPT, cap), secs(9_123));
        let margin = RetrySchedule::default().max_attempts() * REQUEUES_PER_ATTEMPT;
        assert_eq!(span(secs(5), margin, cap), secs(156_075));
        // Where a park every 5 s would be through the margin in 15 minutes.
        assert_eq!(secs(5) * margin, secs(900));
    }

    #[test]
    fn the_requeue_bound_covers_every_chained_delay_and_a_margin_per_attempt() {
        // The spec's schedule on SQS: each delay at +20 % (or the 1 h Retry-After cap) in
        // 15-minute hops: 4 x 4 (5 s to 10 min, as the cap), 4 (36 min), 5 (72 min), 15 (3.6 h),
        // 29 (7.2 h); then 9 attempts' margin.
        let defaults = RetrySchedule::default();
        let chained = 4 * 4 + 4 + 5 + 15 + 29;
        assert_eq!(
            defaults.max_requeues(Duration::from_secs(900)),
            chained + 9 * REQUEUES_PER_ATTEMPT
        );
        // What a delivery failing every attempt actually needs: one message per retry, plus
        // the chained hops of the delays over 15 minutes (1 + 3 + 11 + 23 at most, unjittered).
        assert!(chained >= 8 + 1 + 3 + 11 + 23);
        // The same schedule scaled down with the queue's limit needs the same.
        let scaled: RetrySchedule = "6ms,33ms,133ms,667ms,2s,4s,12s,24s".parse().unwrap();
        let scaled = RetrySchedule {
            max_retry_after: Duration::from_secs(4),
            ..scaled
        };
        assert_eq!(
            scaled.max_requeues(Duration::from_secs(1)),
            defaults.max_requeues(Duration::from_secs(900))
        );
        // No retries: only the margin of the one attempt.
        let none: RetrySchedule = "none".parse().unwrap();
        assert_eq!(
            none.max_requeues(Duration::from_secs(900)),
            REQUEUES_PER_ATTEMPT
        );
        // A hook's exact schedule, without jitter nor a Retry-After to cover.
        let exact = RetrySchedule {
            delays: vec![Duration::from_secs(900), Duration::from_secs(901)],
            jitter: 0.0,
            max_retry_after: Duration::ZERO,
        };
        assert_eq!(
            exact.max_requeues(Duration::from_secs(900)),
            1 + 2 + 3 * REQUEUES_PER_ATTEMPT
        );
    }

    #[test]
    fn a_hooks_own_schedule_is_exact_and_5xx_only_narrows_the_verdict() {
        let defaults = RetrySchedule::default();
        let own = |delays| RetryPolicy {
            delays,
            on: RetryOn::ServerErrors,
        };
        assert_eq!(hook_schedule(&own(None), &defaults), defaults);
        let policy = own(Some(vec![300, 0]));
        let schedule = hook_schedule(&policy, &RetrySchedule::default());
        assert_eq!(schedule.max_attempts(), 3);
        assert_eq!(schedule.next_delay(1, None), Some(Duration::from_secs(300)));
        assert_eq!(schedule.next_delay(2, None), Some(Duration::ZERO));
        assert_eq!(schedule.next_delay(3, None), None);
        let narrowed = |result: &Result<Response, SendError>, status| {
            restrict(classify(result), RetryOn::ServerErrors, status)
        };
        assert_eq!(
            narrowed(&answered(503, &[]), Some(503)),
            Verdict::Retry { after: None }
        );
        assert_eq!(
            narrowed(&answered(500, &[]), Some(500)),
            Verdict::Retry { after: None }
        );
        for status in [408, 429, 400] {
            assert!(
                matches!(
                    narrowed(&answered(status, &[]), Some(status)),
                    Verdict::Failed(_)
                ),
                "{status}"
            );
        }
        assert!(matches!(
            narrowed(&Err(SendError::Timeout), None),
            Verdict::Failed(_)
        ));
        assert_eq!(narrowed(&answered(200, &[]), Some(200)), Verdict::Delivered);
        // The default rules are left alone.
        assert_eq!(
            restrict(classify(&answered(429, &[])), RetryOn::Default, Some(429)),
            Verdict::Retry { after: None }
        );
    }
    fn answered(status: u16, headers: &[(&str, &str)]) -> Result<Response, SendError> {
        Ok(Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            body: String::new(),
            latency: Duration::from_millis(3),
        })
    }

    const RETRY: Verdict = Verdict::Retry { after: None };

    #[test]
    fn statuses_are_classified() {
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(
                classify(&answered(status, &[])),
                Verdict::Delivered,
                "{status}"
            );
        }
        for status in [408, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify(&answered(status, &[])), RETRY, "{status}");
        }
        for (status, reason) in [
            (100, "target answered 100 Continue"),
            (301, "target answered 301 Moved Permanently"),
            (302, "target answered 302 Found"),
            (304, "target answered 304 Not Modified"),
            (400, "target answered 400 Bad Request"),
            (401, "target answered 401 Unauthorized"),
            (404, "target answered 404 Not Found"),
            (410, "target answered 410 Gone"),
            (422, "target answered 422 Unprocessable Entity"),
            (499, "target answered 499"),
        ] {
            assert_eq!(
                classify(&answered(status, &[])),
                Verdict::Failed(reason.to_owned()),
                "{status}"
            );
        }
    }

    #[test]
    fn send_errors_are_classified() {
        for error in [
            SendError::Timeout,
            SendError::Connect("connection refused".into()),
            SendError::Transport("connection reset".into()),
        ] {
            assert_eq!(classify(&Err(error)), RETRY);
        }
        assert_eq!(
            classify(&Err(SendError::Refused(
                "address 10.0.0.1 is not a public address".into()
            ))),
            Verdict::Failed(
                "refused to deliver: address 10.0.0.1 is not a public address".to_owned()
            )
        );
        assert!(matches!(
            classify(&Err(SendError::InvalidRequest("bad".into()))),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn retry_after_is_honoured_on_429_and_503_only() {
        let after = |secs| Verdict::Retry {
            after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            classify(&answered(429, &[("retry-after", "120")])),
            after(120)
        );
        assert_eq!(
            classify(&answered(503, &[("retry-after", " 7 ")])),
            after(7)
        );
        assert_eq!(classify(&answered(500, &[("retry-after", "120")])), RETRY);
        assert_eq!(classify(&answered(429, &[("retry-after", "soon")])), RETRY);
        assert_eq!(classify(&answered(429, &[("retry-after", "-5")])), RETRY);
        // A date: about 90 s from now (the clock moves while the test runs, hence the range).
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(90));
        match classify(&answered(503, &[("retry-after", &date)])) {
            Verdict::Retry { after: Some(d) } => {
                assert!(
                    d > Duration::from_secs(85) && d <= Duration::from_secs(90),
                    "{d:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retry_after_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(Duration::from_secs(60))
        );
        // A date in the past means now.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        // The obsolete formats HTTP still allows.
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:49:47 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:47 1994", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_retry_after("tomorrow", now), None);
    }

    #[test]
    fn default_schedule_is_the_specs() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.to_string(), "5s,30s,2m,10m,30m,1h,3h,6h");
        assert_eq!(schedule.max_attempts(), 9);
        assert_eq!(schedule.jitter, 0.2);
        assert_eq!(schedule.max_retry_after, Duration::from_secs(3600));
    }

    #[test]
    fn next_delay_follows_the_schedule_until_exhausted() {
        let schedule = RetrySchedule {
            jitter: 0.0,
            ..RetrySchedule::default()
        };
        assert_eq!(schedule.next_delay(1, None), Some(Duration::from_secs(5)));
        assert_eq!(schedule.next_delay(2, None), Some(Duration::from_secs(30)));
        assert_eq!(
            schedule.next_delay(8, None),
            Some(Duration::from_secs(6 * 3600))
        );
        assert_eq!(schedule.next_delay(9, None), None);
        assert_eq!(schedule.next_delay(u32::MAX, None), None);
        assert_eq!(schedule.next_delay(0, None), Some(Duration::from_secs(5)));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let schedule = RetrySchedule::default();
        let ten_min = Duration::from_secs(600);
        assert_eq!(
            schedule.delay_with(4, None, 0.0),
            Some(ten_min.mul_f64(0.8))
        );
        assert_eq!(schedule.delay_with(4, None, 0.5), Some(ten_min));
        assert!(schedule.delay_with(4, None, 0.999_999).unwrap() < ten_min.mul_f64(1.2));
        for _ in 0..1000 {
            let delay = schedule.next_delay(4, None).unwrap();
            assert!(
                delay >= ten_min.mul_f64(0.8) && delay <= ten_min.mul_f64(1.2),
                "{delay:?}"
            );
        }
        // Nonsense jitter is clamped rather than producing negative or infinite delays.
        let wild = RetrySchedule {
            jitter: 5.0,
            ..RetrySchedule::default()
        };
        assert_eq!(wild.delay_with(1, None, 0.0), Some(Duration::ZERO));
        let nan = RetrySchedule {
            jitter: f64::NAN,
            ..RetrySchedule::default()
        };
        assert_eq!(nan.delay_with(1, None, 0.0), Some(Duration::from_secs(5)));
    }

    #[test]
    fn retry_after_overrides_when_longer_and_is_capped() {
        let schedule = RetrySchedule {
            jitter: 0.0,
            ..RetrySchedule::default()
        };
        let secs = Duration::from_secs;
        // Longer than the scheduled 5 s: wins.
        assert_eq!(schedule.next_delay(1, Some(secs(60))), Some(secs(60)));
        // Shorter than the scheduled 30 s: the schedule wins.
        assert_eq!(schedule.next_delay(2, Some(secs(1))), Some(secs(30)));
        // A day is capped at the 1 h maximum.
        assert_eq!(schedule.next_delay(1, Some(secs(86_400))), Some(secs(3600)));
        // The cap never shortens the schedule itself.
        assert_eq!(
            schedule.next_delay(8, Some(secs(86_400))),
            Some(secs(6 * 3600))
        );
        // Exhausted stays exhausted, whatever the target asks.
        assert_eq!(schedule.next_delay(9, Some(secs(60))), None);
    }

    #[test]
    fn schedules_parse_from_configuration() {
        let parsed: RetrySchedule = "5s, 30s,2m,10m,1h".parse().unwrap();
        assert_eq!(
            parsed.delays,
            [5, 30, 120, 600, 3600].map(Duration::from_secs).to_vec()
        );
        assert_eq!(parsed.max_attempts(), 6);
        assert_eq!(parsed.jitter, RetrySchedule::default().jitter);
        assert_eq!(parsed.to_string(), "5s,30s,2m,10m,1h");

        let fine: RetrySchedule = "250ms,1d".parse().unwrap();
        assert_eq!(
            fine.delays,
            vec![Duration::from_millis(250), Duration::from_secs(86_400)]
        );
        assert_eq!(fine.to_string(), "250ms,1d");

        let none: RetrySchedule = "none".parse().unwrap();
        assert!(none.delays.is_empty());
        assert_eq!(none.max_attempts(), 1);
        assert_eq!(none.next_delay(1, None), None);

        let round_trip: RetrySchedule = RetrySchedule::default().to_string().parse().unwrap();
        assert_eq!(round_trip, RetrySchedule::default());
    }

    #[test]
    fn bad_schedules_are_rejected_with_a_reason() {
        for (input, reason) in [
            ("", "empty"),
            ("5", "no unit"),
            ("5s,,30s", "no unit"),
            ("5x", "unknown unit"),
            ("s", "whole number"),
            ("-5s", "whole number"),
            ("1.5s", "unknown unit"),
            ("99999999999999999999h", "whole number"),
            ("9999999999999999d", "too long"),
        ] {
            let error = input.parse::<RetrySchedule>().unwrap_err();
            assert!(error.to_string().contains(reason), "{input:?}: {error}");
        }
    }
}

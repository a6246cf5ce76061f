//! The dispatch function's settings, read from the environment once at a cold start: a missing or
//! malformed variable fails the cold start, named, instead of the first batch.

use std::time::Duration;

use event_hooks::dispatch::batch::DEADLINE_MARGIN;
use event_hooks::dispatch::DispatchSettings;
use event_hooks::env::{self, optional, optional_text, required, seconds, BadValue, SettingError};
use event_hooks::outbound::http::HttpSettings;
use event_hooks::outbound::retry::RetrySchedule;
use event_hooks::queue::{DEFAULT_MAX_RECEIVES, MAX_DELAY};

/// How long the hooks snapshot is trusted, unless `HOOKS_CACHE_SECONDS` says otherwise.
const DEFAULT_CACHE_AGE: Duration = Duration::from_secs(5);

/// **Test only**: the longest one deliveries-queue message is held back, in whole seconds from 1
/// to 900 (SQS's limit, the default). The simulated stack lowers it, with the retry schedule
/// scaled alike, so a whole schedule runs in seconds with as many chained hops as on AWS; a
/// deployment has no reason to set it (the template does not).
const TEST_MAX_DELAY: &str = "TEST_ONLY_MAX_QUEUE_DELAY_SECONDS";

fn test_max_delay(value: &str) -> Result<Duration, BadValue> {
    value
        .parse::<u64>()
        .ok()
        .filter(|s| (1..=MAX_DELAY.as_secs()).contains(s))
        .map(Duration::from_secs)
        .ok_or_else(|| BadValue::NotWholeSecondsIn {
            value: value.to_owned(),
            min: 1,
            max: MAX_DELAY.as_secs(),
        })
}

/// The most attempts in flight at once `MAX_IN_FLIGHT_DELIVERIES` may set.
const MAX_IN_FLIGHT_DELIVERIES: usize = 1000;

fn max_in_flight_deliveries(value: &str) -> Result<usize, BadValue> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_IN_FLIGHT_DELIVERIES).contains(n))
        .ok_or_else(|| BadValue::NotWholeNumberIn {
            value: value.to_owned(),
            min: 1,
            max: MAX_IN_FLIGHT_DELIVERIES as u64,
        })
}

/// Everything the dispatch function reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `HOOKS_TABLE`.
    pub hooks_table: String,
    /// `WINDOWS_TABLE`: snooze and on_change windows.
    pub windows_table: String,
    /// `DELIVERIES_TABLE`: the delivery log.
    pub deliveries_table: String,
    /// `EVENTS_QUEUE_URL` and `EVENTS_DEAD_LETTER_QUEUE_URL`.
    pub events_queue_url: String,
    pub events_dead_letter_queue_url: String,
    /// `DELIVERIES_QUEUE_URL` and `DELIVERIES_DEAD_LETTER_QUEUE_URL`.
    pub deliveries_queue_url: String,
    pub deliveries_dead_letter_queue_url: String,
    /// `MAX_RECEIVES`: receives after which a message of either queue is dead-lettered with its
    /// reason; the queues' redrive policies allow one more (template.yaml), as a backstop.
    pub max_receives: u32,
    /// `HOOKS_CACHE_SECONDS`: how stale the hooks snapshot may be.
    pub cache_age: Duration,
    /// `MONETIZATION_TABLE`, optional: without it usage events notify no Apigee webhook.
    pub monetization_table: Option<String>,
    /// `RETRY_SCHEDULE`, `PAUSE_FAILING_HOOKS_AFTER` (seconds), `MAX_IN_FLIGHT_DELIVERIES`,
    /// `HOOK_MAX_IN_FLIGHT` and (tests only) [`TEST_MAX_DELAY`] over the defaults of
    /// [`DispatchSettings`].
    pub dispatch: DispatchSettings,
    /// See [`env::http_settings`].
    pub http: HttpSettings,
    /// `STACK_NAME`: the value of the metrics' [`STACK_DIMENSION`], so that each stack's alarms
    /// watch its own dispatcher only.
    ///
    /// [`STACK_DIMENSION`]: event_hooks::metrics::STACK_DIMENSION
    pub stack_name: String,
}

impl Config {
    /// How much of the invocation must be left to start an attempt: the request timeout plus
    /// [`DEADLINE_MARGIN`].
    pub fn attempt_reserve(&self) -> Duration {
        self.http.total_timeout + DEADLINE_MARGIN
    }

    /// Reads every variable once.
    pub fn from_env() -> Result<Config, SettingError> {
        let mut dispatch = DispatchSettings::default();
        if let Some(retry) = optional("RETRY_SCHEDULE", str::parse::<RetrySchedule>)? {
            dispatch.retry = retry;
        }
        if let Some(pause_after) = optional("PAUSE_FAILING_HOOKS_AFTER", seconds)? {
            dispatch.pause_after = pause_after;
        }
        if let Some(max) = optional("MAX_IN_FLIGHT_DELIVERIES", max_in_flight_deliveries)? {
            dispatch.max_in_flight = max;
        }
        if let Some(max) = optional("HOOK_MAX_IN_FLIGHT", env::hook_max_in_flight)? {
            dispatch.lanes.max_in_flight = max;
        }
        if let Some(max) = optional(TEST_MAX_DELAY, test_max_delay)? {
            dispatch.max_delay = max;
        }
        Ok(Config {
            hooks_table: required("HOOKS_TABLE")?,
            windows_table: required("WINDOWS_TABLE")?,
            deliveries_table: required("DELIVERIES_TABLE")?,
            events_queue_url: required("EVENTS_QUEUE_URL")?,
            events_dead_letter_queue_url: required("EVENTS_DEAD_LETTER_QUEUE_URL")?,
            deliveries_queue_url: required("DELIVERIES_QUEUE_URL")?,
            deliveries_dead_letter_queue_url: required("DELIVERIES_DEAD_LETTER_QUEUE_URL")?,
            max_receives: optional("MAX_RECEIVES", str::parse::<u32>)?
                .unwrap_or(DEFAULT_MAX_RECEIVES),
            cache_age: optional("HOOKS_CACHE_SECONDS", seconds)?.unwrap_or(DEFAULT_CACHE_AGE),
            monetization_table: optional_text("MONETIZATION_TABLE")?,
            dispatch,
            http: env::http_settings()?,
            stack_name: required("STACK_NAME")?,
        })
    }
}

//! The dispatch function's settings, read from the environment once at a cold start: a missing or
//! malformed variable fails the cold start, named, instead of the first batch.

use std::time::Duration;

use event_hooks::dispatch::batch::DEADLINE_MARGIN;
use event_hooks::dispatch::DispatchSettings;
use event_hooks::env::{self, optional, required, seconds, SettingError};
use event_hooks::outbound::http::HttpSettings;
use event_hooks::queue::MAX_DELAY;

/// Receives of one message before it is dead-lettered, unless `MAX_RECEIVES` says otherwise.
const DEFAULT_MAX_RECEIVES: u32 = 5;

/// How long the hooks snapshot is trusted, unless `HOOKS_CACHE_SECONDS` says otherwise.
const DEFAULT_CACHE_AGE: Duration = Duration::from_secs(5);

/// **Test only**: the longest one deliveries-queue message is held back, in whole seconds from 1
/// to 900 (SQS's limit, the default). The simulated stack lowers it, with the retry schedule
/// scaled alike, so a whole schedule runs in seconds with as many chained hops as on AWS; a
/// deployment has no reason to set it (the template does not).
const TEST_MAX_DELAY: &str = "TEST_ONLY_MAX_QUEUE_DELAY_SECONDS";

fn test_max_delay(value: &str) -> Result<Duration, String> {
    value
        .parse::<u64>()
        .ok()
        .filter(|s| (1..=MAX_DELAY.as_secs()).contains(s))
        .map(Duration::from_secs)
        .ok_or_else(|| {
            format!(
                "'{value}' is not a whole number of seconds from 1 to {}",
                MAX_DELAY.as_secs()
            )
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
        if let Some(retry) = optional("RETRY_SCHEDULE", |v| v.parse().map_err(|e| format!("{e}")))?
        {
            dispatch.retry = retry;
        }
        if let Some(pause_after) = optional("PAUSE_FAILING_HOOKS_AFTER", seconds)? {
            dispatch.pause_after = pause_after;
        }
        if let Some(max) = optional("MAX_IN_FLIGHT_DELIVERIES", |v| {
            v.parse::<usize>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| format!("'{v}' is not a whole number from 1 to 1000"))
        })? {
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
            max_receives: optional("MAX_RECEIVES", |v| {
                v.parse::<u32>().map_err(|e| e.to_string())
            })?
            .unwrap_or(DEFAULT_MAX_RECEIVES),
            cache_age: optional("HOOKS_CACHE_SECONDS", seconds)?.unwrap_or(DEFAULT_CACHE_AGE),
            dispatch,
            http: env::http_settings()?,
            stack_name: required("STACK_NAME")?,
        })
    }
}

//! The whole event-hooks service in one local process: the admin API on embedded SQLite storage
//! and an embedded durable queue, no AWS needed. `make run` starts it.
//!
//! It answers only requests for its own host names and refuses cross-site changes ([`guard`]),
//! and it will not listen on an address other machines can reach without an admin token. Slow,
//! silent and idle clients lose their connections ([`connections`]).

pub mod cli;
pub mod connections;
pub mod dead_letters;
pub mod guard;
pub mod relay;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use event_hooks::admin::{self, AdminPorts, AdminSettings, AdminState, CorsOrigins, ProbeState};
use event_hooks::apigee::sqlite::SqliteMonetizationStore;
use event_hooks::apigee::MonetizationStore;
use event_hooks::delivery_log::sqlite::SqliteDeliveryLog;
use event_hooks::delivery_log::DeliveryLog;
use event_hooks::dispatch::worker::{self, Feed, WorkerSettings};
use event_hooks::dispatch::LaneSettings;
use event_hooks::dispatch::{DispatchPorts, DispatchSettings, Dispatcher, Executor};
use event_hooks::env::{self, Seconds};
use event_hooks::idempotency::sqlite::SqliteIdempotencyStore;
use event_hooks::idempotency::IdempotencyStore;
use event_hooks::limits;
use event_hooks::lua::Limits;
use event_hooks::lua::LuaPolicy;
use event_hooks::outbound::http::{HttpSender, HttpSettings};
use event_hooks::outbound::retry::RetrySchedule;
use event_hooks::queue::sqlite::SqliteQueue;
use event_hooks::queue::{Queue, DEFAULT_MAX_RECEIVES};
use event_hooks::snapshot::SnapshotCache;
use event_hooks::sqlite::Database;
use event_hooks::store::sqlite::SqliteHookStore;
use event_hooks::store::HookStore;
use event_hooks::windows::sqlite::SqliteWindowStore;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Every program built on this crate (the server, the command line, the benches and tests)
/// allocates with mimalloc: under glibc's malloc, allocating and freeing took about a fifth of the
/// CPU while dispatching (README → Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Longest time a hook change made by another process takes to reach this one.
const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(2);

/// Settings of the local server; each is a flag and an environment variable (see `--help`).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "event-hooks-local", version, about)]
pub struct Settings {
    /// Address the admin API listens on (unless `--inherit-listener`).
    #[arg(long, env = "EVENT_HOOKS_LISTEN", default_value = "127.0.0.1:8001")]
    pub listen: SocketAddr,

    /// Serve on the listening TCP socket handed over as file descriptor 3, as systemd socket
    /// activation hands it (`LISTEN_FDS=1`, `LISTEN_PID` unset or this process's id), instead of
    /// binding `--listen`. Its address is held to the same rule as `--listen`'s.
    #[arg(long, env = "EVENT_HOOKS_INHERIT_LISTENER", default_value_t = false)]
    pub inherit_listener: bool,

    /// Directory holding the SQLite databases (created if missing).
    #[arg(long, env = "EVENT_HOOKS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// When set, every admin request needs this value in the `Kong-Admin-Token` header.
    /// Required to listen on a non-loopback address.
    #[arg(long, env = "EVENT_HOOKS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// A secret Kong signs relayed events with (`config.secret` of its event hooks), checked on
    /// `POST /events/kong`; repeat the flag to accept several at once (a rotation).
    #[arg(
        long = "relay-secret",
        env = "EVENT_HOOKS_RELAY_SECRET",
        hide_env_values = true
    )]
    pub relay_secrets: Vec<String>,

    /// A file of relay secrets, one a line, read again within seconds of a change (so a rotation
    /// needs no restart); with `--relay-secret`, both are accepted.
    #[arg(long, env = "EVENT_HOOKS_RELAY_SECRETS_FILE")]
    pub relay_secrets_file: Option<PathBuf>,

    /// Take relayed events that carry no `X-Kong-Signature` (Kong hooks without
    /// `config.secret`). Off by default: without a relay secret the relay refuses everything.
    #[arg(long, env = "EVENT_HOOKS_RELAY_UNSIGNED", default_value_t = false)]
    pub relay_unsigned: bool,

    /// More `Host` names to answer to, comma-separated (`name` or `name:port`), besides the
    /// listen address, `localhost`, `127.0.0.1` and `[::1]`; other hosts get 403.
    #[arg(long, env = "EVENT_HOOKS_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Origins (`scheme://host[:port]`, comma-separated) whose web pages may call the API
    /// (CORS); none by default, the console being served from the server's own origin.
    #[arg(long, env = "EVENT_HOOKS_CORS_ALLOWED_ORIGINS", default_value = "", value_parser = CorsOrigins::parse)]
    pub cors_allowed_origins: CorsOrigins,

    /// `sandbox` runs lambda hooks in the Lua sandbox; `off` refuses them.
    #[arg(long, env = "EVENT_HOOKS_UNTRUSTED_LUA", default_value = "sandbox")]
    pub untrusted_lua: LuaPolicy,

    /// Delays between delivery attempts, comma-separated with a unit each (`ms`, `s`, `m`, `h`,
    /// `d`), or `none` (jitter ±20% added).
    #[arg(long, env = "EVENT_HOOKS_RETRY_SCHEDULE", default_value_t = RetrySchedule::default())]
    pub retry_schedule: RetrySchedule,

    /// Refuse targets on loopback, private and link-local addresses (SSRF guard). Off by default
    /// locally, where receivers usually run on loopback; always on in the deployed stack.
    #[arg(long, env = "EVENT_HOOKS_SSRF_GUARD", default_value_t = false)]
    pub ssrf_guard: bool,

    /// Seconds allowed to connect to a target.
    #[arg(long, env = "EVENT_HOOKS_CONNECT_TIMEOUT", default_value_t = Seconds(HttpSettings::DEFAULT_CONNECT_TIMEOUT))]
    pub connect_timeout: Seconds,

    /// Seconds allowed for a whole delivery request.
    #[arg(long, env = "EVENT_HOOKS_REQUEST_TIMEOUT", default_value_t = Seconds(HttpSettings::DEFAULT_TOTAL_TIMEOUT))]
    pub request_timeout: Seconds,

    /// Attempts of one hook in flight at once, for hooks without their own `max_in_flight`
    /// (1 to 64): a slow target holds at most this many, and the rest of its deliveries wait on
    /// the deliveries queue, never another hook's.
    #[arg(long, env = "EVENT_HOOKS_HOOK_MAX_IN_FLIGHT", default_value_t = event_hooks::dispatch::DEFAULT_HOOK_MAX_IN_FLIGHT, value_parser = env::hook_max_in_flight)]
    pub hook_max_in_flight: u32,

    /// Concurrent consumers of each queue (events, deliveries).
    #[arg(long, env = "EVENT_HOOKS_WORKERS", default_value_t = 16)]
    pub workers: usize,

    /// Seconds a hook may fail every attempt before it is paused (`enabled: false`, with its
    /// `disabled_reason`); default one day.
    #[arg(long, env = "EVENT_HOOKS_PAUSE_AFTER", default_value_t = Seconds(DispatchSettings::DEFAULT_PAUSE_AFTER))]
    pub pause_after: Seconds,

    /// Seconds a client has to send a whole request head once it has begun; then the connection
    /// closes.
    #[arg(long, env = "EVENT_HOOKS_HEADER_READ_TIMEOUT", default_value_t = Seconds(Duration::from_secs(10)))]
    pub header_read_timeout: Seconds,

    /// Seconds a client has to send a whole request body after its head; then 408 and the
    /// connection closes.
    #[arg(long, env = "EVENT_HOOKS_BODY_READ_TIMEOUT", default_value_t = Seconds(Duration::from_secs(30)))]
    pub body_read_timeout: Seconds,

    /// Seconds a keep-alive connection may stay open with no request in hand and no traffic.
    #[arg(long, env = "EVENT_HOOKS_IDLE_TIMEOUT", default_value_t = Seconds(Duration::from_secs(60)))]
    pub idle_timeout: Seconds,

    /// Connections served at once; more wait in the listen backlog until one closes.
    #[arg(long, env = "EVENT_HOOKS_MAX_CONNECTIONS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Log format: `text` for people, `json` for machines.
    #[arg(long, env = "EVENT_HOOKS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Settings {
    /// Every setting at its default, whatever the environment says: for benchmarks and tests
    /// that set a few, without repeating the defaults.
    pub fn defaults() -> Settings {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let command = Settings::command().mut_args(|arg| arg.env(None::<&'static str>));
        let matches = command.get_matches_from(["event-hooks-local"]);
        Settings::from_arg_matches(&matches).expect("every setting has a valid default")
    }
}

/// How the local server writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object a line, for machines.
    Json,
}

/// The service wired on embedded adapters, ready to serve.
pub struct Service {
    pub router: axum::Router,
    pub dispatcher: Arc<Dispatcher>,
    events: Arc<dyn Queue>,
    deliveries: Arc<dyn Queue>,
    workers: usize,
}

impl Service {
    /// Opens (creating if needed) the databases under `settings.data_dir`.
    pub async fn open(settings: &Settings) -> anyhow::Result<Service> {
        let databases = Databases::open(&settings.data_dir)?;
        let store: Arc<dyn HookStore> =
            Arc::new(SqliteHookStore::new(databases.hooks.clone()).await?);
        // Changes made through this process invalidate the snapshot at once; the age bound
        // covers changes made by other processes sharing the data directory.
        let snapshot = Arc::new(SnapshotCache::new(store.clone(), SNAPSHOT_MAX_AGE));
        let events = SqliteQueue::open(databases.queue.clone(), "events")
            .await?
            .with_redrive("events-dead-letter", DEFAULT_MAX_RECEIVES);
        let deliveries = SqliteQueue::open(databases.queue.clone(), "deliveries")
            .await?
            .with_redrive("deliveries-dead-letter", DEFAULT_MAX_RECEIVES);
        let delivery_dead_letters =
            SqliteQueue::open(databases.queue.clone(), "deliveries-dead-letter").await?;
        let dead_letters = dead_letters::DeadLetters::new(vec![
            (
                SqliteQueue::open(databases.queue.clone(), "events-dead-letter").await?,
                "events".to_owned(),
            ),
            (delivery_dead_letters.clone(), "deliveries".to_owned()),
        ]);
        // In queue.db, beside the events whose enqueue its keys guard.
        let idempotency: Arc<dyn IdempotencyStore> =
            Arc::new(SqliteIdempotencyStore::new(databases.queue).await?);
        let executor = executor(settings)?;
        let relay = relay::settings(settings).await?;
        let delivery_log: Arc<dyn DeliveryLog> =
            Arc::new(SqliteDeliveryLog::new(databases.log).await?);
        let deliveries: Arc<dyn Queue> = Arc::new(deliveries);
        let events: Arc<dyn Queue> = Arc::new(events);
        // Apigee notification conditions and reached thresholds, beside the hooks.
        let monetization: Arc<dyn MonetizationStore> =
            Arc::new(SqliteMonetizationStore::new(databases.hooks.clone()).await?);
        let dispatcher = Dispatcher::new(
            DispatchPorts {
                snapshot: snapshot.clone(),
                windows: Arc::new(SqliteWindowStore::new(databases.hooks).await?),
                log: delivery_log.clone(),
                deliveries: deliveries.clone(),
                dead_letters: Arc::new(delivery_dead_letters),
                executor: executor.clone(),
                hooks: store.clone(),
                events: events.clone(),
            },
            DispatchSettings {
                retry: settings.retry_schedule.clone(),
                pause_after: settings.pause_after.into(),
                lanes: LaneSettings {
                    max_in_flight: settings.hook_max_in_flight,
                    ..LaneSettings::default()
                },
                ..DispatchSettings::default()
            },
        )
        .with_monetization(monetization.clone());
        let dispatcher = Arc::new(dispatcher);
        let ports = AdminPorts {
            store,
            events: events.clone(),
            snapshot,
            delivery_log,
            retries: deliveries.clone(),
        };
        Ok(Service {
            router: router(
                settings,
                ports,
                (idempotency, monetization),
                executor,
                dispatcher.clone(),
                dead_letters,
                relay,
            ),
            dispatcher,
            events,
            deliveries,
            workers: settings.workers.max(1),
        })
    }

    /// Starts the queue consumers; they stop when `shutdown` turns true.
    pub fn start_workers(&self, shutdown: &watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let mut handles = Vec::new();
        for (queue, feed) in [
            (&self.events, Feed::Events),
            (&self.deliveries, Feed::Deliveries),
        ] {
            for _ in 0..self.workers {
                handles.push(tokio::spawn(worker::run(
                    self.dispatcher.clone(),
                    queue.clone(),
                    feed,
                    WorkerSettings::default(),
                    shutdown.clone(),
                )));
            }
        }
        handles
    }
}

/// `GET /status`: whether the service can read its hooks, and what the dispatcher has done.
async fn status(
    dispatcher: Arc<Dispatcher>,
    snapshot: Arc<SnapshotCache>,
) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
    let counts = dispatcher.stats.counts();
    match snapshot.get().await {
        Ok(hooks) => (
            axum::http::StatusCode::OK,
            axum::Json(serde_json::json!({
                "status": "ok",
                "version": env!("CARGO_PKG_VERSION"),
                "hooks": hooks.len(),
                "dispatch": counts,
            })),
        ),
        Err(err) => {
            tracing::error!(error = %err, "status: cannot read the hooks");
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({ "status": "unavailable", "dispatch": counts })),
            )
        }
    }
}

/// The SQLite databases under the data directory: hooks (and the windows), the queues, and the
/// delivery log.
struct Databases {
    hooks: Database,
    queue: Database,
    log: Database,
}

impl Databases {
    /// Opens them, creating the directory and the files if needed.
    fn open(data_dir: &Path) -> anyhow::Result<Databases> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let open = |file: &str| {
            let path = data_dir.join(file);
            Database::open(&path).with_context(|| format!("cannot open {}", path.display()))
        };
        Ok(Databases {
            hooks: open("hooks.db")?,
            queue: open("queue.db")?,
            log: open("deliveries.db")?,
        })
    }
}

/// The handler executor with the settings' timeouts and SSRF guard.
fn executor(settings: &Settings) -> anyhow::Result<Arc<Executor>> {
    let sender = HttpSender::new(HttpSettings {
        connect_timeout: seconds(settings.connect_timeout, "--connect-timeout")?,
        total_timeout: attempt_seconds(settings.request_timeout, "--request-timeout")?,
        allow_private_targets: !settings.ssrf_guard,
        ..HttpSettings::default()
    })?;
    Ok(Arc::new(Executor::new(sender, Limits::default())))
}

/// The admin API, test and ping, the dead letters, the console, and `/status`.
fn router(
    settings: &Settings,
    ports: AdminPorts,
    (idempotency, monetization): (Arc<dyn IdempotencyStore>, Arc<dyn MonetizationStore>),
    executor: Arc<Executor>,
    dispatcher: Arc<Dispatcher>,
    dead_letters: dead_letters::DeadLetters,
    relay: admin::RelaySettings,
) -> axum::Router {
    let admin_settings = AdminSettings {
        auth: match settings.admin_token.as_deref() {
            Some(token) if !token.is_empty() => admin::AdminAuth::fixed(token),
            _ => admin::AdminAuth::Open,
        },
        lua: settings.untrusted_lua.clone(),
        cors: settings.cors_allowed_origins.clone(),
        relay,
    };
    let probe = ProbeState::new(
        ports.store.clone(),
        executor.clone(),
        admin_settings.clone(),
    );
    let admin_settings_for_auth = admin_settings.clone();
    let snapshot = ports.snapshot.clone();
    let state = AdminState::new(ports, admin_settings)
        .with_executor(executor)
        .with_idempotency(idempotency)
        .with_monetization(monetization)
        .with_dead_letter_count(Arc::new(dead_letters.clone()))
        .with_lanes(dispatcher.clone());
    let dead_letters = dead_letters
        .routes()
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(admin_settings_for_auth),
            admin::require_admin_token,
        ));
    // Unauthenticated, for health checks: it shows counts, never hooks or events.
    let status = axum::routing::get(move || status(dispatcher.clone(), snapshot.clone()));
    admin::full_router(state, probe)
        .merge(dead_letters)
        .route("/status", status)
}

/// The connection timeouts and cap of the settings, each checked.
fn connection_limits(settings: &Settings) -> anyhow::Result<connections::ConnectionLimits> {
    Ok(connections::ConnectionLimits {
        header_read: seconds(settings.header_read_timeout, "--header-read-timeout")?,
        body_read: seconds(settings.body_read_timeout, "--body-read-timeout")?,
        idle: seconds(settings.idle_timeout, "--idle-timeout")?,
        max_connections: settings.max_connections as usize,
    })
}

/// A timeout of an attempt: positive, and at most [`limits::MAX_ATTEMPT`].
fn attempt_seconds(value: Seconds, flag: &str) -> anyhow::Result<Duration> {
    let duration = seconds(value, flag)?;
    anyhow::ensure!(
        duration <= limits::MAX_ATTEMPT,
        "{flag} must be at most {} seconds: an attempt must end within its message's lease",
        limits::MAX_ATTEMPT.as_secs()
    );
    Ok(duration)
}

/// A timeout: [`Seconds`] as every setting reads them, and more than none.
fn seconds(value: Seconds, flag: &str) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        !value.0.is_zero(),
        "{flag} must be a positive number of seconds"
    );
    Ok(value.0)
}

/// The admin API's socket: a new one bound to `--listen`, or with `--inherit-listener` the one
/// handed over, refused (as `--listen` is) on an address others reach without an admin token.
async fn listener(settings: &Settings) -> anyhow::Result<TcpListener> {
    if !settings.inherit_listener {
        return TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen));
    }
    let inherited = listenfd::ListenFd::from_env()
        .take_tcp_listener(0)
        .context("--inherit-listener: file descriptor 3 is not a TCP socket")?
        .context(
            "--inherit-listener: no socket was handed over (LISTEN_FDS unset, or LISTEN_PID \
             names another process)",
        )?;
    guard::check_bind(inherited.local_addr()?, settings.admin_token.as_deref())?;
    inherited.set_nonblocking(true)?;
    Ok(TcpListener::from_std(inherited)?)
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    settings: &Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if !settings.inherit_listener {
        guard::check_bind(settings.listen, settings.admin_token.as_deref())?;
    }
    let limits = connection_limits(settings)?;
    let service = Service::open(settings).await?;
    let listener = listener(settings).await?;
    run(settings, service, limits, listener, shutdown).await
}

/// [`serve`] on `listener`, bound by the caller, in place of `--listen` and
/// `--inherit-listener` (the tests serve in process this way); refused as `--listen` is.
pub async fn serve_on(
    settings: &Settings,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    guard::check_bind(listener.local_addr()?, settings.admin_token.as_deref())?;
    let limits = connection_limits(settings)?;
    let service = Service::open(settings).await?;
    run(settings, service, limits, listener, shutdown).await
}

/// Serves `service` on `listener` until `shutdown` resolves, then lets the consumers finish.
async fn run(
    settings: &Settings,
    service: Service,
    limits: connections::ConnectionLimits,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The bound address, not the configured one: with port 0 only the former is what clients use.
    let allowed = Arc::new(
        guard::AllowedHosts::new(listener.local_addr()?, &settings.allowed_hosts)
            .with_cors(settings.cors_allowed_origins.clone()),
    );
    let router = service
        .router
        .clone()
        .layer(axum::middleware::from_fn_with_state(allowed, guard::layer));
    tracing::info!(
        address = %listener.local_addr()?,
        data_dir = %settings.data_dir.display(),
        auth = settings.admin_token.is_some(),
        "event-hooks admin API listening"
    );
    let (stop_workers, workers_stopped) = watch::channel(false);
    let workers = service.start_workers(&workers_stopped);
    connections::serve(listener, router, limits, shutdown).await;
    // Let the consumers finish the messages in hand; anything unfinished comes back on restart.
    let _ = stop_workers.send(true);
    for handle in workers {
        let _ = handle.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_default_to_the_shared_settings_defaults() {
        let settings = Settings::defaults();
        let http = HttpSettings::default();
        assert_eq!(settings.retry_schedule, RetrySchedule::default());
        assert_eq!(
            Duration::from(settings.connect_timeout),
            http.connect_timeout
        );
        assert_eq!(Duration::from(settings.request_timeout), http.total_timeout);
        assert_eq!(
            Duration::from(settings.pause_after),
            DispatchSettings::default().pause_after
        );
        assert_eq!(
            settings.hook_max_in_flight,
            LaneSettings::default().max_in_flight
        );
    }

    #[test]
    fn a_timeout_of_no_time_is_refused_by_name() {
        let none = seconds(Seconds(Duration::ZERO), "--idle-timeout").unwrap_err();
        assert_eq!(
            none.to_string(),
            "--idle-timeout must be a positive number of seconds"
        );
        let long = attempt_seconds(Seconds(limits::MAX_ATTEMPT * 2), "--request-timeout");
        assert!(long.unwrap_err().to_string().contains("at most"));
        assert_eq!(
            seconds(Seconds(Duration::from_millis(500)), "--idle-timeout").unwrap(),
            Duration::from_millis(500)
        );
    }
}

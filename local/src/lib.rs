//! The whole event-hooks service in one local process: the admin API on embedded SQLite storage
//! and an embedded durable queue, no AWS needed. `make run` starts it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use event_hooks::admin::{self, AdminSettings, AdminState};
use event_hooks::lua::LuaPolicy;
use event_hooks::queue::sqlite::SqliteQueue;
use event_hooks::sqlite::Database;
use event_hooks::store::sqlite::SqliteHookStore;
use tokio::net::TcpListener;

/// Receives after which an event that keeps failing moves to the dead-letter queue.
pub const EVENTS_MAX_RECEIVES: u32 = 5;

/// Settings of the local server; each is a flag and an environment variable (see `--help`).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "event-hooks-local", version, about)]
pub struct Settings {
    /// Address the admin API listens on.
    #[arg(long, env = "EVENT_HOOKS_LISTEN", default_value = "127.0.0.1:8001")]
    pub listen: SocketAddr,

    /// Directory holding the SQLite databases (created if missing).
    #[arg(long, env = "EVENT_HOOKS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// When set, every admin request needs this value in the `Kong-Admin-Token` header.
    #[arg(long, env = "EVENT_HOOKS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// `sandbox` runs lambda hooks in the Lua sandbox; `off` refuses them.
    #[arg(long, env = "EVENT_HOOKS_UNTRUSTED_LUA", default_value = "sandbox")]
    pub untrusted_lua: LuaPolicy,

    /// Log format: `text` for people, `json` for machines.
    #[arg(long, env = "EVENT_HOOKS_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// The service wired on embedded adapters, ready to serve.
pub struct Service {
    pub router: axum::Router,
}

impl Service {
    /// Opens (creating if needed) the databases under `settings.data_dir`.
    pub async fn open(settings: &Settings) -> anyhow::Result<Service> {
        std::fs::create_dir_all(&settings.data_dir).with_context(|| {
            format!(
                "cannot create data directory {}",
                settings.data_dir.display()
            )
        })?;
        let hooks_path = settings.data_dir.join("hooks.db");
        let hooks_db = Database::open(&hooks_path)
            .with_context(|| format!("cannot open {}", hooks_path.display()))?;
        let queue_path = settings.data_dir.join("queue.db");
        let queue_db = Database::open(&queue_path)
            .with_context(|| format!("cannot open {}", queue_path.display()))?;

        let store = SqliteHookStore::new(hooks_db).await?;
        let events = SqliteQueue::open(queue_db, "events")
            .await?
            .with_redrive("events-dead-letter", EVENTS_MAX_RECEIVES);
        let state = AdminState::new(
            Arc::new(store),
            Arc::new(events),
            AdminSettings {
                admin_token: settings.admin_token.clone().filter(|t| !t.is_empty()),
                lua: settings.untrusted_lua.clone(),
            },
        );
        Ok(Service {
            router: admin::router(state),
        })
    }
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    settings: &Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let service = Service::open(settings).await?;
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    tracing::info!(
        address = %listener.local_addr()?,
        data_dir = %settings.data_dir.display(),
        auth = settings.admin_token.is_some(),
        "event-hooks admin API listening"
    );
    axum::serve(listener, service.router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("server failed")?;
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

//! The `event-hooks` command line: `serve` (the local server), and against any instance, local
//! or deployed, hooks as code (`apply`, `diff`, `dump`) and `emit`/`tail` to see events go.
//!
//! Exit codes fit CI: 0 done (for `diff`: nothing to change), 2 changes pending (`diff`), 1 an
//! error, which names the hook and the field. No secret is ever printed: the file holds
//! references to environment variables, and changes of secrets show only as changed.

mod client;
mod dump;
mod events;
mod file;
mod plan;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::{serve, shutdown_signal, LogFormat, Settings};
use client::{CliError, Client};

/// Kong's event hooks as a service: run it, keep its hooks as code, send events, watch them go.
#[derive(Debug, Parser)]
#[command(name = "event-hooks", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole service locally on SQLite (what `make run` starts; same flags as
    /// `event-hooks-local`).
    Serve(Settings),
    /// Make the service hold exactly the hooks and custom events of the file (hooks matched by
    /// name; hooks without a name are left alone and listed).
    Apply(FileArgs),
    /// Print what `apply` would change, changing nothing. Exit 0: nothing to change; 2: changes
    /// pending; 1: error.
    Diff(FileArgs),
    /// Write the service's hooks and custom events as a hooks file, secrets as references.
    Dump(DumpArgs),
    /// Send an event to `POST /events` and print its id.
    Emit(EmitArgs),
    /// Follow a hook's deliveries: one line per attempt, until Ctrl-C.
    Tail(TailArgs),
}

/// Where the service is and how to authenticate.
#[derive(Debug, Args)]
struct Connection {
    /// Base URL of the admin API: the local server, or the stack's `ApiUrl` output.
    #[arg(long, env = "EVENT_HOOKS_URL", default_value = "http://127.0.0.1:8001")]
    url: String,
    /// Read the admin token from this Secrets Manager secret (the stack's
    /// `AdminTokenSecretArn` output) with the usual AWS credentials; else the token is
    /// `EVENT_HOOKS_TOKEN`, sent as `Kong-Admin-Token`.
    #[arg(long, env = "EVENT_HOOKS_TOKEN_SECRET_ARN")]
    token_secret_arn: Option<String>,
}

#[derive(Debug, Args)]
struct FileArgs {
    #[command(flatten)]
    connection: Connection,
    /// The hooks file (YAML or JSON); secrets as `${{ env "NAME" }}`.
    #[arg(short = 'f', long = "file")]
    file: String,
}

#[derive(Debug, Args)]
struct DumpArgs {
    #[command(flatten)]
    connection: Connection,
    /// Write to this file instead of stdout.
    #[arg(short = 'o', long = "output")]
    output: Option<String>,
}

#[derive(Debug, Args)]
struct EmitArgs {
    #[command(flatten)]
    connection: Connection,
    #[arg(long)]
    source: Option<String>,
    #[arg(long)]
    event: Option<String>,
    /// The event's data, a JSON object.
    #[arg(long)]
    data: Option<String>,
    /// A file holding the whole event (`{"source","event","data"}`, JSON or YAML); `-` or
    /// nothing at all: stdin.
    #[arg(short = 'f', long = "file", conflicts_with_all = ["source", "event", "data"])]
    file: Option<String>,
    /// The `Idempotency-Key`: a retry with the same key sends the event once. Default: a fresh
    /// UUID, printed on stderr.
    #[arg(long)]
    idempotency_key: Option<String>,
}

#[derive(Debug, Args)]
struct TailArgs {
    #[command(flatten)]
    connection: Connection,
    /// The hook's name or id.
    #[arg(long)]
    hook: String,
    /// Print the current page of deliveries and exit.
    #[arg(long)]
    once: bool,
    /// Seconds between polls.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
}

/// Runs the command line; the process's exit code.
pub async fn main() -> ExitCode {
    match run(Cli::parse().command).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The local server with its logging, as `event-hooks-local` runs it.
pub async fn run_server(settings: &Settings) -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match settings.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    match serve(settings, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(connection: &Connection) -> Result<Client, CliError> {
    let token = client::token(connection.token_secret_arn.as_deref()).await?;
    Client::new(&connection.url, token)
}

/// Reads and checks the hooks file, off the async threads: checking runs lambda hooks' Lua.
async fn read_file(path: &str) -> Result<file::HooksFile, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| CliError::Other(format!("cannot read {path}: {err}")))?;
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || file::parse(&path, &text, &|name| std::env::var(name).ok()))
        .await
        .map_err(|err| CliError::Other(format!("checking the file failed: {err}")))?
}

async fn run(command: Command) -> Result<ExitCode, CliError> {
    match command {
        Command::Serve(settings) => Ok(run_server(&settings).await),
        Command::Diff(args) => {
            let desired = read_file(&args.file).await?;
            let client = connect(&args.connection).await?;
            let plan = plan::plan(&client, &desired).await?;
            print!("{}", plan::render(&plan, &args.file));
            Ok(if plan.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Apply(args) => {
            let desired = read_file(&args.file).await?;
            let client = connect(&args.connection).await?;
            let plan = plan::plan(&client, &desired).await?;
            print!("{}", plan::render(&plan, &args.file));
            if !plan.is_empty() {
                plan::apply(&client, &plan).await?;
                println!("Applied.");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dump(args) => {
            let client = connect(&args.connection).await?;
            let (yaml, left_out) = dump::dump(&client).await?;
            for id in left_out {
                eprintln!("left out: hook {id} has no name, so a file cannot match it");
            }
            match args.output {
                Some(path) => std::fs::write(&path, yaml)
                    .map_err(|err| CliError::Other(format!("cannot write {path}: {err}")))?,
                None => print!("{yaml}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Emit(args) => {
            let event = events::event_body(&events::EventInput {
                source: args.source,
                event: args.event,
                data: args.data,
                file: args.file,
            })?;
            let client = connect(&args.connection).await?;
            let (key, id) = events::emit(&client, &event, args.idempotency_key).await?;
            eprintln!("idempotency-key: {key}");
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail(args) => {
            let interval = Duration::try_from_secs_f64(args.interval)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| CliError::Other("--interval must be a positive number".into()))?;
            let client = connect(&args.connection).await?;
            events::tail(&client, &args.hook, args.once, interval).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

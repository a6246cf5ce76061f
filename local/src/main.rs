//! `event-hooks-local`: runs the whole service locally. Settings come from flags or environment
//! variables; `--help` lists them. `event-hooks serve` is the same server.

use clap::Parser;
use event_hooks_local::Settings;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    event_hooks_local::cli::run_server(&Settings::parse()).await
}

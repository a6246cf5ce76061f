//! `event-hooks`: the local server (`serve`) and the command line of hooks as code (`apply`,
//! `diff`, `dump`, `emit`, `tail`); `--help` lists them.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    event_hooks_local::cli::main().await
}

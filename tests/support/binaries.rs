//! The workspace binaries the tests run (the local server and the three Lambda functions), built
//! by the tests themselves so that they are never stale.
//!
//! `cargo test -p event-hooks-tests` builds this test binary but not the binaries it starts, and
//! Cargo's artifact dependencies, which would, are not on stable. So the first test that needs one
//! runs `cargo build` for all of them, once per test run, with the profile this test binary was
//! built with; when nothing changed, that is Cargo's up-to-date check, about a second.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `(package, binary)` of every binary the tests start: one `cargo build` covers them all.
const BINARIES: [(&str, &str); 5] = [
    ("event-hooks-local", "event-hooks-local"),
    ("event-hooks-local", "event-hooks"),
    ("admin-api", "admin-api"),
    ("dispatch", "dispatch"),
    ("probe", "probe"),
];

/// Variables Cargo sets for the test process itself (besides `CARGO_PKG_*`), not for builds.
const SET_FOR_TESTS: [&str; 8] = [
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// The outcome of the one build of this test run (an error holds Cargo's output).
static BUILT: OnceLock<Result<(), String>> = OnceLock::new();

/// The path of the workspace binary `name`, built first if this run has not built it yet.
///
/// Panics when `name` is not one of [`BINARIES`] or the build fails (with Cargo's output).
pub fn path(name: &str) -> PathBuf {
    assert!(
        BINARIES.iter().any(|(_, bin)| *bin == name),
        "{name} is not a binary the tests know how to build; add it to BINARIES"
    );
    if let Err(output) = BUILT.get_or_init(build) {
        panic!("building the workspace binaries for the tests failed:\n{output}");
    }
    let path = profile_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing after the build",
        path.display()
    );
    path
}

/// `target/<profile>/`: where this test binary's `deps/` directory is, and where Cargo puts the
/// binaries built with the same profile.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps")
        .to_path_buf()
}

/// The Cargo profile whose output directory is [`profile_dir`] (`debug` is the `dev` profile's).
fn profile() -> String {
    let dir = profile_dir();
    match dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(name) => name.to_owned(),
    }
}

/// Runs `cargo build` for every binary in [`BINARIES`] into the target directory this test binary
/// lives in.
fn build() -> Result<(), String> {
    // The Cargo that runs the tests (it sets CARGO), so the toolchain is the same.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace");
    let target_dir = profile_dir()
        .parent()
        .expect("target/<profile> has a parent")
        .to_path_buf();
    let mut command = Command::new(cargo);
    // Cargo gives this test process variables describing the tests crate. Handed on, they would
    // reach build scripts that watch them (ring's watches CARGO_MANIFEST_DIR) and make this build
    // and the next `cargo test` rebuild half the dependency tree in turn.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("CARGO_PKG_") || SET_FOR_TESTS.contains(&name) {
            command.env_remove(name);
        }
    }
    command
        .current_dir(workspace)
        .arg("build")
        .arg("--profile")
        .arg(profile())
        .arg("--target-dir")
        .arg(&target_dir);
    for (package, bin) in BINARIES {
        command.args(["-p", package, "--bin", bin]);
    }
    let output = command
        .output()
        .map_err(|err| format!("could not run cargo: {err}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} exited with {}:\n{}",
            command,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

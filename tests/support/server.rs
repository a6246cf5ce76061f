//! Starts and stops the real `event-hooks-local` binary for tests over HTTP.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running local server on a free loopback port; stopped when dropped.
pub struct LocalServer {
    child: Option<Child>,
    pub base: String,
    pub data_dir: PathBuf,
}

/// The `event-hooks-local` binary, built from the current sources by this test run (see
/// [`binaries`](crate::binaries)), or the one named by `EVENT_HOOKS_LOCAL_BIN`.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("EVENT_HOOKS_LOCAL_BIN") {
        return PathBuf::from(path);
    }
    crate::binaries::path("event-hooks-local")
}

/// A fresh, empty data directory under the system temp dir.
pub fn temp_data_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("event-hooks-test-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("create temp data dir");
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

impl LocalServer {
    /// Starts a server on a new data directory.
    pub fn start(extra_args: &[&str]) -> LocalServer {
        LocalServer::start_in(&temp_data_dir(), extra_args)
    }

    /// Starts a server on `data_dir`, waiting until it answers.
    pub fn start_in(data_dir: &Path, extra_args: &[&str]) -> LocalServer {
        let port = free_port();
        let child = Command::new(binary())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra_args)
            .env("RUST_LOG", "warn")
            .env_remove("EVENT_HOOKS_ADMIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start event-hooks-local");
        let server = LocalServer {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
        };
        server.wait_until_listening(port);
        server
    }

    fn wait_until_listening(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("event-hooks-local did not start listening on port {port}");
    }

    /// The server's process id (for reading its `/proc` entries).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server with SIGTERM and waits for a clean exit; returns whether it exited 0.
    pub fn stop(mut self) -> bool {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

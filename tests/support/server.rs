//! Starts and stops the local server for tests over HTTP: the real `event-hooks-local` binary
//! where the process itself is under test (signals, exit status, its log, its memory), else the
//! same service served in this process ([`LocalServer::in_process`]); and waits on what it does.
//!
//! Either way the test binds the server's port itself: the binary gets the bound socket as file
//! descriptor 3 (`--inherit-listener`), so the port is the server's from the first moment and no
//! other process can take it between a test choosing it and the server binding it.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt as _, FdMapping};
use event_hooks::queue::sqlite::SqliteQueue;
use event_hooks::sqlite::Database;

/// A running local server on a loopback port of its own, as a process or in this process;
/// stopped when dropped.
pub struct LocalServer {
    running: Option<Running>,
    pub base: String,
    pub data_dir: PathBuf,
}

enum Running {
    /// The `event-hooks-local` binary.
    Process(Child),
    /// [`event_hooks_local::serve_on`] on a thread of its own, until `stop` is sent or dropped.
    InProcess {
        stop: tokio::sync::oneshot::Sender<()>,
        thread: std::thread::JoinHandle<Result<(), String>>,
    },
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

/// A command that runs `event-hooks-local` on `data_dir`, serving on a loopback listener bound
/// here and handed over as its file descriptor 3; and the address of that listener. Connections
/// made before the server serves wait in the listener's backlog. Add flags, output and spawn it;
/// drop the command after spawning, so that the listener closes when the server exits.
pub fn command(data_dir: &Path) -> (Command, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let address = listener.local_addr().expect("the bound address");
    let mut command = Command::new(binary());
    command
        .arg("--inherit-listener")
        .arg("--data-dir")
        .arg(data_dir)
        .env("LISTEN_FDS", "1")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDS_FIRST_FD")
        .env_remove("EVENT_HOOKS_ADMIN_TOKEN")
        .fd_mappings(vec![FdMapping {
            parent_fd: listener.into(),
            child_fd: 3,
        }])
        .expect("one mapping");
    (command, address)
}

/// A loopback address nobody listens on for as long as the returned socket lives: the socket
/// holds the port, bound but never listening, so connections to it are refused and no other
/// process can take the port meanwhile.
pub fn closed_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("bind an ephemeral port");
    let address = socket.local_addr().expect("the bound address");
    (socket, address)
}

/// Whether the server at `address` answers an HTTP request (any status).
fn answers(address: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    let request = format!("GET /status HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut response = Vec::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_ok()
        && stream.write_all(request.as_bytes()).is_ok()
        && stream.read_to_end(&mut response).is_ok()
        && response.starts_with(b"HTTP/1.1 ")
}

impl LocalServer {
    /// Starts a server on a new data directory.
    pub fn start(extra_args: &[&str]) -> LocalServer {
        LocalServer::start_in(&temp_data_dir(), extra_args)
    }

    /// Starts a server on `data_dir`, waiting until it answers; its warnings go to the test's
    /// stderr.
    pub fn start_in(data_dir: &Path, extra_args: &[&str]) -> LocalServer {
        let (mut command, address) = command(data_dir);
        command
            .args(extra_args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        LocalServer::spawn(command, address, data_dir)
    }

    /// Starts a server on `data_dir` whose log (stdout and stderr, from `info` up) goes to the
    /// file `log`, so that a test can read it; waits until it answers.
    pub fn start_logged(data_dir: &Path, log: &Path, extra_args: &[&str]) -> LocalServer {
        let out = File::create(log).expect("create the server log");
        let (mut command, address) = command(data_dir);
        command
            .args(extra_args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out.try_clone().expect("share the server log")))
            .stderr(Stdio::from(out));
        LocalServer::spawn(command, address, data_dir)
    }

    /// Starts the local server in this process on a new data directory, with `extra_args` as
    /// its flags: the binary's routers, Host guard, connection handling and queue consumers
    /// ([`event_hooks_local::serve_on`]) on a loopback listener bound here, on a runtime of
    /// their own; waits until it answers. For tests where no process boundary (signals, exit
    /// status, logs, memory) is under test. Its log goes nowhere.
    pub fn in_process(extra_args: &[&str]) -> LocalServer {
        let data_dir = temp_data_dir();
        let data_dir_arg = data_dir.display().to_string();
        let args = ["event-hooks-local", "--data-dir", &data_dir_arg]
            .into_iter()
            .chain(extra_args.iter().copied());
        // Flags only: the test process's own EVENT_HOOKS_* variables do not reach it.
        let command = <event_hooks_local::Settings as clap::CommandFactory>::command()
            .mut_args(|arg| arg.env(None::<&'static str>));
        let settings = command
            .try_get_matches_from(args)
            .and_then(|matches| {
                <event_hooks_local::Settings as clap::FromArgMatches>::from_arg_matches(&matches)
            })
            .unwrap_or_else(|err| panic!("the local server's flags: {err}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let address = listener.local_addr().expect("the bound address");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|err| format!("a runtime: {err}"))?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener)
                    .map_err(|err| format!("the listener: {err}"))?;
                let shutdown = async {
                    let _ = stopped.await;
                };
                event_hooks_local::serve_on(&settings, listener, shutdown)
                    .await
                    .map_err(|err| format!("{err:#}"))
            })
        });
        let mut server = LocalServer {
            running: Some(Running::InProcess { stop, thread }),
            base: format!("http://{address}"),
            data_dir,
        };
        server.wait_until_answering(address);
        server
    }

    fn spawn(mut command: Command, address: SocketAddr, data_dir: &Path) -> LocalServer {
        let child = command.spawn().expect("start event-hooks-local");
        // The server holds the listener now; the test's copy goes with the command.
        drop(command);
        let mut server = LocalServer {
            running: Some(Running::Process(child)),
            base: format!("http://{address}"),
            data_dir: data_dir.to_path_buf(),
        };
        server.wait_until_answering(address);
        server
    }

    fn wait_until_answering(&mut self, address: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !answers(address) {
            match self.running.as_mut().expect("running") {
                Running::Process(child) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!("event-hooks-local exited before serving: {status}");
                    }
                }
                Running::InProcess { thread, .. } => {
                    assert!(
                        !thread.is_finished(),
                        "the in-process server stopped before serving"
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "event-hooks-local did not answer at {address}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (up to 20 s) until the events and deliveries queues in the server's data directory
    /// hold no message, visible, delayed or being handled: every event posted so far has been
    /// handled and every delivery settled, retries included, so what a receiver has seen by then
    /// is all it will see.
    pub async fn wait_until_settled(&self) {
        let db = Database::open(&self.data_dir.join("queue.db")).expect("open queue.db");
        let mut queues = Vec::new();
        for name in ["events", "deliveries"] {
            queues.push(SqliteQueue::open(db.clone(), name).await.expect("a queue"));
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut held = Vec::new();
            for queue in &queues {
                let (_, count) = queue.peek(0).await.expect("count the queue");
                held.push(count);
            }
            if held.iter().all(|count| *count == 0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the queues still hold messages (events, deliveries): {held:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The dispatcher's counts, from `GET /status`.
    pub async fn dispatch_counts(&self) -> serde_json::Value {
        self.get_json("/status").await["dispatch"].clone()
    }

    /// Creates `hook` with `POST /event-hooks`, asserting a 201; answers the hook as stored.
    pub async fn create_hook(&self, hook: &serde_json::Value) -> serde_json::Value {
        self.post_json("/event-hooks", hook, 201).await
    }

    /// Posts `event` to `POST /events`, asserting a 202; answers the acceptance (`{"id": …}`).
    pub async fn emit(&self, event: &serde_json::Value) -> serde_json::Value {
        self.post_json("/events", event, 202).await
    }

    /// `GET path`, its body as JSON, whatever the status.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        reqwest::get(self.url(path))
            .await
            .unwrap_or_else(|err| panic!("GET {path}: {err}"))
            .json()
            .await
            .unwrap_or_else(|err| panic!("GET {path}: not JSON: {err}"))
    }

    async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
        expected: u16,
    ) -> serde_json::Value {
        let response = reqwest::Client::new()
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|err| panic!("POST {path}: {err}"));
        let status = response.status().as_u16();
        let text = response.text().await.expect("the answer's body");
        assert_eq!(status, expected, "POST {path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("POST {path}: not JSON: {text}"))
    }

    /// The server's process id (for reading its `/proc` entries).
    pub fn pid(&self) -> u32 {
        match self.running.as_ref().expect("running") {
            Running::Process(child) => child.id(),
            Running::InProcess { .. } => panic!("the server runs in this process"),
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Stops the server (SIGTERM to the process, the shutdown signal in process) and waits for a
    /// clean end; returns whether it exited 0 (in process: whether serving ended without error).
    pub fn stop(mut self) -> bool {
        let mut child = match self.running.take().expect("running") {
            Running::Process(child) => child,
            Running::InProcess { stop, thread } => {
                let _ = stop.send(());
                return matches!(thread.join(), Ok(Ok(())));
            }
        };
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
        match self.running.take() {
            Some(Running::Process(mut child)) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            // Stops accepting and closes idle connections; the thread finishes by itself.
            Some(Running::InProcess { stop, .. }) => {
                let _ = stop.send(());
            }
            None => {}
        }
    }
}

"""Shared pieces of the reliability suite: an HTTP client with timeouts everywhere (httpx), the local
server as a child process (start, wait, kill -9, restart), loopback receivers (pytest-httpserver's
werkzeug server; the raw connection counter of the SSRF part stays a socket), percentiles and the
figure rows every part returns.

Everything here talks to 127.0.0.x / ::1 only.
"""

import ctypes
import json
import logging
import os
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

import httpx
from pytest_httpserver import HTTPServer
from werkzeug import Request
from werkzeug import Response as WerkzeugResponse

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_BINARY = os.path.join(REPO, "target", "release", "event-hooks-local")


@dataclass
class Figure:
    """One row of the final table."""

    part: str
    measure: str
    figure: str
    target: str
    ok: bool | None  # None: informational or skipped, never fails the run


@dataclass
class PartResult:
    name: str
    figures: list = field(default_factory=list)
    seconds: float = 0.0
    notes: list = field(default_factory=list)

    def add(self, measure, figure, target, ok):
        self.figures.append(Figure(self.name, measure, str(figure), target, ok))

    def to_json(self):
        return {
            "name": self.name,
            "seconds": self.seconds,
            "notes": self.notes,
            "figures": [f.__dict__ for f in self.figures],
        }

    @staticmethod
    def from_json(raw):
        part = PartResult(raw["name"], seconds=raw.get("seconds", 0.0), notes=raw.get("notes", []))
        part.figures = [Figure(**f) for f in raw["figures"]]
        return part


def free_port(host="127.0.0.1"):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def percentile(values, p):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round((len(ordered) - 1) * p)))]


class Response:
    def __init__(self, status, headers, body, seconds):
        self.status = status
        self.headers = headers
        self.body = body
        self.seconds = seconds

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None


# One client for every request: no connection is reused (each request opens its own, as a fresh
# client would), no proxy from the environment, bodies as sent (no compression asked for).
_CLIENT = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), trust_env=False,
                       headers={"accept-encoding": "identity"})


def request(base, method, path, body=None, headers=None, timeout=10.0):
    """One request on a fresh connection. Raises OSError (connection refused/reset), TimeoutError
    (an OSError too) when no answer came within `timeout`.

    `body` may be bytes, str, or a JSON-able value (sent as application/json).
    """
    host, port = base
    hdrs = dict(headers or {})
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
        hdrs.setdefault("content-type", "application/json")
    if isinstance(body, str):
        body = body.encode()
    started = time.monotonic()
    try:
        raw = _CLIENT.request(method, f"http://{host}:{port}{path}", content=body, headers=hdrs,
                              timeout=timeout)
    except httpx.TimeoutException as err:
        raise TimeoutError(f"timed out: {err!r}") from err
    except httpx.HTTPError as err:
        raise OSError(f"http error: {err!r}") from err
    return Response(raw.status_code, {k.lower(): v for k, v in raw.headers.items()}, raw.content,
                    time.monotonic() - started)


def die_with_parent():
    """In the child before exec: SIGKILL it when the harness dies, so no server outlives a run
    that was interrupted (PR_SET_PDEATHSIG)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class Server:
    """The release binary as a child process on a loopback port and its own data directory."""

    def __init__(self, binary, workdir, name, extra_args=(), port=None, extra_env=None):
        self.binary = binary
        self.workdir = workdir
        self.name = name
        self.extra_args = list(extra_args)
        self.extra_env = dict(extra_env or {})
        self.port = port or free_port()
        self.generation = 0
        self.data_dir = None
        self.proc = None
        self.log = None
        self.crashes = 0

    @property
    def base(self):
        return ("127.0.0.1", self.port)

    def start(self, fresh=True, timeout=20.0):
        if fresh or self.data_dir is None:
            self.generation += 1
            self.data_dir = os.path.join(self.workdir, f"{self.name}-data-{self.generation}")
        log_path = os.path.join(self.workdir, f"{self.name}-{self.generation}.log")
        self.log = open(log_path, "ab")
        args = [self.binary, "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir,
                *self.extra_args]
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"), **self.extra_env)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode} at start; "
                                   f"see {log_path}")
            try:
                if request(self.base, "GET", "/status", timeout=1.0).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.name} did not answer /status within {timeout}s; see {log_path}")

    @property
    def log_path(self):
        return self.log.name if self.log else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def up(self, timeout=3.0):
        """Running and answering GET /status with 200."""
        if not self.alive():
            return False
        try:
            return request(self.base, "GET", "/status", timeout=timeout).status == 200
        except OSError:
            return False

    def pid(self):
        return self.proc.pid if self.proc else None

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return None

    def kill(self):
        """SIGKILL and reap (the process ignores nothing of SIGKILL)."""
        if self.proc and self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.log:
            self.log.close()

    def ensure_up(self, fresh=True):
        """Restarts (on a fresh data directory unless told otherwise) when the process died or
        stopped answering (a crashed or wedged server); returns True when a restart was needed."""
        if self.up():
            return False
        self.crashes += 1
        self.kill()
        self.start(fresh=fresh)
        return True

    def request(self, method, path, body=None, headers=None, timeout=10.0):
        return request(self.base, method, path, body, headers, timeout)


# The receivers' werkzeug server logs every request at INFO; the suite prints only its findings.
logging.getLogger("werkzeug").setLevel(logging.ERROR)


class Receiver:
    """A loopback HTTP server (pytest-httpserver) recording every request: (time, method, path,
    headers, body).

    `answer(request)` (a werkzeug Request) may return (status, headers, body) to change the answer
    (200 by default).
    """

    def __init__(self, host="127.0.0.1", port=0, answer=None):
        self.records = []
        self.lock = threading.Lock()
        self.answer = answer
        self.httpd = HTTPServer(host=host, port=port, threaded=True)
        self.httpd.expect_request(re.compile(".*")).respond_with_handler(self._handle)
        self.httpd.start()
        self.port = self.httpd.port
        self.host = host

    def _handle(self, req: Request) -> WerkzeugResponse:
        record = (time.time(), req.method, req.environ.get("RAW_URI") or req.full_path,
                  {k.lower(): v for k, v in req.headers.items()}, req.get_data())
        with self.lock:
            self.records.append(record)
        status, headers, payload = 200, {}, b"ok"
        if self.answer:
            status, headers, payload = self.answer(req)
        return WerkzeugResponse(payload, status=status, headers=headers)

    @property
    def url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/hook"

    def snapshot(self):
        with self.lock:
            return list(self.records)

    def count(self):
        with self.lock:
            return len(self.records)

    def close(self):
        self.httpd.clear()  # its own log of every request and answer
        self.httpd.stop()


class ConnectionCounter:
    """A raw TCP listener that counts accepted connections and answers a minimal 200 (used where
    any connection at all is the failure: the SSRF catalogue)."""

    def __init__(self, host, port, v6only=True):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        self.address = f"{host}:{port}"
        self.connections = []
        self.closed = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.closed:
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            self.connections.append((time.time(), peer))
            try:
                conn.settimeout(0.5)
                try:
                    conn.recv(65536)
                except OSError:
                    pass
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            except OSError:
                pass
            finally:
                conn.close()

    def close(self):
        self.closed = True
        self.thread.join(2)  # the accept loop wakes every 0.2 s; the port is free once it left
        self.sock.close()


def workdir(prefix="event-hooks-reliability-"):
    return tempfile.mkdtemp(prefix=prefix)


def wait_until(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()

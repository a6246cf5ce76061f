"""Part 3, isolation: one hook's trouble never reaches another hook.

Every row has two webhooks on one custom event of its own (`isolation/<row>`, registered with
`PUT /event-hooks/sources/isolation/<row>`): hook A, whose receiver misbehaves, and hook B, whose
receiver answers 200 at once. Events go in with `POST /events`, paced at 20/s, each with a
sequence number in its data. Both receivers are threaded HTTP servers on 127.0.0.1 that record,
per request, when it arrived and ended (answered, or the dispatcher gave up on it), its
`x-event-hook-delivery` and `x-event-hook-attempt` headers and the sequence number.

Rows (A's behaviour):

  slow          answers 200 after 8 s
  hanging       never answers (the default 10 s request timeout cuts it)
  trickle       sends its status line, then one header byte every 2 s; A has its own
                `timeouts` {"connect_ms":1000,"read_ms":20000}, so no read wait ever expires
  failing       answers 503 every time (default retry schedule)
  gone          answers 410: the hook is disabled
  throttled-10  answers 200 at once, A has `max_rate: 10` (events come at 20/s)
  throttled-1   the same with `max_rate: 1`
  paused        answers 503 every time, the server runs with `--pause-after 5`

Each row runs against a server of its own (its own data directory, so one row's trouble cannot
show up in another row's figures, and `--pause-after` applies to its row only); the rows run in
parallel. Figures per row: B's latency (event POST -> first arrival at B's receiver) p50/p99,
target p99 <= 1 s, missing deliveries counted as never; B's deliveries against the events
accepted (202), none twice; A's requests per delivery id and the most requests of one delivery id
in flight at A at once (target 1: a delivery is never attempted twice concurrently, e.g. once its
queue lease ran out); A's longest request (target < 60 s, the queue's visibility timeout locally);
dead letters (`GET /dead-letters`) of events B was served: the event itself, or a delivery of
hook B (target 0; A's own dead letters are expected and only counted). Row-specific: gone, A's
requests that arrived after its first 410 was answered (target <= 4, the hook's in-flight cap:
attempts already started); throttled, the dispatcher's `rate_limited` and `deferred` counters from
`GET /status` (missing counters count as 0 and say so; target rate_limited <= A's deliveries);
paused, every event posted after the hook was seen paused (polled every 0.25 s) has a record in
A's delivery log with status `not_sent` and an error giving the reason.

Every wait has a bound: each row stops itself after posting + its observation tail, receivers
hold a connection at most HOLD_CAP_S, and the part joins its rows with a deadline.
"""

import http.client
import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from common import PartResult, Server, percentile

RATE = 20.0  # events per second, every row
SOURCE = "isolation"
SLOW_S = 8.0
TRICKLE_EVERY_S = 2.0
TRICKLE_TIMEOUTS = {"connect_ms": 1000, "read_ms": 20000}
LEASE_S = 60.0  # the local worker's visibility timeout (dispatch/worker.rs)
IN_FLIGHT_CAP = 4  # requests a disabled hook may still get: attempts already started
B_P99_TARGET_S = 1.0
HOLD_CAP_S = 150.0  # longest a receiver keeps any connection open
POST_TIMEOUT_S = 10.0
PAUSE_AFTER_S = 5


@dataclass
class Row:
    name: str
    behaviour: str  # what A's receiver does: slow, hang, trickle, fail, gone, ok
    events: int
    quick_events: int
    quick_tail: float  # seconds observed after the last event was posted (full mode: FULL_TAIL_S)
    hook: dict = field(default_factory=dict)  # more fields of hook A
    server_args: list = field(default_factory=list)


# Full mode watches every row past the queue's lease, so that a delivery whose message came back
# while its attempt was still running is seen. Quick mode does so for trickle only, the row whose
# attempts are longest.
FULL_TAIL_S = 90.0
ROWS = [
    Row("slow", "slow", 300, 60, 20.0),
    Row("hanging", "hang", 100, 40, 25.0),
    Row("trickle", "trickle", 40, 40, 70.0, hook={"timeouts": TRICKLE_TIMEOUTS}),
    Row("failing", "fail", 300, 100, 15.0),
    Row("gone", "gone", 200, 60, 10.0),
    Row("throttled-10", "ok", 1000, 200, 15.0, hook={"max_rate": 10}),
    Row("throttled-1", "ok", 1000, 200, 15.0, hook={"max_rate": 1}),
    Row("paused", "fail", 600, 200, 10.0, server_args=["--pause-after", str(PAUSE_AFTER_S)]),
]
ROW_NAMES = [r.name for r in ROWS]


class Target:
    """A loopback receiver for one hook. `requests` holds one dict per request: start, end (None
    while open), delivery, attempt, seq, status (what it answered, None when it never did)."""

    def __init__(self, behaviour, stop):
        self.behaviour = behaviour
        self.stop = stop
        self.requests = []
        self.lock = threading.Lock()
        self.first_410 = None  # when the first 410 was sent
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: under Nagle's algorithm the second waits for
            # the client's delayed ACK, 40 ms a response.
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def do_POST(self):
                start = time.time()
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                try:
                    seq = json.loads(body).get("seq")
                except (ValueError, AttributeError):
                    seq = None
                try:
                    attempt = int(self.headers.get("x-event-hook-attempt") or 0)
                except ValueError:
                    attempt = 0
                rec = {"start": start, "end": None, "seq": seq, "attempt": attempt,
                       "delivery": self.headers.get("x-event-hook-delivery"), "status": None}
                with outer.lock:
                    outer.requests.append(rec)
                try:
                    outer.behave(self, rec)
                except OSError:
                    self.close_connection = True
                finally:
                    rec["end"] = time.time()

            do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

        class Httpd(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 1024

            def handle_error(self, request, client_address):
                pass  # the dispatcher cutting a request is what several rows are about

        self.httpd = Httpd(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/hook"

    @staticmethod
    def answer(handler, rec, status):
        handler.send_response(status)
        handler.send_header("content-type", "text/plain")
        handler.send_header("content-length", "2")
        handler.end_headers()
        handler.wfile.write(b"ok")
        handler.wfile.flush()
        rec["status"] = status

    def closed_by_peer(self, handler, wait):
        """Waits up to `wait` s; True when the dispatcher closed the connection meanwhile."""
        sock = handler.connection
        try:
            readable, _, _ = select.select([sock], [], [], max(0.0, wait))
            if not readable:
                return False
            data = sock.recv(1, socket.MSG_PEEK)
            if data:
                time.sleep(min(0.2, wait))  # bytes we did not ask for; not a close
                return False
            return True
        except OSError:
            return True

    def behave(self, handler, rec):
        kind = self.behaviour
        if kind == "ok":
            self.answer(handler, rec, 200)
        elif kind == "fail":
            self.answer(handler, rec, 503)
        elif kind == "gone":
            self.answer(handler, rec, 410)
            with self.lock:
                if self.first_410 is None and rec["seq"] is not None:
                    self.first_410 = time.time()
        elif kind == "slow":
            if self.stop.wait(SLOW_S):
                handler.close_connection = True
                return
            self.answer(handler, rec, 200)
        elif kind == "hang":
            handler.close_connection = True
            until = rec["start"] + HOLD_CAP_S
            while not self.stop.is_set() and time.time() < until:
                if self.closed_by_peer(handler, 0.5):
                    return
        elif kind == "trickle":
            handler.close_connection = True
            handler.wfile.write(b"HTTP/1.1 200 OK\r\nx-trickle: ")
            handler.wfile.flush()
            rec["status"] = 200
            until = rec["start"] + HOLD_CAP_S
            next_byte = time.time() + TRICKLE_EVERY_S
            while not self.stop.is_set() and time.time() < until:
                if self.closed_by_peer(handler, min(0.5, next_byte - time.time())):
                    return
                if time.time() >= next_byte:
                    handler.wfile.write(b"a")
                    handler.wfile.flush()
                    next_byte += TRICKLE_EVERY_S
        else:
            raise ValueError(kind)

    def snapshot(self):
        with self.lock:
            return [dict(r) for r in self.requests]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def max_overlap(intervals):
    """Most intervals [start, end) open at one moment."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda p: (p[0], p[1]))  # an end before a start at the same time
    best = now = 0
    for _, delta in points:
        now += delta
        best = max(best, now)
    return best


def busiest_second(times):
    """Most of `times` within any 1 s window."""
    times = sorted(times)
    best = lo = 0
    for hi, t in enumerate(times):
        while times[lo] <= t - 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def post_events(server, row, count, posted, stats):
    """POSTs `count` events paced at RATE on one keep-alive connection; `posted[seq]` = the
    wall time the POST started, for events answered 202."""
    conn = None
    started = time.monotonic()
    give_up_at = started + count / RATE + 60.0
    for seq in range(1, count + 1):
        due = started + (seq - 1) / RATE
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if time.monotonic() > give_up_at:
            stats["unsent"] += count - seq + 1
            break
        body = json.dumps({"source": SOURCE, "event": row.name,
                           "data": {"seq": seq, "row": row.name}})
        sent = time.time()
        try:
            if conn is None:
                conn = http.client.HTTPConnection(*server.base, timeout=POST_TIMEOUT_S)
            conn.request("POST", "/events", body=body,
                         headers={"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status == 202:
                posted[seq] = sent
            else:
                stats["refused"] += 1
        except (OSError, http.client.HTTPException):
            stats["errors"] += 1
            if conn is not None:
                conn.close()
            conn = None
    if conn is not None:
        conn.close()


def get_json(server, path, timeout=10.0):
    try:
        r = server.request("GET", path, timeout=timeout)
    except OSError as err:
        return None, f"GET {path}: {err}"
    if r.status != 200:
        return None, f"GET {path}: {r.status} {r.body[:200]!r}"
    return r.json(), None


def a_deliveries(server, hook_id):
    """Every record of the hook's delivery log (pages of 1000, at most 50 pages)."""
    records, path = [], f"/event-hooks/{hook_id}/deliveries?size=1000"
    for _ in range(50):
        page, err = get_json(server, path, timeout=30.0)
        if page is None:
            return records, err
        records.extend(page.get("data") or [])
        offset = page.get("offset")
        if not offset:
            return records, None
        path = f"/event-hooks/{hook_id}/deliveries?size=1000&offset={offset}"
    return records, "more than 50 pages"


def run_row(row, quick, binary, workdir):
    """One row against its own server; returns what was observed (no verdicts)."""
    stop = threading.Event()
    a, b = Target(row.behaviour, stop), Target("ok", stop)
    server = Server(binary, workdir, f"isolation-{row.name}", extra_args=row.server_args)
    count = row.quick_events if quick else row.events
    tail = row.quick_tail if quick else FULL_TAIL_S
    out = {"row": row.name, "count": count, "posted": {}, "notes": [], "paused_at": None,
           "post_stats": {"refused": 0, "errors": 0, "unsent": 0}}
    poller = None
    try:
        server.start()
        r = server.request("PUT", f"/event-hooks/sources/{SOURCE}/{row.name}",
                           {"fields": ["seq", "row"], "description": "reliability isolation"})
        if r.status not in (200, 201):
            raise RuntimeError(f"custom event not registered: {r.status} {r.body[:200]!r}")
        ids = {}
        for name, target, extra in (("B", b, {}), ("A", a, row.hook)):
            hook = {"name": f"isolation-{row.name}-{name}", "source": SOURCE,
                    "event": row.name, "handler": "webhook",
                    "config": {"url": target.url}, **extra}
            r = server.request("POST", "/event-hooks", hook)
            if r.status != 201:
                raise RuntimeError(f"hook {name} not created: {r.status} {r.body[:300]!r}")
            ids[name] = r.json()["id"]
        out["ids"] = ids

        def poll_paused():
            while not stop.is_set():
                hook, _ = get_json(server, f"/event-hooks/{ids['A']}", timeout=2.0)
                if hook is not None and hook.get("enabled") is False:
                    out["paused_at"] = time.time()
                    out["disabled_reason"] = hook.get("disabled_reason")
                    return
                stop.wait(0.25)

        if row.name in ("paused", "gone"):
            poller = threading.Thread(target=poll_paused, daemon=True)
            poller.start()
        out["started"] = time.time()
        post_events(server, row, count, out["posted"], out["post_stats"])
        out["posted_until"] = time.time()
        end_at = time.monotonic() + tail
        while time.monotonic() < end_at:
            time.sleep(min(1.0, max(0.0, end_at - time.monotonic())))
        out["up"] = server.up()
        out["status"], err = get_json(server, "/status")
        if err:
            out["notes"].append(err)
        out["dead"], err = get_json(server, "/dead-letters?size=1000", timeout=30.0)
        if err:
            out["notes"].append(err)
        out["hook_a"], err = get_json(server, f"/event-hooks/{ids['A']}")
        if err:
            out["notes"].append(err)
        if row.name == "paused":
            out["log_a"], err = a_deliveries(server, ids["A"])
            if err:
                out["notes"].append(err)
    except Exception as err:  # reported as the row's harness error
        out["error"] = f"{type(err).__name__}: {err}"
    finally:
        out["ended"] = time.time()
        stop.set()
        server.stop()
        if poller is not None:
            poller.join(5)
        out["a"], out["b"] = a.snapshot(), b.snapshot()
        out["first_410"] = a.first_410
        out["log"] = server.log_path
        a.close()
        b.close()
    return out


def ms(seconds):
    if seconds is None:
        return "-"
    if seconds == float("inf"):
        return "never"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def judge(part, row, out):
    """The figures of one row from what `run_row` observed."""
    name = row.name
    if "error" in out:
        part.add(f"{name}: harness error", out["error"][:60], "-", False)
        part.notes.append(f"{name}: {out['error']} (server log {out.get('log')})")
        return
    posted = out["posted"]
    accepted = len(posted)
    first_b = {}
    b_count = {}
    for rec in out["b"]:
        seq = rec["seq"]
        if seq in posted:
            b_count[seq] = b_count.get(seq, 0) + 1
            first_b[seq] = min(first_b.get(seq, rec["start"]), rec["start"])
    latencies = [first_b[s] - t if s in first_b else float("inf") for s, t in posted.items()]
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    missing = accepted - len(first_b)
    part.add(f"{name}: B latency p50 / p99",
             f"{ms(p50)} / {ms(p99)}" + (f" ({missing} missing)" if missing else ""),
             "p99 ≤ 1 s", p99 is not None and p99 <= B_P99_TARGET_S)
    dups = sum(n - 1 for n in b_count.values())
    stats = out["post_stats"]
    part.add(f"{name}: B delivered / events accepted",
             f"{len(first_b)} / {accepted}, {dups} twice", "all, none twice",
             accepted == out["count"] and len(first_b) == accepted and dups == 0)
    if accepted != out["count"]:
        part.notes.append(f"{name}: {out['count']} events, {accepted} accepted: {stats}")

    # A: requests per delivery id, and the same id in flight at once. Only the events' requests:
    # the ping a webhook gets when it is created (spec §7) is no delivery of ours.
    a_events = [rec for rec in out["a"] if rec["seq"] is not None]
    by_id = {}
    longest = 0.0
    for rec in a_events:
        end = rec["end"] if rec["end"] is not None else out["ended"]
        longest = max(longest, end - rec["start"])
        by_id.setdefault(rec["delivery"], []).append((rec["start"], end))
    per_id = max((len(v) for v in by_id.values()), default=0)
    overlap, worst = 0, None
    for delivery, intervals in by_id.items():
        n = max_overlap(intervals)
        if n > overlap:
            overlap, worst = n, delivery
    part.add(f"{name}: A requests per id max / same id in flight max",
             f"{per_id} / {overlap} ({len(a_events)} requests)", "- / 1", overlap <= 1)
    if overlap > 1:
        attempts = sorted((r["start"] - out["started"], r["attempt"])
                          for r in a_events if r["delivery"] == worst)
        part.notes.append(f"{name}: delivery {worst} in flight {overlap} times at once; "
                          f"(arrival s, attempt): {[(round(s, 1), n) for s, n in attempts][:8]}")
    part.add(f"{name}: A longest request held open", f"{longest:.1f} s",
             f"< {LEASE_S:.0f} s (lease)", longest < LEASE_S)

    # Dead letters: the event itself, or B's delivery, while B was served.
    served = set(first_b)
    dead = (out.get("dead") or {}).get("data")
    if dead is None:
        part.add(f"{name}: dead letters of events B was served", "unreadable", "0", False)
    else:
        bad, own, reasons = 0, 0, {}
        for letter in dead:
            body = letter.get("body") if isinstance(letter.get("body"), dict) else {}
            if letter.get("queue") == "events":
                data = body.get("data") if isinstance(body.get("data"), dict) else {}
                if body.get("event") == name and data.get("seq") in served:
                    bad += 1
                    reasons[letter.get("reason")] = reasons.get(letter.get("reason"), 0) + 1
            elif body.get("hook_id") == out["ids"]["B"]:
                bad += 1
                reasons[letter.get("reason")] = reasons.get(letter.get("reason"), 0) + 1
            elif body.get("hook_id") == out["ids"]["A"]:
                own += 1
        total = out["dead"].get("total", len(dead))
        part.add(f"{name}: dead letters of events B was served",
                 f"{bad} (A's own: {own}; total {total})", "0", bad == 0)
        if reasons:
            part.notes.append(f"{name}: dead letters of served events by reason: {reasons}")

    if name == "gone":
        first = out["first_410"]
        after = sum(1 for r in a_events if first is not None and r["start"] > first)
        hook = out.get("hook_a") or {}
        part.add("gone: A requests after its first 410 answer",
                 f"{after} (hook enabled: {hook.get('enabled')})", f"≤ {IN_FLIGHT_CAP}",
                 first is not None and after <= IN_FLIGHT_CAP and hook.get("enabled") is False)
    if name.startswith("throttled"):
        dispatch = (out.get("status") or {}).get("dispatch") or {}
        shown = []
        for key in ("rate_limited", "deferred"):
            shown.append(f"{dispatch[key]}" if key in dispatch else "missing")
        rate_limited = dispatch.get("rate_limited", 0)
        part.add(f"{name}: /status rate_limited / deferred", " / ".join(shown),
                 f"rate_limited ≤ {accepted}", rate_limited <= accepted)
        rate = row.hook["max_rate"]
        a_times = [r["start"] for r in a_events]
        part.add(f"{name}: A delivered, busiest second (info)",
                 f"{len(a_times)} requests, {busiest_second(a_times)} in 1 s "
                 f"(max_rate {rate})", "-", None)
    if name == "paused":
        paused_at = out.get("paused_at")
        after = sorted(s for s, t in posted.items() if paused_at is not None and t > paused_at)
        logged = {}
        for record in out.get("log_a") or []:
            data = (record.get("event") or {}).get("data") or {}
            if isinstance(data, dict) and data.get("seq") is not None:
                logged.setdefault(data["seq"], []).append(record)

        def not_sent(seq):
            for record in logged.get(seq, []):
                errors = [record.get("error")] + [a.get("error") for a in
                                                  record.get("attempts") or []]
                if record.get("status") == "not_sent" and any(e for e in errors):
                    return True
            return False

        good = sum(1 for s in after if not_sent(s))
        in_log = sum(1 for s in after if s in logged)
        if paused_at is None:
            part.add("paused: events after the pause logged not_sent", "A never paused",
                     "all", False)
        else:
            part.add("paused: events after the pause logged not_sent",
                     f"{good} of {len(after)} ({in_log} in the log at all)",
                     "all", len(after) > 0 and good == len(after))
            part.notes.append(f"paused: A seen paused {paused_at - out['started']:.1f} s into "
                              f"the row: {out.get('disabled_reason')}")
            if after and good < len(after):
                example = (logged.get(after[0]) or [{}])[0]
                part.notes.append(f"paused: e.g. seq {after[0]}: "
                                  f"{json.dumps(example)[:300] if example else 'no record'}")


def run(args, workdir, binary):
    part = PartResult("isolation")
    started = time.monotonic()
    wanted = [x.strip() for x in (getattr(args, "isolation_rows", "") or "").split(",")
              if x.strip()]
    unknown = [x for x in wanted if x not in ROW_NAMES]
    if unknown:
        raise ValueError(f"unknown isolation row(s) {unknown}; choose from {ROW_NAMES}")
    rows = [r for r in ROWS if not wanted or r.name in wanted]
    results = {}

    def one(row):
        results[row.name] = run_row(row, args.quick, binary, workdir)
        out = results[row.name]
        print(f"  isolation: {row.name}: {len(out['posted'])} events accepted, "
              f"A {len(out['a'])} requests, B {len(out['b'])} requests, "
              f"{out['ended'] - out.get('started', out['ended']):.0f} s"
              + (f"; {out['error']}" if "error" in out else ""), flush=True)

    threads = [threading.Thread(target=one, args=(row,), daemon=True) for row in rows]
    for t in threads:
        t.start()
    # Posting + tail + start/stop and the final reads; rows never take this long.
    bound = max((r.quick_events if args.quick else r.events) / RATE
                + (r.quick_tail if args.quick else FULL_TAIL_S) for r in rows) + 120.0
    deadline = time.monotonic() + bound
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    for row in rows:
        if row.name not in results:
            part.add(f"{row.name}: harness error", f"row did not end within {bound:.0f} s", "-",
                     False)
            continue
        judge(part, row, results[row.name])
        part.notes.extend(f"{row.name}: {n}" for n in results[row.name]["notes"])
    part.seconds = time.monotonic() - started
    return part

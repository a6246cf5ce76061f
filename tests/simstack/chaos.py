"""The serverless path under AWS and Lambda faults (issue 20): N events from producers, through
SQS (sent straight to the events queue, retried as a producer would) and `POST /events`, one by one
and in batches of 3 (retried on 5xx and timeouts with the same `Idempotency-Key`), to 3 hooks on a
receiver on 127.0.0.1:

* `plain`: a `webhook`: every event, once;
* `windowed`: a `webhook` with `snooze: 3600` and `on_change: true`: with both set, the window is
  per hook and event key (`snooze:<hook>:<key>`), so each distinct data is delivered exactly once
  whatever the order the events arrive in: the expected decisions are known in advance (the events
  repeat each data value 3 times);
* `custom`: a `webhook-custom` with a templated body: every event, once.

Faults on every AWS call the functions make (faults.Faults in the proxy), Lambda's own faults
(lambda_faults.LambdaFaults: SIGKILL mid-batch, invocations cut at their timeout), and
redeliveries while the first receive still runs (the trigger queues' `VisibilityTimeout` shortened
below the slow receiver's answers, two pollers per trigger). Then the faults stop and the run
measures how long the backlog takes to drain, reads the dead-letter queues and prints the table.

    python chaos.py --seed 1 --events 300
    python chaos.py --seeds 1,2,3 --events 1500 --faults 'DynamoDB:*:throttle:0.1,...'
"""

from __future__ import annotations

import argparse
import http.server
import inspect
import json
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from faults import Faults
from lambda_faults import LambdaFaults
from simstack import LoopbackHandler, Poller, Runtime, SimulatedStack, wait_for

DEFAULT_FAULTS = ("DynamoDB:*:throttle:0.1,SQS:*:error:0.05,SecretsManager:*:error:0.05,"
                  "*:*:hang:0.01:6")
PARAMETERS = {
    "AllowPrivateTargets": "true",
    "RetrySchedule": "1s,2s,5s,10s",
    "LogLevel": "info",
}
NAME = re.compile(rb"chaos-\d+-\d+")


class Receiver:
    """Records (path, delivery id, attempt, event name) of every request carrying a chaos event;
    answers 200, after `slow_s` for a `slow_rate` share (seeded)."""

    def __init__(self, seed: int, slow_rate: float, slow_s: float):
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.rng = random.Random(f"receiver:{seed}")
        self.slow_rate, self.slow_s = slow_rate, slow_s
        self.slow_on = True
        receiver = self

        class Handler(LoopbackHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                name = NAME.search(body)
                with receiver.lock:
                    slow = receiver.slow_on and name is not None and receiver.rng.random() < receiver.slow_rate
                    receiver.requests.append({
                        "path": self.path, "name": name.group().decode() if name else None,
                        "delivery": self.headers.get("x-event-hook-delivery"),
                        "attempt": int(self.headers.get("x-event-hook-attempt") or 0),
                        "at": time.monotonic(), "slow": slow,
                    })
                if slow:
                    time.sleep(receiver.slow_s)
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:  # the function gave up on a slow answer, or was killed
                    self.close_connection = True

            do_PUT = do_GET = do_POST

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def call(base: str, token: str | None, method: str, path: str, body=None, headers=None,
         retry_s: float = 120.0, seen: Counter | None = None) -> tuple[int, object, int]:
    """An HTTP call retried on 5xx (honouring Retry-After), 429 and timeouts, with the same
    headers (so the same Idempotency-Key); returns status, JSON body and the tries it took."""
    data = json.dumps(body).encode() if body is not None else None
    deadline, tries = time.monotonic() + retry_s, 0
    while True:
        tries += 1
        req = urllib.request.Request(base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Kong-Admin-Token", token)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        wait = 0.5
        try:
            with urllib.request.urlopen(req, timeout=40) as reply:
                status, raw = reply.status, reply.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
            wait = float(err.headers.get("Retry-After") or 0.5)
        except OSError:
            status, raw = 0, b""
        # 409: the key's first request is still being processed (it answers "retry later").
        retryable = status in (0, 409, 429) or status >= 500
        if seen is not None and retryable:
            seen[status or "timeout/reset"] += 1
        if retryable and time.monotonic() < deadline:
            time.sleep(min(wait, 5.0))
            continue
        try:
            return status, json.loads(raw) if raw else None, tries
        except ValueError:
            return status, raw.decode(errors="replace"), tries


@dataclass
class Result:
    seed: int
    events: int
    spec: str
    kill_per_records: int
    visibility: int
    accepted: int = 0
    refused: list = field(default_factory=list)
    http_retries: int = 0
    http_5xx: Counter = field(default_factory=Counter)
    expected: int = 0
    delivered: int = 0
    duplicates: int = 0
    bad_duplicates: list = field(default_factory=list)
    dead: list = field(default_factory=list)
    lost: list = field(default_factory=list)
    wrong: list = field(default_factory=list)
    drain_s: float | None = None
    aws_faults: dict = field(default_factory=dict)
    lambda_faults: dict = field(default_factory=dict)
    restarts: int = 0
    poller_errors: list = field(default_factory=list)
    flow_s: float = 0.0
    logs: dict = field(default_factory=dict)
    evidence: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.lost and not self.wrong and not self.bad_duplicates and self.drain_s is not None \
            and self.accepted == self.events

    def rows(self) -> list[tuple[str, str, str]]:
        reasons = Counter(d["reason"] for d in self.dead)
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.aws_faults.items())) or "none"
        return [
            ("AWS faults (rules)", self.spec or "none", "-"),
            ("AWS faults injected", f"{sum(self.aws_faults.values())} ({faults})", "-"),
            ("Lambda faults", f"SIGKILL 1 per {self.kill_per_records} records, cut at timeout 0.5% of invocations; hit: "
             f"{self.lambda_faults or 'none'}; cold restarts {self.restarts}", "-"),
            ("trigger VisibilityTimeout", f"{self.visibility} s, 2 pollers per trigger", "-"),
            ("events accepted", f"{self.accepted} of {self.events} (HTTP tries beyond the first: "
             f"{self.http_retries}, answers retried: {dict(self.http_5xx) or 0})", f"{self.events}"),
            ("deliveries expected", str(self.expected), "-"),
            ("delivered (distinct delivery ids)", str(self.delivered), "-"),
            ("duplicates / without the same id and a higher attempt",
             f"{self.duplicates} / {len(self.bad_duplicates)}", "- / 0"),
            ("dead-lettered", f"{len(self.dead)} {dict(reasons) if reasons else ''}".strip(), "-"),
            ("lost", str(len(self.lost)), "0"),
            ("snooze/on_change decisions wrong", str(len(self.wrong)), "0"),
            ("drain after faults stop", f"{self.drain_s:.1f} s" if self.drain_s is not None else "did not drain",
             "drains"),
        ]


def make_stack(faults: Faults) -> SimulatedStack:
    if "faults" in inspect.signature(SimulatedStack.__init__).parameters:
        return SimulatedStack(PARAMETERS, faults=faults)
    sim = SimulatedStack(PARAMETERS)
    sim.counter.faults = faults  # until the proxy takes them at construction
    return sim


def queues_quiet(sim: SimulatedStack, pollers: list[Poller]) -> bool:
    counted = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
               "ApproximateNumberOfMessagesDelayed"]
    for p in pollers:
        attrs = sim.sqs.get_queue_attributes(QueueUrl=p.url, AttributeNames=counted)["Attributes"]
        if any(int(v) for v in attrs.values()) or not p.idle():
            return False
    return True


def drain_dlq(sim: SimulatedStack, output: str) -> list[dict]:
    url, got = sim.stack.outputs[output], []
    while True:
        msgs = sim.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       MessageAttributeNames=["All"]).get("Messages", [])
        if not msgs:
            return got
        for m in msgs:
            got.append(m)
            sim.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def run(seed: int, events: int, spec: str, kill_per_records: int = 500, visibility: int = 10,
        slow_rate: float = 0.02, slow_s: float = 8.0, drain_timeout: float = 600.0,
        producers: int = 4, cut_rate: float = 0.005, kills_owed: int = 0, log=print) -> Result:
    res = Result(seed, events, spec, kill_per_records, visibility)
    faults = Faults.from_spec(spec, seed)
    faults.active = False
    lfaults = LambdaFaults(seed, kill_per_records=kill_per_records, cut_rate=cut_rate, active=False,
                           kills_owed=kills_owed)
    receiver = Receiver(seed, slow_rate, slow_s)
    sim = make_stack(faults)
    extra: list = []
    try:
        # A second execution environment per trigger, and visibility timeouts below a slow answer.
        pollers = list(sim.pollers)
        for p in list(sim.pollers):
            runtime = Runtime(sim.stack.functions[p.mapping.function], sim.counter.endpoint)
            extra.append(runtime)
            pollers.append(Poller(p.mapping, runtime, sim.sqs, p.loops))
            extra.append(pollers[-1])
            sim.sqs.set_queue_attributes(QueueUrl=p.url, Attributes={"VisibilityTimeout": str(visibility)})
        runtimes = list(sim.runtimes.values()) + [p.runtime for p in pollers]
        for r in set(runtimes):
            r.faults = lfaults
        token = sim.admin_token()
        base = sim.gateway.url
        hooks = {
            "/plain": {"handler": "webhook", "config": {"url": receiver.base + "/plain", "secret": "s3cr3t"}},
            "/windowed": {"handler": "webhook", "snooze": 3600, "on_change": True,
                          "config": {"url": receiver.base + "/windowed"}},
            "/custom": {"handler": "webhook-custom", "config": {
                "method": "POST", "url": receiver.base + "/custom",
                "headers": {"content-type": "application/json"},
                "payload": {"text": "{{ entity.name }} {{ operation }}"}}},
        }
        ids = {}
        for path, hook in hooks.items():
            status, body, _ = call(base, token, "POST", "/event-hooks",
                                   {"source": "crud", "event": "consumers", **hook})
            assert status == 201, (path, status, body)
            ids[path] = body["id"]
        # The create pings of the webhooks (a webhook-custom hook gets none), so that the events
        # find the hooks registered.
        wait_for(lambda: receiver.at("/plain") and receiver.at("/windowed"), "the create pings", 120)

        distinct = max(1, events // 3)
        names = [f"chaos-{seed}-{i % distinct}" for i in range(events)]
        random.Random(f"order:{seed}").shuffle(names)
        events_url = sim.stack.outputs["EventsQueueUrl"]
        lock = threading.Lock()

        def doc_of(i: int) -> dict:
            data = {"operation": "update", "entity": {"name": names[i]}, "old_entity": None}
            return {"source": "crud", "event": "consumers", "data": data}

        def produce(unit: tuple[str, list[int]]):
            way, indices = unit
            if way in ("post", "batch"):
                body = doc_of(indices[0]) if way == "post" else [doc_of(i) for i in indices]
                status, reply, tries = call(base, token, "POST", "/events", body,
                                            headers={"Idempotency-Key": str(uuid.uuid4())}, retry_s=300,
                                            seen=res.http_5xx)
                with lock:
                    res.http_retries += tries - 1
                    if status == 202:
                        res.accepted += len(indices)
                    else:
                        res.refused.extend((names[i], status, str(reply)[:200]) for i in indices)
                return
            doc = doc_of(indices[0])
            for attempt in range(20):  # a producer's retries, past the SDK's own
                try:
                    sim.sqs.send_message(QueueUrl=events_url, MessageBody=json.dumps(doc))
                    with lock:
                        res.accepted += 1
                    return
                except Exception as err:  # noqa: BLE001 - retried, then counted as refused
                    last = err
                    time.sleep(0.5 * (attempt + 1))
            with lock:
                res.refused.append((names[indices[0]], "sqs", repr(last)))

        # Half the events straight to the events queue; of the other half, half posted one by
        # one and half in keyed batches of 3.
        over_http = [i for i in range(events) if i % 2 == 0]
        one_by_one, batched = over_http[::2], over_http[1::2]
        units = ([("sqs", [i]) for i in range(events) if i % 2 == 1] + [("post", [i]) for i in one_by_one]
                 + [("batch", batched[k:k + 3]) for k in range(0, len(batched), 3)])
        random.Random(f"units:{seed}").shuffle(units)

        log(f"seed {seed}: {events} events, faults on")
        faults.active = lfaults.active = True
        started = time.monotonic()
        with ThreadPoolExecutor(producers) as pool:
            list(pool.map(produce, units))
        # Faults stay on while the events flow: until the deliveries expected have mostly come, or
        # as long again as the sending took.
        expected_total = 2 * events + len(set(names))

        def delivered_now() -> int:
            with receiver.lock:
                return len({(r["path"], r["delivery"]) for r in receiver.requests if r["name"]})
        flow_deadline = time.monotonic() + max(30.0, time.monotonic() - started)
        while time.monotonic() < flow_deadline and delivered_now() < 0.9 * expected_total:
            time.sleep(1)
        faults.active = lfaults.active = False
        receiver.slow_on = False
        res.flow_s = time.monotonic() - started
        log(f"seed {seed}: faults off after {res.flow_s:.0f} s; draining")
        stopped = time.monotonic()
        try:
            quiet_since = None

            def drained():
                nonlocal quiet_since
                if queues_quiet(sim, pollers):
                    quiet_since = quiet_since or time.monotonic()
                    return time.monotonic() - quiet_since >= 3
                quiet_since = None
                return False
            wait_for(drained, "the backlog to drain", drain_timeout, every=0.5)
            res.drain_s = (quiet_since or time.monotonic()) - stopped
        except AssertionError as err:
            log(f"seed {seed}: {err}")

        # --- the count -------------------------------------------------------------------------
        res.aws_faults = {}
        for key, n in faults.injected().items():
            kind = key.rsplit(":", 1)[1]
            service = key.split(".", 1)[0]
            res.aws_faults[f"{service}:{kind}"] = res.aws_faults.get(f"{service}:{kind}", 0) + n
        res.lambda_faults = lfaults.counts()
        res.restarts = sum(r.restarts for r in set(runtimes))
        res.poller_errors = [e for p in pollers for e in p.errors]
        dead = drain_dlq(sim, "DeliveriesDeadLetterQueueUrl") + drain_dlq(sim, "EventsDeadLetterQueueUrl")
        hook_of_id = {v: k for k, v in ids.items()}
        dead_by: Counter = Counter()
        for m in dead:
            reason = ((m.get("MessageAttributes") or {}).get("reason") or {}).get("StringValue") or "(no reason)"
            name = NAME.search(m["Body"].encode())
            path = next((hook_of_id[h] for h in hook_of_id if h in m["Body"]), None)
            res.dead.append({"reason": reason[:120], "name": name.group().decode() if name else None, "hook": path})
            if name:
                for p in ([path] if path else list(hooks)):
                    dead_by[(p, name.group().decode())] += 1
        sent = Counter(names)
        for path in hooks:
            got = receiver.at(path)
            by_delivery = defaultdict(list)
            for r in got:
                if r["name"]:
                    by_delivery[r["delivery"]].append(r)
            per_name = Counter(rs[0]["name"] for rs in by_delivery.values())
            for rs in by_delivery.values():
                res.duplicates += len(rs) - 1
                attempts = [r["attempt"] for r in rs]
                # Each copy is numbered apart (the attempt claims), above the first copy's number.
                # Copies sent at the same moment may arrive in either order.
                if len(set(attempts)) < len(attempts) or any(b <= attempts[0] for b in attempts[1:]):
                    t0 = rs[0]["at"]
                    res.bad_duplicates.append((path, rs[0]["delivery"], rs[0]["name"], attempts,
                                               "at +s " + str([round(r["at"] - t0, 1) for r in rs]),
                                               "slow " + str([r["slow"] for r in rs])))
            for name, count in sent.items():
                want = 1 if path == "/windowed" else count
                res.expected += want
                have = per_name.get(name, 0)
                res.delivered += min(have, want)
                if have > want:
                    res.wrong.append((path, name, f"{have} deliveries, expected {want}")
                                     if path == "/windowed" else (path, name, f"{have} of {want}"))
                missing = want - min(have, want) - dead_by.get((path, name), 0)
                if missing > 0:
                    res.lost.extend([(path, name)] * missing)
                    if path == "/windowed":
                        res.wrong.append((path, name, "suppressed: no delivery of a new key"))
        if res.lost or res.wrong or res.bad_duplicates:
            res.logs = {k: r.output()[-6000:] for k, r in sim.runtimes.items()}
            # The functions' log lines naming the first bad duplicates' delivery ids, with the
            # two lines before each.
            wanted = [d[1] for d in res.bad_duplicates[:3]]
            kinds: dict[str, list] = {}
            for r in set(runtimes):
                lines = r.output().splitlines()
                for i, line in enumerate(lines):
                    if any(w and w in line for w in wanted):
                        res.evidence.extend(x[:600] for x in lines[max(0, i - 2): i + 1])
                    rapid = re.search(r"\(rapid\) (.*(?:[Tt]imed? ?out|error|status: (?!success)).{0,60})", line)
                    if rapid:
                        kinds.setdefault(f"{r.fn.logical_id} RIE {re.sub(r'[0-9a-f-]{36}|[0-9.]+ms', '*', rapid.group(1))[:90]}",
                                         []).append(line)
                    level = re.search(r'"level":"(WARN|ERROR)".*?"message":"([^"]{0,90})', line)
                    if level:
                        kinds.setdefault(f"{r.fn.logical_id} {level.group(1)} {level.group(2)}", []).append(line)
            for kind, found in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
                res.evidence.append(f"{len(found)} x {kind} | e.g. {found[0][:500]}")
        return res
    finally:
        for part in reversed(extra):
            try:
                part.stop()
            except Exception:  # noqa: BLE001
                pass
        sim.stop()
        receiver.stop()


def table(results: list[Result]) -> str:
    lines = []
    for res in results:
        lines.append(f"\nseed {res.seed}: {res.events} events ({'PASS' if res.ok else 'FAIL'})")
        lines.append("| measure | figure | target |")
        lines.append("|---|---|---|")
        lines.extend(f"| {a} | {b} | {c} |" for a, b, c in res.rows())
        for what, items in (("refused", res.refused), ("lost", res.lost), ("wrong", res.wrong),
                            ("duplicate without a higher attempt", res.bad_duplicates),
                            ("poller error", res.poller_errors)):
            for item in items[:10]:
                lines.append(f"  {what}: {item}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--seeds", default="1,2,3", help="comma separated (ignored with --seed)")
    ap.add_argument("--events", type=int, default=1500)
    ap.add_argument("--faults", default=DEFAULT_FAULTS, help="service:operation:kind:rate[:seconds],...")
    ap.add_argument("--kill-per-records", type=int, default=500)
    ap.add_argument("--visibility", type=int, default=10, help="trigger queues' VisibilityTimeout, s")
    ap.add_argument("--slow-rate", type=float, default=0.02, help="share of receiver answers after --slow-s")
    ap.add_argument("--slow-s", type=float, default=8.0)
    ap.add_argument("--drain-timeout", type=float, default=600.0)
    ap.add_argument("--logs", action="store_true", help="print the functions' log tails on a failure")
    args = ap.parse_args(argv)
    seeds = [args.seed] if args.seed is not None else [int(s) for s in args.seeds.split(",")]
    results = []
    for seed in seeds:
        res = run(seed, args.events, args.faults, args.kill_per_records, args.visibility,
                  args.slow_rate, args.slow_s, args.drain_timeout, log=lambda m: print(m, file=sys.stderr))
        results.append(res)
        print(table([res]), flush=True)
        for line in res.evidence[:60]:
            print(f"  log: {line}")
        if args.logs:
            for k, text in res.logs.items():
                print(f"--- {k} log tail ---\n{text}")
    print(f"\n{sum(r.ok for r in results)} of {len(results)} seeds pass")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Part 1, the crash and stall catalogue (issue 8 items 1-5 and 8, and the classics), read from
tests/fixtures/hostile-lua.json.

Each attack is a lambda hook, a webhook-custom template hook (body code, sent to a loopback
receiver), a hook config, or a raw request. Hooks run through `POST /event-hooks/{id}/test` and
through a real delivery (`POST /events` for crud/consumers, the attempt's `latency_ms` read from
`GET /event-hooks/{id}/deliveries`). Each must be refused at create (4xx), or stopped within the
budget + 100 ms, leave the server up, and show no sandbox escape. Meanwhile a healthy webhook on
crud/services gets an event every 100 ms (its end-to-end latency p99 is a figure) and `/status` is
polled (its p99 too). A server that dies or wedges is restarted on a fresh data directory (so a
poison message cannot take the next attack down with it) and the attack is a FAIL.
"""

import json
import os
import threading
import time

from common import REPO, PartResult, Receiver, Server, percentile

BUDGET_S = 1.0
SLACK_S = 0.1
# Past these an answer counts as a stall (the budget is 1 s), whatever comes later; --quick
# halves them.
TEST_TIMEOUT_S = 10.0
DELIVERY_WAIT_S = 12.0
ESCAPE = "ESCAPED"
PRINT_MARKER = "RELIABILITY-FORGED-STDOUT"
WARN_MARKER = "RELIABILITY-FORGED-STDERR"

# The catalogue itself (with tests/integration/hostile_lua.rs): one entry per attack.
CATALOGUE = os.path.join(REPO, "tests", "fixtures", "hostile-lua.json")


def load_attacks(path=CATALOGUE):
    """(name, (kind, payload), core, must_refuse) per catalogue entry."""
    with open(path) as f:
        catalogue = json.load(f)
    markers = catalogue["markers"]
    assert (markers["escape"], markers["print"], markers["warn"]) == (
        ESCAPE, PRINT_MARKER, WARN_MARKER), "the catalogue's markers are the ones checked here"
    attacks = []
    for entry in catalogue["attacks"]:
        if "lambda" in entry:
            kind_payload = ("lambda", entry["lambda"] * entry.get("repeat", 1))
        elif "template" in entry:
            kind_payload = ("template", entry["template"])
        elif "request" in entry:
            kind_payload = ("request", entry["request"])
        elif "config" in entry:
            kind_payload = ("config", entry["config"])
        elif entry.get("compile_stall"):
            kind_payload = ("compile-stall", None)
        else:
            raise ValueError(f"{path}: no attack in {entry['name']!r}")
        attacks.append((entry["name"], kind_payload, entry["core"], entry.get("refused", False)))
    return attacks


# Accepting a `refused` attack at create is a FAIL (spec §1 limits).
ATTACKS = load_attacks()

CHECK_HOOK = ("return function() return {upper = ('abc'):upper(), leaked = tostring(leaked), "
              "leaked2 = tostring(rawget(_G, 'leaked2'))} end")


def deep_form(levels):
    return "a" + ".a" * levels + "=1"


class Catalogue:
    def __init__(self, args, workdir, binary):
        global TEST_TIMEOUT_S, DELIVERY_WAIT_S
        self.args = args
        self.quick = args.quick
        if args.quick:
            TEST_TIMEOUT_S, DELIVERY_WAIT_S = 5.0, 6.0
        self.server = Server(binary, workdir, "crash",
                             extra_args=["--retry-schedule", "none"])
        self.target = Receiver()
        self.healthy = Receiver()
        self.healthy_latency = []
        self.status_latency = []
        self.healthy_sent = 0
        self.stop = threading.Event()
        self.lock = threading.Lock()

    # --- background load -------------------------------------------------------------------
    def create_healthy(self):
        r = self.server.request("POST", "/event-hooks", {
            "source": "crud", "event": "services", "handler": "webhook",
            "config": {"url": self.healthy.url.replace("/hook", "/healthy")}})
        if r.status != 201:
            raise RuntimeError(f"healthy hook not created: {r.status} {r.body[:200]!r}")

    def healthy_loop(self):
        seq = 0
        while not self.stop.is_set():
            seq += 1
            try:
                self.server.request("POST", "/events", {
                    "source": "crud", "event": "services",
                    "data": {"operation": "update", "entity": {"seq": seq, "sent": time.time()}}},
                    timeout=5.0)
                self.healthy_sent += 1
            except OSError:
                pass
            self.stop.wait(0.1)

    def status_loop(self):
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.server.request("GET", "/status", timeout=5.0)
                self.status_latency.append(time.monotonic() - started)
            except OSError:
                pass
            self.stop.wait(0.2)

    def collect_healthy(self):
        latencies = []
        for (at, _method, _path, _headers, body) in self.healthy.snapshot():
            try:
                entity = json.loads(body).get("entity") or {}
            except ValueError:
                continue
            if "sent" in entity:
                latencies.append(at - entity["sent"])
        return latencies

    # --- one attack ------------------------------------------------------------------------
    def restart_if_needed(self):
        """True when the server had to be restarted (it died or stopped answering)."""
        with self.lock:
            if self.server.ensure_up():
                self.create_healthy()
                return True
            return False

    def hook_body(self, kind, payload):
        if kind == "lambda":
            return {"source": "crud", "event": "consumers", "handler": "lambda",
                    "config": {"functions": payload}}
        if kind == "template":
            return {"source": "crud", "event": "consumers", "handler": "webhook-custom",
                    "config": {"url": self.target.url, "method": "POST", "body": payload,
                               "body_format": True,
                               "headers": {"content-type": "text/plain"}}}
        if kind == "config" and payload == "headers-5000":
            return {"source": "crud", "event": "consumers", "handler": "webhook",
                    "config": {"url": self.target.url,
                               "headers": {f"x-h{i}": "v" for i in range(5000)}}}
        raise ValueError(kind)

    def run_request_attack(self, name, which):
        form = {"content-type": "application/x-www-form-urlencoded"}
        if which == "hooks-form-deep":
            sends = [("POST", "/event-hooks", "source=crud&handler=log&" + deep_form(10000), form)]
        elif which == "events-form-deep":
            sends = [("POST", "/events", "source=crud&event=consumers&" +
                      deep_form(10000).replace("a", "data", 1), form)]
        else:
            deep = "[" * 10000 + "]" * 10000
            sends = [("POST", "/events",
                      '{"source":"crud","event":"consumers","data":{"x":' + deep + "}}",
                      {"content-type": "application/json"})]
        outcome, detail = "ok", ""
        for method, path, body, headers in sends:
            try:
                r = self.server.request(method, path, body, headers, timeout=TEST_TIMEOUT_S)
                detail = f"{r.status}"
                if r.status >= 500:
                    outcome = "5xx"
            except OSError as err:
                outcome, detail = "no answer", str(err)[:80]
        time.sleep(0.3)  # a queued event that kills the dispatcher does so within this
        if self.restart_if_needed():
            return [("request", False, f"crash ({detail})")]
        return [("request", outcome == "ok", detail if outcome == "ok" else f"{outcome} {detail}")]

    def run_compile_stall(self):
        slow = ("local x = 0 for i = 1, 2e7 do x = x + i end "
                "local big = string.rep('y', 4 * 1024 * 1024) "
                "return function() return #big + x end")
        worst = [0.0]
        done = threading.Event()

        def poll():
            while not done.is_set():
                started = time.monotonic()
                try:
                    self.server.request("GET", "/status", timeout=10.0)
                except OSError:
                    pass
                worst[0] = max(worst[0], time.monotonic() - started)
                time.sleep(0.02)

        ids = []

        def create_and_test():
            try:
                r = self.server.request("POST", "/event-hooks",
                                        self.hook_body("lambda", [slow]), timeout=TEST_TIMEOUT_S)
                if r.status == 201:
                    hook_id = r.json()["id"]
                    ids.append(hook_id)
                    self.server.request("POST", f"/event-hooks/{hook_id}/test", {"a": 1},
                                        timeout=TEST_TIMEOUT_S)
            except OSError:
                pass

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        workers = [threading.Thread(target=create_and_test, daemon=True) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(TEST_TIMEOUT_S * 2 + 2)
        done.set()
        poller.join(12)
        for hook_id in ids:
            self.delete(hook_id)
        if self.restart_if_needed():
            return [("status", False, "crash")]
        ok = worst[0] <= BUDGET_S + SLACK_S
        return [("status", ok, f"/status worst {worst[0] * 1000:.0f} ms")]

    def delete(self, hook_id):
        try:
            self.server.request("DELETE", f"/event-hooks/{hook_id}", timeout=5.0)
        except OSError:
            pass

    def escaped(self, text):
        return ESCAPE in text or "table: 0x" in text

    def log_size(self):
        try:
            return os.path.getsize(self.server.log_path)
        except (OSError, TypeError):
            return 0

    def forged_output(self, since):
        """A raw print/warn line of user code in the server's output written since `since`."""
        try:
            with open(self.server.log_path, "rb") as log:
                log.seek(since)
                for line in log.read().decode("utf-8", "replace").splitlines():
                    if line.startswith(PRINT_MARKER) or line.startswith(WARN_MARKER):
                        return True
        except OSError:
            pass
        return False

    def check_other_hook(self):
        """After a tampering attack: does a fresh hook still see a clean string metatable and no
        leaked globals?"""
        try:
            r = self.server.request("POST", "/event-hooks", self.hook_body("lambda", [CHECK_HOOK]))
            if r.status != 201:
                return None
            hook_id = r.json()["id"]
            t = self.server.request("POST", f"/event-hooks/{hook_id}/test", {"a": 1},
                                    timeout=TEST_TIMEOUT_S)
            self.delete(hook_id)
            if t.status != 200:
                return None
            return self.escaped(t.body.decode("utf-8", "replace"))
        except OSError:
            self.restart_if_needed()
            return None

    def wedged(self):
        """After a stall: a thread may still spin in user code, which would slow every later
        attack; restart so each attack starts from a clean server."""
        with self.lock:
            self.server.crashes += 1
            self.server.kill()
            self.server.start(fresh=True)
            self.create_healthy()

    def run_hook_attack(self, name, kind, payload, deliver, must_refuse):
        results = []
        before = self.target.count()
        log_from = self.log_size()
        generation = self.server.generation
        try:
            r = self.server.request("POST", "/event-hooks", self.hook_body(kind, payload),
                                    timeout=TEST_TIMEOUT_S)
        except OSError as err:
            self.restart_if_needed()
            return [("create", False, f"crash at create ({err})")]
        if 400 <= r.status < 500:
            return [("create", True, f"refused {r.status}")]
        if r.status != 201:
            crashed = self.restart_if_needed()
            return [("create", False, f"create answered {r.status}" + (", crash" if crashed else ""))]
        hook_id = r.json()["id"]
        if must_refuse:
            results.append(("create", False, "accepted (201); the limits refuse it"))

        # through /test
        try:
            t = self.server.request("POST", f"/event-hooks/{hook_id}/test", {"username": "bob"},
                                    timeout=TEST_TIMEOUT_S)
            seconds = t.seconds
            text = t.body.decode("utf-8", "replace")
            answer = f"{t.status} in {seconds * 1000:.0f} ms"
            ok = seconds <= BUDGET_S + SLACK_S and (t.status < 500 or t.status == 502)
            verdict = answer
            if self.escaped(text):
                ok, verdict = False, f"escape/address in answer ({answer})"
        except OSError as err:
            ok, seconds = False, None
            verdict = (f"no answer in {TEST_TIMEOUT_S:.0f} s" if isinstance(err, TimeoutError)
                       else f"connection lost ({str(err)[:60]})")
            if self.server.alive():
                self.wedged()
                verdict += ", server restarted"
        stalled = self.server.generation != generation
        if stalled or self.restart_if_needed():
            if not stalled:
                ok, verdict = False, f"crash ({verdict})"
            results.append(("test", ok, verdict))
            # the hook is gone with the data directory: create it again for the delivery
            if deliver:
                try:
                    r = self.server.request("POST", "/event-hooks", self.hook_body(kind, payload))
                    hook_id = r.json()["id"] if r.status == 201 else None
                except OSError:
                    hook_id = None
        else:
            results.append(("test", ok, verdict))

        # through a real delivery
        if deliver and hook_id:
            results.append(("delivery", *self.deliver(hook_id)))
        if hook_id and self.server.up():
            self.delete(hook_id)
        if any(self.escaped(body.decode("utf-8", "replace"))
               for (_, _, _, _, body) in self.target.snapshot()[before:]):
            results.append(("output", False, "escape or table address in the sent body"))
        if self.server.generation == generation and self.forged_output(log_from):
            results.append(("output", False, "raw print/warn line in the server's stdout/stderr"))
        if "another hook" in name:
            leaked = self.check_other_hook()
            if leaked is not False:
                results.append(("isolation", False, "another hook saw the change" if leaked else
                                "the checking hook failed or did not answer"))
        return results

    def deliver(self, hook_id):
        try:
            r = self.server.request("POST", "/events", {
                "source": "crud", "event": "consumers",
                "data": {"operation": "create", "entity": {"username": "bob"}}})
            if r.status != 202:
                return False, f"POST /events answered {r.status}"
        except OSError as err:
            self.restart_if_needed()
            return False, f"POST /events failed ({err})"
        deadline = time.monotonic() + DELIVERY_WAIT_S
        while time.monotonic() < deadline:
            if not self.server.alive():
                break
            try:
                d = self.server.request("GET", f"/event-hooks/{hook_id}/deliveries", timeout=5.0)
                for record in (d.json() or {}).get("data", []):
                    attempts = record.get("attempts") or []
                    if attempts:
                        latency = attempts[0].get("latency_ms", 0) / 1000
                        text = json.dumps(record)
                        if self.escaped(text):
                            return False, f"escape/address in delivery log ({latency * 1000:.0f} ms)"
                        ok = latency <= BUDGET_S + SLACK_S
                        return ok, f"attempt in {latency * 1000:.0f} ms"
            except OSError:
                pass
            time.sleep(0.1)
        if self.restart_if_needed():
            return False, "crash during delivery"
        self.wedged()
        return False, f"no attempt recorded within {DELIVERY_WAIT_S:.0f} s (stall; restarted)"

    # --- the whole part --------------------------------------------------------------------
    def run(self):
        part = PartResult("crash")
        started = time.monotonic()
        self.server.start()
        self.create_healthy()
        threads = [threading.Thread(target=self.healthy_loop, daemon=True),
                   threading.Thread(target=self.status_loop, daemon=True)]
        for t in threads:
            t.start()
        only = [s.strip().lower() for s in (self.args.crash_filter or "").split(",") if s.strip()]
        attacks = [a for a in ATTACKS if not only or any(o in a[0].lower() for o in only)]
        rows = []
        try:
            for name, (kind, payload), core, must_refuse in attacks:
                deliver = core or not self.quick
                t0 = time.monotonic()
                if kind == "request":
                    outcome = self.run_request_attack(name, payload)
                elif kind == "compile-stall":
                    outcome = self.run_compile_stall()
                else:
                    outcome = self.run_hook_attack(name, kind, payload, deliver, must_refuse)
                for mode, ok, detail in outcome:
                    rows.append((name, mode, ok, detail))
                    mark = "ok  " if ok else "FAIL"
                    print(f"  crash: {mark} {name} [{mode}] {detail} "
                          f"({time.monotonic() - t0:.1f} s)", flush=True)
        finally:
            time.sleep(1.0)
            self.stop.set()
            for t in threads:
                t.join(6)
            self.server.stop()
            self.target.close()
            self.healthy.close()

        failed = [r for r in rows if not r[2]]
        part.add("attacks run (hook x mode)", len(rows), "-", None)
        part.add("attacks failed (crash/stall/escape)", len(failed), "0", not failed)
        part.add("server restarts after a crash or wedge", self.server.crashes, "0",
                 self.server.crashes == 0)
        lat = self.collect_healthy()
        p99 = percentile(lat, 0.99)
        part.add("healthy hook delivery p99 during attacks",
                 f"{p99 * 1000:.0f} ms ({len(lat)}/{self.healthy_sent} delivered)" if p99 is not None
                 else "no deliveries", "< 1000 ms", p99 is not None and p99 < 1.0)
        sp99 = percentile(self.status_latency, 0.99)
        part.add("GET /status p99 during attacks",
                 f"{sp99 * 1000:.0f} ms" if sp99 is not None else "no answers", "< 1000 ms",
                 sp99 is not None and sp99 < 1.0)
        part.notes = [f"FAIL {n} [{m}]: {d}" for (n, m, ok, d) in rows if not ok]
        part.seconds = time.monotonic() - started
        return part


def run(args, workdir, binary):
    return Catalogue(args, workdir, binary).run()

"""Part 4, the SSRF catalogue (tests/fixtures/ssrf.json), inside a network namespace of its own
(run.py starts this part under `unshare -n -m`): only `lo`, with every catalogue address added to
it, raw TCP listeners on 0.0.0.0 and [::] at every port of the catalogue that count connections
(so a connection to any of those addresses lands in one), and a hosts file bind-mounted over
/etc/hosts naming them.

A server with `--ssrf-guard true` gets one webhook hook per catalogue URL; each is created (its
create ping goes through the queue), then `/test` and `/ping` run. Target: 0 connections.
Redirects: a second server with the guard off targets listener A, which answers 301/302/303/307/308
to listener B; B must see 0 connections (A must see some, or the check proves nothing).
"""

import json
import os
import subprocess
import time
from urllib.parse import urlsplit

from common import REPO, ConnectionCounter, PartResult, Receiver, Server, free_port

# The catalogue itself (with shared/src/outbound/http.rs and tests/integration/delivery_http.rs).
with open(os.path.join(REPO, "tests", "fixtures", "ssrf.json")) as _f:
    _SSRF = json.load(_f)
CATALOGUE = [entry["url"] for entry in _SSRF["urls"]]
V4 = _SSRF["namespace"]["loopback_v4"]
V6 = _SSRF["namespace"]["loopback_v6"]
HOSTS = "".join(f"{h['address']} {h['name']}\n" for h in _SSRF["namespace"]["hosts"])
CONTROL = _SSRF["control"]
# A listener on every port of the catalogue, so a connection to any of its URLs lands in one.
PORTS = sorted({urlsplit(u).port or (443 if u.startswith("https:") else 80) for u in CATALOGUE})


def sh(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True)


def setup_namespace(workdir):
    """Only valid inside the namespace: loopback up, catalogue addresses on it, hosts file."""
    problems = []
    for cmd in [["ip", "link", "set", "lo", "up"]] + \
               [["ip", "addr", "add", f"{a}/32", "dev", "lo"] for a in V4 if a not in
                ("127.0.0.2", "0.0.0.0")] + \
               [["ip", "-6", "addr", "add", f"{a}/128", "dev", "lo", "nodad"] for a in V6
                if not a.startswith("::ffff")]:
        r = sh(*cmd)
        if r.returncode != 0 and "File exists" not in r.stderr:
            problems.append(f"{' '.join(cmd)}: {r.stderr.strip()}")
    hosts = os.path.join(workdir, "hosts")
    with open(hosts, "w") as f:
        f.write(HOSTS)
    r = sh("mount", "--bind", hosts, "/etc/hosts")
    if r.returncode != 0:
        problems.append(f"mount --bind hosts: {r.stderr.strip()}")
    return problems


def guarded(workdir, binary, part):
    counters = [counter for port in PORTS
                for counter in (ConnectionCounter("0.0.0.0", port),
                                ConnectionCounter("::", port, v6only=True))]
    server = Server(binary, workdir, "ssrf-guarded",
                    extra_args=["--retry-schedule", "none", "--connect-timeout", "1",
                                "--request-timeout", "2"],
                    # the environment variable works whether the flag is a switch or takes a value
                    extra_env={"EVENT_HOOKS_SSRF_GUARD": "true"})
    server.start()
    rows = []
    try:
        for url in CATALOGUE:
            before = sum(len(c.connections) for c in counters)
            r = server.request("POST", "/event-hooks", {
                "source": "crud", "event": "consumers", "handler": "webhook",
                "config": {"url": url}})
            outcome = [f"create {r.status}"]
            if r.status == 201:
                hook_id = r.json()["id"]
                for method, path in [("POST", f"/event-hooks/{hook_id}/test"),
                                     ("GET", f"/event-hooks/{hook_id}/ping")]:
                    try:
                        t = server.request(method, path, {"a": 1} if method == "POST" else None,
                                           timeout=10)
                        outcome.append(f"{path.rsplit('/', 1)[1]} {t.status}")
                    except OSError as err:
                        outcome.append(f"{path.rsplit('/', 1)[1]} no answer ({err})")
                        server.ensure_up()
                # a real delivery too
                try:
                    server.request("POST", "/events", {"source": "crud", "event": "consumers",
                                                       "data": {"operation": "create"}})
                except OSError:
                    pass
                time.sleep(0.15)
                try:
                    server.request("DELETE", f"/event-hooks/{hook_id}")
                except OSError:
                    pass
            time.sleep(0.05)
            reached = sum(len(c.connections) for c in counters) - before
            rows.append((url, reached, ", ".join(outcome)))
            print(f"  ssrf: {'ok  ' if reached == 0 else 'FAIL'} {url}: {', '.join(outcome)}; "
                  f"connections {reached}", flush=True)
        time.sleep(1.0)  # late create pings
        total = sum(len(c.connections) for c in counters)
        up = server.up()
    finally:
        server.stop()
        for c in counters:
            c.close()
    part.add(f"connections reaching a listener ({len(CATALOGUE)} URLs, guard on)",
             total, "0", total == 0)
    part.add("guarded server up after", "up" if up else "DOWN", "up", up)
    part.notes += [f"reached: {u} ({o})" for (u, n, o) in rows if n]


def redirects(workdir, binary, part):
    b = ConnectionCounter("127.0.0.1", free_port())
    b_url = f"http://{b.address}/landed"

    def answer(request):
        code = int(request.path.strip("/").split("/")[0] or 302)
        return code, {"location": b_url}, b""

    a = Receiver(answer=answer)
    server = Server(binary, workdir, "ssrf-redirect",
                    extra_args=["--retry-schedule", "none", "--connect-timeout", "1",
                                "--request-timeout", "2"])
    server.start()
    try:
        for code in [301, 302, 303, 307, 308]:
            url = f"http://127.0.0.1:{a.port}/{code}"
            for handler, config in [("webhook", {"url": url}),
                                    ("webhook-custom", {"url": url, "method": "POST",
                                                        "body": "x", "body_format": False})]:
                r = server.request("POST", "/event-hooks", {"source": "crud", "event": "consumers",
                                                            "handler": handler, "config": config})
                if r.status != 201:
                    part.notes.append(f"redirect hook {handler} {code} not created: {r.status}")
                    continue
                hook_id = r.json()["id"]
                server.request("POST", f"/event-hooks/{hook_id}/test", {"a": 1}, timeout=10)
                server.request("GET", f"/event-hooks/{hook_id}/ping", timeout=10)
                server.request("POST", "/events", {"source": "crud", "event": "consumers",
                                                   "data": {"operation": "create"}})
                time.sleep(0.5)
                server.request("DELETE", f"/event-hooks/{hook_id}")
        time.sleep(1.0)
    finally:
        server.stop()
        a.close()
        b.close()
    part.add("redirects: requests to A (must be > 0)", a.count(), "> 0", a.count() > 0)
    part.add("redirects followed to B (301/302/303/307/308)", len(b.connections), "0",
             len(b.connections) == 0)


def control(workdir, binary, part):
    """The same listeners with the guard off must see connections, or a 0 above proves nothing."""
    counters = [ConnectionCounter("0.0.0.0", 80), ConnectionCounter("::", 80, v6only=True)]
    server = Server(binary, workdir, "ssrf-control",
                    extra_args=["--retry-schedule", "none", "--connect-timeout", "1",
                                "--request-timeout", "2"])
    server.start()
    reached = 0
    try:
        for url in CONTROL:
            before = sum(len(c.connections) for c in counters)
            r = server.request("POST", "/event-hooks", {"source": "crud", "event": "consumers",
                                                        "handler": "log"})
            r = server.request("PUT", f"/event-hooks/{r.json()['id']}", {
                "source": "crud", "event": "consumers", "handler": "webhook",
                "config": {"url": url}}) if r.status == 201 else r
            if r.status in (200, 201):
                server.request("POST", f"/event-hooks/{r.json()['id']}/test", {"a": 1}, timeout=10)
            time.sleep(0.2)
            if sum(len(c.connections) for c in counters) > before:
                reached += 1
            else:
                part.notes.append(f"control: {url} did not reach a listener with the guard off")
    finally:
        server.stop()
        for c in counters:
            c.close()
    part.add("control, guard off: URLs reaching a listener", f"{reached} of {len(CONTROL)}",
             f"{len(CONTROL)}", reached == len(CONTROL))


def run(args, workdir, binary):
    part = PartResult("ssrf")
    started = time.monotonic()
    if os.environ.get("RELIABILITY_IN_NETNS") != "1":
        part.add("skipped", "not inside a network namespace", "-", None)
        return part
    problems = setup_namespace(workdir)
    if problems:
        part.notes += problems
    control(workdir, binary, part)
    guarded(workdir, binary, part)
    redirects(workdir, binary, part)
    part.seconds = time.monotonic() - started
    return part

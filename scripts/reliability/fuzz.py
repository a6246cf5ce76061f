"""Part 3, admin fuzz: schemathesis against `/openapi.json`, then a corpus of malformed bodies
(deep, wide, huge, invalid UTF-8, wrong types for every field, deep dotted form keys, multipart
junk). Figures: requests sent, responses >= 500 other than the documented 502s of test/ping,
the server still up, every stored hook still readable and accepted again by PUT.

It runs inside a network namespace with only loopback (run.py starts it under `unshare -n`): the
generated hooks carry arbitrary URLs, and their create pings must not leave the machine.
"""

import json
import os
import re
import socket
import subprocess
import time

from common import PartResult, Server

VENV_BIN = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".venv", "bin"))
DOCUMENTED_502 = re.compile(r"^/event-hooks/[^/]+/(test|ping)$")


def server_errors(method, path, status):
    return status >= 500 and not (status == 502 and DOCUMENTED_502.match(path))


def schemathesis(server, workdir, target, max_seconds, round_seconds, part):
    exe = os.path.join(VENV_BIN, "schemathesis")
    if not os.path.exists(exe):
        part.notes.append("schemathesis not installed (.venv): run make venv")
        return 0, 0, []
    sent, bad, examples = 0, 0, []
    seed = 1
    deadline = time.monotonic() + max_seconds
    base = f"http://127.0.0.1:{server.port}"
    while sent < target and time.monotonic() < deadline - 5:
        har = os.path.join(workdir, f"fuzz-{seed}.har")
        # --max-time makes the fuzzing and stateful phases repeat until it is spent: the time
        # bound sets the count; more seeds run only when a round fell short of the target.
        remaining = max(10, int(min(round_seconds, deadline - time.monotonic())))
        per_op = max(20, min(1000, (target - sent) // 15))
        cmd = [exe, "run", f"{base}/openapi.json", "--checks", "not_a_server_error",
               "--max-examples", str(per_op), "--seed", str(seed), "--no-shrink",
               "--workers", "4", "--request-timeout", "20", "--max-time", str(remaining),
               "--suppress-health-check", "all", "--warnings", "off",
               "--generation-database", "none",
               "--report", "har", "--report-har-path", har]
        with open(os.path.join(workdir, f"fuzz-{seed}.out"), "wb") as out:
            try:
                subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=remaining + 60,
                               cwd=workdir,
                               env=dict(os.environ, SCHEMATHESIS_HOOKS="", NO_COLOR="1"))
            except subprocess.TimeoutExpired:
                part.notes.append(f"schemathesis seed {seed} overran its time")
        try:
            with open(har) as f:
                entries = json.load(f)["log"]["entries"]
        except (OSError, ValueError, KeyError):
            entries = []
            part.notes.append(f"schemathesis seed {seed}: no HAR report (see {workdir})")
        for entry in entries:
            sent += 1
            status = entry.get("response", {}).get("status", 0)
            url = entry.get("request", {}).get("url", "")
            path = re.sub(r"^https?://[^/]+", "", url).split("?")[0]
            method = entry.get("request", {}).get("method", "")
            if server_errors(method, path, status) or status == 0:
                bad += 1
                if len(examples) < 5:
                    examples.append(f"{method} {path} -> {status or 'no answer'}")
        print(f"  fuzz: schemathesis seed {seed}: {len(entries)} requests "
              f"(total {sent}, 5xx {bad})", flush=True)
        if not entries:
            break
        seed += 1
        if not server.up():
            bad += 1
            examples.append("server down after schemathesis")
            server.ensure_up(fresh=False)
    return sent, bad, examples


def corpus(hook_ids):
    """(method, path, body bytes, content-type) of the malformed-body corpus."""
    j, form, mp = "application/json", "application/x-www-form-urlencoded", "multipart/form-data"
    hook = hook_ids[0]
    writes = [("POST", "/event-hooks"), ("PUT", f"/event-hooks/{hook}"),
              ("PATCH", f"/event-hooks/{hook}"), ("POST", f"/event-hooks/{hook}/test"),
              ("POST", "/events"), ("PUT", "/event-hooks/sources/fuzz/thing")]
    bodies = []
    deep_obj = '{"a":' * 10000 + "1" + "}" * 10000
    deep_arr = "[" * 10000 + "]" * 10000
    wide = "{" + ",".join(f'"k{i}":{i}' for i in range(100000)) + "}"
    huge = "x" * (5 * 1024 * 1024)
    for shape in [
        '{"source":"crud","handler":"log","config":%s}' % deep_obj,
        '{"source":"crud","event":"consumers","data":%s}' % deep_obj,
        '{"source":"crud","handler":"log","tags":%s}' % deep_arr,
        deep_arr,
        wide,
        '{"source":"crud","event":"consumers","data":%s}' % wide,
        '{"source":"crud","handler":"webhook","config":{"url":"http://127.0.0.1/","headers":%s}}'
        % wide,
        '{"source":"crud","handler":"log","name":"%s"}' % huge,
        '{"source":"crud","event":"consumers","data":{"x":"%s"}}' % huge,
        '{"source":"crud","handler":"lambda","config":{"functions":["%s"]}}' % huge,
        '{"source":"crud","handler":"webhook-custom","config":{"url":"http://127.0.0.1/",'
        '"method":"POST","body":"{{%s}}"}}' % huge,
        '{"source": 1e999999, "handler": "log"}',
        '{"source":"crud","handler":"log","snooze":1e308}',
        '{"source":"crud","handler":"log","snooze":-9223372036854775809}',
        '{"source":"crud","handler":"log","snooze":18446744073709551616}',
        '{"source":"crud","handler":"log"',
        "",
        "null", "[]", '"x"', "1",
    ]:
        for method, path in writes:
            bodies.append((method, path, shape.encode(), j))
    for raw in [b'{"source":"\xff\xfe","handler":"log"}', b'{"source":"crud","handler":"log",'
                b'"name":"\xc3\x28"}', b'{"source":"crud","event":"consumers","data":{"\xed\xa0\x80":1}}',
                b"\xef\xbb\xbf{}", b'{"source":"crud\x00","handler":"log"}']:
        for method, path in writes:
            bodies.append((method, path, raw, j))
    for raw in [b"source=\xff&handler=log", b"source=crud&handler=log&name=%ff%fe",
                b"source=crud&handler=log&tags[99999999999]=x", b"source=crud&handler=log&tags[4294967296]=x",
                b"source=crud&handler=log&tags[]=a&tags[0][1][2]=b", b"source=crud&handler=log&config..=1",
                b"source=crud&handler=log&.=1&..=2&...=3", b"&&&&=&=&==",
                b"source=crud&handler=log&" + b"&".join(b"k%d=1" % i for i in range(100000)),
                ("source=crud&handler=log&" + "a" + ".a" * 10000 + "=1").encode(),
                ("source=crud&event=consumers&data" + ".a" * 10000 + "=1").encode(),
                ("source=crud&handler=log&" + "config" + "[a]" * 10000 + "=1").encode(),
                ("source=crud&handler=log&tags" + "[]" * 10000 + "=1").encode(),
                b"source=crud&handler=log&name=" + huge.encode()]:
        for method, path in writes:
            bodies.append((method, path, raw, form))
    boundary = "XyZ"
    good_part = (f"--{boundary}\r\ncontent-disposition: form-data; name=\"source\"\r\n\r\ncrud\r\n")
    for raw, ctype in [
        (b"junk", f"{mp}; boundary={boundary}"),
        (good_part.encode(), f"{mp}; boundary={boundary}"),  # unterminated
        (good_part.encode() + f"--{boundary}--\r\n".encode(), mp),  # no boundary parameter
        ((good_part * 20000 + f"--{boundary}--\r\n").encode(), f"{mp}; boundary={boundary}"),
        ((f"--{boundary}\r\ncontent-disposition: form-data; name=\"" + "a." * 5000 +
          f"a\"\r\n\r\n1\r\n--{boundary}--\r\n").encode(), f"{mp}; boundary={boundary}"),
        ((f"--{boundary}\r\ncontent-disposition: form-data; name=\"config.functions\"; "
          f"filename=\"\xff.lua\"\r\n\r\n").encode("latin-1") + b"\xff\xfe" * 1000 +
         f"\r\n--{boundary}--\r\n".encode(), f"{mp}; boundary={boundary}"),
        ((f"--{boundary}\r\n" + "x-junk: y\r\n" * 10000 + "\r\n\r\n" + f"--{boundary}--\r\n"
          ).encode(), f"{mp}; boundary={boundary}"),
        (b"--" + b"a" * 100000 + b"\r\n\r\n", f"{mp}; boundary={'a' * 100000}"),
    ]:
        for method, path in writes:
            bodies.append((method, path, raw, ctype))
    # wrong types for every field, alone, on an otherwise valid hook of each handler
    junk = [1, -1, 1.5, 1e308, "x", "", True, None, [], {}, [[[[]]]], {"a": {"b": {}}}, "9" * 400,
            ["x"] * 3]
    valid = {
        "webhook": {"url": "http://127.0.0.1:9/h", "headers": {"a": "b"}, "secret": "s",
                    "ssl_verify": False},
        "webhook-custom": {"url": "http://127.0.0.1:9/h", "method": "POST",
                           "payload": {"a": "{{ x }}"}, "payload_format": True, "body": "x",
                           "body_format": True, "headers": {"a": "b"}, "headers_format": False,
                           "secret": "s", "ssl_verify": False},
        "log": {},
        "lambda": {"functions": ["return function(d) return d end"]},
    }
    for handler, config in valid.items():
        base = {"source": "crud", "event": "consumers", "handler": handler, "config": config,
                "snooze": 1, "on_change": True, "enabled": True, "name": None, "tags": ["t"]}
        for field in list(base) + ["id", "created_at", "updated_at"]:
            for value in junk:
                body = dict(base)
                body[field] = value
                bodies.append(("POST", "/event-hooks", json.dumps(body).encode(), j))
        for field in config:
            for value in junk:
                body = dict(base, config=dict(config))
                body["config"][field] = value
                bodies.append(("POST", "/event-hooks", json.dumps(body).encode(), j))
                bodies.append(("PATCH", f"/event-hooks/{hook}",
                               json.dumps({"config": {field: value}}).encode(), j))
    for field in ["source", "event", "data", "id", "timestamp"]:
        for value in junk:
            body = {"source": "crud", "event": "consumers", "data": {"operation": "create"}}
            body[field] = value
            bodies.append(("POST", "/events", json.dumps(body).encode(), j))
    for field in ["fields", "unique", "description"]:
        for value in junk:
            body = {"fields": ["a"], "unique": ["a"], "description": "d"}
            body[field] = value
            bodies.append(("PUT", "/event-hooks/sources/fuzz/thing", json.dumps(body).encode(), j))
    for ctype in ["text/plain", "application/json; charset=utf-16", "application/xml", "",
                  "application/x-www-form-urlencoded; charset=\xff".encode("latin-1").decode("latin-1"),
                  "multipart/form-data; boundary=", "*/*"]:
        bodies.append(("POST", "/event-hooks", b'{"source":"crud","handler":"log"}', ctype))
    for query in ["?size=99999999999999999999", "?size=-1", "?size=0x10", "?offset=" + "A" * 10000,
                  "?offset=%ff%fe", "?tags=" + "a," * 10000, "?source=%00", "?size=1&size=2"]:
        bodies.append(("GET", "/event-hooks" + query, None, None))
        bodies.append(("GET", f"/event-hooks/{hook}/deliveries" + query, None, None))
    for path in ["/event-hooks/" + "a" * 10000, "/event-hooks/%ff", "/event-hooks/sources/" +
                 "%2e%2e/" * 100, "/event-hooks/00000000-0000-0000-0000-000000000000/test",
                 f"/event-hooks/{hook}/deliveries/not-a-uuid/retry", "/" + "a/" * 5000]:
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"]:
            bodies.append((method, path, b"{}", j))
    return bodies


def raw_send(server, method, path, body, ctype, timeout=20.0):
    """One request over a raw socket, so that a server which answers early and closes (a 413 on a
    body it would not read) still shows its status; returns the status, or None."""
    head = f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{server.port}\r\nconnection: close\r\n"
    if ctype:
        head += f"content-type: {ctype}\r\n"
    if body is not None:
        head += f"content-length: {len(body)}\r\n"
    data = (head + "\r\n").encode("latin-1") + (body or b"")
    try:
        sock = socket.create_connection(server.base, timeout=timeout)
    except OSError:
        return None
    with sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # closed or reset while sending: whatever it answered before is still readable
        buf = b""
        try:
            while b"\r\n" not in buf:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except OSError:
            pass
    match = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
    return int(match.group(1)) if match else None


def send_corpus(server, part):
    created = []
    for body in [{"source": "crud", "event": "consumers", "handler": "log"},
                 {"source": "crud", "event": "consumers", "handler": "webhook",
                  "config": {"url": "http://127.0.0.1:9/h", "secret": "s"}},
                 {"source": "crud", "event": "consumers", "handler": "lambda",
                  "config": {"functions": ["return function(d) return d end"]}}]:
        r = server.request("POST", "/event-hooks", body)
        if r.status == 201:
            created.append(r.json()["id"])
    if not created:
        part.notes.append("corpus: could not create its seed hooks")
        return 0, 1, 0, ["seed hooks not created"]
    sent, bad, closed, examples = 0, 0, 0, []
    for method, path, body, ctype in corpus(created):
        sent += 1
        status = raw_send(server, method, path, body, ctype)
        what = f"{method} {path[:50]} [{ctype}] {len(body or b'')} B"
        if status is not None and server_errors(method, path, status):
            bad += 1
            if len(examples) < 10:
                examples.append(f"{what} -> {status}")
        elif status is None:
            if server.ensure_up(fresh=False):
                bad += 1
                if len(examples) < 10:
                    examples.append(f"{what} -> crash (restarted)")
            else:
                closed += 1  # closed without a status line, server fine (early close on a big body)
    print(f"  fuzz: corpus: {sent} requests, 5xx or crash {bad}, closed without status {closed}",
          flush=True)
    return sent, bad, closed, examples


def hooks_still_valid(server):
    """GET every stored hook and PUT it back as read; returns (hooks, invalid, examples)."""
    ids, offset, examples = [], None, []
    for _ in range(1000):
        path = "/event-hooks?size=1000" + (f"&offset={offset}" if offset else "")
        r = server.request("GET", path, timeout=20.0)
        if r.status != 200:
            return len(ids), 1, [f"list answered {r.status}"]
        page = r.json()
        ids += [h["id"] for h in page.get("data", [])]
        offset = page.get("offset")
        if not offset:
            break
    invalid = 0
    for hook_id in ids:
        r = server.request("GET", f"/event-hooks/{hook_id}", timeout=10.0)
        if r.status != 200 or not isinstance(r.json(), dict):
            invalid += 1
            examples.append(f"GET {hook_id} -> {r.status}")
            continue
        hook = r.json()
        for key in ["id", "created_at", "updated_at", "version"]:
            hook.pop(key, None)
        p = server.request("PUT", f"/event-hooks/{hook_id}", hook, timeout=10.0)
        if p.status != 200:
            invalid += 1
            if len(examples) < 5:
                examples.append(f"PUT {hook_id} as read -> {p.status} {p.body[:160]!r}")
    return len(ids), invalid, examples


def run(args, workdir, binary):
    part = PartResult("fuzz")
    started = time.monotonic()
    server = Server(binary, workdir, "fuzz", extra_args=["--retry-schedule", "none",
                                                        "--connect-timeout", "1",
                                                        "--request-timeout", "2"])
    server.start()
    target = args.fuzz_requests if args.fuzz_requests else (600 if args.quick else 5000)
    max_seconds = 90 if args.quick else 600
    round_seconds = 15 if args.quick else 90
    try:
        st_sent, st_bad, st_examples = schemathesis(server, workdir, target, max_seconds,
                                                    round_seconds, part)
        corpus_sent, corpus_bad, corpus_closed, corpus_examples = send_corpus(server, part)
        up = server.up(timeout=10)
        restarts = server.crashes
        if up:
            hooks, invalid, hook_examples = hooks_still_valid(server)
        else:
            hooks, invalid, hook_examples = 0, 1, ["server down"]
    finally:
        server.stop()
    part.add("schemathesis requests", st_sent, f">= {target}", st_sent >= target)
    part.add("schemathesis 5xx (not documented 502)", st_bad, "0", st_bad == 0)
    part.add("malformed corpus requests", corpus_sent, "-", None)
    part.add("malformed corpus 5xx or crash", corpus_bad, "0", corpus_bad == 0)
    part.add("malformed corpus: closed without a status (info)", corpus_closed, "-", None)
    part.add("server up after, restarts needed", f"{'up' if up else 'DOWN'}, {restarts}",
             "up, 0", up and restarts == 0)
    part.add("stored hooks invalid when read back / re-PUT", f"{invalid} of {hooks}", "0",
             invalid == 0)
    part.notes += st_examples + corpus_examples + hook_examples
    part.seconds = time.monotonic() - started
    return part

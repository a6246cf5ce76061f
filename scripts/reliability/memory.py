"""Part 5, memory: RSS (VmRSS of /proc/PID/status) of the server after N create/test/delete
cycles of lambda hooks that each hold ~6 MB once compiled (the source is tiny, the state is not),
measured against the RSS after a warm-up of 50 cycles. Target: growth <= 20 MB. The part stops
early once growth passes 400 MB (the verdict is known by then, and the machine is shared).
"""

import time

from common import PartResult, Server

WARMUP = 50
TARGET_MB = 20
ABORT_MB = 400
SOURCE = ("local big = string.rep('x', 6 * 1024 * 1024) "
          "return function(d) return #big end")


def cycle(server, n):
    r = server.request("POST", "/event-hooks", {
        "source": "crud", "event": "consumers", "handler": "lambda",
        "config": {"functions": [SOURCE + f" -- {n}"]}}, timeout=20)
    if r.status != 201:
        return f"create {r.status} {r.body[:120]!r}"
    hook_id = r.json()["id"]
    t = server.request("POST", f"/event-hooks/{hook_id}/test", {"a": 1}, timeout=20)
    server.request("DELETE", f"/event-hooks/{hook_id}", timeout=20)
    if t.status != 200:
        return f"test {t.status} {t.body[:120]!r}"
    return None


def run(args, workdir, binary):
    part = PartResult("memory")
    started = time.monotonic()
    cycles = args.memory_cycles if args.memory_cycles else (200 if args.quick else 1000)
    server = Server(binary, workdir, "memory")
    server.start()
    errors, first_error, done = 0, None, 0
    base = server.rss_kib()
    warm = None
    try:
        for n in range(WARMUP + cycles):
            try:
                err = cycle(server, n)
            except OSError as e:
                err = f"no answer ({e})"
                if not server.alive():
                    part.notes.append(f"server died at cycle {n}")
                    break
            if err:
                errors += 1
                first_error = first_error or err
            if n == WARMUP - 1:
                warm = server.rss_kib()
            done = n + 1
            if warm is not None and n % 10 == 0:
                grown = (server.rss_kib() - warm) / 1024
                if grown > ABORT_MB:
                    part.notes.append(f"stopped after {n + 1 - WARMUP} cycles: grew {grown:.0f} MB")
                    break
        end = server.rss_kib() if server.alive() else None
    finally:
        server.stop()
    measured = max(0, done - WARMUP)
    growth = (end - warm) / 1024 if end is not None and warm is not None else None
    part.add("cycles after warm-up (create/test/delete, 6 MB each)", measured, f"{cycles}",
             measured == cycles)
    part.add("RSS idle / after warm-up / at end",
             f"{base / 1024:.0f} / {(warm or 0) / 1024:.0f} / {(end or 0) / 1024:.0f} MB", "-", None)
    part.add("RSS growth after warm-up", f"{growth:.1f} MB" if growth is not None else "n/a",
             f"<= {TARGET_MB} MB", growth is not None and growth <= TARGET_MB)
    part.add("cycles with an error", errors, "0", errors == 0)
    if first_error:
        part.notes.append(f"first error: {first_error}")
    part.seconds = time.monotonic() - started
    return part

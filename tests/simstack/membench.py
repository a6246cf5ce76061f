"""What a function's memory setting buys on Lambda: the dispatch function's release bootstrap under
the SAM CLI's emulator, on the stack `template.yaml` declares (in moto), with the CPU share Lambda
gives each memory size enforced by a CPU quota (cgroup v1 `cpu.cfs_quota_us`: Lambda allots CPU in
proportion to memory, one full vCPU at 1,769 MB).

For each size, a fresh execution environment: its cold start (INIT), then warm invocations of
  - a reference webhook: a batch of one event, delivered to a receiver on 127.0.0.1 (the delivery,
    its signature and its log record in DynamoDB);
  - a reference Lua chain: a batch of one event through a `lambda` hook of two functions that
    build, filter and encode a 1,000-entry table (a realistic transformation, not a loop);
  - a batch of ten webhook events (the events queue's batch size);
  - a CPU-bound Lua function (about 20 ms of a full vCPU), to show what the Lua budget is,
with the emulator's `Duration` per invocation, and the cost per million invocations at us-east-1
x86_64 list prices. Also how much CPU the Lua budget (a 1 s deadline per delivery) is at each size.

    .venv/bin/python tests/simstack/membench.py [--runs N] [--sizes 256,512,1024]

Needs root (it creates a cgroup) and the release bootstraps (`make zips`). `make memory-bench` runs
it. The figures are an emulation: the quota gives a process the same CPU time per period as
Lambda's share, not the same CPU model."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from pytest_httpserver import HTTPServer

sys.path.insert(0, str(Path(__file__).parent))
import simstack  # noqa: E402
from simstack import Runtime, SimulatedStack, wait_for  # noqa: E402

CGROUP_ROOT = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000
# Lambda gives one full vCPU at 1,769 MB and CPU in proportion to memory below that.
FULL_VCPU_MB = 1769
PRICE_PER_GB_S = 0.0000166667  # x86_64, us-east-1, first tier
PRICE_PER_REQUEST = 0.20 / 1_000_000
# The Lua budget: one deadline per delivery (README, "User code").
LUA_BUDGET_S = 1.0

DURATION = re.compile(r"REPORT RequestId: \S+\s+(?:Init Duration: [0-9.]+ ms\s+)?Duration: ([0-9.]+) ms")

# Two functions of a `lambda` hook: the first builds a 1,000-entry table from the event, the second
# filters and encodes part of it. Roughly what a user's enrichment step does.
LUA_CHAIN = [
    """return function(event)
  local rows = {}
  for i = 1, 1000 do
    rows[i] = { id = i, name = "consumer-" .. i, tags = { "a" .. (i % 7), "b" .. (i % 11) },
                score = (i * 37) % 101 }
  end
  event.rows = rows
  return event
end""",
    """return function(event)
  local kept, names = {}, {}
  for _, row in ipairs(event.rows) do
    if row.score > 50 then
      kept[#kept + 1] = row
      names[#names + 1] = string.upper(row.name)
    end
  end
  event.rows = nil
  event.kept = #kept
  event.names = table.concat(names, ",")
  return event
end""",
]


# A CPU-bound function (about 20 ms of one full vCPU): what the Lua budget means at each size.
LUA_CPU_BOUND = [
    """return function(event)
  local x = 0
  for i = 1, 1500000 do x = (x * 31 + i) % 1000003 end
  event.x = x
  return event
end""",
]


class Sink:
    """A receiver on 127.0.0.1 (pytest-httpserver) answering 200 at once, counting deliveries."""

    def __init__(self):
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self.server.expect_request("/hook", method="POST").respond_with_data("ok")
        self.server.start()
        self.url = self.server.url_for("/hook")

    @property
    def count(self):
        return len(self.server.log)

    def stop(self):
        self.server.stop()


class CpuShare:
    """A cgroup whose processes get `memory_mb / 1769` of one CPU, as Lambda gives that size."""

    def __init__(self, memory_mb: int):
        self.path = CGROUP_ROOT / f"event-hooks-membench-{os.getpid()}-{memory_mb}"
        self.path.mkdir(exist_ok=True)
        quota = max(1000, round(PERIOD_US * memory_mb / FULL_VCPU_MB))
        (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        self.vcpu = quota / PERIOD_US

    def adopt(self, pid: int):
        """Moves `pid` and its descendants (the emulator and the bootstrap it runs) in."""
        for p in [pid, *descendants(pid)]:
            try:
                (self.path / "cgroup.procs").write_text(str(p))
            except OSError:
                pass  # exited meanwhile

    def throttled_ns(self) -> int:
        """How long the group's processes have waited for their CPU share so far."""
        stat = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        return int(stat["throttled_time"])

    def remove(self):
        try:
            for p in (self.path / "cgroup.procs").read_text().split():
                (CGROUP_ROOT / "cgroup.procs").write_text(p)
            self.path.rmdir()
        except OSError:
            pass


def descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            found.append(int(child))
            found.extend(descendants(int(child)))
    return found


def record(body: dict, queue_arn: str) -> dict:
    return {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": uuid.uuid4().hex,
        "body": json.dumps(body),
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": str(int(time.time() * 1000))},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": simstack.REGION,
    }


def event(source: str, name: str) -> dict:
    return {"source": source, "event": name,
            "data": {"operation": "create", "entity": {"id": str(uuid.uuid4()), "username": "bob"}}}


def admin(stack: SimulatedStack, method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(stack.gateway.url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json",
                                          "Kong-Admin-Token": stack.admin_token() or ""})
    with urllib.request.urlopen(req, timeout=30) as reply:
        return json.loads(reply.read() or b"{}")


def settle(stack: SimulatedStack):
    sqs = stack.sqs

    def quiet():
        for p in stack.pollers:
            attrs = sqs.get_queue_attributes(QueueUrl=p.url, AttributeNames=["All"])["Attributes"]
            if int(attrs["ApproximateNumberOfMessages"]) or int(attrs["ApproximateNumberOfMessagesNotVisible"]):
                return False
        return all(p.idle() for p in stack.pollers)

    wait_for(quiet, "the trigger queues to drain", 60)


def durations(runtime: Runtime) -> list[float]:
    return [float(d) for d in DURATION.findall(runtime.output())]


def cpu_ns(runtime: Runtime) -> int:
    """CPU time the bootstrap (every thread of the emulator's children) has used so far."""
    total = 0
    for pid in descendants(runtime.process.pid):
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


def measure(runtime: Runtime, share: CpuShare, batch: list[dict], runs: int) -> tuple[list[float], float, float]:
    """The emulator's Duration of each of `runs` invocations with `batch`, and the bootstrap's
    mean CPU time and mean wait for its CPU share per invocation (ms)."""
    before = len(durations(runtime))
    cpu_before, throttled_before = cpu_ns(runtime), share.throttled_ns()
    for _ in range(runs):
        status, reply, error = runtime.invoke({"Records": [dict(r, messageId=str(uuid.uuid4())) for r in batch]})
        doc = json.loads(reply)
        if status != 200 or error or doc.get("batchItemFailures"):
            raise AssertionError(f"invocation failed: {status} {error} {reply[:300]!r}")
    cpu_ms = (cpu_ns(runtime) - cpu_before) / runs / 1e6
    throttled_ms = (share.throttled_ns() - throttled_before) / runs / 1e6
    got = wait_for(lambda: len(durations(runtime)) >= before + runs and durations(runtime), "REPORT lines", 30)
    return got[before:before + runs], cpu_ms, throttled_ms


def cost_per_million(memory_mb: int, ms: float) -> float:
    """Lambda requests + GB-s for a million invocations of `ms` each (billed per started ms)."""
    billed_s = -(-ms // 1) / 1000
    return 1_000_000 * (PRICE_PER_REQUEST + billed_s * memory_mb / 1024 * PRICE_PER_GB_S)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--sizes", default="256,512,1024")
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or not CGROUP_ROOT.is_dir():
        print("membench needs root and cgroup v1's cpu controller at /sys/fs/cgroup/cpu", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]

    sink = Sink()
    stack = SimulatedStack({"AllowPrivateTargets": "true"})
    try:
        admin(stack, "POST", "/event-hooks", {"source": "crud", "event": "consumers", "handler": "webhook",
                                              "config": {"url": sink.url, "secret": "s3cret"}})
        admin(stack, "POST", "/event-hooks", {"source": "crud", "event": "services", "handler": "lambda",
                                              "config": {"functions": LUA_CHAIN}})
        admin(stack, "POST", "/event-hooks", {"source": "crud", "event": "routes", "handler": "lambda",
                                              "config": {"functions": LUA_CPU_BOUND}})
        settle(stack)
        fn = stack.stack.functions["DispatchFunction"]
        events_arn = next(m.queue_arn for m in stack.stack.mappings
                          if m.function == "DispatchFunction" and "EventsQueue" in m.queue_arn)
        webhook = [record(event("crud", "consumers"), events_arn)]
        lua = [record(event("crud", "services"), events_arn)]
        cpu_bound = [record(event("crud", "routes"), events_arn)]
        batch10 = webhook * 10

        rows = []
        for memory in sizes:
            share = CpuShare(memory)
            runtime = Runtime(fn, stack.moto.endpoint, {"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory)})
            try:
                share.adopt(runtime.process.pid)
                measure(runtime, share, webhook, 1)  # the cold start
                share.adopt(runtime.process.pid)
                init = runtime.init_durations()[0]
                result = {"memory": memory, "vcpu": share.vcpu, "init": init}
                for name, batch in (("webhook", webhook), ("lua", lua), ("batch10", batch10), ("cpu", cpu_bound)):
                    measure(runtime, share, batch, 3)  # warm-up
                    got, cpu_ms, throttled_ms = measure(runtime, share, batch, args.runs)
                    got.sort()
                    result[name] = (statistics.median(got), got[int(len(got) * 0.9) - 1], cpu_ms, throttled_ms)
                rows.append(result)
            finally:
                runtime.stop()
                share.remove()

        print(f"\ndispatch function, {args.runs} warm invocations each: the emulator's Duration, median / p90,"
              " [the bootstrap's CPU time / its wait for its CPU share, mean per invocation]\n")
        print("| memory | CPU share | cold start (INIT) | webhook, 1 event | Lua chain, 1 event | "
              "10 webhook events | CPU-bound Lua, 1 event | Lambda $ per million webhook deliveries (batches of 10) | Lua budget (1 s) as CPU time |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            per_delivery = cost_per_million(r["memory"], r["batch10"][0]) / 10
            cells = [f"{r[k][0]:.1f} / {r[k][1]:.1f} ms [{r[k][2]:.1f} / {r[k][3]:.1f} ms]" for k in ("webhook", "lua", "batch10", "cpu")]
            print(f"| {r['memory']} MB | {r['vcpu']:.2f} vCPU | {r['init']:.0f} ms | {' | '.join(cells)} | "
                  f"${per_delivery:.2f} | {LUA_BUDGET_S * min(1.0, r['vcpu']) * 1000:.0f} ms |")
        print(f"\n(delivered to the sink: {sink.count})")
    finally:
        stack.stop()
        sink.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

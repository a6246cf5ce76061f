"""Lambda's own faults for the simulated stack's emulator harness (`Runtime`, `Poller`).

* **kill**: the execution environment dies mid-invocation: the RIE and the bootstrap (one process
  group) get SIGKILL while the invocation has records in flight. The caller sees the invocation
  fail (a poller deletes nothing, so the batch comes back after the queue's visibility timeout)
  and the next invocation starts a cold environment, as Lambda does.
* **cut**: the invocation is cut at its timeout. `Runtime.invoke` always enforces the function's
  `Timeout` (the emulator's own enforcement is not relied on: past `Timeout` + 1 s the environment
  is killed and restarted cold, as Lambda does); the fault makes a given invocation reach its
  timeout at a random moment of its run (its remaining time is taken away), which the function sees
  exactly as a kill at its deadline.
* **redelivery** while the first receive is still running is not injected here: the chaos run
  shortens the trigger queues' `VisibilityTimeout` below a slow target's answer and runs two
  pollers (two execution environments) per trigger, so a message comes back to the other
  environment while the first is still working on it (see chaos.py).

Seeded and rate-based: `kill_per_records=500` kills on average once per 500 records invoked (each
invocation of `n` records is picked with probability n/500, at a random moment 10-250 ms in; when
it ends before that moment, the fault is owed to the next invocation, so the rate counts faults
that hit an invocation in flight); `cut_rate` is per invocation.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field


@dataclass
class Planned:
    kind: str  # "kill" or "cut"
    after: float  # seconds into the invocation


@dataclass
class LambdaFaults:
    seed: int
    kill_per_records: int = 500
    cut_rate: float = 0.0
    active: bool = True
    # Kills owed from the start: each goes to the next invocation until one is in flight when it
    # fires, so a small run that must see a kill does not depend on its draws.
    kills_owed: int = 0
    injected: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.rng = random.Random(f"lambda:{self.seed}")
        self.lock = threading.Lock()
        self.owed: list[str] = ["kill"] * self.kills_owed

    def plan(self, function: str, records: int) -> Planned | None:
        """The fault for an invocation of `function` with `records` records, if any."""
        if not self.active or records <= 0:
            return None
        with self.lock:
            r = self.rng.random()
            after = self.rng.uniform(0.01, 0.25)
            if self.owed:
                kind = self.owed.pop(0)
                return Planned(kind, after)
            kill = min(1.0, records / self.kill_per_records) if self.kill_per_records else 0.0
            if r < kill:
                return Planned("kill", after)
            if r < kill + self.cut_rate:
                return Planned("cut", after)
        return None

    def record(self, function: str, kind: str, records: int, after: float, hit: bool):
        """`hit`: the invocation was still running when the fault fired."""
        with self.lock:
            if not hit and self.active:
                self.owed.append(kind)  # the invocation ended first: the next one gets it
            self.injected.append({"function": function, "kind": kind, "records": records,
                                  "after": round(after, 2), "hit": hit})

    def counts(self) -> dict[str, int]:
        """Faults that hit an invocation in flight, by kind."""
        with self.lock:
            out: dict[str, int] = {}
            for f in self.injected:
                if f["hit"]:
                    out[f["kind"]] = out.get(f["kind"], 0) + 1
            return out

"""A small chaos run (chaos.py) in the simulated-stack suite: 60 events through SQS and
`POST /events` to 3 hooks, with throttling on DynamoDB, 5xx on SQS and Secrets Manager, hangs on
any call, SIGKILLs of the functions mid-batch and redeliveries while a receive still runs; then the
faults stop and the backlog must drain with nothing lost and no wrong snooze/on_change decision.
Duplicates that reuse an attempt number are printed here; `make chaos` fails on them.
`make chaos` is the full run (3 seeds, 1,500 events each).

Not in `make test` yet (`CHAOS=1` runs it): the runs of issue 20 still find wrong snooze/on_change
decisions under SIGKILLs now and then (4 in one 600-event seed), so in CI it would fail by chance
until they are fixed; it joins `make test` then."""

from __future__ import annotations

import os

import chaos
import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("CHAOS") != "1",
    reason="issue 20's open findings: run with CHAOS=1 (make chaos runs it)",
)

EVENTS = 60
SPEC = "DynamoDB:*:throttle:0.1,SQS:*:error:0.05,SecretsManager:*:error:0.05,*:*:hang:0.01:6"


def test_nothing_is_lost_under_aws_and_lambda_faults():
    # One SIGKILL per 60 records here (the full run: per 500), so that a small run kills at all.
    res = chaos.run(seed=7, events=EVENTS, spec=SPEC, kill_per_records=60, visibility=10,
                    drain_timeout=180)
    report = chaos.table([res])
    print(report)
    logs = "\n".join(f"--- {k} ---\n{t[-3000:]}" for k, t in res.logs.items())
    assert res.accepted == EVENTS, report
    assert not res.lost, f"{report}\n{logs}"
    assert not res.wrong, f"{report}\n{logs}"
    # Duplicates that reuse an attempt number are issue 20's open finding: `make chaos` fails on
    # them, this run only reports them (they come and go with timing, and would make CI flaky).
    assert res.drain_s is not None, report
    assert sum(res.aws_faults.values()) > 0, f"no AWS fault was injected: {report}"
    assert res.lambda_faults.get("kill"), f"no invocation was killed: {report}"

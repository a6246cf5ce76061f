"""Part 2, kill -9 during load: events from 32 client threads, the server SIGKILLed mid-way and
restarted on the same data directory, the rest sent after it.

Only events answered 202 count as accepted. A request whose answer was lost (connection reset,
timeout, non-202) is sent again and remembered as "maybe accepted": a second delivery id for that
sequence number is then the client's doing, not a violation. Figures: accepted events never
delivered (lost), repeated deliveries (duplicates), and duplicates that break the contract (a new
delivery id for one accepted event, or an `X-Event-Hook-Attempt` that does not grow).
"""

import http.client
import json
import os
import signal
import threading
import time
from collections import defaultdict

from common import PartResult, Receiver, Server, wait_until

CLIENTS = 32
SEND_DEADLINE_S = 120.0
# Messages received but not deleted at the kill come back after the 60 s visibility timeout, and a
# failed attempt waits for the first retry (5 s +20%): wait past both, for lost events and for the
# duplicates that come back late.
DRAIN_S = 100.0
VISIBILITY_S = 60.0
LATE_DUPLICATES_S = VISIBILITY_S + 8.0


class Clients:
    def __init__(self, server, run_no, total):
        self.server = server
        self.run_no = run_no
        self.total = total
        self.next = 0
        self.lock = threading.Lock()
        self.accepted = set()
        self.maybe = defaultdict(int)  # seq -> sends whose answer was lost
        self.errors = 0

    def take(self):
        with self.lock:
            if self.next >= self.total:
                return None
            self.next += 1
            return self.next

    def client(self):
        conn = None
        deadline = time.monotonic() + SEND_DEADLINE_S
        while True:
            seq = self.take()
            if seq is None:
                break
            body = json.dumps({"source": "crud", "event": "consumers",
                               "data": {"operation": "create",
                                        "entity": {"seq": seq, "run": self.run_no}}})
            while time.monotonic() < deadline:
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(*self.server.base, timeout=10)
                    conn.request("POST", "/events", body=body,
                                 headers={"content-type": "application/json"})
                    response = conn.getresponse()
                    response.read()
                    if response.status == 202:
                        with self.lock:
                            self.accepted.add(seq)
                        break
                    with self.lock:
                        self.maybe[seq] += 1
                        self.errors += 1
                except (OSError, http.client.HTTPException):
                    with self.lock:
                        self.maybe[seq] += 1
                        self.errors += 1
                    if conn is not None:
                        conn.close()
                    conn = None
                    time.sleep(0.05)
        if conn is not None:
            conn.close()


def one_run(run_no, total, workdir, binary):
    receiver = Receiver()
    server = Server(binary, workdir, f"killnine-{run_no}")
    server.start()
    r = server.request("POST", "/event-hooks", {"source": "crud", "event": "consumers",
                                                "handler": "webhook",
                                                "config": {"url": receiver.url}})
    if r.status != 201:
        raise RuntimeError(f"hook not created: {r.status} {r.body[:200]!r}")
    clients = Clients(server, run_no, total)
    threads = [threading.Thread(target=clients.client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    # Kill once half of the events were accepted (or after 60 s, whatever comes first).
    wait_until(lambda: len(clients.accepted) >= total // 2, 60, interval=0.005)
    accepted_at_kill = len(clients.accepted)
    os.kill(server.pid(), signal.SIGKILL)
    server.proc.wait(10)
    time.sleep(0.2)
    for _attempt in range(50):
        try:
            server.start(fresh=False)
            break
        except RuntimeError:
            time.sleep(0.2)
    restarted = time.monotonic()
    for t in threads:
        t.join(SEND_DEADLINE_S + 15)
    sent_done = time.monotonic()

    def seqs_received():
        got = set()
        for (_, _, _, _, body) in receiver.snapshot():
            try:
                entity = json.loads(body).get("entity") or {}
            except ValueError:
                continue
            if entity.get("run") == run_no and "seq" in entity:
                got.add(entity["seq"])
        return got

    wait_until(lambda: clients.accepted <= seqs_received(), DRAIN_S, interval=0.5)
    # Until messages in flight at the kill had their visibility run out, so late duplicates are
    # counted too.
    time.sleep(max(2.0, restarted + LATE_DUPLICATES_S - time.monotonic()))
    drained_after = time.monotonic() - sent_done
    server.stop()
    receiver.close()

    receipts = defaultdict(list)  # seq -> [(delivery id, attempt)]
    for (_, _, _, headers, body) in receiver.snapshot():
        try:
            entity = json.loads(body).get("entity") or {}
        except ValueError:
            continue
        if entity.get("run") != run_no or "seq" not in entity:
            continue
        receipts[entity["seq"]].append((headers.get("x-event-hook-delivery"),
                                        int(headers.get("x-event-hook-attempt") or 0)))
    lost = sorted(clients.accepted - set(receipts))
    duplicates = 0
    violations = 0
    examples = []
    for seq, got in receipts.items():
        by_id = defaultdict(list)
        for delivery_id, attempt in got:
            by_id[delivery_id].append(attempt)
        allowed_ids = (1 if seq in clients.accepted else 0) + clients.maybe.get(seq, 0)
        if len(by_id) > max(allowed_ids, 1):
            violations += len(by_id) - max(allowed_ids, 1)
            examples.append(f"seq {seq}: {len(by_id)} delivery ids")
        for attempts in by_id.values():
            duplicates += len(attempts) - 1
            for earlier, later in zip(attempts, attempts[1:], strict=False):
                if later <= earlier:
                    violations += 1
                    if len(examples) < 5:
                        examples.append(f"seq {seq}: attempts {attempts} for one delivery id")
                    break
    return {
        "accepted": len(clients.accepted), "accepted_at_kill": accepted_at_kill,
        "lost": len(lost), "duplicates": duplicates, "violations": violations,
        "maybe": sum(clients.maybe.values()), "drain_s": drained_after,
        "examples": examples[:5] + ([f"lost seqs {lost[:10]}"] if lost else []),
    }


def run(args, workdir, binary):
    part = PartResult("killnine")
    started = time.monotonic()
    runs = args.killnine_runs if args.killnine_runs else (1 if args.quick else 3)
    total = args.killnine_events if args.killnine_events else (1000 if args.quick else 3000)
    results = []
    for run_no in range(1, runs + 1):
        result = one_run(run_no, total, workdir, binary)
        results.append(result)
        print(f"  killnine: run {run_no}: {result}", flush=True)
    accepted = sum(r["accepted"] for r in results)
    lost = sum(r["lost"] for r in results)
    dups = sum(r["duplicates"] for r in results)
    violations = sum(r["violations"] for r in results)
    part.add(f"events accepted (202), {runs} runs of {total}", accepted, f"{runs * total}",
             accepted == runs * total)
    part.add("accepted events lost", lost, "0", lost == 0)
    part.add("duplicate deliveries (info)", dups, "-", None)
    part.add("duplicates with a new delivery id or no higher attempt", violations, "0",
             violations == 0)
    part.notes = [e for r in results for e in r["examples"]]
    part.seconds = time.monotonic() - started
    return part

"""Kong's documented flows through the stack `template.yaml` declares, created in moto and run by
the SAM CLI's Lambda Runtime Interface Emulator (see simstack.py): HTTP through the template's
routes, SQS through its event source mappings, deliveries to a scripted receiver on 127.0.0.1.

A drift between template and code (an environment variable, a route, a key schema, a queue) fails
here: the functions get exactly the environment the created stack gives them, and every request
goes through the declared routes to the declared tables and queues."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import select
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import NamedTuple

import pytest
import simstack
from simstack import SimulatedStack, wait_for

# Overrides of the template's parameters (only those the template declares are passed).
PARAMETERS = {
    # The receiver listens on 127.0.0.1, which the SSRF guard refuses by default.
    "AllowPrivateTargets": "true",
    # Retries in seconds rather than minutes: 3 attempts, then the dead-letter queue.
    "RetrySchedule": "1s,1s",
    "LogLevel": "info",
}

WAIT = 60.0  # upper bound on any wait for the pipeline; the waits return as soon as it is done


HANG = "hang"  # a scripted reply: no answer until the client gives up (or HANG_CAP_S)
HANG_CAP_S = 30.0
SLOW = "slow"  # a scripted reply: 200 after SLOW_S, whether the client still waits or not
SLOW_S = 8.0
TRICKLE = "trickle"  # a scripted reply: a status line, then a header byte every TRICKLE_EVERY_S
TRICKLE_EVERY_S = 2.0


class Receiver:
    """An HTTP target on 127.0.0.1: records every request; `script[path]` lists the statuses to
    answer in order (then 200), HANG or SLOW. `ended` lists (path, seconds held) of the hung
    requests the client gave up on and of the slow ones answered."""

    def __init__(self):
        self.requests: list[dict] = []
        self.script: dict[str, list] = {}
        self.ended: list[tuple[str, float]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(simstack.LoopbackHandler):
            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with receiver.lock:
                    receiver.requests.append({
                        "method": self.command, "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                    })
                    plan = receiver.script.get(self.path.split("?")[0], [])
                    status = plan.pop(0) if plan else 200
                if status == SLOW:
                    held = time.monotonic()
                    time.sleep(SLOW_S)
                    with receiver.lock:
                        receiver.ended.append((self.path, time.monotonic() - held))
                    status = 200
                if status == TRICKLE:
                    # Never done: each byte comes before the client's read timeout, so only its
                    # total timeout (at most 30 s an attempt) ends the exchange.
                    held = time.monotonic()
                    try:
                        self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Trickle: ")
                        self.wfile.flush()
                        while time.monotonic() - held < HANG_CAP_S:
                            readable, _, _ = select.select([self.connection], [], [], TRICKLE_EVERY_S)
                            if readable and not self.connection.recv(1, socket.MSG_PEEK):
                                break
                            self.wfile.write(b"a")
                            self.wfile.flush()
                    except OSError:
                        pass
                    with receiver.lock:
                        receiver.ended.append((self.path, time.monotonic() - held))
                    self.close_connection = True
                    return
                if status == HANG:
                    # Wait for the client to close the connection (its timeout), bounded.
                    held = time.monotonic()
                    select.select([self.connection], [], [], HANG_CAP_S)
                    with receiver.lock:
                        receiver.ended.append((self.path, time.monotonic() - held))
                    self.close_connection = True
                    return
                data = b"ok" if status < 300 else b"nope"
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def at(self, path: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"].split("?")[0] == path]

    def wait(self, path: str, count: int) -> list[dict]:
        return wait_for(lambda: len(self.at(path)) >= count and self.at(path), f"{count} requests at {path}", WAIT)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def sim():
    stack = SimulatedStack(PARAMETERS)
    yield stack
    failed = [p.errors for p in stack.pollers if p.errors]
    stack.stop()
    assert not failed, f"event source mapping errors: {failed}"


@pytest.fixture(scope="session")
def receiver():
    r = Receiver()
    yield r
    r.stop()


class Api:
    def __init__(self, sim: SimulatedStack):
        self.base, self.token = sim.gateway.url, sim.admin_token()

    def call(self, method: str, path: str, body=None, token: str | None = "default", headers=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        token = self.token if token == "default" else token
        if token:
            req.add_header("Kong-Admin-Token", token)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=60) as reply:
                status, raw = reply.status, reply.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")


@pytest.fixture(scope="session")
def api(sim):
    return Api(sim)


def settled(sim: SimulatedStack, delayed_too: bool = True):
    """Waits until the trigger queues are empty (nothing visible or in flight, nor delayed unless
    `delayed_too` is false) and no poller is invoking the function."""
    counted = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    if delayed_too:
        counted.append("ApproximateNumberOfMessagesDelayed")

    def quiet():
        for p in sim.pollers:
            attrs = sim.sqs.get_queue_attributes(QueueUrl=p.url, AttributeNames=counted)["Attributes"]
            if any(int(v) for v in attrs.values()) or not p.idle():
                return False
        return True
    wait_for(quiet, "the trigger queues to drain", WAIT, every=0.2)


def webhook(receiver: Receiver, path: str, source="crud", event="consumers", **extra):
    return {
        "source": source, "event": event, "handler": "webhook",
        "config": {"url": receiver.base + path, "secret": "s3cr3t", **extra.pop("config", {})},
        **extra,
    }


def create(api: Api, hook: dict) -> dict:
    status, body = api.call("POST", "/event-hooks", hook)
    assert status == 201, body
    return body


def delete(api: Api, hook: dict):
    assert api.call("DELETE", f"/event-hooks/{hook['id']}") == (204, None)


def emit(api: Api, data: dict, source="crud", event="consumers") -> str:
    status, body = api.call("POST", "/events", {"source": source, "event": event, "data": data})
    assert status == 202, body
    return body["id"] if isinstance(body, dict) and "id" in body else body


def dead_letters(sim: SimulatedStack, output: str, count: int, timeout: float = WAIT) -> list[dict]:
    url = sim.stack.outputs[output]
    got: list[dict] = []

    def enough():
        got.extend(sim.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                           MessageAttributeNames=["All"]).get("Messages", []))
        return len(got) >= count
    wait_for(enough, f"{count} messages on {output}", timeout)
    for m in got:
        sim.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return got


# --- the stack as declared ------------------------------------------------------------------------


def test_every_template_resource_is_created_or_named_as_left_out(sim):
    created = {r.split(" ")[0] for r in sim.stack.left_out + sim.stack.provisioned}
    cf = sim.moto.client("cloudformation")
    in_stack = {r["LogicalResourceId"] for r in cf.list_stack_resources(StackName=sim.stack.name)["StackResourceSummaries"]}
    for logical_id, res in sim.stack.template["Resources"].items():
        if "Condition" in res:
            continue
        assert logical_id in in_stack or logical_id in created, logical_id
    left_types = {r.split("(")[1].rstrip(")") for r in sim.stack.left_out}
    assert left_types <= simstack.LEFT_OUT, sim.stack.left_out
    assert set(sim.stack.functions) == set(simstack.functions_of(simstack.load_template())), sim.stack.functions


def test_left_out_resources_are_consistent_with_the_stack(sim):
    """What moto cannot create, checked statically: alarms watch resources of the stack and notify
    a topic of it; the HTTP API has a $default stage and routes only to functions of the stack."""
    resources = sim.stack.template["Resources"]
    for logical_id, res in resources.items():
        props = res.get("Properties", {})
        if res["Type"] == "AWS::CloudWatch::Alarm":
            text = json.dumps(props)
            refs = [r for r in resources if f'"{r}"' in text]
            assert refs, f"{logical_id} watches nothing of the stack: {text}"
            for action in props.get("AlarmActions", []):
                while isinstance(action, dict) and "Fn::If" in action:  # the branch the stack took
                    cond, yes, no = action["Fn::If"]
                    action = yes if simstack.condition(cond, sim.stack.template, sim.stack.parameters) else no
                target = action.get("Ref") if isinstance(action, dict) else None
                assert target in resources or target in sim.stack.template.get("Parameters", {}), (logical_id, action)
        if res["Type"] == "AWS::ApiGatewayV2::Stage":
            assert props.get("StageName") == "$default" and props.get("AutoDeploy"), props
            assert props["ApiId"].get("Ref") in resources, props
    assert sim.stack.routes, "the template declares no HTTP route"


def test_the_stack_is_secure_by_default():
    """Issue 9's problems, checked on the template as `sam deploy` would create it with no parameter
    given: the admin API closed (a generated secret, no plaintext token), limits, timeouts above
    the delivery timeout, log retention, access logs, alarms, kept dead letters, and the optional
    KMS key reaching every table and queue."""
    sam = simstack.load_template()
    cfn = simstack.translate(sam, {}, {k: "s3://bucket/key" for k in simstack.functions_of(sam)})
    res = cfn["Resources"]
    of_type = lambda t: {k: r for k, r in res.items() if r["Type"] == t}  # noqa: E731
    functions = of_type("AWS::Lambda::Function")
    env = {k: f["Properties"]["Environment"]["Variables"] for k, f in functions.items()}

    # 1. Fail closed: by default the stack generates the token into Secrets Manager.
    assert simstack.condition("CreateSecret", cfn, {}), "no admin token secret by default"
    for name in ("AdminFunction", "ProbeFunction"):
        assert "ADMIN_TOKEN" not in env[name], f"{name}: a token in a plaintext variable"
        assert '"AdminTokenSecret"' in json.dumps(env[name]["ADMIN_TOKEN_SECRET_ARN"]), env[name]
    assert "{{resolve" not in json.dumps(env), "a dynamic reference resolves into a plaintext variable"
    # 2. Limits: API throttling, trigger concurrency, bounded attempts in flight.
    stage = next(iter(of_type("AWS::ApiGatewayV2::Stage").values()))["Properties"]
    assert {"ThrottlingRateLimit", "ThrottlingBurstLimit"} <= set(stage["DefaultRouteSettings"]), stage
    for name, mapping in of_type("AWS::Lambda::EventSourceMapping").items():
        assert "MaximumConcurrency" in mapping["Properties"].get("ScalingConfig", {}), name
    assert "MAX_IN_FLIGHT_DELIVERIES" in env["DispatchFunction"]
    # 4. Time: each function that delivers outlives the longest delivery it may start.
    longest = sam["Parameters"]["RequestTimeoutSeconds"]["MaxValue"]
    assert functions["ProbeFunction"]["Properties"]["Timeout"] > longest
    assert functions["DispatchFunction"]["Properties"]["Timeout"] > longest + 5
    # 5. Logs kept for a while, not forever; access logs; alarms; data kept.
    for name, fn in functions.items():
        group = fn["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert "RetentionInDays" in res[group]["Properties"], (name, group)
    assert "RetentionInDays" in res[stage["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"][0]]["Properties"]
    alarms = json.dumps(of_type("AWS::CloudWatch::Alarm"))
    for metric in ("Errors", "Throttles", "ApproximateAgeOfOldestMessage", "5xx", "NumberOfMessagesSent"):
        assert f'"{metric}"' in alarms, f"no alarm on {metric}"
    queues = of_type("AWS::SQS::Queue")
    dead_letter_queues = {q["Properties"]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
                          for q in queues.values() if "RedrivePolicy" in q["Properties"]}
    assert dead_letter_queues
    for name in dead_letter_queues:
        # RetainExceptOnCreate: kept on delete, but not after a first create that rolled back.
        assert res[name].get("DeletionPolicy") == "RetainExceptOnCreate", name
        assert res[name].get("UpdateReplacePolicy") == "Retain", name
        assert f'"{name}"' in alarms, f"no alarm watches {name}"
    assert res["HooksTable"]["Properties"]["DeletionProtectionEnabled"] is True
    for name, r in {**of_type("AWS::DynamoDB::Table"), **queues}.items():
        assert '{"Ref": "KmsKeyArn"}' in json.dumps(r["Properties"]), f"{name} ignores KmsKeyArn"


def test_functions_get_the_stack_environment_and_limits(sim):
    for fn in sim.stack.functions.values():
        assert fn.environment, f"{fn.logical_id} has no environment"
        for name, value in fn.environment.items():
            # A reference to a resource the stack lacks resolves to nothing.
            assert value not in ("None", "null") and not value.startswith("arn:aws:sim:"), (fn.logical_id, name, value)
    assert sim.stack.mappings, "no event source mapping"
    for m in sim.stack.mappings:
        assert m.report_failures, f"{m.queue_arn}: without ReportBatchItemFailures a failure re-delivers the batch"
        attrs = sim.sqs.get_queue_attributes(QueueUrl=simstack.queue_url_of(sim.sqs, m.queue_arn),
                                             AttributeNames=["VisibilityTimeout", "RedrivePolicy"])["Attributes"]
        timeout = sim.stack.functions[m.function].timeout
        # AWS's advice, plus the batching window: a message gathered for a batch is received already.
        window = int(sim.stack.template["Parameters"]["DispatchBatchingWindowSeconds"]["MaxValue"])
        assert m.window <= window, (m.queue_arn, m.window)
        assert int(attrs["VisibilityTimeout"]) >= 6 * timeout + window, (m.queue_arn, attrs, timeout)
        assert "deadLetterTargetArn" in json.loads(attrs["RedrivePolicy"]), attrs


# --- HTTP through the declared routes ------------------------------------------------------------


def test_undeclared_routes_are_api_gateways_404(api):
    assert api.call("GET", "/nowhere") == (404, {"message": "Not Found"})
    assert api.call("GET", f"/event-hooks/{uuid.uuid4()}/test/more")[0] == 404
    assert api.call("GET", "/event-hooks")[0] == 200


def test_every_method_of_a_declared_route_reaches_its_function(api):
    # The routes are ANY: a method the route lacks gets its function's 405 (Kong's body), never
    # API Gateway's 404 nor the other function's answer.
    hook = uuid.uuid4()
    assert api.call("GET", f"/event-hooks/{hook}/test") == (405, {"message": "Method not allowed"})
    assert api.call("GET", "/event-hooks/preview") == (405, {"message": "Method not allowed"})
    # Routed to the admin function, whose handler does not know the hook (Kong's "Not found").
    status, body = api.call("POST", f"/event-hooks/{hook}/secret/rotate", {})
    assert (status, body) == (404, {"message": "Not found"}), (status, body)
    assert api.call("GET", "/event-hooks/stats")[0] == 200


def test_the_console_is_reached_from_the_root_through_the_declared_routes(api):
    # urllib follows the redirect of `GET /`, as a browser does; no token: the page holds no data.
    status, page = api.call("GET", "/", token=None)
    assert status == 200 and "<!doctype html>" in page.lower(), (status, page)
    status, script = api.call("GET", "/console/app.js", token=None)
    assert status == 200 and "import" in script, (status, script)


def test_the_admin_api_refuses_requests_without_the_token(api):
    assert api.token, "the stack runs without an admin token"
    status, body = api.call("GET", "/event-hooks", token=None)
    assert status == 401, body
    status, body = api.call("GET", "/event-hooks", token="wrong")
    assert status == 401, body
    status, body = api.call("GET", f"/event-hooks/{uuid.uuid4()}/ping", token=None)
    assert status == 401, body


# --- Kong's flows ---------------------------------------------------------------------------------


def test_a_webhook_gets_its_create_ping_then_signed_events(sim, api, receiver):
    hook = create(api, webhook(receiver, "/signed"))
    ping = json.loads(receiver.wait("/signed", 1)[0]["body"])
    assert (ping["source"], ping["event"], ping["operation"]) == ("kong:event_hooks", "ping", "create"), ping
    assert ping["event_hooks"]["id"] == hook["id"]
    assert ping["event_hooks"]["config"]["secret"] != "s3cr3t"

    emit(api, {"operation": "create", "entity": {"username": "bob"}, "old_entity": None})
    delivered = receiver.wait("/signed", 2)[1]
    body = json.loads(delivered["body"])
    assert (body["source"], body["event"], body["entity"]["username"]) == ("crud", "consumers", "bob"), body
    expected = "sha1=" + hmac.new(b"s3cr3t", delivered["body"], hashlib.sha1).hexdigest()
    assert delivered["headers"]["x-kong-signature"] == expected
    assert delivered["headers"]["x-event-hook-attempt"] == "1"
    delivery = delivered["headers"]["x-event-hook-delivery"]

    def logged():
        status, page = api.call("GET", f"/event-hooks/{hook['id']}/deliveries")
        assert status == 200, page
        return [d for d in page["data"] if d["id"] == delivery]
    record = wait_for(logged, "the delivery in the log", WAIT)[0]
    assert record["status"] == "delivered", record
    delete(api, hook)


def test_a_failing_target_is_retried_with_the_same_delivery_id(sim, api, receiver):
    hook = create(api, webhook(receiver, "/flaky", event="services"))
    receiver.wait("/flaky", 1)  # the create ping
    receiver.script["/flaky"] = [500]
    emit(api, {"operation": "update", "entity": {"name": "svc"}, "old_entity": None}, event="services")
    first, second = receiver.wait("/flaky", 3)[1:3]
    assert first["headers"]["x-event-hook-delivery"] == second["headers"]["x-event-hook-delivery"]
    assert (first["headers"]["x-event-hook-attempt"], second["headers"]["x-event-hook-attempt"]) == ("1", "2")
    delete(api, hook)


def test_a_delivery_out_of_retries_is_dead_lettered_with_its_reason(sim, api, receiver):
    hook = create(api, webhook(receiver, "/down", event="routes"))
    receiver.wait("/down", 1)
    receiver.script["/down"] = [503] * 3
    emit(api, {"operation": "create", "entity": {"name": "r"}, "old_entity": None}, event="routes")
    attempts = receiver.wait("/down", 4)[1:]
    assert [a["headers"]["x-event-hook-attempt"] for a in attempts] == ["1", "2", "3"]
    letter = dead_letters(sim, "DeliveriesDeadLetterQueueUrl", 1)[0]
    assert "reason" in letter.get("MessageAttributes", {}), letter
    assert hook["id"] in letter["Body"], letter["Body"]
    delete(api, hook)


def test_an_unregistered_event_is_refused_over_http_and_dead_lettered_over_sqs(sim, api):
    status, body = api.call("POST", "/events", {"source": "nope", "event": "x", "data": {}})
    assert status == 400 and "not registered" in body["message"], body
    sim.sqs.send_message(QueueUrl=sim.stack.outputs["EventsQueueUrl"],
                         MessageBody=json.dumps({"source": "nope", "event": "x", "data": {}}))
    letter = dead_letters(sim, "EventsDeadLetterQueueUrl", 1)[0]
    reason = letter["MessageAttributes"]["reason"]["StringValue"]
    assert "source 'nope' is not registered" in reason, reason


def test_on_change_and_snooze(sim, api, receiver):
    on_change = create(api, webhook(receiver, "/changes", event="plugins", on_change=True))
    snooze = create(api, webhook(receiver, "/snooze", event="plugins", snooze=3600))
    receiver.wait("/changes", 1)
    receiver.wait("/snooze", 1)
    for name in ["a", "a", "b", "b", "a"]:
        emit(api, {"operation": "update", "entity": {"name": name}, "old_entity": None}, event="plugins")
        settled(sim)
    changes = [json.loads(r["body"])["entity"]["name"] for r in receiver.at("/changes")[1:]]
    assert changes == ["a", "b", "a"], changes
    assert len(receiver.at("/snooze")) == 2, receiver.at("/snooze")  # the ping, then one event
    for h in (on_change, snooze):
        delete(api, h)


def test_a_hook_on_hooks_gets_the_crud_events_of_other_hooks(sim, api, receiver):
    watcher = create(api, webhook(receiver, "/hooks", event="event_hooks"))
    receiver.wait("/hooks", 1)
    other = create(api, {"source": "crud", "event": "acls", "handler": "log", "config": {}})

    def about_other():
        bodies = [json.loads(r["body"]) for r in receiver.at("/hooks")]
        return [b for b in bodies if b.get("entity", {}).get("id") == other["id"]]
    event = wait_for(about_other, "the crud event of the other hook", WAIT)[0]
    assert (event["source"], event["event"], event["operation"]) == ("crud", "event_hooks", "create"), event
    assert event["old_entity"] is None, event
    delete(api, other)
    delete(api, watcher)


def two_hooks(api: Api, receiver: Receiver, event: str, path_a: str, path_b: str, **extra_a):
    """Webhooks A (with `extra_a`) and B on crud `event`, posting to `path_a` and `path_b`, once
    each has had its create ping."""
    a = create(api, webhook(receiver, path_a, event=event, **extra_a))
    b = create(api, webhook(receiver, path_b, event=event))
    receiver.wait(path_a, 1)
    receiver.wait(path_b, 1)
    return a, b


# Hook A's target never answers, answers after 8 s, or trickles a byte every 2 s past its own 20 s
# read timeout; hook B's is healthy. The dispatch function handles a batch of 10 events as one
# unit, and used to wait for A's attempts before the next batch: B's later events waited with it.
# Now an attempt inside an event's processing is cut after 1 s and sent again from the deliveries
# queue (in A's message group) with the full timeouts, A holds at most its lane's 4 attempts, and B
# is served before any of A's long attempts has ended.
@pytest.mark.parametrize("reply, event, extra", [
    (HANG, "plugins", {}),
    (SLOW, "certificates", {}),
    (TRICKLE, "upstreams", {"timeouts": {"connect_ms": 1000, "read_ms": 20000}}),
], ids=["hanging", "slow", "trickling"])
def test_a_misbehaving_target_holds_only_its_own_slots(sim, api, receiver, reply, event, extra):
    path_a, path_b = f"/{reply}-a", f"/{reply}-b"
    a, b = two_hooks(api, receiver, event, path_a, path_b, **extra)
    try:
        receiver.script[path_a] = [reply] * 40
        for n in range(15):
            emit(api, {"operation": "create", "entity": {"name": f"{reply}{n}"}, "old_entity": None},
                 event=event)
        served = receiver.wait(path_b, 16)
        with receiver.lock:
            ended = [held for path, held in receiver.ended if path == path_a and held > 5]
        assert not ended, f"B waited for A: {len(ended)} of A's long attempts ended first"
        assert len({r["headers"]["x-event-hook-delivery"] for r in served[1:]}) == 15
    finally:
        cleared(sim, api, receiver, path_a, a, b)


def test_a_failing_target_does_not_hold_a_healthy_one(sim, api, receiver):
    a, b = two_hooks(api, receiver, "snis", "/fails", "/works")
    try:
        receiver.script["/fails"] = [503] * 100
        for n in range(15):
            emit(api, {"operation": "create", "entity": {"name": f"s{n}"}, "old_entity": None},
                 event="snis")
        served = receiver.wait("/works", 16)
        assert len({r["headers"]["x-event-hook-delivery"] for r in served[1:]}) == 15
        # A's retries (1 s, 1 s) run on the deliveries queue, never more than the schedule's
        # three attempts a delivery (after 5 failures in a row A's circuit holds the rest back).
        settled(sim, delayed_too=False)
        per_delivery: dict[str, int] = {}
        for r in receiver.at("/fails")[1:]:
            key = r["headers"]["x-event-hook-delivery"]
            per_delivery[key] = per_delivery.get(key, 0) + 1
        assert per_delivery and max(per_delivery.values()) <= 3, per_delivery
    finally:
        cleared(sim, api, receiver, "/fails", a, b)


def rate_limited_so_far(sim) -> int:
    """The dispatch function's `RateLimited` metric, summed over its EMF lines so far."""
    total = 0
    for runtime in {id(p.runtime): p.runtime for p in sim.pollers}.values():
        for line in runtime.output().splitlines():
            if '"RateLimited"' in line and line.startswith("{"):
                try:
                    total += int(json.loads(line).get("RateLimited", 0))
                except ValueError:
                    pass
    return total


def test_a_throttled_delivery_waits_on_the_queue_once(sim, api, receiver):
    # A has max_rate 2: each delivery over the rate reserves its slot and waits on the deliveries
    # queue for it, once (it used to be re-sent again and again while its slot was far).
    before = rate_limited_so_far(sim)
    a, b = two_hooks(api, receiver, "ca_certificates", "/paced", "/unpaced", max_rate=2)
    try:
        for n in range(10):
            emit(api, {"operation": "create", "entity": {"id": f"ca{n}"}, "old_entity": None},
                 event="ca_certificates")
        receiver.wait("/unpaced", 11)
        paced = receiver.wait("/paced", 11)[1:]
        assert len({r["headers"]["x-event-hook-delivery"] for r in paced}) == 10
        settled(sim, delayed_too=False)
        sent_back = rate_limited_so_far(sim) - before
        assert 1 <= sent_back <= 10, sent_back
    finally:
        cleared(sim, api, receiver, "/paced", a, b)


def cleared(sim, api, receiver, path, *hooks):
    """Deletes `hooks`, lets `path` answer 200 again and waits until nothing is visible or in
    flight on the trigger queues, so later cases start clean. Deliveries of the deleted hooks that
    still wait on the deliveries queue (a slow or failing hook's may be due minutes later) are
    dead-lettered when they come back, the hooks being gone."""
    for hook in hooks:
        delete(api, hook)
    receiver.script[path] = []
    settled(sim, delayed_too=False)


def test_a_gone_target_gets_no_attempt_after_its_first_410(sim, api, receiver):
    # Hook A's target answers 410 Gone: the hook is disabled, and no attempt starts after the
    # first 410 (only those already running when it came, at most the lane's 4); B is served.
    a, b = two_hooks(api, receiver, "targets", "/gone", "/present")
    try:
        receiver.script["/gone"] = [410] * 40
        for n in range(15):
            emit(api, {"operation": "create", "entity": {"target": f"t{n}"}, "old_entity": None},
                 event="targets")
        receiver.wait("/present", 16)

        def disabled():
            status, hook = api.call("GET", f"/event-hooks/{a['id']}")
            return status == 200 and not hook["enabled"] and hook
        hook = wait_for(disabled, "hook A disabled", WAIT)
        assert hook["disabled_reason"]["reason"] == "target answered 410 Gone", hook
        settled(sim, delayed_too=False)
        reached = len(receiver.at("/gone")) - 1
        assert 1 <= reached <= 4, f"{reached} requests reached A"
    finally:
        cleared(sim, api, receiver, "/gone", a, b)


def relay_secret(sim: SimulatedStack) -> str:
    """The first line of the stack's relay secret (output `KongRelaySecretArn`)."""
    arn = sim.stack.outputs["KongRelaySecretArn"]
    secret = sim.moto.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    return secret.splitlines()[0].strip()


def test_kongs_webhook_posts_through_the_relay(sim, api, receiver):
    # Given a hook on what Kong relays, and the stack's generated relay secret
    hook = create(api, webhook(receiver, "/relayed"))
    receiver.wait("/relayed", 1)  # its create ping
    secret = relay_secret(sim).encode()
    fixtures = os.path.join(os.path.dirname(__file__), "..", "fixtures", "kong-relay")

    def relay(body: bytes, signature: str | None):
        req = urllib.request.Request(api.base + "/events/kong", data=body, method="POST")
        req.add_header("Content-Type", "application/json")
        if signature is not None:
            req.add_header("X-Kong-Signature", signature)
        try:
            with urllib.request.urlopen(req, timeout=60) as reply:
                return reply.status, json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def signed(body: bytes) -> str:
        return "sha1=" + hmac.new(secret, body, hashlib.sha1).hexdigest()

    with open(os.path.join(fixtures, "test-consumers.json"), "rb") as f:
        consumer = f.read()
    with open(os.path.join(fixtures, "ping.json"), "rb") as f:
        ping = f.read()

    # When Kong's documented bodies arrive: unsigned, wrongly signed, Kong's ping, then signed
    assert relay(consumer, None)[0] == 401
    assert relay(consumer, "sha1=" + "0" * 40)[0] == 401
    assert relay(ping, signed(ping))[0] == 200
    status, accepted = relay(consumer, signed(consumer))

    # Then only the signed event is queued and delivered, with the data Kong sent
    assert status == 202, accepted
    delivered = receiver.wait("/relayed", 2)[1]
    body = json.loads(delivered["body"])
    assert (body["source"], body["event"], body["consumer"]["username"]) == \
        ("crud", "consumers", "Jane Austen"), body
    settled(sim)
    assert len(receiver.at("/relayed")) == 2, receiver.at("/relayed")
    delete(api, hook)


def test_a_hook_of_the_stack_relays_to_the_stack_as_kong_would(sim, api, receiver):
    """The round trip: the probe function sends as Kong's webhook handler does (our sender is
    Kong-compatible) to the stack's own relay, through the API; what the relay queues reaches
    another hook. The relaying hook is disabled, so the relayed event does not go round again.
    (Unsigned and wrongly signed posts: the test above, and the `unsigned_relay` stack below.)"""
    # Given a hook on `services` delivering to the receiver, and a disabled hook that posts to the
    # relay, signed with the relay secret
    target = create(api, webhook(receiver, "/round-trip", event="services"))
    relaying = create(api, {"source": "crud", "event": "services", "handler": "webhook", "enabled": False,
                            "config": {"url": api.base + "/events/kong", "secret": relay_secret(sim)}})
    try:
        receiver.wait("/round-trip", 1)  # its create ping
        data = {"operation": "update", "entity": {"name": "billing"}, "old_entity": {"name": "bill"}}

        # When it is tested (the probe function posts the data, signed)
        status, signed = api.call("POST", f"/event-hooks/{relaying['id']}/test", data)
        assert status == 200 and signed["result"]["status"] == 202, signed

        # Then the event reaches the other hook, once, with the data as sent
        delivered = receiver.wait("/round-trip", 2)[1]
        body = json.loads(delivered["body"])
        assert (body["source"], body["event"], body["entity"], body["old_entity"]) == \
            ("crud", "services", data["entity"], data["old_entity"]), body
        settled(sim)
        assert len(receiver.at("/round-trip")) == 2, receiver.at("/round-trip")
    finally:
        delete(api, target)
        delete(api, relaying)


def test_test_and_ping_through_the_probe_function(sim, api, receiver):
    hook = create(api, webhook(receiver, "/probe", event="consumers"))
    receiver.wait("/probe", 1)
    status, tested = api.call("POST", f"/event-hooks/{hook['id']}/test", {"username": "ann"})
    assert status == 200, tested
    assert tested["result"]["status"] == 200 and tested["data"]["username"] == "ann", tested
    status, pinged = api.call("GET", f"/event-hooks/{hook['id']}/ping")
    assert status == 200, pinged
    assert pinged["data"]["event"] == "ping" and "operation" not in pinged["data"], pinged
    assert len(receiver.at("/probe")) == 3
    status, body = api.call("GET", f"/event-hooks/{uuid.uuid4()}/ping")
    assert (status, body) == (404, {"message": "Not found"})
    delete(api, hook)


def test_cold_starts_are_reported_by_the_emulator(sim):
    for key, runtime in sim.runtimes.items():
        durations = runtime.init_durations()
        if key in {p.mapping.function for p in sim.pollers} or key in {r.function for r in sim.stack.routes}:
            assert durations, f"{key}: no Init Duration in the emulator's log:\n{runtime.output()[-2000:]}"


def test_a_killed_environment_leaves_no_bootstrap_running(sim, api, receiver):
    # The emulator starts the bootstrap in a process group of its own. A bootstrap that outlived
    # a kill finished its invocation (here: waiting on a slow target), then took the next
    # emulator's invocations beside the new bootstrap: one batch handled twice at once, as on no
    # Lambda (the chaos run saw attempt 1 sent twice, 0.1 s apart).
    hook = create(api, webhook(receiver, "/killed", event="consumers"))
    receiver.wait("/killed", 1)
    runtime = sim.runtimes[next(r.function for r in sim.stack.routes if r.path.endswith("/test"))]
    receiver.script["/killed"] = [SLOW]
    tested = threading.Thread(target=api.call, args=("POST", f"/event-hooks/{hook['id']}/test", {}))
    tested.start()
    try:
        receiver.wait("/killed", 2)  # the probe's bootstrap waits on the slow target
        leader = runtime.process.pid
        assert len(simstack.session_members(leader)) >= 2, "the emulator and its bootstrap"
        runtime.kill("test")
        time.sleep(0.5)
        assert simstack.session_members(leader) == [], "a process of the killed environment still runs"
    finally:
        tested.join()
    status, body = api.call("GET", f"/event-hooks/{hook['id']}/ping")  # a cold environment answers
    assert status == 200, body
    delete(api, hook)


# --- a whole default retry schedule through Lambda's loop rule --------------------------------

# SQS's 15-minute delay limit becomes 1 s (the dispatch function's test-only setting) and the
# template's default schedule shrinks alike, so a delivery needs as many messages (retries and
# chained 15-minute legs: ~45, one chain of dispatch invocations) as on AWS, in about a minute.
TIME_SCALE = 900
MAX_DELAY_ENV = "TEST_ONLY_MAX_QUEUE_DELAY_SECONDS"


def scaled_schedule(schedule: str, scale: int) -> str:
    """`5s,30s,2m` divided by `scale`, in whole milliseconds (at least 1)."""
    unit = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    out = []
    for item in schedule.split(","):
        number, suffix = simstack.re.fullmatch(r"(\d+)(ms|s|m|h|d)", item.strip()).groups()
        out.append(f"{max(1, round(int(number) * unit[suffix] / scale))}ms")
    return ",".join(out)


@pytest.fixture(scope="module")
def scaled():
    """A stack on the template's default retry schedule, time scaled down by TIME_SCALE."""
    default = simstack.load_template()["Parameters"]["RetrySchedule"]["Default"]
    stack = SimulatedStack({"AllowPrivateTargets": "true", "RetrySchedule": scaled_schedule(default, TIME_SCALE)},
                           extra_env={MAX_DELAY_ENV: str(900 // TIME_SCALE)})
    stack.default_schedule = default
    yield stack
    stack.stop()


def test_a_whole_default_schedule_runs_every_attempt_through_lambdas_loop_rule(scaled, receiver):
    # Every retry and every chained leg of a delivery is a message to the deliveries queue, which
    # invokes the dispatch function again: one chain, longer than the 16 invocations Lambda's
    # recursive loop detection lets through unless the function allows loops (the template does).
    sim, api = scaled, Api(scaled)
    attempts = len(sim.default_schedule.split(",")) + 1
    hook = create(api, webhook(receiver, "/always-fails", event="snis"))
    receiver.wait("/always-fails", 1)  # the create ping
    receiver.script["/always-fails"] = [500] * 100
    try:
        started = time.monotonic()
        emit(api, {"operation": "create", "entity": {"name": "sni"}, "old_entity": None}, event="snis")
        letter = dead_letters(sim, "DeliveriesDeadLetterQueueUrl", 1, timeout=240)[0]
        took = time.monotonic() - started
        made = [r["headers"]["x-event-hook-attempt"] for r in receiver.at("/always-fails")[1:]]
        stopped = [m for p in sim.pollers for m in p.loops.stopped]
        assert made == [str(n) for n in range(1, attempts + 1)], (made, stopped)
        reason = letter.get("MessageAttributes", {}).get("reason", {}).get("StringValue", "")
        assert reason.startswith(f"gave up after {attempts} attempts: target answered 500"), (reason, stopped)
        assert not stopped
        # The chain was longer than Lambda lets through (hops realistic, not scaled away).
        deepest = max(p.loops.deepest for p in sim.pollers)
        assert deepest > simstack.LoopDetection.LIMIT, deepest
        assert sim.stack.functions["DispatchFunction"].recursive_loop == "Allow"
        simstack.SUMMARY.append(f"A whole default retry schedule (time / {TIME_SCALE}): {attempts} attempts,"
                                f" {deepest} dispatch invocations in one chain, {took:.0f} s")
    finally:
        receiver.script["/always-fails"] = []
        delete(api, hook)


# --- AWS requests per delivery, and make invoke -----------------------------------------------

DELIVERIES = 40  # events sent, one webhook hook matching each: 40 deliveries, in full batches

# A line the emulator writes of its own (`04 Dec 2026 22:06:54,203 [INFO] (rapid) ...`); the rest of
# a runtime's output is what Lambda sends to CloudWatch Logs: the function's lines and its
# START/END/REPORT lines.
EMULATOR_LINE = simstack.re.compile(r"^\d\d \w{3} \d{4} \d\d:\d\d:\d\d,\d{3} \[")
# CloudWatch Logs counts 26 bytes per log event beside its message (PutLogEvents' batch size).
LOG_EVENT_OVERHEAD = 26


def logged_bytes(text: str) -> int:
    """The bytes Lambda would ingest into CloudWatch Logs for this runtime output."""
    return sum(len(line.encode()) + LOG_EVENT_OVERHEAD
               for line in text.splitlines() if line and not EMULATOR_LINE.match(line))


def attribute_size(value: dict) -> int:
    """An attribute value's size as DynamoDB counts it for capacity units (its documented rules:
    strings and binaries by length, numbers about one byte per two digits plus one, 3 bytes of
    overhead per list or map plus one per element)."""
    (kind, v), = value.items()
    if kind in ("S", "B"):
        return len(v.encode() if isinstance(v, str) else v)
    if kind == "N":
        digits = len(v.lstrip("-").replace(".", "").lstrip("0")) or 1
        return (digits + 1) // 2 + 1
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(1 + attribute_size(e) for e in v)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + attribute_size(e) for k, e in v.items())
    if kind in ("SS", "NS", "BS"):
        return sum(attribute_size({kind[0]: e}) for e in v)
    raise ValueError(kind)


def item_size(item: dict) -> int:
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


# us-east-1 list prices, no free tier (December 2026): Lambda x86_64, SQS standard, DynamoDB
# on-demand, HTTP API, CloudWatch Logs ingestion.
PRICE = {"lambda_request": 0.20e-6, "lambda_gb_s": 0.0000166667, "sqs_request": 0.40e-6,
         "write_unit": 0.625e-6, "read_unit": 0.125e-6, "api_request": 1.00e-6, "log_gb": 0.50}
# A write unit of a provisioned delivery log (DeliveryLogWriteCapacity): $0.00065 per write unit-hour,
# at the 70 % its Application Auto Scaling target keeps in use under a steady load.
PROVISIONED_WRITE_UNIT = 0.00065 / 3600 / 0.70


def reports(text: str) -> list[float]:
    """The durations (ms) of a runtime output's REPORT lines."""
    return [float(d) for d in simstack.re.findall(r"\tDuration: ([0-9.]+) ms", text)]


def dollars_per_million(per: dict[str, float], invocations: dict[str, tuple[float, float, int]],
                        write_units: float, logged: dict[str, float], api_requests: float,
                        producer_requests: float, write_unit: float = PRICE["write_unit"]) -> dict[str, float]:
    """What a million deliveries cost, by service, from the per-delivery counts: `invocations`
    maps a function to (invocations per delivery, mean duration in ms, memory in MB). Every write
    is the delivery log's (priced at `write_unit`); reads are the hooks table's, on-demand."""
    sqs = producer_requests + sum(v for k, v in per.items() if k.split(" ")[0].startswith("SQS."))
    writes = sum(v for k, v in per.items() if k.split(" ")[0] in ("DynamoDB.UpdateItem", "DynamoDB.PutItem"))
    reads = sum(v for k, v in per.items()
                if k.split(" ")[0] in ("DynamoDB.GetItem", "DynamoDB.Query", "DynamoDB.BatchGetItem"))
    million = 1e6
    cost = {
        "Lambda requests": sum(n for n, _, _ in invocations.values()) * PRICE["lambda_request"],
        "Lambda GB-s": sum(n * ms / 1000 * mb / 1024 for n, ms, mb in invocations.values()) * PRICE["lambda_gb_s"],
        "SQS": sqs * PRICE["sqs_request"],
        "DynamoDB": writes * write_units * write_unit + reads * PRICE["read_unit"],
        "API Gateway": PRICE["api_request"] * api_requests,
        "CloudWatch Logs": sum(logged.values()) / 2**30 * PRICE["log_gb"],
    }
    return {k: v * million for k, v in cost.items()}


def kong_update(n: int) -> dict:
    """A crud `update` of a route as Kong sends it (the entity, the old one, the schema): a
    typical event, about 1.2 KB of JSON."""
    def route(paths, updated):
        return {"id": f"8a3c2f4e-5b6d-4e7f-9a0b-{n:012d}", "name": f"orders-{n}", "protocols": ["http", "https"],
                "methods": ["GET", "POST"], "hosts": ["api.example.com"], "paths": paths, "headers": None,
                "https_redirect_status_code": 426, "regex_priority": 0, "strip_path": True,
                "path_handling": "v0", "preserve_host": False, "request_buffering": True,
                "response_buffering": True, "snis": None, "sources": None, "destinations": None,
                "tags": ["team-orders", "eu"], "service": {"id": "2f1d0c9b-8a7e-4d6c-b5a4-938271605f4e"},
                "created_at": 1795400000, "updated_at": updated}
    return {"operation": "update", "entity": route(["/orders", "/v2/orders"], 1795400100),
            "old_entity": route(["/orders"], 1795400000), "schema": "routes"}


def delivery_items(sim, hook_id: str) -> list[dict]:
    """The delivery log's items of one hook."""
    table = sim.stack.functions["DispatchFunction"].environment["DELIVERIES_TABLE"]
    dynamodb = sim.moto.client("dynamodb")
    items, start = [], {}
    while True:
        page = dynamodb.query(TableName=table, KeyConditionExpression="pk = :pk",
                              ExpressionAttributeValues={":pk": {"S": f"hook#{hook_id}"}}, **start)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        start = {"ExclusiveStartKey": page["LastEvaluatedKey"]}


@pytest.fixture(scope="module")
def defaults():
    """A second stack with the template's defaults but the one setting the local receiver needs."""
    stack = SimulatedStack({"AllowPrivateTargets": "true"})
    yield stack
    stack.stop()


class Measured(NamedTuple):
    """One way of sending events, counted over `DELIVERIES` deliveries."""
    label: str
    functions: dict[str, int]  # the functions' AWS requests, by operation
    per: dict[str, float]  # every AWS request per delivery, the functions' and the poller's
    invocations: dict[str, tuple[float, float, int]]  # function: per delivery, mean ms, memory MB
    logged: dict[str, float]  # CloudWatch Logs bytes per delivery, by function
    batches: int  # dispatch invocations
    elapsed: float  # seconds, from the first send to the queues settled


def runtimes_of(sim: SimulatedStack, logical_id: str) -> list:
    """A function's execution environments: the one behind its routes and each trigger's poller's."""
    every = {id(r): r for r in [*sim.runtimes.values(), *(p.runtime for p in sim.pollers)]}
    return [r for r in every.values() if r.fn.logical_id == logical_id]


def measure(sim: SimulatedStack, receiver: Receiver, path: str, label: str, send) -> Measured:
    """Runs `send` (which makes `DELIVERIES` deliveries to `path`) and counts what it took: the
    functions' AWS requests (the proxy in front of moto), the event source mappings' (the
    pollers), invocations and their durations, and the bytes logged. Written to the summary."""
    def log_bytes() -> dict[str, int]:
        return {name: sum(logged_bytes(r.output()) for r in runtimes_of(sim, name))
                for name in ("AdminFunction", "DispatchFunction")}

    def durations() -> dict[str, list[float]]:
        return {name: [d for r in runtimes_of(sim, name) for d in reports(r.output())]
                for name in ("AdminFunction", "DispatchFunction")}

    logged_before = log_bytes()
    durations_before = {k: len(v) for k, v in durations().items()}
    before = sim.counter.snapshot()
    before_esm = sum((p.counts for p in sim.pollers), simstack._Counter())
    invocations = sum(p.invocations for p in sim.pollers)
    seen = len(receiver.at(path))
    started = time.monotonic()
    send()
    receiver.wait(path, seen + DELIVERIES)
    settled(sim)
    elapsed = time.monotonic() - started
    after = sim.counter.snapshot()
    esm = sum((p.counts for p in sim.pollers), simstack._Counter()) - before_esm
    functions = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}
    per = {**{f"{k} (functions)": v / DELIVERIES for k, v in functions.items()},
           **{f"{k} (event source mapping)": v / DELIVERIES for k, v in esm.items()}}
    batches = sum(p.invocations for p in sim.pollers) - invocations
    logged = {k: (v - logged_before[k]) / DELIVERIES for k, v in log_bytes().items()}
    simstack.SUMMARY.extend(
        [f"AWS requests per delivery, {label} ({DELIVERIES} deliveries, {batches} dispatch invocations):"]
        + [f"  {k:50} {v:.2f}" for k, v in sorted(per.items())]
        + [f"  {'CloudWatch Logs bytes, ' + k:50} {v:.0f}" for k, v in sorted(logged.items())]
    )
    ran = {k: v[durations_before[k]:] for k, v in durations().items()}
    spent = {k: (len(v) / DELIVERIES, sum(v) / len(v), sim.stack.functions[k].memory)
             for k, v in ran.items() if v}
    return Measured(label, functions, per, spent, logged, batches, elapsed)


def write_units(sim: SimulatedStack, hook_id: str) -> list[int]:
    """The write units of each of a hook's delivery log items, as written (one per KB)."""
    sizes = sorted(item_size(i) for i in delivery_items(sim, hook_id))
    simstack.SUMMARY.append(f"  delivery log item: {sizes[0]}-{sizes[-1]} bytes (median {sizes[len(sizes) // 2]})")
    return [-(-size // 1024) for size in sizes]


def summarize_costs(measured: Measured, mean_units: float, api_requests: float):
    """Writes what a million deliveries cost, by service, to the summary: with the delivery log
    on-demand and provisioned."""
    for billing, write_unit in (("on-demand", PRICE["write_unit"]), ("provisioned", PROVISIONED_WRITE_UNIT)):
        cost = dollars_per_million(measured.per, measured.invocations, mean_units, measured.logged, api_requests,
                                   producer_requests=0.1 if api_requests == 0 else 0.0, write_unit=write_unit)
        simstack.SUMMARY.append(f"  $ per million deliveries, {measured.label}, delivery log {billing}: "
                                + ", ".join(f"{k} {v:.3f}" for k, v in cost.items())
                                + f"; total {sum(cost.values()):.2f}"
                                + "; invocations per delivery, mean ms: "
                                + ", ".join(f"{k} {n:.2f} x {ms:.0f}" for k, (n, ms, _) in measured.invocations.items()))


def test_aws_requests_per_delivery(defaults, receiver):
    """Events sent by a producer to the events queue in batches of 10, each delivered to one
    webhook, on a stack with the template's default settings: the functions' AWS requests
    (counted by the proxy in front of moto) and the event source mapping's (counted by the
    poller), per delivery. Written to the terminal summary."""
    sim, api = defaults, Api(defaults)
    hook = create(api, webhook(receiver, "/counted", event="certificates"))
    receiver.wait("/counted", 1)
    settled(sim)
    url = sim.stack.outputs["EventsQueueUrl"]

    def producer():
        for start in range(0, DELIVERIES, 10):
            sim.sqs.send_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "MessageBody": json.dumps({"source": "crud", "event": "certificates",
                                                          "data": kong_update(start + i)})}
                for i in range(10)])

    def over_http():
        for n in range(DELIVERIES):
            emit(api, kong_update(DELIVERIES + n), event="certificates")

    def batched_over_http():
        for start in range(2 * DELIVERIES, 3 * DELIVERIES, 10):
            status, body = api.call("POST", "/events", [
                {"source": "crud", "event": "certificates", "data": kong_update(start + i)} for i in range(10)])
            assert status == 202 and len(body["data"]) == 10, (status, body)

    costs = []
    for label, send, api_requests in (("events sent to SQS in batches of 10", producer, 0.0),
                                      ("events sent by POST /events", over_http, 1.0),
                                      ("events sent by POST /events in batches of 10", batched_over_http, 0.1)):
        measured = measure(sim, receiver, "/counted", label, send)
        functions = measured.functions
        costs.append((measured, api_requests))
        # Every delivery is logged in one write, its item's (no claim: no message came twice);
        # the dispatcher reads the hooks' change counter once per batch, the admin function at
        # most once a second, plus a reload now and then, never once per delivery; nothing is
        # scanned.
        assert functions.get("DynamoDB.UpdateItem", 0) == DELIVERIES, functions
        reads = sum(v for k, v in functions.items() if k.split(".")[1] in ("GetItem", "Query", "BatchGetItem"))
        assert reads <= measured.batches + DELIVERIES / 10 + int(measured.elapsed) + 1, (functions, measured)
        assert not any(k.endswith(".Scan") for k in functions), functions
        if send is batched_over_http:  # a batch is queued in one request
            assert functions.get("SQS.SendMessageBatch") == DELIVERIES / 10, functions
            assert "SQS.SendMessage" not in functions, functions
    # Each delivery's item, as written, costs one write unit per KB: a typical one fits in one.
    units = write_units(sim, hook["id"])
    assert len(units) == 3 * DELIVERIES + 1, len(units)  # and the create ping
    assert max(units) == 1, units
    mean_units = sum(units) / len(units)
    for measured, api_requests in costs:
        summarize_costs(measured, mean_units, api_requests)
    # Each trigger's poller has an execution environment of its own: count them all.
    for key in sorted({r.fn.logical_id for r in [*sim.runtimes.values(), *(p.runtime for p in sim.pollers)]}):
        durations = [d for r in runtimes_of(sim, key) for d in reports(r.output())]
        if durations:
            simstack.SUMMARY.append(f"  {key} duration: mean {sum(durations) / len(durations):.1f} ms"
                                    f" over {len(durations)} invocations")
    delete(api, hook)


@pytest.fixture(scope="module")
def lowest_cost():
    """A stack with the settings that lower the cost per delivery: a provisioned delivery log and
    a batching window on both triggers."""
    stack = SimulatedStack({"AllowPrivateTargets": "true", "DeliveryLogWriteCapacity": "5",
                            "DeliveryLogMaxWriteCapacity": "50", "DispatchBatchingWindowSeconds": "2"})
    yield stack
    stack.stop()


def test_a_provisioned_delivery_log_and_a_batching_window_deliver_and_log(lowest_cost, receiver):
    # Given the stack's provisioned delivery log and its triggers' batching window
    sim, api = lowest_cost, Api(lowest_cost)
    table = sim.stack.functions["DispatchFunction"].environment["DELIVERIES_TABLE"]
    described = sim.moto.client("dynamodb").describe_table(TableName=table)["Table"]
    assert described["BillingModeSummary"]["BillingMode"] == "PROVISIONED", described
    assert described["ProvisionedThroughput"]["WriteCapacityUnits"] == 5, described
    # (its scaling is left to AWS: the template's targets and policies, checked by cfn-lint)
    scaling = [r for r in sim.stack.left_out if "ApplicationAutoScaling" in r]
    assert len(scaling) == 4, sim.stack.left_out
    assert {m.window for m in sim.stack.mappings} == {2}, sim.stack.mappings
    hook = create(api, webhook(receiver, "/provisioned", event="certificates"))
    receiver.wait("/provisioned", 1)

    # When a batch of events is posted
    status, body = api.call("POST", "/events", [
        {"source": "crud", "event": "certificates", "data": kong_update(n)} for n in range(3)])
    assert status == 202, body

    # Then each is delivered and logged
    receiver.wait("/provisioned", 4)

    def logged():
        status, page = api.call("GET", f"/event-hooks/{hook['id']}/deliveries")
        assert status == 200, page
        return len([d for d in page["data"] if d["status"] == "delivered"]) == 4
    wait_for(logged, "4 deliveries logged", WAIT)

    # And events posted one by one, each well within the window of the one before, share
    # invocations (without a window, about one each: see test_aws_requests_per_delivery)
    settled(sim)
    before = sum(p.invocations for p in sim.pollers)
    for n in range(10):
        emit(api, kong_update(10 + n), event="certificates")
    receiver.wait("/provisioned", 14)
    settled(sim)
    invocations = sum(p.invocations for p in sim.pollers) - before
    simstack.SUMMARY.append(f"Batching window 2 s: 10 events posted one by one, {invocations} dispatch invocations")
    assert invocations <= 2, invocations
    delete(api, hook)


def test_cost_per_delivery_of_events_posted_one_by_one_at_the_lowest_cost_settings(lowest_cost, receiver):
    """`POST /events` with one event a request, on the stack with a provisioned delivery log and a
    2 s batching window: what the section "AWS requests and cost per delivery" shows beside the
    defaults. Written to the terminal summary."""
    sim, api = lowest_cost, Api(lowest_cost)
    hook = create(api, webhook(receiver, "/lowest", event="certificates"))
    receiver.wait("/lowest", 1)
    settled(sim)

    def one_by_one():
        for n in range(DELIVERIES):
            emit(api, kong_update(n), event="certificates")

    measured = measure(sim, receiver, "/lowest", "events sent by POST /events, 2 s batching window", one_by_one)
    # One write each, and the window shares the dispatch invocations among the events posted
    # within it (without it, about one for every two: test_aws_requests_per_delivery).
    assert measured.functions.get("DynamoDB.UpdateItem", 0) == DELIVERIES, measured.functions
    assert measured.batches <= DELIVERIES / 4, measured
    units = write_units(sim, hook["id"])
    assert max(units) == 1, units
    summarize_costs(measured, sum(units) / len(units), 1.0)
    delete(api, hook)


@pytest.fixture(scope="module")
def unsigned_relay():
    """A stack whose Kong relay takes unsigned events (`KongRelayAllowUnsigned`)."""
    stack = SimulatedStack({**PARAMETERS, "KongRelayAllowUnsigned": "true"})
    yield stack
    stack.stop()


def test_a_relay_that_takes_unsigned_events_still_refuses_a_wrong_signature(unsigned_relay, receiver):
    # Given a stack whose relay takes unsigned events, a hook on `services`, and disabled hooks
    # posting to the relay: one unsigned, one signed with a secret that is not the relay's
    api = Api(unsigned_relay)
    create(api, webhook(receiver, "/unsigned-relay", event="services"))
    receiver.wait("/unsigned-relay", 1)  # its create ping

    def relaying(config):
        return create(api, {"source": "crud", "event": "services", "handler": "webhook",
                            "enabled": False, "config": {"url": api.base + "/events/kong", **config}})

    unsigned, wrong = relaying({}), relaying({"secret": "not-the-relay-secret"})
    data = {"operation": "create", "entity": {"name": "orders"}, "old_entity": None}

    # When each is tested
    status, refused = api.call("POST", f"/event-hooks/{wrong['id']}/test", data)
    assert status == 200 and refused["result"]["status"] == 401, refused
    status, taken = api.call("POST", f"/event-hooks/{unsigned['id']}/test", data)
    assert status == 200 and taken["result"]["status"] == 202, taken

    # Then only the unsigned one reaches the other hook
    delivered = receiver.wait("/unsigned-relay", 2)[1]
    assert json.loads(delivered["body"])["entity"] == data["entity"], delivered["body"]
    settled(unsigned_relay)
    assert len(receiver.at("/unsigned-relay")) == 2, receiver.at("/unsigned-relay")


@pytest.fixture(scope="module")
def pausing():
    """A stack that pauses a hook failing every attempt for 2 s (the template's default is a day)."""
    stack = SimulatedStack({**PARAMETERS, "PauseFailingHookAfterSeconds": "2",
                            "RetrySchedule": "1s,1s,1s,1s,1s"})
    yield stack
    stack.stop()


def test_a_paused_hooks_events_are_logged_as_not_sent(pausing, receiver):
    # A fails every attempt until it is paused; the events that come while it is paused are in
    # its delivery log (DynamoDB, through the admin function) as not sent, with the reason, and B
    # is served all along.
    api = Api(pausing)
    a, b = two_hooks(api, receiver, "vaults", "/pauses", "/carries-on")
    try:
        receiver.script["/pauses"] = [503] * 100
        emit(api, {"operation": "create", "entity": {"name": "v0"}, "old_entity": None},
             event="vaults")

        def paused():
            status, hook = api.call("GET", f"/event-hooks/{a['id']}")
            return status == 200 and not hook["enabled"] and hook
        hook = wait_for(paused, "hook A paused", WAIT)
        assert hook["disabled_reason"]["reason"].startswith("paused:"), hook
        for n in range(1, 4):
            emit(api, {"operation": "create", "entity": {"name": f"v{n}"}, "old_entity": None},
                 event="vaults")
        receiver.wait("/carries-on", 5)

        def not_sent():
            status, page = api.call("GET", f"/event-hooks/{a['id']}/deliveries")
            assert status == 200, page
            found = [d for d in page["data"] if d["status"] == "not_sent"]
            return len(found) == 3 and found
        for delivery in wait_for(not_sent, "3 deliveries logged as not sent", WAIT):
            assert delivery["attempts"][0]["error"].startswith("not sent: the hook is paused"), delivery
    finally:
        for hook in (a, b):
            delete(api, hook)
        receiver.script["/pauses"] = []


def test_every_sample_event_through_make_invoke():
    """`invoke.py --check events/*.json` (what `make invoke` runs, one fresh stack): each sample
    goes to the function the template routes it to, and the reply is checked."""
    import glob
    import subprocess
    import sys
    from pathlib import Path

    events = sorted(glob.glob(str(simstack.ROOT / "events" / "*.json")))
    assert events
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("invoke.py")), "--check", *events],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    simstack.SUMMARY.extend(["make invoke, every events/*.json:"] + done.stdout.splitlines())


def test_the_console_flow_in_a_browser_through_the_stack(api):
    """The web console's flow (scripts/console_test.py) in headless Chromium against the stack's
    gateway: sign in with the generated token, create, test and ping a webhook, its delivery through
    the dispatch function in the log, resend, disable, delete, the lambda editor's syntax error."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(simstack.ROOT / "scripts" / "console_test.py"),
                           "--mode", "stack", "--base", api.base, "--token", api.token],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    simstack.SUMMARY.extend(done.stdout.splitlines()[-1:])

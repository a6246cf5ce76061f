"""`sam local invoke` without Docker: a function's bootstrap under the SAM CLI's Runtime Interface
Emulator, with the environment of the stack `template.yaml` declares, created in a local moto.

    invoke.py FUNCTION EVENT.json...   invoke FUNCTION (logical id, e.g. AdminFunction, or binary,
                                       e.g. admin-api) with each event; print each reply
    invoke.py --check EVENT.json...    send each event to the function the template routes it to,
                                       check the reply's shape and status, print one line per event
                                       and each function's cold start (the emulator's Init Duration)

HTTP events (payload 2.0) carry the stack's admin token (as a client of the deployed API would):
a `kong-admin-token` header when they have none, and the password of a Basic `authorization`
(Apigee Edge's `-u email:password`). SQS events: each record's body is first sent to the stack's queue its
`eventSourceARN` names (`…:event-hooks-events` is EventsQueue, `…-deliveries` DeliveriesQueue)
and received from it, so the function gets real message ids, receipt handles and queue ARNs, as
from the event source mapping.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

import simstack
from simstack import Moto, Runtime, create_stack, match_route

# Parameters of the local stack (only those the template declares are passed).
PARAMETERS = {"AllowPrivateTargets": "true", "AdminToken": "local-invoke-token"}

# The status each sample gets from a fresh stack, in this order (sorted file names).
EXPECTED_STATUS = {
    "admin-create-hook-form.json": 201,
    "admin-create-hook.json": 201,
    "admin-delete-hook.json": 204,
    "admin-emit-event.json": 202,
    "admin-get-hook.json": 404,
    "admin-list-deliveries.json": 404,
    "admin-list-hooks.json": 200,
    "admin-list-sources.json": 200,
    "admin-patch-hook.json": 404,
    # The ids in the samples are not in a fresh stack: Kong's / Edge's not-found answers.
    "apigee-create-notification-condition.json": 400,  # its webhook id does not exist
    "apigee-create-webhook.json": 201,
    "apigee-delete-webhook.json": 404,
    "apigee-edit-webhook.json": 404,
    "apigee-enable-webhook.json": 404,
    "apigee-get-webhook.json": 404,
    "apigee-list-webhooks.json": 200,
    # Unsigned, and the stack's relay takes only events signed with its generated secret.
    "kong-relay-event.json": 401,
    "probe-ping-hook.json": 404,
    "probe-test-hook.json": 404,
}


class Local:
    """The created stack, and one emulator per function, started on first use."""

    def __init__(self):
        self.moto = Moto()
        self.runtimes: dict[str, Runtime] = {}
        try:
            self.stack = create_stack(self.moto, self.moto.endpoint, PARAMETERS)
        except BaseException:
            self.moto.stop()
            raise
        self.sqs = self.moto.client("sqs")
        self.token = simstack.admin_token(self.moto, self.stack)

    def function(self, name: str) -> str:
        for key, fn in self.stack.functions.items():
            binary = simstack.functions_of(simstack.load_template())[key]
            binary = binary.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
            if name in (key, fn.name, binary):
                return key
        raise SystemExit(f"no function {name!r} in template.yaml: {sorted(self.stack.functions)}")

    def runtime(self, key: str) -> Runtime:
        if key not in self.runtimes:
            self.runtimes[key] = Runtime(self.stack.functions[key], self.moto.endpoint)
        return self.runtimes[key]

    def route(self, event: dict) -> str:
        """The function the template sends `event` to (its route, or its queue's mapping)."""
        if "Records" in event:
            arns = {self.queue_arn(r["eventSourceARN"]) for r in event["Records"]}
            fns = {m.function for m in self.stack.mappings if m.queue_arn in arns}
            if len(fns) != 1:
                raise AssertionError(f"records from {arns} map to functions {fns}")
            return fns.pop()
        method = event["requestContext"]["http"]["method"]
        found = match_route(self.stack.routes, method, event["rawPath"])
        if found is None:
            raise AssertionError(f"{method} {event['rawPath']}: no route in template.yaml (404)")
        route, _ = found
        if route.key != event.get("routeKey"):
            raise AssertionError(f"{method} {event['rawPath']}: the sample says route {event.get('routeKey')!r}, the template {route.key!r}")
        return route.function

    def queue_arn(self, sample_arn: str) -> str:
        """The stack's trigger queue a sample's ARN names by its last word (events, deliveries)."""
        word = sample_arn.rsplit(":", 1)[-1].rsplit("-", 1)[-1].lower()
        queues = [m.queue_arn for m in self.stack.mappings
                  if m.queue_arn.rsplit(":", 1)[-1].lower().split("-")[-2] == f"{word}queue"]
        if len(queues) != 1:
            raise AssertionError(f"{sample_arn}: names none of the trigger queues {[m.queue_arn for m in self.stack.mappings]}")
        return queues[0]

    def prepare(self, event: dict) -> dict:
        event = json.loads(json.dumps(event))
        if "Records" in event:
            for record in event["Records"]:
                arn = self.queue_arn(record["eventSourceARN"])
                url = simstack.queue_url_of(self.sqs, arn)
                self.sqs.send_message(QueueUrl=url, MessageBody=record["body"])
                msg = simstack.wait_for(
                    lambda url=url: self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, AttributeNames=["All"],
                                                     MessageAttributeNames=["All"]).get("Messages"),
                    f"the record on {url}", 10)[0]
                record.update(messageId=msg["MessageId"], receiptHandle=msg["ReceiptHandle"],
                              eventSourceARN=arn, attributes=msg["Attributes"], md5OfBody=msg["MD5OfBody"])
        elif self.token:
            headers = event.setdefault("headers", {})
            basic = headers.get("authorization", "")
            if basic.lower().startswith("basic "):
                user = base64.b64decode(basic.split(" ", 1)[1]).decode().split(":", 1)[0]
                headers["authorization"] = "Basic " + base64.b64encode(f"{user}:{self.token}".encode()).decode()
            elif not any(k.lower() == "kong-admin-token" for k in headers):
                headers["kong-admin-token"] = self.token
        return event

    def invoke(self, key: str, event: dict) -> tuple[int, bytes, str]:
        return self.runtime(key).invoke(self.prepare(event))

    def stop(self):
        for r in self.runtimes.values():
            r.stop()
        self.moto.stop()


def check(path: Path, key: str, status: int, reply: bytes, error: str) -> str:
    """The reply's shape: an HTTP response with the expected status, or an SQS batch response."""
    if status != 200 or error:
        raise AssertionError(f"{path.name}: the emulator answered {status} {error}: {reply[:500]!r}")
    doc = json.loads(reply)
    if "batchItemFailures" in doc:
        if doc["batchItemFailures"]:
            raise AssertionError(f"{path.name}: records failed: {doc}")
        return "batchItemFailures: []"
    expected = EXPECTED_STATUS.get(path.name)
    if expected is None:
        raise AssertionError(f"{path.name}: no expected status in invoke.py's EXPECTED_STATUS")
    if doc.get("statusCode") != expected:
        raise AssertionError(f"{path.name}: status {doc.get('statusCode')}, expected {expected}: {doc}")
    body = doc.get("body") or ""
    if body:
        json.loads(body)  # every admin/probe answer with a body is JSON
    return f"{doc['statusCode']}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("args", nargs="+")
    args = parser.parse_args(argv)
    local = Local()
    try:
        if args.check:
            for p in sorted(Path(a) for a in args.args):
                event = json.loads(p.read_text())
                key = local.route(event)
                status, reply, error = local.invoke(key, event)
                print(f"{p.name:34} {key:18} {check(p, key, status, reply, error)}")
            print()
            for key, runtime in sorted(local.runtimes.items()):
                durations = runtime.init_durations()
                if not durations:
                    raise AssertionError(f"{key}: no Init Duration in the emulator log:\n{runtime.output()[-2000:]}")
                print(f"cold start {key:18} INIT {durations[0]:.1f} ms")
        else:
            key = local.function(args.args[0])
            for p in args.args[1:]:
                status, reply, error = local.invoke(key, json.loads(Path(p).read_text()))
                try:
                    print(json.dumps(json.loads(reply), indent=2))
                except ValueError:
                    print(reply.decode(errors="replace"))
                runtime = local.runtime(key)
                if error or status != 200:
                    print(f"function error ({status} {error}); emulator log:\n{runtime.output()}", file=sys.stderr)
                    return 1
            durations = local.runtime(key).init_durations()
            print(f"{key}: cold start (INIT) {durations[0]:.1f} ms" if durations else f"{key}: warm", file=sys.stderr)
    finally:
        local.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""AWS faults injected by the counting proxy (`simstack.Counter`): throttles, 5xx errors, latency,
connections reset mid-reply and connections that hang, in the shapes the real services send.

A `Rule` says which requests (`service` as `Counter.count` names it, case-insensitive, `ssm` for
`AmazonSSM`, `*` for any; `operation` an exact name or a glob) get which fault at what rate.
Decisions are seeded: the n-th request of an operation gets the same decision for the same seed
and rules, whatever the other operations do meanwhile, so a failing run replays with its seed
(each injected fault is logged as `fault: <service.Operation>#<n> <kind>` and kept in `history`).

Error shapes (those the Rust SDK's `json_errors::parse_error_metadata` reads: the
`x-amzn-errortype` header, else the body's `__type`, trimmed of the namespace before `#`; for SQS,
an awsQueryCompatible service, the code of the `x-amzn-query-error: Code;Type` header wins):
* DynamoDB (JSON 1.0): 400 `ProvisionedThroughputExceededException` or `ThrottlingException`,
  500 `InternalServerError`, 503 `ServiceUnavailable`.
* SQS (JSON 1.0, as moto answers it): 400 `RequestThrottled` (`x-amzn-query-error:
  RequestThrottled;Sender`), 500 `InternalError`, 503 `ServiceUnavailable` (`...;Receiver`).
* Secrets Manager / SSM (JSON 1.1): 400 `ThrottlingException`, 500 `InternalServiceError` /
  `InternalServerError`, 503 `ServiceUnavailable`.
* Anything else: the JSON protocol of the request, or a query-protocol XML `ErrorResponse`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import socket
import struct
import threading
import uuid
from collections import Counter as _Counter
from dataclasses import dataclass

log = logging.getLogger("simstack.faults")

KINDS = ("throttle", "error", "latency", "reset", "hang")
HANG_DEFAULT_S = 6.0  # longer than the SDK's 5 s attempt timeout
LATENCY_DEFAULT_S = 1.0

ALIASES = {"amazonssm": "ssm"}


def _service_key(name: str) -> str:
    name = name.lower()
    return ALIASES.get(name, name)


@dataclass(frozen=True)
class Rule:
    """`Rule(service, operation="*", kind, rate, seconds=0.0)`: `kind` and `rate` are required
    (defaults only because they follow `operation`)."""

    service: str
    operation: str = "*"
    kind: str = ""
    rate: float = -1.0
    seconds: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"fault kind {self.kind!r} is not one of {KINDS}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate {self.rate!r} is not within [0, 1]")
        if self.seconds == 0.0 and self.kind in ("hang", "latency"):
            object.__setattr__(self, "seconds", HANG_DEFAULT_S if self.kind == "hang" else LATENCY_DEFAULT_S)

    def matches(self, operation: str) -> bool:
        service, _, op = operation.partition(".")
        return (self.service == "*" or _service_key(self.service) == _service_key(service)) and (
            self.operation == "*" or fnmatch.fnmatchcase(op, self.operation))


@dataclass(frozen=True)
class Decision:
    operation: str  # service.Operation
    n: int  # the request's index among this operation's requests (from 1)
    rule: Rule
    status: int  # for "error": 500 or 503
    variant: int  # picks among a service's throttle codes

    @property
    def kind(self) -> str:
        return self.rule.kind


class Faults:
    """Seeded fault decisions for the proxy. `active` (settable) turns injection off and on;
    `injected()` counts the faults injected by `service.Operation:kind`."""

    def __init__(self, seed: int, rules: list[Rule]):
        self.seed = seed
        self.rules = list(rules)
        self.active = True
        self.lock = threading.Lock()
        self.seen: _Counter[str] = _Counter()
        self.counts: _Counter[str] = _Counter()
        self.history: list[tuple[str, int, str]] = []  # (operation, n, kind) in injection order
        self.closing = threading.Event()  # set on the proxy's stop: hung connections close at once

    @classmethod
    def from_spec(cls, spec: str, seed: int) -> Faults:
        """`service:operation:kind:rate[:seconds]`, comma separated, e.g.
        `DynamoDB:*:throttle:0.1,SQS:*:error:0.05,*:*:hang:0.01:6`."""
        rules = []
        for part in filter(None, (p.strip() for p in spec.split(","))):
            fields = part.split(":")
            if len(fields) not in (4, 5):
                raise ValueError(f"fault rule {part!r} is not service:operation:kind:rate[:seconds]")
            service, operation, kind, rate = fields[:4]
            seconds = float(fields[4]) if len(fields) == 5 else 0.0
            rules.append(Rule(service, operation or "*", kind, float(rate), seconds))
        return cls(seed, rules)

    def _draw(self, *key) -> float:
        digest = hashlib.blake2b(repr((self.seed, *key)).encode(), digest_size=8).digest()
        return struct.unpack(">Q", digest)[0] / 2**64

    def decide(self, operation: str) -> Decision | None:
        """The fault for this request of `operation`, if any (the first rule whose draw fires)."""
        with self.lock:
            self.seen[operation] += 1
            n = self.seen[operation]
        if not self.active:
            return None
        for index, rule in enumerate(self.rules):
            if rule.rate > 0 and rule.matches(operation) and self._draw(index, operation, n) < rule.rate:
                pick = self._draw("variant", index, operation, n)
                decision = Decision(operation, n, rule, 500 if pick < 0.5 else 503, int(pick * 1024))
                with self.lock:
                    self.counts[f"{operation}:{rule.kind}"] += 1
                    self.history.append((operation, n, rule.kind))
                log.warning("fault: %s#%d %s (seed %d)", operation, n, rule.kind, self.seed)
                return decision
        return None

    def injected(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    # --- what the proxy's handler does -----------------------------------------------------------

    def before(self, handler, decision: Decision) -> bool:
        """Acts before forwarding; True when the request is answered (or dropped) here."""
        kind = decision.kind
        if kind == "latency":
            self.closing.wait(decision.rule.seconds)
            return False
        if kind == "hang":
            self.closing.wait(decision.rule.seconds)
            _drop(handler, reset=False)
            return True
        if kind in ("throttle", "error"):
            status, headers, body = error_reply(decision, handler.headers)
            handler.send_response(status)
            for k, v in headers.items():
                handler.send_header(k, v)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return True
        return False  # reset: forwarded first

    def reset(self, handler, status: int, headers: list[tuple[str, str]], data: bytes,
              decision: Decision | None = None):
        """Sends the status line, the headers (with the full length) and half the body, then
        drops the connection: a TCP reset (RST) for half the decisions, the client typically
        seeing "connection reset"; a plain close (FIN) for the others, a body cut short."""
        handler.send_response(status)
        for k, v in headers:
            if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                handler.send_header(k, v)
        handler.send_header("Content-Length", str(max(len(data), 2)))
        handler.end_headers()
        handler.wfile.write(data[: len(data) // 2])
        handler.wfile.flush()
        _drop(handler, reset=decision is None or decision.variant % 2 == 0)


def _drop(handler, reset: bool):
    handler.close_connection = True
    try:
        handler.wfile.flush()
        if reset:  # RST rather than FIN
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            handler.connection.shutdown(socket.SHUT_RDWR)
        handler.connection.close()
    except OSError:
        pass


# --- error shapes ---------------------------------------------------------------------------------

THROTTLE_MESSAGE = "Rate exceeded"
DYNAMODB_THROTTLES = (
    ("ProvisionedThroughputExceededException",
     "The level of configured provisioned throughput for the table was exceeded. Consider increasing "
     "your provisioning level with the UpdateTable API."),
    ("ThrottlingException", "Throughput exceeds the current capacity of your table or index."),
)


def error_reply(decision: Decision, request_headers) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of the throttle or 5xx the service of `decision` would send."""
    service = _service_key(decision.operation.partition(".")[0])
    throttle = decision.kind == "throttle"
    status = 400 if throttle else decision.status
    request_id = str(uuid.UUID(int=int(decision.variant) << 64 | decision.n))
    target = request_headers.get("X-Amz-Target")
    content_type = request_headers.get("Content-Type") or "application/x-amz-json-1.0"

    if service == "dynamodb":
        if throttle:
            code, message = DYNAMODB_THROTTLES[decision.variant % 2]
        else:
            code, message = (("InternalServerError", "Internal server error") if status == 500
                             else ("ServiceUnavailable", "Service unavailable"))
        return status, {
            "Content-Type": "application/x-amz-json-1.0",
            "x-amzn-ErrorType": code,
            "x-amzn-RequestId": request_id,
        }, json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message}).encode()

    if service == "sqs":
        if throttle:
            code, fault, message = "RequestThrottled", "Sender", THROTTLE_MESSAGE
        elif status == 500:
            code, fault, message = "InternalError", "Receiver", "We encountered an internal error. Please try again."
        else:
            code, fault, message = "ServiceUnavailable", "Receiver", "Service unavailable"
        return status, {
            "Content-Type": "application/x-amz-json-1.0",
            "x-amzn-query-error": f"{code};{fault}",
            "x-amzn-RequestId": request_id,
        }, json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": message}).encode()

    if throttle:
        code, message = "ThrottlingException", THROTTLE_MESSAGE
    elif status == 500:
        code = "InternalServiceError" if service == "secretsmanager" else "InternalServerError"
        message = "An error occurred on the server side."
    else:
        code, message = "ServiceUnavailable", "Service unavailable"
    if target:  # JSON 1.0 / 1.1, as the request came
        return status, {"Content-Type": content_type, "x-amzn-ErrorType": code, "x-amzn-RequestId": request_id}, \
            json.dumps({"__type": code, "message": message}).encode()
    code = "Throttling" if throttle else code
    body = (f"<ErrorResponse><Error><Type>{'Sender' if throttle else 'Receiver'}</Type><Code>{code}</Code>"
            f"<Message>{message}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>")
    return status, {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, body.encode()

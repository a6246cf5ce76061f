"""The stack `template.yaml` declares, created in moto and run the way AWS runs it.

* The template is translated with the SAM translator the SAM CLI uses (`sam validate`'s way), with
  each function's `CodeUri` resolved as `sam package` does: its build output is zipped, put in
  (moto's) S3 and the `CodeUri` becomes that S3 location.
* The CloudFormation template is created as a stack in moto's CloudFormation. Resource types moto's
  CloudFormation cannot create are either provisioned here through the service's own API, as their
  CloudFormation handler would (`PROVISIONED`), or left out and checked statically
  (`LEFT_OUT`: the HTTP API, whose routes the gateway below serves from the API's OpenAPI body).
* Each function's bootstrap runs under the Lambda Runtime Interface Emulator shipped in the SAM CLI
  package, with exactly the environment moto's Lambda reports for the created function, plus what
  Lambda itself provides (region, credentials, the endpoint of the simulated AWS, name, memory,
  timeout).
* `Gateway` serves the routes of the template's HTTP API (API Gateway's route selection, payload
  format 2.0); `Poller` is an SQS event source mapping per `AWS::Lambda::EventSourceMapping`.
* `Counter` is a proxy in front of moto counting the AWS requests the functions make, by operation.
  It also keeps the trace header (`X-Amzn-Trace-Id`) each `SendMessage` came with, which SQS keeps
  as the message's `AWSTraceHeader` (moto does not): `Traces`.
* `LoopDetection` applies Lambda's recursive loop detection to each event source mapping: a message
  whose trace shows its function invoked 16 times in the same chain is not delivered to it, unless
  the created function says `RecursiveLoop: Allow`.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import http.client
import http.server
import io
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
import zipfile
from collections import Counter as _Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from faults import Faults

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
REGION = "us-east-1"
ACCOUNT = "123456789012"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
RIE = (
    Path(sys.prefix)
    / "lib"
    / f"python{sys.version_info.major}.{sys.version_info.minor}"
    / "site-packages/samcli/local/rapid/aws-lambda-rie-x86_64"
)

# Resource types moto's CloudFormation cannot create that nothing reads at run time: left out of
# the created stack and checked statically (the HTTP API's routes are what `Gateway` serves).
LEFT_OUT = {"AWS::CloudWatch::Alarm", "AWS::ApiGatewayV2::Api", "AWS::ApiGatewayV2::Stage", "AWS::ApiGatewayV2::Authorizer",
            # The provisioned delivery log's scaling (DeliveryLogWriteCapacity): AWS's business alone.
            "AWS::ApplicationAutoScaling::ScalableTarget", "AWS::ApplicationAutoScaling::ScalingPolicy"}

# The emulators running: a wait fails at once when a function cannot start.
RUNNING: list[Runtime] = []

# Lines for the test run's terminal summary (requests per delivery, cold starts).
SUMMARY: list[str] = []

# The id the simulated HTTP API goes by.
API_ID = "simapi0001"

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0, every: float = 0.05):
    """Polls `check` until it returns something truthy; fails naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        for runtime in RUNNING:
            runtime.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Moto:
    """A moto server on a free loopback port, stopped by `stop()`."""

    def __init__(self):
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="moto.", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.endpoint = f"http://127.0.0.1:{self.port}"

        def up():
            if self.process.poll() is not None:
                raise AssertionError(f"moto_server exited: {Path(self.log.name).read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(up, "moto_server to listen")

    def client(self, service: str, endpoint: str | None = None):
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=endpoint or self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 2}),
        )

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.unlink(self.log.name)


class LoopbackHandler(http.server.BaseHTTPRequestHandler):
    """The simulated stack's HTTP/1.1 servers: quiet, each reply sent at once."""
    protocol_version = "HTTP/1.1"
    # A reply goes out in two writes, head and body: under Nagle's algorithm the second would wait
    # for the client's delayed ACK, 40 ms a reply.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass


class Counter:
    """A reverse proxy in front of moto that counts requests by `service.Operation`.

    Operations are read from the `X-Amz-Target` header (the JSON protocols DynamoDB and SQS use)
    or the `Action` form field (the query protocol). With `faults` (faults.py), it injects AWS
    faults (throttles, 5xx, latency, resets, hangs) into the requests it counts."""

    def __init__(self, upstream_port: int, traces: Traces | None = None, faults: Faults | None = None):
        self.counts: _Counter[str] = _Counter()
        self.lock = threading.Lock()
        self.traces = traces
        self.faults = faults
        counter = self

        class Handler(LoopbackHandler):
            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                operation = counter.count(self.headers, body)
                fault = counter.faults.decide(operation) if counter.faults else None
                if fault and counter.faults.before(self, fault):
                    return
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                reply = conn.getresponse()
                data = reply.read()
                trace = self.headers.get("X-Amzn-Trace-Id")
                if counter.traces is not None and trace and reply.status == 200 and operation in (
                        "SQS.SendMessage", "SQS.SendMessageBatch", "query.SendMessage", "query.SendMessageBatch"):
                    counter.traces.sent(data, trace)
                if fault and fault.kind == "reset":
                    counter.faults.reset(self, reply.status, reply.getheaders(), data, fault)
                    conn.close()
                    return
                self.send_response(reply.status)
                for k, v in reply.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, headers, body: bytes) -> str:
        """Counts the request; returns its `service.Operation`."""
        target = headers.get("X-Amz-Target")
        if target:
            prefix, _, op = target.partition(".")
            service = {"AmazonSQS": "SQS"}.get(prefix, prefix.split("_")[0])
        else:
            form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
            op = (form.get("Action") or ["?"])[0]
            service = "query"
        with self.lock:
            self.counts[f"{service}.{op}"] += 1
        return f"{service}.{op}"

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counts)

    def stop(self):
        if self.faults:
            self.faults.closing.set()
        self.server.shutdown()
        self.server.server_close()


# --- tracing and Lambda's recursive loop detection ----------------------------------------------


class Traces:
    """The trace header each message was sent with, by message id: SQS keeps the `X-Amzn-Trace-Id`
    header of a `SendMessage(Batch)` as each message's `AWSTraceHeader` system attribute (the
    header the SDKs' recursion-detection interceptor sets from the Lambda runtime's
    `_X_AMZN_TRACE_ID`); moto keeps only an explicit `MessageSystemAttributes`, so the proxy
    records the header here from the ids in the reply."""

    MESSAGE_ID = re.compile(rb'"MessageId"\s*:\s*"([^"]+)"|<MessageId>([^<]+)</MessageId>')

    def __init__(self):
        self.by_message: dict[str, str] = {}
        self.lock = threading.Lock()

    def sent(self, reply: bytes, header: str):
        with self.lock:
            for json_id, xml_id in self.MESSAGE_ID.findall(reply):
                self.by_message[(json_id or xml_id).decode()] = header

    def of(self, message: dict) -> str | None:
        system = (message.get("Attributes") or {}).get("AWSTraceHeader")
        with self.lock:
            return system or self.by_message.get(message["MessageId"])


def trace_fields(header: str | None) -> dict[str, str]:
    """`Root=…;Parent=…;Sampled=…;Lineage=…` as a dict (the SDK may percent-encode it)."""
    fields = {}
    for part in urllib.parse.unquote(header or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields[key] = value
    return fields


def lineage_of(header: str | None) -> dict[str, int]:
    """The `Lineage` of a trace header: invocations so far in this chain, per function (by a hash
    of its ARN), as `hash:count` entries joined by `|`."""
    lineage = {}
    for entry in trace_fields(header).get("Lineage", "").split("|"):
        key, sep, count = entry.rpartition(":")
        if sep and count.isdigit():
            lineage[key] = int(count)
    return lineage


class LoopDetection:
    """Lambda's recursive loop detection for the SQS trigger of one function (AWS docs, "Lambda
    recursive loop detection"): Lambda follows each event through the trace header, whose Lineage
    counts the function's invocations in one SQS -> Lambda -> SQS chain, and when the function
    would be invoked more than `LIMIT` times in a chain it is not invoked with that message: the
    message goes to the dead-letter queue of the source queue's redrive policy (`stopped` keeps a
    record). Unless the function's `RecursiveLoop` is `Allow` (the default is `Terminate`).

    A batch of messages from several chains is invoked with the deepest of their lineages (how AWS
    merges them is not documented; the deepest is the cautious choice)."""

    LIMIT = 16

    def __init__(self, function: Function, traces: Traces):
        self.key = hashlib.sha256(function.arn.encode()).hexdigest()[:8]
        self.allow = function.recursive_loop == "Allow"
        self.traces = traces
        self.stopped: list[dict] = []
        self.deepest = 0  # the most invocations seen in one chain
        self.lock = threading.Lock()

    def admit(self, messages: list[dict]) -> tuple[list[dict], list[dict], str]:
        """The messages to invoke the function with, those stopped, and the invocation's trace
        header (the chain continued, this function counted once more)."""
        admitted, stopped, lineage, root = [], [], {}, None
        for msg in messages:
            header = self.traces.of(msg)
            theirs = lineage_of(header)
            if theirs.get(self.key, 0) >= self.LIMIT and not self.allow:
                stopped.append({**msg, "lineage": theirs})
                continue
            admitted.append(msg)
            root = root or trace_fields(header).get("Root")
            for key, count in theirs.items():
                lineage[key] = max(lineage.get(key, 0), count)
        lineage[self.key] = lineage.get(self.key, 0) + 1
        with self.lock:
            self.deepest = max(self.deepest, lineage[self.key]) if admitted else self.deepest
            self.stopped.extend(stopped)
        root = root or f"1-{int(time.time()):08x}-{secrets.token_hex(12)}"
        text = "|".join(f"{k}:{v}" for k, v in sorted(lineage.items()))
        header = f"Root={root};Parent={secrets.token_hex(8)};Sampled=0;Lineage={text}"
        return admitted, stopped, header


# --- the template -------------------------------------------------------------------------------


def load_template() -> dict:
    from samcli.yamlhelper import yaml_parse

    return yaml_parse(TEMPLATE.read_text())


def functions_of(sam: dict) -> dict[str, dict]:
    return {
        name: res
        for name, res in sam["Resources"].items()
        if res.get("Type") == "AWS::Serverless::Function"
    }


def bootstrap_of(logical_id: str, resource: dict) -> Path:
    """The function's newest build: `.aws-sam/build/<LogicalId>/bootstrap` (`make build`, i.e.
    sam build), `target/lambda/<binary>/bootstrap.zip` (`make zips`, unpacked into
    target/simstack/) or `target/lambda/<binary>/bootstrap`, the binary being the function's
    `BuildProperties.Binary`."""
    binary = resource.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
    if not binary:
        raise AssertionError(f"{logical_id}: no Metadata.BuildProperties.Binary in template.yaml")
    built = ROOT / "target/lambda" / binary
    candidates = [p for p in (ROOT / ".aws-sam/build" / logical_id / "bootstrap", built / "bootstrap.zip",
                              built / "bootstrap") if p.is_file()]
    if not candidates:
        raise AssertionError(f"{logical_id}: no .aws-sam/build/{logical_id}/bootstrap nor {built}/bootstrap(.zip):"
                             " run `make zips` or `make build`")
    newest = max(candidates, key=lambda p: p.stat().st_mtime)
    if newest.suffix != ".zip":
        return newest
    unpacked = ROOT / "target/simstack" / binary
    with zipfile.ZipFile(newest) as z:
        if "bootstrap" not in z.namelist():
            raise AssertionError(f"{newest} has no bootstrap: {z.namelist()}")
        z.extract("bootstrap", unpacked)
    (unpacked / "bootstrap").chmod(0o755)
    return unpacked / "bootstrap"


def translate(sam: dict, parameters: dict[str, str], code: dict[str, str]) -> dict:
    """The SAM translator as `sam validate` runs it, with `code[logical_id]` as each CodeUri."""
    from samtranslator.parser import parser
    from samtranslator.translator.translator import Translator

    sam = copy.deepcopy(sam)
    for name, res in functions_of(sam).items():
        res.setdefault("Properties", {})["CodeUri"] = code[name]
    translator = Translator(
        managed_policy_map=None,
        sam_parser=parser.Parser(),
        plugins=[],
        boto_session=boto3.Session(region_name=REGION, **_boto_keys()),
    )
    return translator.translate(
        sam_template=sam,
        parameter_values={
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            **parameters,
        },
        get_managed_policy_map=lambda: {},
    )


def _boto_keys():
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _substitute(node: Any, logical_id: str, ref: str, attrs: dict[str, str]) -> Any:
    """Replaces `Ref: logical_id` / `GetAtt logical_id.X` (and `${logical_id}` in `Fn::Sub`)."""
    if isinstance(node, dict):
        if node.get("Ref") == logical_id and len(node) == 1:
            return ref
        getatt = node.get("Fn::GetAtt")
        if len(node) == 1 and getatt is not None:
            parts = getatt if isinstance(getatt, list) else getatt.split(".", 1)
            if parts[0] == logical_id:
                return attrs[parts[1]]
        if len(node) == 1 and "Fn::Sub" in node:
            sub = node["Fn::Sub"]
            text = sub if isinstance(sub, str) else sub[0]
            text = text.replace("${" + logical_id + "}", ref)
            for name, value in attrs.items():
                text = text.replace("${" + logical_id + "." + name + "}", value)
            return {"Fn::Sub": text if isinstance(sub, str) else [text, _substitute(sub[1], logical_id, ref, attrs)]}
        return {k: _substitute(v, logical_id, ref, attrs) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, logical_id, ref, attrs) for v in node]
    return node


def _provision_secret(moto: Moto, stack: str, logical_id: str, props: dict) -> tuple[str, dict]:
    """`AWS::SecretsManager::Secret` as CloudFormation's handler creates it: `SecretString`, or
    a password from `GenerateSecretString` (moto's `get_random_password`)."""
    sm = moto.client("secretsmanager")
    name = props.get("Name") or f"{stack}-{logical_id}-{secrets.token_hex(4)}"
    if "SecretString" in props:
        value = props["SecretString"]
    else:
        gen = dict(props.get("GenerateSecretString", {}))
        template, key = gen.pop("SecretStringTemplate", None), gen.pop("GenerateStringKey", None)
        allowed = {
            "PasswordLength", "ExcludeCharacters", "ExcludeNumbers", "ExcludePunctuation",
            "ExcludeUppercase", "ExcludeLowercase", "IncludeSpace", "RequireEachIncludedType",
        }
        unknown = set(gen) - allowed
        if unknown:
            raise AssertionError(f"{logical_id}: GenerateSecretString {sorted(unknown)} not simulated")
        password = sm.get_random_password(**{k: v for k, v in gen.items()})["RandomPassword"]
        if template:
            doc = json.loads(template)
            doc[key] = password
            value = json.dumps(doc)
        else:
            value = password
    kwargs = {"Name": name, "SecretString": value}
    if props.get("KmsKeyId") and isinstance(props["KmsKeyId"], str):
        kwargs["KmsKeyId"] = props["KmsKeyId"]
    arn = sm.create_secret(**kwargs)["ARN"]
    return arn, {"Id": arn}


# Types moto's CloudFormation cannot create, provisioned through the service's API instead when
# their properties are plain values (no reference to another resource of the stack).
PROVISIONED = {"AWS::SecretsManager::Secret": _provision_secret}


@dataclass
class Function:
    logical_id: str
    name: str
    arn: str
    bootstrap: Path
    environment: dict[str, str]
    memory: int
    timeout: int
    recursive_loop: str = "Terminate"  # Lambda's default


@dataclass
class Route:
    method: str  # upper case, or ANY
    path: str  # /event-hooks/{id}, or $default
    function: str  # logical id

    @property
    def key(self) -> str:
        return "$default" if self.path == "$default" else f"{self.method} {self.path}"


@dataclass
class Mapping:
    uuid: str
    function: str  # logical id
    queue_arn: str
    batch_size: int
    window: int
    report_failures: bool
    enabled: bool


@dataclass
class Stack:
    name: str
    parameters: dict[str, str]
    template: dict  # the translated CloudFormation template
    outputs: dict[str, str]
    functions: dict[str, Function]
    routes: list[Route]
    mappings: list[Mapping]
    left_out: list[str]  # "LogicalId (Type)"
    provisioned: list[str]


def create_stack(moto: Moto, aws_endpoint: str, parameters: dict[str, str], name: str = "event-hooks") -> Stack:
    """Creates the template's stack in moto and reads back what the functions get."""
    sam = load_template()
    declared = sam.get("Parameters", {})
    parameters = {k: v for k, v in parameters.items() if k in declared}

    s3 = moto.client("s3")
    bucket = "sim-code"
    s3.create_bucket(Bucket=bucket)
    code, bootstraps = {}, {}
    for logical_id, res in functions_of(sam).items():
        bootstrap = bootstrap_of(logical_id, res)
        bootstraps[logical_id] = bootstrap
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            info = zipfile.ZipInfo("bootstrap")
            info.external_attr = 0o755 << 16
            z.writestr(info, bootstrap.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)
        s3.put_object(Bucket=bucket, Key=f"{logical_id}.zip", Body=buf.getvalue())
        code[logical_id] = f"s3://{bucket}/{logical_id}.zip"

    cfn = translate(sam, parameters, code)
    created = copy.deepcopy(cfn)
    left_out, provisioned = [], []
    for logical_id, res in list(created["Resources"].items()):
        rtype = res["Type"]
        if rtype in LEFT_OUT:
            # References to it get a stand-in id (the gateway's API id for an HTTP API).
            stand_in = API_ID if rtype == "AWS::ApiGatewayV2::Api" else f"{name}-{logical_id}"
            attrs = {"ApiEndpoint": f"https://{stand_in}.execute-api.{REGION}.amazonaws.com",
                     "ApiId": stand_in, "Arn": f"arn:aws:sim:{REGION}:{ACCOUNT}:{stand_in}"}
            del created["Resources"][logical_id]
            created = _substitute(created, logical_id, stand_in, attrs)
            left_out.append(f"{logical_id} ({rtype})")
        elif rtype in PROVISIONED:
            if "Condition" in res and not condition(res["Condition"], created, parameters):
                continue  # moto leaves it out too, and Fn::If never takes its branch
            props = _resolve_parameters(res.get("Properties", {}), created, parameters)
            ref, attrs = PROVISIONED[rtype](moto, name, logical_id, props)
            del created["Resources"][logical_id]
            created = _substitute(created, logical_id, ref, attrs)
            provisioned.append(f"{logical_id} ({rtype})")

    cf = moto.client("cloudformation")
    cf.create_stack(
        StackName=name,
        TemplateBody=json.dumps(created),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
    )
    desc = cf.describe_stacks(StackName=name)["Stacks"][0]
    if desc["StackStatus"] != "CREATE_COMPLETE":
        raise AssertionError(f"stack {name}: {desc['StackStatus']} {desc.get('StackStatusReason')}")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in desc.get("Outputs", [])}
    physical = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cf.list_stack_resources(StackName=name)["StackResourceSummaries"]
    }
    missing = [
        k for k, r in created["Resources"].items() if k not in physical and "Condition" not in r
    ]
    if missing:
        raise AssertionError(f"moto did not create {missing}")

    lam = moto.client("lambda")
    functions = {}
    for logical_id in functions_of(sam):
        if logical_id not in physical:
            continue
        conf = lam.get_function_configuration(FunctionName=physical[logical_id])
        functions[logical_id] = Function(
            logical_id=logical_id,
            name=conf["FunctionName"],
            arn=conf["FunctionArn"],
            bootstrap=bootstraps[logical_id],
            environment={k: str(v) for k, v in conf.get("Environment", {}).get("Variables", {}).items()},
            memory=conf["MemorySize"],
            timeout=conf["Timeout"],
            # moto keeps no recursion config: the created function's property, as declared.
            recursive_loop=str(_resolve_parameters(
                created["Resources"][logical_id]["Properties"].get("RecursiveLoop", "Terminate"),
                created, parameters)),
        )
        if conf.get("Handler") != "bootstrap" or not str(conf.get("Runtime", "")).startswith("provided"):
            raise AssertionError(f"{logical_id}: {conf.get('Runtime')}/{conf.get('Handler')} is not a custom runtime bootstrap")

    by_arn = {f.arn: k for k, f in functions.items()}
    by_name = {f.name: k for k, f in functions.items()}
    mappings = []
    for logical_id, res in created["Resources"].items():
        if res["Type"] != "AWS::Lambda::EventSourceMapping":
            continue
        esm = lam.get_event_source_mapping(UUID=physical[logical_id])
        fn = by_arn.get(esm["FunctionArn"]) or by_name.get(esm["FunctionArn"].split(":")[-1])
        mappings.append(
            Mapping(
                uuid=esm["UUID"],
                function=fn,
                queue_arn=esm["EventSourceArn"],
                batch_size=esm.get("BatchSize") or 10,
                window=esm.get("MaximumBatchingWindowInSeconds") or 0,
                report_failures="ReportBatchItemFailures" in (esm.get("FunctionResponseTypes") or []),
                enabled=esm.get("State", "Enabled") in ("Enabled", "Enabling") if "State" in esm else True,
            )
        )
        # moto would otherwise invoke the function itself (through Docker) on every send.
        lam.update_event_source_mapping(UUID=esm["UUID"], Enabled=False)

    routes = routes_of(cfn, {k: f for k, f in functions.items()})
    return Stack(
        name=name,
        parameters=parameters,
        template=cfn,
        outputs=outputs,
        functions=functions,
        routes=routes,
        mappings=mappings,
        left_out=left_out,
        provisioned=provisioned,
    )


def _resolve_parameters(node: Any, template: dict, parameters: dict[str, str]) -> Any:
    """`Ref` to parameters (with their defaults) and pseudo parameters, `Fn::If` / `Fn::Sub` over
    them, in `node`; a reference to a resource is not supported in a provisioned resource."""
    declared = template.get("Parameters", {})
    if isinstance(node, dict):
        if len(node) == 1 and "Ref" in node:
            name = node["Ref"]
            if name in parameters:
                return parameters[name]
            if name in declared and "Default" in declared[name]:
                return str(declared[name]["Default"])
            pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws",
                      "AWS::NoValue": None, "AWS::URLSuffix": "amazonaws.com"}
            if name in pseudo:
                return pseudo[name]
            raise AssertionError(f"cannot provision a property referring to {name}")
        if len(node) == 1 and "Fn::If" in node:
            cond, yes, no = node["Fn::If"]
            chosen = yes if condition(cond, template, parameters) else no
            return _resolve_parameters(chosen, template, parameters)
        if len(node) == 1 and "Fn::Sub" in node and isinstance(node["Fn::Sub"], str):
            text = node["Fn::Sub"]
            for k in re.findall(r"\$\{([^}!]+)\}", text):
                text = text.replace("${" + k + "}", str(_resolve_parameters({"Ref": k}, template, parameters)))
            return text
        if len(node) == 1 and next(iter(node)).startswith("Fn::"):
            raise AssertionError(f"cannot provision a property using {next(iter(node))}")
        out = {k: _resolve_parameters(v, template, parameters) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not None}
    if isinstance(node, list):
        return [v for v in (_resolve_parameters(v, template, parameters) for v in node) if v is not None]
    return node


def condition(name_or_expr: Any, template: dict, parameters: dict[str, str]) -> bool:
    """A template condition (by name, or an `Fn::Equals/Not/And/Or` / `Condition` expression)."""
    if isinstance(name_or_expr, str):
        return condition(template["Conditions"][name_or_expr], template, parameters)
    (fn, args), = name_or_expr.items()
    if fn == "Condition":
        return condition(args, template, parameters)
    if fn == "Fn::Equals":
        a, b = (_resolve_parameters(x, template, parameters) for x in args)
        return str(a) == str(b)
    if fn == "Fn::Not":
        return not condition(args[0], template, parameters)
    if fn == "Fn::And":
        return all(condition(x, template, parameters) for x in args)
    if fn == "Fn::Or":
        return any(condition(x, template, parameters) for x in args)
    raise AssertionError(f"condition function {fn} not simulated")


def routes_of(cfn: dict, functions: dict[str, Function]) -> list[Route]:
    """The HTTP API's routes, from the OpenAPI body SAM generates for `AWS::ApiGatewayV2::Api`."""
    routes = []
    for logical_id, res in cfn["Resources"].items():
        if res["Type"] != "AWS::ApiGatewayV2::Api":
            continue
        body = res["Properties"].get("Body")
        if body is None:
            raise AssertionError(f"{logical_id}: an HTTP API without an OpenAPI Body is not simulated")
        for path, methods in body.get("paths", {}).items():
            for method, op in methods.items():
                integration = op.get("x-amazon-apigateway-integration")
                if not integration:
                    continue
                if integration.get("type") != "aws_proxy" or integration.get("payloadFormatVersion") != "2.0":
                    raise AssertionError(f"{method} {path}: only Lambda proxy integrations (payload 2.0) are simulated")
                uri = json.dumps(integration["uri"])
                target = [k for k in functions if "${" + k + ".Arn}" in uri or f'"{k}"' in uri]
                if len(target) != 1:
                    raise AssertionError(f"{method} {path}: integration {uri} names no function of the stack")
                m = "ANY" if method == "x-amazon-apigateway-any-method" else method.upper()
                routes.append(Route(m, "$default" if path == "$default" else path, target[0]))
    return routes


# --- Lambda: the RIE ------------------------------------------------------------------------------


class TraceHandOver:
    """Between the bootstrap and the emulator's runtime API: adds what Lambda hands the runtime
    with each event and the emulator does not, the invocation's trace header as
    `Lambda-Runtime-Trace-Id` (the emulator drops an invoke's `X-Amzn-Trace-Id`). The Rust runtime
    puts it in `_X_AMZN_TRACE_ID`, where the AWS SDK's recursion-detection interceptor reads it for
    every request's `X-Amzn-Trace-Id`. `trace` is the header of the invocation in progress (one at
    a time per emulator, as `Runtime.invoke` serialises them)."""

    def __init__(self, upstream_port: int):
        self.trace: str | None = None
        hand_over = self

        class Handler(LoopbackHandler):
            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                # No timeout: /next is a long poll that ends with the next invocation.
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=None)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    reply = conn.getresponse()
                    data = reply.read()
                except (OSError, http.client.HTTPException):
                    self.close_connection = True  # the emulator stopped
                    return
                self.send_response(reply.status)
                for k, v in reply.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                trace = hand_over.trace
                if self.path.endswith("/invocation/next") and reply.status == 200 and trace:
                    self.send_header("Lambda-Runtime-Trace-Id", trace)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()



class Runtime:
    """One function's bootstrap under the SAM CLI's Runtime Interface Emulator (one instance, so
    invocations are serialised as on one Lambda execution environment)."""

    # The INIT phase, from the bootstrap's exec (on the first invocation) to its first request for
    # an event. (The emulator's REPORT line also says "Init Duration", but a near-zero one.)
    INIT = re.compile(r"INIT REPORT\(durationMs: ([0-9.]+)\)")

    def __init__(self, fn: Function, aws_endpoint: str, extra_env: dict[str, str] | None = None):
        self.fn = fn
        self.port = free_port()
        self.api_port = free_port()
        self.task = Path(tempfile.mkdtemp(prefix=f"task-{fn.logical_id}."))
        self.hand_over = TraceHandOver(self.api_port)
        # The emulator runs `bootstrap`, pointed at its runtime API: this one points the function's
        # own bootstrap at the trace hand-over in front of it instead.
        shutil.copy2(fn.bootstrap, self.task / "function-bootstrap")
        wrapper = self.task / "bootstrap"
        wrapper.write_text("#!/bin/sh\n"
                           f"AWS_LAMBDA_RUNTIME_API={self.hand_over.address} exec {self.task}/function-bootstrap \"$@\"\n")
        wrapper.chmod(0o755)
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": aws_endpoint,
            "AWS_LAMBDA_FUNCTION_NAME": fn.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(fn.timeout),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": "simstack",
            "LAMBDA_TASK_ROOT": str(self.task),
            "_HANDLER": "bootstrap",
            **CREDENTIALS,
            **(extra_env or {}),
            **fn.environment,
        }
        self.log_path = self.task / "rie.log"
        self.log = open(self.log_path, "wb")
        self.env = env
        # Lambda's own faults (lambda_faults.LambdaFaults), set by a chaos run; `restarts` counts
        # the cold restarts after a kill or a timeout.
        self.faults = None
        self.restarts = 0
        self.restarting = False
        self.lock = threading.Lock()
        self.url = f"http://127.0.0.1:{self.port}/2015-03-31/functions/function/invocations"
        self.start()
        RUNNING.append(self)

    def start(self):
        """Starts the emulator (and, on the first invocation, the bootstrap) in a process group of
        its own, so that a kill takes both, as the end of an execution environment does."""
        fn = self.fn
        self.process = subprocess.Popen(
            [
                str(RIE),
                "--log-level", "info",
                "--runtime-interface-emulator-address", f"127.0.0.1:{self.port}",
                "--runtime-api-address", f"127.0.0.1:{self.api_port}",
                str(self.task / "bootstrap"),
            ],
            cwd=self.task,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up():
            if self.process.poll() is not None:
                raise AssertionError(f"RIE for {fn.logical_id} exited: {self.output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(up, f"the RIE of {fn.logical_id}")

    def kill(self, why: str):
        """SIGKILL of the environment (emulator and bootstrap), logged in `output()`."""
        _kill_session(self.process.pid)
        self.log.write(f"\n=== simstack: SIGKILL of the environment ({why}) ===\n".encode())
        self.log.flush()

    def restart(self):
        """A cold environment after a kill: the emulator again, the bootstrap on the next invoke."""
        self.restarting = True
        try:
            self.process.wait(10)
            self.restarts += 1
            self.start()
        finally:
            self.restarting = False

    def check_alive(self):
        """Fails naming the function when its bootstrap could not start (the emulator's "Init
        failed", e.g. a missing environment variable) or the emulator exited."""
        if self.restarting:
            return
        output = self.output()
        if "Init failed" in output or self.process.poll() is not None:
            raise AssertionError(f"{self.fn.logical_id} cannot start under the emulator:\n{output[-3000:]}")

    def invoke(self, event: Any, trace: str | None = None) -> tuple[int, bytes, str]:
        """POSTs `event` (with `trace` as its `X-Amzn-Trace-Id`, which the emulator hands to the
        runtime as `Lambda-Runtime-Trace-Id`); returns the RIE's status, the raw reply and its
        function-error header. Past the function's `Timeout` (+ 1 s) the environment is killed
        and restarted cold, as Lambda does; so is it after a fault of `faults`. A killed or timed
        out invocation answers 200 with the function error `Unhandled` (Lambda's
        `Runtime.ExitError` / `Sandbox.Timedout`)."""
        data = json.dumps(event).encode()
        headers = {"Content-Type": "application/json"}
        if trace:
            headers["X-Amzn-Trace-Id"] = trace
        records = len(event.get("Records") or []) if isinstance(event, dict) else 0
        with self.lock:
            self.hand_over.trace = trace
            planned = self.faults.plan(self.fn.logical_id, max(records, 1)) if self.faults else None
            fired = threading.Event()
            timer = None
            if planned:
                def fire():
                    fired.set()
                    self.kill(f"fault {planned.kind} after {planned.after:.2f} s, {records} records in flight")
                timer = threading.Timer(planned.after, fire)
                timer.start()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.fn.timeout + 1)
            try:
                conn.request("POST", "/2015-03-31/functions/function/invocations", body=data,
                             headers=headers)
                reply = conn.getresponse()
                body = reply.read()
                status, error = reply.status, reply.getheader("X-Amz-Function-Error") or ""
            except (OSError, http.client.HTTPException) as err:
                if not fired.is_set():
                    self.kill(f"no answer within the function's Timeout {self.fn.timeout} s: {err!r}")
                kind = "Sandbox.Timedout" if not fired.is_set() or planned.kind == "cut" else "Runtime.ExitError"
                status, body, error = 200, json.dumps({"errorType": kind}).encode(), "Unhandled"
            finally:
                conn.close()
                if timer:
                    timer.cancel()
            if planned:
                self.faults.record(self.fn.logical_id, planned.kind, records, planned.after, fired.is_set())
            if fired.is_set() or self.process.poll() is not None:
                if not fired.is_set():
                    self.kill("the environment exited")
                self.restart()
        return status, body, error

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def init_durations(self) -> list[float]:
        return [float(m) for m in self.INIT.findall(self.output())]

    def stop(self):
        if self in RUNNING:
            RUNNING.remove(self)
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        _kill_session(self.process.pid)
        self.hand_over.stop()
        self.log.close()
        shutil.rmtree(self.task, ignore_errors=True)


def session_members(leader: int) -> list[int]:
    """The live processes (not zombies) of the session that `leader` (the emulator, started in a
    session of its own) leads: the emulator and what it started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # Fields after the command's closing parenthesis: state, ppid, pgrp, session, ...
            state, _ppid, _group, session = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
            if int(session) == leader and state != "Z":
                found.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            pass  # gone meanwhile, or not ours to read
    return found


def _kill_session(leader: int):
    """SIGKILL of every process in the session that `leader` leads. Not its process group: the
    emulator starts the bootstrap in a group of its own, and a bootstrap that outlived its emulator
    would finish the killed invocation and then take invocations from the next emulator on the same
    ports, beside the new bootstrap."""
    for pid in session_members(leader):
        try:
            os.kill(pid, 9)
        except OSError:
            pass  # gone meanwhile


# --- API Gateway (HTTP API) -----------------------------------------------------------------------


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s != ""] if path != "/" else []


def match_route(routes: list[Route], method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """API Gateway HTTP API route selection: the most specific path wins (a literal segment over a
    `{param}`, which matches one segment, over a greedy `{param+}`), then a method over `ANY`;
    `$default` catches the rest. No match is API Gateway's 404."""
    segs = _segments(path)
    best, best_rank, best_params = None, None, None
    for route in routes:
        if route.path == "$default":
            continue
        if route.method not in ("ANY", method):
            continue
        pattern = _segments(route.path)
        params, rank, ok = {}, [], True
        for i, p in enumerate(pattern):
            greedy = re.fullmatch(r"\{(\w+)\+\}", p)
            if greedy:
                if i >= len(segs):
                    ok = False
                    break
                params[greedy.group(1)] = "/".join(segs[i:])
                rank.append(0)
                segs_used = len(segs)
                break
            if i >= len(segs):
                ok = False
                break
            param = re.fullmatch(r"\{(\w+)\}", p)
            if param:
                params[param.group(1)] = urllib.parse.unquote(segs[i])
                rank.append(1)
            elif p == segs[i]:
                rank.append(2)
            else:
                ok = False
                break
        else:
            segs_used = len(pattern)
        if not ok or segs_used != len(segs):
            continue
        key = (rank, route.method != "ANY")
        if best_rank is None or key > best_rank:
            best, best_rank, best_params = route, key, params
    if best is not None:
        return best, best_params
    default = [r for r in routes if r.path == "$default"]
    return (default[0], {}) if default else None


class Gateway:
    """An HTTP API on a loopback port: each request becomes a payload 2.0 event for the function of
    the matching route; the function's reply becomes the HTTP response."""

    def __init__(self, routes: list[Route], runtimes: dict[str, Runtime]):
        gateway = self
        self.routes, self.runtimes = routes, runtimes
        self.api_id = API_ID

        class Handler(LoopbackHandler):
            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, data = gateway.handle(self.command, self.path, self.headers, body,
                                                       self.client_address[0])
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, method: str, target: str, headers, body: bytes, source_ip: str):
        parsed = urllib.parse.urlsplit(target)
        found = match_route(self.routes, method, parsed.path)
        json_type = [("Content-Type", "application/json")]
        if found is None:
            return 404, json_type, b'{"message":"Not Found"}'
        route, params = found
        event = self.event(route, method, parsed, headers, body, params, source_ip)
        status, reply, error = self.runtimes[route.function].invoke(event)
        if status != 200 or error:
            return 500, json_type, b'{"message":"Internal Server Error"}'
        return self.response(reply)

    def event(self, route: Route, method, parsed, headers, body: bytes, params, source_ip):
        now = time.time()
        hdrs: dict[str, str] = {}
        cookies = []
        for k, v in headers.items():
            k = k.lower()
            if k == "cookie":
                cookies.extend(c.strip() for c in v.split(";") if c.strip())
                continue
            hdrs[k] = f"{hdrs[k]},{v}" if k in hdrs else v
        query: dict[str, str] = {}
        for k, v in urllib.parse.parse_qsl(parsed.query, keep_blank_values=True):
            query[k] = f"{query[k]},{v}" if k in query else v
        text_types = ("application/json", "text/", "application/x-www-form-urlencoded", "application/xml")
        is_text = not body or any(t in hdrs.get("content-type", "") for t in text_types)
        event = {
            "version": "2.0",
            "routeKey": route.key,
            "rawPath": parsed.path,
            "rawQueryString": parsed.query,
            "headers": hdrs,
            "requestContext": {
                "accountId": ACCOUNT,
                "apiId": self.api_id,
                "domainName": f"{self.api_id}.execute-api.{REGION}.amazonaws.com",
                "domainPrefix": self.api_id,
                "http": {
                    "method": method,
                    "path": parsed.path,
                    "protocol": "HTTP/1.1",
                    "sourceIp": source_ip,
                    "userAgent": hdrs.get("user-agent", ""),
                },
                "requestId": uuid.uuid4().hex[:16],
                "routeKey": route.key,
                "stage": "$default",
                "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "timeEpoch": int(now * 1000),
            },
            "isBase64Encoded": not is_text,
        }
        if cookies:
            event["cookies"] = cookies
        if query:
            event["queryStringParameters"] = query
        if params:
            event["pathParameters"] = params
        if body:
            event["body"] = body.decode() if is_text else base64.b64encode(body).decode()
        return event

    @staticmethod
    def response(reply: bytes):
        """Payload 2.0 response: a `statusCode` object, or any other JSON as a 200 JSON body."""
        try:
            doc = json.loads(reply)
        except ValueError:
            return 500, [("Content-Type", "application/json")], b'{"message":"Internal Server Error"}'
        if not isinstance(doc, dict) or "statusCode" not in doc:
            return 200, [("Content-Type", "application/json")], reply
        headers = [(k, str(v)) for k, v in (doc.get("headers") or {}).items()]
        for k, vs in (doc.get("multiValueHeaders") or {}).items():
            headers.extend((k, str(v)) for v in vs)
        for c in doc.get("cookies") or []:
            headers.append(("Set-Cookie", c))
        body = doc.get("body") or ""
        data = base64.b64decode(body) if doc.get("isBase64Encoded") else body.encode()
        return int(doc["statusCode"]), headers, data

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# --- SQS event source mappings --------------------------------------------------------------------


def queue_url_of(sqs, arn: str) -> str:
    name = arn.split(":")[-1]
    return sqs.get_queue_url(QueueName=name)["QueueUrl"]


class Poller:
    """One SQS event source mapping: receives up to `batch_size` messages (waiting up to the
    batching window), invokes the function with them, and deletes the ones it did not report as
    batch item failures (all of them if it does not report, none if the invocation failed).
    What is left comes back after the queue's visibility timeout and, past `maxReceiveCount`, is
    moved to the dead-letter queue by the queue's redrive policy (moto does that). With `loops`,
    Lambda's recursive loop detection decides which messages reach the function."""

    def __init__(self, mapping: Mapping, runtime: Runtime, sqs, loops: LoopDetection | None = None):
        self.mapping, self.runtime, self.sqs, self.loops = mapping, runtime, sqs, loops
        self.url = queue_url_of(sqs, mapping.queue_arn)
        self.stopping = threading.Event()
        self.counts: _Counter[str] = _Counter()
        self.invocations = 0
        self.errors: list[str] = []
        self.busy = threading.Lock()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopping.is_set():
            try:
                self.poll_once()
            except Exception as err:  # noqa: BLE001 - keep polling, as Lambda does; tests read errors
                self.errors.append(repr(err))
                time.sleep(0.2)

    def poll_once(self):
        m = self.mapping
        reply = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=min(m.batch_size, 10),
            WaitTimeSeconds=1,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        messages = reply.get("Messages", [])
        if not messages:
            return
        with self.busy:
            self.counts["SQS.ReceiveMessage"] += 1
            if m.window and len(messages) < m.batch_size:
                deadline = time.monotonic() + m.window
                while len(messages) < m.batch_size and time.monotonic() < deadline:
                    more = self.sqs.receive_message(
                        QueueUrl=self.url, MaxNumberOfMessages=min(m.batch_size - len(messages), 10),
                        WaitTimeSeconds=1, AttributeNames=["All"], MessageAttributeNames=["All"],
                    ).get("Messages", [])
                    if more:
                        self.counts["SQS.ReceiveMessage"] += 1
                    messages += more
            trace = None
            if self.loops is not None:
                messages, stopped, trace = self.loops.admit(messages)
                for msg in stopped:
                    self.loop_stopped(msg)
                if not messages:
                    return
            event = {"Records": [self.record(msg) for msg in messages]}
            status, body, error = self.runtime.invoke(event, trace) if trace else self.runtime.invoke(event)
            self.invocations += 1
            if status != 200 or error:
                return  # nothing deleted: the batch comes back after the visibility timeout
            failed = set()
            if m.report_failures:
                try:
                    doc = json.loads(body) if body.strip() else None
                except ValueError:
                    doc = None
                if isinstance(doc, dict) and doc.get("batchItemFailures") is not None:
                    failed = {f.get("itemIdentifier") for f in doc["batchItemFailures"]}
                    ids = {msg["MessageId"] for msg in messages}
                    if not failed <= ids:
                        return  # an unknown id fails the whole batch, as on Lambda
            done = [msg for msg in messages if msg["MessageId"] not in failed]
            for i in range(0, len(done), 10):
                chunk = done[i : i + 10]
                self.sqs.delete_message_batch(
                    QueueUrl=self.url,
                    Entries=[{"Id": str(j), "ReceiptHandle": msg["ReceiptHandle"]} for j, msg in enumerate(chunk)],
                )
                self.counts["SQS.DeleteMessageBatch"] += 1

    def loop_stopped(self, msg: dict):
        """A message Lambda's loop detection kept from the function: to the dead-letter queue of
        the queue's redrive policy, as it is; without one it stays and comes back."""
        policy = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["RedrivePolicy"])[
            "Attributes"].get("RedrivePolicy")
        if not policy:
            return
        dlq = queue_url_of(self.sqs, json.loads(policy)["deadLetterTargetArn"])
        attributes = {k: {kk: vv for kk, vv in v.items() if kk in ("StringValue", "BinaryValue", "DataType")}
                      for k, v in (msg.get("MessageAttributes") or {}).items()}
        self.sqs.send_message(QueueUrl=dlq, MessageBody=msg["Body"], MessageAttributes=attributes)
        self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=msg["ReceiptHandle"])

    def record(self, msg: dict) -> dict:
        attrs = {}
        for name, a in (msg.get("MessageAttributes") or {}).items():
            attrs[name] = {
                "stringValue": a.get("StringValue"),
                "binaryValue": base64.b64encode(a["BinaryValue"]).decode() if "BinaryValue" in a else None,
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": a["DataType"],
            }
            attrs[name] = {k: v for k, v in attrs[name].items() if v is not None}
        return {
            "messageId": msg["MessageId"],
            "receiptHandle": msg["ReceiptHandle"],
            "body": msg["Body"],
            "attributes": msg.get("Attributes", {}),
            "messageAttributes": attrs,
            "md5OfBody": msg.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.mapping.queue_arn,
            "awsRegion": REGION,
        }

    def idle(self) -> bool:
        return not self.busy.locked()

    def stop(self):
        self.stopping.set()
        self.thread.join(5)


def admin_token(moto: Moto, stack: Stack) -> str | None:
    """From the stack's `AdminTokenSecretArn` output (Secrets Manager: the string, or the `token`
    key of a JSON secret), else the `AdminToken` parameter the stack was created with."""
    arn = stack.outputs.get("AdminTokenSecretArn")
    if arn:
        secret = moto.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
        try:
            doc = json.loads(secret)
        except ValueError:
            return secret
        if isinstance(doc, dict):
            return doc["token"] if "token" in doc else next(iter(doc.values()))
        return secret
    return stack.parameters.get("AdminToken") or None


# --- the whole thing ------------------------------------------------------------------------------


class SimulatedStack:
    """moto + the counting proxy + the created stack + one RIE per function + gateway + pollers."""

    def __init__(self, parameters: dict[str, str], extra_env: dict[str, str] | None = None,
                 http: bool = True, pollers: bool = True, faults: Faults | None = None):
        self.moto = Moto()
        self.parts: list[Any] = []
        try:
            self.traces = Traces()
            self.counter = Counter(self.moto.port, self.traces, faults=faults)
            self.parts.append(self.counter)
            self.stack = create_stack(self.moto, self.counter.endpoint, parameters)
            self.runtimes = {
                k: Runtime(f, self.counter.endpoint, extra_env) for k, f in self.stack.functions.items()
            }
            self.parts.extend(self.runtimes.values())
            self.sqs = self.moto.client("sqs")
            self.gateway = Gateway(self.stack.routes, self.runtimes) if http else None
            if self.gateway:
                self.parts.append(self.gateway)
            self.pollers = []
            if pollers:
                # Each SQS trigger scales its own invocations on AWS (its MaximumConcurrency), so
                # one trigger's slow batch never holds the other's: each poller gets an execution
                # environment of its own (the function's first one for its first trigger), the
                # least concurrency two triggers have on AWS.
                polled: set[str] = set()
                for mapping in self.stack.mappings:
                    if mapping.enabled:
                        runtime = self.runtimes[mapping.function]
                        if mapping.function in polled:
                            runtime = Runtime(self.stack.functions[mapping.function],
                                              self.counter.endpoint, extra_env)
                            self.parts.append(runtime)
                        polled.add(mapping.function)
                        loops = LoopDetection(self.stack.functions[mapping.function], self.traces)
                        self.pollers.append(Poller(mapping, runtime, self.sqs, loops))
                self.parts.extend(self.pollers)
        except BaseException:
            self.stop()
            raise

    def admin_token(self) -> str | None:
        return admin_token(self.moto, self.stack)

    def stop(self):
        for part in reversed(self.parts):
            try:
                part.stop()
            except Exception:  # noqa: BLE001 - stop the rest whatever happens
                pass
        self.moto.stop()

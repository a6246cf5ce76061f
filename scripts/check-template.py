#!/usr/bin/env python3
"""Template settings that pass `sam validate --lint` and the simulated stack but fail on AWS.

Run by scripts/validate-template.sh (`make validate-template`, part of `make test`) with .venv's
Python. Reads template.yaml, translated by the SAM translator as `sam validate` does, and checks,
for each stack parameter scenario below (defaults, KmsKeyArn=create, a key of your own, an SSM
token parameter, a secret of your own):

- deletion: no resource is `DeletionPolicy: Retain`, which also keeps what a failed first create
  made (and blocks the next create by name): RetainExceptOnCreate.
- kms: the stack-created key (KmsKeyArn=create) has rotation on and a key policy that lets this
  account's IAM policies, CloudWatch Logs (for the log groups, conditioned on the logs encryption
  context) and CloudWatch (alarms publishing to the encrypted topic) use it; everything encrypted
  uses it; the parameter's description names those statements for a key you bring.
- iam: every function's role grants exactly what its code calls, both ways: the AWS SDK calls of
  each adapter method (read from shared/src: `.put_item()`, transaction items, …) that the
  function uses (USES below), on the resource its environment variable names, plus what Lambda
  needs (its own log group, its SQS triggers) and the KMS key when there is one. No AWS managed
  policy (AWSLambdaBasicExecutionRole allows every log group), no action that IAM does not have.
- alarms: every queue a function consumes has an age alarm, the deliveries queue's above its
  longest delay (900 s); the API 5xx alarm leaves out every ProbeFunction route (test/ping answer
  502 by design) and those routes have per-route metrics.
- readme: every `aws sqs start-message-move-task` names its --destination-arn (dead letters that
  the dispatcher sent itself have no source queue to return to).

Prints one line per check; exits 1 on any problem. `--translated FILE` writes the translated
template (defaults) for the linters.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
SRC = ROOT / "shared" / "src"
REGION, ACCOUNT = "us-east-1", "123456789012"

SCENARIOS: dict[str, dict[str, str]] = {
    "defaults": {},
    "KmsKeyArn=create": {"KmsKeyArn": "create"},
    "own key": {"KmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0000"},
    "SSM token": {"AdminTokenParameter": "/event-hooks/token"},
    "own secret": {"AdminTokenSecretArn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:t-AbCdEf"},
}

# ---------------------------------------------------------------------------------------------
# What each function's code calls. Keys are `Type::method` of the adapters in shared/src (their
# SDK calls are read from the source below); the value is the environment variable naming the
# resource the call goes to. Classified by reading the functions' main.rs and the code they run:
# a method a function constructs the adapter for but never calls is left out, with the reason in
# NOT_CALLED where no function calls it in Lambda at all.
HOOK_STORE_ALL = ["get", "list", "put", "delete", "put_custom_event", "delete_custom_event", "version", "list_custom_events"]
USES: dict[str, list[tuple[str, str]]] = {
    "AdminFunction": [
        *[(f"DynamoHookStore::{m}", "HOOKS_TABLE") for m in HOOK_STORE_ALL],
        ("SqsQueue::send", "EVENTS_QUEUE_URL"),  # POST /events, crud events
        ("SqsQueue::send_batch", "EVENTS_QUEUE_URL"),
        ("SqsQueue::send", "DELIVERIES_QUEUE_URL"),  # retry, replay
        ("SqsQueue::send_batch", "DELIVERIES_QUEUE_URL"),
        ("DynamoDeliveryLog::get", "DELIVERIES_TABLE"),  # retry reads the delivery
        ("DynamoDeliveryLog::list", "DELIVERIES_TABLE"),
        ("DynamoDeliveryLog::list_window", "DELIVERIES_TABLE"),  # replay
        ("DynamoDeliveryLog::claim_resend", "DELIVERIES_TABLE"),  # replay claims each delivery
        ("DynamoDeliveryLog::summarize_window", "DELIVERIES_TABLE"),  # stats
        ("DynamoIdempotencyStore::claim", "IDEMPOTENCY_TABLE"),
        ("DynamoIdempotencyStore::complete", "IDEMPOTENCY_TABLE"),
        ("DynamoIdempotencyStore::release", "IDEMPOTENCY_TABLE"),
        ("DynamoMonetizationStore::put_condition", "MONETIZATION_TABLE"),
        ("DynamoMonetizationStore::get_condition", "MONETIZATION_TABLE"),
        ("DynamoMonetizationStore::list_conditions", "MONETIZATION_TABLE"),
        ("DynamoMonetizationStore::delete_condition", "MONETIZATION_TABLE"),
        ("SecretsManagerToken::fetch", "ADMIN_TOKEN_SECRET_ARN"),
        ("SsmParameterToken::fetch", "ADMIN_TOKEN_PARAMETER"),
        ("SecretsManagerToken::fetch", "RELAY_SECRETS_SECRET_ARN"),  # the Kong relay
    ],
    "ProbeFunction": [
        ("DynamoHookStore::get", "HOOKS_TABLE"),
        ("SecretsManagerToken::fetch", "ADMIN_TOKEN_SECRET_ARN"),
        ("SsmParameterToken::fetch", "ADMIN_TOKEN_PARAMETER"),
    ],
    "DispatchFunction": [
        # The snapshot (list, version, list_custom_events); endpoint protection (get, put).
        *[(f"DynamoHookStore::{m}", "HOOKS_TABLE") for m in ["get", "list", "put", "version", "list_custom_events"]],
        ("DynamoWindowStore::claim_window", "WINDOWS_TABLE"),
        ("DynamoWindowStore::swap_digest", "WINDOWS_TABLE"),
        ("DynamoDeliveryLog::record_attempt", "DELIVERIES_TABLE"),
        ("DynamoDeliveryLog::claim_attempt", "DELIVERIES_TABLE"),  # record.rs: the attempt's number
        ("DynamoDeliveryLog::get", "DELIVERIES_TABLE"),
        ("DynamoMonetizationStore::conditions_on_rate_plan", "MONETIZATION_TABLE"),
        ("DynamoMonetizationStore::claim", "MONETIZATION_TABLE"),
        ("SqsQueue::send_batch", "EVENTS_QUEUE_URL"),  # crud events of hooks it disables
        ("SqsQueue::send", "DELIVERIES_QUEUE_URL"),  # retries, parked attempts
        ("SqsQueue::send_batch", "DELIVERIES_QUEUE_URL"),
        # handler.rs: a record received too often is copied to its queue's dead-letter queue.
        ("SqsQueue::copy_to_dead_letter", "EVENTS_DEAD_LETTER_QUEUE_URL"),
        ("SqsQueue::copy_to_dead_letter", "DELIVERIES_DEAD_LETTER_QUEUE_URL"),
        ("SqsQueue::send", "DELIVERIES_DEAD_LETTER_QUEUE_URL"),  # dead_letters port
        ("SqsQueue::send", "EVENTS_DEAD_LETTER_QUEUE_URL"),  # rejected events, with their reason
    ],
}
# Adapter methods no Lambda function calls (the local server's worker, tests).
NOT_CALLED = {
    "SqsQueue::receive": "the local worker's; in Lambda the event source mapping receives",
    "SqsQueue::delete": "the local worker's; in Lambda the event source mapping deletes",
    "SqsQueue::dead_letter": "the local worker's; the Lambda handler copies (copy_to_dead_letter)",
    "create_table": "tests and the simulated stack create tables; the stack does here",
    "create_queue_with_dlq": "tests create queues; the stack does here",
    "enable_ttl": "tests; the stack sets TTL",
    "read_item": "a helper: its GetItem is counted in the methods that call it",
}
# Actions the code could make but never does in that function, with the reason.
NOT_NEEDED = {
    ("DispatchFunction", "dynamodb:DeleteItem", "HooksTable"): (
        "put() deletes the old name guard only when a hook is renamed; endpoint protection never renames"
    ),
}

SDK_ACTIONS = {
    "get_item": "dynamodb:GetItem", "put_item": "dynamodb:PutItem", "update_item": "dynamodb:UpdateItem",
    "delete_item": "dynamodb:DeleteItem", "query": "dynamodb:Query", "scan": "dynamodb:Scan",
    "batch_get_item": "dynamodb:BatchGetItem", "batch_write_item": "dynamodb:BatchWriteItem",
    "send_message": "sqs:SendMessage", "send_message_batch": "sqs:SendMessage",
    "receive_message": "sqs:ReceiveMessage", "delete_message": "sqs:DeleteMessage",
    "delete_message_batch": "sqs:DeleteMessage", "change_message_visibility": "sqs:ChangeMessageVisibility",
    "change_message_visibility_batch": "sqs:ChangeMessageVisibility", "get_queue_attributes": "sqs:GetQueueAttributes",
    "get_secret_value": "secretsmanager:GetSecretValue", "get_parameter": "ssm:GetParameter",
    "publish": "sns:Publish", "put_metric_data": "cloudwatch:PutMetricData",
    # TransactWriteItems / TransactGetItems are no IAM actions: each item is authorised alone.
    "transact_write_items": None, "transact_get_items": None,
}
TRANSACT_ITEMS = {"Put": "dynamodb:PutItem", "Update": "dynamodb:UpdateItem", "Delete": "dynamodb:DeleteItem",
                  "ConditionCheck": "dynamodb:ConditionCheckItem", "Get": "dynamodb:GetItem"}
NOT_IAM_ACTIONS = {"dynamodb:transactwriteitems", "dynamodb:transactgetitems", "sqs:sendmessagebatch",
                   "sqs:deletemessagebatch", "sqs:changemessagevisibilitybatch"}
WRITES = {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "sqs:SendMessage"}


# --- reading the Rust adapters -------------------------------------------------------------
def strip_rust(text: str) -> str:
    """The source with comments, strings and char literals blanked (braces inside them too)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"' or (c == "r" and re.match(r'r#*"', text[i:i + 4])):
            m = re.match(r'r(#*)"', text[i:]) if c == "r" else None
            if m:
                end = '"' + m.group(1)
                j = text.find(end, i + len(m.group(0)))
                j = n if j < 0 else j + len(end)
            else:
                j = i + 1
                while j < n and text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
                j += 1
            out.append('""' + re.sub(r"[^\n]", " ", text[i + 2:j]) if j - i >= 2 else text[i:j])
            i = j
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            m = re.match(r"'(\\.|[^\\'])'", text[i:])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def block_end(code: str, open_brace: int) -> int:
    depth = 0
    for j in range(open_brace, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(code)


def adapter_methods() -> dict[str, set[str]]:
    """`Type::method` (or a free function's name) -> IAM actions of its SDK calls, following calls
    to other functions of the same file; in every non-test source file that makes SDK calls."""
    result: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.rs")):
        raw = path.read_text()
        if not re.search(r"\.(" + "|".join(SDK_ACTIONS) + r")\(\)", raw):
            continue
        code = strip_rust(raw)
        tests = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", code)
        if tests:
            code = code[:tests.start()]
        impls = []  # (start, end, self type)
        for m in re.finditer(r"\bimpl\b(?:<[^{>]*>)?\s+([^{]*?)\{", code):
            header = m.group(1)
            self_type = re.findall(r"(\w+)\s*(?:<[^{]*>)?\s*$", header.split(" for ")[-1].strip())
            impls.append((m.start(), block_end(code, m.end() - 1), self_type[0] if self_type else "?"))
        bodies: dict[str, str] = {}
        entries: set[str] = set()  # trait methods and pub fns: what other modules can call
        for m in re.finditer(r"\bfn\s+(\w+)\s*(?:<[^>{]*>)?\s*\(", code):
            brace = code.find("{", m.end())
            semi = code.find(";", m.end())
            if brace < 0 or (0 <= semi < brace):
                continue  # a declaration without a body
            impl = next(((s, e, t) for s, e, t in impls if s < m.start() < e), None)
            owner = impl[2] if impl else None
            key = f"{owner}::{m.group(1)}" if owner else m.group(1)
            bodies[key] = code[brace:block_end(code, brace) + 1]
            trait_impl = impl and " for " in code[impl[0]:code.find("{", impl[0])]
            if trait_impl or re.search(r"\bpub(\([^)]*\))?\s+(async\s+)?$", code[max(0, m.start() - 30):m.start()]):
                entries.add(key)

        def direct(body: str) -> set[str]:
            actions = {SDK_ACTIONS[op] for op in re.findall(r"\.(\w+)\(\)", body) if SDK_ACTIONS.get(op)}
            actions |= {TRANSACT_ITEMS[t] for t in re.findall(r"\b(Put|Update|Delete|ConditionCheck|Get)::builder\(\)", body)}
            # direct and calls run within this file's iteration, so `bodies` is this file's
            if re.search(r"\bread_item\(", body) and "read_item" not in bodies:  # noqa: B023
                actions.add("dynamodb:GetItem")  # crate::aws::read_item
            return actions

        def calls(key: str, body: str) -> set[str]:
            owner = key.split("::")[0] if "::" in key else None
            found = set()
            # rustfmt may break `self.x(…)` after `self`.
            body = re.sub(r"\bself\s*\.\s*", "self.", body)
            # self.x(), Self::x() or a free x(); never a method of another value (`.send()`).
            for name in re.findall(r"(?:(?<=self\.)|(?<=Self::)|(?<![\w.:]))(\w+)\s*\(", body):
                for candidate in ([f"{owner}::{name}"] if owner else []) + [name]:
                    if candidate in bodies and candidate != key:  # noqa: B023
                        found.add(candidate)
            return found

        for key in entries:
            seen, todo, actions = set(), [key], set()
            while todo:
                k = todo.pop()
                if k in seen:
                    continue
                seen.add(k)
                actions |= direct(bodies[k])
                todo += calls(k, bodies[k])
            if actions:
                result[key] = actions
    return result


# --- the template -------------------------------------------------------------------------
def load_sam() -> dict:
    from samcli.yamlhelper import yaml_parse

    return yaml_parse(TEMPLATE.read_text())


def translate(sam: dict) -> dict:
    import boto3
    from samtranslator.parser import parser
    from samtranslator.translator.translator import Translator

    sam = copy.deepcopy(sam)
    for res in sam["Resources"].values():
        if res.get("Type") == "AWS::Serverless::Function":
            res.setdefault("Properties", {})["CodeUri"] = "s3://bucket/key"
    translator = Translator(
        managed_policy_map=None,
        sam_parser=parser.Parser(),
        plugins=[],
        boto_session=boto3.Session(region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"),
    )
    return translator.translate(
        sam_template=sam,
        parameter_values={"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"},
        get_managed_policy_map=lambda: {},
    )


class Resolved:
    """The translated template under one set of parameter values: conditions evaluated, Fn::If
    chosen, AWS::NoValue and resources whose condition is false removed."""

    NOVALUE = object()

    def __init__(self, cfn: dict, overrides: dict[str, str]):
        self.params = {k: str(v.get("Default", "")) for k, v in cfn.get("Parameters", {}).items()}
        self.params.update(overrides)
        self.conditions_src = cfn.get("Conditions", {})
        self.conditions: dict[str, bool] = {}
        self.resources = {}
        for name, res in cfn["Resources"].items():
            if "Condition" in res and not self.condition(res["Condition"]):
                continue
            self.resources[name] = self.resolve(res)

    def value(self, node: Any) -> Any:
        if isinstance(node, dict) and list(node) == ["Ref"] and node["Ref"] in self.params:
            return self.params[node["Ref"]]
        if isinstance(node, dict) and "Condition" in node and len(node) == 1:
            return self.condition(node["Condition"])
        return self.cond_expr(node) if isinstance(node, dict) else node

    def cond_expr(self, node: dict) -> Any:
        (fn, args), = node.items()
        if fn == "Fn::Equals":
            return str(self.value(args[0])) == str(self.value(args[1]))
        if fn == "Fn::Not":
            return not self.value(args[0])
        if fn == "Fn::And":
            return all(self.value(a) for a in args)
        if fn == "Fn::Or":
            return any(self.value(a) for a in args)
        if fn == "Condition":
            return self.condition(args)
        return node

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            self.conditions[name] = bool(self.value(self.conditions_src[name]))
        return self.conditions[name]

    def resolve(self, node: Any) -> Any:
        if isinstance(node, dict):
            if list(node) == ["Fn::If"]:
                cond, yes, no = node["Fn::If"]
                return self.resolve(yes if self.condition(cond) else no)
            if node == {"Ref": "AWS::NoValue"}:
                return self.NOVALUE
            out = {k: self.resolve(v) for k, v in node.items()}
            return {k: v for k, v in out.items() if v is not self.NOVALUE}
        if isinstance(node, list):
            return [v for v in (self.resolve(x) for x in node) if v is not self.NOVALUE]
        return node


def refs(node: Any) -> set[str]:
    """Logical ids and parameters a value points at (Ref, GetAtt, ${X} / ${X.Arn} in Sub)."""
    found: set[str] = set()
    if isinstance(node, dict):
        if "Ref" in node:
            found.add(node["Ref"])
        if "Fn::GetAtt" in node:
            att = node["Fn::GetAtt"]
            found.add(att[0] if isinstance(att, list) else att.split(".")[0])
        if "Fn::Sub" in node:
            text = node["Fn::Sub"] if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"][0]
            found |= {v.split(".")[0] for v in re.findall(r"\$\{([^}!]+)\}", text) if not v.startswith("AWS::")}
        for v in node.values():
            found |= refs(v)
    elif isinstance(node, list):
        for v in node:
            found |= refs(v)
    elif isinstance(node, str) and node == "*":
        found.add("*")
    return found


def as_list(x: Any) -> list:
    return x if isinstance(x, list) else [x]


def role_of(stack: Resolved, fn: str) -> str:
    role = stack.resources[fn]["Properties"]["Role"]
    return next(iter(refs(role)))


def granted(stack: Resolved, fn: str) -> tuple[set[tuple[str, str]], list[str]]:
    """(action, resource) pairs the function's role allows, and problems with the role itself."""
    role_id = role_of(stack, fn)
    role = stack.resources[role_id]["Properties"]
    problems = [f"{role_id}: managed policy {m} (too broad: list its actions instead)" for m in role.get("ManagedPolicyArns", [])]
    pairs = set()
    for policy in role.get("Policies", []):
        for st in as_list(policy["PolicyDocument"]["Statement"]):
            if st.get("Effect") != "Allow":
                continue
            for action in as_list(st["Action"]):
                if action.lower() in NOT_IAM_ACTIONS:
                    problems.append(f"{role_id}: {action} is not an IAM action (each item of a transaction or batch is authorised alone)")
                for resource in as_list(st["Resource"]):
                    for target in refs(resource) or {json.dumps(resource)}:
                        pairs.add((action, target))
    return pairs, problems


def needed(stack: Resolved, fn: str, methods: dict[str, set[str]]) -> set[tuple[str, str]]:
    props = stack.resources[fn]["Properties"]
    env = props.get("Environment", {}).get("Variables", {})
    need = set()
    for method, var in USES[fn]:
        value = env.get(var)
        if isinstance(value, dict) and value.get("Ref") in stack.params:
            value = stack.params[value["Ref"]]
        if value in ("", None):
            continue  # not configured in this scenario (e.g. the SSM parameter when a secret is used)
        targets = refs(env[var]) - {"AWS::Region", "AWS::AccountId", "AWS::Partition", "AWS::URLSuffix"}
        for action in methods[method]:
            for target in targets:
                need.add((action, target))
    group = props.get("LoggingConfig", {}).get("LogGroup")
    if group:
        for target in refs(group):
            need |= {("logs:CreateLogStream", target), ("logs:PutLogEvents", target)}
    for res in stack.resources.values():
        if res["Type"] == "AWS::Lambda::EventSourceMapping" and fn in refs(res["Properties"]["FunctionName"]):
            for target in refs(res["Properties"]["EventSourceArn"]):
                need |= {(a, target) for a in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")}
    need -= {(a, t) for (f, a, t) in NOT_NEEDED if f == fn}
    if stack.params.get("KmsKeyArn"):
        key = "KmsKey" if stack.params["KmsKeyArn"] == "create" else "KmsKeyArn"
        touched = {a for a, _ in need if not a.startswith("logs:")}
        if touched:
            need.add(("kms:Decrypt", key))
        if touched & WRITES:
            need.add(("kms:GenerateDataKey", key))
    return need


def check_iam(stack: Resolved, methods: dict[str, set[str]]) -> list[str]:
    problems = []
    for fn in USES:
        have, role_problems = granted(stack, fn)
        problems += role_problems
        need = needed(stack, fn, methods)
        for action, target in sorted(need - have):
            problems.append(f"{fn}: the code needs {action} on {target}, which its role does not grant")
        for action, target in sorted(have - need):
            problems.append(f"{fn}: its role grants {action} on {target}, which its code never calls")
        for action, target in have:
            if target == "*" or target.startswith('"'):
                problems.append(f"{fn}: {action} on {target}: scope it to the stack's resources")
    return problems


def check_uses(methods: dict[str, set[str]]) -> list[str]:
    problems = []
    used = {m for pairs in USES.values() for m, _ in pairs}
    for m in sorted(used - set(methods)):
        problems.append(f"USES names {m}, which makes no AWS call in shared/src (renamed?)")
    for m in sorted(set(methods) - used - set(NOT_CALLED)):
        problems.append(f"{m} makes AWS calls ({', '.join(sorted(methods[m]))}) but no function's USES says who calls it")
    return problems


# --- parliament ------------------------------------------------------------------------------
# Findings of parliament (the IAM policy linter) accepted, each with its reason:
# (policy's resource, finding's issue, the action or text it names) -> why.
# The key policy is AWS's documented one for CloudWatch Logs and alarms to SNS.
PARLIAMENT_ACCEPTED: dict[tuple[str, str, str], str] = {
    ("KmsKey", "RESOURCE_STAR", ""): 'in a key policy, Resource "*" means the key itself',
    ("KmsKey", "UNKNOWN_CONDITION_FOR_ACTION", "kms:Describe"): (
        "AWS's documented Logs statement grants kms:Describe* under the logs encryption context condition"
    ),
    ("KmsKey", "MISMATCHED_TYPE", "ArnLike"): (
        "kms:EncryptionContext:aws:logs:arn holds a log group ARN; parliament types the key as a string"
    ),
}
FAKE_ARN = {
    "AWS::DynamoDB::Table": "arn:aws:dynamodb:{r}:{a}:table/{x}",
    "AWS::SQS::Queue": "arn:aws:sqs:{r}:{a}:{x}",
    "AWS::Logs::LogGroup": "arn:aws:logs:{r}:{a}:log-group:{x}:*",
    "AWS::SecretsManager::Secret": "arn:aws:secretsmanager:{r}:{a}:secret:{x}-AbCdEf",
    "AWS::KMS::Key": "arn:aws:kms:{r}:{a}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "AWS::SNS::Topic": "arn:aws:sns:{r}:{a}:{x}",
}


def concrete(stack: Resolved, node: Any) -> Any:
    """A resolved value with intrinsics replaced by realistic ARNs, for linters that need JSON."""
    pseudo = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
              "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": "event-hooks"}

    def arn(name: str) -> str:
        if name in pseudo:
            return pseudo[name]
        if name in stack.params:
            return stack.params[name]
        kind = stack.resources[name]["Type"]
        return FAKE_ARN.get(kind, "arn:aws:unknown:{r}:{a}:{x}").format(r=REGION, a=ACCOUNT, x=name)

    if isinstance(node, dict):
        if "Ref" in node:
            return arn(node["Ref"])
        if "Fn::GetAtt" in node:
            att = node["Fn::GetAtt"]
            return arn(att[0] if isinstance(att, list) else att.split(".")[0])
        if "Fn::Sub" in node:
            text = node["Fn::Sub"] if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"][0]
            return re.sub(r"\$\{([^}]+)\}", lambda m: arn(m.group(1).split(".")[0]), text)
        if "Fn::Join" in node:
            sep, parts = node["Fn::Join"]
            return sep.join(str(concrete(stack, p)) for p in parts)
        return {k: concrete(stack, v) for k, v in node.items()}
    if isinstance(node, list):
        return [concrete(stack, v) for v in node]
    return node


def policies(stack: Resolved) -> list[tuple[str, dict]]:
    """Every IAM policy document of the stack: roles' inline policies, policies, resource policies."""
    found = []
    for name, res in stack.resources.items():
        props, kind = res.get("Properties", {}), res["Type"]
        if kind == "AWS::IAM::Role":
            found += [(name, p["PolicyDocument"]) for p in props.get("Policies", [])]
        elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            found.append((name, props["PolicyDocument"]))
        elif kind == "AWS::KMS::Key":
            found.append((name, props["KeyPolicy"]))
        elif kind in ("AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy", "AWS::S3::BucketPolicy"):
            found.append((name, props["PolicyDocument"]))
    return found


def check_parliament(stacks: dict[str, Resolved]) -> list[str]:
    from parliament import analyze_policy_string

    found: dict[str, list[str]] = {}  # finding -> the scenarios it shows in
    seen = set()
    for scenario, stack in stacks.items():
        for name, doc in policies(stack):
            text = json.dumps(concrete(stack, doc), sort_keys=True)
            if (name, text) in seen:
                continue
            seen.add((name, text))
            for finding in analyze_policy_string(text).findings:
                detail = finding.detail if isinstance(finding.detail, str) else json.dumps(finding.detail)
                if any(n == name and i == finding.issue and what in detail for (n, i, what) in PARLIAMENT_ACCEPTED):
                    continue
                found.setdefault(f"{name}: {finding.issue}: {detail}", []).append(scenario)
    return [f"{problem} ({', '.join(scenarios)})" for problem, scenarios in found.items()]


# --- the other checks ------------------------------------------------------------------------
def check_deletion(sam: dict) -> list[str]:
    return [
        f"{name}: DeletionPolicy Retain also keeps what a failed first create made: RetainExceptOnCreate"
        for name, res in sam["Resources"].items()
        if res.get("DeletionPolicy") == "Retain"
    ]


def check_kms(sam: dict, stack: Resolved, own_key: Resolved) -> list[str]:
    problems = []
    key = stack.resources.get("KmsKey")
    if not key or key["Type"] != "AWS::KMS::Key":
        return ["KmsKeyArn=create makes no AWS::KMS::Key named KmsKey"]
    props = key["Properties"]
    if props.get("EnableKeyRotation") is not True:
        problems.append("KmsKey: EnableKeyRotation must be true")
    statements = as_list(props["KeyPolicy"]["Statement"])

    def grants(principal_test, actions: set[str]) -> list[dict]:
        out = []
        for st in statements:
            principal = json.dumps(st.get("Principal", {}))
            if st.get("Effect") == "Allow" and principal_test(principal):
                have = {a.lower() for a in as_list(st["Action"])}
                if all(any(a.lower() == h or (h.endswith("*") and a.lower().startswith(h[:-1])) for h in have) for a in actions):
                    out.append(st)
        return out

    if not grants(lambda p: ":root" in p, {"kms:Decrypt", "kms:CreateGrant"}):
        problems.append("KmsKey: the key policy must let this account's IAM policies use the key (root principal)")
    logs = grants(lambda p: '"logs.' in p, {"kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:GenerateDataKey", "kms:DescribeKey"})
    if not logs:
        problems.append("KmsKey: the key policy must let logs.<region>.amazonaws.com use the key, or the log groups fail to create")
    elif not any("kms:EncryptionContext:aws:logs:arn" in json.dumps(st.get("Condition", {})) for st in logs):
        problems.append("KmsKey: the logs statement must be conditioned on kms:EncryptionContext:aws:logs:arn")
    if not grants(lambda p: "cloudwatch.amazonaws.com" in p, {"kms:Decrypt", "kms:GenerateDataKey"}):
        problems.append("KmsKey: the key policy must let cloudwatch.amazonaws.com use the key, or alarms cannot publish to the encrypted topic")
    # Everything encrypted uses the stack's key, and a key of your own too.
    for scenario, s, want in [("create", stack, "KmsKey"), ("own key", own_key, "KmsKeyArn")]:
        for name, res in s.resources.items():
            p = res.get("Properties", {})
            for prop in ("KmsKeyId", "KMSMasterKeyId", "KmsMasterKeyId"):
                found = p.get(prop, p.get("SSESpecification", {}).get(prop))
                if found is not None and want not in refs(found):
                    problems.append(f"{name}.{prop} with KmsKeyArn={scenario} is {found}, not the key")
        for name, res in s.resources.items():
            if res["Type"] in ("AWS::Logs::LogGroup", "AWS::SNS::Topic") and not (
                {"KmsKeyId", "KmsMasterKeyId"} & set(res.get("Properties", {}))
            ):
                problems.append(f"{name} is not encrypted with the key when KmsKeyArn={scenario}")
    description = " ".join(sam["Parameters"]["KmsKeyArn"]["Description"].split())
    for needle in ("logs.<region>.amazonaws.com", "kms:EncryptionContext:aws:logs:arn", "cloudwatch.amazonaws.com"):
        if needle not in description:
            problems.append(f"KmsKeyArn's description must name the key policy statement for {needle}")
    return problems


def check_alarms(sam: dict, stack: Resolved) -> list[str]:
    problems = []
    alarms = {n: r for n, r in stack.resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
    params = sam["Parameters"]

    def metrics_of(alarm: dict) -> list[dict]:
        p = alarm["Properties"]
        if "Metrics" in p:
            return [dict(m["MetricStat"]["Metric"], Id=m["Id"]) for m in p["Metrics"] if "MetricStat" in m]
        return [{"Namespace": p.get("Namespace"), "MetricName": p.get("MetricName"), "Dimensions": p.get("Dimensions", []), "Id": None}]

    consumed = {next(iter(refs(r["Properties"]["EventSourceArn"]))) for r in stack.resources.values()
                if r["Type"] == "AWS::Lambda::EventSourceMapping"}
    for queue in sorted(consumed):
        age = [(n, a) for n, a in alarms.items() for m in metrics_of(a)
               if m["MetricName"] == "ApproximateAgeOfOldestMessage" and queue in refs(m["Dimensions"])]
        if not age:
            problems.append(f"{queue}: a queue a function consumes has no ApproximateAgeOfOldestMessage alarm")
            continue
        if queue == "DeliveriesQueue":
            # Delayed retries: the age counts the delay, up to 900 s a hop; the alarm must not fire on it.
            for name, alarm in age:
                p = alarm["Properties"]
                threshold = p["Threshold"]
                floor = float(params[threshold["Ref"]].get("MinValue", 0)) if isinstance(threshold, dict) else float(threshold)
                offset = 0.0
                for m in p.get("Metrics", []):
                    hit = re.fullmatch(r"\s*(\w+)\s*-\s*(\d+)\s*", m.get("Expression", ""))
                    if hit and m.get("ReturnData", True):
                        offset = float(hit.group(2))
                if floor + offset <= 900:
                    problems.append(f"{name}: the deliveries queue's age includes delays up to 900 s: "
                                    f"alarm above that (threshold {floor:g} + offset {offset:g})")
    # The API 5xx alarm leaves out the probe's routes, whose 502s report failing targets.
    probe_routes = set()
    for name, res in sam["Resources"].items():
        if name == "ProbeFunction":
            for ev in res["Properties"].get("Events", {}).values():
                # test, ping and preview: 502 for a failing target or hook code (OPTIONS never).
                if ev["Type"] == "HttpApi" and ev["Properties"].get("Method", "").upper() != "OPTIONS":
                    probe_routes.add((ev["Properties"]["Method"].upper(), ev["Properties"]["Path"]))
    api5xx = [(n, a) for n, a in alarms.items() for m in metrics_of(a) if m["MetricName"] == "5xx"]
    if not api5xx:
        problems.append("no alarm on the API's 5xx")
    for name, alarm in {n: a for n, a in api5xx}.items():
        subtracted = set()
        by_id = {m["Id"]: m for m in metrics_of(alarm)}
        expressions = [m["Expression"] for m in alarm["Properties"].get("Metrics", []) if "Expression" in m and m.get("ReturnData", True)]
        for mid, m in by_id.items():
            dims = {d["Name"]: d["Value"] for d in m["Dimensions"]}
            if "Resource" in dims and any(re.search(rf"-\s*(FILL\()?{re.escape(mid)}\b", e) for e in expressions):
                subtracted.add((dims.get("Method", "").upper(), dims["Resource"]))
        for route in sorted(probe_routes - subtracted):
            problems.append(f"{name}: counts the 5xx of {' '.join(route)} (ProbeFunction answers 502 by design): subtract its per-route metric")
        settings = sam["Resources"]["AdminApi"]["Properties"].get("RouteSettings", {})
        routes = {f"{ev['Properties'].get('Method', '').upper()} {ev['Properties']['Path']}"
                  for res in sam["Resources"].values() if res.get("Type") == "AWS::Serverless::Function"
                  for ev in res.get("Properties", {}).get("Events", {}).values() if ev["Type"] == "HttpApi"}
        for key in sorted(set(settings) - routes):
            problems.append(f"AdminApi: RouteSettings '{key}' names no route (the stage fails to deploy)")
        for method, path in sorted(probe_routes):
            if not settings.get(f"{method} {path}", {}).get("DetailedMetricsEnabled"):
                problems.append(f"AdminApi: RouteSettings '{method} {path}' needs DetailedMetricsEnabled for {name}")
    return problems


def check_readme() -> list[str]:
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")  # continuation lines joined
    problems = []
    for m in re.finditer(r"aws sqs start-message-move-task[^\n]*", text):
        if "--destination-arn" not in m.group(0):
            problems.append(f"README: `{m.group(0)[:80]}…` needs --destination-arn: dead letters the dispatcher sent itself have no source queue to return to")
    return problems


def main() -> int:
    sam = load_sam()
    cfn = translate(sam)
    if "--translated" in sys.argv:
        Path(sys.argv[sys.argv.index("--translated") + 1]).write_text(json.dumps(cfn, indent=1))
    stacks = {name: Resolved(cfn, values) for name, values in SCENARIOS.items()}
    methods = adapter_methods()
    results = {
        "deletion": check_deletion(sam),
        "kms": check_kms(sam, stacks["KmsKeyArn=create"], stacks["own key"]),
        "iam": check_uses(methods) + sorted({p for s in stacks.values() for p in check_iam(s, methods)}),
        "alarms": check_alarms(sam, stacks["defaults"]),
        "readme": check_readme(),
        "parliament": check_parliament(stacks),
    }
    failed = False
    for check, problems in results.items():
        for problem in problems:
            print(f"check-template: {check}: {problem}", file=sys.stderr)
        failed |= bool(problems)
        if not problems:
            print(f"check-template: {check}: ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

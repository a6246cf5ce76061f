"""The fault-injecting proxy on its own (moto + `Counter` with `Faults`, called with boto3, one
attempt per call): throttles and 5xx come back in the shapes the SDKs parse (the error code, the
status), a reset is a connection error after moto did the work, a hang is a read timeout, latency
delays; rates 0 and 1, `active`, and seeded decisions."""

from __future__ import annotations

import http.client
import json
import time

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config
from botocore.retries.standard import ThrottledRetryableChecker
from faults import Faults, Rule
from lambda_faults import LambdaFaults
from simstack import REGION, Counter, Moto

# The throttling codes of the Rust SDK's retry classifier (aws-runtime 1.10
# `retries::classifiers::THROTTLING_ERRORS`): the functions must see these as throttles.
RUST_THROTTLING = {
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "ProvisionedThroughputExceededException", "TransactionInProgressException",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException", "RequestThrottled",
    "SlowDown", "PriorRequestNotComplete", "EC2ThrottledException",
}
BOTO_THROTTLING = set(ThrottledRetryableChecker._THROTTLED_ERROR_CODES)


@pytest.fixture(scope="module")
def moto():
    server = Moto()
    yield server
    server.stop()


@pytest.fixture
def proxy(moto):
    """`proxy(rules, seed=1)` -> a Counter with those faults; stopped after the test."""
    counters = []

    def make(rules, seed=1):
        counter = Counter(moto.port, faults=Faults(seed, rules))
        counters.append(counter)
        return counter

    yield make
    for counter in counters:
        counter.stop()


def client(service, endpoint, read_timeout=3.0):
    """One attempt per call (`max_attempts` in botocore's Config counts retries, not attempts)."""
    return boto3.client(
        service, region_name=REGION, endpoint_url=endpoint,
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=read_timeout,
                      connect_timeout=2),
    )


@pytest.fixture(scope="module")
def resources(moto):
    """A table, a queue, a secret and a parameter, made directly in moto."""
    ddb = moto.client("dynamodb")
    ddb.create_table(TableName="t", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
    queue = moto.client("sqs").create_queue(QueueName="q")["QueueUrl"]
    moto.client("secretsmanager").create_secret(Name="s", SecretString="v")
    moto.client("ssm").put_parameter(Name="p", Value="v", Type="String")
    return {"queue": queue}


CALLS = {
    "DynamoDB": ("dynamodb", lambda c, r: c.get_item(TableName="t", Key={"pk": {"S": "a"}})),
    "SQS": ("sqs", lambda c, r: c.send_message(QueueUrl=r["queue"], MessageBody="m")),
    "secretsmanager": ("secretsmanager", lambda c, r: c.get_secret_value(SecretId="s")),
    "ssm": ("ssm", lambda c, r: c.get_parameter(Name="p")),
}


def errors(service, kind, proxy, resources, times=12):
    counter = proxy([Rule(service, "*", kind, 1.0)])
    boto_service, call = CALLS[service]
    c = client(boto_service, counter.endpoint)
    seen = []
    for _ in range(times):
        with pytest.raises(botocore.exceptions.ClientError) as info:
            call(c, resources)
        seen.append((info.value.response["ResponseMetadata"]["HTTPStatusCode"], info.value.response["Error"]["Code"]))
    return seen, counter


@pytest.mark.parametrize("service,codes", [
    ("DynamoDB", {"ProvisionedThroughputExceededException", "ThrottlingException"}),
    ("SQS", {"RequestThrottled"}),
    ("secretsmanager", {"ThrottlingException"}),
    ("ssm", {"ThrottlingException"}),
])
def test_throttles_parse_as_the_services_throttling_codes(service, codes, proxy, resources):
    seen, counter = errors(service, "throttle", proxy, resources)
    assert {status for status, _ in seen} == {400}
    assert {code for _, code in seen} == codes  # each code shows up in 12 draws
    assert codes <= RUST_THROTTLING and codes <= BOTO_THROTTLING
    assert sum(counter.faults.injected().values()) == 12


@pytest.mark.parametrize("service,codes", [
    ("DynamoDB", {500: "InternalServerError", 503: "ServiceUnavailable"}),
    ("SQS", {500: "InternalError", 503: "ServiceUnavailable"}),
    ("secretsmanager", {500: "InternalServiceError", 503: "ServiceUnavailable"}),
    ("ssm", {500: "InternalServerError", 503: "ServiceUnavailable"}),
])
def test_errors_are_server_errors(service, codes, proxy, resources):
    seen, _ = errors(service, "error", proxy, resources)
    assert set(seen) == set(codes.items())


def raw_put_item(endpoint, key):
    """A DynamoDB PutItem with http.client, which (unlike botocore) insists on the whole body."""
    conn = http.client.HTTPConnection(endpoint.removeprefix("http://"), timeout=3)
    try:
        conn.request("POST", "/", body=json.dumps({"TableName": "t", "Item": {"pk": {"S": key}}}), headers={
            "X-Amz-Target": "DynamoDB_20120810.PutItem", "Content-Type": "application/x-amz-json-1.0",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/dynamodb/aws4_request, "
                             "SignedHeaders=host, Signature=0"})
        return conn.getresponse().read()
    finally:
        conn.close()


def test_reset_is_a_connection_error_after_moto_did_the_work(moto, proxy, resources):
    counter = proxy([Rule("DynamoDB", "PutItem", "reset", 1.0)])
    raised = set()
    for i in range(8):  # both ways of dropping: RST, and FIN after half the body
        with pytest.raises((http.client.HTTPException, ConnectionError)) as info:
            raw_put_item(counter.endpoint, f"reset{i}")
        raised.add(type(info.value).__name__)
        assert "Item" in moto.client("dynamodb").get_item(TableName="t", Key={"pk": {"S": f"reset{i}"}})
    assert "IncompleteRead" in raised and raised & {"ConnectionResetError", "RemoteDisconnected"}, raised
    # botocore: a reset is a connection error (botocore does not check a body's length: a body
    # cut short surfaces, for DynamoDB, as a crc32 mismatch).
    with pytest.raises((botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)):
        client("dynamodb", counter.endpoint).put_item(TableName="t", Item={"pk": {"S": "reset8"}})
    client("dynamodb", counter.endpoint).get_item(TableName="t", Key={"pk": {"S": "reset0"}})  # others pass
    assert counter.faults.injected() == {"DynamoDB.PutItem:reset": 9}


def test_hang_is_a_read_timeout_and_never_reaches_moto(moto, proxy, resources):
    counter = proxy([Rule("SQS", "SendMessage", "hang", 1.0, seconds=3.0)])
    c = client("sqs", counter.endpoint, read_timeout=0.5)
    start = time.monotonic()
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        c.send_message(QueueUrl=resources["queue"], MessageBody="hung")
    assert time.monotonic() - start < 2.5
    bodies = [m["Body"] for m in moto.client("sqs").receive_message(
        QueueUrl=resources["queue"], MaxNumberOfMessages=10, VisibilityTimeout=0).get("Messages", [])]
    assert "hung" not in bodies
    assert Rule("SQS", kind="hang", rate=1.0).seconds > 5.0  # the default outlasts the SDK's attempt timeout


def test_latency_delays_then_forwards(proxy, resources):
    counter = proxy([Rule("secretsmanager", "GetSecretValue", "latency", 1.0, seconds=0.6)])
    c = client("secretsmanager", counter.endpoint)
    start = time.monotonic()
    assert c.get_secret_value(SecretId="s")["SecretString"] == "v"
    assert time.monotonic() - start >= 0.6


def test_rate_0_never_rate_1_always_and_inactive_never(proxy, resources):
    counter = proxy([Rule("DynamoDB", "*", "throttle", 0.0), Rule("ssm", "*", "error", 1.0)])
    ddb, ssm = client("dynamodb", counter.endpoint), client("ssm", counter.endpoint)
    for _ in range(20):
        ddb.get_item(TableName="t", Key={"pk": {"S": "a"}})
        with pytest.raises(botocore.exceptions.ClientError):
            ssm.get_parameter(Name="p")
    assert counter.faults.injected() == {"AmazonSSM.GetParameter:error": 20}
    counter.faults.active = False
    for _ in range(5):
        assert ssm.get_parameter(Name="p")["Parameter"]["Value"] == "v"
    assert counter.faults.injected() == {"AmazonSSM.GetParameter:error": 20}
    assert counter.snapshot() == {"DynamoDB.GetItem": 20, "AmazonSSM.GetParameter": 25}


def sequence(seed, operations):
    faults = Faults.from_spec("DynamoDB:*:throttle:0.3,SQS:Send*:error:0.2,*:*:hang:0.05:6", seed)
    return [(d.kind, d.status, d.variant) if (d := faults.decide(op)) else None for op in operations], faults


def test_the_same_seed_gives_the_same_decisions():
    ops = ["DynamoDB.UpdateItem", "SQS.SendMessage", "SQS.ReceiveMessage", "secretsmanager.GetSecretValue"] * 100
    first, faults = sequence(7, ops)
    assert first == sequence(7, ops)[0]
    assert first != sequence(8, ops)[0]
    kinds = {k.rsplit(":", 1)[1] for k in faults.injected()}
    assert kinds == {"throttle", "error", "hang"}
    assert 0.2 < faults.injected().get("DynamoDB.UpdateItem:throttle", 0) / 100 < 0.4
    assert not any(k.startswith("SQS.ReceiveMessage:error") for k in faults.injected())
    # The n-th request of an operation gets its decision whatever the other operations do.
    only_dynamodb, _ = sequence(7, ["DynamoDB.UpdateItem"] * 100)
    assert only_dynamodb == first[0::4]
    # The log names each fault by operation and the request's index among that operation's.
    nth, expected = {}, []
    for op, decision in zip(ops, first, strict=True):
        nth[op] = nth.get(op, 0) + 1
        if decision:
            expected.append((op, nth[op], decision[0]))
    assert faults.history == expected


def test_spec_parsing_and_rule_checks():
    faults = Faults.from_spec("DynamoDB:*:throttle:0.1, SQS:*:error:0.05,*:*:hang:0.01:6", 3)
    assert faults.rules == [Rule("DynamoDB", "*", "throttle", 0.1), Rule("SQS", "*", "error", 0.05),
                            Rule("*", "*", "hang", 0.01, 6.0)]
    assert Rule("ssm", kind="throttle", rate=1).matches("AmazonSSM.GetParameter")
    assert Rule("SQS", "Send*", kind="throttle", rate=1).matches("SQS.SendMessageBatch")
    assert not Rule("SQS", "Send*", kind="throttle", rate=1).matches("SQS.ReceiveMessage")
    for bad in ("DynamoDB:*:boom:0.1", "DynamoDB:*:throttle:2", "DynamoDB:throttle:0.1"):
        with pytest.raises(ValueError):
            Faults.from_spec(bad, 1)


def test_an_owed_kill_goes_to_each_next_invocation_until_one_is_in_flight():
    lambda_faults = LambdaFaults(7, kill_per_records=10**9, kills_owed=1)  # draws never kill
    for _ in range(3):  # each invocation ends before the kill fires: it is owed on
        planned = lambda_faults.plan("DispatchFunction", 2)
        assert planned is not None and planned.kind == "kill"
        lambda_faults.record("DispatchFunction", "kill", 2, planned.after, hit=False)
    planned = lambda_faults.plan("DispatchFunction", 2)
    lambda_faults.record("DispatchFunction", "kill", 2, planned.after, hit=True)
    assert lambda_faults.counts() == {"kill": 1}
    assert all(lambda_faults.plan("DispatchFunction", 2) is None for _ in range(50))

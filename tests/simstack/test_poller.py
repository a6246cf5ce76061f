"""The simulated event source mapping on its own (a scripted function, a queue made here): only
the records the function did not report as failed are deleted; a failed record comes back after
the visibility timeout and, past the redrive policy's maxReceiveCount, lands in the dead-letter
queue; a failed invocation deletes nothing; Lambda's recursive loop detection keeps the 17th
invocation of a chain from a function that does not allow loops."""

import json

import pytest
from simstack import Function, LoopDetection, Mapping, Moto, Poller, Traces, lineage_of, wait_for


class ScriptedFunction:
    """Stands in for a `Runtime`: fails the records whose body is "fail" (reported as batch item
    failures), or the whole invocation when a body is "crash"."""

    def __init__(self):
        self.batches: list[list[str]] = []
        self.traces: list[str | None] = []

    def invoke(self, event, trace=None):
        self.traces.append(trace)
        bodies = [r["body"] for r in event["Records"]]
        self.batches.append(bodies)
        if "crash" in bodies:
            return 200, b'{"errorType":"Crash"}', "Unhandled"
        failures = [{"itemIdentifier": r["messageId"]} for r in event["Records"] if r["body"] == "fail"]
        return 200, json.dumps({"batchItemFailures": failures}).encode(), ""


@pytest.fixture
def moto():
    server = Moto()
    yield server
    server.stop()


def test_batch_item_failures_come_back_then_go_to_the_dead_letter_queue(moto):
    sqs = moto.client("sqs")
    dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName="q", Attributes={
        "VisibilityTimeout": "1",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}),
    })["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    fn = ScriptedFunction()
    poller = Poller(Mapping("m", "F", arn, 10, 0, True, True), fn, sqs)
    try:
        sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": "1", "MessageBody": "ok"},
                                                       {"Id": "2", "MessageBody": "fail"}])
        letters = wait_for(lambda: sqs.receive_message(QueueUrl=dlq).get("Messages"), "the dead letter", 30)
        assert [m["Body"] for m in letters] == ["fail"]
        delivered = [b for batch in fn.batches for b in batch]
        assert delivered.count("ok") == 1 and delivered.count("fail") == 2, fn.batches

        sqs.send_message(QueueUrl=url, MessageBody="crash")
        wait_for(lambda: [b for b in fn.batches if b == ["crash"]][1:], "the crashed batch twice", 30)
        assert not poller.errors, poller.errors
    finally:
        poller.stop()


@pytest.mark.parametrize("recursive_loop", ["Terminate", "Allow"])
def test_the_seventeenth_invocation_of_a_chain_is_stopped_unless_the_function_allows_loops(moto, recursive_loop):
    sqs = moto.client("sqs")
    dlq = sqs.create_queue(QueueName="dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName="q", Attributes={
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}),
    })["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    fn = ScriptedFunction()
    function = Function("F", "f", "arn:aws:lambda:us-east-1:123456789012:function:f", None, {}, 128, 3,
                        recursive_loop)
    traces = Traces()
    loops = LoopDetection(function, traces)
    poller = Poller(Mapping("m", "F", arn, 10, 0, True, True), fn, sqs, loops)
    try:
        # A message sent by the function's 15th invocation of its chain, then one by its 16th.
        for n in (15, 16):
            header = f"Root=1-00000000-{n:024x};Parent=0000000000000001;Sampled=0;Lineage={loops.key}:{n}"
            sqs.send_message(QueueUrl=url, MessageBody=f"hop {n}", MessageSystemAttributes={
                "AWSTraceHeader": {"DataType": "String", "StringValue": header}})
            if n == 15:
                wait_for(lambda: fn.batches, "the 16th invocation", 30)
        if recursive_loop == "Allow":
            wait_for(lambda: len(fn.batches) == 2, "the 17th invocation", 30)
            assert [lineage_of(t)[loops.key] for t in fn.traces] == [16, 17]
            assert not loops.stopped and loops.deepest == 17
        else:
            letters = wait_for(lambda: sqs.receive_message(QueueUrl=dlq).get("Messages"), "the stopped message", 30)
            assert [m["Body"] for m in letters] == ["hop 16"]
            assert fn.batches == [["hop 15"]], fn.batches
            assert lineage_of(fn.traces[0])[loops.key] == 16
            assert [m["Body"] for m in loops.stopped] == ["hop 16"]
        assert not poller.errors, poller.errors
    finally:
        poller.stop()

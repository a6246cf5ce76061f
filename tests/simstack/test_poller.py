"""The simulated event source mapping on its own (a scripted function, a queue made here): only
the records the function did not report as failed are deleted; a failed record comes back after
the visibility timeout and, past the redrive policy's maxReceiveCount, lands in the dead-letter
queue; a failed invocation deletes nothing."""

import json

import pytest

from simstack import Mapping, Moto, Poller, wait_for


class ScriptedFunction:
    """Stands in for a `Runtime`: fails the records whose body is "fail" (reported as batch item
    failures), or the whole invocation when a body is "crash"."""

    def __init__(self):
        self.batches: list[list[str]] = []

    def invoke(self, event):
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

#!/usr/bin/env python3
"""The local stand-in for Lambda's SQS event source mapping: long-polls the queue, invokes
`event-processor` (served by `cargo lambda watch`) with a real SQS event of up to 10 records,
deletes the records not listed in `batchItemFailures`, and leaves the failed ones to reappear
after the visibility timeout (and, after maxReceiveCount, to land in the dead-letter queue)."""
import argparse
import json
import sys
import time
import urllib.error
import urllib.request

import boto3


def to_record(m, arn, region):
    return {
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m["Body"],
        "attributes": m.get("Attributes", {}),
        "messageAttributes": {
            k: {"stringValue": v.get("StringValue"), "dataType": v["DataType"], "stringListValues": [], "binaryListValues": []}
            for k, v in m.get("MessageAttributes", {}).items()
        },
        "md5OfBody": m.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": arn,
        "awsRegion": region,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--queue-url", required=True)
    p.add_argument("--invoke-url", required=True)
    p.add_argument("--region", default="us-east-1")
    args = p.parse_args()
    sqs = boto3.client("sqs", endpoint_url=args.endpoint, region_name=args.region,
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    arn = sqs.get_queue_attributes(QueueUrl=args.queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    print(f"poller: {args.queue_url} -> {args.invoke_url}", flush=True)
    while True:
        got = sqs.receive_message(QueueUrl=args.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=2,
                                  MessageAttributeNames=["All"], AttributeNames=["All"])
        messages = got.get("Messages", [])
        if not messages:
            continue
        event = {"Records": [to_record(m, arn, args.region) for m in messages]}
        request = urllib.request.Request(args.invoke_url, data=json.dumps(event).encode(),
                                         headers={"content-type": "application/json"})
        try:
            # The first invoke compiles event-processor: be patient.
            with urllib.request.urlopen(request, timeout=600) as answer:
                result = json.load(answer)
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as e:
            print(f"poller: invoke failed ({e}); {len(messages)} message(s) will be redelivered", flush=True)
            time.sleep(2)
            continue
        failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
        for m in messages:
            if m["MessageId"] not in failed:
                sqs.delete_message(QueueUrl=args.queue_url, ReceiptHandle=m["ReceiptHandle"])
        print(f"poller: batch of {len(messages)} processed, {len(failed)} failed", flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)

#!/usr/bin/env python3
"""Creates the local table, queues and buckets for `make dev` (idempotent) and prints the
variables the functions need, as KEY=VALUE lines. Same shapes as the deployed stack: table `pk`
(String) with TTL on `expires_at`; queue with a redrive policy to its dead-letter queue; the
payload bucket (claim check). The archive, off by default in a stack, is on here so that
`webhook-ops replay` can be tried locally."""
import argparse
import json

import boto3


def read_env(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    return env


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--env-file", default="local.env")
    args = p.parse_args()
    env = read_env(args.env_file)
    kw = dict(endpoint_url=args.endpoint, region_name=env.get("AWS_REGION", "us-east-1"),
              aws_access_key_id="testing", aws_secret_access_key="testing")
    ddb, sqs, s3 = (boto3.client(name, **kw) for name in ("dynamodb", "sqs", "s3"))
    table = env["EVENTS_TABLE"]
    if table not in ddb.list_tables()["TableNames"]:
        ddb.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
        ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
    dlq = sqs.create_queue(QueueName=env["EVENTS_DLQ_NAME"])["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(QueueName=env["EVENTS_QUEUE_NAME"], Attributes={
        "VisibilityTimeout": "30",
        "MaximumMessageSize": "1048576",  # as the template: MAX_MESSAGE_BYTES' default
        # The template's maxReceiveCount for its default RetryHorizonHours (24): the processor
        # hides a failed record for a growing wait (1 minute doubling to an hour).
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "30"}),
    })["QueueUrl"]
    buckets = {"PAYLOAD_BUCKET": "webhook-payloads", "ARCHIVE_BUCKET": "webhook-archive"}
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in buckets.values():
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
    print(f"AWS_ENDPOINT_URL={args.endpoint}")
    for name, bucket in buckets.items():
        print(f"{name}={bucket}")
    print(f"EVENTS_QUEUE_URL={queue}")
    print(f"EVENTS_DLQ_URL={dlq}")
    # The processor moves the messages it refuses (shared::trust) there itself.
    print(f"DEAD_LETTER_QUEUE_URL={dlq}")


if __name__ == "__main__":
    main()

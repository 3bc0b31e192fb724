"""The Python peer of `make bench-e2e`: the Trybe receiver's job written the usual Python way,
for the comparison only (never deployed). Same contract as functions/trybe-webhook on the path
the benchmark drives: HMAC-SHA256 of the raw body in the `signature` header (hex, any of the
comma-separated secrets), JSON object body, event id `id`; the event claimed in DynamoDB by
Powertools' idempotency (DynamoDB persistence layer, conditional PutItem, then UpdateItem),
the envelope sent to SQS with boto3, 200 `{"status": "accepted", "event_id": ...}`.

Run by awslambdaric under tools/webhook-bench's emulated Runtime API, with the same env as ours
(EVENTS_TABLE, EVENTS_QUEUE_URL, TRYBE_SIGNING_SECRET, AWS_ENDPOINT_URL → moto)."""
import base64
import datetime
import hashlib
import hmac
import json
import os

import boto3
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

SECRETS = [s.strip().encode() for s in os.environ["TRYBE_SIGNING_SECRET"].split(",") if s.strip()]
QUEUE_URL = os.environ["EVENTS_QUEUE_URL"]
TTL_SECONDS = int(os.environ.get("DEDUP_TTL_SECONDS", str(7 * 24 * 3600)))

sqs = boto3.client("sqs")
persistence = DynamoDBPersistenceLayer(table_name=os.environ["EVENTS_TABLE"], key_attr="pk")
config = IdempotencyConfig(event_key_jmespath="id", expires_after_seconds=TTL_SECONDS)


def answer(status, body):
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body),
    }


@idempotent_function(data_keyword_argument="webhook", config=config, persistence_store=persistence)
def enqueue(webhook: dict, body_sha256: str) -> dict:
    event_id = webhook["id"]
    envelope = {
        "provider": "trybe",
        "event_id": event_id,
        "event_type": webhook.get("event") or "unknown",
        "dedup_key": f"trybe#{event_id}",
        "received_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "occurred_at": webhook.get("timestamp"),
        "tenant": webhook.get("site_id"),
        "content_type": "application/json",
        "body_sha256": body_sha256,
        "payload": webhook,
    }
    sqs.send_message(QueueUrl=QUEUE_URL, MessageBody=json.dumps(envelope))
    return {"status": "accepted", "event_id": event_id}


def handler(event, context):
    config.register_lambda_context(context)
    body = event.get("body") or ""
    raw = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    signature = (headers.get("signature") or "").strip().lower()
    if not signature:
        return answer(401, {"status": "unauthorized"})
    if not any(
        hmac.compare_digest(hmac.new(s, raw, hashlib.sha256).hexdigest(), signature)
        for s in SECRETS
    ):
        return answer(401, {"status": "unauthorized"})
    try:
        webhook = json.loads(raw)
    except ValueError:
        return answer(400, {"status": "bad_request", "error": "body is not JSON"})
    if not isinstance(webhook, dict) or not isinstance(webhook.get("id"), str):
        return answer(400, {"status": "bad_request", "error": "no event id"})
    return answer(200, enqueue(webhook=webhook, body_sha256=hashlib.sha256(raw).hexdigest()))

"""The Python peer of `make bench-processor`: the event processor's job written the usual Python way,
for the comparison only (never deployed).

What it does, per SQS batch (as Lambda's event source mapping hands it, with
ReportBatchItemFailures):

- AWS Lambda Powertools' `BatchProcessor(event_type=EventType.SQS)` with
  `process_partial_response`: each record is handled on its own, one after the other; a record
  whose handler raises is reported in `batchItemFailures`, the others are acknowledged.
- The record handler parses the envelope JSON of the message body (a body that is not a JSON
  object, or has no `dedup_key`, fails the record), then calls `process_envelope`, which is
  guarded by Powertools idempotency: `idempotent_function` keyed on the envelope's `dedup_key`
  (`event_key_jmespath="dedup_key"`, data keyword argument `envelope`), persisted by
  `DynamoDBPersistenceLayer` in the same table as ours (EVENTS_TABLE, key attribute `pk`).
  That is a conditional PutItem (status INPROGRESS) before the work and an UpdateItem (status
  COMPLETED, the function's result stored) after it; an event already COMPLETED is not run
  again, and one INPROGRESS under another delivery fails the record (retried by SQS later).
- `process_envelope` does what our default handler does: one log line (Powertools Logger, JSON)
  with the provider, event id, event type and tenant; never the payload.

How it differs from ours (functions/event-processor on shared::consumer), beyond the language:

- Powertools stores its own record format: `pk` = `<function name>.handler.process_envelope#`
  + MD5 of the JSON-encoded dedup key (a hash, not `processed#<dedup_key>`), attributes
  `expiration`, `in_progress_expiration`, `status` (INPROGRESS/COMPLETED) and `data` (the
  JSON-serialised result). Ours writes `processed#<dedup_key>` with status
  PROCESSING/PROCESSED, a lease, a claim token, the event type, a content fingerprint and
  `processed_at`. The receivers read ours; nothing would read these.
- Ours fingerprints the event's content (canonical JSON, SHA-256) into the claim; this peer
  computes no payload hash (no `payload_validation_jmespath`).
- Ours processes the records of a batch concurrently; BatchProcessor runs them in turn.
- Ours resolves claim-checked envelopes (`payload_ref`) from S3 and runs a replay under a claim
  of its own; the benchmark sends neither, and this peer does neither.
- Ours routes Trybe events to the Trybe handler, which parses the payload into its typed model
  and logs ids (one more log line per record), and emits CloudWatch EMF metrics (counts, handler
  latency, message age) once per batch; this peer parses no typed model and emits no metrics.
- Ours releases its claim when a handler fails (DeleteItem) and keeps a lease for crashes;
  Powertools deletes its INPROGRESS record when the function raises, and expires it after the
  Lambda's remaining time (`register_lambda_context`).

Run by awslambdaric under tools/webhook-bench's emulated Runtime API, with the same environment
as ours (EVENTS_TABLE, AWS_ENDPOINT_URL → moto, region, credentials, ...)."""
import json
import os

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)

TTL_SECONDS = int(os.environ.get("DEDUP_TTL_SECONDS", str(7 * 24 * 3600)))

logger = Logger()
processor = BatchProcessor(event_type=EventType.SQS)
persistence = DynamoDBPersistenceLayer(table_name=os.environ["EVENTS_TABLE"], key_attr="pk")
config = IdempotencyConfig(
    event_key_jmespath="dedup_key",
    raise_on_no_idempotency_key=True,
    expires_after_seconds=TTL_SECONDS,
)


@idempotent_function(data_keyword_argument="envelope", config=config, persistence_store=persistence)
def process_envelope(envelope: dict) -> dict:
    """The business processing of one event: here, as our default handler, a log line (ids and
    type only)."""
    logger.info(
        "event processed",
        extra={
            "provider": envelope.get("provider"),
            "event_id": envelope.get("event_id"),
            "event_type": envelope.get("event_type"),
            "tenant": envelope.get("tenant"),
        },
    )
    return {"status": "processed"}


def record_handler(record: SQSRecord):
    envelope = json.loads(record.body)
    if not isinstance(envelope, dict):
        raise ValueError("the message body is not a JSON object")
    return process_envelope(envelope=envelope)


def handler(event, context):
    config.register_lambda_context(context)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )

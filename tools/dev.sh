#!/usr/bin/env bash
# `make dev`: the whole pipeline on this machine. moto (DynamoDB + SQS) on loopback, the table and
# queues, every function under `cargo lambda watch`, and a poller feeding the queue to
# event-processor. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
MOTO_PORT=${MOTO_PORT:-4566}
WATCH_PORT=${WATCH_PORT:-9000}
ENV_FILE=${ENV_FILE:-local.env}
mkdir -p .dev
export PATH="$PWD/.venv/bin:$PATH"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

python tools/moto_server.py --port "$MOTO_PORT" > .dev/moto.log 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q '^PORT' .dev/moto.log 2>/dev/null && break; sleep 0.2; done
grep -q '^PORT' .dev/moto.log || { echo "moto did not start:"; cat .dev/moto.log; exit 1; }
endpoint="http://127.0.0.1:$MOTO_PORT"

python tools/dev_setup.py --endpoint "$endpoint" --env-file "$ENV_FILE" > .dev/resources.env
tools/functions_env.sh "$ENV_FILE" .dev/resources.env > .dev/functions.env
queue_url=$(sed -n 's/^EVENTS_QUEUE_URL=//p' .dev/resources.env)

cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$WATCH_PORT" --env-file .dev/functions.env > .dev/watch.log 2>&1 &
pids+=($!)

python tools/sqs_poller.py --endpoint "$endpoint" --queue-url "$queue_url" \
  --invoke-url "http://127.0.0.1:$WATCH_PORT/2015-03-31/functions/event-processor/invocations" > .dev/poller.log 2>&1 &
pids+=($!)

echo "local AWS (moto):   $endpoint  (table $(sed -n 's/^EVENTS_TABLE=//p' "$ENV_FILE"), queue $queue_url)"
for f in functions/*/; do
  name=$(basename "$f")
  [ "$name" = event-processor ] && continue
  echo "  $name:  http://127.0.0.1:$WATCH_PORT/lambda-url/$name/"
done
echo "  event-processor: fed by the poller (log: .dev/poller.log)"
echo "try:  make send PROVIDER=trybe EVENT=basket.submitted"
echo "logs: .dev/watch.log (functions), .dev/poller.log, .dev/moto.log   — Ctrl-C stops everything"
tail -n +1 -F .dev/watch.log .dev/poller.log &
pids+=($!)
wait "${pids[0]}"

#!/usr/bin/env bash
# `make run`: serve the artifact under artifacts/ with an embedded Redis, seed it, print a curl.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${PORT:-8000}
REDIS_PORT=${SAINET_EMBEDDED_REDIS_PORT:-6399}
export SAINET_EMBEDDED_REDIS_PORT=$REDIS_PORT

# No SAINET_REDIS_URL: `sainet serve` starts the embedded Redis itself.
unset SAINET_REDIS_URL
"$BIN/sainet" serve --model-dir artifacts --host 127.0.0.1 --port "$PORT" &
server=$!
stop() { kill -TERM "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
trap stop EXIT
trap 'exit 0' INT TERM   # Ctrl-C is the normal way out: the EXIT trap drains the server

"$BIN/python" - "$PORT" <<'PY'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}/v2/health/ready"
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            if answer.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit("the service did not become ready within 120 s")
PY

"$BIN/sainet" seed --dataset synthetic --redis-url "redis://127.0.0.1:$REDIS_PORT/0"

cat <<MSG

SAINet is serving on http://127.0.0.1:$PORT (Ctrl-C stops it). Try:

curl -s -X POST http://127.0.0.1:$PORT/score -H 'content-type: application/json' \\
  -d '{"user_id": "u42", "scenario": "s1", "candidates": ["i1", "i2", "i3", "i4"]}'

MSG
wait $server

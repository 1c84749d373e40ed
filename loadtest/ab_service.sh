#!/usr/bin/env bash
# One side of an A/B measurement of `sainet serve` (docs/performance.md, "Changes and their effect"):
# starts the service from CODE_DIR (a checkout or `git worktree` of the commit to measure) pinned to
# CPU 0, drives it in closed loop from CPU 1 for SECONDS, and prints throughput, p50/p99 and the CPU
# time per request of the event loop and of the busiest other thread (the inference thread).
#
#   loadtest/ab_service.sh LABEL CODE_DIR SECONDS MODEL_DIR BODIES_JSON REDIS_URL
#
# BODIES_JSON: a JSON list of /score bodies whose users are in REDIS_URL (e.g. from
# `sainet.bench.runner.seed_users`). Alternate A and B runs and compare medians: this machine is noisy.
set -euo pipefail
LABEL=$1; CODE=$2; SECS=$3; MODEL=$4; BODIES=$5; REDIS=$6
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PORT=$("$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
OUT=$(mktemp -d)
SAINET_MODEL_DIR=$MODEL SAINET_REDIS_URL=$REDIS SAINET_INTRA_OP_THREADS=1 SAINET_RELOAD_POLL_SECONDS=0 PYTHONPATH=$CODE \
  taskset -c 0 "$PY" -c "import sys; sys.argv=['sainet','serve','--port','$PORT']; from sainet.cli import main; sys.exit(main())" \
  > "$OUT/server.log" 2>&1 &
SP=$!
trap 'kill $SP 2>/dev/null || true; rm -rf "$OUT"' EXIT
for _ in $(seq 200); do curl -sf "localhost:$PORT/v2/health/ready" >/dev/null && break; sleep 0.3; done
taskset -c 1 "$PY" -m sainet.bench.loadgen --url "http://127.0.0.1:$PORT/score" --bodies "$BODIES" --mode closed \
  --concurrency 32 --seconds "$SECS" --warmup 3 --out "$OUT/load.json" &
LG=$!
snapshot() { for t in /proc/$SP/task/*; do n=$(basename "$t"); [ "$n" = "$SP" ] && n=event_loop || n=thread_$n
             echo "$n $(awk '{print $14+$15}' "$t/stat")"; done; }
sleep 3.2; snapshot > "$OUT/t1"; sleep $((SECS - 1)); snapshot > "$OUT/t2"
wait $LG
"$PY" - "$LABEL" "$OUT" "$SECS" <<'PY'
import json, sys
label, out, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = json.load(open(f"{out}/load.json"))["summary"]
before = dict(l.split() for l in open(f"{out}/t1")); after = dict(l.split() for l in open(f"{out}/t2"))
ticks = sorted(((int(after[k]) - int(before[k])) / 100, k) for k in before if k in after)[::-1]
requests = s["achieved_rate"] * (secs - 1)
per_request = ", ".join(f"{name} {cpu / requests * 1e3:.3f} ms" for cpu, name in ticks[:2])
print(f"{label}: {s['achieved_rate']:.0f} requests/s, p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, "
      f"failed {s['failed']}; CPU per request: {per_request}")
PY

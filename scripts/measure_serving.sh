#!/usr/bin/env bash
# The serving figures of docs/performance.md in one sitting (about 25 minutes on 2 cores):
#   1. sainet bench                          -> docs/bench/cpu/           (compute limits per precision vs the core's peak)
#   2. the LitServe comparison               -> docs/bench/framework-compare/
#   3. the chaos / overload run vs BASELINE  -> docs/bench/chaos/
#   4. replicas behind nginx, Redis Cluster  -> docs/bench/scale/
# Background study workers (`sainet study`) are paused (SIGSTOP) for the duration and resumed after,
# so the figures are not measured against a core they share.
#
#   scripts/measure_serving.sh [MODEL_DIR] [BASELINE_REF]
#
# MODEL_DIR defaults to artifacts-bench/, built here when absent: the default architecture (SAINet
# L = 2, h = 4, d = 32, tower [512, 256, 128, 64]) on the synthetic data, 300 steps. Throughput depends
# on the graph, not on how long it trained; `make model` gives the converged default model instead.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
MODEL=${1:-artifacts-bench}
BASELINE=${2:-8799bbc}      # main before issue 13's changes
if [ ! -d "$MODEL" ]; then
  "$BIN/sainet" train --out runs/bench-model --max-steps 300 --threads 2
  "$BIN/sainet" export --run runs/bench-model --out "$MODEL"
fi

paused=$(pgrep -f "sainet study" || true)
resume() { [ -z "$paused" ] || kill -CONT $paused 2>/dev/null || true; }
trap resume EXIT
[ -z "$paused" ] || kill -STOP $paused

"$BIN/sainet" bench --model-dir "$MODEL" --out docs/bench/cpu
"$BIN/python" loadtest/framework_compare/compare.py --model-dir "$MODEL" --out docs/bench/framework-compare --repeats 3
"$BIN/python" -m loadtest.chaos --model-dir "$MODEL" --out docs/bench/chaos --baseline-ref "$BASELINE"
"$BIN/python" -m loadtest.scale --model-dir "$MODEL" --out docs/bench/scale

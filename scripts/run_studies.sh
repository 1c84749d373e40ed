#!/usr/bin/env bash
# Starts (or resumes) the four reproduction studies of docs/results/ in the background, niced, in
# two lanes of one torch thread each (a 2-core machine). Finished cells are skipped, so rerunning
# this after an interruption picks up where the studies stopped. Lane A, once its three studies are
# done, joins lane B as a second worker on the long MovieLens study (cells are claimed with locks,
# so the two never train the same cell). Logs: runs/study-logs/.
#
#   scripts/run_studies.sh [DATA_ROOT]      default DATA_ROOT: ../shared/data
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
SAINET=${SAINET:-.venv/bin/sainet}
LOGS=runs/study-logs
mkdir -p "$LOGS"
study() { nice -n 19 "$SAINET" study --threads 1 --seeds 5 --models all "$@"; }

lane_a() {
  study --dataset synthetic --out docs/results/synthetic > "$LOGS/synthetic.log" 2>&1
  nice -n 19 "$SAINET" study --protocol scenario-wise-rec --dataset movielens-1m --data-dir "$DATA/movielens-1m" \
    --threads 1 --out docs/results/movielens-1m-scenario-wise-rec > "$LOGS/movielens-1m-scenario-wise-rec.log" 2>&1
  study --dataset amazon-cdsr --data-dir "$DATA/amazon-food-kitchen" --out docs/results/amazon-cdsr \
    > "$LOGS/amazon-cdsr.log" 2>&1
  movielens_random worker-2
}
lane_b() {
  movielens_random worker-1
}
movielens_random() {
  study --dataset movielens-1m --data-dir "$DATA/movielens-1m" --split random --out docs/results/movielens-1m \
    > "$LOGS/movielens-1m.$1.log" 2>&1
}

nohup bash -c "$(declare -f study movielens_random lane_a); SAINET=$SAINET DATA=$DATA LOGS=$LOGS; lane_a" > /dev/null 2>&1 &
nohup bash -c "$(declare -f study movielens_random lane_b); SAINET=$SAINET DATA=$DATA LOGS=$LOGS; lane_b" > /dev/null 2>&1 &
echo "studies running in the background; logs in $LOGS/, cells in docs/results/*/cells/"

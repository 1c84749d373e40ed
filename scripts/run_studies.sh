#!/usr/bin/env bash
# Starts (or resumes) the converged reproduction studies of docs/results/ in the background, niced,
# one torch thread per worker. Finished cells are skipped, and a cell a stopped worker was training
# continues from its last checkpoint (every 200 steps, in results-data/<study>/cells/.scratch/), so
# rerunning this after an interruption picks up where a study stopped; cells are claimed with file
# locks, so several workers (one per free core) may run the same study at once: `WORKERS=2 scripts/run_studies.sh`.
# Studies, in the order a worker runs them: the synthetic sweep (divergence 1, 0, 0.7, 0.35); SAINet's
# readings and the L / gamma / h curves on synthetic (divergence 1); amazon-cdsr-converged (its models,
# seeds and readings, then its curves); movielens-1m-converged.
# Cells: results-data/<study>/cells/ (committed); reports: docs/results/<study>/; logs: runs/study-logs/.
#
#   scripts/run_studies.sh [DATA_ROOT]      default DATA_ROOT: ../shared/data
#
# Rebuild a report from the cells finished so far (trains nothing): the same command plus --report-only.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
SAINET=${SAINET:-.venv/bin/sainet}
WORKERS=${WORKERS:-1}
LOGS=runs/study-logs
mkdir -p "$LOGS"

# Amazon Food-Kitchen at convergence (issue 14): batch 512, validation every 200 steps, patience 3
# evaluations, budget 20 epochs, each model's lr chosen on validation from 3e-4,1e-3,3e-3 on seed 0
# (the `sainet study` defaults), then 10 seeds. Plan order: every model's lr grid, then seed by seed,
# then SAINet's documented readings (issue 14 item 4) on 5 seeds each, compared on validation (readings.md),
# then the L / gamma / h curves (the paper's Figure 4; 3 seeds per point, about 33 cells of 3 minutes).
amazon_converged() {
  nice -n 19 "$SAINET" study --dataset amazon-cdsr --data-dir "$DATA/amazon-food-kitchen" \
    --models sainet,adasparse,pepnet,sainet-no-sdt,dnn --seeds 10 --reading-seeds 5 --threads 1 \
    --cells-dir results-data/amazon-cdsr-converged/cells --out docs/results/amazon-cdsr-converged
}

# MovieLens-1M at convergence (issue 14 item 5): SAINet against the three strongest baselines of the
# Amazon grid (AdaSparse, PEPNet, DNN) and sainet-no-sdt, 5 seeds. Its 800 K training examples carry
# full 50-behaviour histories, so a step costs about 10x an Amazon one and a validation pass (100 K
# examples) as much as 200 steps at batch 512: batch 1024 (validation every 200 steps = 200 K
# examples) and a short lr grid keep the cells near the 12-hour budget of one core. The grid began
# at 1e-3,3e-3 (Amazon chose 1e-3 for every model, 3e-3 a close second); 3e-3 won for four of the
# five models, SAINet by 0.006 validation AUC, so 1e-2 was added: a main cell trained at a rate no
# longer chosen is trained again.
movielens_converged() {
  nice -n 19 "$SAINET" study --dataset movielens-1m --data-dir "$DATA/movielens-1m" --split random \
    --models sainet,adasparse,pepnet,sainet-no-sdt,dnn --seeds 5 --no-curves --threads 1 \
    --batch-size 1024 --lr-grid 1e-3,3e-3,1e-2 \
    --cells-dir results-data/movielens-1m-converged/cells --out docs/results/movielens-1m-converged
}

# The synthetic sweep over the divergence knob (issue 14 item 3; world and reference in
# docs/results/synthetic-world.md): SAINet, the best baselines and the two history ablations at
# divergence 0 (scenario tags carry nothing beyond the pooled history), 0.35, 0.7 and 1 (unrelated
# tastes per scenario), 3 seeds each, lr from 1e-3,3e-3,1e-2 on seed 0 of each divergence (the grid
# began at 1e-3,3e-3, where 11 of the 24 choices sat at 3e-3, its upper edge). World: 3000
# users x 100 events, 200 items, 30-behaviour histories (about 12 clicks at test time). Validation
# at each epoch's end (469 steps), patience 4: SAINet sits on a plateau at popularity level for
# about 900 steps before it learns from the history, and the default 3 x 200 steps stops it there.
# Budget 30 epochs: at 20, SAINet (lr 3e-3, divergence 1) was still improving at its cap (best at
# step 7973 of 9380); a cell capped while improving is trained again when the budget grows.
# Estimated cost (about 12 hours of one core) in synthetic-world.md. The two ends of the knob come
# first (1: the tags are worth 0.057 AUC to trees; 0: nothing), so the thesis is tested early.
synthetic_study() {    # synthetic_study DIVERGENCE [more `sainet study` options]
  local divergence=$1
  shift
  nice -n 19 "$SAINET" study --dataset synthetic --synthetic-divergence "$divergence" \
    --synthetic-users 3000 --synthetic-items 200 --synthetic-events 100 --history-length 30 \
    --models sainet,adasparse,pepnet,dnn,sainet-no-sie,sainet-no-stm --seeds 3 --threads 1 \
    --lr-grid 1e-3,3e-3,1e-2 --eval-every-steps 0 --patience 4 --epochs 30 \
    --cells-dir "results-data/synthetic-sweep/d=$divergence/cells" --out "docs/results/synthetic-sweep/d=$divergence" "$@"
}

synthetic_sweep() {
  for divergence in 1 0 0.7 0.35; do
    synthetic_study "$divergence" --no-curves
    # the sweep's own table and plot across the divergences (docs/results/synthetic-sweep/README.md)
    "$(dirname "$SAINET")/python" scripts/sweep_report.py docs/results/synthetic-sweep > /dev/null
  done
}

# Where the scenario tags pay (divergence 1), SAINet's documented readings on 3 seeds each (18 cells)
# and the L / gamma / h curves (3 seeds per point, 33 cells): 51 SAINet-sized cells of about 700 s,
# about 10 hours of one core.
synthetic_followups() {
  synthetic_study 1 --reading-seeds 3
}

# One worker runs the studies in turn (a finished study's cells are skipped at once).
for i in $(seq 1 "$WORKERS"); do
  # setsid gives the worker a scheduling autogroup of its own, which the kernel weighs like any other
  # session whatever the nice of its processes: the group's own nice keeps the worker from taking a
  # core from foreground work.
  setsid nohup bash -c "echo 19 > /proc/self/autogroup 2>/dev/null || true; \
    $(declare -f amazon_converged synthetic_study synthetic_sweep synthetic_followups movielens_converged); \
    SAINET=$SAINET DATA=$DATA; synthetic_sweep; synthetic_followups; amazon_converged; movielens_converged" > "$LOGS/converged.worker-$i.log" 2>&1 < /dev/null &
  echo "worker $i: pid $! log $LOGS/converged.worker-$i.log"
done
echo "cells in results-data/<study>/cells/, reports in docs/results/<study>/"

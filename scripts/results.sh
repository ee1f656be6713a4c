#!/usr/bin/env bash
# Reproduces docs/results.md: every variant of the paper's Table 3 on the synthetic set, 3 seeds,
# on the CPU. Usage: scripts/results.sh [OUT_DIR] (default results/). About 1.5 hours on 2 idle cores
# (one guidance run with trained text alone takes ~15 minutes).
set -euo pipefail
OUT=${1:-results}
FW=${FW:-.venv/bin/framewatch}
SEEDS=${SEEDS:-"0 1 2"}
# The shared settings are the recipe training/recipes/results.yaml; each run adds its variant.
COMMON=(--config results --quiet)
mkdir -p "$OUT"
[ -f "$OUT/data/dataset.json" ] || $FW data synth "$OUT/data" --train 1200 --val 300 --test 600 --seed 7 --image-size 64 --quiet
for seed in $SEEDS; do
  run() { local name=$1; shift; [ -f "$OUT/runs/$name-s$seed/metrics.json" ] || $FW train --data "$OUT/data" --out "$OUT/runs/$name-s$seed" --seed "$seed" "${COMMON[@]}" "$@"; }
  run baseline --mode baseline
  run guidance-frozen --mode guidance --freeze-text
  run guidance-trained --mode guidance --train-text
  run distill --mode distill --teacher "$OUT/runs/guidance-frozen-s$seed"
done
$FW report "$OUT"/runs/* --out "$OUT/report.md"

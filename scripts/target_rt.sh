#!/usr/bin/env bash
# Issue 19: LTP with a FLOPs target (default 0.5 = 2x fewer) over several seeds, from a
# fine-tuned checkpoint (default: the demo's; Rotten Tomatoes, MiniLM-L6). Each seed: soft stage
# with the FLOPs penalty, calibration on training texts, hard stage held on target; dev figures
# from the sweep, test figures from `ltprune eval --split test`; scripts/target_summary.py sums
# them up (mean, std, 95% t-interval). Rerunnable: finished points and evaluations are reused.
#
#   scripts/target_rt.sh [FINETUNED] [OUT]     env: PY, SEEDS (0,1,2), TARGET (0.5), TRAIN (2000),
#                                                   SOFT_EPOCHS (1), HARD_EPOCHS (2), THREADS (2),
#                                                   TASK (rotten_tomatoes), DATA_ARGS (data options for
#                                                   the sweep and the evaluations, e.g. --max-length 256),
#                                                   SWEEP_ARGS (more sweep options, after the defaults: e.g. --hard-lr 4e-5)
set -euo pipefail
FT=${1:-runs/demo/finetune/final}
OUT=${2:-runs/target_rt}
PY=${PY:-python}
SEEDS=${SEEDS:-0,1,2}
TARGET=${TARGET:-0.5}
TRAIN=${TRAIN:-2000}
THREADS=${THREADS:-2}
TASK=${TASK:-rotten_tomatoes}
read -r -a DATA <<< "${DATA_ARGS:-}"
read -r -a MORE <<< "${SWEEP_ARGS:-}"
for s in ${SEEDS//,/ }; do  # one sweep call per seed: each is a few minutes, and all land in one points.json
  $PY -m ltprune.cli sweep --method ltp --ltp-knob target --knobs "$TARGET" --seeds "$s" --model "$FT" \
    --task "$TASK" --output-dir "$OUT" --max-train-examples "$TRAIN" "${DATA[@]}" \
    --soft-epochs "${SOFT_EPOCHS:-1}" --hard-epochs "${HARD_EPOCHS:-2}" --hard-lr 2e-5 --threads "$THREADS" \
    "${MORE[@]}"  # last, so that they override the defaults above
  test_dir="$OUT/test/seed-$s"
  [ -f "$test_dir/metrics.json" ] || $PY -m ltprune.cli eval --model "$OUT/ltp/$TARGET/seed-$s/hard/final" \
    --task "$TASK" "${DATA[@]}" --split test --output-dir "$test_dir" --threads "$THREADS"
done
[ -f "$OUT/test/unpruned/metrics.json" ] || $PY -m ltprune.cli eval --model "$FT" --mode off \
  --task "$TASK" "${DATA[@]}" --split test --output-dir "$OUT/test/unpruned" --threads "$THREADS"
$PY scripts/target_summary.py "$OUT" --target "$TARGET"

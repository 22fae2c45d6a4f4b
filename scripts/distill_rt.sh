#!/usr/bin/env bash
# Issue 19: is distillation worth its cost in the recipe? Rotten Tomatoes, MiniLM-L6, LTP with a
# FLOPs target (default 0.5), each seed trained twice with `ltprune train`, the same command but
# for --distill-from (the unpruned fine-tuned model as teacher, alpha 0.5, T 2): soft 1 epoch,
# hard 2 epochs on the same 2,000 training texts as scripts/equal_flops_rt.sh. Dev from the
# runs, test from `ltprune eval --split test`; scripts/distill_summary.py pairs the arms per seed.
#
#   scripts/distill_rt.sh [FINETUNED] [OUT]   env: PY, SEEDS (0,1,2), TARGET (0.5), THREADS (2),
#       ARMS (plain,kd), TRAIN (2000), SOFT_EPOCHS (1), HARD_EPOCHS (2), TASK (rotten_tomatoes),
#       DATA_ARGS (data options of the runs and evaluations, e.g. --max-length 256),
#       TRAIN_ARGS (more `ltprune train` options, last: e.g. --hard-lr 4e-5)
# The defaults are the Rotten Tomatoes measurement; scripts/imdb_converged_cpu.sh (step 9) sets the rest.
set -euo pipefail
FT=${1:-runs/demo/finetune/final}
OUT=${2:-runs/distill_rt}
PY=${PY:-python}
SEEDS=${SEEDS:-0,1,2}
TARGET=${TARGET:-0.5}
THREADS=${THREADS:-2}
TASK=${TASK:-rotten_tomatoes}  # (another task or a CSV: a dry run on a tiny model)
ARMS=${ARMS:-plain,kd}
read -r -a DATA <<< "${DATA_ARGS:-}"
read -r -a MORE <<< "${TRAIN_ARGS:-}"
for s in ${SEEDS//,/ }; do
  for arm in ${ARMS//,/ }; do
    run="$OUT/$arm/seed-$s"
    extra=()
    [ "$arm" = kd ] && extra=(--distill-from "$FT")
    if [ ! -f "$run/hard/metrics.json" ]; then
      start=$(date +%s)
      $PY -m ltprune.cli train --model "$FT" --task "$TASK" --output-dir "$run" --resume \
        --stages soft,hard --target-flops "$TARGET" --max-train-examples "${TRAIN:-2000}" "${DATA[@]}" \
        --soft-epochs "${SOFT_EPOCHS:-1}" --hard-epochs "${HARD_EPOCHS:-2}" --lr 2e-5 --train-seed "$s" \
        --threads "$THREADS" "${extra[@]}" "${MORE[@]}"
      echo $(( $(date +%s) - start )) > "$run/wall_seconds"  # the whole command (an interrupted run: its last part)
    fi
    [ -f "$OUT/test/$arm/seed-$s/metrics.json" ] || $PY -m ltprune.cli eval --model "$run/hard/final" \
      --task "$TASK" "${DATA[@]}" --split test --output-dir "$OUT/test/$arm/seed-$s" --threads "$THREADS"
  done
done
$PY scripts/distill_summary.py "$OUT"

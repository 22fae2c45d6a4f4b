#!/usr/bin/env bash
# Issue 19: LTP vs top-k, manual thresholds and LAT on Rotten Tomatoes (MiniLM-L6) at equal FLOPs
# and equal training budgets, over several seeds. From one fine-tuned checkpoint (default: the
# demo's), every method runs at each FLOPs target (`ltprune sweep --equal-flops`: LTP's FLOPs
# target; top-k's keep ratio and manual's final threshold calibrated on training texts; LAT's
# search target) and trains as many epochs (`--equal-budget`: LTP soft + hard = the baselines'
# one stage) on the same 2,000 training texts, without distillation. Selection on dev; each
# point's model is then scored on the test split (`ltprune eval`, LAT with `--length-config`).
# scripts/equal_flops_summary.py sums them up. Rerunnable: finished points and evaluations are
# reused. One sweep call per seed and method, so an interrupted run leaves whole points.
#
#   scripts/equal_flops_rt.sh [FINETUNED] [OUT]   env: PY, SEEDS (0,1,2), TARGETS (0.6,0.5), TRAIN (2000),
#                                                      SOFT_EPOCHS (1), HARD_EPOCHS (2), THREADS (2),
#                                                      METHODS (ltp,topk,manual,lat: a subset runs only those),
#                                                      TASK (rotten_tomatoes), DATA_ARGS (data options for the
#                                                      sweep and the evaluations, e.g. --max-length 256),
#                                                      SWEEP_ARGS (more sweep options, after the defaults)
set -euo pipefail
FT=${1:-runs/demo/finetune/final}
OUT=${2:-runs/equal_rt}
PY=${PY:-python}
SEEDS=${SEEDS:-0,1,2}
TARGETS=${TARGETS:-0.6,0.5}
THREADS=${THREADS:-2}
TASK=${TASK:-rotten_tomatoes}  # (another task or a CSV: a dry run on a tiny model)
METHODS=${METHODS:-ltp,topk,manual,lat}
read -r -a DATA <<< "${DATA_ARGS:-}"
read -r -a MORE <<< "${SWEEP_ARGS:-}"
for s in ${SEEDS//,/ }; do
  for m in ${METHODS//,/ }; do  # one method at a time (each point trains from its own seed, whatever the order)
    $PY -m ltprune.cli sweep --method "$m" --equal-flops "$TARGETS" --equal-budget --seeds "$s" --model "$FT" \
      --task "$TASK" --output-dir "$OUT" --max-train-examples "${TRAIN:-2000}" "${DATA[@]}" \
      --soft-epochs "${SOFT_EPOCHS:-1}" --hard-epochs "${HARD_EPOCHS:-2}" --hard-lr 2e-5 --lengthdrop-lr 2e-5 \
      --population 8 --generations 4 --threads "$THREADS" "${MORE[@]}"  # last: they override the defaults
  done
  for t in ${TARGETS//,/ }; do
    for m in ${METHODS//,/ }; do
      test_dir="$OUT/test/$m/$t/seed-$s"
      [ -f "$test_dir/metrics.json" ] && continue
      if [ "$m" = lat ]; then
        $PY -m ltprune.cli eval --model "$OUT/seed-$s/lat/lengthdrop/final" --length-config "$OUT/lat/$t/seed-$s/search.json" \
          --task "$TASK" "${DATA[@]}" --split test --output-dir "$test_dir" --threads "$THREADS"
      else
        $PY -m ltprune.cli eval --model "$OUT/$m/$t/seed-$s/hard/final" \
          --task "$TASK" "${DATA[@]}" --split test --output-dir "$test_dir" --threads "$THREADS"
      fi
    done
  done
done
[ -f "$OUT/test/unpruned/metrics.json" ] || $PY -m ltprune.cli eval --model "$FT" --mode off \
  --task "$TASK" "${DATA[@]}" --split test --output-dir "$OUT/test/unpruned" --threads "$THREADS"
$PY scripts/equal_flops_summary.py "$OUT"

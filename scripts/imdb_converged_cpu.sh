#!/usr/bin/env bash
# Issue 19, IMDb subset on the 2-core CPU, pruning from a *converged* unpruned model. The earlier
# runs pruned from a 2-epoch fine-tune (test 0.7850) that 4 more epochs lift to 0.8250, so "within
# 1 point of unpruned" mixed the cost of pruning with the gain of training longer. Here:
#   1. the subset fine-tune of scripts/imdb_target_cpu.sh (2 epochs, lr 5e-5)          -> OUT/ft
#   2. 4 more epochs at 4e-5 (scripts/unpruned_reference.sh): the start, R             -> OUT/ref4
#   3. R trained 4 more epochs again: is R converged? (the pruned runs' equal budget)   -> OUT/ref8
#   4. LTP from R, target 0.33, soft 1 + hard 3 epochs, seeds 0,1,2 (scripts/target_rt.sh) -> OUT/ltp
#   5. manual thresholds from R at 0.33, 4 epochs, seeds 0,1,2 (scripts/equal_flops_rt.sh)   -> OUT/manual
#   6. LAT from R at 0.33: LengthDrop 4 epochs, then the search on dev, seed 0             -> OUT/lat
#   7. LTP as in 4 with thresholds at lr 1e-3 (10x): do freer thresholds find a better schedule? seed 0
#                                                                                          -> OUT/ltp_tlr1e-3
#   8. LTP as in 4 with 5 hard epochs (a longer budget than R's reference), seeds 0,1,2      -> OUT/ltp_h5
#   9. step 8 distilled from R (--distill-from, alpha 0.5, T 2; scripts/distill_rt.sh), seeds 0,1,2 -> OUT/kd_h5
#      and LTP as in 4 with 8 hard epochs, seeds 0,1,2                                      -> OUT/ltp_h8
#      and top-k asked for 0.33 as manual in 5, seeds 0,1,2: its cascade keeps 3 of 6 layers whole,
#      so it lands at its floor, 0.57 (docs/DECISIONS.md); scored, not compared at 3x    -> OUT/topk
#      and step 8 at a 0.4 target (2.5x), seeds 0,1,2: where on IMDb is the 1-point line?   -> OUT/ltp_h5_t0.4
#  10. every model above scored on the whole test split, 2,500 reviews (scripts/imdb_full_test.sh)
#                                                                                          -> OUT/test_full
#  11. the threshold schedule's shape, untrained R at 0.33 (scripts/imdb_shape_check.py; dev) -> OUT/shape_check.json
#      and step 8 from the initial shape 1,0,0,0,0,0 (one step after layer 0), seeds 0,1,2  -> OUT/ltp_h5_l0
#      (step 10's script scores these too; it runs last)
# Same data as the earlier subset runs: 1,000 training reviews, 256 tokens, 400 dev / 400 test
# reviews. Rerunnable: finished steps are reused. About 4.5 hours on an AMD EPYC's 2 cores.
#
#   scripts/imdb_converged_cpu.sh [OUT]   env: PY, SEEDS (0,1,2), TARGET (0.33)
set -euo pipefail
OUT=${1:-runs/imdb_conv}
HERE=$(dirname "$0")
# what every step shares (the scripts below read these from the environment)
export PY=${PY:-python} TASK=imdb TRAIN=1000 TARGET=${TARGET:-0.33} SEEDS=${SEEDS:-0,1,2} \
  DATA_ARGS="--max-length 256 --max-eval-examples 400"
read -r -a DATA <<< "$DATA_ARGS"
BASE=$($PY -c "from ltprune.resources import offline_model_dir; print(offline_model_dir())")
[ -f "$OUT/ft/finetune/metrics.json" ] || $PY -m ltprune.cli train --model "$BASE" --task imdb \
  --stages finetune --finetune-epochs 2 --finetune-lr 5e-5 --max-train-examples "$TRAIN" "${DATA[@]}" \
  --output-dir "$OUT/ft" --resume --threads 2
bash "$HERE/unpruned_reference.sh" "$OUT/ft/finetune/final" "$OUT/ref4"
bash "$HERE/unpruned_reference.sh" "$OUT/ref4/finetune/final" "$OUT/ref8"
R="$OUT/ref4/finetune/final"
SOFT_EPOCHS=1 HARD_EPOCHS=3 SWEEP_ARGS="--hard-lr 4e-5 --threshold-lr 1e-4" bash "$HERE/target_rt.sh" "$R" "$OUT/ltp"
TARGETS=$TARGET METHODS=manual SOFT_EPOCHS=1 HARD_EPOCHS=3 SWEEP_ARGS="--hard-lr 4e-5" \
  bash "$HERE/equal_flops_rt.sh" "$R" "$OUT/manual"
TARGETS=$TARGET METHODS=lat SEEDS=0 SOFT_EPOCHS=1 HARD_EPOCHS=3 SWEEP_ARGS="--hard-lr 4e-5 --lengthdrop-lr 4e-5" \
  bash "$HERE/equal_flops_rt.sh" "$R" "$OUT/lat"
SEEDS=0 SOFT_EPOCHS=1 HARD_EPOCHS=3 SWEEP_ARGS="--hard-lr 4e-5 --threshold-lr 1e-3" \
  bash "$HERE/target_rt.sh" "$R" "$OUT/ltp_tlr1e-3"
SOFT_EPOCHS=1 HARD_EPOCHS=5 SWEEP_ARGS="--hard-lr 4e-5 --threshold-lr 1e-4" bash "$HERE/target_rt.sh" "$R" "$OUT/ltp_h5"
ARMS=kd HARD_EPOCHS=5 TRAIN_ARGS="--hard-lr 4e-5 --threshold-lr 1e-4" bash "$HERE/distill_rt.sh" "$R" "$OUT/kd_h5"
SOFT_EPOCHS=1 HARD_EPOCHS=8 SWEEP_ARGS="--hard-lr 4e-5 --threshold-lr 1e-4" bash "$HERE/target_rt.sh" "$R" "$OUT/ltp_h8"
TARGETS=$TARGET METHODS=topk SOFT_EPOCHS=1 HARD_EPOCHS=3 SWEEP_ARGS="--hard-lr 4e-5" \
  bash "$HERE/equal_flops_rt.sh" "$R" "$OUT/topk"
TARGET=0.4 SOFT_EPOCHS=1 HARD_EPOCHS=5 SWEEP_ARGS="--hard-lr 4e-5 --threshold-lr 1e-4" \
  bash "$HERE/target_rt.sh" "$R" "$OUT/ltp_h5_t0.4"
[ -f "$OUT/shape_check.json" ] || $PY "$HERE/imdb_shape_check.py" "$R" --target "$TARGET" --output "$OUT/shape_check.json"
SOFT_EPOCHS=1 HARD_EPOCHS=5 SWEEP_ARGS="--hard-lr 4e-5 --threshold-lr 1e-4 --threshold-shape 1,0,0,0,0,0" \
  bash "$HERE/target_rt.sh" "$R" "$OUT/ltp_h5_l0"
bash "$HERE/imdb_full_test.sh" "$OUT" "$OUT/test_full"
$PY "$HERE/paired_target_summary.py" "$OUT/ltp" "$OUT/ltp_h5" --names hard3,hard5
$PY "$HERE/paired_target_summary.py" "$OUT/manual" "$OUT/ltp" --names manual,ltp --method manual --target "$TARGET"
$PY "$HERE/mcnemar.py" "$OUT/ltp/test/seed-0/examples.jsonl" "$OUT/lat/test/lat/$TARGET/seed-0/examples.jsonl" \
  "$OUT/ltp/test/seed-0/examples.jsonl" "$OUT/manual/test/manual/$TARGET/seed-0/examples.jsonl" \
  "$OUT/lat/test/lat/$TARGET/seed-0/examples.jsonl" "$OUT/ref4/test/examples.jsonl" \
  "$OUT/ltp/test/seed-0/examples.jsonl" "$OUT/ref4/test/examples.jsonl"

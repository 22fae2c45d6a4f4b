#!/usr/bin/env bash
# Issue 19: every model of scripts/imdb_converged_cpu.sh scored on the *whole* IMDb test split
# (2,500 reviews, 256 tokens) instead of its first 400. On 400 reviews one model's accuracy has a
# standard error of about 2 points, as wide as the "within 1 point" being asked; the other 2,100
# test reviews were never looked at by any step (selection is on dev), so scoring on all of them
# is the same held-out measurement, about 2.5x tighter. Training is untouched: the models are read
# from CONV. scripts/full_test_summary.py then prints the drops against R with intervals.
#
#   scripts/imdb_full_test.sh [CONV] [OUT]    env: PY, SEEDS (0,1,2), TARGET (0.33), THREADS (2)
set -euo pipefail
CONV=${1:-runs/imdb_conv}
OUT=${2:-$CONV/test_full}
PY=${PY:-python}
SEEDS=${SEEDS:-0,1,2}
T=${TARGET:-0.33}
EVAL=(--task imdb --max-length 256 --split test --threads "${THREADS:-2}")

source "$(dirname "$0")/score_test.sh"  # score NAME MODEL [eval options]

score unpruned/ft "$CONV/ft/finetune/final" --mode off
score unpruned/R "$CONV/ref4/finetune/final" --mode off
score unpruned/R+4 "$CONV/ref8/finetune/final" --mode off
for s in ${SEEDS//,/ }; do
  score ltp_hard3/seed-$s "$CONV/ltp/ltp/$T/seed-$s/hard/final"
  score ltp_hard5/seed-$s "$CONV/ltp_h5/ltp/$T/seed-$s/hard/final"
  score manual/seed-$s "$CONV/manual/manual/$T/seed-$s/hard/final"
  score topk/seed-$s "$CONV/topk/topk/$T/seed-$s/hard/final"
  score ltp_hard5_kd/seed-$s "$CONV/kd_h5/kd/seed-$s/hard/final"
  score ltp_hard8/seed-$s "$CONV/ltp_h8/ltp/$T/seed-$s/hard/final"
  score ltp_hard5_t0.4/seed-$s "$CONV/ltp_h5_t0.4/ltp/0.4/seed-$s/hard/final"  # 2.5x, not 3x
  score ltp_hard5_l0/seed-$s "$CONV/ltp_h5_l0/ltp/$T/seed-$s/hard/final"  # initial shape 1,0,0,0,0,0
done
score lat/seed-0 "$CONV/lat/seed-0/lat/lengthdrop/final" --length-config "$CONV/lat/lat/$T/seed-0/search.json"
score ltp_tlr1e-3/seed-0 "$CONV/ltp_tlr1e-3/ltp/$T/seed-0/hard/final"
pairs=()
for p in ltp_hard3,ltp_hard5 manual,ltp_hard3 ltp_hard5,ltp_hard5_kd ltp_hard5,ltp_hard8 ltp_hard5,ltp_hard5_l0; do
  [ -d "$OUT/${p%,*}" ] && [ -d "$OUT/${p#*,}" ] && pairs+=(--pair "$p")
done
$PY "$(dirname "$0")/full_test_summary.py" "$OUT" --reference unpruned/R "${pairs[@]}"

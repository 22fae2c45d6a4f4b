#!/usr/bin/env bash
# Issue 19, IMDb subset: the unpruned reference with the pruned models' budget. The subset's
# fine-tuned model (scripts/imdb_target_cpu.sh) trains 2 epochs; every pruned model of
# scripts/equal_flops_rt.sh trains 4 more. This trains the unpruned model 4 more epochs too (lr
# 4e-5, the pruned models' hard rate; its last step, as any fine-tune) and scores it on test, so "within
# 1 point of unpruned" can be read against a model that had the same training.
#
#   scripts/imdb_reference_cpu.sh [FINETUNED] [OUT]   env: PY, EPOCHS (4), LR (4e-5), TRAIN (1000), EVAL (400), LEN (256)
set -euo pipefail
FT=${1:-runs/imdb_cpu/ft/finetune/final}
OUT=${2:-runs/imdb_ref4}
PY=${PY:-python}
DATA=(--max-length "${LEN:-256}" --max-eval-examples "${EVAL:-400}")
[ -f "$OUT/finetune/metrics.json" ] || $PY -m ltprune.cli train --model "$FT" --task imdb --stages finetune \
  --finetune-epochs "${EPOCHS:-4}" --finetune-lr "${LR:-4e-5}" --max-train-examples "${TRAIN:-1000}" "${DATA[@]}" \
  --output-dir "$OUT" --resume --threads 2
[ -f "$OUT/test/metrics.json" ] || $PY -m ltprune.cli eval --model "$OUT/finetune/final" --mode off --task imdb \
  "${DATA[@]}" --split test --output-dir "$OUT/test" --threads 2

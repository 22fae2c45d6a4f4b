#!/usr/bin/env bash
# Issue 19: the unpruned reference with the pruned models' budget. A fine-tuned model is the
# start of every pruned run, and each pruned model then trains several more epochs (soft + hard).
# This trains the unpruned model as many more epochs (mode off; lr 4e-5, the pruned models' hard
# rate; its last step, as any fine-tune) and scores it on test, so "within 1 point of unpruned"
# can also be read against a model that had the same training.
#
#   scripts/unpruned_reference.sh FINETUNED OUT   env: PY, TASK (imdb), EPOCHS (4), LR (4e-5), TRAIN (1000),
#                                                      DATA_ARGS (--max-length 256 --max-eval-examples 400)
#   IMDb subset:     scripts/unpruned_reference.sh runs/imdb_cpu/ft/finetune/final runs/imdb_ref4
#   Rotten Tomatoes: TASK=rotten_tomatoes TRAIN=100000 DATA_ARGS= scripts/unpruned_reference.sh runs/demo/finetune/final runs/rt_ref4
set -euo pipefail
FT=${1:?fine-tuned checkpoint}
OUT=${2:?output folder}
PY=${PY:-python}
TASK=${TASK:-imdb}
DATA_ARGS=${DATA_ARGS-"--max-length 256 --max-eval-examples 400"}  # set but empty: no data options
read -r -a DATA <<< "$DATA_ARGS"
[ -f "$OUT/finetune/metrics.json" ] || $PY -m ltprune.cli train --model "$FT" --task "$TASK" --stages finetune \
  --finetune-epochs "${EPOCHS:-4}" --finetune-lr "${LR:-4e-5}" --max-train-examples "${TRAIN:-1000}" "${DATA[@]}" \
  --output-dir "$OUT" --resume --threads 2
[ -f "$OUT/test/metrics.json" ] || $PY -m ltprune.cli eval --model "$OUT/finetune/final" --mode off --task "$TASK" \
  "${DATA[@]}" --split test --output-dir "$OUT/test" --threads 2

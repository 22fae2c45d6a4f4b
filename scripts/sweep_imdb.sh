#!/usr/bin/env bash
# The IMDb accuracy-vs-FLOPs sweep recorded in docs/RESULTS.md (issue 5). It was run on one
# NVIDIA H100 (about 20 minutes of GPU time; on the 2-core CPU machine it would take days).
# TF32 matmuls, as run there: TORCH_ALLOW_TF32_CUBLAS_OVERRIDE=1. Every call resumes: points
# already in runs/sweep_imdb/points.json are reused, so the script can be stopped and rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
LTPRUNE=${LTPRUNE:-.venv/bin/ltprune}
BASE=$(.venv/bin/python -c "from ltprune.resources import offline_model_dir; print(offline_model_dir())")
S=(--model "$BASE" --finetune --task imdb --output-dir runs/sweep_imdb --max-length 512
   --max-train-examples 10000 --finetune-epochs 2 --finetune-lr 5e-5 --epochs 1 --threshold-lr 1e-4
   --hard-lr 2e-5 --eval-batch-size 128 --logging-steps 100)
for method in ltp topk manual lat; do
  "$LTPRUNE" sweep --method $method "${S[@]}" "$@"
done
"$LTPRUNE" sweep --method ltp --knobs 0.02,0.03 "${S[@]}" "$@"

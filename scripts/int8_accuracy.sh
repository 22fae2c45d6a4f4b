#!/usr/bin/env bash
# The int8 export's own dev accuracy (docs/RESULTS.md, "Real int8 inference on CPU").
# Reuses (or makes) the demo's fine-tuned model, trains the 8-bit + LTP + KD model of RESULTS.md,
# then evaluates it fake-quantized (fp32 kernels), exported to int8 with 7-bit activations, and,
# on an AVX512-VNNI CPU, with full 8-bit activations. About 25 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
LTP=.venv/bin/ltprune
[ -f runs/demo/finetune/final/ltprune_stage.json ] || $LTP demo
Q="--task rotten_tomatoes --max-train-examples 3000 --threads 2 --final-threshold 0.013 --hard-lr 2e-5"
[ -f runs/quant/q8_ltp_kd/hard/final/ltprune_stage.json ] || \
  $LTP train --model runs/demo/finetune/final $Q --stages soft,hard --output-dir runs/quant/q8_ltp_kd \
    --quantize 8 --quantize-activations 8 --distill-from runs/demo/finetune/final --resume
M=runs/quant/q8_ltp_kd/hard/final
$LTP eval --model $M --task rotten_tomatoes --threads 2 --output-dir runs/quant/eval_fake_quant
$LTP eval --model $M --task rotten_tomatoes --threads 2 --output-dir runs/quant/eval_int8 --int8
$LTP eval --model $M --task rotten_tomatoes --threads 2 --output-dir runs/quant/eval_int8_full --int8-full-range \
  || echo "(full-range int8 refused on this CPU)"
.venv/bin/python - <<'PY'
import json, pathlib
for name in ("eval_fake_quant", "eval_int8", "eval_int8_full"):
    f = pathlib.Path("runs/quant") / name / "metrics.json"
    if f.is_file():
        m = json.loads(f.read_text())
        print(f"{name:>16}: accuracy {m['accuracy']:.4f}  relative FLOPs {m['relative_flops']:.3f}  int8 {m.get('int8')}")
PY

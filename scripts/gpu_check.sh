#!/usr/bin/env bash
# The prepared GPU check (see scripts/gpu_check.py). On a session lent a GPU, through the device
# tool, from the repository root:  bash scripts/gpu_check.sh   (about 5 minutes; results in $OUT)
# It needs only the machine's own torch + transformers: nothing has to be carried.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
PY=${PY:-python3}
nvidia-smi -L 2>&1 | tee "$OUT/nvidia-smi.txt"
"$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())" | tee "$OUT/versions.txt"
timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_fastpath.py -k "cuda or graph or two_call" 2>&1 | tail -15 | tee "$OUT/pytest.txt"
timeout 420 "$PY" scripts/gpu_check.py --device cuda --output "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log"

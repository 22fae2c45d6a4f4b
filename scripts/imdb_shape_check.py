"""Issue 19: does the threshold schedule's *shape* decide IMDb accuracy at 3x? (forward passes only)

The target recipe keeps the shape of METHOD §3's linear initial thresholds (calibration scales
them by one factor), and one soft epoch barely moves it: the learned IMDb thresholds at 0.33
relative FLOPs keep all ~200 tokens through layer 0, ~100 after layer 1, ~18 after layer 2 and
[CLS] alone after layer 4. The embedding task found the opposite shape (one early step) far better
for its output. Here, the converged unpruned model R (no training) is given each shape, scaled so
the hard model lands on the target on 512 training texts (``calibration.calibrate_thresholds``,
as the recipe does), and scored on dev: a shape that loses much less *before* fine-tuning is a
candidate initial shape for the recipe; one that does not is not worth a training run.

    PYTHONPATH=src python scripts/imdb_shape_check.py runs/imdb_conv/ref4/finetune/final \
        --target 0.33 --output results/imdb_conv/shape_check.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ltprune.calibration import calibrate_thresholds
from ltprune.checkpoint import from_pretrained
from ltprune.data import load_task, tokenize_task
from ltprune.evaluation import evaluate
from ltprune.loading import load_tokenizer
from ltprune.patch import configure, set_thresholds

#: Shapes over the 6 layers (thresholds before scaling; the calibration sets the scale).
SHAPES = {
    "linear (METHOD §3 init)": [0, 1, 2, 3, 4, 5],
    "learned (LTP hard5 seed 0)": [0.002608, 0.005741, 0.008825, 0.011814, 0.013649, 0.018022],
    "flat": [1, 1, 1, 1, 1, 1],
    "layer 0 only": [1, 0, 0, 0, 0, 0],
    "layers 0-1": [1, 1, 0, 0, 0, 0],
    "from layer 1, flat": [0, 1, 1, 1, 1, 1],
    "square root": [0, 1, 1.414, 1.732, 2, 2.236],
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="the unpruned checkpoint (an ltprune finetune/final folder)")
    p.add_argument("--target", type=float, default=0.33)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--train", type=int, default=1000, help="training reviews (calibration texts come from these)")
    p.add_argument("--eval", type=int, default=400, help="dev reviews")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", type=Path, required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dsd, info = load_task("imdb", max_train_examples=a.train, max_eval_examples=a.eval)
    tok = load_tokenizer(a.model)
    data = tokenize_task(dsd, tok, info, max_length=a.max_length)
    model = from_pretrained(a.model, mode="hard")
    configure(model, method="threshold")
    rows = []
    for name, shape in SHAPES.items():
        set_thresholds(model, torch.tensor(shape, dtype=torch.float32) * 1e-3)
        cal = calibrate_thresholds(model, data["train"], tok.pad_token_id, a.target)
        m = evaluate(model, data["validation"], info, tok.pad_token_id)
        row = {"shape": name, "thresholds": cal["thresholds"], "relative_flops_calibration": cal["relative_flops"],
               "relative_flops_dev": round(m["relative_flops"], 4), "accuracy_dev": m["accuracy"],
               "tokens_kept_per_layer": [round(t, 1) for t in m["tokens_kept_per_layer"]]}
        print(json.dumps(row), flush=True)
        rows.append(row)
    configure(model, mode="off")
    ref = evaluate(model, data["validation"], info, tok.pad_token_id)
    out = {"model": a.model, "target": a.target, "max_length": a.max_length, "dev_examples": a.eval,
           "unpruned_accuracy_dev": ref["accuracy"], "shapes": rows}
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(json.dumps(out, indent=1) + "\n")
    print("unpruned dev accuracy", ref["accuracy"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

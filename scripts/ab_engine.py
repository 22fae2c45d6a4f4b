"""Side-by-side timing of this checkout's engine against an older commit's (no-regression check).

    .venv/bin/python scripts/ab_engine.py --commit e818013 --task rotten_tomatoes --batch-sizes 1,8,32,64

The older commit's ``src/ltprune`` is extracted (``git archive``) into a temporary folder and
imported as ``ltprune_old``; both patch deep copies of the same stock MiniLM with the same
thresholds (calibrated to 2x fewer FLOPs), and the stock model, the old engine and the new one
(``score_kernel`` auto and explicit) are timed interleaved batch by batch in one process, so the
ratios share the machine's drift. Prints realised/theoretical (speed-up over stock / FLOPs
reduction) per batch size.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import torch
import transformers

ROOT = Path(__file__).resolve().parents[1]


def load_old(commit: str, where: Path):
    data = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "src/ltprune"], check=True,
                          capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(where)
    (where / "src" / "ltprune").rename(where / "ltprune_old")
    sys.path.insert(0, str(where))
    import ltprune_old

    return ltprune_old


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commit", default="e818013", help="the older commit (default: before this round)")
    parser.add_argument("--task", default="rotten_tomatoes")
    parser.add_argument("--max-examples", type=int)
    parser.add_argument("--batch-sizes", default="1,8,32,64")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    import ltprune
    from ltprune import bench
    from ltprune.data import load_task, tokenize_task
    from ltprune.resources import offline_model_dir
    from ltprune.timing import time_variants_per_item

    old_pkg = load_old(args.commit, Path(tempfile.mkdtemp()))
    tok = transformers.AutoTokenizer.from_pretrained(offline_model_dir())
    dsd, info = load_task(args.task, max_eval_examples=args.max_examples)
    rows = bench._as_rows(tokenize_task({"validation": dsd["validation"]}, tok, info)["validation"])
    stock = transformers.AutoModelForSequenceClassification.from_pretrained(
        offline_model_dir(), num_labels=2, attn_implementation="sdpa").eval()
    new = ltprune.patch(copy.deepcopy(stock), ltprune.LTPConfig(mode="hard"))
    bench.calibrate_thresholds(new, bench.length_sorted_tensors(rows[:256], 0, 32), 0.5)
    explicit = ltprune.patch(copy.deepcopy(new), ltprune.get_config(new).replace(score_kernel="explicit"))
    old = old_pkg.patch(copy.deepcopy(stock), old_pkg.LTPConfig(mode="hard"))
    old_pkg.set_thresholds(old, ltprune.get_thresholds(new).detach().clone())

    def one(model):
        def run(batch):
            with torch.no_grad():
                model(**batch)
        return run

    print(f"{args.task}: {len(rows)} sequences; old = {args.commit}", flush=True)
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        batches = bench.length_sorted_tensors(rows[:128] if bs == 1 else rows, 0, bs)
        reduction = bench.flops_reduction(new, batches)
        t = time_variants_per_item({"stock": one(stock), "old": one(old), "new": one(new),
                                    "new-explicit": one(explicit)}, batches, repeats=args.repeats)
        base = t["stock"]["median"]
        print(f"batch {bs}: FLOPs reduction {reduction:.2f}x, realised/theoretical: " + ", ".join(
            f"{k} {base / v['median'] / reduction:.3f}" for k, v in t.items() if k != "stock"), flush=True)


if __name__ == "__main__":
    main()

"""Do two ltprune trees write the same results? (issue 16: a reshaping must not change outputs)

Run mode: ``PYTHONPATH=<tree>/src python scripts/same_outputs.py run OUT`` trains and evaluates
tiny seeded models on tiny data with that tree: ``train`` (soft, hard), ``sweep`` (ltp, topk),
``experiment robustness`` (ltp), ``qa train`` and the QA curve (the SQuAD v2 fixture).
Compare mode: ``python scripts/same_outputs.py compare OUT_A OUT_B`` compares every
metrics / examples / predictions / points file of two runs, ignoring the keys that hold the run
folder's own path. Example (the base tree from ``git archive <commit> src | tar -x -C /tmp/base``)::

    PYTHONPATH=/tmp/base/src python scripts/same_outputs.py run /tmp/same_a
    PYTHONPATH=src python scripts/same_outputs.py run /tmp/same_b
    python scripts/same_outputs.py compare /tmp/same_a /tmp/same_b
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATH_KEYS = ("run_dir", "best_checkpoint", "lengthdrop_model", "task", "model", "final", "metrics", "final_model")


def run(out: Path) -> None:
    import torch
    import transformers

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import offline_model_dir, save_tiny_classifier, write_reviews_csv

    from ltprune import qa, sweep, training
    from ltprune.config import LTPConfig, StageArgs
    from ltprune.experiments import robustness

    torch.set_num_threads(2)
    logging.disable(logging.WARNING)
    out.mkdir(parents=True, exist_ok=True)
    tiny = save_tiny_classifier(out / "tiny")
    csv = write_reviews_csv(out / "reviews.csv", rows=60)
    args = StageArgs(max_steps=2, batch_size=8, learning_rate=1e-3, logging_steps=1, save_steps=1)
    every = {n: args for n in ("finetune", "soft", "hard", "lengthdrop")}
    ltp = LTPConfig(final_threshold=0.02)
    training.train(str(tiny), str(csv), out / "train", stages=("soft", "hard"), ltp=ltp,
                   stage_args={"soft": args, "hard": args})
    sweep.run_sweep("ltp", tiny, str(csv), out / "sweep", [0.05], ltp=ltp, stage_args=every)
    sweep.run_sweep("topk", tiny, str(csv), out / "sweep", [0.5], ltp=ltp, stage_args=every)
    robustness.run_robustness(tiny, str(csv), out / "rob", [0.05], methods=("ltp",), ltp=ltp, stage_args=every)
    tok = transformers.AutoTokenizer.from_pretrained(offline_model_dir())
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=48)
    transformers.BertForQuestionAnswering(config).save_pretrained(out / "tinyqa")
    tok.save_pretrained(out / "tinyqa")
    squad = ROOT / "tests" / "fixtures" / "squad_v2"
    files = dict(data_file=squad / "train.json", dev_file=squad / "dev.json", ltp=ltp,
                 stage_args={"soft": args, "hard": args}, max_length=64, doc_stride=16)
    qa.train_qa(out / "tinyqa", out / "qa", stages=("soft", "hard"), **files)
    qa.run_qa_experiment(out / "tinyqa", out / "qaexp", [0.05], **files)


def _norm(obj):
    if isinstance(obj, dict):
        return {k: _norm(v) for k, v in obj.items() if k not in PATH_KEYS or not isinstance(v, str) or "/" not in v}
    if isinstance(obj, list):
        return [_norm(v) for v in obj]
    return obj


def _read(path: Path):
    if path.suffix == ".jsonl":
        return [_norm(json.loads(line)) for line in path.read_text().splitlines()]
    return _norm(json.loads(path.read_text()))


def compare(a: Path, b: Path) -> int:
    def results(root):
        return {p.relative_to(root) for p in root.rglob("*") if p.suffix in (".json", ".jsonl")
                and not any(part.startswith("checkpoint-") or part in ("final", "tiny", "tinyqa") for part in
                            p.relative_to(root).parts) and p.name != "ltprune_run.json"}

    left, right = results(a), results(b)
    differ = sorted(str(p) for p in left & right if _read(a / p) != _read(b / p))
    for name in differ:
        print("differs:", name)
    for name in sorted(left ^ right):
        print("only in one:", name)
    print(f"{len(left & right)} files compared, {len(differ)} differ, {len(left ^ right)} in only one run")
    return 1 if differ or left ^ right else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        run(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)

"""``ltprune embedding train|eval`` and ``ltprune embed``: the embedding task's commands.

A command group of its own, not ``ltprune train --task embedding``: its inputs (any unlabeled
text, a sentence-transformers folder) and outputs (vectors, agreement with the unpruned model)
share none of the classification options beyond the LTP and stage ones, which it reuses.
Building these parsers imports neither torch nor sentence-transformers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..checks import parse_stages
from ..errors import ConfigError, LTPError
from .options import add_ltp_options, add_stage_options, add_target_options, ltp_from_args, stage_args_from_args

STAGES = ("soft", "hard")


def add_parsers(sub) -> None:
    p = sub.add_parser("embedding", help="embedding models: label-free LTP training and evaluation",
                       description="Prune a sentence-transformers model without labels (distilled from the "
                                   "unpruned model) and score it against the unpruned embeddings.")
    group = p.add_subparsers(dest="embedding_command", required=True, metavar="{train,eval}",
                             help="train: label-free soft + hard stages; eval: score against the unpruned model")

    t = group.add_parser("train", help="soft + hard stages distilled from the unpruned model",
                         description="Label-free LTP: each stage matches the unpruned model's embeddings "
                                     "(cosine). OUTPUT_DIR/<stage>/final is a sentence-transformers folder; "
                                     "load it with ltprune.embedding.load.")
    t.add_argument("--model", required=True, help="a sentence-transformers folder (modules.json, 1_Pooling)")
    _add_text_options(t, "train")
    t.add_argument("--eval-texts", help="held-out texts (default: the offline set's validation split, or 10%% "
                                        "of a file's texts)")
    t.add_argument("--max-eval-texts", type=int, default=500, help="held-out texts scored after each stage")
    t.add_argument("--output-dir", required=True)
    t.add_argument("--stages", default="soft,hard")
    t.add_argument("--pooling", choices=["survivors", "restored"], default="survivors",
                   help="mean pooling over the surviving tokens or over all, removed ones restored")
    t.add_argument("--mse-weight", type=float, default=0.0, help="weight of an MSE term beside the cosine loss")
    t.add_argument("--token-weight", type=float, default=0.0,
                   help="weight of a token-state term: the surviving tokens' last-layer states vs the unpruned "
                        "model's at the same positions (relative squared error)")
    t.add_argument("--thresholds", help="comma-separated per-layer thresholds to start from (with --stages hard: "
                                        "the fixed thresholds the weights are tuned for; e.g. 0.0075,0,0,0,0,0)")
    t.add_argument("--resume", action="store_true", help="continue this same run from its last complete checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace a finished run in --output-dir")
    add_ltp_options(t)
    add_target_options(t)
    add_stage_options(t, STAGES, batch_size=16)
    t.set_defaults(func=cmd_train, max_eval_examples=None, model_kind="model folder")

    e = group.add_parser("eval", help="mean cosine, recall@10, probe accuracy and FLOPs vs the unpruned model",
                         description="Embed held-out texts with a pruned model and with the unpruned model "
                                     "(--reference, default: the pruned folder with pruning off) -> metrics.json.")
    e.add_argument("--model", required=True, help="a pruned sentence-transformers folder")
    e.add_argument("--reference", help="the unpruned sentence-transformers folder (default: --model, pruning off)")
    _add_text_options(e, "validation")
    e.add_argument("--output-dir", required=True)
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--threads", type=int)
    e.set_defaults(func=cmd_eval, model_kind="model folder")


def add_embed_parser(sub) -> None:
    p = sub.add_parser("embed", help="embed texts with a (pruned) sentence-transformers model -> .npy or JSONL",
                       description="Texts from arguments and/or a file (one a line, or a CSV/JSONL column); "
                                   "vectors out, in input order: .npy (N, D) or JSON lines.")
    p.add_argument("--model", required=True, help="a sentence-transformers folder (pruned or stock)")
    p.add_argument("texts", nargs="*")
    p.add_argument("--file", help="a text file (one text a line) or a CSV/TSV/JSONL file")
    p.add_argument("--text-column", help="the column of a CSV/TSV/JSONL file (default: text, sentence, ...)")
    p.add_argument("--output", required=True, help="a .npy or .jsonl file")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--mode", choices=["hard", "off"], help="override the saved mode (off: unpruned)")
    p.add_argument("--threads", type=int)
    p.set_defaults(func=cmd_embed, model_kind="model folder")


def _add_text_options(p, split: str) -> None:
    p.add_argument("--texts", required=True,
                   help="unlabeled texts: rotten_tomatoes, imdb (their labels unused), a text file (one a line) or "
                        "a CSV/TSV/JSONL file")
    p.add_argument("--text-column", help="the column of a CSV/TSV/JSONL file (default: text, sentence, ...)")
    p.add_argument("--split", default=split, help=f"split of an offline set (default: {split})")
    p.add_argument("--max-texts", type=int, help="use at most this many texts")


def _check_positive(value, option) -> None:
    if value is not None and (isinstance(value, bool) or value < 1):
        raise ConfigError(f"{option} must be >= 1, got {value}")


def _thresholds(text):
    """``--thresholds 0.0075,0,0,...`` as floats (None when not given); a bad entry is a one-line error."""
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--thresholds takes comma-separated numbers, one per layer; got {text!r}") from None


def cmd_train(a) -> int:
    stages = parse_stages(a.stages, allowed=STAGES)
    if a.resume and a.overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: continue the run or replace it")
    _check_positive(a.max_texts, "--max-texts")
    _check_positive(a.max_eval_texts, "--max-eval-texts")
    ltp, stage_args = ltp_from_args(a), stage_args_from_args(a, stages)
    from ..training import set_threads
    from ..embedding.texts import OFFLINE, load_texts, split_texts
    from ..embedding.training import train_embedding

    set_threads(a.threads)
    texts = load_texts(a.texts, split=a.split, column=a.text_column, limit=a.max_texts)
    if a.eval_texts:
        held = load_texts(a.eval_texts, split="validation", column=a.text_column, limit=a.max_eval_texts)
    elif str(a.texts).lower() in OFFLINE:
        held = load_texts(a.texts, split="validation", limit=a.max_eval_texts)
    else:
        texts, held = split_texts(texts)
        held = held[:a.max_eval_texts]
    results = train_embedding(a.model, a.output_dir, train_texts=texts, eval_texts=held, stages=stages, ltp=ltp,
                              stage_args=stage_args, pooling=a.pooling, mse_weight=a.mse_weight,
                              token_weight=a.token_weight, thresholds=_thresholds(a.thresholds), resume=a.resume,
                              overwrite=a.overwrite,
                              data_description={"texts": str(a.texts), "split": a.split, "column": a.text_column,
                                                "max_texts": a.max_texts, "eval_texts": a.eval_texts})
    for stage, r in results.items():
        print(f"{stage:>5}: held-out mean cosine {r['mean_cosine']:.4f}  relative FLOPs {r['relative_flops']:.3f}"
              f"  -> {Path(a.output_dir) / stage / 'final'}")
    return 0


def cmd_eval(a) -> int:
    _check_positive(a.batch_size, "--batch-size")
    _check_positive(a.max_texts, "--max-texts")
    from ..training import set_threads
    from ..embedding import metrics
    from ..embedding.encode import embed
    from ..embedding.st import load
    from ..embedding.texts import OFFLINE, load_texts

    set_threads(a.threads)
    labels = None
    if str(a.texts).lower() in OFFLINE:
        texts, labels = load_texts(a.texts, split=a.split, limit=a.max_texts, with_labels=True)
    else:
        texts = load_texts(a.texts, column=a.text_column, limit=a.max_texts)
    pruned = load(a.model, mode="hard")
    reference = load(a.reference or a.model, mode="off")
    out = embed(pruned, texts, a.batch_size)
    ref = embed(reference, texts, a.batch_size)
    result = {"task": "embedding", "texts": len(texts), "relative_flops": out.relative_flops,
              "gflops": out.gflops, "baseline_gflops": ref.gflops, **metrics.agreement(out.vectors, ref.vectors)}
    if labels is not None and len(set(labels)) > 1 and len(texts) >= 20:
        result["probe_accuracy"] = metrics.probe_accuracy(out.vectors, labels)
        result["reference_probe_accuracy"] = metrics.probe_accuracy(ref.vectors, labels)
    print(json.dumps(result, indent=1), flush=True)
    path = Path(a.output_dir) / "metrics.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
    except OSError as exc:
        raise LTPError(f"cannot write {path} ({exc.strerror or exc}); the metrics are printed above") from None
    print(f"wrote {path}")
    return 0


def cmd_embed(a) -> int:
    _check_positive(a.batch_size, "--batch-size")
    target = Path(a.output)
    if target.suffix.lower() not in (".npy", ".jsonl"):
        raise ConfigError(f"--output {target}: give a .npy or .jsonl file")
    texts = list(a.texts)
    if a.file:
        from ..embedding.texts import load_texts

        texts += load_texts(a.file, column=a.text_column)
    from ..embedding.encode import check_texts

    texts = check_texts(texts)  # refused before the model loads
    from ..training import set_threads
    from ..embedding.st import load

    set_threads(a.threads)
    st = load(a.model, mode=a.mode)
    vectors = st.encode(texts, batch_size=a.batch_size, convert_to_numpy=True)
    if target.suffix.lower() == ".npy":
        import numpy as np

        np.save(target, vectors)
    else:
        with open(target, "w", encoding="utf-8") as handle:
            for text, vector in zip(texts, vectors):
                handle.write(json.dumps({"text": text, "embedding": [round(float(v), 7) for v in vector]},
                                        ensure_ascii=False) + "\n")
    print(f"wrote {len(texts)} embeddings of dimension {vectors.shape[1]} to {target}", file=sys.stderr)
    return 0

"""The embedding experiment of docs/RESULTS.md: FLOPs vs agreement with the unpruned model.

For one review set: a pool of >= 2,000 held-out documents is embedded by the unpruned model
(stock ``SentenceTransformer.encode``) and by each operating point. Per point: relative FLOPs
(METHOD §5), mean cosine to the unpruned embeddings, recall@10 of the unpruned model's top-10
neighbours among the pool, and 5-fold linear-probe and leave-one-out 10-NN accuracy on the
pool's sentiment labels (the only labels used anywhere: training is label-free).

Operating points: ``manual`` (thresholds theta_L * shape, no training: METHOD §7's linear
shape by default, or e.g. ``1,0,0,0,0,0``: one pruning step at the first layer) and ``ltp``
(label-free runs: soft + hard, or the hard stage alone on fixed thresholds; each run's final
thresholds, and the same thresholds scaled by a few factors, give the curve around it: each
scaled point is labelled so). Several ``train_thresholds`` give one run each.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from ..config import LTPConfig, StageArgs
from ..errors import ConfigError
from ..patch import get_config, set_thresholds
from . import metrics
from .encode import embed
from .st import load, patch_sentence_transformer, require_sentence_transformers
from .texts import load_texts
from .training import train_embedding

log = logging.getLogger("ltprune")


def eval_pool(dataset: str, size: int, train_size: int) -> tuple[list[str], list[int], list[str]]:
    """(documents, labels, training texts): held-out documents (validation, then test, then
    training rows past the ones trained on) and the first ``train_size`` training texts."""
    train, train_labels = load_texts(dataset, split="train", with_labels=True)
    docs, labels = [], []
    for split in ("validation", "test"):
        t, y = load_texts(dataset, split=split, with_labels=True)
        docs += t
        labels += y
    extra = size - len(docs)
    if extra > 0:
        docs += train[train_size:train_size + extra]
        labels += train_labels[train_size:train_size + extra]
    return docs[:size], labels[:size], train[:train_size]


def score(vectors, reference, labels) -> dict:
    out = metrics.agreement(vectors, reference, k=10)
    out["probe_accuracy"] = metrics.probe_accuracy(vectors, labels)
    out["knn_accuracy"] = metrics.knn_accuracy(vectors, labels, k=10)
    return out


def manual_thresholds(final: float, layers: int, shape=None) -> list[float]:
    """theta_L * shape_l: the linear (l + 1) / L of METHOD §7 when ``shape`` is None."""
    if shape is None:
        return [final * (i + 1) / layers for i in range(layers)]
    if len(shape) != layers:
        raise ConfigError(f"a threshold shape needs {layers} values (one per layer), got {len(shape)}")
    return [final * float(w) for w in shape]


def run(dataset: str, model_dir, output: Path, *, size: int = 2000, train_size: int = 1000,
        manual=(0.002, 0.004, 0.006, 0.008), scales=(0.5, 1.0, 1.5), train_steps: int = 40,
        lambda_: float = 0.01, final_threshold: float = 0.01, batch_size: int = 32, threads: int = 2,
        shape=None, stages=("soft", "hard"), train_thresholds=(None,), learning_rate: float = 2e-5,
        threshold_lr: float | None = None, token_weight: float = 0.0, train_batch_size: int = 16,
        eval_size: int = 200, reuse: bool = False, train_only: bool = False, tag: str = "", warmup: float = 0.0,
        save_steps: int | None = None, target_flops: float | None = None) -> dict:
    """Run the curve for ``dataset``; writes ``output/<dataset>.json`` and returns it.

    ``shape``: the per-layer shape of the manual thresholds (and of ``train_thresholds``).
    ``train_thresholds``: one label-free run per entry, started from theta_L * shape (None: the
    linear initial schedule of ``final_threshold``, for a soft stage).

    So that no piece holds the shared CPU for long: ``train_only`` runs the label-free trainings
    and nothing else (a finished stage's checkpoints let an interrupted one ``resume``);
    ``reuse`` evaluates a run folder that already holds the last stage's model instead of
    training again. ``tag``: the result file is ``<dataset><tag>.json``. ``target_flops``: the
    label-free runs calibrate their thresholds to it and hold them there (the shape of
    ``train_thresholds`` x ``shape`` kept, its scale found)."""

    torch.set_num_threads(threads)
    st_pkg = require_sentence_transformers()
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    docs, labels, train_texts = eval_pool(dataset, size, train_size)
    if len(docs) < size:
        raise ConfigError(f"{dataset}: only {len(docs)} documents for a pool of {size}")
    stages = tuple(stages)
    runs_ = [(start, output / (f"{dataset}_ltp" if start is None else f"{dataset}_ltp_{start:g}"))
             for start in (train_thresholds if train_steps else ())]
    layers = len(load(model_dir, mode="off")._ltp.encoder.ltp_thresholds)
    for start, run_dir in runs_:
        if reuse and (run_dir / stages[-1] / "final" / "modules.json").is_file():
            continue
        args = {s: StageArgs(max_steps=train_steps, batch_size=train_batch_size, logging_steps=10,
                             learning_rate=learning_rate, threshold_lr=threshold_lr, warmup=warmup, seed=0,
                             save_steps=save_steps)
                for s in stages}
        eval_texts = docs[:eval_size]  # the hard stage's best checkpoint is chosen on these (part of the pool)
        initial = None if start is None else manual_thresholds(start, layers, shape)
        resume = reuse and (run_dir / "ltprune_run.json").is_file()
        train_embedding(model_dir, run_dir, train_texts=train_texts, eval_texts=eval_texts, stages=stages,
                        ltp=LTPConfig(final_threshold=final_threshold, lambda_=lambda_, target_flops=target_flops),
                        stage_args=args,
                        thresholds=initial, token_weight=token_weight, overwrite=not resume, resume=resume,
                        data_description={"dataset": dataset, "train_size": train_size})
    if train_only:
        return {}
    stock = st_pkg.SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    start = time.perf_counter()
    reference = stock.encode(docs, batch_size=batch_size)
    points = [{"method": "unpruned", "relative_flops": 1.0, "seconds": time.perf_counter() - start,
               **score(reference, reference, labels)}]
    log.warning("%s unpruned: %s", dataset, points[0])
    pruned = load(model_dir, mode="hard")
    for final in manual:
        set_thresholds(pruned, manual_thresholds(final, layers, shape))
        points.append(_point(pruned, docs, reference, labels, batch_size, method="manual", theta_L=final,
                             shape=shape))
    for start, run_dir in runs_:
        trained = load(run_dir / stages[-1] / "final", mode="hard")
        learned = trained._ltp.encoder.ltp_thresholds.detach().clone()
        for factor in scales:
            set_thresholds(trained, learned * factor)
            points.append(_point(trained, docs, reference, labels, batch_size, method="ltp", scale=factor,
                                 lambda_=lambda_, steps=train_steps, stages=list(stages), start_theta=start,
                                 learning_rate=learning_rate, token_weight=token_weight,
                                 thresholds=(learned * factor).tolist()))
    result = {"dataset": dataset, "documents": len(docs), "train_texts": len(train_texts),
              "mean_tokens": float(np.mean([len(x) for x in stock.tokenizer(docs, truncation=True,
                                                                             max_length=stock.max_seq_length)["input_ids"]])),
              "points": points}
    (output / f"{dataset}{tag}.json").write_text(json.dumps(result, indent=1))
    return result


def _shape_text(shape) -> str:
    return "" if shape is None else " x (" + ",".join(f"{w:g}" for w in shape) + ")"


def _ltp_text(p) -> str:
    """How an ``ltp`` point was made: its run (stages, start) and the scale of its thresholds."""
    run = "+".join(p.get("stages", ["soft", "hard"]))
    if p.get("start_theta") is not None:
        run += f" from theta {p['start_theta']:g}"
    return f"{run}, x{p['scale']}"


def _point(st, docs, reference, labels, batch_size, **info) -> dict:
    start = time.perf_counter()
    out = embed(st, docs, batch_size)
    point = {**info, "relative_flops": out.relative_flops, "seconds": time.perf_counter() - start,
             **score(out.vectors, reference, labels)}
    log.warning("%s", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in point.items() if k != "thresholds"})
    return point


def throughput(model_dir, pruned_dir_or_thresholds, *, dataset: str = "imdb", count: int = 512,
               batch_size: int = 32, repeats: int = 3, threads: int = 2, scale: float = 1.0) -> dict:
    """Stock ``encode()`` vs pruned ``encode()`` on the same texts, interleaved, median of repeats."""

    torch.set_num_threads(threads)
    st_pkg = require_sentence_transformers()
    texts = load_texts(dataset, split="validation", limit=count)
    stock = st_pkg.SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    if isinstance(pruned_dir_or_thresholds, (list, tuple)):
        pruned = load(model_dir, mode="hard")
        set_thresholds(pruned, pruned_dir_or_thresholds)
    else:
        pruned = load(pruned_dir_or_thresholds, mode="hard")
    if scale != 1.0:
        set_thresholds(pruned, pruned._ltp.encoder.ltp_thresholds.detach() * scale)
    flops = embed(pruned, texts, batch_size).relative_flops
    stock.encode(texts[:batch_size], batch_size=batch_size)  # warm-up
    pruned.encode(texts[:batch_size], batch_size=batch_size)
    times = {"stock": [], "pruned": []}
    for _ in range(repeats):
        for name, model in (("stock", stock), ("pruned", pruned)):
            start = time.perf_counter()
            model.encode(texts, batch_size=batch_size)
            times[name].append(time.perf_counter() - start)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"texts": len(texts), "batch_size": batch_size, "threads": threads, "relative_flops": flops,
            "stock_texts_per_s": len(texts) / med["stock"], "pruned_texts_per_s": len(texts) / med["pruned"],
            "speedup": med["stock"] / med["pruned"], "seconds": times, "scale": scale,
            "thresholds": pruned._ltp.encoder.ltp_thresholds.detach().tolist(),
            "attn_implementation": getattr(stock[0].auto_model.config, "_attn_implementation", None)}


def pooling_check(model_dir, *, dataset: str = "imdb", count: int = 128, manual=(0.002, 0.004, 0.008),
                  batch_size: int = 32, threads: int = 2) -> list[dict]:
    """Mean pooling over survivors vs over all tokens (removed ones restored), same thresholds:
    the measurement behind the default (docs/DECISIONS.md)."""

    torch.set_num_threads(threads)
    texts = load_texts(dataset, split="validation", limit=count)
    reference = require_sentence_transformers().SentenceTransformer(
        str(model_dir), device="cpu", local_files_only=True).encode(texts, batch_size=batch_size)
    st = load(model_dir, mode="hard")
    rows = []
    for final in manual:
        for tokens in ("survivors", "restored"):
            patch_sentence_transformer(st, get_config(st), pooling=tokens)
            set_thresholds(st, manual_thresholds(final, st._ltp.dims.num_layers))
            out = embed(st, texts, batch_size)
            rows.append({"theta_L": final, "pooling": tokens, "relative_flops": out.relative_flops,
                         "mean_cosine": metrics.mean_cosine(out.vectors, reference)})
    return rows


def table(result: dict) -> str:
    """A markdown table of one dataset's points."""
    rows = ["| method | setting | relative FLOPs | FLOPs reduction | mean cosine | recall@10 | probe acc | 10-NN acc |",
            "|---|---|---|---|---|---|---|---|"]
    for p in result["points"]:
        setting = {"manual": lambda: f"theta_L={p['theta_L']}" + _shape_text(p.get("shape")),
                   "ltp": lambda: _ltp_text(p)}.get(p["method"], lambda: "")()
        rows.append(f"| {p['method']} | {setting} | {p['relative_flops']:.3f} | {1 / p['relative_flops']:.2f}x | "
                    f"{p['mean_cosine']:.4f} | {p['recall_at_10']:.3f} | {p['probe_accuracy']:.4f} | "
                    f"{p['knn_accuracy']:.4f} |")
    return "\n".join(rows)

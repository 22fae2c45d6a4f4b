"""Evaluation with FLOPs: accuracy (or the task's metric) together with what pruning saved.

Batches are length-sorted so padding is minimal (the unpruned baseline is measured the same
way); per-example records come from ``outputs.ltp`` of each pass.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import flops as flops_mod
from .batching import MODEL_INPUTS, collate, length_sorted_batches  # noqa: F401 (re-exported)
from .device import place, resolve_device  # noqa: F401 (re-exported)
from .metrics import compute_metrics
from .patch import get_config, get_thresholds, is_patched, record_eval

@dataclass
class Predictions:
    logits: np.ndarray          # (N, C) in dataset order
    lengths: np.ndarray         # (N,)
    tokens_in: np.ndarray       # (N, L)
    tokens_kept: np.ndarray     # (N, L)
    hidden: int
    intermediate: int
    #: the family's position-dependent FLOPs terms (flops.py): local-layer windows, relative keys
    windows: tuple | None = None
    position_keys: int = 0


def record_dims(rec) -> tuple:
    """What the FLOPs formula needs from ``outputs.ltp`` besides token counts (Predictions' tail),
    so that the summary counts a family's window and relative-position terms as its records do."""
    return rec.hidden, rec.intermediate, rec.windows, rec.position_keys


@torch.no_grad()
def predict_dataset(model, dataset, pad_id: int, batch_size: int = 64, progress: bool = False,
                    device="auto") -> Predictions:
    """Run ``model`` over a tokenized dataset; logits and pruning records in dataset order.
    ``device``: see ``place`` (the model is moved there, in place)."""
    place(model, device).eval()
    where = next(model.parameters()).device
    lengths = [len(ids) for ids in dataset["input_ids"]]
    n = len(lengths)
    logits = tokens_in = tokens_kept = None
    rows = [dict(zip(dataset.column_names, values)) for values in zip(*(dataset[c] for c in dataset.column_names))]
    out_len = np.zeros(n, dtype=np.int64)
    dims = None
    for index in tqdm(length_sorted_batches(lengths, batch_size), desc="eval", disable=not progress):
        batch = collate([rows[i] for i in index], pad_id, where)
        out = model(**batch)
        rec = out.ltp
        if logits is None:
            logits = np.zeros((n, out.logits.shape[-1]), dtype=np.float32)
            tokens_in = np.zeros((n, rec.num_layers), dtype=np.int64)
            tokens_kept = np.zeros_like(tokens_in)
            dims = record_dims(rec)
        logits[index] = out.logits.float().cpu().numpy()
        tokens_in[index] = rec.tokens_in.cpu().numpy()
        tokens_kept[index] = rec.tokens_kept.cpu().numpy()
        out_len[index] = rec.lengths.cpu().numpy()
    return Predictions(logits, out_len, tokens_in, tokens_kept, *dims)


def flops_summary(pred: Predictions) -> dict:
    """Mean GFLOPs per example, the unpruned baseline's, and their ratio (METHOD §5), with the
    family's window and relative-position terms (the same numbers as ``outputs.ltp``)."""
    terms = {"windows": pred.windows, "position_keys": pred.position_keys}
    macs = flops_mod.example_macs(torch.from_numpy(pred.tokens_in), torch.from_numpy(pred.tokens_kept),
                                  pred.hidden, pred.intermediate, **terms)
    base = flops_mod.baseline_macs(torch.from_numpy(pred.lengths), pred.tokens_in.shape[1],
                                   pred.hidden, pred.intermediate, **terms)
    return {
        "gflops": float(flops_mod.gflops(macs).mean()),
        "baseline_gflops": float(flops_mod.gflops(base).mean()),
        "relative_flops": float(macs.sum() / base.sum()),
        "tokens_per_layer": pred.tokens_in.mean(0).round(3).tolist(),
        "tokens_kept_per_layer": pred.tokens_kept.mean(0).round(3).tolist(),
        "mean_length": float(pred.lengths.mean()),
    }


def evaluate(model, dataset, info, pad_id: int, batch_size: int = 64, progress: bool = False,
             device="auto") -> dict:
    """Task metric + FLOPs of ``model`` on a tokenized split; the content of ``metrics.json``."""
    pred = predict_dataset(model, dataset, pad_id, batch_size, progress, device)
    labels = np.asarray(dataset["label"])
    scores = compute_metrics(info.metric, pred.logits, labels)
    result = {"task": info.name, "metric_name": info.metric, **scores, **flops_summary(pred),
              "num_examples": int(len(labels))}
    if is_patched(model):
        result["mode"] = get_config(model).mode
        result["thresholds"] = [round(t, 6) for t in get_thresholds(model).detach().cpu().tolist()]
        record_eval(model, result)  # for the model card of a later save_pretrained
    result["_predictions"] = pred
    result["_labels"] = labels
    return result

def flops_reduction(model, batches) -> float:
    """Unpruned MACs / pruned MACs over exactly these batches (unpadded accounting)."""
    total = base = 0.0
    with torch.no_grad():
        for batch in batches:
            rec = model(**batch).ltp
            total += float(rec.macs().sum())
            base += float(rec.baseline_macs().sum())
    return base / total


def write_metrics(result: dict, output_dir, name: str = "metrics.json", examples: bool = True) -> Path:
    """Write ``metrics.json`` (and ``examples.jsonl``: per-example length, kept tokens, correctness)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    path = output_dir / name
    path.write_text(json.dumps(public, indent=1))
    pred, labels = result.get("_predictions"), result.get("_labels")
    if examples and pred is not None:
        classes = pred.logits.argmax(-1) if pred.logits.shape[-1] > 1 else pred.logits[:, 0]
        with open(output_dir / name.replace("metrics", "examples").replace(".json", ".jsonl"), "w") as handle:
            for i in range(len(labels)):
                row = {"index": i, "length": int(pred.lengths[i]), "label": _py(labels[i]),
                       "prediction": _py(classes[i]), "tokens_in": pred.tokens_in[i].tolist(),
                       "tokens_kept": pred.tokens_kept[i].tolist()}
                handle.write(json.dumps(row) + "\n")
    return path


def _py(value):
    value = value.item() if hasattr(value, "item") else value
    return round(value, 6) if isinstance(value, float) and math.isfinite(value) else value

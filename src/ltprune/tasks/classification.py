"""Sequence classification (and regression): one label per text or text pair, the paper's GLUE
and long-text tasks. The task of ``ltprune train / eval / sweep / experiment robustness``.

Its model is a ``...ForSequenceClassification`` (``loading.load_model``), its data come from
``data.load_task`` and ``data.tokenize_task``, its score is the task's metric
(``metrics.compute_metrics``: accuracy, F1, Matthews, Pearson/Spearman) plus FLOPs, and its
per-example file is ``examples.jsonl`` (length, tokens per layer, label, prediction).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .. import data, loading
from ..data import TaskInfo
from ..metrics import compute_metrics
from ..patch import get_config, get_thresholds, is_patched, record_eval
from .base import Predictions, Task, flops_summary, run_batches


class ClassificationTask(Task):
    """The classification task of one dataset (``info``: its metric, labels, number of labels)."""

    def __init__(self, info: TaskInfo):
        self.info = info
        self.name = info.name

    def load_model(self, name_or_path, ltp=None, *, reset_thresholds: bool = False, seed: int = 42):
        """See ``loading.load_model``: the head has the task's labels, named as the data name them."""
        info = self.info
        return loading.load_model(str(name_or_path), info.num_labels, info.is_regression, ltp,
                                  reset_thresholds=reset_thresholds, label_names=info.label_names, seed=seed)

    def prepare(self, dsd, tokenizer, max_length: int | None = None):
        return data.tokenize_task(dsd, tokenizer, self.info, max_length)

    def trainer_metrics(self, eval_ds):
        metric = self.info.metric

        def metrics_fn(prediction):
            logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
            return compute_metrics(metric, logits, prediction.label_ids)

        return metrics_fn

    def predict(self, model, dataset, pad_id: int, batch_size: int = 64, *, progress: bool = False,
                device="auto"):
        """Logits (N, C) in dataset order, and the pruning records (``Predictions.logits`` too)."""
        pred = predict_dataset(model, dataset, pad_id, batch_size, progress, device)
        return pred.logits, pred

    def score(self, model, dataset, outputs, pred: Predictions) -> dict:
        """Task metric + FLOPs; the content of ``metrics.json``. The model keeps the scalars for
        the card of a later ``save_pretrained`` (``patch.record_eval``)."""
        labels = np.asarray(dataset["label"])
        scores = compute_metrics(self.info.metric, outputs, labels)
        result = {"task": self.info.name, "metric_name": self.info.metric, **scores, **flops_summary(pred),
                  "num_examples": int(len(labels))}
        if is_patched(model):
            result["mode"] = get_config(model).mode
            result["thresholds"] = [round(t, 6) for t in get_thresholds(model).detach().cpu().tolist()]
            record_eval(model, result)  # for the model card of a later save_pretrained
        result["_predictions"] = pred
        result["_labels"] = labels
        return result

    def write(self, result: dict, output_dir, name: str = "metrics.json", examples: bool = True) -> Path:
        return write_metrics(result, output_dir, name, examples)


def as_task(task_or_info):
    """A task object: anything else (a ``TaskInfo``, or any object with its ``name`` and ``metric``,
    as older callers pass) is its classification task; None stays None."""
    if task_or_info is None or isinstance(task_or_info, Task):
        return task_or_info
    return ClassificationTask(task_or_info)


def predict_dataset(model, dataset, pad_id: int, batch_size: int = 64, progress: bool = False,
                    device="auto") -> Predictions:
    """Run ``model`` over a tokenized dataset; logits and pruning records in dataset order.
    ``device``: see ``place`` (the model is moved there, in place)."""
    n = len(dataset)
    kept = {}

    def take(index, out):
        if "logits" not in kept:
            kept["logits"] = np.zeros((n, out.logits.shape[-1]), dtype=np.float32)
        kept["logits"][index] = out.logits.float().cpu().numpy()

    pred = run_batches(model, dataset, pad_id, batch_size, take, progress=progress, device=device)
    pred.logits = kept["logits"]
    return pred


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

"""Evaluation with FLOPs: the task's metric together with what pruning saved.

``evaluate`` runs a task's predict and score (``ltprune.tasks``); batches are length-sorted so
padding is minimal (the unpruned baseline is measured the same way), and per-example records
come from ``outputs.ltp`` of each pass. Given a ``TaskInfo`` (as older callers do), the task is
its sequence classification.
"""

from __future__ import annotations

import torch

from .batching import MODEL_INPUTS, collate, length_sorted_batches  # noqa: F401 (re-exported)
from .device import place, resolve_device  # noqa: F401 (re-exported)
from .tasks.base import Predictions, flops_summary, record_dims  # noqa: F401 (re-exported)
from .tasks.classification import as_task, predict_dataset, write_metrics  # noqa: F401 (re-exported)


def evaluate(model, dataset, info, pad_id: int, batch_size: int = 64, progress: bool = False,
             device="auto") -> dict:
    """Task metric + FLOPs of ``model`` on a tokenized split; the content of ``metrics.json``.
    ``info``: a task (``ltprune.tasks``) or a ``TaskInfo`` (its classification task)."""
    return as_task(info).evaluate(model, dataset, pad_id, batch_size, progress=progress, device=device)


def flops_reduction(model, batches) -> float:
    """Unpruned MACs / pruned MACs over exactly these batches (unpadded accounting)."""
    total = base = 0.0
    with torch.no_grad():
        for batch in batches:
            rec = model(**batch).ltp
            total += float(rec.macs().sum())
            base += float(rec.baseline_macs().sum())
    return base / total

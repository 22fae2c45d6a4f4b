"""What every task shares: a pass over a tokenized split that keeps the pruning records, the
FLOPs they add up to, and the small protocol a task module follows (:class:`Task`).

A task is what is particular to one kind of problem: how its model is loaded, how its data
become model inputs, which number the Trainer keeps the best checkpoint by, what a forward pass
yields (logits, start/end logits), how that is scored and written. ``training.run_stage`` and
``evaluation.evaluate`` take a task; everything else (stages, resume, FLOPs) is the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import flops as flops_mod
from ..batching import collate, length_sorted_batches
from ..device import place
from ..trainer import LTPTrainer


@dataclass
class Predictions:
    logits: np.ndarray          # (N, C) in dataset order ((N, 0) when the task's outputs are not logits)
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
def run_batches(model, dataset, pad_id: int, batch_size: int, take, *, columns=None, progress: bool = False,
                device="auto") -> Predictions:
    """One pass of ``model`` over a tokenized split in length-sorted batches (minimal padding, as
    for the unpruned baseline): ``take(index, outputs)`` keeps what the task needs of each batch
    (``index``: the batch's rows in dataset order); the pruning records come back in dataset
    order. ``columns``: the dataset columns handed to the model (all by default). ``device``: see
    ``place`` (the model is moved there, in place)."""
    place(model, device).eval()
    where = next(model.parameters()).device
    columns = list(dataset.column_names if columns is None else columns)
    rows = [dict(zip(columns, values)) for values in zip(*(dataset[c] for c in columns))]
    lengths = [len(r["input_ids"]) for r in rows]
    n = len(rows)
    tokens_in = tokens_kept = out_len = dims = None
    for index in tqdm(length_sorted_batches(lengths, batch_size), desc="eval", disable=not progress):
        out = model(**collate([rows[i] for i in index], pad_id, where))
        rec = out.ltp
        if tokens_in is None:
            tokens_in = np.zeros((n, rec.num_layers), dtype=np.int64)
            tokens_kept, out_len = np.zeros_like(tokens_in), np.zeros(n, dtype=np.int64)
            dims = record_dims(rec)
        take(index, out)
        tokens_in[index] = rec.tokens_in.cpu().numpy()
        tokens_kept[index] = rec.tokens_kept.cpu().numpy()
        out_len[index] = rec.lengths.cpu().numpy()
    return Predictions(np.zeros((n, 0), np.float32), out_len, tokens_in, tokens_kept, *dims)


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


class Task:
    """The protocol of a task (``tasks.classification``, ``tasks.squad``).

    * ``name``, ``info`` (a ``data.TaskInfo``: metric, labels) and ``trainer_cls`` (the stages'
      Trainer; ``LTPTrainer`` unless the loss differs);
    * ``load_model(name_or_path, ltp, ...)``: a patched model with this task's head;
    * ``prepare(dsd, tokenizer, ...)``: the splits as model inputs;
    * ``trainer_metrics(eval_ds)``: the Trainer's ``compute_metrics`` (its ``metric`` picks the
      hard stage's best checkpoint);
    * ``predict(model, dataset, pad_id, batch_size)`` -> ``(outputs, Predictions)``;
    * ``score(model, dataset, outputs, pred)`` -> the result (``metrics.json``'s content; keys
      starting with ``_`` hold what ``write`` needs and are never written as metrics);
    * ``write(result, output_dir)``: ``metrics.json`` and the task's per-example files.

    ``evaluate`` is ``predict`` then ``score``.
    """

    name: str
    info = None
    trainer_cls = LTPTrainer

    def load_model(self, name_or_path, ltp=None, **options):
        raise NotImplementedError

    def prepare(self, dsd, tokenizer, **options):
        raise NotImplementedError

    def trainer_metrics(self, eval_ds):
        raise NotImplementedError

    def predict(self, model, dataset, pad_id: int, batch_size: int = 64, *, progress: bool = False,
                device="auto"):
        raise NotImplementedError

    def score(self, model, dataset, outputs, pred: Predictions) -> dict:
        raise NotImplementedError

    def write(self, result: dict, output_dir):
        raise NotImplementedError

    def evaluate(self, model, dataset, pad_id: int, batch_size: int = 64, *, progress: bool = False,
                 device="auto") -> dict:
        """The task's metrics and FLOPs of ``model`` on a tokenized split."""
        outputs, pred = self.predict(model, dataset, pad_id, batch_size, progress=progress, device=device)
        return self.score(model, dataset, outputs, pred)

"""Calibration of learned thresholds to a FLOPs target (issue 19).

The soft stage's FLOPs penalty steers the thresholds with *expected* token counts under soft
masks, which are not the hard model's counts (a sigmoid is not a step; E[n^2] is not E[n]^2).
So, before the hard stage, one scalar ``c`` scales all learned thresholds (theta_l -> c * theta_l:
the learned shape across layers is kept) and is found by bisection on the hard model's
*measured* relative FLOPs over a few hundred training texts (flops.py's formula, as evaluation).
Relative FLOPs do not increase with ``c`` (a larger threshold never keeps more), so bisection
converges; the texts come from the training split, so dev stays untouched for selection.
"""

from __future__ import annotations

import logging

import torch

from .batching import length_sorted_tensors
from .data import subsample
from .errors import ConfigError
from .evaluation import flops_reduction
from .patch import configured, get_config, get_thresholds, set_thresholds
from .pruning import init_thresholds

log = logging.getLogger("ltprune")

#: Training texts the calibration measures on, and how close (relative FLOPs) it stops.
CALIBRATION_EXAMPLES = 512
CALIBRATION_TOLERANCE = 0.002


def measured_relative_flops(model, batches) -> float:
    """The hard model's relative FLOPs over ``batches`` (sum of MACs / unpruned sum)."""
    return 1.0 / flops_reduction(model, batches)


def calibrate_thresholds(model, dataset, pad_id: int, target: float, *, num_examples: int = CALIBRATION_EXAMPLES,
                         seed: int = 0, batch_size: int = 64, tolerance: float = CALIBRATION_TOLERANCE,
                         max_iters: int = 30) -> dict:
    """Scale the model's thresholds so that hard-mode relative FLOPs on ``num_examples`` texts of
    ``dataset`` (a tokenized split, subsampled with ``seed``) is ``target`` within ``tolerance``
    (or as close as the texts allow). Sets the thresholds and returns what it did: target,
    factor, relative_flops measured before and after, thresholds before and after, examples.
    The model's mode, config and train/eval state are restored afterwards."""
    if not (isinstance(target, (int, float)) and 0 < target <= 1):
        raise ConfigError(f"FLOPs target must lie in (0, 1], got {target!r}")
    rows = subsample(dataset, num_examples, seed)
    device = next(model.parameters()).device
    batches = [{k: v.to(device) for k, v in b.items()} for b in length_sorted_tensors(rows, pad_id, batch_size)]
    before = get_thresholds(model).detach().clone()
    base = before
    if not bool((base > 0).any()):  # nothing to scale: start from the initial ramp's shape
        base = init_thresholds(base.numel(), get_config(model).final_threshold or 0.01).to(base)
    was_training = model.training
    evaluations = {}

    def at(factor: float) -> float:
        if factor not in evaluations:
            set_thresholds(model, base * factor)
            evaluations[factor] = measured_relative_flops(model, batches)
        return evaluations[factor]

    try:
        model.eval()
        with configured(model, mode="hard", method="threshold"):
            start = at(1.0) if base is before else None
            low, high = 0.0, 1.0  # relative FLOPs at low >= target > at high (once bracketed)
            evaluations[0.0] = 1.0  # thresholds 0 (scaled away) remove nothing
            while at(high) > target and high < 1e4:
                low, high = high, high * 2.0
            for _ in range(max_iters):
                best = min(evaluations, key=lambda f: abs(evaluations[f] - target))
                if abs(evaluations[best] - target) <= tolerance:
                    break
                mid = (low + high) / 2
                if at(mid) > target:
                    low = mid
                else:
                    high = mid
            factor = min(evaluations, key=lambda f: (abs(evaluations[f] - target), f))
            set_thresholds(model, base * factor)
    finally:
        model.train(was_training)
    result = {"target_flops": float(target), "factor": float(factor), "relative_flops": float(evaluations[factor]),
              "relative_flops_before": start, "num_examples": len(rows), "evaluations": len(evaluations) - 1,
              "thresholds_before": [round(t, 6) for t in before.cpu().tolist()],
              "thresholds": [round(t, 6) for t in get_thresholds(model).detach().cpu().tolist()]}
    if abs(result["relative_flops"] - target) > max(tolerance, 0.01):
        log.warning("calibration: the closest the thresholds get to %.3f relative FLOPs on these %d texts is %.3f",
                    target, len(rows), result["relative_flops"])
    return result


__all__ = ["calibrate_thresholds", "measured_relative_flops", "CALIBRATION_EXAMPLES", "CALIBRATION_TOLERANCE"]

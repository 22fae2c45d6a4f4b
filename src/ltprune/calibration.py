"""Calibration of learned thresholds to a FLOPs target (issue 19).

The soft stage's FLOPs penalty steers the thresholds with *expected* token counts under soft
masks, which are not the hard model's counts (a sigmoid is not a step; E[n^2] is not E[n]^2).
So, before the hard stage, one scalar ``c`` scales all learned thresholds (theta_l -> c * theta_l:
the learned shape across layers is kept) and is found by bisection on the hard model's
*measured* relative FLOPs over a few hundred training texts (flops.py's formula, as evaluation).
Relative FLOPs do not increase with ``c`` (a larger threshold never keeps more), so bisection
converges; the texts come from the training split, so dev stays untouched for selection.

The hard stage then fine-tunes the weights, which moves the attention scores and so the FLOPs
(+0.02 relative FLOPs over two epochs on 2,000 Rotten Tomatoes texts): ``HoldFlopsTarget``
re-calibrates on the same texts before every dev evaluation, so each checkpoint the stage can
keep is on target. ``training.run_stage`` does both for any hard stage whose config has a target.
"""

from __future__ import annotations

import logging

from transformers import TrainerCallback

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


def calibration_batches(model, dataset, pad_id: int, num_examples: int = CALIBRATION_EXAMPLES, seed: int = 0,
                        batch_size: int = 64) -> list[dict]:
    """``num_examples`` texts of ``dataset`` (a tokenized split, subsampled with ``seed``) as
    length-sorted batches on the model's device: what every calibration of a run measures on."""
    rows = subsample(dataset, num_examples, seed)
    device = next(model.parameters()).device
    return [{k: v.to(device) for k, v in b.items()} for b in length_sorted_tensors(rows, pad_id, batch_size)]


def calibrate_thresholds(model, dataset, pad_id: int, target: float, *, num_examples: int = CALIBRATION_EXAMPLES,
                         seed: int = 0, batch_size: int = 64, tolerance: float = CALIBRATION_TOLERANCE,
                         max_iters: int = 30) -> dict:
    """Scale the model's thresholds so that hard-mode relative FLOPs on ``num_examples`` texts of
    ``dataset`` (a tokenized split, subsampled with ``seed``) is ``target`` within ``tolerance``
    (or as close as the texts allow). Sets the thresholds and returns what it did: target,
    factor, relative_flops measured before and after, thresholds before and after, examples.
    The model's mode, config and train/eval state are restored afterwards."""
    batches = calibration_batches(model, dataset, pad_id, num_examples, seed, batch_size)
    return calibrate_on(model, batches, target, tolerance=tolerance, max_iters=max_iters)


def calibrate_on(model, batches, target: float, *, tolerance: float = CALIBRATION_TOLERANCE, max_iters: int = 30,
                 step: float = 2.0) -> dict:
    """:func:`calibrate_thresholds` on prepared ``batches``. The bracket grows from factor 1 by
    ``step`` (2 before the hard stage, where the soft thresholds may be far off; ~1.1 when the
    hard stage re-calibrates thresholds that were on target a few hundred steps ago, so it
    takes a few passes, not a dozen)."""
    if not (isinstance(target, (int, float)) and 0 < target <= 1):
        raise ConfigError(f"FLOPs target must lie in (0, 1], got {target!r}")
    if not step > 1:
        raise ConfigError(f"calibration step must be > 1, got {step!r}")
    before = get_thresholds(model).detach().clone()
    base = before
    if not bool((base > 0).any()):  # nothing to scale: start from the initial ramp's shape
        config = get_config(model)
        base = init_thresholds(base.numel(), config.final_threshold or 0.01, config.threshold_shape).to(base)
    was_training = model.training
    evaluations = {0.0: 1.0}  # thresholds 0 (scaled away) remove nothing

    def at(factor: float) -> float:
        if factor not in evaluations:
            set_thresholds(model, base * factor)
            evaluations[factor] = measured_relative_flops(model, batches)
        return evaluations[factor]

    def close_enough() -> bool:
        return min(abs(r - target) for r in evaluations.values()) <= tolerance

    try:
        model.eval()
        with configured(model, mode="hard", method="threshold"):
            start = at(1.0) if base is before else None
            # bracket [low, high]: relative FLOPs at low > target >= at high (they never rise with
            # the factor); skipped when factor 1 is already on target (a re-calibration, no drift)
            low, high = (1.0, step) if at(1.0) > target else (1.0 / step, 1.0)
            while not close_enough() and at(high) > target and high < 1e4:
                low, high = high, high * step
            while not close_enough() and at(low) <= target and low > 1e-4:
                low, high = low / step, low
            for _ in range(max_iters):
                if close_enough():
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
              "relative_flops_before": start, "num_examples": sum(len(b["input_ids"]) for b in batches),
              "evaluations": len(evaluations) - 1,
              "thresholds_before": [round(t, 6) for t in before.cpu().tolist()],
              "thresholds": [round(t, 6) for t in get_thresholds(model).detach().cpu().tolist()]}
    if abs(result["relative_flops"] - target) > max(tolerance, 0.01):
        log.warning("calibration: the closest the thresholds get to %.3f relative FLOPs on these %d texts is %.3f",
                    target, result["num_examples"], result["relative_flops"])
    return result


class HoldFlopsTarget(TrainerCallback):
    """Keeps a hard stage on its FLOPs target (issue 19). Fine-tuning the weights moves the
    attention scores, so thresholds calibrated before the stage drift off the target (+0.02
    relative FLOPs over two epochs on 2,000 Rotten Tomatoes texts). Before each dev evaluation,
    which decides the checkpoint the stage keeps, the thresholds are re-scaled to the target on
    the calibration texts (``calibration.calibrate_on``; frozen in the hard stage, so no
    optimizer state goes stale). ``history``: one record per re-calibration."""

    def __init__(self, model, batches, target: float, step: float = 1.1):
        self.model, self.batches, self.target, self.step = model, batches, target, step
        self.history = []
        self._done_at = None

    def _hold(self, state):
        if self._done_at == state.global_step:  # an epoch's last step: on_step_end and on_epoch_end
            return
        self._done_at = state.global_step
        result = calibrate_on(self.model, self.batches, self.target, step=self.step)
        self.history.append({"step": state.global_step, "factor": result["factor"],
                             "relative_flops_before": result["relative_flops_before"],
                             "relative_flops": result["relative_flops"], "evaluations": result["evaluations"],
                             "thresholds": result["thresholds"]})

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_evaluate:
            self._hold(state)

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_evaluate:
            self._hold(state)


__all__ = ["HoldFlopsTarget", "calibrate_thresholds", "calibrate_on", "calibration_batches", "measured_relative_flops",
           "CALIBRATION_EXAMPLES", "CALIBRATION_TOLERANCE"]

"""The top-k baseline (SpAtten's cascade token pruning, METHOD §7).

Each layer keeps a fixed *fraction* of the input's tokens, chosen by the same importance score
as LTP, so the comparison isolates what learned thresholds add: adapting to the content of each
input, not only to its length.
"""

from __future__ import annotations

import math

from .. import training
from ..calibration import CALIBRATION_TOLERANCE, measured_relative_flops
from ..patch import configure, configured, get_thresholds


def spatten_keep_ratios(num_layers: int, final_ratio: float) -> list[float]:
    """Per-layer keep ratios of the cascade: all tokens kept in the first max(3, ceil(0.15 L))
    layers, then a linear fall reaching ``final_ratio`` at the last layer.

    As in the original code, a layer's ratio is ``1 + (r - 1) * (i - n0 + 1) / (L - n0)``, so the
    paper's sweep down to ``final_ratio = -1`` makes the line cross zero before the last layer;
    ratios are clamped at 0, which the engine turns into k = 1 ("prune all tokens"). For models
    with 3 layers or fewer the last layer still prunes, or the knob would do nothing.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if not math.isfinite(final_ratio):
        raise ValueError(f"final_ratio must be finite, got {final_ratio}")
    # ceil(0.15 L) in integers: 0.15 * 20 is 3.0000000000000004 in floats
    full = min(max(3, -(-15 * num_layers // 100)), num_layers - 1)
    pruned = num_layers - full
    ratios = []
    for i in range(num_layers):
        if i < full:
            ratios.append(1.0)
        else:
            r = 1.0 + (final_ratio - 1.0) * (i - full + 1) / pruned
            ratios.append(min(1.0, max(0.0, r)))
    return ratios


def configure_topk(model, final_ratio: float):
    """Switch a patched model to the top-k rule with the cascade schedule; returns it."""
    ratios = spatten_keep_ratios(get_thresholds(model).numel(), final_ratio)
    return configure(model, method="topk", keep_ratios=ratios, keep_lengths=None)


def calibrate_topk(model, batches, target: float, *, tolerance: float = CALIBRATION_TOLERANCE,
                   max_iters: int = 30) -> dict:
    """The cascade's final keep ratio whose relative FLOPs on ``batches`` is nearest ``target``,
    by bisection over [-2, 1] (FLOPs never fall as the ratio rises), so top-k can be compared
    with LTP at equal FLOPs. The paper's range ends at -1 (0.62 relative FLOPs for a 6-layer
    model); -2 lets the first pruned layer keep one token, the cascade's floor: its full layers
    (3 of 6) are half the FLOPs, so targets near 0.5 are out of its reach and the nearest is taken. Top-k's FLOPs depend on the lengths only, not
    on the weights: no drift in training, one calibration holds. The model is left configured
    with that ratio; returns target, final_ratio, relative_flops, evaluations."""
    measured = {}

    def at(ratio: float) -> float:
        if ratio not in measured:
            configure_topk(model, ratio)
            measured[ratio] = measured_relative_flops(model, batches)
        return measured[ratio]

    was_training = model.training
    try:
        model.eval()
        with configured(model, mode="hard"):
            low, high = -2.0, 1.0  # FLOPs at low <= target <= at high, or the nearest end
            if at(low) < target < at(high):
                for _ in range(max_iters):
                    mid = (low + high) / 2
                    if abs(at(mid) - target) <= tolerance:
                        break
                    low, high = (mid, high) if at(mid) < target else (low, mid)
            ratio = min(measured, key=lambda r: (abs(measured[r] - target), -r))
    finally:
        model.train(was_training)
    configure_topk(model, ratio)  # after ``configured`` has put the config back
    return {"target_flops": float(target), "final_ratio": float(ratio), "relative_flops": float(measured[ratio]),
            "evaluations": len(measured), "num_examples": sum(len(b["input_ids"]) for b in batches)}


def train_topk(model, tokenizer, train_ds, eval_ds, info, output_dir, final_ratio: float, args,
               resume: bool = False) -> dict:
    """Top-k = the hard stage only: fine-tune the weights under the top-k rule (no thresholds to learn)."""
    configure_topk(model, final_ratio)
    return training.run_stage(model, tokenizer, train_ds, eval_ds, info, "hard", output_dir, args, resume)

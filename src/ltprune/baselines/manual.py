"""The manual-threshold baseline (paper §4.4): theta_l = theta_L * l / L, never learned.

With a ``threshold_shape`` (LTPConfig) the hand-set thresholds take that shape instead, so LTP
started from a shape is compared with the same shape left unlearned.

Same rule and engine as LTP, only the thresholds are hand-set; the gap to LTP at equal FLOPs
measures what the soft stage's threshold learning is worth.
"""

from __future__ import annotations

from .. import training
from ..errors import ConfigError
from ..patch import configure, get_thresholds, set_thresholds
from ..pruning import init_thresholds, manual_thresholds


def configure_manual(model, final_threshold: float, shape=None):
    """Threshold rule with theta_l = final_threshold * l / L (or ``final_threshold * shape_l /
    max(shape)``); returns the model."""
    if not final_threshold >= 0:
        raise ConfigError(f"final threshold must be >= 0, got {final_threshold}")
    configure(model, method="threshold", final_threshold=float(final_threshold), keep_ratios=None, keep_lengths=None)
    n = get_thresholds(model).numel()
    set_thresholds(model, manual_thresholds(n, final_threshold) if shape is None
                   else init_thresholds(n, final_threshold, shape))
    return model


def train_manual(model, tokenizer, train_ds, eval_ds, info, output_dir, final_threshold: float, args,
                 resume: bool = False) -> dict:
    """Manual thresholds = the hard stage only (no soft stage): the thresholds stay frozen."""
    configure_manual(model, final_threshold)
    return training.run_stage(model, tokenizer, train_ds, eval_ds, info, "hard", output_dir, args, resume)


__all__ = ["manual_thresholds", "configure_manual", "train_manual"]

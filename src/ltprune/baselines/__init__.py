"""The baselines LTP is compared with (METHOD §7), on the same scores, engine and FLOPs accounting.

* :mod:`.topk`: SpAtten's cascade (fixed keep ratio per layer), hard stage only;
* :mod:`.manual`: hand-set rising thresholds theta_l = theta_L * l / L, hard stage only;
* :mod:`.lat`: Length-Adaptive Transformer (LengthDrop training + evolutionary length search).
"""

from .lat import (
    configure_length,
    length_config_flops,
    lengthdrop_loss,
    make_length_evaluator,
    run_lengthdrop,
    search_length_config,
)
from .manual import configure_manual, manual_thresholds, train_manual
from .topk import configure_topk, spatten_keep_ratios, train_topk

__all__ = [
    "spatten_keep_ratios", "configure_topk", "train_topk",
    "manual_thresholds", "configure_manual", "train_manual",
    "lengthdrop_loss", "run_lengthdrop", "configure_length", "length_config_flops",
    "make_length_evaluator", "search_length_config",
]

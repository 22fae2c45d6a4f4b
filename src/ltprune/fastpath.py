"""Making a patched model fast on its hardware: capacity plans for the static step.

The static step (``LTPConfig(step="static")``, the default on CUDA) keeps, after each pruning
layer, room for a planned number of rows. :func:`plan_capacity` measures the kept tokens on
sample batches with the exact step and stores fractions of the padded batch with a margin; a
batch that keeps more than planned is rerun exactly, so a tight plan is only slower, never wrong.
"""

from __future__ import annotations

import torch

from .patch import get_config, patch


@torch.no_grad()
def plan_capacity(model, batches, margin: float = 0.05, quantile: float = 1.0) -> list[float]:
    """Measure and set ``config.capacity``: per layer, the ``quantile`` (default: the largest) over
    ``batches`` of kept tokens / (B * n), plus ``margin``, capped at 1. Returns the fractions."""
    config = get_config(model)
    patch(model, config.replace(step="exact", capacity=None))
    ratios = []
    try:
        model.eval()
        for batch in batches:
            records = model(**batch).ltp
            b, n = records.pruned_at.shape
            ratios.append((records.tokens_kept.sum(0).double() / (b * n)).cpu())
    finally:
        patch(model, config)
    if not ratios:
        raise ValueError("plan_capacity needs at least one batch")
    stacked = torch.stack(ratios)
    fractions = [min(1.0, float(torch.quantile(col, quantile)) + margin) for col in stacked.T]
    patch(model, config.replace(capacity=fractions))
    return fractions

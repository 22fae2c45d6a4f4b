"""FLOPs accounting (METHOD.md §5): the one place the formula lives.

Per example and layer, in multiply-accumulates::

    MACs_l = 4 * D^2 * n_l  +  2 * D * n_l^2  +  2 * D * I * k_l

n_l tokens enter layer l (Q/K/V/output projections and attention run on them) and k_l remain
after its pruning step (the FFN runs on them). GFLOPs = 2 * MACs / 1e9. Embeddings and the
task head are excluded, as in the paper. The baseline is the same unpadded input, unpruned.
(The engine runs the attention output projection only on the k_l kept tokens, so the formula,
which counts it on n_l, slightly overstates what a pruned model computes.)
"""

from __future__ import annotations

import torch


def layer_macs(n: torch.Tensor, k: torch.Tensor, hidden: int, intermediate: int) -> torch.Tensor:
    n = n.to(torch.float64)
    k = k.to(torch.float64)
    return 4 * hidden**2 * n + 2 * hidden * n**2 + 2 * hidden * intermediate * k


def example_macs(tokens_in: torch.Tensor, tokens_kept: torch.Tensor, hidden: int, intermediate: int) -> torch.Tensor:
    """MACs per example from (B, L) tokens entering / kept per layer."""
    return layer_macs(tokens_in, tokens_kept, hidden, intermediate).sum(-1)


def baseline_macs(lengths: torch.Tensor, num_layers: int, hidden: int, intermediate: int) -> torch.Tensor:
    """MACs per example of the unpruned model on the same unpadded inputs."""
    return layer_macs(lengths, lengths, hidden, intermediate) * num_layers


def gflops(macs: torch.Tensor) -> torch.Tensor:
    return 2.0 * macs / 1e9


def bops(macs: torch.Tensor, weight_bits: int, activation_bits: int) -> torch.Tensor:
    """Bit operations = MACs x weight bits x activation bits (paper §4.6)."""
    return macs * weight_bits * activation_bits

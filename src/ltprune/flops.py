"""FLOPs accounting (METHOD.md §5): the one place the formula lives.

Per example and layer, in multiply-accumulates::

    MACs_l = 4 * D^2 * n_l  +  2 * D * n_l^2  +  2 * D * I * k_l

n_l tokens enter layer l (Q/K/V/output projections and attention run on them) and k_l remain
after its pruning step (the FFN runs on them). GFLOPs = 2 * MACs / 1e9. Embeddings and the
task head are excluded, as in the paper. The baseline is the same unpadded input, unpruned.
(The engine runs the attention output projection only on the k_l kept tokens, so the formula,
which counts it on n_l, slightly overstates what a pruned model computes.)

Two position-dependent terms generalise it for the newer families (``Dims.windows``,
``Dims.position_keys``)::

    MACs_l = 4 * D^2 * n_l  +  2 * D * n_l * min(n_l, W_l)  +  2 * D * n_l * P  +  2 * D * I * k_l

* W_l: the keys one query can see in a local (sliding-window) attention layer, ModernBERT's
  ``local_attention + 1`` (|i - j| <= local_attention / 2); W_l = n_l in a global layer. Each
  query counts min(n_l, W_l) keys, the window's size, also near the ends of the input and after
  pruning, where fewer alive keys may fall inside it: the count is the window's, as attention
  kernels that skip the masked band pay (a dense masked kernel, as the CPU's, pays n_l).
* P: DeBERTa's relative-position terms per query, 2 x the position span (c2p: a query against
  the 2k relative-position keys; p2c: a key against the 2k relative-position queries). The
  projection of the 2k relative embeddings themselves (once per layer and batch, not per
  example) is excluded, like embeddings and heads.
* A GLU feed-forward (ModernBERT: D -> 2I, then I -> D) is 3 * D * I per token; its adapter
  reports I' = 1.5 I so that the last term stays 2 * D * I' * k_l.
"""

from __future__ import annotations

import torch


def _window_keys(windows, num_layers: int) -> torch.Tensor:
    """(L,) keys per query allowed by each layer's window (infinity for a global layer)."""
    if windows is None:
        return torch.full((num_layers,), float("inf"), dtype=torch.float64)
    return torch.tensor([float("inf") if w is None else float(w) for w in windows], dtype=torch.float64)


def layer_macs(n: torch.Tensor, k: torch.Tensor, hidden: int, intermediate: int,
               window=None, position_keys: int = 0) -> torch.Tensor:
    n = n.to(torch.float64)
    k = k.to(torch.float64)
    keys = n if window is None else torch.minimum(n, torch.as_tensor(window, dtype=torch.float64))
    return 4 * hidden**2 * n + 2 * hidden * n * keys + 2 * hidden * n * position_keys + 2 * hidden * intermediate * k


def example_macs(tokens_in: torch.Tensor, tokens_kept: torch.Tensor, hidden: int, intermediate: int,
                 windows=None, position_keys: int = 0) -> torch.Tensor:
    """MACs per example from (B, L) tokens entering / kept per layer; ``windows``: per layer, the
    keys a query sees in a local layer (None: global)."""
    window = None if windows is None else _window_keys(windows, tokens_in.shape[-1])
    return layer_macs(tokens_in, tokens_kept, hidden, intermediate, window, position_keys).sum(-1)


def baseline_macs(lengths: torch.Tensor, num_layers: int, hidden: int, intermediate: int,
                  windows=None, position_keys: int = 0) -> torch.Tensor:
    """MACs per example of the unpruned model on the same unpadded inputs."""
    if windows is None:
        return layer_macs(lengths, lengths, hidden, intermediate, None, position_keys) * num_layers
    n = lengths[:, None].expand(-1, num_layers)
    return example_macs(n, n, hidden, intermediate, windows, position_keys)


def relative_flops(tokens_in: torch.Tensor, tokens_kept: torch.Tensor, lengths: torch.Tensor, hidden: int,
                   intermediate: int, windows=None, position_keys: int = 0) -> torch.Tensor:
    """Sum of MACs over the batch / the unpruned model's on the same unpadded inputs, as a tensor.

    Differentiable in the token counts, so the soft stage's FLOPs target can use it on *expected*
    counts (``pruning.expected_tokens``): the budget and the evaluation share this one formula.
    """
    macs = example_macs(tokens_in, tokens_kept, hidden, intermediate, windows, position_keys)
    base = baseline_macs(lengths, tokens_in.shape[-1], hidden, intermediate, windows, position_keys)
    return macs.sum() / base.sum()


def gflops(macs: torch.Tensor) -> torch.Tensor:
    return 2.0 * macs / 1e9


def bops(macs: torch.Tensor, weight_bits: int, activation_bits: int) -> torch.Tensor:
    """Bit operations = MACs x weight bits x activation bits (paper §4.6)."""
    return macs * weight_bits * activation_bits

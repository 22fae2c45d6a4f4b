"""Sentence embeddings from a pruned encoder's token states (pure functions, no model here).

The engine's ``last_hidden_state`` keeps the input's shape ("drop and restore", engine.py): a
token removed at layer l holds the state it had entering layer l. Mean pooling can therefore
average either

* ``restored``: every input token, pruned ones with their restored (earlier-layer) state, or
* ``survivors``: only the tokens alive after the last layer.

Which one tracks the unpruned embedding better is measured, not assumed (docs/DECISIONS.md):
on MiniLM / IMDb ``survivors`` keeps the cosine to the unpruned embedding at 0.94 where
``restored`` falls to 0.45 (same thresholds, 0.83 relative FLOPs): a token removed early keeps an
early-layer state, which lies far from the last layer's states that mean pooling averages. So
``survivors`` is the default. CLS pooling reads the first token, which LTP never removes
(``keep_first_token``), so both choices agree there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError

POOLINGS = ("survivors", "restored")
STRATEGIES = ("mean", "cls", "max")


@dataclass(frozen=True)
class PoolingSpec:
    """How token states become one vector: ``strategy`` over which ``tokens``, then ``normalize``."""

    strategy: str = "mean"
    tokens: str = "survivors"
    normalize: bool = False

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"pooling strategy must be one of {', '.join(STRATEGIES)}; got {self.strategy!r}")
        if self.tokens not in POOLINGS:
            raise ConfigError(f"pooled tokens must be one of {', '.join(POOLINGS)}; got {self.tokens!r}")


def pooling_mask(attention_mask: torch.Tensor, records=None, tokens: str = "survivors") -> torch.Tensor:
    """(B, n) mask of the positions that enter the pooling. ``records``: the pass's ``LTPRecords``
    (None: an unpruned pass, every real token)."""
    mask = attention_mask.to(torch.bool)
    if tokens == "survivors" and records is not None:
        mask = mask & records.kept_mask.to(mask.device)
    return mask


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, spec: PoolingSpec, records=None) -> torch.Tensor:
    """(B, D) embeddings of (B, n, D) token states, as sentence-transformers' Pooling computes them
    (mean: masked sum / count clamped at 1e-9; max: masked positions at the dtype's minimum), then
    L2-normalised when the model's modules say so."""
    if spec.strategy == "cls":
        out = hidden[:, 0]
    else:
        mask = pooling_mask(attention_mask, records, spec.tokens).to(hidden.dtype)[..., None]
        if spec.strategy == "mean":
            out = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        else:
            out = hidden.masked_fill(mask == 0, torch.finfo(hidden.dtype).min).max(1).values
    return F.normalize(out, p=2, dim=-1) if spec.normalize else out

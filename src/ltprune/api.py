"""``ltprune.patch``: one call for every model ltprune prunes.

A transformers model goes to the core's :func:`ltprune.patch.patch`; a ``SentenceTransformer``
to the embedding task, which patches the encoder inside it. The dispatch lives here, above both,
so that the core never imports the task built on it.
"""

from __future__ import annotations

from torch import nn

from .config import LTPConfig
from .embedding.st import is_sentence_transformer, patch_sentence_transformer
from .patch import patch as patch_model


def patch(model: nn.Module, config: LTPConfig | None = None) -> nn.Module:
    """Patch ``model`` in place and return it (see :func:`ltprune.patch.patch`); a
    ``SentenceTransformer`` keeps working as one, with its encoder pruned."""
    if is_sentence_transformer(model):
        return patch_sentence_transformer(model, config)
    return patch_model(model, config)

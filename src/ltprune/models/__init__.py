"""Registry of encoder families. To add one: write an adapter module and list it in ADAPTERS."""

from __future__ import annotations

from ..errors import UnsupportedModelError
from .base import Dims, FamilyAdapter
from .bert import BertFamily
from .deberta_v2 import DebertaV2Family
from .distilbert import DistilBertFamily
from .electra import ElectraFamily
from .modernbert import ModernBertFamily
from .vit import ViTFamily

ADAPTERS: tuple[FamilyAdapter, ...] = (BertFamily(), DistilBertFamily(), ElectraFamily(), ViTFamily(),
                                       ModernBertFamily(), DebertaV2Family())


def supported_classes() -> list[str]:
    return [name for adapter in ADAPTERS for name in adapter.model_classes]


def find_adapter(model) -> FamilyAdapter:
    """The adapter for ``model``, or a clear error listing what is supported."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    cls = type(model).__name__
    for adapter in ADAPTERS:
        if model_type in adapter.model_types and cls in adapter.model_classes:
            adapter.check(model)
            return adapter
    raise UnsupportedModelError(
        f"ltprune has no adapter for {cls} (model_type={model_type!r}); "
        f"supported: {', '.join(supported_classes())}"
    )


__all__ = ["ADAPTERS", "Dims", "FamilyAdapter", "find_adapter", "supported_classes"]

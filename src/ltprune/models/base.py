"""What the engine needs from an encoder family: where its layers are and how to run their parts.

A family adapter maps "the family's layer" onto four calls (Q/K/V projection, attention output,
feed-forward, attention dropout). The engine owns everything else (attention over kept tokens,
scores, removal), so adding DistilBERT or ELECTRA is one small file.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

try:  # transformers 5 records per-layer outputs through hooks into this context-local dict
    from transformers.utils.output_capturing import _active_collector
except ImportError:  # pragma: no cover - another transformers layout: per-layer outputs not recorded
    _active_collector = None


def active_collector() -> dict | None:
    """The dict that ``output_hidden_states`` / ``output_attentions`` collect into during this pass."""
    return _active_collector.get() if _active_collector is not None else None


@dataclass(frozen=True)
class Dims:
    num_layers: int
    num_heads: int
    hidden: int
    intermediate: int


class FamilyAdapter:
    """Base class: subclass it, fill in the class attributes and the four layer calls."""

    #: ``config.model_type`` values this adapter handles.
    model_types: tuple[str, ...] = ()
    #: transformers class names this adapter is tested with (listed in errors and the README).
    model_classes: tuple[str, ...] = ()
    #: Index of ``attention_mask`` among the base model's positional forward arguments, where the
    #: mask hook looks when it is not passed by name (ViTModel takes it 4th); None: by name only.
    mask_position: int | None = 1

    def base_model(self, model: nn.Module) -> nn.Module:
        return model.base_model

    def encoder(self, base: nn.Module) -> nn.Module:
        raise NotImplementedError

    def layers(self, base: nn.Module) -> nn.ModuleList:
        raise NotImplementedError

    def dims(self, config) -> Dims:
        raise NotImplementedError

    def check(self, model: nn.Module) -> None:
        """Raise UnsupportedModelError for a configuration of the family we cannot run exactly."""

    def qkv(self, layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def attention_dropout(self, layer: nn.Module) -> float:
        raise NotImplementedError

    def attention_output(self, layer: nn.Module, context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def feed_forward(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encoder_forward(self, encoder: nn.Module, run, hidden_states, attention_mask=None, *args, **kwargs):
        """What replaces ``encoder.forward`` when pruning; ``run(hidden)`` runs every layer.

        The default fits an encoder module that the base model calls with the embeddings and
        reads ``.last_hidden_state`` from (BERT). Override it where the stock forward does more
        than the layer loop (ViT's base model has no encoder module) or returns another class.
        """
        from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions as Output

        return Output(last_hidden_state=run(hidden_states))

    def wanted_outputs(self, encoder: nn.Module, kwargs: dict) -> tuple[bool, bool]:
        """(hidden states, attentions) per layer: what the caller asked this pass to record.

        The engine does not call the layer modules, so transformers' recording hooks on them never
        fire; the engine records instead and :meth:`deliver_outputs` hands the result over.
        """
        collector = active_collector()
        if collector is None:
            return False, False
        return "hidden_states" in collector, "attentions" in collector

    def deliver_outputs(self, capture, output) -> None:
        """Put what the engine recorded where the stock model's hooks would have put it."""
        collector = active_collector()
        if collector is None:
            return
        if capture.hidden:
            selection = collector.get("_hidden_states_layers")
            collector["hidden_states"].extend(h if selection is None or i in selection else None
                                              for i, h in enumerate(capture.hidden_states))
        if capture.attentions:
            collector["attentions"].extend(capture.attention_probs)

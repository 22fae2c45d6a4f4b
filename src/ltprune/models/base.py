"""What the engine needs from an encoder family: where its layers are and how to run their parts.

A family adapter maps "the family's layer" onto four calls (Q/K/V projection, attention output,
feed-forward, attention dropout). The engine owns everything else (attention over kept tokens,
scores, removal), so adding DistilBERT or ELECTRA is one small file.
"""

from __future__ import annotations

from collections.abc import Callable
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
    #: per layer, the keys a query can see in a local-attention layer (None: every alive token);
    #: None for a model without local layers. FLOPs count min(n, window) keys (flops.py).
    windows: tuple | None = None
    #: relative-position "keys" per query and layer (DeBERTa's c2p + p2c terms), counted in FLOPs
    position_keys: int = 0


@dataclass(frozen=True)
class LayerPositions:
    """What one layer's attention needs from each alive token's **original** position.

    The engine hands these the positions the tokens had in the input (never their slot after
    removal), so a pruned model attends exactly as the unpruned one masked:

    * ``rotate(q, k, positions) -> (q, k)``: rows (..., D) and positions (...), e.g. RoPE;
    * ``bias(q, k, positions) -> additive logits``: heads (B, H, n, d), positions (B, n), result
      broadcastable to (B, H, n, n), e.g. DeBERTa's relative-position terms;
    * ``window``: keys j of query i only where ``|p_i - p_j| <= window`` (a sliding window).
    """

    rotate: Callable | None = None
    bias: Callable | None = None
    window: int | None = None


class FamilyAdapter:
    """Base class: subclass it, fill in the class attributes and the four layer calls."""

    #: ``config.model_type`` values this adapter handles.
    model_types: tuple[str, ...] = ()
    #: transformers class names this adapter is tested with (listed in errors and the README).
    model_classes: tuple[str, ...] = ()
    #: Index of ``attention_mask`` among the base model's positional forward arguments, where the
    #: mask hook looks when it is not passed by name (ViTModel takes it 4th); None: by name only.
    mask_position: int | None = 1
    #: True when attention depends on positions (:meth:`layer_positions`); absolute positions,
    #: added to the embeddings before the encoder, need nothing (BERT and the older families).
    positional: bool = False

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

    def layer_positions(self, base: nn.Module, layer: nn.Module, training: bool) -> LayerPositions | None:
        """Called once per layer and pass when :attr:`positional` (see :class:`LayerPositions`)."""
        return None

    def encoder_forward(self, encoder: nn.Module, run, hidden_states, attention_mask=None, *args, **kwargs):
        """What replaces ``encoder.forward`` when pruning; ``run(hidden)`` runs every layer.

        The default fits an encoder module that the base model calls with the embeddings and
        reads ``.last_hidden_state`` from (BERT). Override it where the stock forward does more
        than the layer loop (ViT's base model has no encoder module) or returns another class.
        """
        from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions as Output

        return Output(last_hidden_state=run(hidden_states))

    def wanted_outputs(self, encoder: nn.Module, kwargs: dict, caller: dict | None = None) -> tuple[bool, bool]:
        """(hidden states, attentions) per layer: what the caller asked this pass to record.

        The engine does not call the layer modules, so transformers' recording hooks on them never
        fire; the engine records instead and :meth:`deliver_outputs` hands the result over.
        ``kwargs``: the encoder's call; ``caller``: the ``output_*`` flags the base model was
        called with (for a base model that overrides them when calling its encoder, as DeBERTa's).
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


class ReplacedForward(FamilyAdapter):
    """For families whose patched module is the base model itself (no encoder module: ViT,
    ModernBERT): its stock forward and the recording wrapper on it are replaced, so the
    per-layer output flags are read from the call and the results set on the output."""

    def wanted_outputs(self, base, kwargs, caller=None):
        config = base.config
        return (bool(kwargs.get("output_hidden_states", config.output_hidden_states)),
                bool(kwargs.get("output_attentions", config.output_attentions)))

    def deliver_outputs(self, capture, output):
        if isinstance(output, tuple):
            return  # return_dict=False: no room for per-layer outputs
        if capture.hidden:
            output.hidden_states = tuple(capture.hidden_states)
        if capture.attentions:
            output.attentions = tuple(capture.attention_probs)

"""ModernBERT: pre-LayerNorm layers (GLU MLP, no biases), rotary positions, and local (sliding
window) layers between global ones.

Both position mechanisms must see each kept token's **original** position, or a pruned model would
attend differently from the unpruned one masked: RoPE rotates queries and keys by it (the stock
``rotary_emb`` module computes cos/sin for exactly the alive tokens' positions), and a local layer
lets query i see key j only where ``|p_i - p_j| <= local_attention // 2`` in those positions (as
the stock sliding-window mask does on the unpruned input). The engine applies both through
:class:`~ltprune.models.base.LayerPositions`.

``ModernBertModel`` has no encoder module: the patched module is the base model, and its forward
(embeddings, the layer loop, the final LayerNorm) is repeated around the engine, as for ViT.
"""

from __future__ import annotations

import torch

from ..errors import UnsupportedModelError
from .base import Dims, LayerPositions, ReplacedForward


class ModernBertFamily(ReplacedForward):
    model_types = ("modernbert",)
    model_classes = ("ModernBertModel", "ModernBertForSequenceClassification", "ModernBertForQuestionAnswering",
                     "ModernBertForTokenClassification")
    positional = True

    def encoder(self, base):
        return base

    def layers(self, base):
        return base.layers

    def dims(self, config):
        windows = tuple(config.local_attention + 1 if kind == "sliding_attention" else None
                        for kind in config.layer_types)
        # GLU: Wi is D -> 2I, Wo is I -> D (3 D I per token); flops.py counts 2 D I', so I' = 1.5 I
        return Dims(config.num_hidden_layers, config.num_attention_heads, config.hidden_size,
                    int(config.intermediate_size) * 3 // 2, windows=windows)

    def check(self, model):
        config = model.config
        kinds = {params.get("rope_type", "default") for params in (config.rope_parameters or {}).values() if params}
        if kinds - {"default"}:
            raise UnsupportedModelError(f"rope_type={sorted(kinds - {'default'})} is not supported (only 'default')")

    def qkv(self, layer, x):
        return layer.attn.Wqkv(layer.attn_norm(x)).chunk(3, dim=-1)  # (..., 3, H, d) order in HF's view

    def attention_dropout(self, layer):
        return layer.attn.attention_dropout

    def attention_output(self, layer, context, x):
        return x + layer.attn.out_drop(layer.attn.Wo(context))

    def feed_forward(self, layer, h):
        return h + layer.mlp(layer.mlp_norm(h))

    def layer_positions(self, base, layer, training):
        from transformers.models.modernbert.modeling_modernbert import apply_rotary_pos_emb

        heads = base.config.num_attention_heads

        def rotate(q, k, positions):
            shape = (*q.shape[:-1], heads, -1)
            cos, sin = base.rotary_emb(q, positions, layer.attention_type)  # (..., d) per alive token
            q, k = apply_rotary_pos_emb(q.view(shape), k.view(shape), cos, sin, unsqueeze_dim=q.dim() - 1)
            return q.flatten(-2), k.flatten(-2)

        local = layer.attention_type == "sliding_attention"
        return LayerPositions(rotate=rotate, window=base.config.sliding_window if local else None)

    def deliver_outputs(self, capture, output):
        """As the stock ``@capture_outputs`` does (``tie_last_hidden_states``): the last of the
        L + 1 hidden states is ``last_hidden_state``, after the final LayerNorm."""
        super().deliver_outputs(capture, output)
        if capture.hidden and not isinstance(output, tuple):
            output.hidden_states = (*output.hidden_states[:-1], output.last_hidden_state)

    def encoder_forward(self, base, run, input_ids=None, attention_mask=None, position_ids=None,
                        inputs_embeds=None, **kwargs):
        """ModernBertModel.forward with the layer loop replaced by ``run``."""
        from transformers.modeling_outputs import BaseModelOutput

        from ..errors import LTPError

        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if position_ids is not None:
            n = position_ids.shape[-1]
            if not bool((position_ids == torch.arange(n, device=position_ids.device)).all()):
                raise LTPError("ltprune prunes ModernBERT with its default positions only (position_ids = 0..n-1)")
        hidden = base.final_norm(run(base.embeddings(input_ids=input_ids, inputs_embeds=inputs_embeds)))
        out = BaseModelOutput(last_hidden_state=hidden)
        if kwargs.get("return_dict", getattr(base.config, "return_dict", True)) is False:
            return out.to_tuple()
        return out

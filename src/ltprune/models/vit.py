"""ViT image classification: pre-LayerNorm blocks over [CLS] + patch tokens.

In transformers 5 ``ViTModel`` has no encoder module: its forward runs embeddings, the layer loop,
the final LayerNorm and the pooler itself. So the patched module is the base model, and its
replacement forward (:meth:`ViTFamily.encoder_forward`) repeats the stock steps around the engine.
There is no padding: every patch and [CLS] start alive, and ``keep_first_token`` keeps [CLS]
(position 0), which the classifier reads.
"""

from __future__ import annotations

from .base import Dims, ReplacedForward


class ViTFamily(ReplacedForward):
    model_types = ("vit",)
    model_classes = ("ViTModel", "ViTForImageClassification")
    # ViTModel.forward(pixel_values, bool_masked_pos, interpolate_pos_encoding, attention_mask, ...)
    mask_position = 3

    def encoder(self, base):
        return base

    def layers(self, base):
        return base.layers

    def dims(self, config):
        return Dims(config.num_hidden_layers, config.num_attention_heads, config.hidden_size,
                    config.intermediate_size)

    def qkv(self, layer, x):
        attn, h = layer.attention, layer.layernorm_before(x)
        return attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)

    def attention_dropout(self, layer):
        return layer.attention.attention_dropout

    def attention_output(self, layer, context, x):
        return layer.dropout(layer.attention.o_proj(context)) + x

    def feed_forward(self, layer, h):
        return layer.dropout(layer.mlp(layer.layernorm_after(h))) + h

    def encoder_forward(self, vit, run, pixel_values=None, bool_masked_pos=None,
                        interpolate_pos_encoding=None, attention_mask=None, **kwargs):
        """ViTModel.forward with the layer loop replaced by ``run``."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        pixel_values = pixel_values.to(vit.embeddings.patch_embeddings.projection.weight.dtype)
        x = vit.embeddings(pixel_values, bool_masked_pos=bool_masked_pos,
                           interpolate_pos_encoding=interpolate_pos_encoding)
        hidden = vit.layernorm(run(x))
        pooled = vit.pooler(hidden) if vit.pooler is not None else None
        out = BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pooled)
        if kwargs.get("return_dict", getattr(vit.config, "return_dict", True)) is False:
            return out.to_tuple()
        return out

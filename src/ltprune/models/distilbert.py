"""DistilBERT: post-LayerNorm like BERT, but with its own module names and no encoder output class.

``DistilBertModel`` returns its ``transformer``'s output as is, so the patched forward returns
the stock ``BaseModelOutput`` to keep the model's output type unchanged.
"""

from __future__ import annotations

from .base import Dims, FamilyAdapter


class DistilBertFamily(FamilyAdapter):
    model_types = ("distilbert",)
    model_classes = ("DistilBertModel", "DistilBertForSequenceClassification", "DistilBertForQuestionAnswering")

    def encoder(self, base):
        return base.transformer

    def layers(self, base):
        return base.transformer.layer

    def dims(self, config):
        return Dims(config.n_layers, config.n_heads, config.dim, config.hidden_dim)

    def qkv(self, layer, x):
        attn = layer.attention
        return attn.q_lin(x), attn.k_lin(x), attn.v_lin(x)

    def attention_dropout(self, layer):
        return layer.attention.dropout.p

    def attention_output(self, layer, context, x):
        # DistilBERT has no dropout after out_lin (TransformerBlock.forward)
        return layer.sa_layer_norm(layer.attention.out_lin(context) + x)

    def feed_forward(self, layer, h):
        return layer.output_layer_norm(layer.ffn(h) + h)

    def encoder_forward(self, encoder, run, hidden_states, attention_mask=None, *args, **kwargs):
        from transformers.modeling_outputs import BaseModelOutput

        return BaseModelOutput(last_hidden_state=run(hidden_states))

"""BERT and RoBERTa (their layers are the same module tree in transformers)."""

from __future__ import annotations

from ..errors import UnsupportedModelError
from .base import Dims, FamilyAdapter


class BertFamily(FamilyAdapter):
    model_types = ("bert", "roberta", "xlm-roberta")
    model_classes = (
        "BertModel", "BertForSequenceClassification", "BertForQuestionAnswering",
        "RobertaModel", "RobertaForSequenceClassification", "RobertaForQuestionAnswering",
        "XLMRobertaModel", "XLMRobertaForSequenceClassification", "XLMRobertaForQuestionAnswering",
    )

    def encoder(self, base):
        return base.encoder

    def layers(self, base):
        return base.encoder.layer

    def dims(self, config):
        return Dims(config.num_hidden_layers, config.num_attention_heads, config.hidden_size,
                    config.intermediate_size)

    def check(self, model):
        config = model.config
        if getattr(config, "is_decoder", False):
            raise UnsupportedModelError("token pruning needs a bidirectional encoder; this model is a decoder")
        kind = getattr(config, "position_embedding_type", "absolute")
        if kind != "absolute":
            raise UnsupportedModelError(f"position_embedding_type={kind!r} is not supported (only 'absolute')")

    def qkv(self, layer, x):
        sa = layer.attention.self
        return sa.query(x), sa.key(x), sa.value(x)

    def attention_dropout(self, layer):
        return layer.attention.self.dropout.p

    def attention_output(self, layer, context, x):
        return layer.attention.output(context, x)

    def feed_forward(self, layer, h):
        return layer.output(layer.intermediate(h), h)

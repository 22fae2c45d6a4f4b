"""ELECTRA: the same layer tree as BERT in transformers; ``embeddings_project`` (embedding_size !=
hidden_size) runs before the encoder, so the BERT adapter applies unchanged."""

from __future__ import annotations

from .bert import BertFamily


class ElectraFamily(BertFamily):
    model_types = ("electra",)
    model_classes = ("ElectraModel", "ElectraForSequenceClassification", "ElectraForQuestionAnswering")

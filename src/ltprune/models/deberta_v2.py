"""DeBERTa-v2 and -v3: post-LayerNorm layers like BERT, with disentangled attention.

Each attention logit adds two relative-position terms to content x content: c2p (query content
against the embedding of the relative position i - j) and p2c (key content against the embedding
of j - i), with positions bucketed logarithmically beyond ``position_buckets / 2``. A pruned model
must measure i - j in the tokens' **original** positions; the stock layer assumes 0..n-1, so the
terms are computed here from the positions the engine hands over (:meth:`layer_positions`), with
the stock bucketing function and the layer's own projections of the relative embeddings, once per
layer and pass. The three terms share the scale 1 / sqrt(d * (1 + #terms)); the engine scales by
1 / sqrt(d), so the query is divided by sqrt(1 + #terms) here.
"""

from __future__ import annotations

import math

import torch

from ..errors import UnsupportedModelError
from .base import Dims, LayerPositions
from .bert import BertFamily


def _terms(config) -> tuple[str, ...]:
    return tuple(t for t in ("c2p", "p2c") if t in (config.pos_att_type or []))


class DebertaV2Family(BertFamily):
    model_types = ("deberta-v2",)
    model_classes = ("DebertaV2Model", "DebertaV2ForSequenceClassification", "DebertaV2ForQuestionAnswering")
    positional = True

    def dims(self, config):
        span = 0
        if getattr(config, "relative_attention", False):
            span = config.position_buckets if config.position_buckets > 0 else (
                config.max_relative_positions if config.max_relative_positions > 0 else config.max_position_embeddings)
        return Dims(config.num_hidden_layers, config.num_attention_heads, config.hidden_size,
                    config.intermediate_size, position_keys=2 * span * len(_terms(config)))

    def check(self, model):
        if getattr(model.config, "conv_kernel_size", 0) > 0:
            raise UnsupportedModelError("DeBERTa's convolution layer (conv_kernel_size > 0) mixes neighbouring "
                                        "tokens and is not supported")

    def qkv(self, layer, x):
        sa = layer.attention.self
        return sa.query_proj(x) / math.sqrt(1 + len(_terms(layer.attention.config))), sa.key_proj(x), sa.value_proj(x)

    def layer_positions(self, base, layer, training):
        encoder, sa = base.encoder, layer.attention.self
        terms = _terms(base.config)
        if not sa.relative_attention or not terms:
            return None
        from transformers.models.deberta_v2.modeling_deberta_v2 import make_log_bucket_position

        span, heads = sa.pos_ebd_size, sa.num_attention_heads
        rel = sa.pos_dropout(encoder.get_rel_embedding()[: 2 * span])

        def heads_of(proj):  # (2k, H * d) -> (H, 2k, d)
            return proj(rel).view(2 * span, heads, -1).transpose(0, 1)

        pos_key = heads_of(sa.key_proj if sa.share_att_key else getattr(sa, "pos_key_proj", None)) \
            if "c2p" in terms else None
        pos_query = heads_of(sa.query_proj if sa.share_att_key else getattr(sa, "pos_query_proj", None)) \
            if "p2c" in terms else None
        scale = math.sqrt(sa.attention_head_size * (1 + len(terms)))

        def bias(q, k, positions):
            """c2p + p2c (B, H, n, n); ``q`` arrives divided by sqrt(1 + #terms) (see qkv)."""
            rel_pos = positions[:, :, None] - positions[:, None, :]  # (B, n, n): i - j
            if encoder.position_buckets > 0 and encoder.max_relative_positions > 0:
                rel_pos = make_log_bucket_position(rel_pos, encoder.position_buckets, encoder.max_relative_positions)
            rel_pos = rel_pos.long()[:, None]
            shape = (q.shape[0], q.shape[1], q.shape[2], q.shape[2])
            out = 0
            if pos_key is not None:  # query i against the embedding of i - j
                index = torch.clamp(rel_pos + span, 0, 2 * span - 1).expand(shape)
                out = out + torch.gather(torch.matmul(q, pos_key.transpose(-1, -2)), -1, index) \
                    * (math.sqrt(1 + len(terms)) / scale)
            if pos_query is not None:  # key j against the embedding of j - i
                index = torch.clamp(-rel_pos + span, 0, 2 * span - 1).expand(shape)
                out = out + torch.gather(torch.matmul(k, pos_query.transpose(-1, -2)), -1, index
                                         ).transpose(-1, -2) / scale
            return out

        return LayerPositions(bias=bias)

    def encoder_forward(self, encoder, run, hidden_states, attention_mask=None, *args, **kwargs):
        """The base model reads the encoder's hidden-state list (``[1][-1]``), not ``[0]``.

        Always a ``BaseModelOutput``, also for ``return_dict=False``: the base model only indexes
        and slices it (as a tuple), and :meth:`deliver_outputs` can then fill it in either case.
        """
        from transformers.modeling_outputs import BaseModelOutput

        hidden = run(hidden_states)
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=(hidden,))

    def wanted_outputs(self, encoder, kwargs, caller=None):
        """The base model always asks its encoder for every hidden state (it reads the last), so
        whether the caller wants them comes from the base model's own call (``caller``)."""
        return bool((caller or {}).get("output_hidden_states")), bool(kwargs.get("output_attentions"))

    def deliver_outputs(self, capture, output):
        # item assignment (not attributes): a key set later is also in the tuple form the base
        # model slices with return_dict=False; the last hidden state equals last_hidden_state
        if capture.hidden:
            output["hidden_states"] = tuple(capture.hidden_states)
        if capture.attentions:
            output["attentions"] = tuple(capture.attention_probs)

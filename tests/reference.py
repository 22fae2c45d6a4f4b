"""A deliberately plain masked reference for hard pruning, written with the stock HF modules.

Nothing is removed: pruned tokens stay in the tensors, are excluded as keys and queries by the
attention mask, and keep the state they had when pruned. The engine must match it exactly.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def masked_reference(model, ids, mask, thresholds, n_ref=128, keep_first=True, normalization="reference"):
    model.set_attn_implementation("eager")
    base = model.base_model
    x = base.embeddings(input_ids=ids)
    alive = mask.bool().clone()
    heads = base.config.num_attention_heads
    kept_per_layer = []
    for index, layer in enumerate(base.encoder.layer):
        bias = torch.zeros(alive.shape).masked_fill(~alive, torch.finfo(torch.float32).min)[:, None, None, :]
        attn_out, probs = layer.attention(x, attention_mask=bias)
        probs = probs * alive[:, None, :, None]  # only alive queries vote
        norm = heads * (n_ref if normalization == "reference" else alive.sum(1, keepdim=True))
        scores = probs.sum(dim=(1, 2)) / norm
        keep = alive & (scores >= thresholds[index])
        if keep_first:
            keep[:, 0] = True
        out = layer.feed_forward_chunk(attn_out)
        x = torch.where(keep[..., None], out, x)
        alive = keep
        kept_per_layer.append(alive.clone())
    return x, kept_per_layer


def head_logits(model, hidden):
    """Apply a sequence-classification head to final hidden states."""
    if hasattr(model, "bert"):
        return model.classifier(model.bert.pooler(hidden))
    return model.classifier(hidden)
